//! Stand-ins for what cannot be reached from here, speaking the documented wire formats:
//! the WhatsApp Cloud API (reference/whatsapp-cloud-api.md §1) and an integrator's webhook
//! receiver that verifies Standard Webhooks signatures with its own, independent code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const ACCESS_TOKEN: &str = "EAAG-test-access-token";
pub const PHONE_NUMBER_ID: &str = "1062345678901234";
pub const API_VERSION: &str = "v21.0";
pub const APP_SECRET: &str = "herald-dev-app-secret";
pub const VERIFY_TOKEN: &str = "herald-verify-token";

/// What the fake answers to the next send.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// `500` with a generic error body.
    ServerError,
    /// `429` with `Retry-After` (seconds) and code 130429.
    RateLimited { retry_after: u64 },
    /// An error response with this Graph error code.
    Error { status: u16, code: i64 },
    /// No answer for this long (past Herald's client timeout).
    Hang(Duration),
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    /// The message id the fake answered with, if it accepted the message.
    pub wamid: Option<String>,
}

#[derive(Default)]
struct FakeState {
    script: Mutex<VecDeque<Behaviour>>,
    /// How long every accepted send takes.
    latency: Mutex<Duration>,
    received: Mutex<Vec<Received>>,
    violations: Mutex<Vec<String>>,
}

/// A fake WhatsApp Cloud API on a random port.
#[derive(Clone)]
pub struct FakeWhatsapp {
    pub address: SocketAddr,
    state: Arc<FakeState>,
}

/// Checks a send body against the documented shape; returns what is wrong.
fn violations(body: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    let Some(object) = body.as_object() else {
        return vec!["body is not an object".into()];
    };
    for key in object.keys() {
        if ![
            "messaging_product",
            "recipient_type",
            "to",
            "type",
            "text",
            "template",
            "biz_opaque_callback_data",
            "context",
        ]
        .contains(&key.as_str())
        {
            wrong.push(format!("unknown field {key}"));
        }
    }
    if body["messaging_product"] != "whatsapp" {
        wrong.push("messaging_product must be whatsapp".into());
    }
    if !body["recipient_type"].is_null() && body["recipient_type"] != "individual" {
        wrong.push("recipient_type".into());
    }
    let to = body["to"].as_str().unwrap_or("");
    let digits = to.strip_prefix('+').unwrap_or(to);
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        wrong.push("to must be the E.164 digits".into());
    }
    match body["type"].as_str() {
        Some("text") => {
            let text = &body["text"];
            let length = text["body"].as_str().map_or(0, |b| b.chars().count());
            if !(1..=4096).contains(&length) {
                wrong.push("text.body must have 1 to 4096 characters".into());
            }
            if !text["preview_url"].is_null() && !text["preview_url"].is_boolean() {
                wrong.push("text.preview_url must be a boolean".into());
            }
            if !body["template"].is_null() {
                wrong.push("a text message carries no template".into());
            }
        }
        Some("template") => {
            let template = &body["template"];
            if template["name"].as_str().is_none_or(str::is_empty) {
                wrong.push("template.name".into());
            }
            if template["language"]["code"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                wrong.push("template.language.code".into());
            }
            for component in template["components"].as_array().into_iter().flatten() {
                if component["type"].as_str().is_none() {
                    wrong.push("template component without type".into());
                }
                for parameter in component["parameters"].as_array().into_iter().flatten() {
                    if parameter["type"] != "text" || parameter["text"].as_str().is_none() {
                        wrong.push("template parameters must be {type: text, text}".into());
                    }
                }
            }
            if !body["text"].is_null() {
                wrong.push("a template message carries no text".into());
            }
        }
        _ => wrong.push("type must be text or template".into()),
    }
    wrong
}

fn graph_error(status: u16, code: i64, title: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        axum::Json(json!({"error": {
            "message": format!("(#{code}) {title}"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": title},
            "fbtrace_id": "AQx7Kp2ZcVbN4mYtR9sLwE1"
        }})),
    )
        .into_response()
}

