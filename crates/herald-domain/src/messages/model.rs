//! Messages as Herald tracks them: content, status (which only moves forward), errors.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::ids::{IntegrationId, MessageId, SubjectId};

/// Longest free-form text WhatsApp accepts.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest single template parameter Herald accepts.
pub const MAX_PARAMETER_CHARS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 6] = [
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    fn rank(self) -> u8 {
        match self {
            MessageStatus::Queued => 0,
            MessageStatus::Sending => 1,
            MessageStatus::Sent => 2,
            MessageStatus::Delivered => 3,
            MessageStatus::Read => 4,
            MessageStatus::Failed => 5,
        }
    }

    /// Whether a message in `self` may move to `next`. Statuses never move backwards: a late
    /// `sent` never overwrites `read`; `failed` is final, and a message the recipient already
    /// got cannot fail any more. `queued ⇄ sending` is the delivery worker's retry loop.
    pub fn may_become(self, next: MessageStatus) -> bool {
        use MessageStatus::*;
        match (self, next) {
            (Failed, _) => false,
            (Sending, Queued) => true,
            (Delivered | Read, Failed) => false,
            (current, next) => next.rank() > current.rank(),
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, MessageStatus::Read | MessageStatus::Failed)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a message goes. Only WhatsApp exists yet (SMS and e-mail are planned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Whatsapp,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s == "whatsapp").then_some(Channel::Whatsapp)
    }
}

/// What a message says. Personal data: only ever stored encrypted under the subject's key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    Text {
        body: String,
    },
    Template {
        name: String,
        language: String,
        parameters: Vec<String>,
    },
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Text { .. } => f.write_str("Content::Text([REDACTED])"),
            Content::Template { name, language, .. } => f
                .debug_struct("Content::Template")
                .field("name", name)
                .field("language", language)
                .finish_non_exhaustive(),
        }
    }
}

impl Content {
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Template { .. } => "template",
        }
    }
}

/// Why a message failed, in Herald's stable terms, with the provider's code when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    /// `undeliverable`, `outside_window`, `opted_out`, `template_rejected`, `provider_rejected`,
    /// `retries_exhausted`, …
    pub code: String,
    pub provider_code: Option<i64>,
}

impl MessageError {
    /// A short, fixed description of `code` — never the provider's free text, which could
    /// repeat personal data.
    pub fn detail(&self) -> &'static str {
        match self.code.as_str() {
            "undeliverable" => "the provider could not deliver to this number",
            "outside_window" => {
                "free-form text is only allowed within 24 hours of the customer's last message"
            }
            "opted_out" => "the customer stopped these messages at the provider",
            "template_rejected" => "the provider rejected the template or its parameters",
            "retries_exhausted" => "delivery kept failing and was given up",
            "configuration" => "the provider rejected Herald's credentials or settings",
            _ => "the provider rejected the message",
        }
    }
}

/// A message as stored, without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: MessageId,
    pub integration_id: IntegrationId,
    pub subject_id: SubjectId,
    pub channel: Channel,
    pub purpose: String,
    pub kind: String,
    pub status: MessageStatus,
    pub attempts: u32,
    /// The provider's id, decrypted by [`super::Messages::get`].
    pub provider_message_id: Option<String>,
    /// …from this, as stored (under the subject's key).
    pub provider_ref_ciphertext: Option<Vec<u8>>,
    pub error: Option<MessageError>,
    pub history: Vec<(MessageStatus, Timestamp)>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The consent event the send relied on (the purpose's consent, or the subject's opt-in
    /// for a business-initiated template).
    pub consent_event_id: Option<crate::ids::ConsentEventId>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use MessageStatus::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Queued.may_become(Sending));
        assert!(Sending.may_become(Queued), "a retry");
        assert!(Sending.may_become(Sent));
        assert!(Sent.may_become(Delivered));
        assert!(Sent.may_become(Read), "read can arrive before delivered");
        assert!(Delivered.may_become(Read));
        assert!(Queued.may_become(Failed) && Sent.may_become(Failed));
        assert!(!Read.may_become(Sent), "a late sent never overwrites read");
        assert!(!Read.may_become(Delivered));
        assert!(!Delivered.may_become(Sent));
        assert!(!Delivered.may_become(Failed));
        assert!(!Failed.may_become(Sent) && !Failed.may_become(Queued));
        assert!(!Sent.may_become(Sent), "a repeated status is not a change");
    }

    proptest! {
        /// Whatever order status reports arrive in, the resulting status is never lower than
        /// one already reached (except the retry loop before anything was sent).
        #[test]
        fn no_sequence_of_reports_moves_a_delivered_message_back(reports in proptest::collection::vec(0usize..6, 0..30)) {
            let mut status = Sent;
            let mut reached_delivered = false;
            for index in reports {
                let next = MessageStatus::ALL[index];
                if status.may_become(next) {
                    status = next;
                }
                if matches!(status, Delivered | Read) {
                    reached_delivered = true;
                }
                if reached_delivered {
                    prop_assert!(matches!(status, Delivered | Read));
                }
            }
        }
    }

    #[test]
    fn content_debug_hides_text() {
        let text = Content::Text {
            body: "Hello Anna".into(),
        };
        assert!(!format!("{text:?}").contains("Anna"));
        let template = Content::Template {
            name: "order_shipped".into(),
            language: "de".into(),
            parameters: vec!["Anna".into()],
        };
        assert!(!format!("{template:?}").contains("Anna"));
    }
}
