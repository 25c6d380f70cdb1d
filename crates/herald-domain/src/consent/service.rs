//! The consent service: records consent with its evidence, withdraws it, answers what a
//! subject agreed to, and is the gate every send passes (see [`crate::messages::ConsentGate`]).
//! Keywords, provider preferences and double opt-in live in [`super::inbound`] and
//! [`super::opt_in`]; all of them end in [`Consents::commit`], one transaction per change set.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chrono::TimeDelta;
use data_encoding::HEXLOWER;
use herald_crypto::SymmetricKey;
use serde_json::{Map, Value, json};

use super::keywords::KeywordPolicy;
use super::ledger::{ConsentChange, StoredConsent, evidence_binding};
use super::model::{
    Applied, CHANNEL_OPT_IN, ConsentRefusal, ConsentState, Event, Method, Origin, Standing,
    Transition, apply, decide_send,
};
use crate::audit::{Action, AuditEvent, AuditRecord, Detail, Details, Initiator, Outcome, Target};
use crate::auth::ADMIN_INTEGRATION;
use crate::clock::{Clock, Timestamp};
use crate::ids::{ConsentEventId, IntegrationId, SubjectId};
use crate::keys::{KeyError, Keyring};
use crate::messages::send::{ConsentGate, Refusal, SendError};
use crate::messages::{Catalog, Channel, NewMessage, Purpose};
use crate::store::{Store, StoreError, SubjectRecord};
use crate::subjects::{SubjectError, Subjects};
use crate::webhooks::event::rfc3339;
use crate::webhooks::{EventType, NewEvent};

/// How far in the future evidence may say consent was captured (clock skew between systems).
const CAPTURED_AT_SKEW: TimeDelta = TimeDelta::minutes(5);
/// Longest evidence `source` (a form address, a paper form's reference).
pub const MAX_SOURCE_CHARS: usize = 2048;
/// How often a change is retried when another change to the same record came first.
const CONFLICT_RETRIES: u32 = 8;
/// Changes to one subject's records are serialised within a node by one of these locks (chosen
/// by the subject id): without them concurrent changes would mostly conflict and retry. Across
/// nodes the store's optimistic check still decides.
const SUBJECT_LOCK_STRIPES: usize = 64;

