//! The deadline watcher (GDPR Art. 33(1): 72 hours; HIPAA §164.404–408: 60 days): every
//! notification clock of an incident that is not closed is looked at; one within 24 hours of
//! its deadline is reported once as `approaching`, one past it once as `missed` — recorded
//! with the incident (so several nodes and restarts report it once), audited, and queued as
//! an `incident.deadline` event for the operator's endpoints. Driven by the injected clock;
//! the caller logs and counts what it returns.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::clocks::{ClockKind, ClockStatus, approaching};
use super::register::{IncidentError, IncidentStatus, Incidents};
use crate::audit::{Action, AuditEvent, AuditRecord, Detail, Details, Initiator, Outcome, Target};
use crate::clock::Timestamp;
use crate::ids::IncidentId;
use crate::store::PageRequest;
use crate::webhooks::{EventType, OperatorEvent};

/// How near or late a deadline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Within 24 hours of the deadline, nothing recorded yet.
    Approaching,
    /// Past the deadline, nothing recorded.
    Missed,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Approaching => "approaching",
            AlertState::Missed => "missed",
        }
    }
}

/// One report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineAlert {
    pub incident_id: IncidentId,
    pub clock: ClockKind,
    pub state: AlertState,
    pub due_at: Timestamp,
}

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchReport {
    /// Reported for the first time in this pass.
    pub alerts: Vec<DeadlineAlert>,
    /// Clocks running within 24 hours of their deadline now.
    pub approaching: u64,
    /// Clocks past their deadline now.
    pub overdue: u64,
}

/// The key under which a report is remembered with the incident.
pub(super) fn alert_key(clock: ClockKind, state: AlertState) -> String {
    format!("{}:{}", clock.as_str(), state.as_str())
}

impl Incidents {
    /// One pass over the incidents that are not closed.
    pub async fn check_deadlines(&self) -> Result<WatchReport, IncidentError> {
        let mut report = WatchReport::default();
        let mut after: Option<String> = None;
        loop {
            let rows = self
                .store
                .incidents(&PageRequest {
                    after: after.clone(),
                    limit: 200,
                })
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id.as_str().to_owned());
            let full = rows.len() == 200;
            for row in rows {
                let id = row.id.clone();
                let (incident, _) = self.read(row)?;
                if incident.status == IncidentStatus::Closed {
                    continue;
                }
                let now = self.clock.now();
                for deadline in &incident.deadlines {
                    let Some(due_at) = deadline.due_at else {
                        continue;
                    };
                    let state = if deadline.status == ClockStatus::Overdue {
                        report.overdue += 1;
                        AlertState::Missed
                    } else if approaching(deadline, now) {
                        report.approaching += 1;
                        AlertState::Approaching
                    } else {
                        continue;
                    };
                    if incident
                        .facts
                        .alerts
                        .contains(&alert_key(deadline.kind, state))
                    {
                        continue;
                    }
                    let alert = DeadlineAlert {
                        incident_id: id.clone(),
                        clock: deadline.kind,
                        state,
                        due_at,
                    };
                    if self.report(&alert).await? {
                        report.alerts.push(alert);
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// Records, audits and queues one report; `false` when another node reported it first.
    async fn report(&self, alert: &DeadlineAlert) -> Result<bool, IncidentError> {
        let key = alert_key(alert.clock, alert.state);
        for _ in 0..5 {
            let now = self.clock.now();
            let (mut incident, version) = self.load(&alert.incident_id).await?;
            if incident.facts.alerts.contains(&key) {
                return Ok(false);
            }
            incident.facts.alerts.push(key.clone());
            let next = self.row(&incident, version + 1, now)?;
            let event = AuditEvent::new(
                &Initiator::system(),
                Action::IncidentDeadline,
                Outcome::Success,
            )
            .target(Target::Incident(alert.incident_id.clone()))
            .details(
                Details::new()
                    .with("clock", alert.clock.as_str())
                    .with("state", alert.state.as_str())
                    .with("due_at", Detail::Time(alert.due_at)),
            );
            let outgoing = OperatorEvent::seal(
                &self.keyring,
                EventType::IncidentDeadline,
                json!({
                    "incident_id": alert.incident_id.as_str(),
                    "clock": alert.clock.as_str(),
                    "basis": alert.clock.basis(),
                    "state": alert.state.as_str(),
                    "due_at": crate::webhooks::event::rfc3339(alert.due_at),
                }),
                now,
            )?;
            if self
                .store
                .record_incident_alert(&next, version, &AuditRecord::new(&event, now), &outgoing)
                .await?
            {
                return Ok(true);
            }
        }
        Err(IncidentError::Changed)
    }
}
