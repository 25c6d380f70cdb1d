//! The `herald` command line: `serve`, `migrate`, and the operator's administration commands.
//! Commands work directly on the configured database (no running server needed); `--json`
//! prints exactly one JSON document on stdout and nothing else there.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::SecondsFormat;
use clap::{Args, Parser, Subcommand};
use herald_crypto::RootKeyRing;
use herald_domain::audit::Initiator;
use herald_domain::auth::{ApiKeyRecord, IntegrationRecord, Manager, Scope, Scopes};
use herald_domain::clock::{Clock, SystemClock, Timestamp};
use herald_domain::ids::ApiKeyId;
use herald_domain::keys;
use herald_domain::messages::SandboxReply;
use herald_domain::store::{PageRequest, Store};
use serde_json::json;

mod audit;
mod backup;
mod incidents;
mod oauth;
mod subjects;

use self::audit::{AuditCommand, audit_command};
use self::backup::{BackupCommand, ErasuresCommand};
use self::incidents::{IncidentsCommand, incidents_command};
use self::oauth::{OAuthClientsCommand, OAuthCommand};
use self::subjects::{RequestsCommand, SubjectsCommand, requests_list, subjects_command};
use crate::config::Config;
use crate::startup::{self, Herald};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a self-hosted, consent-first messaging gateway"
)]
pub struct Cli {
    /// Configuration file (default: ./herald.toml if present). HERALD_* variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API. The first start creates the data directory, database, root key and an
    /// admin API key (printed once, on stdout).
    Serve(ServeArgs),
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage integrations (connected systems).
    #[command(subcommand)]
    Integrations(IntegrationsCommand),
    /// Manage API keys and root keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage integrations' OAuth 2.0 clients.
    #[command(subcommand)]
    OauthClients(OAuthClientsCommand),
    /// Herald's OAuth 2.0 authorization server: its signing keys.
    #[command(subcommand)]
    Oauth(OAuthCommand),
    /// Verify, export and maintain the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Play the customer on the sandbox channel (when no WhatsApp number is configured).
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// The register of data-subject rights requests.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// A data subject's rights: export everything held, or erase.
    #[command(subcommand)]
    Subjects(SubjectsCommand),
    /// Encrypted backups: create, list, verify, restore, drill.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// The erasure ledger outside the database.
    #[command(subcommand)]
    Erasures(ErasuresCommand),
    /// The incident register and its notification clocks.
    #[command(subcommand)]
    Incidents(IncidentsCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Start even though the erasure ledger is missing or is not this database's (after a
    /// restore onto a new machine). Recorded in the audit trail: erasures made after the
    /// database's copy may be undone. Prefer `herald erasures import FILE`.
    #[arg(long)]
    accept_missing_ledger: bool,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Simulate an inbound message: it takes the same path as a WhatsApp reply (stored
    /// encrypted, opens the 24-hour window, reaches integrators' webhooks).
    Reply {
        /// The customer's number, E.164 (e.g. +4915112345678).
        #[arg(long)]
        phone: String,
        /// What the customer writes.
        #[arg(long)]
        text: String,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets masked.
    Check(JsonFlag),
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum IntegrationsCommand {
    /// Create an integration.
    Create {
        name: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List integrations.
    List(JsonFlag),
    /// Revoke an integration with all its API keys and OAuth clients (refused from the next
    /// request on); it takes no new credentials.
    Revoke {
        /// Integration name or id (int_…).
        integration: String,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key; the key is printed once.
    Create {
        /// Integration name or id (int_…).
        #[arg(long)]
        integration: String,
        /// A scope; repeat for several (e.g. --scope messages:send --scope subjects:write).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime in days (default: auth.default_key_lifetime_days).
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List API keys (never their secrets).
    List {
        /// Only this integration's keys (name or id).
        #[arg(long)]
        integration: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Revoke an API key; it is refused from the next request on.
    Revoke {
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Make a new root-key version active and re-wrap every data key under it.
    RotateRoot(JsonFlag),
    /// Print a new root key ring for the env key provider (HERALD_KEYS__ROOT_KEY).
    GenerateRoot,
    /// Move the root key file out of the data directory (default: herald-keys/root.key beside
    /// it), so a copy of the data directory no longer holds the key.
    Move {
        #[arg(long, value_name = "PATH")]
        to: Option<PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Write the root key ring encrypted to an offline age recipient (key custody: the copy
    /// that survives the machine). Audited.
    Escrow {
        /// The age X25519 recipient (age1…) of whoever keeps the escrow.
        #[arg(long)]
        recipient: String,
        /// The file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        output: JsonFlag,
    },
}

/// Writes to stdout. The only place the CLI prints results; logs go to stderr.
#[allow(clippy::print_stdout)]
fn emit(text: &str) {
    println!("{text}");
}

#[allow(clippy::print_stderr)]
fn emit_error(error: &anyhow::Error) {
    eprintln!("herald: error: {error:#}");
}

fn emit_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

fn time(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn time_opt(t: Option<Timestamp>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| json!(time(t)))
}

/// `--scope` values, each a known scope name.
fn parse_scopes(names: &[String]) -> anyhow::Result<Scopes> {
    let scopes = names
        .iter()
        .map(|s| {
            s.parse::<Scope>()
                .with_context(|| format!("unknown scope {s:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Scopes::new(scopes))
}

fn integration_json(i: &IntegrationRecord) -> serde_json::Value {
    json!({
        "id": i.id,
        "name": i.name,
        "created_at": time(i.created_at),
        "revoked_at": time_opt(i.revoked_at),
    })
}

fn key_json(k: &ApiKeyRecord) -> serde_json::Value {
    json!({
        "id": k.id,
        "integration_id": k.integration_id,
        "prefix": k.prefix,
        "scopes": k.scopes.iter().map(Scope::as_str).collect::<Vec<_>>(),
        "created_at": time(k.created_at),
        "expires_at": time_opt(k.expires_at),
        "revoked_at": time_opt(k.revoked_at),
        "last_used_at": time_opt(k.last_used_at),
    })
}

/// Entry point of the `herald` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            emit_error(&anyhow::Error::new(e).context("cannot start the async runtime"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            emit_error(&error);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => serve(config, &args).await,
        Command::Config(ConfigCommand::Check(output)) => config_check(&config, &output),
        Command::Keys(KeysCommand::GenerateRoot) => {
            let ring = RootKeyRing::generate()?;
            emit(ring.encode().trim_end());
            Ok(())
        }
        command => {
            // Administration commands log warnings only, so stdout stays clean for --json.
            let mut log = config.log.clone();
            log.level = "warn".to_owned();
            telemetry::init(&log);
            Box::pin(admin(config, command)).await
        }
    }
}

fn config_check(config: &Config, output: &JsonFlag) -> anyhow::Result<()> {
    let masked = config.to_masked_toml()?;
    let limits = effective_limits(config)?;
    if output.json {
        let value: toml::Value = toml::from_str(&masked)?;
        let mut value = serde_json::to_value(value)?;
        value["effective_limits"] = json!(
            limits
                .iter()
                .map(|(name, rate)| json!({"limit": name, "per_minute": rate.per_minute, "burst": rate.burst}))
                .collect::<Vec<_>>()
        );
        emit_json(&value)
    } else {
        emit(masked.trim_end());
        let state = if config.limits.enabled { "on" } else { "OFF" };
        emit(&format!(
            "\n# effective rate limits ({state}; per node, so N nodes allow up to N times these):"
        ));
        for (name, rate) in &limits {
            emit(&format!(
                "#   {name:<28} {:>7}/min, burst {}",
                rate.per_minute, rate.burst
            ));
        }
        Ok(())
    }
}

/// Every limit by the name answers and metrics use, as the configuration sets it (rates set
/// per integration with PATCH live in the database and are not shown here).
fn effective_limits(config: &Config) -> anyhow::Result<Vec<(String, herald_domain::limits::Rate)>> {
    let settings = config.limit_settings()?;
    let mut limits = vec![
        ("credential".to_owned(), settings.credential),
        ("source (requests)".to_owned(), settings.source_requests),
        ("source (failures)".to_owned(), settings.source_failures),
    ];
    for (class, rate) in &settings.routes {
        limits.push((class.limit_name().to_owned(), *rate));
    }
    for (name, rate) in &settings.configured_overrides {
        limits.push((format!("credential of {name}"), *rate));
    }
    Ok(limits)
}

async fn serve(config: Config, args: &ServeArgs) -> anyhow::Result<()> {
    telemetry::init(&config.log);
    let listen = config.listen;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let options = startup::OpenOptions {
        ledger: if args.accept_missing_ledger {
            startup::LedgerPolicy::AcceptMissing
        } else {
            startup::LedgerPolicy::Enforce
        },
    };
    let herald = Herald::open_with(config, clock, options).await?;
    if let Some(admin) = herald.bootstrap_admin().await? {
        // stdout, never the log: the key must not end up in log storage.
        emit(&format!(
            "Herald created the `admin` integration ({}).\n\
             Admin API key (shown once, store it in your secret manager): {}\n\
             Create further keys with it (POST /v1/integrations/{{id}}/keys) or with \
             `herald keys create`.",
            admin.record.integration_id,
            admin.token.expose()
        ));
        let _ = std::io::stdout().flush();
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    herald.serve(listener, startup::shutdown_signal()).await?;
    Ok(())
}

/// Stores a sandbox reply like a provider callback and processes it at once.
async fn sandbox_reply(
    herald: &Herald,
    phone: &str,
    text: &str,
    output: &JsonFlag,
) -> anyhow::Result<()> {
    let parsed = herald
        .subjects()
        .parse_phone(phone)
        .context("--phone must be a valid number in E.164 (+4915112345678)")?;
    if text.trim().is_empty() || text.chars().count() > 4096 {
        anyhow::bail!("--text must hold 1 to 4096 characters");
    }
    let random = herald_crypto::random::bytes::<12>()?;
    let reply = SandboxReply {
        from: parsed.e164().to_owned(),
        text: text.to_owned(),
        id: format!("sandbox.in.{}", data_encoding::HEXLOWER.encode(&random)),
        timestamp: herald.clock().now().timestamp(),
    };
    let body = serde_json::to_vec(&reply)?;
    let callback = herald.reports().receive("sandbox", &body).await?;
    herald_domain::worker::run_once(herald.reports(), 64).await?;
    // A running Herald's own worker may have claimed the callback first: give it a few seconds
    // to finish before saying it was not processed.
    let index = herald.keyring().phone_index(&parsed);
    let mut subject = None;
    for _ in 0..50 {
        subject = herald.store().subject_by_phone_index(&index).await?;
        if subject.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let subject = subject
        .context("the reply was stored but not processed; a running Herald will process it")?;
    if output.json {
        emit_json(&json!({"callback_id": callback.as_str(), "subject_id": subject.id.as_str()}))
    } else {
        emit(&format!(
            "inbound message from {} stored; the 24-hour window is open",
            subject.id
        ));
        Ok(())
    }
}

async fn admin(config: Config, command: Command) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if let Command::Migrate = command {
        let database = startup::open_database(&config).await?;
        database.close().await;
        emit("database migrated");
        return Ok(());
    }
    if let Command::Sandbox(SandboxCommand::Reply { .. }) = &command
        && config.whatsapp.is_some()
    {
        anyhow::bail!(
            "the sandbox channel is off: this Herald is configured for WhatsApp ([whatsapp])"
        );
    }
    let command = match command {
        Command::Backup(command) => match backup::standalone(config.clone(), &command).await {
            Some(result) => return result,
            None => Command::Backup(command),
        },
        Command::Erasures(command) => return backup::erasures_command(config, command).await,
        other => other,
    };
    let herald = Herald::open(config, Arc::clone(&clock)).await?;
    if let Command::Incidents(command) = command {
        let result = incidents_command(&herald, command).await;
        if let Err(e) = herald.audit().seal().await {
            tracing::warn!(error = %e, "could not seal the audit trail");
        }
        herald.store().close().await;
        return result;
    }
    if let Command::Backup(command) = command {
        let result = backup::backup_command(&herald, command).await;
        if let Err(e) = herald.audit().seal().await {
            tracing::warn!(error = %e, "could not seal the audit trail");
        }
        herald.store().close().await;
        return result;
    }
    if let Command::Sandbox(SandboxCommand::Reply {
        phone,
        text,
        output,
    }) = command
    {
        let result = sandbox_reply(&herald, &phone, &text, &output).await;
        herald.store().close().await;
        return result;
    }
    if let Command::Audit(command) = command {
        let result = audit_command(&herald, command).await;
        herald.store().close().await;
        return result;
    }
    if let Command::Subjects(command) = command {
        let result = subjects_command(&herald, command).await;
        if let Err(e) = herald.audit().seal().await {
            tracing::warn!(error = %e, "could not seal the audit trail");
        }
        herald.store().close().await;
        return result;
    }
    if let Command::Requests(RequestsCommand::List { status, output }) = command {
        let result = requests_list(&herald, status.as_deref(), &output).await;
        herald.store().close().await;
        return result;
    }
    let result = match command {
        Command::OauthClients(command) => Some(oauth::clients_command(&herald, command).await),
        Command::Oauth(command) => Some(oauth::oauth_command(&herald, command).await),
        Command::Integrations(IntegrationsCommand::Revoke {
            integration,
            output,
        }) => Some(oauth::revoke_integration(&herald, &integration, &output).await),
        other => {
            admin_command(&herald, other, clock.as_ref()).await?;
            None
        }
    };
    // Entries this command wrote are sealed now rather than at the next server start.
    if let Err(e) = herald.audit().seal().await {
        tracing::warn!(error = %e, "could not seal the audit trail");
    }
    herald.store().close().await;
    result.unwrap_or(Ok(()))
}

async fn admin_command(herald: &Herald, command: Command, clock: &dyn Clock) -> anyhow::Result<()> {
    let auth = herald.auth();
    match command {
        Command::Integrations(IntegrationsCommand::Create { name, output }) => {
            let record = auth.create_integration(&name, &Initiator::admin()).await?;
            if output.json {
                emit_json(&integration_json(&record))?;
            } else {
                emit(&format!(
                    "created integration {} ({})",
                    record.name, record.id
                ));
            }
        }
        Command::Integrations(IntegrationsCommand::List(output)) => {
            let records = all_pages(|page| async move { auth.integrations(&page).await }).await?;
            if output.json {
                emit_json(
                    &json!({"data": records.iter().map(integration_json).collect::<Vec<_>>()}),
                )?;
            } else {
                for r in &records {
                    emit(&format!(
                        "{}  {}  created {}",
                        r.id,
                        r.name,
                        time(r.created_at)
                    ));
                }
            }
        }
        Command::Keys(KeysCommand::Create {
            integration,
            scopes,
            expires_in_days,
            output,
        }) => {
            let integration = auth.resolve_integration(&integration).await?;
            let scopes = parse_scopes(&scopes)?;
            let issued = auth
                .issue_key(
                    &integration.id,
                    scopes,
                    expires_in_days,
                    Manager::Operator,
                    &Initiator::admin(),
                )
                .await?;
            if output.json {
                let mut value = key_json(&issued.record);
                value["key"] = json!(issued.token.expose());
                emit_json(&value)?;
            } else {
                emit(&format!(
                    "created API key {} for {} ({})\nscopes:  {}\nexpires: {}\nkey (shown once): {}",
                    issued.record.id,
                    integration.name,
                    integration.id,
                    issued.record.scopes.to_storage(),
                    issued
                        .record
                        .expires_at
                        .map_or_else(|| "never".to_owned(), time),
                    issued.token.expose()
                ));
            }
        }
        Command::Keys(KeysCommand::List {
            integration,
            output,
        }) => {
            let integration = match integration {
                Some(name) => Some(auth.resolve_integration(&name).await?.id),
                None => None,
            };
            let integration = integration.as_ref();
            let keys =
                all_pages(
                    |page| async move { auth.keys(integration, &page, Manager::Operator).await },
                )
                .await?;
            if output.json {
                emit_json(&json!({"data": keys.iter().map(key_json).collect::<Vec<_>>()}))?;
            } else {
                for k in &keys {
                    let state = match (k.revoked_at, k.expires_at) {
                        (Some(at), _) => format!("revoked {}", time(at)),
                        (None, Some(at)) if at <= clock.now() => format!("expired {}", time(at)),
                        (None, Some(at)) => format!("expires {}", time(at)),
                        (None, None) => "no expiry".to_owned(),
                    };
                    emit(&format!(
                        "{}  {}  {}  [{}]  {}  last used {}",
                        k.id,
                        k.integration_id,
                        k.prefix,
                        k.scopes.to_storage(),
                        state,
                        k.last_used_at.map_or_else(|| "never".to_owned(), time)
                    ));
                }
            }
        }
        Command::Keys(KeysCommand::Revoke { id, output }) => {
            let id = ApiKeyId::parse(&id).context("not an API key id (key_…)")?;
            let (record, _) = auth
                .revoke_key(&id, Manager::Operator, &Initiator::admin())
                .await?;
            if output.json {
                emit_json(&key_json(&record))?;
            } else {
                emit(&format!(
                    "revoked {} at {}",
                    record.id,
                    record.revoked_at.map_or_else(String::new, time)
                ));
            }
        }
        Command::Keys(KeysCommand::RotateRoot(output)) => {
            let provider = startup::key_provider(herald.config());
            let report = keys::rotate_root(
                herald.store().as_ref(),
                provider.as_ref(),
                clock.now(),
                &Initiator::admin(),
            )
            .await?;
            if output.json {
                emit_json(&json!({
                    "active_version": report.active_version,
                    "system_key_rewrapped": report.system_key_rewrapped,
                    "subject_keys_rewrapped": report.subject_keys_rewrapped,
                }))?;
            } else if !report.system_key_rewrapped && report.subject_keys_rewrapped == 0 {
                emit(&format!(
                    "every data key is already wrapped under root key version {}. With the env \
                     key provider, add a higher version to {} first.",
                    report.active_version,
                    startup::ROOT_KEY_VARIABLE
                ));
            } else {
                emit(&format!(
                    "root key version {} is active; re-wrapped the system key: {}, subject keys: {}.\n\
                     Running servers pick the new version up within a minute.",
                    report.active_version,
                    if report.system_key_rewrapped {
                        "yes"
                    } else {
                        "no"
                    },
                    report.subject_keys_rewrapped
                ));
            }
        }
        Command::Keys(KeysCommand::Move { to, output }) => {
            backup::keys_move(herald, to, &output).await?;
        }
        Command::Keys(KeysCommand::Escrow {
            recipient,
            out,
            output,
        }) => backup::keys_escrow(herald, &recipient, &out, &output).await?,
        Command::Serve(_)
        | Command::Backup(_)
        | Command::Incidents(_)
        | Command::Erasures(_)
        | Command::Migrate
        | Command::Config(_)
        | Command::Audit(_)
        | Command::Sandbox(_)
        | Command::Requests(_)
        | Command::Subjects(_)
        | Command::OauthClients(_)
        | Command::Oauth(_)
        | Command::Integrations(IntegrationsCommand::Revoke { .. })
        | Command::Keys(KeysCommand::GenerateRoot) => {}
    }
    Ok(())
}

/// Collects every page of a list (the CLI shows whole lists).
async fn all_pages<T, E, F, Fut>(mut fetch: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, E>>,
    E: std::error::Error + Send + Sync + 'static,
    T: HasCursor,
{
    let mut out = Vec::new();
    let mut page = PageRequest {
        after: None,
        limit: 500,
    };
    loop {
        let items = fetch(page.clone()).await?;
        let full = items.len() == 500;
        page.after = items.last().map(HasCursor::cursor);
        out.extend(items);
        if !full {
            return Ok(out);
        }
    }
}

trait HasCursor {
    fn cursor(&self) -> String;
}

impl HasCursor for herald_domain::rights::RightsRequest {
    fn cursor(&self) -> String {
        self.id.to_string()
    }
}

impl HasCursor for IntegrationRecord {
    fn cursor(&self) -> String {
        self.id.to_string()
    }
}

impl HasCursor for ApiKeyRecord {
    fn cursor(&self) -> String {
        self.id.to_string()
    }
}
