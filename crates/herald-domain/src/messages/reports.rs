//! What providers tell Herald: status reports for its messages and the customers' own
//! messages. A callback is first stored as received (encrypted, in one transaction with its
//! audit entry) so the provider gets its `200` at once; a worker then processes it — moving
//! statuses forward only, storing inbound messages encrypted, opening the 24-hour window,
//! queueing events for integrators — in one transaction that also removes the stored callback.
//! Redelivered callbacks change nothing twice: statuses are deduplicated per (message, status),
//! inbound messages by the provider's id.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeDelta;
use herald_crypto::SymmetricKey;
use herald_crypto::aead::Binding;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::model::{Channel, MessageError, MessageStatus};
use super::send::NewMessage;
use crate::audit::{Action, Audit, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::clock::{Clock, Timestamp};
use crate::consent::{ConsentChange, ConsentError, Consents, Preference};
use crate::ids::{CallbackId, IntegrationId, MessageId, SubjectId};
use crate::keys::{KeyError, Keyring};
use crate::store::{Store, StoreError};
use crate::subjects::{SubjectError, Subjects};
use crate::webhooks::event::rfc3339;
use crate::webhooks::{EventType, NewEvent};
use crate::worker::{LeasedWork, WorkerSettings};

/// A provider's report on one of Herald's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub provider_message_id: String,
    /// Herald's own id, echoed back by the provider (WhatsApp: `biz_opaque_callback_data`),
    /// which finds the message even before its provider id is recorded.
    pub correlation: Option<String>,
    /// `Sent`, `Delivered`, `Read` or `Failed`.
    pub status: MessageStatus,
    pub at: Timestamp,
    pub error: Option<MessageError>,
}

/// What a customer sent. Personal data: stored only encrypted under the subject's key.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct InboundContent {
    /// `text`, `image`, `button`, `interactive`, `location`, …, or `unsupported`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// What else the message carried (media id and type, caption, button payload, reply id,
    /// coordinates, the message replied to, …), by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, Value>,
}

impl std::fmt::Debug for InboundContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundContent")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct InboundReport {
    pub provider_message_id: String,
    /// The sender's number in E.164.
    pub from: String,
    pub at: Timestamp,
    pub content: InboundContent,
}

impl std::fmt::Debug for InboundReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundReport")
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

/// A subject's preference as the provider reports it (WhatsApp `user_preferences`).
#[derive(Clone, PartialEq, Eq)]
pub struct PreferenceReport {
    /// The subject's number in E.164.
    pub from: String,
    pub at: Timestamp,
    pub preference: Preference,
}

impl std::fmt::Debug for PreferenceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreferenceReport")
            .field("preference", &self.preference)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderReport {
    Status(StatusReport),
    Inbound(InboundReport),
    Preference(PreferenceReport),
    /// Understood but not acted on (template updates, account notices, change-level errors,
    /// statuses Herald does not track, unknown fields): counted, never an error.
    Ignored {
        what: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the callback body is not a valid {provider} payload")]
pub struct CallbackError {
    pub provider: &'static str,
}

/// Turns a provider's callback body (already authenticated) into reports.
pub trait CallbackParser: Send + Sync + std::fmt::Debug {
    fn provider(&self) -> &'static str;
    fn parse(&self, body: &[u8]) -> Result<Vec<ProviderReport>, CallbackError>;
}

/// A stored callback.
#[derive(Clone)]
pub struct InboxEntry {
    pub id: CallbackId,
    pub provider: String,
    pub body_ciphertext: Vec<u8>,
    pub received_at: Timestamp,
    /// Processing attempts, this one included.
    pub attempts: u32,
}

impl std::fmt::Debug for InboxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxEntry")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A message a status report is about, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTarget {
    pub id: MessageId,
    pub integration_id: IntegrationId,
    pub subject_id: SubjectId,
    pub status: MessageStatus,
    pub provider_ref_index: Option<[u8; 32]>,
}

/// One status change, applied only if the message is still in one of `from`.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub message_id: MessageId,
    pub status: MessageStatus,
    pub from: Vec<MessageStatus>,
    pub at: Timestamp,
    pub error: Option<MessageError>,
    /// For `sent`/`delivered`/`read`: when the content goes (`None`: now).
    pub keep_content_until: Option<Timestamp>,
    pub audit: AuditRecord,
    pub event: Option<NewEvent>,
}

