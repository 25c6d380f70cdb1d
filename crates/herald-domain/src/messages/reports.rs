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
    /// A report for a business number Herald is not configured for: ignored and counted.
    ForeignNumber,
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
    /// The body without what it says about the number `e164` (its messages, statuses,
    /// contacts and preferences), for an erasure: `None` if it does not mention the number;
    /// `Some(None)` if nothing else would be left (or the body cannot be read: then it goes).
    #[allow(clippy::option_option)]
    fn redact(&self, body: &[u8], e164: &str) -> Option<Option<Vec<u8>>>;
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

/// A message a status report (or a customer's reply) is about, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTarget {
    pub id: MessageId,
    pub integration_id: IntegrationId,
    pub subject_id: SubjectId,
    pub status: MessageStatus,
    pub provider_ref_index: Option<[u8; 32]>,
    pub purpose: String,
    /// The consent event the message relied on (for a double opt-in's confirmation template:
    /// the request it asks the subject to confirm).
    pub consent_event_id: Option<crate::ids::ConsentEventId>,
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
    /// The integration that owns the conversation (ADR 0012), linked to the subject with the
    /// message; `None`: the message is stored and nobody is told.
    pub owner: Option<IntegrationId>,
    /// `message.inbound` for the owner only.
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
    /// The integration (by name) that receives customers' messages no conversation claims
    /// (the business number's default handler); `None`, or no integration of that name yet:
    /// such messages are stored and nobody is told.
    pub default_inbound: Option<String>,
    /// Processing attempts after which a stored callback is set aside (dead-lettered).
    pub max_attempts: u32,
    /// How long a stored callback (dead-lettered ones included) is kept at most.
    pub keep_callbacks: TimeDelta,
}

