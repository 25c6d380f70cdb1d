//! `/v1/messages`: send a message (accepted once durable, delivered later) and follow it.
//! A message is visible only to the integration that sent it.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_domain::clock::Timestamp;
use herald_domain::ids::{MessageId, SubjectId};
use herald_domain::messages::{Channel, Content, MessageRecord, SendCommand};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::access::{AccessNote, ActionAudited};
use crate::http::errors;
use crate::http::extract::{ApiJson, Authorized, IdPath, MessagesRead, MessagesSend};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::{rfc3339, rfc3339_opt};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(get_message))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    /// The approved template's name, exactly as approved.
    #[schema(example = "order_shipped")]
    name: String,
    #[schema(example = "de")]
    language: String,
    /// Body parameters in order (`{{1}}`, `{{2}}`, …); their number must match the template.
    #[serde(default)]
    #[schema(example = json!(["#20417"]))]
    parameters: Vec<String>,
}

/// A message to send. Exactly one of `to` and `subject_id`; exactly one of `template` and
/// `text`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The recipient's phone number (E.164 or a common spelling). Registers the subject if new.
    #[schema(example = "+4915112345678")]
    to: Option<String>,
    /// A registered subject.
    subject_id: Option<String>,
    template: Option<TemplateRequest>,
    /// Free-form text: only within 24 hours of the subject's last message.
    text: Option<String>,
    /// A configured purpose.
    #[schema(example = "order_updates")]
    purpose: String,
    /// Default `whatsapp` (the only channel yet).
    channel: Option<String>,
    /// The message carries protected health information (default `false`).
    phi: Option<bool>,
}

impl SendRequest {
    fn into_command(self) -> Result<SendCommand, Problem> {
        let invalid = |field: &str, rule: &'static str| {
            Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
        };
        let content = match (self.template, self.text) {
            (Some(t), None) => Content::Template {
                name: t.name,
                language: t.language,
                parameters: t.parameters,
            },
            (None, Some(body)) => Content::Text { body },
            _ => return Err(invalid("template", "give exactly one of template or text")),
        };
        let subject_id = self
            .subject_id
            .map(|id| SubjectId::parse(&id))
            .transpose()
            .map_err(|_| invalid("subject_id", "is not a subject id"))?;
        let channel = match self.channel.as_deref() {
            None => Channel::Whatsapp,
            Some(name) => Channel::parse(name)
                .ok_or_else(|| invalid("channel", "the only channel is whatsapp"))?,
        };
        Ok(SendCommand {
            to: self.to,
            subject_id,
            content,
            purpose: self.purpose,
            channel,
            phi: self.phi.unwrap_or(false),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    #[schema(value_type = String, example = "msg_9c2k4m6p8r0t2v4x6z8b0d2f4h")]
    id: MessageId,
    #[schema(value_type = String)]
    subject_id: SubjectId,
    #[schema(example = "queued")]
    status: &'static str,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

/// Send a message. Answered once the message and its audit entry are durable; delivery
/// follows. With `Idempotency-Key`, a repeated request within 24 hours gets the first answer.
#[utoipa::path(post, path = "/v1/messages", tag = "messages",
    request_body = SendRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 hours")),
    security(("bearer" = ["messages:send"])),
    responses(
        (status = 202, description = "Accepted and queued", body = Queued),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "subject_restricted", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "unknown_purpose, unknown_template, template_parameters_mismatch, template_required_outside_window, phi_requires_baa, vendor_not_approved, invalid_phone_number, idempotency_key_reused", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn send(
    State(state): State<AppState>,
    caller: Authorized<MessagesSend>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendRequest>,
) -> Result<Response, Problem> {
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            Problem::new(Code::InvalidRequest).field(FieldError::new(
                "Idempotency-Key",
                "1 to 255 visible ASCII characters",
            ))
        })?),
    };
    let command = body.into_command()?;
    let accepted = state
        .messages
        .send(
            command,
            &caller.principal,
            &caller.initiator(),
            idempotency_key,
        )
        .await
        .map_err(errors::send)?;
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Queued {
            id: accepted.id,
            subject_id: accepted.subject_id,
            status: "queued",
            created_at: accepted.created_at,
        }),
    )
        .into_response();
    if accepted.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    } else {
        response.extensions_mut().insert(ActionAudited);
    }
    Ok(response)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorView {
    /// Stable: undeliverable, outside_window, opted_out, template_rejected, provider_rejected,
    /// retries_exhausted, configuration.
    code: String,
    /// The provider's error code, if it gave one.
    provider_code: Option<i64>,
    detail: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    status: &'static str,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
}

/// A message's state, without its content.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    #[schema(value_type = String)]
    id: MessageId,
    #[schema(value_type = String)]
    subject_id: SubjectId,
    channel: &'static str,
    purpose: String,
    /// queued, sending, sent, delivered, read, failed — never backwards.
    status: &'static str,
    attempts: u32,
    provider_message_id: Option<String>,
    error: Option<ErrorView>,
    history: Vec<HistoryEntry>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    updated_at: Option<Timestamp>,
    /// Why it may be sent: the purpose's lawful basis and, where the send relied on one, the
    /// consent event (an entry of `GET /v1/subjects/{id}/consents`' history).
    basis: BasisView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BasisView {
    /// consent, contract, legal_obligation, vital_interests or legitimate_interests (absent for
    /// a purpose no longer configured).
    lawful_basis: Option<&'static str>,
    #[schema(value_type = Option<String>, example = "cev_0c3k5m7p9r1t3v5x7z9b1d3f5h")]
    consent_event_id: Option<String>,
}

impl MessageView {
    fn new(m: MessageRecord, catalog: &herald_domain::messages::Catalog) -> Self {
        let basis = BasisView {
            lawful_basis: catalog.purpose(&m.purpose).map(|p| p.basis.as_str()),
            consent_event_id: m.consent_event_id.map(|e| e.as_str().to_owned()),
        };
        Self {
            basis,
            id: m.id,
            subject_id: m.subject_id,
            channel: m.channel.as_str(),
            purpose: m.purpose,
            status: m.status.as_str(),
            attempts: m.attempts,
            provider_message_id: m.provider_message_id,
            error: m.error.map(|e| ErrorView {
                detail: e.detail(),
                code: e.code,
                provider_code: e.provider_code,
            }),
            history: m
                .history
                .into_iter()
                .map(|(status, at)| HistoryEntry {
                    status: status.as_str(),
                    at,
                })
                .collect(),
            created_at: m.created_at,
            updated_at: Some(m.updated_at),
        }
    }
}

/// Read a message's state and history.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id (msg_…)")),
    security(("bearer" = ["messages:read"])),
    responses(
        (status = 200, description = "The message", body = MessageView),
        (status = 404, description = "No such message for this integration", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_message(
    State(state): State<AppState>,
    caller: Authorized<MessagesRead>,
    note: Option<axum::Extension<AccessNote>>,
    IdPath(id): IdPath<MessageId>,
) -> Result<Json<MessageView>, Problem> {
    let message = state
        .messages
        .get(&id, &caller.principal.integration_id)
        .await
        .map_err(errors::store)?
        .ok_or_else(Problem::not_found)?;
    // The access entry names the message read (only once it is the caller's).
    if let Some(axum::Extension(note)) = note {
        note.target(herald_domain::audit::Target::Message(id));
    }
    Ok(Json(MessageView::new(message, state.messages.catalog())))
}