/// A customer's message about to be stored (skipped if its provider id is already known).
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub id: MessageId,
    pub subject_id: SubjectId,
    pub channel: Channel,
    pub provider_ref_index: [u8; 32],
    pub kind: String,
    pub content_ciphertext: Vec<u8>,
    /// When the customer sent it (the provider's time, never later than `received_at`).
    pub sent_at: Timestamp,
    pub received_at: Timestamp,
    pub purge_at: Timestamp,
    pub audit: AuditRecord,
    pub event: Option<NewEvent>,
    /// What the message does to the subject's consents (a `STOP`, a confirmation), applied
    /// only with the message itself, and the acknowledgements it asks for.
    pub consent: Vec<ConsentChange>,
    pub replies: Vec<NewMessage>,
}

/// Everything one callback changes, applied in one transaction that also removes it.
#[derive(Debug, Clone)]
pub struct ReportBatch {
    pub callback: CallbackId,
    pub owner: String,
    pub statuses: Vec<StatusChange>,
    /// Every reported status of a known message, for its history (late ones included).
    pub history: Vec<(MessageId, MessageStatus, Timestamp)>,
    pub inbound: Vec<NewInbound>,
    /// Consent changes from provider preferences.
    pub preferences: Vec<ConsentChange>,
    /// The processing's own entry (counts); always set before the batch is applied.
    pub audit: Option<AuditRecord>,
}

impl ReportBatch {
    /// The consent changes this batch already holds for `subject`, not yet written: a later
    /// message of the same callback (a "STOP" after a "START") builds on them.
    fn consent_changes_of(&self, subject: &SubjectId) -> Vec<ConsentChange> {
        self.inbound
            .iter()
            .flat_map(|i| i.consent.iter())
            .chain(self.preferences.iter())
            .filter(|c| &c.subject_id == subject)
            .cloned()
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Subjects(#[from] SubjectError),
    #[error(transparent)]
    Consent(#[from] ConsentError),
    #[error("no parser for provider {0}")]
    UnknownProvider(String),
}

impl From<herald_crypto::CryptoError> for ReportError {
    fn from(e: herald_crypto::CryptoError) -> Self {
        ReportError::Keys(KeyError::from(e))
    }
}

fn body_binding(id: &CallbackId) -> Binding<'_> {
    Binding::new("provider_inbox", "body_ciphertext", id.as_str())
}

pub(crate) fn inbound_binding(id: &MessageId) -> Binding<'_> {
    Binding::new("inbound_messages", "content_ciphertext", id.as_str())
}

/// A `message.status` event for the integration that sent the message.
pub(crate) fn status_event(
    key: &SymmetricKey,
    integration: &IntegrationId,
    subject: &SubjectId,
    message: &MessageId,
    status: MessageStatus,
    error: Option<(&str, Option<i64>)>,
    at: Timestamp,
) -> Result<NewEvent, KeyError> {
    let mut data = json!({
        "message_id": message.as_str(),
        "subject_id": subject.as_str(),
        "status": status.as_str(),
        "at": rfc3339(at),
    });
    if let Some((code, provider_code)) = error {
        data["error"] = json!({"code": code, "provider_code": provider_code});
    }
    NewEvent::seal(
        key,
        EventType::MessageStatus,
        Some(integration.clone()),
        subject,
        data,
        at,
    )
}

#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub worker: WorkerSettings,
    pub lease: TimeDelta,
    /// How long outbound content stays after the provider accepted it.
    pub keep_content: TimeDelta,
    /// How long customers' messages are kept.
    pub keep_inbound: TimeDelta,
}

struct Inner {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    audit: Audit,
    subjects: Subjects,
    parsers: HashMap<&'static str, Arc<dyn CallbackParser>>,
    consents: Consents,
    settings: ReportSettings,
    owner: String,
    wake: Arc<Notify>,
}

