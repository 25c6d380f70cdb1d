//! Sending over the Cloud API: `POST {base}/{version}/{phone-number-id}/messages` with a bearer
//! token, bodies exactly as documented (reference §1.2), answers classified (§1.3, §1.4, §2).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_domain::clock::Clock;
use herald_domain::messages::{Content, Outgoing, Provider, ProviderFailure, Sent};
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::errors::{failure, parse_retry_after};

/// Where and as whom Herald sends.
#[derive(Debug, Clone)]
pub struct WhatsappSettings {
    /// `https://graph.facebook.com` (a local fake in tests).
    pub base_url: String,
    pub api_version: String,
    pub phone_number_id: String,
    pub access_token: SecretString,
    /// Per request, connection included.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the WhatsApp HTTP client cannot be built: {0}")]
    Build(#[source] reqwest::Error),
    #[error("the WhatsApp access token is not a valid header value")]
    Token,
}

/// The WhatsApp channel. `Debug` never shows the token.
pub struct WhatsappProvider {
    http: reqwest::Client,
    url: String,
    authorization: HeaderValue,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WhatsappProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsappProvider")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The JSON body for one message.
pub fn request_body(message: &Outgoing) -> Value {
    // Digits only, as in Meta's examples (the `+` is optional).
    let to = message.to.e164().trim_start_matches('+').to_owned();
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        // Echoed back on every status report: finds the message before its wamid is stored.
        "biz_opaque_callback_data": message.message_id.as_str(),
    });
    match &message.content {
        Content::Text { body: text } => {
            body["type"] = json!("text");
            body["text"] = json!({"preview_url": false, "body": text});
        }
        Content::Template {
            name,
            language,
            parameters,
        } => {
            body["type"] = json!("template");
            let mut template = json!({"name": name, "language": {"code": language}});
            if !parameters.is_empty() {
                let parameters: Vec<Value> = parameters
                    .iter()
                    .map(|p| json!({"type": "text", "text": p}))
                    .collect();
                template["components"] = json!([{"type": "body", "parameters": parameters}]);
            }
            body["template"] = template;
        }
    }
    body
}

impl WhatsappProvider {
    pub fn new(settings: &WhatsappSettings, clock: Arc<dyn Clock>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            // A redirect could carry the bearer token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", settings.access_token.expose_secret()))
                .map_err(|_| ClientError::Token)?;
        authorization.set_sensitive(true);
        let url = format!(
            "{}/{}/{}/messages",
            settings.base_url.trim_end_matches('/'),
            settings.api_version,
            settings.phone_number_id
        );
        Ok(Self {
            http,
            url,
            authorization,
            clock,
        })
    }
}

#[async_trait]
impl Provider for WhatsappProvider {
    fn name(&self) -> &'static str {
        "whatsapp"
    }

    async fn send(&self, message: &Outgoing) -> Result<Sent, ProviderFailure> {
        let response = self
            .http
            .post(&self.url)
            .header(AUTHORIZATION, self.authorization.clone())
            .json(&request_body(message))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                // Timeouts and connection failures: the message may or may not have arrived;
                // trying again is the safer error (at least once).
                tracing::debug!(message_id = %message.message_id, timeout = e.is_timeout(), connect = e.is_connect(), "WhatsApp request failed");
                return Err(ProviderFailure::Retryable {
                    http_status: None,
                    provider_code: None,
                    retry_after: None,
                });
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        let body: Option<Value> = response.json().await.ok();
        if (200..300).contains(&status) {
            let id = body
                .as_ref()
                .and_then(|b| b.get("messages"))
                .and_then(|m| m.get(0))
                .and_then(|m| m.get("id"))
                .and_then(Value::as_str);
            return match id {
                Some(id) if !id.is_empty() && id.len() <= 256 => Ok(Sent {
                    provider_message_id: id.to_owned(),
                    http_status: Some(status),
                    delivered: false,
                }),
                _ => Err(ProviderFailure::Retryable {
                    http_status: Some(status),
                    provider_code: None,
                    retry_after,
                }),
            };
        }
        let code = body
            .as_ref()
            .and_then(|b| b.get("error"))
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64);
        if let Some(trace) = body
            .as_ref()
            .and_then(|b| b.get("error"))
            .and_then(|e| e.get("fbtrace_id"))
            .and_then(Value::as_str)
        {
            // Meta support asks for it; it carries no personal data.
            tracing::info!(message_id = %message.message_id, status, code, fbtrace_id = %trace, "WhatsApp refused a message");
        }
        Err(failure(status, code, retry_after))
    }
}

#[cfg(test)]
mod tests {
    use herald_domain::ids::MessageId;
    use herald_domain::phone;

    use super::*;

    fn outgoing(content: Content) -> Outgoing {
        Outgoing {
            message_id: MessageId::parse("msg_0000000000000000000000000")
                .unwrap_or_else(|_| MessageId::generate().unwrap()),
            to: phone::parse("+4915112340001", None).unwrap(),
            content,
        }
    }

    #[test]
    fn text_bodies_are_as_documented() {
        let message = outgoing(Content::Text {
            body: "Ihre Bestellung ist unterwegs.".into(),
        });
        let body = request_body(&message);
        assert_eq!(
            body,
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "4915112340001",
                "biz_opaque_callback_data": message.message_id.as_str(),
                "type": "text",
                "text": {"preview_url": false, "body": "Ihre Bestellung ist unterwegs."}
            })
        );
    }

    #[test]
    fn template_bodies_are_as_documented() {
        let message = outgoing(Content::Template {
            name: "order_shipped".into(),
            language: "de".into(),
            parameters: vec!["Klara".into(), "#20417".into()],
        });
        let body = request_body(&message);
        assert_eq!(body["type"], "template");
        assert_eq!(
            body["template"],
            json!({
                "name": "order_shipped",
                "language": {"code": "de"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "Klara"},
                    {"type": "text", "text": "#20417"}
                ]}]
            })
        );
        let bare = request_body(&outgoing(Content::Template {
            name: "hello".into(),
            language: "en".into(),
            parameters: vec![],
        }));
        assert!(bare["template"].get("components").is_none());
    }
}
