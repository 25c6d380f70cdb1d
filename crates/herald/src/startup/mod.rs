//! Start-up and the server loop: data directory, database and migrations, keys, the admin
//! bootstrap, the HTTP server (plain or TLS), background tasks and graceful shutdown.
//!
//! `main` and the tests start the same thing: [`Herald::open`] then [`Herald::serve`] on a
//! listener they bound (the tests bind port 0).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_crypto::{EnvKeyProvider, FileKeyProvider, RootKeyProvider};
use herald_domain::audit::{
    Action, Audit, AuditError, AuditEvent, AuditSettings, Detail, Details, FileWitness, Initiator,
    Outcome, Target,
};
use herald_domain::auth::oauth::{OAuth, OAuthError};
use herald_domain::auth::{Auth, AuthError, IssuedApiKey};
use herald_domain::clock::Clock;
use herald_domain::consent::Consents;
use herald_domain::keys::{KeyError, Keyring, KeyringState};
use herald_domain::limits::RateLimits;
use herald_domain::messages::{
    CallbackParser, Catalog, Messages, ReportSettings, Reports, SandboxCallbacks,
};
use herald_domain::rights::{FileErasureLedger, RightsRequests, RightsSettings, SubjectRights};
use herald_domain::store::Store;
use herald_domain::subjects::Subjects;
use herald_domain::webhooks::WebhookEndpoints;
use herald_domain::worker::WorkerSettings;
use herald_store::{ConnectError, Database, StoreOptions};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ConfigError, KeyProviderKind};
pub use crate::erasure_guard::LedgerPolicy;
use crate::http::{self, HttpParts, WhatsappSecrets};
use crate::metrics::Metrics;
use crate::tls::{self, TlsError, TlsListener};
use crate::workers::{self, WorkerError, WorkerParts, delta};

mod background;
pub mod vendors;

use background::prune_audit;

