//! The delivery worker: claims due messages with a lease (in a short transaction), sends them
//! through the provider with no transaction open, and records each outcome — sent, retry later,
//! failed — with its attempt and audit entries (group-committed with other outcomes).
//!
//! At least once: a node that dies mid-send leaves its lease to expire, and another worker
//! claims the message again. Only such a message can be sent twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use herald_crypto::SymmetricKey;
use herald_crypto::aead::Binding;

use super::model::{Content, MessageStatus};
use super::pacing::{Paced, Pacer};
use super::provider::{Outgoing, Provider, ProviderFailure, Sent};
use super::reports::status_event;
use super::retry::{Decision, RetryPolicy};
use super::send::content_binding;
use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::batch::Batcher;
use crate::clock::{Clock, Timestamp};
use crate::ids::{IntegrationId, MessageId, SubjectId};
use crate::keys::{KeyError, Keyring};
use crate::phone::PhoneNumber;
use crate::store::{Store, StoreError};
use crate::webhooks::NewEvent;
use crate::worker::{LeasedWork, WorkerSettings};

/// A message claimed for delivery, with what is needed to send it.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: MessageId,
    pub integration_id: IntegrationId,
    pub subject_id: SubjectId,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub created_at: Timestamp,
    pub content_ciphertext: Option<Vec<u8>>,
    /// `None` once the subject is erased.
    pub phone_ciphertext: Option<Vec<u8>>,
    pub subject_restricted: bool,
    pub purpose: String,
    /// The subject's records on the message's channel at the claim (purpose, standing), the
    /// channel opt-in included.
    pub consents: Vec<(String, crate::consent::Standing)>,
    /// Sent outside a conversation the subject started: the channel opt-in it relied on is
    /// checked again.
    pub business_initiated: bool,
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// `sent`, `retry` or `failed`.
    pub outcome: &'static str,
    pub http_status: Option<u16>,
    pub provider_code: Option<i64>,
}

/// What happened to a claimed message.
#[derive(Debug, Clone)]
pub enum DeliveryUpdate {
    Sent {
        id: MessageId,
        /// The provider's id for the message, found again through this blind index when
        /// status reports arrive; stored encrypted (a WhatsApp message id embeds the
        /// recipient's phone number).
        provider_ref_index: [u8; 32],
        provider_ref_ciphertext: Vec<u8>,
        attempt: AttemptRecord,
        /// Keep the content until then; `None`: delete it now.
        keep_content_until: Option<Timestamp>,
        /// The provider reported delivery at once (the sandbox).
        delivered_at: Option<Timestamp>,
        audit: Vec<AuditRecord>,
        events: Vec<NewEvent>,
    },
    Retry {
        id: MessageId,
        due_at: Timestamp,
        attempt: AttemptRecord,
        audit: AuditRecord,
    },
    Failed {
        id: MessageId,
        code: &'static str,
        provider_code: Option<i64>,
        at: Timestamp,
        attempt: Option<AttemptRecord>,
        audit: AuditRecord,
        event: Option<NewEvent>,
    },
    /// Pacing: not an attempt; back in the queue until `due_at`.
    Deferred { id: MessageId, due_at: Timestamp },
}