/// Configuration of keywords, acknowledgements and double opt-in.
#[derive(Debug, Clone)]
pub struct ConsentSettings {
    pub keywords: KeywordPolicy,
    /// Quick-reply button payloads meaning "stop" and "yes, confirm" (compared normalized).
    pub stop_payloads: Vec<String>,
    pub confirm_payloads: Vec<String>,
    /// Text sent back after an opt-out, a re-opt-in and a confirmed opt-in (`None`: nothing).
    pub opt_out_reply: Option<String>,
    pub opt_in_reply: Option<String>,
    /// How long a double opt-in waits for the confirmation.
    pub opt_in_ttl: TimeDelta,
    /// The confirmation template (name, language) and its fixed body parameters.
    pub opt_in_template: Option<(String, String, Vec<String>)>,
    /// How long a user-initiated opt-in code stays valid.
    pub code_ttl: TimeDelta,
    /// Confirmation requests one number receives in 30 days at most.
    pub opt_in_max_requests: u32,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        Self {
            keywords: KeywordPolicy::defaults(),
            stop_payloads: vec!["STOP".into()],
            confirm_payloads: vec!["CONFIRM".into()],
            opt_out_reply: None,
            opt_in_reply: None,
            opt_in_ttl: TimeDelta::hours(48),
            opt_in_template: None,
            code_ttl: TimeDelta::days(90),
            opt_in_max_requests: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("the purpose is not configured")]
    UnknownPurpose,
    #[error("no such subject")]
    SubjectNotFound,
    #[error("the subject was erased")]
    SubjectErased,
    #[error("processing for this subject is restricted")]
    SubjectRestricted,
    #[error("{field}: {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    #[error("double opt-in needs a confirmation template in the configuration ([consent.opt_in])")]
    OptInNotConfigured,
    /// The record already holds a later event than the one given: it was kept in the history
    /// and changed nothing.
    #[error("the record has a later event than this one; it was recorded but changes nothing")]
    Stale,
    /// The subject opted out; only the subject can opt back in.
    #[error("the subject opted out; only the subject can opt in again")]
    SubjectOptedOut,
    #[error("too many confirmation requests for this number; try again later")]
    RateLimited { retry_after_seconds: u64 },
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

impl From<herald_crypto::CryptoError> for ConsentError {
    fn from(e: herald_crypto::CryptoError) -> Self {
        ConsentError::Keys(KeyError::from(e))
    }
}

fn invalid(field: &'static str, rule: &'static str) -> ConsentError {
    ConsentError::Invalid { field, rule }
}

/// Evidence as an integration states it (`PUT …/consents/{purpose}`).
#[derive(Clone, PartialEq, Eq)]
pub struct EvidenceInput {
    pub method: Method,
    pub notice_version: Option<String>,
    pub captured_at: Timestamp,
    /// Where consent was given (a form's address, a paper form's reference). Personal data
    /// possibly: stored encrypted.
    pub source: Option<String>,
    pub locale: Option<String>,
    /// A pre-ticked box is not consent (GDPR Art. 4(11), Planet49): `Some(true)` is refused.
    pub prechecked: Option<bool>,
}

impl std::fmt::Debug for EvidenceInput {
    // The source and locale may be personal data: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvidenceInput")
            .field("method", &self.method)
            .field("notice_version", &self.notice_version)
            .field("captured_at", &self.captured_at)
            .finish_non_exhaustive()
    }
}

/// A record's state as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentView {
    pub purpose: String,
    pub channel: &'static str,
    pub state: ConsentState,
    pub updated_at: String,
    pub expires_at: Option<String>,
}

/// One event of the history as the API shows it, evidence decrypted where the viewer may see
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub id: ConsentEventId,
    pub purpose: String,
    pub channel: &'static str,
    pub state: ConsentState,
    pub method: Method,
    pub origin: Origin,
    pub effective: bool,
    pub notice_version: Option<String>,
    pub notice_sha256: Option<String>,
    pub integration_id: Option<IntegrationId>,
    pub captured_at: String,
    pub recorded_at: String,
    pub expires_at: Option<String>,
    pub evidence: Value,
}

/// Everything about a subject's consents.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentOverview {
    pub subject_id: SubjectId,
    pub consents: Vec<ConsentView>,
    pub history: Vec<HistoryEntry>,
}

/// One change to prepare: what happens to which record, how, and its evidence.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub purpose: String,
    pub channel: Channel,
    pub transition: Transition,
    pub method: Method,
    pub origin: Origin,
    pub notice_version: Option<String>,
    pub integration: Option<IntegrationId>,
    pub captured_at: Timestamp,
    pub evidence: Map<String, Value>,
}

/// What became of one planned change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanOutcome {
    /// Written and effective.
    Recorded,
    /// Written to the history only: the record has a later event.
    Stale,
    /// Nothing to write (already so, or ignored).
    Unchanged,
    /// Refused: the subject opted out and did not make this change.
    OptedOut,
}

/// What a commit wrote, and what became of each planned change (in plan order).
#[derive(Debug, Default)]
pub(crate) struct Committed {
    pub changes: Vec<ConsentChange>,
    pub outcomes: Vec<PlanOutcome>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keyring>,
    pub clock: Arc<dyn Clock>,
    pub subjects: Subjects,
    pub catalog: Arc<Catalog>,
    pub settings: ConsentSettings,
    /// Herald's own messages (acknowledgements) are sent as the `admin` integration.
    pub system_integration: OnceLock<IntegrationId>,
    pub subject_locks: Vec<tokio::sync::Mutex<()>>,
}