/// The audit settings from the configuration.
pub fn audit_settings(config: &Config) -> AuditSettings {
    let delta = |d: Duration| chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
    AuditSettings {
        checkpoint_every: config.audit.checkpoint_every,
        checkpoint_interval: delta(config.audit.checkpoint_interval),
        seal_batch: config.audit.seal_batch,
        retention: delta(config.audit.retention),
    }
}
pub const ROOT_KEY_VARIABLE: &str = "HERALD_KEYS__ROOT_KEY";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("provider register: {0}")]
    Vendors(String),
    #[error(transparent)]
    Database(#[from] ConnectError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("audit trail: {0}")]
    Audit(#[from] AuditError),
    #[error("audit trail: {0}")]
    AuditWrite(#[from] herald_domain::store::StoreError),
    #[error("cannot create the admin integration: {0}")]
    Bootstrap(#[source] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot start the workers: {0}")]
    Workers(#[from] WorkerError),
    #[error("the random number generator failed")]
    Random(#[from] herald_crypto::CryptoError),
    #[error("OAuth: {0}")]
    OAuth(#[from] OAuthError),
    #[error("cannot re-apply the erasure ledger: {0}")]
    Erasures(String),
    #[error("refusing to start: {0}")]
    ErasureLedger(String),
}

/// How [`Herald::open_with`] treats what start-up checks.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub ledger: LedgerPolicy,
}

/// An opened Herald: storage, keys and capabilities, ready to serve or to be administered.
#[derive(Debug, Clone)]
pub struct Herald {
    config: Arc<Config>,
    database: Database,
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    audit: Audit,
    subjects: Subjects,
    auth: Auth,
    messages: Messages,
    reports: Reports,
    consents: Consents,
    rights: RightsRequests,
    subject_rights: SubjectRights,
    catalog: Arc<Catalog>,
    endpoints: WebhookEndpoints,
    clock: Arc<dyn Clock>,
    /// Names this process's leases on queued work.
    owner: String,
    metrics: Metrics,
    limits: RateLimits,
    vendors: herald_domain::vendors::Vendors,
    /// Erasures the ledger re-applied at this start (a restored or older database).
    erasures_reapplied: usize,
}

pub(crate) fn ensure_data_dir(path: &Path) -> Result<(), StartupError> {
    let error = |source| StartupError::DataDir {
        path: path.display().to_string(),
        source,
    };
    if path.is_dir() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(error)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the data directory is accessible by other users; it should be mode 0700"
                );
            }
        }
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(error)?;
    }
    tracing::info!(path = %path.display(), "created the data directory");
    Ok(())
}

/// The root-key provider the configuration names.
pub fn key_provider(config: &Config) -> Arc<dyn RootKeyProvider> {
    match config.keys.provider {
        KeyProviderKind::File => Arc::new(FileKeyProvider::new(config.root_key_file())),
        KeyProviderKind::Env => Arc::new(EnvKeyProvider::new(
            config
                .keys
                .root_key
                .as_ref()
                .map(|secret| SecretString::from(secret.expose().to_owned())),
            ROOT_KEY_VARIABLE,
        )),
    }
}

/// Connects to the configured database and applies pending migrations.
pub async fn open_database(config: &Config) -> Result<Database, StartupError> {
    ensure_data_dir(&config.data_dir)?;
    let options = StoreOptions {
        max_connections: config.database.max_connections,
        acquire_timeout: config.database.acquire_timeout,
        busy_timeout: config.database.busy_timeout,
        create_if_missing: true,
    };
    let url = config.database_url();
    let database = Database::connect(url.expose(), &options).await?;
    restrict_sqlite_files(url.expose());
    database.migrate().await?;
    Ok(database)
}

/// SQLite creates its files with the process umask (often 0644); the database holds only
/// ciphertext and pseudonyms, but it is still nobody else's business. The WAL and shared-memory
/// files inherit the database file's mode when SQLite creates them later.
fn restrict_sqlite_files(url: &str) {
    #[cfg(unix)]
    if let Some(path) = url.strip_prefix("sqlite://") {
        use std::os::unix::fs::PermissionsExt;
        let path = path.split('?').next().unwrap_or(path);
        for file in [
            path.to_owned(),
            format!("{path}-wal"),
            format!("{path}-shm"),
        ] {
            if let Ok(metadata) = std::fs::metadata(&file)
                && metadata.permissions().mode() & 0o077 != 0
                && let Err(e) =
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!(file = %file, error = %e, "cannot restrict the database file to its owner");
            }
        }
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Herald {
    /// Opens everything a command needs: the data directory (created 0700 on first start),
    /// the database (migrated), the root key (created 0600 on first start, refused if it does
    /// not fit an existing database) and the capabilities.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Box::pin(Self::open_with(config, clock, OpenOptions::default())).await
    }

    /// [`Herald::open`] with options (`--accept-missing-ledger`, `erasures import`).
    pub async fn open_with(
        config: Config,
        clock: Arc<dyn Clock>,
        options: OpenOptions,
    ) -> Result<Self, StartupError> {
        let region = config.region()?;
        herald_domain::phone::warm_up();
        let database = open_database(&config).await?;
        let store: Arc<dyn Store> = Arc::new(database.clone());
        let provider = key_provider(&config);
        if config.keys.provider == KeyProviderKind::File
            && config.root_key_file().starts_with(&config.data_dir)
        {
            tracing::warn!(
                "the root key file is inside the data directory: a copy of that directory (or \
                 of a file-level backup of it) is enough to decrypt everything. Run `herald keys \
                 move`, or use the env key provider (docs/operations.md)"
            );
        }
        let (keyring, state) = Keyring::open(
            Arc::clone(&store),
            Arc::clone(&provider),
            config.keys.subject_key_cache,
            clock.now(),
        )
        .await?;
        let audit = Audit::open(
            Arc::clone(&store),
            &keyring,
            Arc::clone(&clock),
            Arc::new(FileWitness::new(config.audit_witness_file())),
            audit_settings(&config),
        )
        .await?;
        if state == KeyringState::Initialised {
            tracing::info!(root_key = %provider.describe(), "initialised the keys of a new database");
            let event = AuditEvent::new(
                &Initiator::system(),
                Action::KeysInitialised,
                Outcome::Success,
            )
            .target(Target::RootKey)
            .details(Details::new().with("root_version", keyring.active_root_version()));
            audit.append(&event).await?;
        }
        let keyring = Arc::new(keyring);
        let subjects = Subjects::new(
            Arc::clone(&store),
            Arc::clone(&keyring),
            Arc::clone(&clock),
            audit.clone(),
            region,
        )?;
        let lifetime = match config.auth.default_key_lifetime_days {
            0 => None,
            days => Some(days),
        };
        // Boxed: start-up's future is large enough already (clippy's large_futures).
        let oauth = Box::pin(OAuth::open(
            Arc::clone(&store),
            Arc::clone(&keyring),
            Arc::clone(&clock),
            audit.clone(),
            config.oauth_settings()?,
        ))
        .await?;
        let limits = RateLimits::new(config.limit_settings()?, Arc::clone(&clock))?;
        Box::pin(limits.refresh(store.as_ref())).await?;
        let auth = Auth::new(
            Arc::clone(&store),
            Arc::clone(&keyring),
            Arc::clone(&clock),
            lifetime,
            oauth,
        );
        let catalog = Arc::new(config.catalog()?);
        if config.whatsapp.is_none() && config.purposes.is_empty() && config.templates.is_empty() {
            tracing::info!(
                purpose = crate::config::SANDBOX_DEMO_PURPOSE,
                template = crate::config::SANDBOX_DEMO_TEMPLATE,
                "sandbox channel with its demonstration purpose and template"
            );
        }
        let consents = Consents::new(
            Arc::clone(&store),
            Arc::clone(&keyring),
            Arc::clone(&clock),
            subjects.clone(),
            Arc::clone(&catalog),
            config.consent_settings()?,
        );
        let vendors = vendors::open_register(&store, &clock, &config).await?;
        let messages = Messages::new(
            Arc::clone(&store),
            Arc::clone(&keyring),
            Arc::clone(&clock),
            audit.clone(),
            subjects.clone(),
            Arc::clone(&catalog),
            Arc::new(consents.clone()),
        )
        .through(vendors::send_route(&config, &vendors)?);
        let owner = workers::node_owner()?;
        if let Some(name) = &config.inbound.default_integration
            && auth.resolve_integration(name).await.is_err()
        {
            tracing::warn!(
                "inbound.default_integration names no integration yet: until it is created, customers' messages outside a conversation reach nobody"
            );
        }
        let mut parsers: Vec<Arc<dyn CallbackParser>> = vec![Arc::new(SandboxCallbacks)];
        if let Some(whatsapp) = &config.whatsapp {
            parsers.push(Arc::new(herald_whatsapp::WhatsappCallbacks::new(
                &whatsapp.phone_number_id,
            )));
        }
        let reports = Reports::new(
            Arc::clone(&store),
            Arc::clone(&keyring),
            Arc::clone(&clock),
            audit.clone(),
            subjects.clone(),
            parsers,
            consents.clone(),
            ReportSettings {
                worker: WorkerSettings {
                    concurrency: 4,
                    claim_batch: 16,
                    poll_interval: config.delivery.poll_interval,
                },
                lease: delta(config.delivery.lease),
                keep_content: delta(config.retention.message_bodies),
                keep_inbound: delta(config.retention.inbound_bodies),
                default_inbound: config.inbound.default_integration.clone(),
                max_attempts: config.callbacks.max_attempts.max(1),
                keep_callbacks: delta(config.retention.callbacks),
            },
            owner.clone(),
        );
        let rights =
            RightsRequests::new(Arc::clone(&store), Arc::clone(&keyring), Arc::clone(&clock));
        let ledger = FileErasureLedger::new(config.erasure_ledger_file());
        let ready = crate::erasure_guard::prepare(
            &database,
            store.as_ref(),
            &ledger,
            &options.ledger,
            &audit,
        )
        .await?;
        let subject_rights = SubjectRights::new(
            Arc::clone(&store),
            Arc::clone(&keyring),
            Arc::clone(&clock),
            audit.clone(),
            subjects.clone(),
            consents.clone(),
            RightsSettings {
                processing: config.processing_info(),
                ledger: Arc::new(ledger),
                callbacks: Some(reports.clone()),
            },
        );
        // Before anything is served: a restored database must not bring erased subjects back.
        let reapplied = subject_rights
            .reconcile_erasures()
            .await
            .map_err(|e| StartupError::Erasures(e.to_string()))?;
        if reapplied > 0 {
            tracing::warn!(
                reapplied,
                "erasures listed in the erasure ledger were re-applied to this database"
            );
        }
        if let Some(backup) = &ready.restored_from {
            // The first start of a restored database: the gap between the backup and now is
            // recorded, and the database is an ordinary one from here on.
            let state = database.recovery_state().await?;
            let event = AuditEvent::new(
                &Initiator::system(),
                Action::BackupRestored,
                Outcome::Success,
            )
            .target(Target::Backup(backup.clone()))
            .details(
                Details::new()
                    .with_opt("restored_at", state.restored_at)
                    .with("erasures_reapplied", reapplied as u64),
            );
            audit.append(&event).await?;
            database.clear_restored().await?;
            tracing::warn!(backup_id = %backup, reapplied, "first start of a database restored from a backup");
        }
        let endpoints = WebhookEndpoints::new(
            Arc::clone(&store),
            Arc::clone(&keyring),
            Arc::clone(&clock),
            config.webhooks.allow_insecure_targets,
        );
        let metrics = Metrics::with_callbacks(reports.stats());
        metrics.vendor_reviews_due(
            vendors
                .reviews_due_within(vendors::REVIEW_WARNING_DAYS)
                .len(),
        );
        Ok(Self {
            config: Arc::new(config),
            database,
            store,
            keyring,
            audit,
            subjects,
            auth,
            messages,
            reports,
            consents,
            rights,
            subject_rights,
            catalog,
            endpoints,
            clock,
            owner,
            metrics,
            limits,
            vendors,
            erasures_reapplied: reapplied,
        })
    }

    /// Erasures the erasure ledger re-applied when this was opened.
    pub fn erasures_reapplied(&self) -> usize {
        self.erasures_reapplied
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The provider register.
    pub fn vendors(&self) -> &herald_domain::vendors::Vendors {
        &self.vendors
    }

    /// The incident register.
    pub fn incidents(&self) -> herald_domain::incidents::Incidents {
        herald_domain::incidents::Incidents::new(
            Arc::clone(&self.store),
            Arc::clone(&self.keyring),
            Arc::clone(&self.clock),
            self.audit.clone(),
        )
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn messages(&self) -> &Messages {
        &self.messages
    }

    pub fn reports(&self) -> &Reports {
        &self.reports
    }

    pub fn consents(&self) -> &Consents {
        &self.consents
    }

    pub fn rights(&self) -> &RightsRequests {
        &self.rights
    }

    pub fn subject_rights(&self) -> &SubjectRights {
        &self.subject_rights
    }

    pub fn endpoints(&self) -> &WebhookEndpoints {
        &self.endpoints
    }

    /// A delivery worker of this node's configuration, for driving deliveries step by step
    /// (tests, tools); `herald serve` starts its own.
    pub fn delivery(&self) -> Result<herald_domain::messages::Delivery, workers::WorkerError> {
        workers::delivery(&self.config, &self.worker_parts())
    }

    /// An event dispatcher of this node's configuration, for driving event deliveries step
    /// by step (tests, tools); `herald serve` starts its own.
    pub fn dispatcher(
        &self,
    ) -> Result<herald_domain::webhooks::dispatch::Dispatcher, workers::WorkerError> {
        workers::dispatcher(&self.config, &self.worker_parts())
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// What the background workers are built from.
    pub fn worker_parts(&self) -> WorkerParts {
        WorkerParts {
            store: Arc::clone(&self.store),
            keyring: Arc::clone(&self.keyring),
            clock: Arc::clone(&self.clock),
            reports: self.reports.clone(),
            consents: self.consents.clone(),
            catalog: Arc::clone(&self.catalog),
            owner: self.owner.clone(),
        }
    }

    /// On the very first start: creates the `admin` integration and one admin key, and returns
    /// the key so the caller can show it once. `None` on every later start.
    pub async fn bootstrap_admin(&self) -> Result<Option<IssuedApiKey>, StartupError> {
        self.auth
            .bootstrap_admin()
            .await
            .map_err(StartupError::Bootstrap)
    }

    /// The HTTP application.
    pub fn router(&self) -> Router {
        http::app(HttpParts {
            subjects: self.subjects.clone(),
            auth: self.auth.clone(),
            audit: self.audit.clone(),
            messages: self.messages.clone(),
            consents: self.consents.clone(),
            rights: self.rights.clone(),
            subject_rights: self.subject_rights.clone(),
            reports: self.reports.clone(),
            endpoints: self.endpoints.clone(),
            whatsapp: self.config.whatsapp.as_ref().map(|w| {
                Arc::new(WhatsappSecrets {
                    app_secret: SecretString::from(w.app_secret.expose().to_owned()),
                    verify_token: SecretString::from(w.verify_token.expose().to_owned()),
                })
            }),
            store: Arc::clone(&self.store),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            backups: crate::backup::BackupRegister::new(
                self.database.clone(),
                self.config.backup_dir(),
            ),
            incidents: self.incidents(),
            incident_contacts: self.config.incident_contacts(),
            vendors: self.vendors.clone(),
            // Validated at load time; an invalid list cannot reach here.
            trusted_proxies: self.config.trusted_proxies().unwrap_or_default(),
            tls: self.config.tls_enabled(),
            api: self.config.roles.api,
            body_limit: self.config.http.body_limit,
            request_timeout: self.config.http.request_timeout,
        })
    }

    fn warn_about_exposure(&self, addr: SocketAddr) {
        if is_loopback(&addr) {
            return;
        }
        if !self.config.tls_enabled() {
            tracing::warn!(
                listen = %addr,
                "\n\
                 ************************************************************************\n\
                 *  TLS IS OFF and Herald listens on a non-loopback address.             *\n\
                 *  API keys and personal data will cross the network in clear text.     *\n\
                 *  Set tls.cert_file and tls.key_file, or listen on 127.0.0.1 behind a  *\n\
                 *  TLS-terminating proxy.                                               *\n\
                 ************************************************************************"
            );
        }
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests (up to the
    /// configured grace period), writes pending key-usage times, records the stop, seals the
    /// audit trail and closes the database.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let addr = listener.local_addr().map_err(StartupError::Serve)?;
        self.warn_about_exposure(addr);
        self.record_start().await?;
        // What a previous run left pending (a crash) is sealed, and retention applied, before
        // the first request; the background tasks repeat both on their intervals.
        if let Err(e) = self.audit.seal().await {
            tracing::error!(error = %e, "sealing the audit trail failed; the sealer will retry");
        }
        prune_audit(&self.audit).await;
        let router = self.router();
        // `signalled` flips when the shutdown signal arrives (starts the grace period);
        // `stop` flips when serving is over (stops the background tasks).
        let (signalled_tx, signalled_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let workers = if self.config.roles.worker {
            workers::spawn(&self.config, self.worker_parts(), &stop_rx)?
        } else {
            tracing::info!("roles.worker is off: this node delivers nothing");
            Vec::new()
        };
        let schedule = self.spawn_backup_schedule(stop_rx.clone());
        let incident_watch = self.spawn_incident_watch(stop_rx.clone());
        let background = self.spawn_background_tasks(stop_rx);
        let grace = self.config.http.shutdown_grace;
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            let _ = signalled_tx.send(true);
        };
        tracing::info!(
            listen = %addr,
            tls = self.config.tls_enabled(),
            database = %self.store.backend(),
            version = env!("CARGO_PKG_VERSION"),
            "Herald is listening"
        );
        let served = match (&self.config.tls.cert_file, &self.config.tls.key_file) {
            (Some(cert), Some(key)) => match tls::server_config(cert, key) {
                Ok(tls_config) => match TlsListener::new(listener, tls_config) {
                    Ok(listener) => {
                        serve_until(listener, router, signal, signalled_rx, grace).await
                    }
                    Err(e) => Err(StartupError::Serve(e)),
                },
                Err(e) => Err(e.into()),
            },
            _ => serve_until(listener, router, signal, signalled_rx, grace).await,
        };
        let _ = stop_tx.send(true);
        // Workers finish what they hold (a provider call, an event) and record it.
        let finish = async {
            for handle in workers {
                let _ = handle.await;
            }
        };
        if tokio::time::timeout(grace, finish).await.is_err() {
            tracing::warn!(
                "workers did not finish in time; their leases will expire and others take over"
            );
        }
        if let Some(schedule) = schedule {
            // A backup in progress finishes (its partial file is removed if it cannot).
            let _ = schedule.await;
        }
        if let Some(watch) = incident_watch {
            let _ = watch.await;
        }
        if tokio::time::timeout(Duration::from_secs(10), background)
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        if let Err(e) = self.auth.flush_last_used().await {
            tracing::warn!(error = %e, "could not write API key usage times at shutdown");
        }
        if let Err(e) = self.audit.flush_failures(true).await {
            tracing::error!(error = %e, "could not write the counts of aggregated failures at shutdown");
        }
        let stopped = AuditEvent::new(
            &Initiator::system(),
            Action::HeraldStopped,
            Outcome::Success,
        )
        .target(Target::Service);
        if let Err(e) = self.audit.append(&stopped).await {
            tracing::error!(error = %e, "could not record the shutdown in the audit trail");
        }
        // Leave nothing unsealed behind, and the head checkpointed (and witnessed): the last
        // entries cannot be cut off unnoticed.
        if let Err(e) = self.audit.seal_final().await {
            tracing::error!(error = %e, "could not seal the audit trail at shutdown");
        }
        self.store.close().await;
        tracing::info!("shutdown complete");
        served
    }

    /// Records the start and the configuration it runs with.
    async fn record_start(&self) -> Result<(), StartupError> {
        let system = Initiator::system();
        let started = AuditEvent::new(&system, Action::HeraldStarted, Outcome::Success)
            .target(Target::Service)
            .details(Details::new().with("version", env!("CARGO_PKG_VERSION")));
        self.audit.append(&started).await?;
        let masked = self.config.to_masked_toml()?;
        let digest = herald_crypto::hash::sha256(&[masked.as_bytes()]);
        let backend = match self.store.backend() {
            herald_domain::store::Backend::Sqlite => "sqlite",
            herald_domain::store::Backend::Postgres => "postgres",
        };
        let loaded = AuditEvent::new(&system, Action::ConfigLoaded, Outcome::Success)
            .target(Target::Service)
            .details(
                Details::new()
                    .with("config_sha256", Detail::digest(&digest))
                    .with("database", backend)
                    .with("tls", self.config.tls_enabled()),
            );
        self.audit.append(&loaded).await?;
        Ok(())
    }
}

async fn serve_until<L>(
    listener: L,
    router: Router,
    signal: impl Future<Output = ()> + Send + 'static,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), StartupError>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    crate::http::access::ClientAddr:
        for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    // The caller's address is kept (as a request extension) only so that failures can be
    // counted per source network; it is never logged or stored whole.
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<crate::http::access::ClientAddr>(),
    )
    .with_graceful_shutdown(signal);
    let grace_over = async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server.into_future() => served.map_err(StartupError::Serve),
        () = grace_over => {
            tracing::warn!(grace_seconds = grace.as_secs(), "requests still running after the grace period; closing them");
            Ok(())
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: `serve` announces "listening" before it polls the
/// future, and a SIGTERM in between must stop Herald gracefully, not by the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let (mut interrupt, mut terminate) = match (interrupt, terminate) {
                (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot listen for SIGINT and SIGTERM");
                    return std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("received SIGINT"),
                _ = terminate.recv() => tracing::info!("received SIGTERM"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("received Ctrl-C");
    }
}