impl DeliveryUpdate {
    pub fn id(&self) -> &MessageId {
        match self {
            DeliveryUpdate::Sent { id, .. }
            | DeliveryUpdate::Retry { id, .. }
            | DeliveryUpdate::Failed { id, .. }
            | DeliveryUpdate::Deferred { id, .. } => id,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub worker: WorkerSettings,
    pub lease: TimeDelta,
    pub retry: RetryPolicy,
    /// How long content stays after the provider accepted the message (zero: not at all).
    pub keep_content: TimeDelta,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

struct Inner {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    provider: Arc<dyn Provider>,
    pacer: Option<Pacer>,
    catalog: Arc<super::Catalog>,
    settings: DeliverySettings,
    owner: String,
    outcomes: Batcher<DeliveryUpdate, bool>,
}

/// The delivery worker of one node. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("owner", &self.inner.owner)
            .field("provider", &self.inner.provider.name())
            .finish_non_exhaustive()
    }
}

/// A uniform random number in `[0, 1)` for retry jitter.
pub(crate) fn jitter() -> f64 {
    let bytes = herald_crypto::random::bytes::<4>().unwrap_or([0x80, 0, 0, 0]);
    f64::from(u32::from_be_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

pub(crate) fn provider_ref_binding(id: &MessageId) -> Binding<'_> {
    Binding::new("messages", "provider_ref_ciphertext", id.as_str())
}

fn event(action: Action, outcome: Outcome, id: &MessageId, details: Details) -> AuditEvent {
    AuditEvent::new(&Initiator::system(), action, outcome)
        .target(Target::Message(id.clone()))
        .details(details)
}

/// Outcomes one transaction records at most, and transactions in flight.
const OUTCOME_BATCH: usize = 512;
const OUTCOMES_IN_FLIGHT: usize = 2;

impl Delivery {
    /// `pacer`: `None` for providers without limits (the sandbox). `owner` names this node's
    /// leases. Must be called inside a Tokio runtime (it starts the outcome writer).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        provider: Arc<dyn Provider>,
        pacer: Option<Pacer>,
        catalog: Arc<super::Catalog>,
        settings: DeliverySettings,
        owner: String,
    ) -> Self {
        let writer = Arc::clone(&store);
        let lease_owner = owner.clone();
        let outcomes = Batcher::spawn(
            OUTCOME_BATCH,
            OUTCOMES_IN_FLIGHT,
            move |updates: Vec<DeliveryUpdate>| {
                let store = Arc::clone(&writer);
                let owner = lease_owner.clone();
                async move { store.record_deliveries(&owner, &updates).await }
            },
        );
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                clock,
                provider,
                pacer,
                catalog,
                settings,
                owner,
                outcomes,
            }),
        }
    }

    /// The channel this worker delivers through (for logs).
    pub fn provider_name(&self) -> &'static str {
        self.inner.provider.name()
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings.worker
    }

    fn status_event(
        key: &SymmetricKey,
        message: &ClaimedMessage,
        status: MessageStatus,
        error: Option<(&str, Option<i64>)>,
        at: Timestamp,
    ) -> Result<NewEvent, KeyError> {
        status_event(
            key,
            &message.integration_id,
            &message.subject_id,
            &message.id,
            status,
            error,
            at,
        )
    }

    fn failed(
        &self,
        message: &ClaimedMessage,
        code: &'static str,
        attempt: Option<AttemptRecord>,
        key: Option<&SymmetricKey>,
    ) -> Result<DeliveryUpdate, KeyError> {
        let now = self.inner.clock.now();
        let provider_code = attempt.as_ref().and_then(|a| a.provider_code);
        let details = Details::new()
            .with("code", code)
            .with("attempts", message.attempts)
            .with_opt("provider_code", provider_code);
        let status_event = key
            .map(|key| {
                Self::status_event(
                    key,
                    message,
                    MessageStatus::Failed,
                    Some((code, provider_code)),
                    now,
                )
            })
            .transpose()?;
        Ok(DeliveryUpdate::Failed {
            id: message.id.clone(),
            code,
            provider_code,
            at: now,
            attempt,
            audit: AuditRecord::new(
                &event(
                    Action::MessageFailed,
                    Outcome::Failure,
                    &message.id,
                    details,
                ),
                now,
            ),
            event: status_event,
        })
    }

    /// Everything up to and including the provider call, without a transaction open.
    async fn attempt(&self, message: &ClaimedMessage) -> Result<DeliveryUpdate, DeliveryError> {
        let clock = &self.inner.clock;
        let key = match self.inner.keys.subject_key(&message.subject_id).await {
            Ok(key) => key,
            Err(KeyError::NoSubjectKey(_)) => {
                return Ok(self.failed(message, "subject_erased", None, None)?);
            }
            Err(e) => return Err(e.into()),
        };
        if message.subject_restricted {
            return Ok(self.failed(message, "subject_restricted", None, Some(&key))?);
        }
        // Consent is checked again before every attempt: a withdrawal since acceptance (a
        // "STOP", a DELETE) cancels the message, retries included.
        let now = clock.now();
        if let Err(refusal) = crate::consent::model::decide_delivery(
            self.inner.catalog.purpose(&message.purpose),
            message
                .consents
                .iter()
                .map(|(purpose, standing)| (purpose.as_str(), standing.at(now))),
            message.business_initiated,
        ) {
            return Ok(self.failed(message, refusal.code(), None, Some(&key))?);
        }
        let (Some(phone_ciphertext), Some(content_ciphertext)) =
            (&message.phone_ciphertext, &message.content_ciphertext)
        else {
            return Ok(self.failed(message, "subject_erased", None, Some(&key))?);
        };
        if let Some(pacer) = &self.inner.pacer {
            loop {
                match pacer.admit(&message.subject_id, clock.now()) {
                    Ok(()) => break,
                    Err(Paced::Recipient(wait)) => {
                        return Ok(DeliveryUpdate::Deferred {
                            id: message.id.clone(),
                            due_at: clock.now() + wait,
                        });
                    }
                    Err(Paced::Sender(wait)) => {
                        tokio::time::sleep(wait.to_std().unwrap_or(Duration::from_millis(10)))
                            .await;
                    }
                }
            }
        }
        let phone_text = Keyring::open_for_subject(
            &key,
            &crate::subjects::phone_binding(&message.subject_id),
            phone_ciphertext,
        )?;
        let to = std::str::from_utf8(&phone_text)
            .ok()
            .and_then(PhoneNumber::from_stored)
            .ok_or_else(|| StoreError::Corrupt("a stored phone number does not parse".into()))?;
        let content_json =
            Keyring::open_for_subject(&key, &content_binding(&message.id), content_ciphertext)?;
        let content: Content = serde_json::from_slice(&content_json)
            .map_err(|_| StoreError::Corrupt("stored message content does not parse".into()))?;
        let outgoing = Outgoing {
            message_id: message.id.clone(),
            to,
            content,
        };
        let started_at = clock.now();
        let result = self.inner.provider.send(&outgoing).await;
        let finished_at = clock.now();
        let attempt =
            |outcome, failure: Option<&ProviderFailure>, sent: Option<&Sent>| AttemptRecord {
                attempt: message.attempts,
                started_at,
                finished_at,
                outcome,
                http_status: failure
                    .and_then(ProviderFailure::http_status)
                    .or(sent.and_then(|s| s.http_status)),
                provider_code: failure.and_then(ProviderFailure::provider_code),
            };
        Ok(match result {
            Ok(sent) => {
                let keep = self.inner.settings.keep_content;
                let details = Details::new()
                    .with("attempt", message.attempts)
                    .with("provider", self.inner.provider.name());
                let mut audit = vec![AuditRecord::new(
                    &event(Action::MessageSent, Outcome::Success, &message.id, details),
                    finished_at,
                )];
                let mut events = vec![Self::status_event(
                    &key,
                    message,
                    MessageStatus::Sent,
                    None,
                    finished_at,
                )?];
                if sent.delivered {
                    audit.push(AuditRecord::new(
                        &event(
                            Action::MessageStatus,
                            Outcome::Success,
                            &message.id,
                            Details::new().with("status", "delivered"),
                        ),
                        finished_at,
                    ));
                    events.push(Self::status_event(
                        &key,
                        message,
                        MessageStatus::Delivered,
                        None,
                        finished_at,
                    )?);
                }
                DeliveryUpdate::Sent {
                    id: message.id.clone(),
                    provider_ref_index: self
                        .inner
                        .keys
                        .provider_ref_index(&sent.provider_message_id),
                    provider_ref_ciphertext: Keyring::seal_for_subject(
                        &key,
                        &provider_ref_binding(&message.id),
                        sent.provider_message_id.as_bytes(),
                    )?,
                    attempt: attempt("sent", None, Some(&sent)),
                    keep_content_until: (keep > TimeDelta::zero()).then(|| finished_at + keep),
                    delivered_at: sent.delivered.then_some(finished_at),
                    audit,
                    events,
                }
            }
            Err(failure) => {
                let decision = self.inner.settings.retry.decide(
                    message.attempts,
                    &failure,
                    message.created_at,
                    finished_at,
                    jitter(),
                );
                match decision {
                    Decision::RetryAt(due_at) => {
                        let details = Details::new()
                            .with("attempt", message.attempts)
                            .with_opt("http_status", failure.http_status().map(u32::from))
                            .with_opt("provider_code", failure.provider_code())
                            .with("retry_in_seconds", (due_at - finished_at).num_seconds());
                        DeliveryUpdate::Retry {
                            id: message.id.clone(),
                            due_at,
                            attempt: attempt("retry", Some(&failure), None),
                            audit: AuditRecord::new(
                                &event(
                                    Action::MessageAttemptFailed,
                                    Outcome::Failure,
                                    &message.id,
                                    details,
                                ),
                                finished_at,
                            ),
                        }
                    }
                    Decision::Fail { code } => self.failed(
                        message,
                        code,
                        Some(attempt("failed", Some(&failure), None)),
                        Some(&key),
                    )?,
                }
            }
        })
    }
}

#[async_trait]
impl LeasedWork for Delivery {
    type Item = ClaimedMessage;

    fn name(&self) -> &'static str {
        "delivery"
    }

    async fn claim(&self, limit: u32) -> Result<Vec<ClaimedMessage>, StoreError> {
        let now = self.inner.clock.now();
        self.inner
            .store
            .claim_messages(
                &self.inner.owner,
                now,
                now + self.inner.settings.lease,
                limit,
            )
            .await
    }

    async fn handle(&self, message: ClaimedMessage) {
        let update = match self.attempt(&message).await {
            Ok(update) => update,
            Err(e) => {
                // Nothing recorded: the lease expires and the message is tried again.
                tracing::error!(message_id = %message.id, error = %e, "delivery attempt could not be made; the message will be retried");
                return;
            }
        };
        match self.inner.outcomes.submit(update).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(message_id = %message.id, "the lease expired before the outcome was recorded");
            }
            Err(e) => {
                tracing::error!(message_id = %message.id, error = %e, "recording a delivery outcome failed; the message will be retried");
            }
        }
    }
}