/// The consent ledger. Cheap to clone.
#[derive(Clone)]
pub struct Consents {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Consents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consents").finish_non_exhaustive()
    }
}

fn state_for(transition: Transition) -> ConsentState {
    match transition {
        Transition::Grant => ConsentState::Granted,
        Transition::Request { .. } => ConsentState::Pending,
        Transition::Withdraw => ConsentState::Withdrawn,
        Transition::Expire | Transition::Lapse => ConsentState::Expired,
    }
}

impl Consents {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        subjects: Subjects,
        catalog: Arc<Catalog>,
        settings: ConsentSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                clock,
                subjects,
                catalog,
                settings,
                system_integration: OnceLock::new(),
                subject_locks: (0..SUBJECT_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        }
    }

    /// The configured purposes and templates.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn settings(&self) -> &ConsentSettings {
        &self.inner.settings
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// A purpose an integrator may name, and the notice version's hash if one is given. A
    /// purpose with notices needs one of them named.
    pub(crate) fn purpose_and_notice(
        &self,
        purpose: &str,
        channel: Channel,
        notice_version: Option<&str>,
    ) -> Result<&Purpose, ConsentError> {
        let purpose = self
            .inner
            .catalog
            .public_purpose(purpose)
            .ok_or(ConsentError::UnknownPurpose)?;
        if !purpose.offers(channel) {
            return Err(invalid(
                "channel",
                "the purpose is not offered on this channel",
            ));
        }
        match notice_version {
            Some(version) if purpose.notice(version).is_none() => Err(invalid(
                "evidence.notice_version",
                "is not a configured notice version of this purpose",
            )),
            None if !purpose.notices.is_empty() => Err(invalid(
                "evidence.notice_version",
                "name the notice version the subject was shown",
            )),
            _ => Ok(purpose),
        }
    }

    /// The subject, refused when unknown or erased.
    pub(crate) async fn subject(&self, id: &SubjectId) -> Result<SubjectRecord, ConsentError> {
        match self.inner.subjects.with_erasure(id).await? {
            None => Err(ConsentError::SubjectNotFound),
            Some((_, Some(_))) => Err(ConsentError::SubjectErased),
            Some((subject, None)) => Ok(subject),
        }
    }

    /// Records consent obtained elsewhere (`PUT /v1/subjects/{id}/consents/{purpose}`).
    pub async fn grant(
        &self,
        subject_id: &SubjectId,
        purpose: &str,
        channel: Channel,
        evidence: EvidenceInput,
        integration: &IntegrationId,
        initiator: &Initiator,
    ) -> Result<ConsentView, ConsentError> {
        let now = self.now();
        if !matches!(evidence.method, Method::Api | Method::WebForm) {
            return Err(invalid(
                "evidence.method",
                "api or web_form (the other methods are Herald's own)",
            ));
        }
        if evidence.prechecked == Some(true) {
            return Err(invalid(
                "evidence.prechecked",
                "a pre-ticked box is not consent (GDPR Art. 4(11))",
            ));
        }
        if evidence.captured_at > now + CAPTURED_AT_SKEW {
            return Err(invalid("evidence.captured_at", "is in the future"));
        }
        if evidence
            .source
            .as_ref()
            .is_some_and(|s| s.chars().count() > MAX_SOURCE_CHARS || s.trim().is_empty())
        {
            return Err(invalid("evidence.source", "1 to 2048 characters"));
        }
        if evidence
            .locale
            .as_ref()
            .is_some_and(|l| !crate::messages::catalog::is_language(l))
        {
            return Err(invalid(
                "evidence.locale",
                "a language code like de or en_US",
            ));
        }
        self.purpose_and_notice(purpose, channel, evidence.notice_version.as_deref())?;
        let subject = self.subject(subject_id).await?;
        let mut details = Map::new();
        if let Some(source) = evidence.source {
            details.insert("source".into(), Value::String(source));
        }
        if let Some(locale) = evidence.locale {
            details.insert("locale".into(), Value::String(locale));
        }
        details.insert("prechecked".into(), Value::Bool(false));
        let planned = Planned {
            purpose: purpose.to_owned(),
            channel,
            transition: Transition::Grant,
            method: evidence.method,
            origin: Origin::Integration,
            notice_version: evidence.notice_version,
            integration: Some(integration.clone()),
            captured_at: evidence.captured_at,
            evidence: details,
        };
        let committed = self
            .commit(&subject.id, vec![planned], initiator, |_| Ok(Vec::new()))
            .await?;
        match committed.outcomes.first() {
            Some(PlanOutcome::OptedOut) => {
                self.record_refusal(
                    initiator,
                    &subject.id,
                    purpose,
                    channel,
                    "subject_opted_out",
                )
                .await?;
                Err(ConsentError::SubjectOptedOut)
            }
            Some(PlanOutcome::Stale) => Err(ConsentError::Stale),
            _ => {
                self.view(&subject.id, purpose, channel, &committed.changes)
                    .await
            }
        }
    }

    /// Records a refused change (not a state change: a standalone entry).
    pub(crate) async fn record_refusal(
        &self,
        initiator: &Initiator,
        subject: &SubjectId,
        purpose: &str,
        channel: Channel,
        code: &'static str,
    ) -> Result<(), ConsentError> {
        let record = AuditRecord::new(
            &AuditEvent::new(initiator, Action::ConsentRefused, Outcome::Denied)
                .target(Target::Subject(subject.clone()))
                .details(
                    Details::new()
                        .with("code", code)
                        .with_opt("purpose", Detail::name(purpose))
                        .with("channel", channel.as_str()),
                ),
            self.now(),
        );
        self.inner.store.append_audit(&[record]).await?;
        Ok(())
    }

    /// Withdraws (`DELETE /v1/subjects/{id}/consents/{purpose}`). A withdrawal with no record
    /// before is recorded too: it is an objection, and blocks the purpose whatever its basis.
    pub async fn withdraw(
        &self,
        subject_id: &SubjectId,
        purpose: &str,
        channel: Channel,
        integration: &IntegrationId,
        initiator: &Initiator,
    ) -> Result<ConsentView, ConsentError> {
        let configured = self
            .inner
            .catalog
            .public_purpose(purpose)
            .ok_or(ConsentError::UnknownPurpose)?;
        // Withdrawing is always possible where the purpose is offered.
        if !configured.offers(channel) {
            return Err(invalid(
                "channel",
                "the purpose is not offered on this channel",
            ));
        }
        let subject = self.subject(subject_id).await?;
        let planned = Planned {
            purpose: purpose.to_owned(),
            channel,
            transition: Transition::Withdraw,
            method: Method::Api,
            origin: Origin::Integration,
            notice_version: None,
            integration: Some(integration.clone()),
            captured_at: self.now(),
            evidence: Map::new(),
        };
        let committed = self
            .commit(&subject.id, vec![planned], initiator, |_| Ok(Vec::new()))
            .await?;
        self.view(&subject.id, purpose, channel, &committed.changes)
            .await
    }

    /// Lapses the subject's granted and pending records on `channel` because its address there
    /// changed (a rectified phone number): each needs a fresh opt-in from the new number.
    /// Withdrawals stay. Returns how many records changed.
    pub async fn lapse_channel(
        &self,
        subject: &SubjectId,
        channel: Channel,
        initiator: &Initiator,
    ) -> Result<usize, ConsentError> {
        let now = self.now();
        let mut evidence = Map::new();
        evidence.insert("reason".into(), Value::from("phone_number_rectified"));
        let planned: Vec<Planned> = self
            .inner
            .store
            .consents(subject)
            .await?
            .into_iter()
            .filter(|c| c.channel == channel)
            .map(|c| Planned {
                purpose: c.purpose,
                channel,
                transition: Transition::Lapse,
                method: Method::System,
                origin: Origin::System,
                notice_version: None,
                integration: None,
                captured_at: now,
                evidence: evidence.clone(),
            })
            .collect();
        if planned.is_empty() {
            return Ok(0);
        }
        let committed = self
            .commit(subject, planned, initiator, |_| Ok(Vec::new()))
            .await?;
        Ok(committed.changes.iter().filter(|c| c.effective).count())
    }

    /// The record's state after `changes`: what was just written, or (nothing written: the
    /// record already stood so) what is stored.
    async fn view(
        &self,
        subject: &SubjectId,
        purpose: &str,
        channel: Channel,
        changes: &[ConsentChange],
    ) -> Result<ConsentView, ConsentError> {
        let now = self.now();
        if let Some(change) = changes.last().filter(|c| c.effective) {
            return Ok(view(&change.record_after(), now));
        }
        self.inner
            .store
            .consents(subject)
            .await?
            .into_iter()
            .find(|c| c.purpose == purpose && c.channel == channel)
            .map(|c| view(&c, now))
            .ok_or_else(|| StoreError::Corrupt("a recorded consent is missing".into()).into())
    }

    /// The subject's current consents and full history. Evidence is decrypted for the events
    /// `evidence_of` recorded (`None`: every event — the operator and `admin`); the others
    /// show none (minimum necessary: the state is what another system needs to know).
    pub async fn overview(
        &self,
        subject_id: &SubjectId,
        evidence_of: Option<&IntegrationId>,
    ) -> Result<ConsentOverview, ConsentError> {
        let subject = self.subject(subject_id).await?;
        let now = self.now();
        let current = self.inner.store.consents(&subject.id).await?;
        let history = self.inner.store.consent_history(&subject.id).await?;
        let key = if history.is_empty() {
            None
        } else {
            Some(self.inner.keys.subject_key(&subject.id).await?)
        };
        let mut entries = Vec::with_capacity(history.len());
        for event in history {
            let shown =
                evidence_of.is_none_or(|viewer| event.integration_id.as_ref() == Some(viewer));
            let evidence = match &key {
                Some(key) if shown => {
                    let plaintext = Keyring::open_for_subject(
                        key,
                        &evidence_binding(&event.id),
                        &event.evidence_ciphertext,
                    )?;
                    serde_json::from_slice(&plaintext)
                        .map_err(|_| StoreError::Corrupt("consent evidence is not JSON".into()))?
                }
                _ => Value::Null,
            };
            entries.push(HistoryEntry {
                id: event.id,
                purpose: event.purpose,
                channel: event.channel.as_str(),
                state: event.state,
                method: event.method,
                origin: event.origin,
                effective: event.effective,
                notice_version: event.notice_version,
                notice_sha256: event.notice_hash.map(|h| HEXLOWER.encode(&h)),
                integration_id: event.integration_id,
                captured_at: rfc3339(event.captured_at),
                recorded_at: rfc3339(event.recorded_at),
                expires_at: event.expires_at.map(rfc3339),
                evidence,
            });
        }
        Ok(ConsentOverview {
            subject_id: subject.id,
            consents: current.iter().map(|c| view(c, now)).collect(),
            history: entries,
        })
    }

    /// Prepares the planned changes against the subject's current records and commits them
    /// with whatever messages `messages` adds (given the changes that will happen), in one
    /// transaction; retried when another change to the same records came first. Changes that
    /// change nothing (an expiry after a grant) are dropped, stale ones kept as history only,
    /// refused ones (the subject opted out) not written. Returns what was committed.
    pub(crate) async fn commit(
        &self,
        subject: &SubjectId,
        planned: Vec<Planned>,
        initiator: &Initiator,
        messages: impl Fn(&[ConsentChange]) -> Result<Vec<NewMessage>, ConsentError>,
    ) -> Result<Committed, ConsentError> {
        let key = self.inner.keys.subject_key(subject).await?;
        let stripe = subject.as_str().bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        }) % SUBJECT_LOCK_STRIPES;
        let _serialised = self.inner.subject_locks[stripe].lock().await;
        let mut attempt = 0;
        loop {
            let current = self.inner.store.consents(subject).await?;
            let committed = self.prepare(&key, subject, &current, &planned, initiator)?;
            if committed.changes.is_empty() {
                return Ok(committed);
            }
            let outgoing = if committed.changes.iter().any(|c| c.effective) {
                messages(&committed.changes)?
            } else {
                Vec::new()
            };
            match self
                .inner
                .store
                .record_consents(&committed.changes, &outgoing)
                .await
            {
                Ok(()) => return Ok(committed),
                Err(StoreError::Conflict) if attempt < CONFLICT_RETRIES => {
                    // Another node changed the record: back off a little, re-derive, retry.
                    attempt += 1;
                    let pause = 2u64.pow(attempt.min(6))
                        + u64::from(herald_crypto::random::bytes::<1>().map_or(0, |b| b[0] % 8));
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                // Still contended: a temporary condition, not a conflict the caller made.
                Err(StoreError::Conflict) => {
                    return Err(StoreError::Unavailable(
                        "consent records kept changing under concurrent updates".into(),
                    )
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the subject opted out of `purpose` on `channel` — its own record, or the channel
    /// opt-in where the opt-out covers the purpose: then only the subject opts in again.
    pub(crate) fn opted_out(
        &self,
        current: &[StoredConsent],
        purpose: &str,
        channel: Channel,
    ) -> bool {
        current.iter().any(|c| {
            c.channel == channel
                && c.standing.opted_out()
                && (c.purpose == purpose
                    || (c.purpose == CHANNEL_OPT_IN && self.channel_opt_out_covers(purpose)))
        })
    }

    /// Whether the subject's opt-out of the channel covers `purpose` (see
    /// [`Purpose::stopped_by_opt_out`]): then only the subject reopens it.
    fn channel_opt_out_covers(&self, purpose: &str) -> bool {
        purpose != CHANNEL_OPT_IN
            && self
                .inner
                .catalog
                .purpose(purpose)
                .is_none_or(Purpose::stopped_by_opt_out)
    }

    /// The changes (events, audit entries, `consent.changed` events) the plan makes to the
    /// current records, in order; a record changed twice in one plan chains its changes.
    pub(crate) fn prepare(
        &self,
        key: &SymmetricKey,
        subject: &SubjectId,
        current: &[StoredConsent],
        planned: &[Planned],
        initiator: &Initiator,
    ) -> Result<Committed, ConsentError> {
        let now = self.now();
        let mut standings: Vec<(String, Channel, Standing, ConsentEventId, Timestamp)> = current
            .iter()
            .map(|c| {
                (
                    c.purpose.clone(),
                    c.channel,
                    c.standing,
                    c.event_id.clone(),
                    c.updated_at,
                )
            })
            .collect();
        let mut committed = Committed::default();
        for plan in planned {
            let existing = standings
                .iter()
                .position(|(p, ch, ..)| *p == plan.purpose && *ch == plan.channel);
            let stored = existing.map(|i| standings[i].2);
            // A lapsed request counts as expired before its event is written — except for the
            // expiry itself, which is what writes it.
            let before = match plan.transition {
                Transition::Expire => stored,
                _ => stored.map(|s| Standing {
                    state: s.at(now),
                    ..s
                }),
            };
            // When it happened, never later than now: a claim from the future would outrank
            // the subject's own word until the clock caught up.
            let event = Event {
                transition: plan.transition,
                origin: plan.origin,
                at: plan.captured_at.min(now),
            };
            // The subject's opt-out of the channel covers the purposes it stops: an integration
            // may not grant them (or ask again) until the subject opts in.
            let channel_opted_out = plan.origin != Origin::Subject
                && matches!(
                    plan.transition,
                    Transition::Grant | Transition::Request { .. }
                )
                && self.channel_opt_out_covers(&plan.purpose)
                && standings.iter().any(|(p, ch, st, ..)| {
                    p == CHANNEL_OPT_IN && *ch == plan.channel && st.opted_out()
                });
            // Staleness first: an older claim is history either way; a newer one the
            // subject's opt-out refuses.
            let applied = match apply(before, event) {
                Applied::Changed(_) | Applied::Reaffirmed(_) if channel_opted_out => {
                    Applied::OptedOut
                }
                Applied::Stale if stored.is_none() && channel_opted_out => Applied::OptedOut,
                other => other,
            };
            let (after, effective, reaffirmed) = match applied {
                Applied::Changed(after) => {
                    if before == Some(after) && plan.transition != Transition::Grant {
                        committed.outcomes.push(PlanOutcome::Unchanged);
                        continue;
                    }
                    (after, true, false)
                }
                Applied::Reaffirmed(after) => (after, true, true),
                Applied::Stale => match stored {
                    Some(stored) => (stored, false, false),
                    None => {
                        committed.outcomes.push(PlanOutcome::Unchanged);
                        continue;
                    }
                },
                Applied::Unchanged => {
                    committed.outcomes.push(PlanOutcome::Unchanged);
                    continue;
                }
                Applied::OptedOut => {
                    committed.outcomes.push(PlanOutcome::OptedOut);
                    continue;
                }
            };
            let event_id = ConsentEventId::generate_ordered(now)?;
            let notice_hash = plan.notice_version.as_deref().and_then(|v| {
                self.inner
                    .catalog
                    .purpose(&plan.purpose)
                    .and_then(|p| p.notice(v))
                    .map(|n| n.sha256)
            });
            let evidence = serde_json::to_vec(&Value::Object(plan.evidence.clone()))
                .map_err(|_| StoreError::Corrupt("evidence cannot be encoded".into()))?;
            let evidence_ciphertext =
                Keyring::seal_for_subject(key, &evidence_binding(&event_id), &evidence)?;
            let state = state_for(plan.transition);
            let expires_at = match plan.transition {
                Transition::Request { expires_at } => Some(expires_at),
                _ => None,
            };
            let details = Details::new()
                .with_opt("purpose", Detail::name(&plan.purpose))
                .with("channel", plan.channel.as_str())
                .with("state", state.as_str())
                .with("method", plan.method.as_str())
                .with("origin", plan.origin.as_str())
                .with("effective", effective)
                .with("reaffirmed", reaffirmed)
                .with_opt(
                    "notice_version",
                    plan.notice_version.as_deref().and_then(Detail::name),
                )
                .with_opt("notice_sha256", notice_hash.as_ref().map(Detail::digest))
                .with("consent_event_id", &event_id);
            let audit = AuditRecord::new(
                &AuditEvent::new(initiator, Action::ConsentChanged, Outcome::Success)
                    .target(Target::Subject(subject.clone()))
                    .details(details),
                now,
            );
            // Integrators learn of changes; a stale or repeated event changed nothing.
            let event = (effective && !reaffirmed)
                .then(|| {
                    NewEvent::seal(
                        key,
                        EventType::ConsentChanged,
                        None,
                        subject,
                        json!({
                            "subject_id": subject.as_str(),
                            "purpose": plan.purpose,
                            "channel": plan.channel.as_str(),
                            "state": state.as_str(),
                            "method": plan.method.as_str(),
                            "origin": plan.origin.as_str(),
                            "consent_event_id": event_id.as_str(),
                            "at": rfc3339(now),
                        }),
                        now,
                    )
                })
                .transpose()?;
            let previous = existing.map(|i| standings[i].3.clone());
            let previous_updated_at = existing.map(|i| standings[i].4);
            committed.changes.push(ConsentChange {
                event_id: event_id.clone(),
                subject_id: subject.clone(),
                purpose: plan.purpose.clone(),
                channel: plan.channel,
                state,
                method: plan.method,
                origin: plan.origin,
                effective,
                reaffirmed,
                standing: after,
                notice_version: plan.notice_version.clone(),
                notice_hash,
                integration_id: plan.integration.clone(),
                evidence_ciphertext,
                captured_at: plan.captured_at.min(now + CAPTURED_AT_SKEW),
                recorded_at: now,
                expires_at,
                previous,
                previous_updated_at,
                audit,
                event,
            });
            committed.outcomes.push(if effective {
                PlanOutcome::Recorded
            } else {
                PlanOutcome::Stale
            });
            if effective {
                match existing {
                    Some(i) => {
                        standings[i] = (plan.purpose.clone(), plan.channel, after, event_id, now);
                    }
                    None => {
                        standings.push((plan.purpose.clone(), plan.channel, after, event_id, now));
                    }
                }
            }
        }
        Ok(committed)
    }

    /// Herald's own integration (`admin`), for the messages it sends itself.
    pub(crate) async fn system_integration(&self) -> Result<IntegrationId, ConsentError> {
        if let Some(id) = self.inner.system_integration.get() {
            return Ok(id.clone());
        }
        let record = self
            .inner
            .store
            .integration_by_name(ADMIN_INTEGRATION)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the admin integration is missing".into()))?;
        Ok(self
            .inner
            .system_integration
            .get_or_init(|| record.id)
            .clone())
    }
}

fn view(c: &StoredConsent, now: Timestamp) -> ConsentView {
    let state = c.standing.at(now);
    ConsentView {
        purpose: c.purpose.clone(),
        channel: c.channel.as_str(),
        state,
        updated_at: rfc3339(c.updated_at),
        expires_at: (state == ConsentState::Pending)
            .then_some(c.standing.expires_at)
            .flatten()
            .map(rfc3339),
    }
}

fn refusal(r: ConsentRefusal) -> Refusal {
    match r {
        ConsentRefusal::Missing => Refusal::ConsentMissing,
        ConsentRefusal::Pending => Refusal::ConsentPending,
        ConsentRefusal::Withdrawn => Refusal::ConsentWithdrawn,
    }
}

#[async_trait]
impl ConsentGate for Consents {
    async fn check(
        &self,
        subject: &SubjectRecord,
        purpose: &Purpose,
        channel: Channel,
        business_initiated: bool,
        now: Timestamp,
    ) -> Result<Option<ConsentEventId>, SendError> {
        // The records came with the subject's look-up at the start of this send (one query for
        // both, batched across concurrent sends); a subject created by this send has none.
        let records: Vec<&StoredConsent> = subject
            .consents
            .iter()
            .filter(|c| c.channel == channel)
            .collect();
        let relied_on = decide_send(
            purpose,
            records
                .iter()
                .map(|c| (c.purpose.as_str(), c.standing.at(now))),
            business_initiated,
        )
        .map_err(|r| SendError::Refused(refusal(r)))?
        .and_then(|name| records.iter().find(|c| c.purpose == name))
        .map(|c| c.event_id.clone());
        if let Some(cap) = purpose.frequency_cap {
            let (count, oldest) = self
                .inner
                .store
                .messages_since(&subject.id, &purpose.name, now - cap.per)
                .await?;
            if count >= u64::from(cap.max) {
                // Free again when the oldest message in the window leaves it.
                let free_at = oldest.map_or(now + cap.per, |t| t + cap.per);
                let seconds = (free_at - now).num_seconds().max(1);
                return Err(SendError::Refused(Refusal::RateLimited {
                    retry_after_seconds: u64::try_from(seconds).unwrap_or(1),
                }));
            }
        }
        Ok(relied_on)
    }
}
