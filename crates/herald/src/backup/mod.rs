//! Backups and restores (ADR 0016, docs/operations.md): a consistent logical snapshot of every
//! Herald table plus the audit witness, the erasure ledger and the masked configuration, as
//! JSON Lines encrypted with age to configured recipients, beside a manifest signed with the
//! audit key. Never the root key. Restores go into an empty target of either backend and
//! leave it so that the first start re-applies every erasure recorded since.
//!
//! This capability works on the concrete [`herald_store::Database`] (snapshots are a storage
//! matter) and never on the HTTP layer.

mod create;
mod drill;
mod format;
mod manifest;
mod progress;
mod restore;
mod schedule;

pub use create::{CreatedBackup, Trigger, create_backup};
pub use drill::{DrillReport, drill_backup, newest_backup};
pub use manifest::{Manifest, SignedManifest};
pub use progress::{NoProgress, Progress};
pub use restore::{
    Decryption, LedgerOutcome, RestoreReport, RestoreTarget, VerifyReport, locate, restore_backup,
    verify_backup,
};
pub use schedule::{
    BackupRegister, BackupSchedule, BackupSummary, ScheduleStep, list_backups, prune_backups,
};

use herald_domain::audit::AuditError;
use herald_domain::store::StoreError;

/// The payload's and the manifest's file names for a backup id.
pub fn payload_name(id: &str) -> String {
    format!("{id}.jsonl.age")
}

pub fn manifest_name(id: &str) -> String {
    format!("{id}.manifest.json")
}

/// Why a backup operation failed. `code()` is stable (scripts and the drill report use it);
/// messages name files and facts, never data.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "no backup recipient is configured: set backup.recipients (age1… public keys) or backup.passphrase"
    )]
    NotConfigured,
    #[error("{0}")]
    Io(String),
    #[error("the manifest is not valid: {0}")]
    Manifest(String),
    #[error("the payload does not match its manifest's SHA-256: the file was changed or damaged")]
    PayloadHash,
    #[error("the manifest's signature does not verify with the backup's audit key {0}")]
    Signature(String),
    #[error("cannot decrypt the backup: {0}")]
    Decrypt(String),
    #[error("the decrypted payload is not a valid backup: {0}")]
    Payload(String),
    #[error("the restore target is not empty: {0}")]
    TargetNotEmpty(String),
    #[error("the backup needs schema version {needed}; this Herald knows up to {known}")]
    SchemaTooNew { needed: i64, known: i64 },
    #[error("another node is taking a backup")]
    Busy,
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Connect(#[from] herald_store::ConnectError),
    #[error("audit trail: {0}")]
    Audit(#[from] AuditError),
}

impl BackupError {
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::NotConfigured => "not_configured",
            BackupError::Io(_) => "io_error",
            BackupError::Manifest(_) => "manifest_invalid",
            BackupError::PayloadHash => "payload_hash_mismatch",
            BackupError::Signature(_) => "manifest_signature_invalid",
            BackupError::Decrypt(_) => "decryption_failed",
            BackupError::Payload(_) => "payload_invalid",
            BackupError::TargetNotEmpty(_) => "target_not_empty",
            BackupError::SchemaTooNew { .. } => "schema_too_new",
            BackupError::Busy => "busy",
            BackupError::Store(_) | BackupError::Connect(_) => "database_error",
            BackupError::Audit(_) => "audit_error",
        }
    }
}

pub(crate) fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> BackupError {
    BackupError::Io(format!("{what} {}: {e}", path.display()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

pub(crate) fn rfc3339(t: herald_domain::clock::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Creates a directory (and parents) owner-only.
pub(crate) fn private_dir(path: &std::path::Path) -> Result<(), BackupError> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .map_err(|e| io("cannot create", path, e))
}

/// A SHA-256 over everything written through it.
pub(crate) struct Hashing<W> {
    inner: W,
    context: ring::digest::Context,
    bytes: u64,
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            context: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, [u8; 32], u64) {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.context.finish().as_ref());
        (self.inner, out, self.bytes)
    }
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.context.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.context.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// SHA-256 of a file, streamed.
pub(crate) fn file_sha256(path: &std::path::Path) -> Result<([u8; 32], u64), BackupError> {
    let file = std::fs::File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut hashing = Hashing::new(std::io::BufReader::with_capacity(1 << 16, file));
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| io("cannot read", path, e))?;
    let (_, digest, bytes) = hashing.finish();
    Ok((digest, bytes))
}
