//! Delivering events to integrators' endpoints: claimed with a lease like messages, signed per
//! Standard Webhooks at each attempt (the timestamp is the attempt's), retried with backoff
//! over about three days, the endpoint disabled after a run of failures or a `410 Gone`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeDelta;
use serde_json::Value;

use super::event::{EventType, payload_binding, without_content};
use super::{SigningSecret, secret_binding};
use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::clock::{Clock, Timestamp};
use crate::ids::{EventId, IntegrationId, SubjectId, WebhookEndpointId};
use crate::keys::{KeyError, Keyring};
use crate::messages::provider::ProviderFailure;
use crate::messages::retry::{Decision, RetryPolicy};
use crate::store::{Store, StoreError};
use crate::worker::{LeasedWork, WorkerSettings};

/// One event for one endpoint, claimed for delivery.
#[derive(Clone)]
pub struct ClaimedEvent {
    pub event_id: EventId,
    pub endpoint_id: WebhookEndpointId,
    pub integration_id: IntegrationId,
    pub event_type: EventType,
    pub url: String,
    pub secret_ciphertext: Vec<u8>,
    /// `None` for events about no one person (`incident.deadline`).
    pub subject_id: Option<SubjectId>,
    /// `None` once delivered, given up, or shredded.
    pub payload_ciphertext: Option<Vec<u8>>,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub created_at: Timestamp,
    /// The endpoint's integration holds a live key with `messages:read` (or `admin`): only
    /// then does a `message.inbound` event carry what the customer wrote.
    pub may_read_content: bool,
}

impl std::fmt::Debug for ClaimedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedEvent")
            .field("event_id", &self.event_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_type", &self.event_type)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// How one delivery attempt ended, to be recorded.
#[derive(Debug, Clone)]
pub enum EventOutcome {
    Delivered {
        event_id: EventId,
        endpoint_id: WebhookEndpointId,
        at: Timestamp,
        http_status: u16,
        audit: AuditRecord,
    },
    Retry {
        event_id: EventId,
        endpoint_id: WebhookEndpointId,
        at: Timestamp,
        due_at: Timestamp,
        http_status: Option<u16>,
        audit: AuditRecord,
        /// Written if this failure disables the endpoint.
        disable_audit: AuditRecord,
    },
    Failed {
        event_id: EventId,
        endpoint_id: WebhookEndpointId,
        at: Timestamp,
        http_status: Option<u16>,
        /// A `410 Gone`: the integrator retired the endpoint.
        gone: bool,
        audit: AuditRecord,
        disable_audit: AuditRecord,
    },
}

/// What an endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportResponse {
    pub status: u16,
    pub retry_after: Option<TimeDelta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("the endpoint did not answer in time")]
    Timeout,
    #[error("the endpoint could not be reached")]
    Connect,
    #[error("the endpoint's address is not public")]
    TargetRefused,
}

/// Sends one signed POST. Implemented over HTTP in the `herald` crate; redirects are not
/// followed (a 3xx is a failed attempt).
#[async_trait]
pub trait EventTransport: Send + Sync + std::fmt::Debug {
    async fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<TransportResponse, TransportError>;
}

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub worker: WorkerSettings,
    pub lease: TimeDelta,
    pub retry: RetryPolicy,
    /// Consecutive failed attempts after which an endpoint is disabled.
    pub disable_after_failures: u32,
}

