//! `herald backup verify` and `herald backup restore`: the manifest and the payload's hash
//! first (a changed file is never decrypted), then the payload decrypted and streamed into a
//! database — a scratch SQLite one to verify, the configured one to restore — in a single
//! transaction that commits only when the payload proved whole and signed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herald_domain::audit::{FileWitness, verify_trail};
use herald_domain::clock::Timestamp;
use herald_domain::rights::{LedgerFile, write_atomically};
use herald_domain::store::{Backend, Store};
use herald_store::snapshot::{Item, RestoreMark, TargetState, Value};
use herald_store::{Database, StoreOptions};
use serde::Serialize;
use tokio::sync::mpsc;

use super::create::{CONFIG_FILE, LEDGER_FILE, WITNESS_FILE};
use super::format::{self, Record};
use super::manifest::SignedManifest;
use super::{BackupError, Hashing, Progress, file_sha256, hex, io, private_dir};
use crate::config::Config;

/// How to decrypt: the identities of an age identity file, or the passphrase.
pub enum Decryption {
    Identities(Vec<Box<dyn age::Identity + Send + Sync>>),
    Passphrase(age::secrecy::SecretString),
}

impl std::fmt::Debug for Decryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decryption::Identities(ids) => write!(f, "Decryption::Identities({})", ids.len()),
            Decryption::Passphrase(_) => f.write_str("Decryption::Passphrase([REDACTED])"),
        }
    }
}

impl Decryption {
    /// Reads an age identity file (`age-keygen` output; `#` comments allowed).
    pub fn identity_file(path: &Path) -> Result<Self, BackupError> {
        let file = age::IdentityFile::from_file(path.display().to_string())
            .map_err(|e| io("cannot read the identity file", path, e))?;
        let identities = file
            .into_identities()
            .map_err(|e| BackupError::Decrypt(e.to_string()))?;
        if identities.is_empty() {
            return Err(BackupError::Decrypt(format!(
                "{} holds no age identity",
                path.display()
            )));
        }
        Ok(Decryption::Identities(identities))
    }

    fn open<R: BufRead>(&self, input: R) -> Result<age::stream::StreamReader<R>, BackupError> {
        let decryptor =
            age::Decryptor::new_buffered(input).map_err(|e| BackupError::Decrypt(e.to_string()))?;
        let result = match self {
            Decryption::Identities(identities) => {
                decryptor.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            }
            Decryption::Passphrase(passphrase) => {
                let identity = age::scrypt::Identity::new(passphrase.clone());
                decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity))
            }
        };
        result.map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => BackupError::Decrypt(
                "no identity given matches the backup's recipients (wrong identity?)".into(),
            ),
            other => BackupError::Decrypt(other.to_string()),
        })
    }
}

/// A backup's two files, from either one's path.
pub fn locate(file: &Path) -> Result<(PathBuf, PathBuf), BackupError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = file.parent().unwrap_or(Path::new("."));
    if let Some(id) = name.strip_suffix(".manifest.json") {
        Ok((dir.join(super::payload_name(id)), file.to_path_buf()))
    } else if let Some(id) = name.strip_suffix(".jsonl.age") {
        Ok((file.to_path_buf(), dir.join(super::manifest_name(id))))
    } else {
        Err(BackupError::Manifest(format!(
            "{} is neither a backup payload (*.jsonl.age) nor its manifest (*.manifest.json)",
            file.display()
        )))
    }
}

/// Reads the manifest, refuses a schema newer than this Herald's, and checks the payload
/// against its SHA-256 (before any decryption).
fn open_checked(file: &Path) -> Result<(PathBuf, SignedManifest), BackupError> {
    let (payload, manifest_file) = locate(file)?;
    let text = std::fs::read_to_string(&manifest_file)
        .map_err(|e| io("cannot read the manifest", &manifest_file, e))?;
    let manifest = SignedManifest::parse(&text).map_err(BackupError::Manifest)?;
    let needed = manifest.statement.schema_version;
    if needed > known_schema() {
        return Err(BackupError::SchemaTooNew {
            needed,
            known: known_schema(),
        });
    }
    let (digest, bytes) = file_sha256(&payload)?;
    if hex(&digest) != manifest.statement.payload.sha256
        || bytes != manifest.statement.payload.bytes
    {
        return Err(BackupError::PayloadHash);
    }
    Ok((payload, manifest))
}

/// The table being decoded: name, width, and (audit_keys) the key id and public key columns.
type CurrentTable = (String, usize, Option<(usize, usize)>);

