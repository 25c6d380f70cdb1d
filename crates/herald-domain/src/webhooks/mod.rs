//! Events to integrators (Standard Webhooks): endpoints per integration, events written with
//! the changes they report, delivery with retries, signatures integrators verify.
//!
//! - [`event`]: event types and sealed payloads (the outbox rows).
//! - [`signing`]: `whsec_` secrets and `v1` signatures.
//! - [`target`]: which URLs Herald may call (no SSRF into its own network).
//! - [`dispatch`]: the worker that delivers events.

pub mod dispatch;
pub mod event;
pub mod signing;
pub mod target;

use std::sync::Arc;

use herald_crypto::aead::Binding;
use zeroize::Zeroizing;

pub use dispatch::{
    ClaimedEvent, DispatchSettings, Dispatcher, EventOutcome, EventTransport, TransportError,
    TransportResponse,
};
pub use event::{EventType, NewEvent, OperatorEvent};
pub use signing::SigningSecret;
pub use target::TargetError;

use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::clock::{Clock, Timestamp};
use crate::ids::{IntegrationId, WebhookEndpointId};
use crate::keys::{KeyError, Keyring};
use crate::store::{Store, StoreError};

/// An endpoint as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub id: WebhookEndpointId,
    pub integration_id: IntegrationId,
    pub url: String,
    pub events: Vec<EventType>,
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub disabled_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// An endpoint about to be stored, its secret encrypted under the system key.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub record: EndpointRecord,
    pub secret_ciphertext: Vec<u8>,
}

/// Endpoints one integration may have.
pub const MAX_ENDPOINTS_PER_INTEGRATION: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("no such integration")]
    UnknownIntegration,
    #[error("url {0}")]
    Url(#[from] TargetError),
    #[error("events must name one or more of the event types")]
    Events,
    #[error("the integration already has the maximum number of endpoints")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

impl From<herald_crypto::CryptoError> for EndpointError {
    fn from(e: herald_crypto::CryptoError) -> Self {
        EndpointError::Keys(KeyError::from(e))
    }
}

pub(crate) fn secret_binding(id: &WebhookEndpointId) -> Binding<'_> {
    Binding::new("webhook_endpoints", "secret_ciphertext", id.as_str())
}

/// Registering and listing endpoints.
#[derive(Debug, Clone)]
pub struct WebhookEndpoints {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    allow_insecure_targets: bool,
}

impl WebhookEndpoints {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        allow_insecure_targets: bool,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            allow_insecure_targets,
        }
    }

    /// Registers an endpoint; the secret comes back this once.
    pub async fn create(
        &self,
        integration: &IntegrationId,
        url: &str,
        events: &[String],
        initiator: &Initiator,
    ) -> Result<(EndpointRecord, Zeroizing<String>), EndpointError> {
        target::check_url(url, self.allow_insecure_targets)?;
        let mut types = Vec::new();
        for name in events {
            let t = EventType::parse(name).ok_or(EndpointError::Events)?;
            if !types.contains(&t) {
                types.push(t);
            }
        }
        if types.is_empty() {
            return Err(EndpointError::Events);
        }
        if self.store.integration(integration).await?.is_none() {
            return Err(EndpointError::UnknownIntegration);
        }
        if self.store.webhook_endpoints(integration).await?.len() >= MAX_ENDPOINTS_PER_INTEGRATION {
            return Err(EndpointError::TooMany);
        }
        let id = WebhookEndpointId::generate()?;
        let secret = SigningSecret::generate()?;
        let secret_ciphertext = self
            .keys
            .seal_system(&secret_binding(&id), secret.expose_bytes())?;
        let now = self.clock.now();
        let record = EndpointRecord {
            id: id.clone(),
            integration_id: integration.clone(),
            url: url.to_owned(),
            events: types,
            enabled: true,
            consecutive_failures: 0,
            disabled_at: None,
            created_at: now,
        };
        let event_names: Vec<&'static str> = record.events.iter().map(|t| t.as_str()).collect();
        let audit = AuditRecord::new(
            &AuditEvent::new(initiator, Action::WebhookEndpointCreated, Outcome::Success)
                .target(Target::WebhookEndpoint(id))
                .details(
                    Details::new()
                        .with("integration_id", integration)
                        .with("events", event_names),
                ),
            now,
        );
        self.store
            .insert_webhook_endpoint(
                &NewEndpoint {
                    record: record.clone(),
                    secret_ciphertext,
                },
                &audit,
            )
            .await?;
        Ok((record, secret.reveal()))
    }

    pub async fn list(
        &self,
        integration: &IntegrationId,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        self.store.webhook_endpoints(integration).await
    }
}
