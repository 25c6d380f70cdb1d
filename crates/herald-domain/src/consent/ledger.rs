//! What the consent ledger stores: append-only events with their evidence, and each record's
//! current standing kept in step with them in the same transaction.

use herald_crypto::aead::Binding;

use super::model::{ConsentState, Method, Origin, Standing};
use crate::audit::AuditRecord;
use crate::clock::Timestamp;
use crate::ids::{ConsentEventId, IntegrationId, SubjectId};
use crate::messages::Channel;
use crate::webhooks::NewEvent;

/// One consent event about to be appended, with the standing it leads to.
#[derive(Debug, Clone)]
pub struct ConsentChange {
    pub event_id: ConsentEventId,
    pub subject_id: SubjectId,
    pub purpose: String,
    pub channel: Channel,
    pub state: ConsentState,
    pub method: Method,
    pub origin: Origin,
    /// Whether the event moves the record; a stale one (older than the record's latest
    /// effective event) is appended to the history only.
    pub effective: bool,
    /// The same state said again, later (the record's time moves; nobody is told).
    pub reaffirmed: bool,
    /// The record's standing once the change is written (unchanged when not effective).
    pub standing: Standing,
    pub notice_version: Option<String>,
    /// SHA-256 of the exact notice text shown.
    pub notice_hash: Option<[u8; 32]>,
    /// The integration that recorded it or started it (none for the subject's own keywords
    /// and provider preferences).
    pub integration_id: Option<IntegrationId>,
    /// The personal parts of the evidence (source, locale, confirming message, …) as JSON,
    /// sealed under the subject's data key.
    pub evidence_ciphertext: Vec<u8>,
    /// When it happened according to the evidence (a form's submission time); `recorded_at`
    /// is when Herald learnt of it.
    pub captured_at: Timestamp,
    pub recorded_at: Timestamp,
    /// A pending request's end.
    pub expires_at: Option<Timestamp>,
    /// The event the standing was derived from, `None` for a new record: the store refuses
    /// the change ([`crate::store::StoreError::Conflict`]) if another change came first.
    pub previous: Option<ConsentEventId>,
    /// When the record last changed, if it exists (kept by a stale event).
    pub previous_updated_at: Option<Timestamp>,
    pub audit: AuditRecord,
    /// `consent.changed` to integrators (none for a stale event: nothing changed).
    pub event: Option<NewEvent>,
}

impl ConsentChange {
    /// The record as it stands once this change is written.
    pub fn record_after(&self) -> StoredConsent {
        let (event_id, updated_at) = match (&self.previous, self.effective) {
            (Some(previous), false) => (
                previous.clone(),
                self.previous_updated_at.unwrap_or(self.recorded_at),
            ),
            _ => (self.event_id.clone(), self.recorded_at),
        };
        StoredConsent {
            subject_id: self.subject_id.clone(),
            purpose: self.purpose.clone(),
            channel: self.channel,
            standing: self.standing,
            event_id,
            updated_at,
        }
    }
}

/// A record's current standing, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConsent {
    pub subject_id: SubjectId,
    pub purpose: String,
    pub channel: Channel,
    pub standing: Standing,
    pub event_id: ConsentEventId,
    pub updated_at: Timestamp,
}

/// One event of the history, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredConsentEvent {
    pub id: ConsentEventId,
    pub purpose: String,
    pub channel: Channel,
    pub state: ConsentState,
    pub method: Method,
    pub origin: Origin,
    pub effective: bool,
    pub notice_version: Option<String>,
    pub notice_hash: Option<[u8; 32]>,
    pub integration_id: Option<IntegrationId>,
    pub evidence_ciphertext: Vec<u8>,
    pub captured_at: Timestamp,
    pub recorded_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for StoredConsentEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredConsentEvent")
            .field("id", &self.id)
            .field("purpose", &self.purpose)
            .field("state", &self.state)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// A user-initiated opt-in code: whoever sends it to the business number opts in to `purpose`
/// under `notice_version` (a click-to-chat link or a poster carries it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptInCode {
    /// SHA-256 of the normalized code.
    pub code_hash: [u8; 32],
    pub integration_id: IntegrationId,
    pub purpose: String,
    pub channel: Channel,
    pub notice_version: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

pub(crate) fn evidence_binding(id: &ConsentEventId) -> Binding<'_> {
    Binding::new("consent_events", "evidence_ciphertext", id.as_str())
}

/// The channel opt-out a subject created for a suppressed number starts with: the objection of
/// an erased subject who had opted out, carried over (only the subject reopens it).
pub(crate) fn kept_opt_out(
    key: &herald_crypto::SymmetricKey,
    subject: &SubjectId,
    channel: Channel,
    opted_out_at: Timestamp,
    now: Timestamp,
) -> Result<ConsentChange, crate::keys::KeyError> {
    use crate::audit::{Action, AuditEvent, Detail, Details, Initiator, Outcome, Target};
    let event_id = ConsentEventId::generate_ordered(now)?;
    let evidence = serde_json::json!({
        "reason": "opt_out_kept_after_erasure",
        "opted_out_at": crate::webhooks::event::rfc3339(opted_out_at),
    });
    let evidence_ciphertext = crate::keys::Keyring::seal_for_subject(
        key,
        &evidence_binding(&event_id),
        evidence.to_string().as_bytes(),
    )?;
    let standing = Standing {
        state: ConsentState::Withdrawn,
        expires_at: None,
        effective_at: opted_out_at.min(now),
        by_subject: true,
    };
    let audit = AuditRecord::new(
        &AuditEvent::new(
            &Initiator::system(),
            Action::ConsentChanged,
            Outcome::Success,
        )
        .target(Target::Subject(subject.clone()))
        .details(
            Details::new()
                .with_opt("purpose", Detail::name(super::model::CHANNEL_OPT_IN))
                .with("channel", channel.as_str())
                .with("state", ConsentState::Withdrawn.as_str())
                .with("method", Method::System.as_str())
                .with("origin", Origin::Subject.as_str())
                .with("effective", true)
                .with("reaffirmed", false)
                .with("consent_event_id", &event_id),
        ),
        now,
    );
    Ok(ConsentChange {
        event_id,
        subject_id: subject.clone(),
        purpose: super::model::CHANNEL_OPT_IN.to_owned(),
        channel,
        state: ConsentState::Withdrawn,
        method: Method::System,
        origin: Origin::Subject,
        effective: true,
        reaffirmed: false,
        standing,
        notice_version: None,
        notice_hash: None,
        integration_id: None,
        evidence_ciphertext,
        captured_at: opted_out_at.min(now),
        recorded_at: now,
        expires_at: None,
        previous: None,
        previous_updated_at: None,
        audit,
        event: None,
    })
}