/// What decoding found besides the rows it forwarded.
#[derive(Debug, Default)]
struct Decoded {
    files: BTreeMap<String, String>,
    counts: BTreeMap<String, u64>,
}

/// The longest line a payload may hold (a row, or the witness or ledger file as one line).
const MAX_LINE: u64 = 256 * 1024 * 1024;

fn payload_error(what: impl Into<String>) -> BackupError {
    BackupError::Payload(what.into())
}

/// Decrypts and parses the payload, forwarding tables and rows to `out`; sends
/// [`Item::End`] only after everything checked out (header, counts, end mark, plaintext
/// hash, the manifest's signature by the snapshot's audit key).
fn decode_payload(
    payload: &Path,
    decryption: &Decryption,
    manifest: &SignedManifest,
    out: &mpsc::Sender<Item>,
    progress: &dyn Progress,
) -> Result<Decoded, BackupError> {
    let statement = &manifest.statement;
    let file = std::fs::File::open(payload).map_err(|e| io("cannot open", payload, e))?;
    let stream = decryption.open(BufReader::with_capacity(1 << 16, file))?;
    let mut reader = BufReader::with_capacity(1 << 16, Hashing::new(stream));
    let mut decoded = Decoded::default();
    let mut line = String::new();
    let mut current: Option<CurrentTable> = None;
    let mut keys: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut rows = 0u64;
    let mut tables = 0u64;
    let mut header_seen = false;
    let mut end_seen = false;
    let mut since_report = 0u64;
    loop {
        line.clear();
        // Bounded: a line longer than any Herald writes is refused before it fills memory.
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_line(&mut line)
            .map_err(|e| BackupError::Decrypt(format!("the payload cannot be decrypted: {e}")))?;
        if n == 0 {
            break;
        }
        if n as u64 > MAX_LINE {
            return Err(payload_error("a line is longer than any backup holds"));
        }
        if end_seen {
            return Err(payload_error("lines follow the end mark"));
        }
        let record = format::decode(line.trim_end_matches('\n')).map_err(payload_error)?;
        if !header_seen && !matches!(record, Record::Header(_)) {
            return Err(payload_error("the payload does not start with its header"));
        }
        match record {
            Record::Header(header) => {
                if header_seen {
                    return Err(payload_error("a second header"));
                }
                header_seen = true;
                if header.backup_id != statement.backup_id
                    || header.schema_version != statement.schema_version
                    || header.backend != statement.backend
                {
                    return Err(payload_error(
                        "the payload's header does not match the manifest (another backup's payload?)",
                    ));
                }
            }
            Record::Table { name, columns } => {
                // The audit keys' rows are kept: they verify the manifest's signature.
                let key_columns = (name == "audit_keys").then(|| {
                    (
                        columns.iter().position(|c| c == "key_id"),
                        columns.iter().position(|c| c == "public_key"),
                    )
                });
                let key_columns = match key_columns {
                    Some((Some(id), Some(key))) => Some((id, key)),
                    _ => None,
                };
                decoded.counts.insert(name.clone(), 0);
                tables += 1;
                current = Some((name.clone(), columns.len(), key_columns));
                out.blocking_send(Item::Table { name, columns })
                    .map_err(|_| payload_error("the loader stopped"))?;
            }
            Record::Row(values) => {
                let Some((name, width, key_columns)) = &current else {
                    return Err(payload_error("a row before any table"));
                };
                if values.len() != *width {
                    return Err(payload_error(format!(
                        "a row of {name} has the wrong width"
                    )));
                }
                if let Some((id, key)) = key_columns
                    && let (Some(Value::Text(id)), Some(Value::Bytes(key))) =
                        (values.get(*id), values.get(*key))
                {
                    keys.insert(id.clone(), key.clone());
                }
                if let Some(count) = decoded.counts.get_mut(name) {
                    *count += 1;
                }
                rows += 1;
                since_report += 1;
                if since_report == 1000 {
                    progress.advance(since_report);
                    since_report = 0;
                }
                out.blocking_send(Item::Row(values))
                    .map_err(|_| payload_error("the loader stopped"))?;
            }
            Record::File { name, text } => {
                decoded.files.insert(name, text);
            }
            Record::End { tables: t, rows: r } => {
                if t != tables || r != rows {
                    return Err(payload_error(
                        "the end mark's counts do not match the payload",
                    ));
                }
                end_seen = true;
            }
        }
    }
    progress.advance(since_report);
    if !end_seen {
        return Err(payload_error("the payload is cut short (no end mark)"));
    }
    let (_, plaintext, _) = reader.into_inner().finish();
    if hex(&plaintext) != statement.payload.plaintext_sha256 {
        return Err(BackupError::PayloadHash);
    }
    if decoded.counts != statement.counts {
        return Err(payload_error("the row counts do not match the manifest"));
    }
    let key = keys
        .get(&manifest.key_id)
        .ok_or_else(|| BackupError::Signature(manifest.key_id.clone()))?;
    if !manifest.verify(key) {
        return Err(BackupError::Signature(manifest.key_id.clone()));
    }
    out.blocking_send(Item::End)
        .map_err(|_| payload_error("the loader stopped"))?;
    Ok(decoded)
}

