//! Events for integrators: created in the same transaction as the change they report (an
//! outbox), one delivery row per subscribed endpoint, the payload encrypted under the subject's
//! data key — so erasing the subject also shreds events not yet delivered.

use chrono::SecondsFormat;
use herald_crypto::SymmetricKey;
use herald_crypto::aead::Binding;
use serde_json::{Value, json};

use crate::clock::Timestamp;
use crate::ids::{EventId, IntegrationId, SubjectId};
use crate::keys::{KeyError, Keyring};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    MessageStatus,
    MessageInbound,
    /// A consent record changed (granted, pending, withdrawn, expired): every integration
    /// linked to the subject learns of it, since each must stop or may start messaging.
    ConsentChanged,
    /// The subject's phone number was corrected (GDPR Art. 19: recipients are told).
    SubjectRectified,
    /// The subject was erased: recipients erase their copies too (GDPR Art. 17(2), 19).
    SubjectErased,
    /// A breach-notification clock of an incident is within 24 hours of its deadline, or past
    /// it: about no one person, for the operator's endpoints (integrations holding
    /// `incidents:read`).
    IncidentDeadline,
    /// An incident concerns subjects of the integration: the processor tells the controller
    /// (GDPR Art. 33(2)), with the integration's own affected subject ids only.
    IncidentNotified,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::MessageStatus,
        EventType::MessageInbound,
        EventType::ConsentChanged,
        EventType::SubjectRectified,
        EventType::SubjectErased,
        EventType::IncidentDeadline,
        EventType::IncidentNotified,
    ];

    /// Events whose payload is sealed under the system key, not the subject's: they outlive
    /// the subject's key (an erasure notice is sent after the key is destroyed).
    pub fn sealed_for_system(self) -> bool {
        matches!(
            self,
            EventType::SubjectErased | EventType::IncidentDeadline | EventType::IncidentNotified
        )
    }

    /// Events about no one person: only integrations allowed to read the incident register
    /// receive them.
    pub fn operator_only(self) -> bool {
        matches!(self, EventType::IncidentDeadline)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MessageStatus => "message.status",
            EventType::MessageInbound => "message.inbound",
            EventType::ConsentChanged => "consent.changed",
            EventType::SubjectRectified => "subject.rectified",
            EventType::SubjectErased => "subject.erased",
            EventType::IncidentDeadline => "incident.deadline",
            EventType::IncidentNotified => "incident.notified",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Fields of a `message.inbound` event that carry what the customer wrote: sent only to
/// integrations allowed to read messages (`messages:read`).
pub const CONTENT_FIELD: &str = "content";

/// An event about to be stored, its payload sealed.
#[derive(Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: EventType,
    /// Only this integration's endpoints receive it; `None`: the endpoints of every
    /// integration linked to the subject (those that know it), never anyone else's.
    pub integration: Option<IntegrationId>,
    pub subject_id: SubjectId,
    pub payload_ciphertext: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewEvent")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("integration", &self.integration)
            .finish_non_exhaustive()
    }
}

pub(crate) fn payload_binding(id: &EventId) -> Binding<'_> {
    Binding::new("webhook_deliveries", "payload_ciphertext", id.as_str())
}

pub fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn body(event_type: EventType, data: Value, now: Timestamp) -> zeroize::Zeroizing<Vec<u8>> {
    let body = json!({
        "type": event_type.as_str(),
        "timestamp": rfc3339(now),
        "data": data,
    });
    zeroize::Zeroizing::new(serde_json::to_vec(&body).unwrap_or_default())
}

/// A new event id and the body sealed under the system key for it.
fn seal_system_body(
    keys: &Keyring,
    event_type: EventType,
    data: Value,
    now: Timestamp,
) -> Result<(EventId, Vec<u8>), KeyError> {
    let id = EventId::generate_ordered(now)?;
    let plaintext = body(event_type, data, now);
    let ciphertext = keys.seal_system(&payload_binding(&id), &plaintext)?;
    Ok((id, ciphertext))
}

impl NewEvent {
    /// Builds the body `{type, timestamp, data}` and seals it under the subject's key.
    pub fn seal(
        key: &SymmetricKey,
        event_type: EventType,
        integration: Option<IntegrationId>,
        subject_id: &SubjectId,
        data: Value,
        now: Timestamp,
    ) -> Result<Self, KeyError> {
        debug_assert!(!event_type.sealed_for_system());
        let id = EventId::generate_ordered(now)?;
        let plaintext = body(event_type, data, now);
        let payload_ciphertext = Keyring::seal_for_subject(key, &payload_binding(&id), &plaintext)?;
        Ok(Self {
            id,
            event_type,
            integration,
            subject_id: subject_id.clone(),
            payload_ciphertext,
            created_at: now,
        })
    }

    /// Like [`NewEvent::seal`], under the system key, for events that outlive the subject's
    /// key ([`EventType::sealed_for_system`]). `data` must hold no personal data.
    pub fn seal_for_system(
        keys: &Keyring,
        event_type: EventType,
        subject_id: &SubjectId,
        data: Value,
        now: Timestamp,
    ) -> Result<Self, KeyError> {
        debug_assert!(event_type.sealed_for_system());
        let (id, payload_ciphertext) = seal_system_body(keys, event_type, data, now)?;
        Ok(Self {
            id,
            event_type,
            integration: None,
            subject_id: subject_id.clone(),
            payload_ciphertext,
            created_at: now,
        })
    }
}

/// An event about no one person, sealed under the system key, for every endpoint subscribed to
/// its type whose integration may read it.
#[derive(Clone)]
pub struct OperatorEvent {
    pub id: EventId,
    pub event_type: EventType,
    pub payload_ciphertext: Vec<u8>,
    pub created_at: Timestamp,
}

impl OperatorEvent {
    /// `data` must hold no personal data.
    pub fn seal(
        keys: &Keyring,
        event_type: EventType,
        data: Value,
        now: Timestamp,
    ) -> Result<Self, KeyError> {
        debug_assert!(matches!(
            event_type,
            EventType::IncidentDeadline | EventType::IncidentNotified
        ));
        let (id, payload_ciphertext) = seal_system_body(keys, event_type, data, now)?;
        Ok(Self {
            id,
            event_type,
            payload_ciphertext,
            created_at: now,
        })
    }
}

/// The body as an integrator without `messages:read` receives it: the content removed.
pub fn without_content(mut body: Value) -> Value {
    if let Some(data) = body.get_mut("data").and_then(Value::as_object_mut) {
        data.remove(CONTENT_FIELD);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("message.nope"), None);
    }

    #[test]
    fn content_is_stripped_for_readers_without_the_scope() {
        let body = json!({"type": "message.inbound", "data": {"message_id": "m", "content": {"text": "hi"}}});
        let stripped = without_content(body);
        assert_eq!(
            stripped,
            json!({"type": "message.inbound", "data": {"message_id": "m"}})
        );
    }
}