async fn messages(
    State(state): State<Arc<FakeState>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut wrong = Vec::new();
    if version != API_VERSION || phone_number_id != PHONE_NUMBER_ID {
        wrong.push(format!("wrong path /{version}/{phone_number_id}/messages"));
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {ACCESS_TOKEN}"))
    {
        return graph_error(401, 190, "Access token has expired");
    }
    if !headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
    {
        wrong.push("content-type must be application/json".into());
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    wrong.extend(violations(&parsed));
    if !wrong.is_empty() {
        state.violations.lock().unwrap().extend(wrong);
        state.received.lock().unwrap().push(Received {
            body: parsed,
            wamid: None,
        });
        return graph_error(400, 100, "Invalid parameter");
    }
    let behaviour = state.script.lock().unwrap().pop_front();
    let rejected = |response: Response| {
        state.received.lock().unwrap().push(Received {
            body: parsed.clone(),
            wamid: None,
        });
        response
    };
    match behaviour {
        Some(Behaviour::ServerError) => {
            return rejected(graph_error(500, 131000, "Something went wrong"));
        }
        Some(Behaviour::RateLimited { retry_after }) => {
            let mut response = graph_error(429, 130429, "Rate limit hit");
            response
                .headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            return rejected(response);
        }
        Some(Behaviour::Error { status, code }) => {
            return rejected(graph_error(status, code, "Refused"));
        }
        Some(Behaviour::Hang(duration)) => {
            state.received.lock().unwrap().push(Received {
                body: parsed.clone(),
                wamid: None,
            });
            tokio::time::sleep(duration).await;
            return graph_error(500, 131000, "Something went wrong");
        }
        None => {}
    }
    let latency = *state.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let random = herald_crypto::random::bytes::<12>().unwrap();
    let wamid = format!(
        "wamid.HBgN{}",
        data_encoding::BASE64.encode(&random).trim_end_matches('=')
    );
    let to = parsed["to"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches('+')
        .to_owned();
    state.received.lock().unwrap().push(Received {
        body: parsed.clone(),
        wamid: Some(wamid.clone()),
    });
    let mut answer = json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": parsed["to"], "wa_id": to}],
        "messages": [{"id": wamid}]
    });
    if parsed["type"] == "template" {
        answer["messages"][0]["message_status"] = json!("accepted");
    }
    (StatusCode::OK, axum::Json(answer)).into_response()
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    address
}

impl FakeWhatsapp {
    pub async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let router = Router::new()
            .route("/{version}/{phone}/messages", post(messages))
            .with_state(Arc::clone(&state));
        Self {
            address: serve(router).await,
            state,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Queues behaviours for the next sends (then it accepts again).
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.state.script.lock().unwrap().extend(behaviours);
    }

    /// Makes every accepted send take this long (a slow provider keeps messages in flight).
    pub fn set_latency(&self, latency: Duration) {
        *self.state.latency.lock().unwrap() = latency;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.wamid.is_some())
            .collect()
    }

    /// Every deviation from the documented request shape seen so far (must stay empty).
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// The `[whatsapp]` section that points a Herald process at this fake.
    pub fn toml(&self) -> String {
        format!(
            "[whatsapp]\nbase_url = \"{}\"\napi_version = \"{API_VERSION}\"\n\
             phone_number_id = \"{PHONE_NUMBER_ID}\"\naccess_token = \"{ACCESS_TOKEN}\"\n\
             app_secret = \"{APP_SECRET}\"\nverify_token = \"{VERIFY_TOKEN}\"\n\
             request_timeout = \"2s\"\nmessages_per_second = 1000\n\n\
             [vendors.meta_whatsapp_cloud]\nstatus = \"approved\"\n\
             reason = \"test harness: the fake speaks Meta's wire format\"\n\
             dpa = {{ signed_at = \"2026-01-01\", version = \"test\" }}\n\
             next_review_due = \"2099-12-31\"\n",
            self.base_url()
        )
    }

    /// The configuration that points Herald at this fake.
    pub fn configure(&self, config: &mut herald::Config) {
        config.whatsapp = Some(herald::config::WhatsappConfig {
            base_url: self.base_url(),
            api_version: API_VERSION.into(),
            phone_number_id: PHONE_NUMBER_ID.into(),
            access_token: herald::config::Secret::new(ACCESS_TOKEN),
            app_secret: herald::config::Secret::new(APP_SECRET),
            verify_token: herald::config::Secret::new(VERIFY_TOKEN),
            request_timeout: Duration::from_secs(2),
            messages_per_second: 1000,
            vendor: None,
        });
        config.delivery.lease = Duration::from_secs(5);
        config.delivery.poll_interval = Duration::from_millis(20);
        // The harness's review of Meta as a vendor (docs/compliance.md): approved, DPA on file.
        config.vendors.insert(
            "meta_whatsapp_cloud".into(),
            serde_json::from_value(serde_json::json!({
                "status": "approved",
                "reason": "test harness: the fake speaks Meta's wire format",
                "dpa": {"signed_at": "2026-01-01", "version": "test"},
                "next_review_due": "2099-12-31"
            }))
            .unwrap(),
        );
    }
}

/// `sha256=…` for a callback body, as Meta signs it.
pub fn meta_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, APP_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", data_encoding::HEXLOWER.encode(tag.as_ref()))
}

// ---------------------------------------------------------------------------------------------
// An integrator's receiver.

/// One event as an integrator received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    answers: Mutex<VecDeque<u16>>,
    deliveries: Mutex<Vec<Delivery>>,
}

#[derive(Clone)]
pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    state.deliveries.lock().unwrap().push(Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
        body: body.to_vec(),
    });
    let answer = state.answers.lock().unwrap().pop_front().unwrap_or(204);
    StatusCode::from_u16(answer).unwrap()
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&state));
        Self {
            address: serve(router).await,
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Status codes for the next deliveries (then `204`).
    pub fn answer(&self, statuses: impl IntoIterator<Item = u16>) {
        self.state.answers.lock().unwrap().extend(statuses);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().unwrap().clone()
    }
}

/// Standard Webhooks verification, written from the specification (reference §2–3) and
/// independent of Herald's signer: `whsec_` secret, base64 HMAC-SHA256 of `id.timestamp.body`,
/// any `v1` entry among space-separated signatures, ±5 minutes.
pub fn verify_standard_webhook(
    secret: &str,
    id: &str,
    timestamp: i64,
    signature_header: &str,
    body: &[u8],
    now: i64,
) -> Result<(), &'static str> {
    if id.is_empty() || signature_header.is_empty() {
        return Err("missing headers");
    }
    if (now - timestamp).abs() > 300 {
        return Err("timestamp outside tolerance");
    }
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("secret without whsec_")?;
    let key_bytes = data_encoding::BASE64
        .decode(encoded.as_bytes())
        .map_err(|_| "secret is not base64")?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    for entry in signature_header.split(' ') {
        let Some((version, value)) = entry.split_once(',') else {
            continue;
        };
        if version != "v1" {
            continue;
        }
        let Ok(tag) = data_encoding::BASE64.decode(value.as_bytes()) else {
            continue;
        };
        if ring::hmac::verify(&key, &signed, &tag).is_ok() {
            return Ok(());
        }
    }
    Err("no valid v1 signature")
}