/// Decrypts `payload` into `database` (at the manifest's schema version already).
async fn load(
    database: &Database,
    payload: PathBuf,
    decryption: Arc<Decryption>,
    manifest: &SignedManifest,
    restored: Option<RestoreMark>,
    progress: Arc<dyn Progress>,
) -> Result<Decoded, BackupError> {
    let total: u64 = manifest.statement.counts.values().sum();
    progress.phase("decrypt and load", Some(total));
    let (tx, rx) = mpsc::channel(1024);
    let decoder = tokio::task::spawn_blocking({
        let manifest = manifest.clone();
        let progress = Arc::clone(&progress);
        move || decode_payload(&payload, &decryption, &manifest, &tx, progress.as_ref())
    });
    let imported = database.import_snapshot(rx, restored.as_ref()).await;
    let decoded = decoder
        .await
        .map_err(|e| BackupError::Io(format!("the decoder stopped: {e}")))?;
    // The decoder's reason comes first: the loader only saw the stream stop.
    let result = decoded.and_then(|decoded| imported.map(|_| decoded).map_err(Into::into));
    if result.is_err() {
        database.close().await;
    }
    result
}

fn known_schema() -> i64 {
    herald_store::migrations::embedded(Backend::Sqlite)
        .last()
        .map_or(0, |(v, _, _)| *v)
}

/// What `herald backup verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backup_id: String,
    pub ok: bool,
    pub created_at: String,
    pub backend: String,
    pub schema_version: i64,
    pub signing_key_id: String,
    pub rows: u64,
    pub counts: BTreeMap<String, u64>,
    pub subjects: u64,
    pub messages: u64,
    pub audit_entries_verified: u64,
    pub audit_head_seq: u64,
    pub audit_chain_ok: bool,
    pub audit_problem: Option<String>,
    pub first_recorded_at: Option<String>,
    pub last_recorded_at: Option<String>,
    pub erasures_in_ledger: u64,
    pub root_key_versions: Vec<u32>,
}

/// Decrypts the backup into a scratch SQLite database and checks everything: manifest,
/// payload hash, signature, and the audit chain against the backup's witness.
pub async fn verify_backup(
    file: &Path,
    decryption: Decryption,
    progress: Arc<dyn Progress>,
) -> Result<VerifyReport, BackupError> {
    let (payload, manifest) = open_checked(file)?;
    let statement = manifest.statement.clone();
    let scratch = tempfile::Builder::new()
        .prefix("herald-verify-")
        .tempdir()
        .map_err(|e| BackupError::Io(format!("cannot create a scratch directory: {e}")))?;
    let url = format!("sqlite://{}", scratch.path().join("herald.db").display());
    let database = Database::connect(&url, &StoreOptions::default()).await?;
    database.migrate_through(statement.schema_version).await?;
    let decoded = load(
        &database,
        payload,
        Arc::new(decryption),
        &manifest,
        None,
        Arc::clone(&progress),
    )
    .await;
    let decoded = decoded?;
    progress.phase("verify audit chain", None);
    let witness_path = scratch.path().join(WITNESS_FILE);
    std::fs::write(
        &witness_path,
        decoded.files.get(WITNESS_FILE).map_or("", String::as_str),
    )
    .map_err(|e| io("cannot write", &witness_path, e))?;
    let store: Arc<dyn Store> = Arc::new(database.clone());
    let report = verify_trail(&store, &FileWitness::new(&witness_path)).await;
    database.close().await;
    let report = report?;
    let head_matches = report.head.seq == statement.audit.head_seq
        && statement
            .audit
            .head_hash
            .as_ref()
            .is_none_or(|h| *h == hex(&report.head.hash));
    let audit_problem = match (&report.first_bad, head_matches) {
        (Some(finding), _) => Some(format!(
            "{} at entry {}: {}",
            finding.problem.as_str(),
            finding.seq,
            finding.explanation
        )),
        (None, false) => Some("the chain's head is not the one the manifest names".to_owned()),
        (None, true) => None,
    };
    let ledger = decoded
        .files
        .get(LEDGER_FILE)
        .map(|t| LedgerFile::parse(t))
        .transpose()
        .map_err(|e| payload_error(format!("the erasure ledger copy: {e}")))?
        .unwrap_or_default();
    let audit_chain_ok = report.ok && head_matches;
    progress.finish();
    Ok(VerifyReport {
        backup_id: statement.backup_id.clone(),
        ok: audit_chain_ok,
        created_at: statement.created_at.clone(),
        backend: statement.backend.clone(),
        schema_version: statement.schema_version,
        signing_key_id: manifest.key_id.clone(),
        rows: statement.counts.values().sum(),
        subjects: statement.counts.get("subjects").copied().unwrap_or(0),
        messages: statement.counts.get("messages").copied().unwrap_or(0),
        counts: statement.counts.clone(),
        audit_entries_verified: report.entries,
        audit_head_seq: report.head.seq,
        audit_chain_ok,
        audit_problem,
        first_recorded_at: statement.audit.first_recorded_at.clone(),
        last_recorded_at: statement.audit.last_recorded_at.clone(),
        erasures_in_ledger: ledger.entries.len() as u64,
        root_key_versions: statement.root_key_versions.clone(),
    })
}

