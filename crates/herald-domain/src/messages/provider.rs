//! Channel providers: where messages leave Herald. Adapters are small and behind one trait; the
//! WhatsApp Cloud API adapter lives in `herald-whatsapp`, the sandbox here.

use std::fmt;

use async_trait::async_trait;
use chrono::TimeDelta;

use super::model::Content;
use crate::ids::MessageId;
use crate::phone::PhoneNumber;

/// One message as a provider receives it. `Debug` shows no personal data.
pub struct Outgoing {
    /// Herald's id, handed to the provider as correlation data so status reports can be
    /// matched even before the provider's own id is known.
    pub message_id: MessageId,
    pub to: PhoneNumber,
    pub content: Content,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("message_id", &self.message_id)
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

/// The provider took the message (which is not yet delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub provider_message_id: String,
    pub http_status: Option<u16>,
    /// The provider reports delivery at once (the sandbox does).
    pub delivered: bool,
}

/// Why a provider did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderFailure {
    /// Might work later: server errors, timeouts, connection failures, throttling.
    Retryable {
        http_status: Option<u16>,
        provider_code: Option<i64>,
        retry_after: Option<TimeDelta>,
    },
    /// Will not work as it is: `code` is Herald's stable error code.
    Permanent {
        http_status: Option<u16>,
        provider_code: Option<i64>,
        code: &'static str,
    },
}

impl ProviderFailure {
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ProviderFailure::Retryable { http_status, .. }
            | ProviderFailure::Permanent { http_status, .. } => *http_status,
        }
    }

    pub fn provider_code(&self) -> Option<i64> {
        match self {
            ProviderFailure::Retryable { provider_code, .. }
            | ProviderFailure::Permanent { provider_code, .. } => *provider_code,
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// A short name for logs and audit entries (`whatsapp`, `sandbox`).
    fn name(&self) -> &'static str;
    async fn send(&self, message: &Outgoing) -> Result<Sent, ProviderFailure>;
}

/// The sandbox: takes every message and reports it delivered at once. Nothing leaves Herald.
#[derive(Debug, Default)]
pub struct SandboxProvider;

#[async_trait]
impl Provider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn send(&self, message: &Outgoing) -> Result<Sent, ProviderFailure> {
        Ok(Sent {
            provider_message_id: format!("sandbox.{}", message.message_id),
            http_status: None,
            delivered: true,
        })
    }
}

/// The sandbox's inbound callbacks (what `herald sandbox reply` stores): one customer message.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxReply {
    /// The customer's number, E.164.
    pub from: String,
    pub text: String,
    /// The "provider" message id (random).
    pub id: String,
    /// Unix seconds.
    pub timestamp: i64,
}

/// Parses [`SandboxReply`] bodies.
#[derive(Debug, Default)]
pub struct SandboxCallbacks;

impl super::reports::CallbackParser for SandboxCallbacks {
    fn provider(&self) -> &'static str {
        "sandbox"
    }

    fn parse(
        &self,
        body: &[u8],
    ) -> Result<Vec<super::reports::ProviderReport>, super::reports::CallbackError> {
        let error = super::reports::CallbackError {
            provider: "sandbox",
        };
        let reply: SandboxReply = serde_json::from_slice(body).map_err(|_| error.clone())?;
        let at = chrono::DateTime::from_timestamp(reply.timestamp, 0).ok_or(error)?;
        Ok(vec![super::reports::ProviderReport::Inbound(
            super::reports::InboundReport {
                provider_message_id: reply.id,
                from: reply.from,
                at,
                content: super::reports::InboundContent {
                    kind: "text".to_owned(),
                    text: Some(reply.text),
                    details: Default::default(),
                },
            },
        )])
    }

    fn redact(&self, body: &[u8], e164: &str) -> Option<Option<Vec<u8>>> {
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        match serde_json::from_slice::<SandboxReply>(body) {
            // One message, from one number: nothing else is left.
            Ok(reply) if digits(&reply.from) == digits(e164) => Some(None),
            Ok(_) => None,
            // Unreadable: it cannot be shown not to mention the number.
            Err(_) => Some(None),
        }
    }
}
