//! The background workers of `herald serve` (when `roles.worker` is on): message delivery to
//! the provider, processing of provider callbacks, events to integrators, and the purge of
//! message bodies past their retention. Each claims its work with a lease, so any number of
//! nodes on one PostgreSQL share the queues.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use herald_domain::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use herald_domain::clock::Clock;
use herald_domain::consent::Consents;
use herald_domain::keys::Keyring;
use herald_domain::messages::{
    Catalog, Delivery, DeliverySettings, Pacer, Provider, Reports, RetryPolicy, SandboxProvider,
};
use herald_domain::store::Store;
use herald_domain::webhooks::{DispatchSettings, Dispatcher};
use herald_domain::worker::{self, WorkerSettings};
use herald_whatsapp::{WhatsappProvider, WhatsappSettings};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::outbound::HttpEventTransport;

/// How often message bodies past their retention are deleted, and how many per pass.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
const PURGE_BATCH: u32 = 10_000;
const OPT_IN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Whatsapp(#[from] herald_whatsapp::ClientError),
    #[error(transparent)]
    Webhooks(#[from] crate::outbound::BuildError),
}

pub fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// A name for this node's leases, unique per process.
pub fn node_owner() -> Result<String, herald_crypto::CryptoError> {
    let bytes = herald_crypto::random::bytes::<6>()?;
    Ok(format!("node-{}", data_encoding::HEXLOWER.encode(&bytes)))
}

/// The channel messages leave through: WhatsApp when configured (paced), else the sandbox.
pub fn provider(
    config: &Config,
    clock: &Arc<dyn Clock>,
) -> Result<(Arc<dyn Provider>, Option<Pacer>), WorkerError> {
    let Some(whatsapp) = &config.whatsapp else {
        return Ok((Arc::new(SandboxProvider), None));
    };
    let settings = WhatsappSettings {
        base_url: whatsapp.base_url.clone(),
        api_version: whatsapp.api_version.clone(),
        phone_number_id: whatsapp.phone_number_id.clone(),
        access_token: SecretString::from(whatsapp.access_token.expose().to_owned()),
        timeout: whatsapp.request_timeout,
    };
    let provider = WhatsappProvider::new(&settings, Arc::clone(clock))?;
    let pacer = Pacer::new(
        whatsapp.messages_per_second,
        config.delivery.recipient_burst,
        delta(config.delivery.recipient_refill),
        clock.now(),
    );
    Ok((Arc::new(provider), Some(pacer)))
}

pub fn delivery_settings(config: &Config) -> DeliverySettings {
    let d = &config.delivery;
    DeliverySettings {
        worker: WorkerSettings {
            concurrency: d.concurrency,
            claim_batch: d.claim_batch,
            poll_interval: d.poll_interval,
        },
        lease: delta(d.lease),
        retry: RetryPolicy {
            base: delta(d.retry_base),
            max: delta(d.retry_max),
            retry_after_cap: delta(d.retry_after_cap),
            max_attempts: d.max_attempts,
            max_age: delta(d.max_age),
        },
        keep_content: delta(config.retention.message_bodies),
    }
}

/// What the workers need.
#[derive(Debug, Clone)]
pub struct WorkerParts {
    pub store: Arc<dyn Store>,
    pub keyring: Arc<Keyring>,
    pub clock: Arc<dyn Clock>,
    pub reports: Reports,
    pub consents: Consents,
    pub catalog: Arc<Catalog>,
    pub owner: String,
}

/// The delivery worker of this node's configuration.
pub fn delivery(config: &Config, parts: &WorkerParts) -> Result<Delivery, WorkerError> {
    let (provider, pacer) = provider(config, &parts.clock)?;
    Ok(Delivery::new(
        Arc::clone(&parts.store),
        Arc::clone(&parts.keyring),
        Arc::clone(&parts.clock),
        provider,
        pacer,
        Arc::clone(&parts.catalog),
        delivery_settings(config),
        parts.owner.clone(),
    ))
}

/// The event dispatcher of this node's configuration.
pub fn dispatcher(config: &Config, parts: &WorkerParts) -> Result<Dispatcher, WorkerError> {
    let transport = HttpEventTransport::new(
        config.webhooks.timeout,
        config.webhooks.allow_insecure_targets,
    )?;
    Ok(Dispatcher::new(
        Arc::clone(&parts.store),
        Arc::clone(&parts.keyring),
        Arc::clone(&parts.clock),
        Arc::new(transport),
        DispatchSettings {
            worker: WorkerSettings {
                concurrency: config.webhooks.concurrency,
                claim_batch: 32,
                poll_interval: config.delivery.poll_interval,
            },
            // Longer than one attempt can take, so a live attempt is never taken over.
            lease: delta(config.webhooks.timeout * 2 + Duration::from_secs(10)),
            retry: DispatchSettings::retry_policy(),
            disable_after_failures: config.webhooks.disable_after_failures,
        },
        parts.owner.clone(),
    ))
}

/// Starts every worker; they stop (finishing what they hold) when `stop` turns true.
pub fn spawn(
    config: &Config,
    parts: WorkerParts,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, WorkerError> {
    let delivery = delivery(config, &parts)?;
    tracing::info!(channel = delivery.provider_name(), owner = %parts.owner, "starting the delivery workers");
    let dispatcher = dispatcher(config, &parts)?;
    let reports = parts.reports.clone();
    let mut handles = vec![
        tokio::spawn(worker::run(
            delivery.clone(),
            delivery.settings().clone(),
            None,
            stop.clone(),
        )),
        tokio::spawn(worker::run(
            dispatcher.clone(),
            dispatcher.settings().clone(),
            None,
            stop.clone(),
        )),
        tokio::spawn(worker::run(
            reports.clone(),
            reports.settings().clone(),
            Some(reports.wake()),
            stop.clone(),
        )),
    ];
    handles.push(tokio::spawn(purge_loop(
        Arc::clone(&parts.store),
        Arc::clone(&parts.clock),
        parts.reports.clone(),
        stop.clone(),
    )));
    handles.push(tokio::spawn(opt_in_expiry_loop(
        parts.consents,
        stop.clone(),
    )));
    Ok(handles)
}

fn purge_audit(outbound: u64, inbound: u64, now: herald_domain::clock::Timestamp) -> AuditRecord {
    AuditRecord::new(
        &AuditEvent::new(
            &Initiator::system(),
            Action::MessagesPurged,
            Outcome::Success,
        )
        .target(Target::Service)
        .details(
            Details::new()
                .with("outbound", outbound)
                .with("inbound", inbound),
        ),
        now,
    )
}

/// Deletes message bodies whose retention ended (when retention keeps them at all).
pub async fn purge_once(
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
) -> Result<(u64, u64), herald_domain::store::StoreError> {
    let now = clock.now();
    let audit = move |outbound, inbound| purge_audit(outbound, inbound, now);
    store.purge_content(now, PURGE_BATCH, &audit).await
}

/// Records the expiry of double opt-ins that lapsed unconfirmed. Their state already reads
/// `expired` the moment they lapse; this writes the event, its audit entry and
/// `consent.changed`.
async fn opt_in_expiry_loop(consents: Consents, mut stop: watch::Receiver<bool>) {
    let mut timer = tokio::time::interval(OPT_IN_SWEEP_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = timer.tick() => {
                match consents.expire_lapsed().await {
                    Ok(0) => {}
                    Ok(expired) => tracing::info!(expired, "recorded the expiry of unconfirmed opt-ins"),
                    Err(e) => tracing::warn!(error = %e, "expiring lapsed opt-ins failed; will retry"),
                }
            }
        }
    }
}

/// Deletes message bodies and stored provider callbacks past their retention.
async fn purge_loop(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    reports: Reports,
    mut stop: watch::Receiver<bool>,
) {
    let mut timer = tokio::time::interval(PURGE_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = timer.tick() => {
                match purge_once(&store, &clock).await {
                    Ok((0, 0)) => {}
                    Ok((outbound, inbound)) => tracing::info!(outbound, inbound, "deleted message bodies past their retention"),
                    Err(e) => tracing::warn!(error = %e, "purging message bodies failed; will retry"),
                }
                match reports.purge_inbox().await {
                    Ok(0) => {}
                    Ok(callbacks) => tracing::info!(callbacks, "deleted stored provider callbacks past their retention"),
                    Err(e) => tracing::warn!(error = %e, "purging stored provider callbacks failed; will retry"),
                }
            }
        }
    }
}