/// Where a restore writes: the configuration's data directory, database, witness and ledger.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    pub config: Config,
}

/// What happened to the erasure ledger in a restore.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LedgerOutcome {
    /// A ledger already stood where the configuration puts it (shared storage, or copied in
    /// by the operator): it is newer than the backup's and was kept; the first start
    /// re-applies what it lists.
    KeptExisting { path: String, entries: u64 },
    /// No ledger at the target: the backup's copy was written beside it, not in its place.
    /// The first start refuses until the newest ledger is there, or is imported, or the
    /// operator accepts the backup's (`--accept-missing-ledger`).
    Missing { path: String, backup_copy: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub created_at: String,
    pub backend_from: String,
    pub backend_to: String,
    pub rows: u64,
    pub root_key_versions: Vec<u32>,
    pub erasure_ledger: LedgerOutcome,
    /// A witness that stood at the target was moved here (it names entries the backup lacks).
    pub witness_set_aside: Option<String>,
    pub next_step: String,
}

fn is_empty_dir(path: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io("cannot read", path, e)),
    }
}

/// Restores a backup into the target's empty database (SQLite: an empty or new data
/// directory; PostgreSQL: a database without Herald's tables), of either backend. A restore
/// that fails leaves the target as it found it: the database load is one transaction, and a
/// SQLite data directory the restore began empty is emptied again.
pub async fn restore_backup(
    file: &Path,
    decryption: Decryption,
    target: &RestoreTarget,
    now: Timestamp,
    progress: Arc<dyn Progress>,
) -> Result<RestoreReport, BackupError> {
    let config = &target.config;
    let sqlite = herald_store::backend_of(config.database_url().expose())? == Backend::Sqlite;
    let existed = config.data_dir.exists();
    let began_empty = sqlite && is_empty_dir(&config.data_dir)?;
    let result = Box::pin(restore_into(file, decryption, target, now, progress)).await;
    if result.is_err() && began_empty {
        let cleared = if existed {
            std::fs::read_dir(&config.data_dir).and_then(|entries| {
                entries
                    .filter_map(Result::ok)
                    .try_for_each(|entry| std::fs::remove_file(entry.path()))
            })
        } else {
            std::fs::remove_dir_all(&config.data_dir)
        };
        if let Err(e) = cleared {
            tracing::warn!(error = %e, dir = %config.data_dir.display(), "could not clear the data directory after the failed restore");
        }
    }
    result
}

