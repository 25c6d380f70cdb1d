//! `herald backup create` and the scheduled backup: snapshot → JSON Lines → age → file, then
//! the signed manifest beside it, the register row and the audit entry.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use herald_domain::audit::{Action, AuditEvent, Details, Initiator, Outcome, Target};
use herald_domain::rights::{LedgerFile, write_atomically};
use herald_store::recovery::BackupRecord;
use herald_store::snapshot::{Item, Value};
use tokio::sync::{mpsc, oneshot};

use super::format::{self, Header, Record};
use super::manifest::{
    AuditFacts, CheckpointFacts, EncryptionFacts, LedgerFacts, MANIFEST_TYPE, Manifest,
    PayloadFacts, SIGNATURE_DOMAIN, SignedManifest,
};
use super::{BackupError, Hashing, Progress, hex, io, manifest_name, payload_name, private_dir};
use crate::startup::Herald;

/// Names of the files a payload carries besides the tables.
pub(crate) const WITNESS_FILE: &str = "audit-witness.jsonl";
pub(crate) const LEDGER_FILE: &str = "erasure-ledger.jsonl";
pub(crate) const CONFIG_FILE: &str = "config.masked.toml";

/// Who asked for the backup (recorded in the audit entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Cli,
    Schedule,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Schedule => "schedule",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CreatedBackup {
    pub id: String,
    pub payload: PathBuf,
    pub manifest_file: PathBuf,
    pub manifest: SignedManifest,
    pub duration_ms: u64,
}

/// What the writer learnt while it wrote the payload.
#[derive(Debug, Default)]
struct PayloadStats {
    counts: BTreeMap<String, u64>,
    rows: u64,
    head: Option<(u64, Vec<u8>)>,
    first_recorded_at: Option<i64>,
    last_recorded_at: Option<i64>,
    last_checkpoint: Option<(u64, String, Vec<u8>)>,
    /// Every checkpoint in the snapshot, by (seq, kind).
    checkpoints: std::collections::HashSet<(u64, String)>,
    witness_checkpoints: u64,
    root_versions: BTreeSet<u32>,
    plaintext_sha256: [u8; 32],
    sha256: [u8; 32],
    bytes: u64,
}

/// Columns of interest in the table being written.
#[derive(Debug, Default)]
struct Watch {
    table: String,
    seq: Option<usize>,
    hash: Option<usize>,
    recorded_at: Option<usize>,
    kind: Option<usize>,
    head: Option<usize>,
    root_version: Option<usize>,
}

impl Watch {
    fn new(table: &str, columns: &[String]) -> Self {
        let at = |name: &str| columns.iter().position(|c| c == name);
        Self {
            table: table.to_owned(),
            seq: at("seq"),
            hash: at("hash"),
            recorded_at: at("recorded_at"),
            kind: at("kind"),
            head: at("head"),
            root_version: at("root_version"),
        }
    }

    fn observe(&self, row: &[Value], stats: &mut PayloadStats) {
        let int = |i: Option<usize>| match i.and_then(|i| row.get(i)) {
            Some(Value::Integer(v)) => Some(*v),
            _ => None,
        };
        let bytes = |i: Option<usize>| match i.and_then(|i| row.get(i)) {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        };
        match self.table.as_str() {
            // Rows come in key order: the last audit_log row is the head.
            "audit_log" => {
                if let (Some(seq), Some(hash)) = (int(self.seq), bytes(self.hash)) {
                    stats.head = Some((u64::try_from(seq).unwrap_or(0), hash));
                }
                if let Some(at) = int(self.recorded_at) {
                    stats.first_recorded_at.get_or_insert(at);
                    stats.last_recorded_at = Some(at);
                }
            }
            "audit_checkpoints" => {
                let kind = match self.kind.and_then(|i| row.get(i)) {
                    Some(Value::Text(k)) => k.clone(),
                    _ => String::new(),
                };
                if let (Some(seq), Some(head)) = (int(self.seq), bytes(self.head)) {
                    let seq = u64::try_from(seq).unwrap_or(0);
                    stats.checkpoints.insert((seq, kind.clone()));
                    stats.last_checkpoint = Some((seq, kind, head));
                }
            }
            "system_keys" | "subject_keys" => {
                if let Some(version) = int(self.root_version).and_then(|v| u32::try_from(v).ok()) {
                    stats.root_versions.insert(version);
                }
            }
            _ => {}
        }
    }
}

