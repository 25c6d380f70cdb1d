//! The restore drill (HIPAA §164.308(a)(7)(ii)(D)): the newest (or a given) backup restored
//! into a scratch directory exactly as a disaster would need it — with this installation's
//! erasure ledger put beside it, as shared storage would keep it — opened by the real start-up
//! path, its audit chain verified, every erased subject checked to stay undecryptable, and the
//! time it all took (RTO) and the backup's age (RPO) recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use herald_domain::audit::{Action, AuditEvent, Details, FileWitness, Initiator, Outcome, Target};
use herald_domain::rights::{LedgerFile, write_atomically};
use herald_domain::store::Store;
use herald_store::recovery::BackupMark;
use serde::Serialize;

use super::restore::{RestoreTarget, restore_backup};
use super::{BackupError, Decryption, Progress, io, locate};
use crate::config::KeyProviderKind;
use crate::startup::Herald;

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub backup_id: String,
    pub ok: bool,
    /// Restore, start and checks, in milliseconds: the recovery time this drill measured.
    pub rto_ms: u64,
    /// The backup's age when drilled: the data a disaster now would lose, at most.
    pub rpo_seconds: i64,
    pub rows_restored: u64,
    pub audit_entries_verified: u64,
    pub audit_chain_ok: bool,
    pub erasures_reapplied: u64,
    pub erased_subjects_checked: u64,
    /// Erased subjects whose key still opened in the restored copy: must be 0.
    pub erased_subjects_decryptable: u64,
    pub problem: Option<String>,
}

/// The newest backup payload in `dir` (ids sort by time).
pub fn newest_backup(dir: &Path) -> Result<PathBuf, BackupError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io("cannot read", dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bkp_") && n.ends_with(".manifest.json"))
        .collect();
    names.sort();
    names
        .pop()
        .map(|n| dir.join(n))
        .ok_or_else(|| BackupError::Io(format!("no backup in {}", dir.display())))
}

/// Runs a drill and records it (`backup.drilled`, the register, metrics).
pub async fn drill_backup(
    herald: &Herald,
    file: Option<&Path>,
    decryption: Decryption,
    progress: Arc<dyn Progress>,
) -> Result<DrillReport, BackupError> {
    let file = match file {
        Some(file) => file.to_path_buf(),
        None => newest_backup(&herald.config().backup_dir())?,
    };
    let (_, manifest_file) = locate(&file)?;
    let started = Instant::now();
    let outcome = Box::pin(drill(herald, &file, decryption, progress)).await;
    let rto_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let backup_id = manifest_file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".manifest.json"))
        .unwrap_or_default()
        .to_owned();
    let mut report = match outcome {
        Ok(report) => report,
        Err(e) => DrillReport {
            backup_id: backup_id.clone(),
            ok: false,
            rto_ms,
            rpo_seconds: 0,
            rows_restored: 0,
            audit_entries_verified: 0,
            audit_chain_ok: false,
            erasures_reapplied: 0,
            erased_subjects_checked: 0,
            erased_subjects_decryptable: 0,
            problem: Some(format!("{}: {e}", e.code())),
        },
    };
    report.rto_ms = rto_ms;
    let outcome = if report.ok {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let event = AuditEvent::new(&Initiator::system(), Action::BackupDrilled, outcome)
        .target(Target::Backup(backup_id.clone()))
        .details(
            Details::new()
                .with("ok", report.ok)
                .with("rto_ms", report.rto_ms)
                .with("rpo_seconds", report.rpo_seconds)
                .with("erasures_reapplied", report.erasures_reapplied)
                .with("erased_subjects_checked", report.erased_subjects_checked),
        );
    herald.audit().append(&event).await?;
    if report.ok {
        herald
            .database()
            .mark_backup(&backup_id, BackupMark::Drilled, herald.clock().now())
            .await?;
    }
    herald.metrics().drill_finished(report.ok, report.rto_ms);
    Ok(report)
}