async fn restore_into(
    file: &Path,
    decryption: Decryption,
    target: &RestoreTarget,
    now: Timestamp,
    progress: Arc<dyn Progress>,
) -> Result<RestoreReport, BackupError> {
    let (payload, manifest) = open_checked(file)?;
    let statement = manifest.statement.clone();
    let config = &target.config;
    let url = config.database_url();
    let backend_to = herald_store::backend_of(url.expose())?;
    if backend_to == Backend::Sqlite && !is_empty_dir(&config.data_dir)? {
        return Err(BackupError::TargetNotEmpty(format!(
            "the data directory {} is not empty",
            config.data_dir.display()
        )));
    }
    private_dir(&config.data_dir)?;
    let options = StoreOptions {
        max_connections: 2,
        ..StoreOptions::default()
    };
    let database = Database::connect(url.expose(), &options).await?;
    match database.target_state().await? {
        TargetState::Pristine => {}
        TargetState::EmptySchema(version) if version == statement.schema_version => {}
        TargetState::EmptySchema(version) => {
            database.close().await;
            return Err(BackupError::TargetNotEmpty(format!(
                "the database has Herald's schema at version {version}, the backup needs {}",
                statement.schema_version
            )));
        }
        TargetState::InUse => {
            database.close().await;
            return Err(BackupError::TargetNotEmpty(format!(
                "the database {} holds data",
                url.masked()
            )));
        }
    }
    database.migrate_through(statement.schema_version).await?;
    let decoded = load(
        &database,
        payload,
        Arc::new(decryption),
        &manifest,
        Some(RestoreMark {
            backup_id: statement.backup_id.clone(),
            at: now,
            ledger_entries: statement.erasure_ledger.entries,
        }),
        Arc::clone(&progress),
    )
    .await;
    let decoded = decoded?;
    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    // The witness: the backup's, matching the restored checkpoints.
    let witness = config.audit_witness_file();
    let witness_set_aside = if std::fs::metadata(&witness).is_ok_and(|m| m.len() > 0) {
        let aside = witness.with_extension(format!("jsonl.before-restore-{stamp}"));
        std::fs::rename(&witness, &aside).map_err(|e| io("cannot move", &witness, e))?;
        Some(aside.display().to_string())
    } else {
        None
    };
    let witness_text = decoded.files.get(WITNESS_FILE).cloned().unwrap_or_default();
    write_atomically(&witness, witness_text.as_bytes())
        .map_err(|e| io("cannot write", &witness, e))?;
    // The ledger: never replaced by the backup's older copy.
    let ledger_path = config.erasure_ledger_file();
    let ledger_copy = decoded.files.get(LEDGER_FILE).cloned().unwrap_or_default();
    let backup_ledger = LedgerFile::parse(&ledger_copy)
        .map_err(|e| payload_error(format!("the erasure ledger copy: {e}")))?;
    let erasure_ledger =
        match LedgerFile::parse(&std::fs::read_to_string(&ledger_path).unwrap_or_default()) {
            Ok(existing) if ledger_path.exists() => LedgerOutcome::KeptExisting {
                path: ledger_path.display().to_string(),
                entries: existing.entries.len() as u64,
            },
            _ => {
                let copy =
                    ledger_path.with_extension(format!("jsonl.from-{}", statement.backup_id));
                write_atomically(&copy, ledger_copy.as_bytes())
                    .map_err(|e| io("cannot write", &copy, e))?;
                LedgerOutcome::Missing {
                    path: ledger_path.display().to_string(),
                    backup_copy: copy.display().to_string(),
                }
            }
        };
    if let Some(masked) = decoded.files.get(CONFIG_FILE) {
        let path = config.data_dir.join("config.from-backup.toml");
        write_atomically(&path, masked.as_bytes()).map_err(|e| io("cannot write", &path, e))?;
    }
    if backup_ledger.entries.len() as u64 != statement.erasure_ledger.entries {
        tracing::warn!("the backup's ledger copy does not hold the entries its manifest counts");
    }
    database.close().await;
    progress.finish();
    let next_step = match &erasure_ledger {
        LedgerOutcome::KeptExisting { .. } => "put the root key in place (versions listed) and run `herald serve`: it re-applies every erasure the ledger lists, then records the restore".to_owned(),
        LedgerOutcome::Missing { path, backup_copy } => format!(
            "put the newest erasure ledger at {path} (or `herald erasures import FILE`) before `herald serve`; only if no erasure happened after the backup, `herald erasures import {backup_copy}` or `herald serve --accept-missing-ledger`"
        ),
    };
    Ok(RestoreReport {
        backup_id: statement.backup_id.clone(),
        created_at: statement.created_at.clone(),
        backend_from: statement.backend.clone(),
        backend_to: match backend_to {
            Backend::Sqlite => "sqlite".into(),
            Backend::Postgres => "postgres".into(),
        },
        rows: statement.counts.values().sum(),
        root_key_versions: statement.root_key_versions.clone(),
        erasure_ledger,
        witness_set_aside,
        next_step,
    })
}