/// Only the witness lines naming a checkpoint the snapshot holds: one signed after the
/// snapshot was read (a later periodic one, or a horizon written by a prune meanwhile) is not
/// in the restored database and would read as tampering. Unreadable lines are kept:
/// verification must see them, not have them tidied away.
fn witness_within(
    text: &str,
    checkpoints: &std::collections::HashSet<(u64, String)>,
) -> (String, u64) {
    let mut kept = String::new();
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| Some((v["seq"].as_u64()?, v["kind"].as_str()?.to_owned())));
        if key.as_ref().is_none_or(|key| checkpoints.contains(key)) {
            kept.push_str(line);
            kept.push('\n');
            count += 1;
        }
    }
    (kept, count)
}

struct WriterInput {
    path: PathBuf,
    recipients: Vec<Box<dyn age::Recipient + Send>>,
    header: Header,
    items: mpsc::Receiver<Item>,
    files: oneshot::Receiver<Vec<(String, String)>>,
    progress: Arc<dyn Progress>,
}

fn write_payload(input: WriterInput) -> Result<PayloadStats, BackupError> {
    let WriterInput {
        path,
        recipients,
        header,
        mut items,
        files,
        progress,
    } = input;
    let failed = |e: std::io::Error| io("cannot write", &path, e);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path).map_err(failed)?;
    let encryptor = age::Encryptor::with_recipients(
        recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| BackupError::Io(format!("cannot encrypt: {e}")))?;
    let cipher = Hashing::new(BufWriter::with_capacity(1 << 16, file));
    let stream = encryptor.wrap_output(cipher).map_err(failed)?;
    let mut plain = Hashing::new(BufWriter::with_capacity(1 << 16, stream));
    let line = |record: &Record, plain: &mut Hashing<_>| -> Result<(), BackupError> {
        let mut text = format::encode(record);
        text.push('\n');
        plain.write_all(text.as_bytes()).map_err(failed)
    };
    let mut stats = PayloadStats::default();
    line(&Record::Header(header), &mut plain)?;
    let mut watch = Watch::default();
    let mut tables = 0u64;
    let mut since_report = 0u64;
    while let Some(item) = items.blocking_recv() {
        match item {
            Item::Table { name, columns } => {
                watch = Watch::new(&name, &columns);
                stats.counts.insert(name.clone(), 0);
                tables += 1;
                line(&Record::Table { name, columns }, &mut plain)?;
            }
            Item::Row(values) => {
                watch.observe(&values, &mut stats);
                if let Some(count) = stats.counts.get_mut(&watch.table) {
                    *count += 1;
                }
                stats.rows += 1;
                since_report += 1;
                if since_report == 1000 {
                    progress.advance(since_report);
                    since_report = 0;
                }
                line(&Record::Row(values), &mut plain)?;
            }
            Item::End => {}
        }
    }
    progress.advance(since_report);
    // The snapshot is read; the files come after it (so the ledger holds at least every
    // erasure the snapshot holds).
    let files = files
        .blocking_recv()
        .map_err(|_| BackupError::Io("the snapshot was not completed".into()))?;
    for (name, text) in files {
        let text = if name == WITNESS_FILE {
            let (kept, count) = witness_within(&text, &stats.checkpoints);
            stats.witness_checkpoints = count;
            kept
        } else {
            text
        };
        line(&Record::File { name, text }, &mut plain)?;
    }
    line(
        &Record::End {
            tables,
            rows: stats.rows,
        },
        &mut plain,
    )?;
    plain.flush().map_err(failed)?;
    let (buffered, plaintext_sha256, _) = plain.finish();
    let stream = buffered.into_inner().map_err(|e| failed(e.into_error()))?;
    let cipher = stream.finish().map_err(failed)?;
    let (buffered, sha256, bytes) = cipher.finish();
    let file = buffered.into_inner().map_err(|e| failed(e.into_error()))?;
    file.sync_all().map_err(failed)?;
    stats.plaintext_sha256 = plaintext_sha256;
    stats.sha256 = sha256;
    stats.bytes = bytes;
    Ok(stats)
}

fn recipients_of(herald: &Herald) -> Result<Vec<Box<dyn age::Recipient + Send>>, BackupError> {
    let config = herald.config();
    if let Some(passphrase) = &config.backup.passphrase {
        let secret = age::secrecy::SecretString::from(passphrase.expose().to_owned());
        return Ok(vec![Box::new(age::scrypt::Recipient::new(secret))]);
    }
    let recipients = config
        .backup_recipients()
        .map_err(|e| BackupError::Io(e.to_string()))?;
    if recipients.is_empty() {
        return Err(BackupError::NotConfigured);
    }
    Ok(recipients
        .into_iter()
        .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
        .collect())
}