async fn drill(
    herald: &Herald,
    file: &Path,
    decryption: Decryption,
    progress: Arc<dyn Progress>,
) -> Result<DrillReport, BackupError> {
    let live = herald.config();
    let scratch = tempfile::Builder::new()
        .prefix("herald-drill-")
        .tempdir()
        .map_err(|e| BackupError::Io(format!("cannot create a scratch directory: {e}")))?;
    let mut config = live.clone();
    config.data_dir = scratch.path().join("data");
    config.database_url = None;
    config.audit.witness_file = None;
    config.rights.erasure_ledger_file = None;
    config.backup.dir = Some(scratch.path().join("backups"));
    config.backup.every = std::time::Duration::ZERO;
    config.backup.drill_every = std::time::Duration::ZERO;
    if config.keys.provider == KeyProviderKind::File {
        // The live root key: never a new one for the scratch copy.
        config.keys.file = Some(live.root_key_file());
    }
    let now = herald.clock().now();
    let restored = restore_backup(
        file,
        decryption,
        &RestoreTarget {
            config: config.clone(),
        },
        now,
        Arc::clone(&progress),
    )
    .await?;
    // The ledger as it stands now, as shared storage would have kept it through the disaster.
    let ledger_text = match std::fs::read_to_string(live.erasure_ledger_file()) {
        Ok(text) => text,
        Err(e) => return Err(io("cannot read", &live.erasure_ledger_file(), e)),
    };
    let ledger = LedgerFile::parse(&ledger_text)
        .map_err(|e| BackupError::Io(format!("the erasure ledger: {e}")))?;
    write_atomically(&config.erasure_ledger_file(), ledger_text.as_bytes())
        .map_err(|e| io("cannot write", &config.erasure_ledger_file(), e))?;
    progress.phase("start the restored copy", None);
    let copy = Herald::open(config.clone(), Arc::clone(herald.clock()))
        .await
        .map_err(|e| BackupError::Io(format!("the restored copy does not start: {e}")))?;
    let result = check_copy(&copy, &config, &ledger).await;
    copy.store().close().await;
    let (audit, decryptable) = result?;
    let created = chrono::DateTime::parse_from_rfc3339(&restored.created_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| BackupError::Manifest("created_at is not a time".into()))?;
    let problem = if !audit.ok {
        Some(
            audit
                .first_bad
                .as_ref()
                .map_or("the audit chain does not verify".to_owned(), |f| {
                    format!("audit {} at {}", f.problem.as_str(), f.seq)
                }),
        )
    } else if decryptable > 0 {
        Some(format!(
            "{decryptable} erased subjects can still be decrypted in the restored copy"
        ))
    } else {
        None
    };
    progress.finish();
    Ok(DrillReport {
        backup_id: restored.backup_id,
        ok: problem.is_none(),
        rto_ms: 0,
        rpo_seconds: (now - created).num_seconds(),
        rows_restored: restored.rows,
        audit_entries_verified: audit.entries,
        audit_chain_ok: audit.ok,
        erasures_reapplied: copy.erasures_reapplied() as u64,
        erased_subjects_checked: ledger.entries.len() as u64,
        erased_subjects_decryptable: decryptable,
        problem,
    })
}

async fn check_copy(
    copy: &Herald,
    config: &crate::config::Config,
    ledger: &LedgerFile,
) -> Result<(herald_domain::audit::Report, u64), BackupError> {
    copy.audit().seal().await?;
    let store: Arc<dyn Store> = Arc::clone(copy.store());
    let audit =
        herald_domain::audit::verify_trail(&store, &FileWitness::new(config.audit_witness_file()))
            .await?;
    let mut decryptable = 0;
    for entry in &ledger.entries {
        copy.keyring().forget_subject_key(&entry.subject_id);
        if copy.keyring().subject_key(&entry.subject_id).await.is_ok() {
            decryptable += 1;
        }
    }
    Ok((audit, decryptable))
}
