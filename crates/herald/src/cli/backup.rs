//! `herald backup …`, `herald erasures import` and `herald keys move|escrow`: disaster
//! recovery from the operator's side (docs/operations.md is the runbook).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use clap::Subcommand;
use herald_crypto::FileKeyProvider;
use herald_domain::audit::{Action, AuditEvent, Detail, Details, Initiator, Outcome, Target};
use herald_domain::clock::{Clock, SystemClock};
use herald_domain::rights::{ErasureLedger, FileErasureLedger};
use herald_domain::store::Store;
use serde_json::json;

use super::{JsonFlag, emit, emit_json};
use crate::backup::{
    self, Decryption, NoProgress, Progress, RestoreTarget, Trigger, create_backup, drill_backup,
    list_backups, restore_backup, verify_backup,
};
use crate::config::{Config, KeyProviderKind};
use crate::startup::{self, Herald, LedgerPolicy, OpenOptions};

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a backup now, while Herald serves: encrypted to backup.recipients, with a signed
    /// manifest beside it. Never contains the root key.
    Create {
        /// Where to write it (default: backup.dir).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List the backups this installation wrote (time, size, what they hold, verified,
    /// drilled, pruned).
    List(JsonFlag),
    /// Decrypt a backup into a scratch directory and check its manifest signature, payload
    /// hash, audit chain and checkpoints. Exits 1 when anything does not check out.
    Verify {
        /// The backup's payload (…jsonl.age) or manifest (…manifest.json).
        file: PathBuf,
        /// An age identity file (age-keygen output) matching one of the backup's recipients
        /// (default: backup.passphrase, for passphrase backups).
        #[arg(long, value_name = "KEYFILE")]
        identity: Option<PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Restore a backup into an empty data directory (SQLite) or the configured empty
    /// PostgreSQL database. `herald serve` on it then re-applies every later erasure.
    Restore {
        file: PathBuf,
        #[arg(long, value_name = "KEYFILE")]
        identity: Option<PathBuf>,
        /// The data directory to restore into (must be empty or absent).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Restore the newest (or the given) backup into a scratch directory, start it, check
    /// audit and erasures, and record the measured RTO and RPO. Exits 1 when it fails.
    Drill {
        file: Option<PathBuf>,
        #[arg(long, value_name = "KEYFILE")]
        identity: Option<PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum ErasuresCommand {
    /// Merge a copy of the erasure ledger (from shared storage, another node, a backup) into
    /// the ledger, then re-apply what it lists to the database.
    Import {
        file: PathBuf,
        #[command(flatten)]
        output: JsonFlag,
    },
}

/// A bar on a terminal, plain lines on stderr otherwise.
struct CliProgress {
    bar: Option<indicatif::ProgressBar>,
    done: AtomicU64,
    total: AtomicU64,
    reported: AtomicU64,
}

impl CliProgress {
    fn shared() -> Arc<dyn Progress> {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg:>18} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows ({per_sec})",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Arc::new(Self {
            bar,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        })
    }
}

#[allow(clippy::print_stderr)]
fn line(text: &str) {
    eprintln!("herald: {text}");
}

impl Progress for CliProgress {
    fn phase(&self, name: &str, total: Option<u64>) {
        self.done.store(0, Ordering::Relaxed);
        self.reported.store(0, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
        match &self.bar {
            Some(bar) => {
                bar.set_position(0);
                bar.set_length(total.unwrap_or(0));
                bar.set_message(name.to_owned());
            }
            None => line(&match total {
                Some(total) => format!("{name}: {total} rows"),
                None => format!("{name}…"),
            }),
        }
    }

    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.bar {
            Some(bar) => {
                bar.inc(n);
                if self.total.load(Ordering::Relaxed) == 0 {
                    bar.set_length(done);
                }
            }
            None => {
                // A line every 100,000 rows: enough to see it move in a log.
                let step = 100_000;
                let reported = self.reported.load(Ordering::Relaxed);
                if done / step > reported / step {
                    self.reported.store(done, Ordering::Relaxed);
                    line(&format!("{done} rows"));
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The progress display for a command: none with `--json` (a machine reads stdout), else a bar
/// on a terminal and plain lines on stderr otherwise.
pub(super) fn progress_for(json: bool) -> Arc<dyn Progress> {
    if json {
        Arc::new(NoProgress)
    } else {
        CliProgress::shared()
    }
}

fn progress(output: &JsonFlag) -> Arc<dyn Progress> {
    // With --json a machine reads stdout; the bar (stderr) would only be noise in its logs.
    if output.json {
        Arc::new(NoProgress)
    } else {
        CliProgress::shared()
    }
}

fn decryption(config: &Config, identity: Option<&Path>) -> anyhow::Result<Decryption> {
    match (identity, &config.backup.passphrase) {
        (Some(file), _) => Ok(Decryption::identity_file(file)?),
        (None, Some(passphrase)) => Ok(Decryption::Passphrase(age::secrecy::SecretString::from(
            passphrase.expose().to_owned(),
        ))),
        (None, None) => anyhow::bail!(
            "--identity KEYFILE is required (an age identity matching one of the backup's recipients)"
        ),
    }
}

/// Commands that must not open the installation first (it may not exist: a lost machine).
pub async fn standalone(config: Config, command: &BackupCommand) -> Option<anyhow::Result<()>> {
    match command {
        BackupCommand::Verify {
            file,
            identity,
            output,
        } => Some(verify(config, file, identity.as_deref(), output).await),
        BackupCommand::Restore {
            file,
            identity,
            data_dir,
            output,
        } => Some(restore(config, file, identity.as_deref(), data_dir, output).await),
        _ => None,
    }
}

async fn verify(
    config: Config,
    file: &Path,
    identity: Option<&Path>,
    output: &JsonFlag,
) -> anyhow::Result<()> {
    let decryption = decryption(&config, identity)?;
    let result = verify_backup(file, decryption, progress(output)).await;
    let recorded = record_verification(&config, &result).await;
    match result {
        Ok(report) => {
            if output.json {
                let mut value = serde_json::to_value(&report)?;
                value["recorded"] = json!(recorded);
                emit_json(&value)?;
            } else {
                emit(&format!(
                    "backup {} ({} from {}, schema {}): {}\n  rows: {} (subjects {}, messages {})\n  audit: {} entries verified, head {}{}\n  time range: {} … {}\n  erasures in its ledger: {}\n  root key versions needed: {:?}\n  manifest signed by audit key {}",
                    report.backup_id,
                    report.created_at,
                    report.backend,
                    report.schema_version,
                    if report.ok { "OK" } else { "DOES NOT VERIFY" },
                    report.rows,
                    report.subjects,
                    report.messages,
                    report.audit_entries_verified,
                    report.audit_head_seq,
                    report
                        .audit_problem
                        .as_ref()
                        .map_or(String::new(), |p| format!(" — {p}")),
                    report.first_recorded_at.as_deref().unwrap_or("-"),
                    report.last_recorded_at.as_deref().unwrap_or("-"),
                    report.erasures_in_ledger,
                    report.root_key_versions,
                    report.signing_key_id,
                ));
            }
            if !report.ok {
                anyhow::bail!("the backup does not verify");
            }
            Ok(())
        }
        Err(e) => {
            if output.json {
                emit_json(&json!({"ok": false, "reason": e.code(), "detail": e.to_string()}))?;
            }
            Err(anyhow::Error::new(e).context("the backup was refused"))
        }
    }
}

/// Records the verification in the installation's audit trail, when the installation is
/// there (on a lost machine there is nothing to record into: never create one).
async fn record_verification(
    config: &Config,
    result: &Result<backup::VerifyReport, backup::BackupError>,
) -> bool {
    let url = config.database_url();
    if let Some(path) = url.expose().strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if !Path::new(path).is_file() {
            return false;
        }
    }
    // An empty database (a new machine's) is not an installation: opening it would create one.
    let options = herald_store::StoreOptions {
        max_connections: 1,
        create_if_missing: false,
        ..herald_store::StoreOptions::default()
    };
    match herald_store::Database::connect(url.expose(), &options).await {
        Ok(database) => {
            let state = database.target_state().await;
            database.close().await;
            if !matches!(state, Ok(herald_store::snapshot::TargetState::InUse)) {
                return false;
            }
        }
        Err(_) => return false,
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let Ok(herald) = Herald::open(config.clone(), Arc::clone(&clock)).await else {
        return false;
    };
    let (backup_id, ok, reason) = match result {
        Ok(report) => (Some(report.backup_id.clone()), report.ok, None),
        Err(e) => (None, false, Some(e.code())),
    };
    let event = AuditEvent::new(
        &Initiator::admin(),
        Action::BackupVerified,
        if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        },
    )
    .target(backup_id.clone().map_or(Target::Service, Target::Backup))
    .details(Details::new().with("ok", ok).with_opt("reason", reason));
    let mut recorded = herald.audit().append(&event).await.is_ok();
    if ok && let Some(id) = &backup_id {
        recorded &= herald
            .database()
            .mark_backup(
                id,
                herald_store::recovery::BackupMark::Verified,
                clock.now(),
            )
            .await
            .is_ok();
    }
    let _ = herald.audit().seal().await;
    herald.store().close().await;
    recorded
}

async fn restore(
    mut config: Config,
    file: &Path,
    identity: Option<&Path>,
    data_dir: &Path,
    output: &JsonFlag,
) -> anyhow::Result<()> {
    let decryption = decryption(&config, identity)?;
    config.data_dir = data_dir.to_path_buf();
    let target = RestoreTarget { config };
    let report = restore_backup(
        file,
        decryption,
        &target,
        SystemClock.now(),
        progress(output),
    )
    .await
    .context("the restore was refused")?;
    if output.json {
        emit_json(&serde_json::to_value(&report)?)
    } else {
        emit(&format!(
            "restored backup {} (taken {} on {}) into {} ({} rows)\n  root key versions needed: {:?}\n  erasure ledger: {}{}\n  next: {}",
            report.backup_id,
            report.created_at,
            report.backend_from,
            report.backend_to,
            report.rows,
            report.root_key_versions,
            serde_json::to_string(&report.erasure_ledger)?,
            report
                .witness_set_aside
                .as_ref()
                .map_or(String::new(), |w| format!(
                    "\n  the witness found at the target was moved to {w}"
                )),
            report.next_step,
        ));
        Ok(())
    }
}

/// Backup commands on an opened installation.
pub async fn backup_command(herald: &Herald, command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create { to, output } => {
            let dir = to.unwrap_or_else(|| herald.config().backup_dir());
            let created = create_backup(herald, &dir, Trigger::Cli, progress(&output)).await?;
            let statement = &created.manifest.statement;
            if output.json {
                emit_json(&json!({
                    "id": created.id,
                    "payload": created.payload.display().to_string(),
                    "manifest": created.manifest_file.display().to_string(),
                    "bytes": statement.payload.bytes,
                    "duration_ms": created.duration_ms,
                    "audit_head_seq": statement.audit.head_seq,
                    "counts": statement.counts,
                    "root_key_versions": statement.root_key_versions,
                }))
            } else {
                emit(&format!(
                    "backup {} written in {} ms\n  payload:  {} ({} bytes)\n  manifest: {}\n  audit head: {}; erasures in the ledger: {}\n  it does not contain the root key (versions needed: {:?}): keep that apart",
                    created.id,
                    created.duration_ms,
                    created.payload.display(),
                    statement.payload.bytes,
                    created.manifest_file.display(),
                    statement.audit.head_seq,
                    statement.erasure_ledger.entries,
                    statement.root_key_versions,
                ));
                Ok(())
            }
        }
        BackupCommand::List(output) => {
            let backups = list_backups(herald, 1000).await?;
            if output.json {
                emit_json(&json!({"data": backups}))
            } else {
                for b in &backups {
                    emit(&format!(
                        "{}  {}  {} bytes  subjects {}  messages {}  verified {}  drilled {}{}",
                        b.id,
                        b.created_at,
                        b.size_bytes,
                        b.subjects,
                        b.messages,
                        b.verified_at.as_deref().unwrap_or("-"),
                        b.drilled_at.as_deref().unwrap_or("-"),
                        if b.present { "" } else { "  (files gone)" },
                    ));
                }
                Ok(())
            }
        }
        BackupCommand::Drill {
            file,
            identity,
            output,
        } => {
            let decryption = decryption(herald.config(), identity.as_deref())?;
            let report =
                drill_backup(herald, file.as_deref(), decryption, progress(&output)).await?;
            if output.json {
                emit_json(&serde_json::to_value(&report)?)?;
            } else {
                emit(&format!(
                    "drill of {}: {}\n  RTO (restore, start, checks): {} ms\n  RPO (the backup's age): {} s\n  rows restored: {}; audit entries verified: {} ({})\n  erasures re-applied: {}; erased subjects checked: {}; still decryptable: {}{}",
                    report.backup_id,
                    if report.ok { "OK" } else { "FAILED" },
                    report.rto_ms,
                    report.rpo_seconds,
                    report.rows_restored,
                    report.audit_entries_verified,
                    if report.audit_chain_ok {
                        "chain ok"
                    } else {
                        "chain broken"
                    },
                    report.erasures_reapplied,
                    report.erased_subjects_checked,
                    report.erased_subjects_decryptable,
                    report
                        .problem
                        .as_ref()
                        .map_or(String::new(), |p| format!("\n  problem: {p}")),
                ));
            }
            if !report.ok {
                anyhow::bail!("the restore drill failed");
            }
            Ok(())
        }
        BackupCommand::Verify { .. } | BackupCommand::Restore { .. } => Ok(()),
    }
}

/// `herald erasures import FILE`: opens the installation with the copy merged in first.
pub async fn erasures_command(config: Config, command: ErasuresCommand) -> anyhow::Result<()> {
    let ErasuresCommand::Import { file, output } = command;
    let ledger = FileErasureLedger::new(config.erasure_ledger_file());
    let before = ledger.read_all().map(|e| e.len()).unwrap_or(0);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let herald = Herald::open_with(
        config,
        clock,
        OpenOptions {
            ledger: LedgerPolicy::Import(file.clone()),
        },
    )
    .await?;
    let after = ledger.read_all()?.len();
    let reapplied = herald.erasures_reapplied();
    let _ = herald.audit().seal().await;
    herald.store().close().await;
    if output.json {
        emit_json(&json!({
            "ledger": ledger.describe(),
            "entries": after,
            "added": after.saturating_sub(before),
            "erasures_reapplied": reapplied,
        }))
    } else {
        emit(&format!(
            "merged {} into {}: {} entries ({} new); {} erasures re-applied to the database",
            file.display(),
            ledger.describe(),
            after,
            after.saturating_sub(before),
            reapplied
        ));
        Ok(())
    }
}

/// `herald keys move [--to PATH]`.
pub async fn keys_move(
    herald: &Herald,
    to: Option<PathBuf>,
    output: &JsonFlag,
) -> anyhow::Result<()> {
    let config = herald.config();
    if config.keys.provider != KeyProviderKind::File {
        anyhow::bail!("keys.provider is not \"file\": there is no key file to move");
    }
    let from = config.root_key_file();
    let to = to.unwrap_or_else(|| config.default_root_key_file());
    if from == to {
        anyhow::bail!("the root key is already at {}", to.display());
    }
    FileKeyProvider::new(&from)
        .move_to(&to)
        .with_context(|| format!("cannot move the root key to {}", to.display()))?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let event = AuditEvent::new(&Initiator::admin(), Action::KeysMoved, Outcome::Success)
        .target(Target::RootKey)
        .details(
            Details::new()
                .with("inside_data_dir_before", from.starts_with(&config.data_dir))
                .with("inside_data_dir_after", to.starts_with(&config.data_dir)),
        );
    herald.audit().append(&event).await?;
    let must_configure = config.keys.file.is_some() || to != config.default_root_key_file();
    if output.json {
        emit_json(&json!({
            "from": from.display().to_string(),
            "to": to.display().to_string(),
            "set_keys_file": must_configure,
        }))
    } else {
        emit(&format!(
            "moved the root key {} → {}{}",
            name(&from),
            to.display(),
            if must_configure {
                format!(
                    "\n  set keys.file = \"{}\" in the configuration before the next start",
                    to.display()
                )
            } else {
                "\n  the next start finds it there by default".to_owned()
            }
        ));
        Ok(())
    }
}

/// `herald keys escrow --recipient age1… --out FILE`.
pub async fn keys_escrow(
    herald: &Herald,
    recipient: &str,
    out: &Path,
    output: &JsonFlag,
) -> anyhow::Result<()> {
    let parsed = age::x25519::Recipient::from_str(recipient.trim())
        .map_err(|_| anyhow::anyhow!("--recipient must be an age X25519 recipient (age1…)"))?;
    let ring = startup::key_provider(herald.config())
        .load()?
        .context("no root key to escrow")?;
    let versions: Vec<u32> = ring.versions().collect();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&parsed as &dyn age::Recipient))
            .map_err(|e| anyhow::anyhow!("cannot encrypt: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
    let written = (|| -> std::io::Result<std::fs::File> {
        use std::io::Write;
        let mut writer = encryptor.wrap_output(std::io::BufWriter::new(file))?;
        writer.write_all(ring.encode().as_bytes())?;
        let buffered = writer.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(out);
        return Err(anyhow::Error::new(e).context("cannot write the escrow file"));
    }
    let fingerprint = data_encoding::HEXLOWER
        .encode(&herald_crypto::hash::sha256(&[recipient.trim().as_bytes()])[..8]);
    let event = AuditEvent::new(&Initiator::admin(), Action::KeysEscrowed, Outcome::Success)
        .target(Target::RootKey)
        .details(
            Details::new()
                .with("recipient_fingerprint", Detail::Id(fingerprint.clone()))
                .with("root_versions", versions.len() as u64),
        );
    herald.audit().append(&event).await?;
    if output.json {
        emit_json(&json!({
            "file": out.display().to_string(),
            "root_versions": versions,
            "recipient_fingerprint": fingerprint,
        }))
    } else {
        emit(&format!(
            "wrote the root key ring (versions {versions:?}) encrypted to {} into {}\n  move it offline; restore it with `age -d -i IDENTITY {} > root.key` (mode 0600)",
            recipient.trim(),
            out.display(),
            out.display()
        ));
        Ok(())
    }
}