/// Receiving and processing provider callbacks. Cheap to clone.
#[derive(Clone)]
pub struct Reports {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Counts {
    statuses: u64,
    inbound: u64,
    ignored: u64,
    preferences: u64,
    unknown_messages: u64,
}

impl Reports {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        audit: Audit,
        subjects: Subjects,
        parsers: Vec<Arc<dyn CallbackParser>>,
        consents: Consents,
        settings: ReportSettings,
        owner: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                clock,
                audit,
                subjects,
                parsers: parsers.into_iter().map(|p| (p.provider(), p)).collect(),
                consents,
                settings,
                owner,
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings.worker
    }

    /// Wakes the processor when a callback is stored.
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.wake)
    }

    /// Stores an authenticated callback, encrypted, with its audit entry; processing follows.
    pub async fn receive(
        &self,
        provider: &'static str,
        body: &[u8],
    ) -> Result<CallbackId, ReportError> {
        if !self.inner.parsers.contains_key(provider) {
            return Err(ReportError::UnknownProvider(provider.to_owned()));
        }
        let now = self.inner.clock.now();
        let id = CallbackId::generate_ordered(now)?;
        let ciphertext = self.inner.keys.seal_system(&body_binding(&id), body)?;
        let audit = AuditRecord::new(
            &AuditEvent::new(
                &Initiator::system(),
                Action::ProviderWebhookReceived,
                Outcome::Success,
            )
            .target(Target::Service)
            .details(
                Details::new()
                    .with("provider", provider)
                    .with("callback_id", &id)
                    .with("bytes", body.len() as u64),
            ),
            now,
        );
        let entry = InboxEntry {
            id: id.clone(),
            provider: provider.to_owned(),
            body_ciphertext: ciphertext,
            received_at: now,
            attempts: 0,
        };
        self.inner.store.insert_callback(&entry, &audit).await?;
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Records a callback that failed authentication; its body is never read.
    pub async fn reject(
        &self,
        provider: &'static str,
        reason: &'static str,
    ) -> Result<(), StoreError> {
        self.inner
            .audit
            .append(
                &AuditEvent::new(
                    &Initiator::system(),
                    Action::ProviderWebhookRejected,
                    Outcome::Denied,
                )
                .target(Target::Service)
                .details(
                    Details::new()
                        .with("provider", provider)
                        .with("reason", reason),
                ),
            )
            .await
    }

    fn keep_until(&self, now: Timestamp, keep: TimeDelta) -> Option<Timestamp> {
        (keep > TimeDelta::zero()).then(|| now + keep)
    }

    async fn statuses(
        &self,
        reports: Vec<StatusReport>,
        counts: &mut Counts,
        batch: &mut ReportBatch,
    ) -> Result<(), ReportError> {
        if reports.is_empty() {
            return Ok(());
        }
        let keys = &self.inner.keys;
        let indexes: Vec<[u8; 32]> = reports
            .iter()
            .map(|r| keys.provider_ref_index(&r.provider_message_id))
            .collect();
        let ids: Vec<MessageId> = reports
            .iter()
            .filter_map(|r| {
                r.correlation
                    .as_deref()
                    .and_then(|c| MessageId::parse(c).ok())
            })
            .collect();
        let targets = self.inner.store.report_targets(&indexes, &ids).await?;
        let mut current: HashMap<MessageId, MessageStatus> = HashMap::new();
        // Apply each message's reports in life-cycle order (read may arrive before delivered).
        let mut matched: Vec<(&ReportTarget, StatusReport)> = Vec::new();
        for (report, index) in reports.into_iter().zip(indexes) {
            let by_correlation = report
                .correlation
                .as_deref()
                .and_then(|c| MessageId::parse(c).ok());
            let target = targets
                .iter()
                .find(|t| t.provider_ref_index == Some(index))
                .or_else(|| by_correlation.and_then(|id| targets.iter().find(|t| t.id == id)));
            match target {
                Some(target) => matched.push((target, report)),
                None => counts.unknown_messages += 1,
            }
        }
        matched.sort_by_key(|(t, r)| {
            (
                t.id.clone(),
                MessageStatus::ALL.iter().position(|s| *s == r.status),
            )
        });
        let now = self.inner.clock.now();
        for (target, report) in matched {
            counts.statuses += 1;
            let status = current.entry(target.id.clone()).or_insert(target.status);
            let reached_recipient =
                matches!(*status, MessageStatus::Delivered | MessageStatus::Read);
            if !(report.status == MessageStatus::Failed && reached_recipient) {
                batch
                    .history
                    .push((target.id.clone(), report.status, report.at));
            }
            if !status.may_become(report.status) {
                continue;
            }
            *status = report.status;
            let key = match keys.subject_key(&target.subject_id).await {
                Ok(key) => Some(key),
                Err(KeyError::NoSubjectKey(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let error = report
                .error
                .as_ref()
                .map(|e| (e.code.as_str(), e.provider_code));
            let event = key
                .map(|key| {
                    status_event(
                        &key,
                        &target.integration_id,
                        &target.subject_id,
                        &target.id,
                        report.status,
                        error,
                        report.at,
                    )
                })
                .transpose()?;
            let mut details = Details::new().with("status", report.status.as_str());
            if let Some(e) = &report.error {
                details = details
                    .with_opt("provider_code", e.provider_code)
                    .with_opt("code", crate::audit::Detail::name(&e.code));
            }
            batch.statuses.push(StatusChange {
                message_id: target.id.clone(),
                status: report.status,
                from: MessageStatus::ALL
                    .into_iter()
                    .filter(|s| s.may_become(report.status))
                    .collect(),
                at: report.at,
                error: report.error,
                keep_content_until: self.keep_until(now, self.inner.settings.keep_content),
                audit: AuditRecord::new(
                    &AuditEvent::new(
                        &Initiator::system(),
                        Action::MessageStatus,
                        Outcome::Success,
                    )
                    .target(Target::Message(target.id.clone()))
                    .details(details),
                    now,
                ),
                event,
            });
        }
        Ok(())
    }

    async fn inbound(
        &self,
        report: InboundReport,
        batch: &mut ReportBatch,
    ) -> Result<(), ReportError> {
        let now = self.inner.clock.now();
        let subject = self
            .inner
            .subjects
            .resolve(&report.from, &Initiator::system())
            .await?;
        let key = self.inner.keys.subject_key(&subject.id).await?;
        let id = MessageId::generate_ordered(now)?;
        let content = serde_json::to_vec(&report.content).unwrap_or_default();
        let content_ciphertext = Keyring::seal_for_subject(&key, &inbound_binding(&id), &content)?;
        // A provider clock ahead of ours must not stretch the 24-hour window.
        let sent_at = report.at.min(now);
        let data = json!({
            "message_id": id.as_str(),
            "subject_id": subject.id.as_str(),
            "channel": Channel::Whatsapp.as_str(),
            "kind": report.content.kind,
            "sent_at": rfc3339(sent_at),
            "received_at": rfc3339(now),
            "content": report.content,
        });
        let event = NewEvent::seal(
            &key,
            EventType::MessageInbound,
            None,
            &subject.id,
            data,
            now,
        )?;
        let kind_detail = crate::audit::Detail::name(&report.content.kind);
        let earlier = batch.consent_changes_of(&subject.id);
        let consent = self
            .inner
            .consents
            .on_inbound(&subject, &id, &report.content, sent_at, &earlier)
            .await?;
        batch.inbound.push(NewInbound {
            id,
            subject_id: subject.id.clone(),
            channel: Channel::Whatsapp,
            provider_ref_index: self
                .inner
                .keys
                .provider_ref_index(&report.provider_message_id),
            kind: report.content.kind.clone(),
            content_ciphertext,
            sent_at,
            received_at: now,
            purge_at: now + self.inner.settings.keep_inbound,
            audit: AuditRecord::new(
                &AuditEvent::new(
                    &Initiator::system(),
                    Action::MessageInbound,
                    Outcome::Success,
                )
                .target(Target::Subject(subject.id.clone()))
                .details(
                    Details::new()
                        .with_opt("kind", kind_detail)
                        .with("channel", Channel::Whatsapp.as_str()),
                ),
                now,
            ),
            event: Some(event),
            consent: consent.changes,
            replies: consent.replies,
        });
        Ok(())
    }

    async fn preference(
        &self,
        report: PreferenceReport,
        batch: &mut ReportBatch,
    ) -> Result<(), ReportError> {
        let subject = self
            .inner
            .subjects
            .resolve(&report.from, &Initiator::system())
            .await?;
        let earlier = batch.consent_changes_of(&subject.id);
        let at = report.at.min(self.inner.clock.now());
        let changes = self
            .inner
            .consents
            .on_preference(&subject, report.preference, at, &earlier)
            .await?;
        batch.preferences.extend(changes);
        Ok(())
    }

    /// Processes one stored callback.
    pub async fn process(&self, entry: &InboxEntry) -> Result<(), ReportError> {
        let parser = self
            .inner
            .parsers
            .get(entry.provider.as_str())
            .ok_or_else(|| ReportError::UnknownProvider(entry.provider.clone()))?;
        let body = self
            .inner
            .keys
            .open_system(&body_binding(&entry.id), &entry.body_ciphertext)?;
        let now = self.inner.clock.now();
        let mut counts = Counts::default();
        let mut batch = ReportBatch {
            callback: entry.id.clone(),
            owner: self.inner.owner.clone(),
            statuses: Vec::new(),
            history: Vec::new(),
            inbound: Vec::new(),
            preferences: Vec::new(),
            audit: None,
        };
        let parsed = parser.parse(&body);
        let unparseable = parsed.is_err();
        let mut statuses = Vec::new();
        for report in parsed.unwrap_or_default() {
            match report {
                ProviderReport::Status(status) => statuses.push(status),
                ProviderReport::Inbound(inbound) => {
                    counts.inbound += 1;
                    self.inbound(inbound, &mut batch).await?;
                }
                ProviderReport::Preference(preference) => {
                    counts.preferences += 1;
                    self.preference(preference, &mut batch).await?;
                }
                ProviderReport::Ignored { what } => {
                    counts.ignored += 1;
                    tracing::debug!(provider = %entry.provider, what = %what, "callback content ignored");
                }
            }
        }
        self.statuses(statuses, &mut counts, &mut batch).await?;
        batch.audit = Some(AuditRecord::new(
            &AuditEvent::new(
                &Initiator::system(),
                Action::ProviderWebhookProcessed,
                if unparseable {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
            )
            .target(Target::Service)
            .details(
                Details::new()
                    .with("statuses", counts.statuses)
                    .with("inbound", counts.inbound)
                    .with("ignored", counts.ignored)
                    .with("preferences", counts.preferences)
                    .with("unknown_messages", counts.unknown_messages)
                    .with("unparseable", unparseable),
            ),
            now,
        ));
        self.inner.store.apply_reports(&batch).await?;
        Ok(())
    }
}

#[async_trait]
impl LeasedWork for Reports {
    type Item = InboxEntry;

    fn name(&self) -> &'static str {
        "callbacks"
    }

    async fn claim(&self, limit: u32) -> Result<Vec<InboxEntry>, StoreError> {
        let now = self.inner.clock.now();
        self.inner
            .store
            .claim_callbacks(
                &self.inner.owner,
                now,
                now + self.inner.settings.lease,
                limit,
            )
            .await
    }

    async fn handle(&self, entry: InboxEntry) {
        if let Err(e) = self.process(&entry).await {
            // Kept, and tried again after a pause that grows with each failure.
            let pause = TimeDelta::seconds(5 * i64::from(entry.attempts.clamp(1, 720)));
            tracing::error!(callback_id = %entry.id, error = %e, "processing a provider callback failed; it will be retried");
            let due = self.inner.clock.now() + pause;
            if let Err(e) = self
                .inner
                .store
                .release_callback(&entry.id, &self.inner.owner, due)
                .await
            {
                tracing::error!(callback_id = %entry.id, error = %e, "could not reschedule a provider callback");
            }
        }
    }
}
