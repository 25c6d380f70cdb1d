//! What `herald serve` runs beside the server: batched key-usage writes, root-key reloads, the
//! audit sealer and retention, failure counts, rate-limit refreshes, and the backup schedule.

use std::sync::Arc;
use std::time::Duration;

use herald_domain::audit::{Audit, Initiator};
use tokio::sync::watch;

use super::Herald;

/// How often a running server re-reads its root keys (to follow a rotation done by the CLI).
const ROOT_KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
/// How often a node re-reads integrations' own rate limits and the provider register changed on
/// other nodes (the window in which a `PATCH` on one node is not yet applied on another), and
/// forgets idle limiter state.
const RATE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// How often the audit retention is applied.
const AUDIT_PRUNE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// How often the backup schedule looks whether a backup or drill is due.
const BACKUP_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How often the counts of aggregated authentication failures are written.
const FAILURE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

impl Herald {
    /// One pass of the deadline watcher (`[incidents] check_every`): reports approaching and
    /// missed notification deadlines once each (audit trail, `incident.deadline` events),
    /// logs them and counts them. Tests call it under their manual clock.
    pub async fn check_incident_deadlines(
        &self,
    ) -> Result<herald_domain::incidents::WatchReport, herald_domain::incidents::IncidentError>
    {
        let report = self.incidents().check_deadlines().await?;
        for alert in &report.alerts {
            let due_at = alert.due_at.to_rfc3339();
            match alert.state {
                herald_domain::incidents::AlertState::Missed => tracing::error!(
                    incident_id = %alert.incident_id,
                    clock = alert.clock.as_str(),
                    basis = alert.clock.basis(),
                    due_at = %due_at,
                    "a breach-notification deadline was missed"
                ),
                herald_domain::incidents::AlertState::Approaching => tracing::warn!(
                    incident_id = %alert.incident_id,
                    clock = alert.clock.as_str(),
                    basis = alert.clock.basis(),
                    due_at = %due_at,
                    "a breach-notification deadline is less than 24 hours away"
                ),
            }
            self.metrics
                .incident_alert(alert.clock.as_str(), alert.state.as_str());
        }
        self.metrics
            .incident_clocks(report.approaching, report.overdue);
        Ok(report)
    }

    /// The deadline watcher on its interval; `None` when `incidents.check_every` is `0s`.
    pub(super) fn spawn_incident_watch(
        &self,
        mut stop: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.config.incidents.check_every;
        if every.is_zero() {
            return None;
        }
        let herald = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tick.tick() => {
                        if let Err(e) = herald.check_incident_deadlines().await {
                            tracing::warn!(error = %e, "the incident deadline check failed; it runs again at the next interval");
                        }
                    }
                }
            }
        }))
    }

    /// Scheduled backups, pruning and drills (`[backup]`), checked once a minute against the
    /// register (which also keeps the backup metrics current when the schedule is off and
    /// backups come from cron); `None` when no backup can be encrypted.
    pub(super) fn spawn_backup_schedule(
        &self,
        mut stop: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let backup = &self.config.backup;
        if !self.config.backups_configured() {
            tracing::warn!(
                "no backup recipient is configured (backup.recipients): scheduled backups are off; see docs/operations.md"
            );
            return None;
        }
        if backup.drill_identity_file.is_none() && !backup.drill_every.is_zero() {
            tracing::info!(
                "backup.drill_identity_file is not set: run `herald backup drill --identity FILE` where the identity is kept"
            );
        }
        let schedule = crate::backup::BackupSchedule::new(self.clone());
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + BACKUP_CHECK_INTERVAL,
                BACKUP_CHECK_INTERVAL,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tick.tick() => {
                        let _ = schedule.step().await;
                    }
                }
            }
        }))
    }

    /// Batched key-usage writes, root-key reloads, the audit sealer and audit retention.
    pub(super) fn spawn_background_tasks(
        &self,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let auth = self.auth.clone();
        let keyring = Arc::clone(&self.keyring);
        let audit = self.audit.clone();
        let flush_every = self.config.auth.last_used_flush_interval;
        let limits = self.limits.clone();
        let vendors = self.vendors.clone();
        let metrics = self.metrics.clone();
        let store = Arc::clone(&self.store);
        let seal_every = self.config.audit.seal_interval;
        let sealer = tokio::spawn({
            let audit = audit.clone();
            let stop = stop.clone();
            async move { audit.run_sealer(seal_every, stop).await }
        });
        tokio::spawn(async move {
            // Nothing to flush at start: the first flush comes one interval in (an immediate
            // first tick raced the first requests' usage under load).
            let mut flush =
                tokio::time::interval_at(tokio::time::Instant::now() + flush_every, flush_every);
            let mut reload = tokio::time::interval(ROOT_KEY_RELOAD_INTERVAL);
            // Pruning seals first; at start the serve path sealed already, and an immediate
            // tick raced the first requests' entries.
            let mut prune = tokio::time::interval_at(
                tokio::time::Instant::now() + AUDIT_PRUNE_INTERVAL,
                AUDIT_PRUNE_INTERVAL,
            );
            let mut failures = tokio::time::interval(FAILURE_FLUSH_INTERVAL);
            let mut rates = tokio::time::interval(RATE_REFRESH_INTERVAL);
            for timer in [
                &mut flush,
                &mut reload,
                &mut prune,
                &mut failures,
                &mut rates,
            ] {
                timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            loop {
                tokio::select! {
                    _ = stop.changed() => {
                        let _ = sealer.await;
                        return;
                    }
                    _ = flush.tick() => {
                        if let Err(e) = auth.flush_last_used().await {
                            tracing::warn!(error = %e, "could not write API key usage times; will retry");
                        }
                    }
                    _ = reload.tick() => {
                        match keyring.reload_root().await {
                            Ok(true) => tracing::info!(
                                active_version = keyring.active_root_version(),
                                "loaded new root key versions"
                            ),
                            Ok(false) => {}
                            Err(e) => tracing::error!(error = %e, "could not reload the root keys; keeping the loaded ones"),
                        }
                    }
                    _ = failures.tick() => {
                        if let Err(e) = audit.flush_failures(false).await {
                            tracing::warn!(error = %e, "could not write the counts of aggregated failures; will retry");
                        }
                    }
                    _ = prune.tick() => prune_audit(&audit).await,
                    _ = rates.tick() => {
                        // Rates set on other nodes, and bounded limiter memory.
                        if let Err(e) = limits.refresh(store.as_ref()).await {
                            tracing::warn!(error = %e, "could not re-read integrations' rate limits; keeping the loaded ones");
                        }
                        limits.forget_idle();
                        // Reviews and suspensions made on other nodes.
                        if let Err(e) = vendors.refresh().await {
                            tracing::warn!(error = %e, "could not re-read the provider register; keeping the loaded one");
                        }
                        metrics.vendor_reviews_due(
                            vendors.reviews_due_within(super::vendors::REVIEW_WARNING_DAYS).len(),
                        );
                    }
                }
            }
        })
    }
}

/// Applies the audit retention (`audit.retention`), logging what it did.
pub(super) async fn prune_audit(audit: &Audit) {
    match audit.prune(&Initiator::system()).await {
        Ok(Some(report)) => tracing::info!(
            through_seq = report.through_seq,
            removed = report.removed,
            "pruned audit entries past their retention"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "audit retention run failed"),
    }
}
