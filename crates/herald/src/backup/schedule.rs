//! Backups and drills on a schedule inside `herald serve`, decided by the injected clock
//! against the register in the database (so nodes agree, and tests drive it step by step),
//! one node at a time (the backup lock), and pruning past `backup.keep`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use herald_domain::audit::{Action, AuditEvent, Details, Initiator, Outcome, Target};
use herald_store::Database;
use herald_store::recovery::{BackupMark, BackupRecord};
use serde::Serialize;

use super::manifest::SignedManifest;
use super::{
    BackupError, Decryption, DrillReport, NoProgress, Trigger, create_backup, drill_backup,
    manifest_name,
};
use crate::startup::Herald;

/// A backup as `GET /v1/backups` and `herald backup list` show it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub id: String,
    pub created_at: String,
    pub file: String,
    pub size_bytes: u64,
    pub duration_ms: u64,
    pub backend: String,
    pub schema_version: i64,
    pub audit_head_seq: u64,
    pub subjects: u64,
    pub messages: u64,
    pub erasures: u64,
    pub verified_at: Option<String>,
    pub drilled_at: Option<String>,
    pub pruned_at: Option<String>,
    /// Whether both files are still in the backup directory.
    pub present: bool,
}

fn summary(dir: &Path, record: &BackupRecord) -> BackupSummary {
    let manifest = SignedManifest::parse(&record.manifest).ok();
    let statement = manifest.as_ref().map(|m| &m.statement);
    let count = |table: &str| {
        statement
            .and_then(|s| s.counts.get(table).copied())
            .unwrap_or(0)
    };
    BackupSummary {
        id: record.id.clone(),
        created_at: super::rfc3339(record.created_at),
        file: record.file_name.clone(),
        size_bytes: record.size_bytes,
        duration_ms: record.duration_ms,
        backend: statement.map(|s| s.backend.clone()).unwrap_or_default(),
        schema_version: statement.map_or(0, |s| s.schema_version),
        audit_head_seq: statement.map_or(0, |s| s.audit.head_seq),
        subjects: count("subjects"),
        messages: count("messages"),
        erasures: statement.map_or(0, |s| s.erasure_ledger.entries),
        verified_at: record.verified_at.map(super::rfc3339),
        drilled_at: record.drilled_at.map(super::rfc3339),
        pruned_at: record.pruned_at.map(super::rfc3339),
        present: dir.join(&record.file_name).is_file()
            && dir.join(manifest_name(&record.id)).is_file(),
    }
}

/// The register of backups, for readers (the API, the CLI).
#[derive(Debug, Clone)]
pub struct BackupRegister {
    database: Database,
    dir: PathBuf,
}

impl BackupRegister {
    pub fn new(database: Database, dir: PathBuf) -> Self {
        Self { database, dir }
    }

    /// Newest first.
    pub async fn list(&self, limit: u32) -> Result<Vec<BackupSummary>, BackupError> {
        let records = self.database.backups(limit).await?;
        Ok(records.iter().map(|r| summary(&self.dir, r)).collect())
    }
}

/// The register, newest first.
pub async fn list_backups(herald: &Herald, limit: u32) -> Result<Vec<BackupSummary>, BackupError> {
    BackupRegister::new(herald.database().clone(), herald.config().backup_dir())
        .list(limit)
        .await
}

/// Deletes the backups beyond the newest `keep` (files and all; the register keeps the row,
/// marked pruned). Returns how many were pruned.
pub async fn prune_backups(herald: &Herald, keep: u32) -> Result<u64, BackupError> {
    let records = herald.database().backups(10_000).await?;
    let dir = herald.config().backup_dir();
    let mut pruned = 0u64;
    for record in records
        .iter()
        .filter(|r| r.pruned_at.is_none())
        .skip(keep as usize)
    {
        for name in [record.file_name.clone(), manifest_name(&record.id)] {
            match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(super::io("cannot delete", &dir.join(&name), e)),
            }
        }
        if herald
            .database()
            .mark_backup(&record.id, BackupMark::Pruned, herald.clock().now())
            .await?
        {
            pruned += 1;
        }
    }
    if pruned > 0 {
        let event = AuditEvent::new(&Initiator::system(), Action::BackupPruned, Outcome::Success)
            .target(Target::Service)
            .details(Details::new().with("count", pruned));
        herald.audit().append(&event).await?;
    }
    Ok(pruned)
}

/// What one scheduler step did.
#[derive(Debug, Default)]
pub struct ScheduleStep {
    pub backup: Option<Result<String, String>>,
    pub pruned: u64,
    pub drill: Option<DrillReport>,
}

/// The scheduler of one node.
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    herald: Herald,
}

impl BackupSchedule {
    pub fn new(herald: Herald) -> Self {
        Self { herald }
    }

    /// Takes a backup if one is due, prunes, and drills the newest if a drill is due. Errors
    /// are logged, counted and audited by the steps themselves; this never stops the loop.
    pub async fn step(&self) -> ScheduleStep {
        let herald = &self.herald;
        let config = herald.config();
        let mut step = ScheduleStep::default();
        let now = herald.clock().now();
        let every =
            chrono::TimeDelta::from_std(config.backup.every).unwrap_or(chrono::TimeDelta::MAX);
        let newest = match herald.database().backups(1).await {
            Ok(records) => records.into_iter().next(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the backup register; the schedule waits");
                return step;
            }
        };
        // The register is shared: a backup taken by the CLI (cron) or another node counts, and
        // the metrics show the newest one whoever took it.
        if let Some(b) = &newest {
            herald.metrics().backup_succeeded(
                b.created_at.timestamp(),
                b.duration_ms,
                b.size_bytes,
            );
        }
        let backup_due = config.backups_configured()
            && !config.backup.every.is_zero()
            && newest.as_ref().is_none_or(|b| b.created_at + every <= now);
        if backup_due {
            let created = create_backup(
                herald,
                &config.backup_dir(),
                Trigger::Schedule,
                Arc::new(NoProgress),
            )
            .await;
            step.backup = Some(created.map(|b| b.id).map_err(|e| e.code().to_owned()));
            match prune_backups(herald, config.backup.keep).await {
                Ok(n) => step.pruned = n,
                Err(e) => tracing::error!(error = %e, "pruning old backups failed"),
            }
        }
        let drill_every = chrono::TimeDelta::from_std(config.backup.drill_every)
            .unwrap_or(chrono::TimeDelta::MAX);
        let Some(identity) = &config.backup.drill_identity_file else {
            return step;
        };
        if config.backup.drill_every.is_zero() {
            return step;
        }
        let drilled = match herald.database().backups(1000).await {
            Ok(records) => records.iter().filter_map(|r| r.drilled_at).max(),
            Err(_) => return step,
        };
        if drilled.is_some_and(|at| at + drill_every > now) {
            return step;
        }
        match Decryption::identity_file(identity) {
            Ok(decryption) => {
                match drill_backup(herald, None, decryption, Arc::new(NoProgress)).await {
                    Ok(report) => {
                        if !report.ok {
                            tracing::error!(problem = ?report.problem, "the restore drill failed");
                        }
                        step.drill = Some(report);
                    }
                    Err(e) => {
                        herald.metrics().drill_finished(false, 0);
                        tracing::error!(error = %e, "the restore drill could not run");
                    }
                }
            }
            Err(e) => {
                herald.metrics().drill_finished(false, 0);
                tracing::error!(error = %e, "the restore drill cannot read backup.drill_identity_file");
            }
        }
        step
    }
}