fn read_optional(path: &Path) -> Result<String, BackupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io("cannot read", path, e)),
    }
}

/// Takes a backup into `dir` while Herald serves. On any failure nothing partial is left
/// behind, and the failure is audited (`backup.failed`).
pub async fn create_backup(
    herald: &Herald,
    dir: &Path,
    trigger: Trigger,
    progress: Arc<dyn Progress>,
) -> Result<CreatedBackup, BackupError> {
    let result = Box::pin(create(herald, dir, trigger, progress)).await;
    if let Err(e) = &result {
        herald.metrics().backup_failed();
        tracing::error!(error = %e, trigger = trigger.as_str(), "the backup failed");
        let event = AuditEvent::new(&Initiator::system(), Action::BackupFailed, Outcome::Failure)
            .target(Target::Service)
            .details(
                Details::new()
                    .with("trigger", trigger.as_str())
                    .with("reason", e.code()),
            );
        if let Err(audit) = herald.audit().append(&event).await {
            tracing::error!(error = %audit, "could not record the failed backup");
        }
    }
    result
}

async fn create(
    herald: &Herald,
    dir: &Path,
    trigger: Trigger,
    progress: Arc<dyn Progress>,
) -> Result<CreatedBackup, BackupError> {
    let recipients = recipients_of(herald)?;
    let lock = herald
        .database()
        .backup_lock()
        .await?
        .ok_or(BackupError::Busy)?;
    let started = Instant::now();
    // Sealed first, so the head the manifest names is chained and (mostly) checkpointed.
    herald.audit().seal().await?;
    let now = herald.clock().now();
    let suffix = herald_crypto::random::bytes::<3>()
        .map_err(|_| BackupError::Io("the random number generator failed".into()))?;
    let id = format!("bkp_{}_{}", now.format("%Y%m%dT%H%M%S%3fZ"), hex(&suffix));
    private_dir(dir)?;
    let payload = dir.join(payload_name(&id));
    let partial = dir.join(format!(".{}.partial", payload_name(&id)));
    let database = herald.database();
    let backend = match herald.store().backend() {
        herald_domain::store::Backend::Sqlite => "sqlite",
        herald_domain::store::Backend::Postgres => "postgres",
    };
    let header = Header {
        backup_id: id.clone(),
        created_at: super::rfc3339(now),
        backend: backend.to_owned(),
        schema_version: database.schema_version().await?,
        herald_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let schema_version = header.schema_version;
    let (items_tx, items_rx) = mpsc::channel(1024);
    let (files_tx, files_rx) = oneshot::channel();
    progress.phase("snapshot", None);
    let writer = tokio::task::spawn_blocking({
        let input = WriterInput {
            path: partial.clone(),
            recipients,
            header,
            items: items_rx,
            files: files_rx,
            progress: Arc::clone(&progress),
        };
        move || write_payload(input)
    });
    let exported = database.export_snapshot(items_tx).await;
    let sent = match exported {
        Ok(_) => {
            let config = herald.config();
            let witness = read_optional(&config.audit_witness_file())?;
            let ledger = read_optional(&config.erasure_ledger_file())?;
            let masked = config
                .to_masked_toml()
                .map_err(|e| BackupError::Io(e.to_string()))?;
            files_tx
                .send(vec![
                    (WITNESS_FILE.to_owned(), witness),
                    (LEDGER_FILE.to_owned(), ledger),
                    (CONFIG_FILE.to_owned(), masked),
                ])
                .is_ok()
        }
        Err(_) => false,
    };
    let written = writer
        .await
        .map_err(|e| BackupError::Io(format!("the backup writer stopped: {e}")));
    let stats = match (exported, written) {
        (Ok(_), Ok(Ok(stats))) if sent => stats,
        (exported, written) => {
            let _ = std::fs::remove_file(&partial);
            exported?;
            return Err(match written {
                Ok(Err(e)) | Err(e) => e,
                Ok(Ok(_)) => BackupError::Io("the backup writer stopped early".into()),
            });
        }
    };
    let ledger_text = read_optional(&herald.config().erasure_ledger_file())?;
    let ledger = LedgerFile::parse(&ledger_text).map_err(|e| BackupError::Io(e.to_string()))?;
    let manifest = Manifest {
        kind: MANIFEST_TYPE.to_owned(),
        format_version: format::FORMAT_VERSION,
        backup_id: id.clone(),
        created_at: super::rfc3339(now),
        herald_version: env!("CARGO_PKG_VERSION").to_owned(),
        backend: backend.to_owned(),
        schema_version,
        payload: PayloadFacts {
            file: payload_name(&id),
            bytes: stats.bytes,
            sha256: hex(&stats.sha256),
            plaintext_sha256: hex(&stats.plaintext_sha256),
        },
        audit: AuditFacts {
            head_seq: stats.head.as_ref().map_or(0, |h| h.0),
            head_hash: stats.head.as_ref().map(|h| hex(&h.1)),
            pending: stats.counts.get("audit_pending").copied().unwrap_or(0),
            first_recorded_at: stats
                .first_recorded_at
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(super::rfc3339),
            last_recorded_at: stats
                .last_recorded_at
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(super::rfc3339),
            last_checkpoint: stats.last_checkpoint.as_ref().map(|(seq, kind, head)| {
                CheckpointFacts {
                    seq: *seq,
                    kind: kind.clone(),
                    head: hex(head),
                }
            }),
            witness_checkpoints: stats.witness_checkpoints,
        },
        erasure_ledger: LedgerFacts {
            ledger_id: ledger.ledger_id.clone(),
            entries: ledger.entries.len() as u64,
            last_erased_at: ledger
                .entries
                .iter()
                .map(|e| e.erased_at)
                .max()
                .map(super::rfc3339),
            sha256: hex(&herald_crypto::hash::sha256(&[ledger_text.as_bytes()])),
        },
        root_key_versions: stats.root_versions.iter().copied().collect(),
        encryption: EncryptionFacts {
            format: "age".to_owned(),
            recipients: herald.config().backup.recipients.clone(),
            passphrase: herald.config().backup.passphrase.is_some(),
        },
        counts: stats.counts.clone(),
    };
    let statement =
        serde_json::to_value(&manifest).map_err(|e| BackupError::Manifest(e.to_string()))?;
    let signed =
        SignedManifest::from_signed(herald.audit().sign_statement(SIGNATURE_DOMAIN, &statement))
            .map_err(BackupError::Manifest)?;
    let manifest_text =
        serde_json::to_string_pretty(&signed).map_err(|e| BackupError::Manifest(e.to_string()))?;
    let manifest_file = dir.join(manifest_name(&id));
    let finish = (|| {
        std::fs::rename(&partial, &payload).map_err(|e| io("cannot move", &payload, e))?;
        write_atomically(&manifest_file, manifest_text.as_bytes())
            .map_err(|e| io("cannot write", &manifest_file, e))
    })();
    if let Err(e) = finish {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&payload);
        return Err(e);
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    database
        .record_backup(&BackupRecord {
            id: id.clone(),
            created_at: now,
            file_name: payload_name(&id),
            size_bytes: stats.bytes,
            duration_ms,
            manifest: manifest_text,
            verified_at: None,
            drilled_at: None,
            pruned_at: None,
        })
        .await?;
    let event = AuditEvent::new(
        &Initiator::system(),
        Action::BackupCreated,
        Outcome::Success,
    )
    .target(Target::Backup(id.clone()))
    .details(
        Details::new()
            .with("trigger", trigger.as_str())
            .with("bytes", stats.bytes)
            .with("duration_ms", duration_ms)
            .with("audit_head_seq", manifest.audit.head_seq)
            .with("erasures", manifest.erasure_ledger.entries),
    );
    herald.audit().append(&event).await?;
    herald
        .metrics()
        .backup_succeeded(now.timestamp(), duration_ms, stats.bytes);
    progress.finish();
    tracing::info!(backup_id = %id, bytes = stats.bytes, duration_ms, "backup written");
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "could not release the backup lock; it goes with the connection");
    }
    Ok(CreatedBackup {
        id,
        payload,
        manifest_file,
        manifest: signed,
        duration_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_witness_keeps_only_the_snapshots_checkpoints() {
        let text = "{\"seq\":10,\"kind\":\"periodic\"}\n{\"seq\":20,\"kind\":\"periodic\"}\nnot json\n\
                    {\"seq\":30,\"kind\":\"periodic\"}\n{\"seq\":10,\"kind\":\"horizon\"}\n";
        let none = std::collections::HashSet::new();
        assert_eq!(witness_within(text, &none), ("not json\n".to_owned(), 1));
        let held = [(10, "periodic".to_owned()), (20, "periodic".to_owned())]
            .into_iter()
            .collect();
        let (kept, count) = witness_within(text, &held);
        assert_eq!(
            kept,
            "{\"seq\":10,\"kind\":\"periodic\"}\n{\"seq\":20,\"kind\":\"periodic\"}\nnot json\n"
        );
        assert_eq!(count, 3);
    }
}