impl DispatchSettings {
    /// The specification's suggested schedule, roughly: 5 s doubling to 10 h between attempts,
    /// given up after about three days.
    pub fn retry_policy() -> RetryPolicy {
        RetryPolicy {
            base: TimeDelta::seconds(5),
            max: TimeDelta::hours(10),
            retry_after_cap: TimeDelta::hours(1),
            max_attempts: 18,
            max_age: TimeDelta::hours(75),
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn EventTransport>,
    settings: DispatchSettings,
    owner: String,
}

/// The event worker of one node. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

fn audit(
    action: Action,
    outcome: Outcome,
    event: &ClaimedEvent,
    details: Details,
    at: Timestamp,
) -> AuditRecord {
    AuditRecord::new(
        &AuditEvent::new(&Initiator::system(), action, outcome)
            .target(Target::WebhookEndpoint(event.endpoint_id.clone()))
            .details(
                details
                    .with("event_id", &event.event_id)
                    .with("event_type", event.event_type.as_str())
                    .with("attempt", event.attempts),
            ),
        at,
    )
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn EventTransport>,
        settings: DispatchSettings,
        owner: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                clock,
                transport,
                settings,
                owner,
            }),
        }
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings.worker
    }

    /// The body to send, or why there is none.
    async fn body(&self, event: &ClaimedEvent) -> Result<Result<Vec<u8>, &'static str>, KeyError> {
        let Some(ciphertext) = &event.payload_ciphertext else {
            return Ok(Err("payload_gone"));
        };
        if event.event_type.sealed_for_system() {
            let plaintext = self
                .inner
                .keys
                .open_system(&payload_binding(&event.event_id), ciphertext)?;
            return Ok(Ok(plaintext.to_vec()));
        }
        let Some(subject) = &event.subject_id else {
            return Ok(Err("payload_gone"));
        };
        let key = match self.inner.keys.subject_key(subject).await {
            Ok(key) => key,
            // Erased: the event was shredded with the subject.
            Err(KeyError::NoSubjectKey(_)) => return Ok(Err("subject_erased")),
            Err(e) => return Err(e),
        };
        let plaintext =
            Keyring::open_for_subject(&key, &payload_binding(&event.event_id), ciphertext)?;
        if event.event_type == EventType::MessageInbound && !event.may_read_content {
            let body: Value = serde_json::from_slice(&plaintext).map_err(|_| {
                KeyError::Store(StoreError::Corrupt(
                    "a stored event payload does not parse".into(),
                ))
            })?;
            return Ok(Ok(
                serde_json::to_vec(&without_content(body)).unwrap_or_default()
            ));
        }
        Ok(Ok(plaintext.to_vec()))
    }

    fn failed(
        &self,
        event: &ClaimedEvent,
        reason: &'static str,
        http_status: Option<u16>,
        at: Timestamp,
    ) -> EventOutcome {
        let gone = http_status == Some(410);
        EventOutcome::Failed {
            event_id: event.event_id.clone(),
            endpoint_id: event.endpoint_id.clone(),
            at,
            http_status,
            gone,
            audit: audit(
                Action::WebhookFailed,
                Outcome::Failure,
                event,
                Details::new()
                    .with("reason", reason)
                    .with_opt("http_status", http_status.map(u32::from)),
                at,
            ),
            disable_audit: self.disable_audit(event, if gone { "gone" } else { "failures" }, at),
        }
    }

    fn disable_audit(
        &self,
        event: &ClaimedEvent,
        reason: &'static str,
        at: Timestamp,
    ) -> AuditRecord {
        AuditRecord::new(
            &AuditEvent::new(
                &Initiator::system(),
                Action::WebhookEndpointDisabled,
                Outcome::Success,
            )
            .target(Target::WebhookEndpoint(event.endpoint_id.clone()))
            .details(Details::new().with("reason", reason).with(
                "consecutive_failures",
                self.inner.settings.disable_after_failures,
            )),
            at,
        )
    }

    /// One attempt, up to the outcome (recorded by the caller).
    async fn attempt(&self, event: &ClaimedEvent) -> Result<EventOutcome, KeyError> {
        let clock = &self.inner.clock;
        let body = match self.body(event).await? {
            Ok(body) => body,
            Err(reason) => return Ok(self.failed(event, reason, None, clock.now())),
        };
        let secret_bytes = self.inner.keys.open_system(
            &secret_binding(&event.endpoint_id),
            &event.secret_ciphertext,
        )?;
        let secret = SigningSecret::from_bytes(&secret_bytes).map_err(|_| {
            KeyError::Store(StoreError::Corrupt(
                "a stored webhook secret is malformed".into(),
            ))
        })?;
        let timestamp = clock.now().timestamp();
        let headers = vec![
            ("webhook-id", event.event_id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                secret.sign(event.event_id.as_str(), timestamp, &body),
            ),
            ("content-type", "application/json".to_owned()),
        ];
        let result = self.inner.transport.post(&event.url, headers, body).await;
        let at = clock.now();
        let (http_status, retry_after) = match result {
            Ok(response) if (200..300).contains(&response.status) => {
                return Ok(EventOutcome::Delivered {
                    event_id: event.event_id.clone(),
                    endpoint_id: event.endpoint_id.clone(),
                    at,
                    http_status: response.status,
                    audit: audit(
                        Action::WebhookDelivered,
                        Outcome::Success,
                        event,
                        Details::new().with("http_status", u32::from(response.status)),
                        at,
                    ),
                });
            }
            Ok(response) if response.status == 410 => {
                return Ok(self.failed(event, "gone", Some(410), at));
            }
            Ok(response) => (Some(response.status), response.retry_after),
            Err(e) => {
                tracing::debug!(event_id = %event.event_id, error = %e, "event delivery attempt failed");
                (None, None)
            }
        };
        let failure = ProviderFailure::Retryable {
            http_status,
            provider_code: None,
            retry_after,
        };
        let decision = self.inner.settings.retry.decide(
            event.attempts,
            &failure,
            event.created_at,
            at,
            crate::messages::delivery::jitter(),
        );
        Ok(match decision {
            Decision::RetryAt(due_at) => EventOutcome::Retry {
                event_id: event.event_id.clone(),
                endpoint_id: event.endpoint_id.clone(),
                at,
                due_at,
                http_status,
                audit: audit(
                    Action::WebhookAttemptFailed,
                    Outcome::Failure,
                    event,
                    Details::new()
                        .with_opt("http_status", http_status.map(u32::from))
                        .with("retry_in_seconds", (due_at - at).num_seconds()),
                    at,
                ),
                disable_audit: self.disable_audit(event, "failures", at),
            },
            Decision::Fail { code } => self.failed(event, code, http_status, at),
        })
    }
}

#[async_trait]
impl LeasedWork for Dispatcher {
    type Item = ClaimedEvent;

    fn name(&self) -> &'static str {
        "webhooks"
    }

    async fn claim(&self, limit: u32) -> Result<Vec<ClaimedEvent>, StoreError> {
        let now = self.inner.clock.now();
        self.inner
            .store
            .claim_webhook_deliveries(
                &self.inner.owner,
                now,
                now + self.inner.settings.lease,
                limit,
            )
            .await
    }

    async fn handle(&self, event: ClaimedEvent) {
        let outcome = match self.attempt(&event).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(event_id = %event.event_id, error = %e, "event could not be prepared; it will be retried");
                return;
            }
        };
        let recorded = self
            .inner
            .store
            .record_webhook_outcome(
                &self.inner.owner,
                &outcome,
                self.inner.settings.disable_after_failures,
            )
            .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event_id = %event.event_id, "the lease expired before the event outcome was recorded");
            }
            Err(e) => {
                tracing::error!(event_id = %event.event_id, error = %e, "recording an event outcome failed; it will be retried");
            }
        }
    }
}