/// What callback processing skipped, for `/metrics` (counts since start).
#[derive(Debug, Default)]
pub struct CallbackStats {
    /// Reports whose sender's number could not be used (not a valid phone number).
    pub unusable_numbers: std::sync::atomic::AtomicU64,
    /// Reports for a business number Herald is not configured for.
    pub foreign_numbers: std::sync::atomic::AtomicU64,
    /// Callbacks set aside after failing too often.
    pub dead_lettered: std::sync::atomic::AtomicU64,
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
    stats: Arc<CallbackStats>,
    default_inbound: std::sync::OnceLock<IntegrationId>,
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
    unusable_numbers: u64,
    foreign_numbers: u64,
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
                stats: Arc::default(),
                default_inbound: std::sync::OnceLock::new(),
            }),
        }
    }

    /// What processing skipped so far.
    pub fn stats(&self) -> Arc<CallbackStats> {
        Arc::clone(&self.inner.stats)
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
        self.inner
            .store
            .insert_callback(&entry, now + self.inner.settings.keep_callbacks, &audit)
            .await?;
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Records a callback that failed authentication; its body is never read. Anyone can send
    /// those: aggregated per source network and reason (see [`crate::audit::flood`]).
    pub async fn reject(
        &self,
        provider: &'static str,
        reason: &'static str,
        source: Option<std::net::IpAddr>,
    ) -> Result<(), StoreError> {
        self.inner
            .audit
            .failure(
                Action::ProviderWebhookRejected,
                source,
                reason,
                Details::new().with("provider", provider),
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

    /// The subject a report names, created if new; `None` (counted) when the number cannot be
    /// used — one bad number must not hold back the rest of a batched callback.
    async fn sender(
        &self,
        from: &str,
        counts: &mut Counts,
    ) -> Result<Option<crate::store::SubjectRecord>, ReportError> {
        match self
            .inner
            .subjects
            .resolve(from, &Initiator::system())
            .await
        {
            Ok(subject) => Ok(Some(subject)),
            Err(SubjectError::Phone(_)) => {
                counts.unusable_numbers += 1;
                self.inner
                    .stats
                    .unusable_numbers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Who owns the conversation a customer's message belongs to (ADR 0012): the integration
    /// whose message it replies to, else the last integration that wrote to the subject on
    /// this channel within the service window, else the business number's default handler.
    async fn conversation_owner(
        &self,
        subject: &SubjectId,
        replied_to: Option<&ReportTarget>,
        sent_at: Timestamp,
    ) -> Result<Option<IntegrationId>, ReportError> {
        if let Some(target) = replied_to {
            return Ok(Some(target.integration_id.clone()));
        }
        if let Some(last) = self
            .inner
            .store
            .last_sender(
                subject,
                Channel::Whatsapp,
                sent_at - super::send::SERVICE_WINDOW,
            )
            .await?
        {
            return Ok(Some(last));
        }
        self.default_inbound().await
    }

    /// The configured default handler, once it exists (looked up by name until then, so it
    /// can be configured before the integration is created).
    async fn default_inbound(&self) -> Result<Option<IntegrationId>, ReportError> {
        let Some(name) = &self.inner.settings.default_inbound else {
            return Ok(None);
        };
        if let Some(id) = self.inner.default_inbound.get() {
            return Ok(Some(id.clone()));
        }
        match self.inner.store.integration_by_name(name).await? {
            Some(record) => Ok(Some(
                self.inner.default_inbound.get_or_init(|| record.id).clone(),
            )),
            None => {
                tracing::warn!(
                    "inbound.default_integration names no integration; the message reaches nobody"
                );
                Ok(None)
            }
        }
    }

    /// The message of Herald's a customer's message replies to (`context.id`), if it was sent
    /// to that same subject.
    async fn replied_to(
        &self,
        subject: &SubjectId,
        content: &InboundContent,
    ) -> Result<Option<ReportTarget>, ReportError> {
        let Some(context) = content.details.get("context_id").and_then(Value::as_str) else {
            return Ok(None);
        };
        let index = self.inner.keys.provider_ref_index(context);
        Ok(self
            .inner
            .store
            .report_targets(&[index], &[])
            .await?
            .into_iter()
            .find(|t| &t.subject_id == subject))
    }

    async fn inbound(
        &self,
        report: InboundReport,
        counts: &mut Counts,
        batch: &mut ReportBatch,
    ) -> Result<(), ReportError> {
        let now = self.inner.clock.now();
        let Some(subject) = self.sender(&report.from, counts).await? else {
            return Ok(());
        };
        let key = self.inner.keys.subject_key(&subject.id).await?;
        let id = MessageId::generate_ordered(now)?;
        let content = serde_json::to_vec(&report.content).unwrap_or_default();
        let content_ciphertext = Keyring::seal_for_subject(&key, &inbound_binding(&id), &content)?;
        // A provider clock ahead of ours must not stretch the 24-hour window.
        let sent_at = report.at.min(now);
        let replied_to = self.replied_to(&subject.id, &report.content).await?;
        let owner = self
            .conversation_owner(&subject.id, replied_to.as_ref(), sent_at)
            .await?;
        let event = owner
            .as_ref()
            .map(|owner| {
                NewEvent::seal(
                    &key,
                    EventType::MessageInbound,
                    Some(owner.clone()),
                    &subject.id,
                    json!({
                        "message_id": id.as_str(),
                        "subject_id": subject.id.as_str(),
                        "channel": Channel::Whatsapp.as_str(),
                        "kind": report.content.kind,
                        "sent_at": rfc3339(sent_at),
                        "received_at": rfc3339(now),
                        "in_reply_to": replied_to.as_ref().map(|t| t.id.as_str()),
                        "content": report.content,
                    }),
                    now,
                )
            })
            .transpose()?;
        let kind_detail = crate::audit::Detail::name(&report.content.kind);
        let earlier = batch.consent_changes_of(&subject.id);
        let answered = replied_to
            .as_ref()
            .map(|t| crate::consent::inbound::RepliedTo {
                message_id: t.id.clone(),
                purpose: t.purpose.clone(),
                consent_event_id: t.consent_event_id.clone(),
            });
        let consent = self
            .inner
            .consents
            .on_inbound(
                &subject,
                &id,
                &report.content,
                sent_at,
                &earlier,
                answered.as_ref(),
            )
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
                        .with("channel", Channel::Whatsapp.as_str())
                        .with_opt("owner_integration_id", owner.as_ref()),
                ),
                now,
            ),
            owner,
            event,
            consent: consent.changes,
            replies: consent.replies,
        });
        Ok(())
    }

    async fn preference(
        &self,
        report: PreferenceReport,
        counts: &mut Counts,
        batch: &mut ReportBatch,
    ) -> Result<(), ReportError> {
        let Some(subject) = self.sender(&report.from, counts).await? else {
            return Ok(());
        };
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
                    self.inbound(inbound, &mut counts, &mut batch).await?;
                }
                ProviderReport::Preference(preference) => {
                    counts.preferences += 1;
                    self.preference(preference, &mut counts, &mut batch).await?;
                }
                ProviderReport::ForeignNumber => {
                    // Another business number's traffic (a shared app, a misrouted
                    // subscription): not ours to act on.
                    counts.foreign_numbers += 1;
                    self.inner
                        .stats
                        .foreign_numbers
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                    .with("unusable_numbers", counts.unusable_numbers)
                    .with("foreign_numbers", counts.foreign_numbers)
                    .with("unparseable", unparseable),
            ),
            now,
        ));
        self.inner.store.apply_reports(&batch).await?;
        Ok(())
    }
}

impl ReportError {
    /// A stable, data-free name for why processing failed (the dead letter's reason).
    pub fn reason(&self) -> &'static str {
        match self {
            ReportError::Store(StoreError::Conflict) => "conflict",
            ReportError::Store(_) => "storage",
            ReportError::Keys(_) => "keys",
            ReportError::Subjects(_) => "subjects",
            ReportError::Consent(_) => "consent",
            ReportError::UnknownProvider(_) => "unknown_provider",
        }
    }
}

impl Reports {
    /// Sets a callback aside after its last allowed attempt, with the reason and an audit
    /// entry, so that it stops holding a worker (and is purged with the inbox retention).
    async fn dead_letter(&self, entry: &InboxEntry, error: &ReportError) {
        let now = self.inner.clock.now();
        let reason = error.reason();
        tracing::error!(callback_id = %entry.id, attempts = entry.attempts, reason, error = %error, "a provider callback failed too often and was dead-lettered");
        let audit = AuditRecord::new(
            &AuditEvent::new(
                &Initiator::system(),
                Action::ProviderWebhookDeadLettered,
                Outcome::Failure,
            )
            .target(Target::Service)
            .details(
                Details::new()
                    .with("callback_id", &entry.id)
                    .with_opt("provider", crate::audit::Detail::name(&entry.provider))
                    .with("attempts", u64::from(entry.attempts))
                    .with("reason", reason),
            ),
            now,
        );
        match self
            .inner
            .store
            .dead_letter_callback(&entry.id, &self.inner.owner, reason, now, &audit)
            .await
        {
            Ok(()) => {
                self.inner
                    .stats
                    .dead_lettered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(callback_id = %entry.id, error = %e, "could not dead-letter a provider callback");
            }
        }
    }

    /// Deletes stored callbacks (dead-lettered ones included) past the inbox retention.
    pub async fn purge_inbox(&self) -> Result<u64, StoreError> {
        let now = self.inner.clock.now();
        let audit = |count: u64| {
            AuditRecord::new(
                &AuditEvent::new(
                    &Initiator::system(),
                    Action::ProviderInboxPurged,
                    Outcome::Success,
                )
                .target(Target::Service)
                .details(Details::new().with("count", count)),
                now,
            )
        };
        self.inner.store.purge_callbacks(now, 1000, &audit).await
    }

    /// Removes what stored callbacks (pending or dead-lettered) say about the number `e164`
    /// before its subject is erased: each body that mentions it is rewritten without those
    /// parts, or deleted when nothing else is left. Returns how many were changed.
    pub async fn forget_number(&self, e164: &str) -> Result<u64, ReportError> {
        let mut changed = 0;
        for entry in self.inner.store.stored_callbacks().await? {
            let Some(parser) = self.inner.parsers.get(entry.provider.as_str()) else {
                continue;
            };
            let body = self
                .inner
                .keys
                .open_system(&body_binding(&entry.id), &entry.body_ciphertext)?;
            let Some(redacted) = parser.redact(&body, e164) else {
                continue;
            };
            let ciphertext = match redacted {
                Some(rest) => Some(
                    self.inner
                        .keys
                        .seal_system(&body_binding(&entry.id), &rest)?,
                ),
                None => None,
            };
            self.inner
                .store
                .replace_callback(&entry.id, ciphertext.as_deref())
                .await?;
            changed += 1;
        }
        Ok(changed)
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
            if entry.attempts >= self.inner.settings.max_attempts {
                self.dead_letter(&entry, &e).await;
                return;
            }
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
