//! Telling the integrations whose subjects an incident affected (GDPR Art. 33(2): the processor
//! notifies the controller without undue delay — Herald commits to 24 hours of awareness,
//! compliance PROC-NOTIFY; HIPAA §164.410 for a business associate). Each integration linked to
//! an affected subject gets an `incident.notified` event with the facts and *its own* affected
//! subject ids only — never another integration's. Integrations without an endpoint for the
//! event are reported, to be told another way.

use std::collections::BTreeMap;

use serde_json::json;

use super::register::{IncidentError, Incidents};
use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::ids::{IncidentId, IntegrationId, SubjectId};
use crate::webhooks::event::rfc3339;
use crate::webhooks::{EventType, OperatorEvent};

/// Subject ids one event carries at most: a larger set goes in several parts.
pub const SUBJECTS_PER_EVENT: usize = 5000;

/// What telling the integrations did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllersNotified {
    /// Integrations told, with how many of their subjects are affected.
    pub integrations: BTreeMap<IntegrationId, u64>,
    /// Events queued (an integration with many subjects gets several parts, each to every
    /// endpoint it has for the event).
    pub deliveries: u64,
    /// Integrations with no enabled endpoint for `incident.notified`: tell them another way.
    pub without_endpoint: Vec<IntegrationId>,
}

impl Incidents {
    /// Queues `incident.notified` for every integration linked to an affected subject,
    /// records when (the `controllers` clock) and audits it. `contact` is whom they may ask
    /// (the DPO contact from configuration). Repeating it tells them again (new facts).
    pub async fn notify_controllers(
        &self,
        id: &IncidentId,
        contact: Option<&str>,
        initiator: &Initiator,
    ) -> Result<ControllersNotified, IncidentError> {
        let links = self.store.incident_links(id).await?;
        let mut by_integration: BTreeMap<IntegrationId, Vec<SubjectId>> = BTreeMap::new();
        for (integration, subject) in links {
            by_integration.entry(integration).or_default().push(subject);
        }
        for _ in 0..5 {
            let now = self.clock.now();
            let (mut incident, version) = self.load(id).await?;
            let facts = &incident.facts;
            let mut events: Vec<(IntegrationId, OperatorEvent)> = Vec::new();
            for (integration, subjects) in &by_integration {
                let parts = subjects.len().div_ceil(SUBJECTS_PER_EVENT);
                for (part, chunk) in subjects.chunks(SUBJECTS_PER_EVENT).enumerate() {
                    let data = json!({
                        "incident_id": id.as_str(),
                        "kinds": facts.kinds,
                        "data_categories": facts.data_categories,
                        "detected_at": rfc3339(facts.detected_at),
                        "became_aware_at": rfc3339(facts.became_aware_at),
                        "contact": contact,
                        "subjects_total": subjects.len(),
                        "part": part + 1,
                        "parts": parts,
                        "subject_ids": chunk.iter().map(SubjectId::as_str).collect::<Vec<_>>(),
                    });
                    events.push((
                        integration.clone(),
                        OperatorEvent::seal(&self.keyring, EventType::IncidentNotified, data, now)?,
                    ));
                }
            }
            if incident.facts.controllers_notified_at.is_none() && !by_integration.is_empty() {
                incident.facts.controllers_notified_at = Some(now);
            }
            let subjects: usize = by_integration.values().map(Vec::len).sum();
            let event = AuditEvent::new(
                initiator,
                Action::IncidentControllersNotified,
                Outcome::Success,
            )
            .target(Target::Incident(id.clone()))
            .details(
                Details::new()
                    .with("integrations", by_integration.len() as u64)
                    .with("subjects", subjects as u64)
                    .with("events", events.len() as u64),
            );
            let next = self.row(&incident, version + 1, now)?;
            let Some(queued) = self
                .store
                .record_controller_notices(&next, version, &AuditRecord::new(&event, now), &events)
                .await?
            else {
                continue;
            };
            let mut reached: BTreeMap<&IntegrationId, u64> = BTreeMap::new();
            for ((integration, _), n) in events.iter().zip(&queued) {
                *reached.entry(integration).or_default() += n;
            }
            return Ok(ControllersNotified {
                integrations: by_integration
                    .iter()
                    .map(|(i, s)| (i.clone(), s.len() as u64))
                    .collect(),
                deliveries: queued.iter().sum(),
                without_endpoint: reached
                    .into_iter()
                    .filter(|(_, n)| *n == 0)
                    .map(|(i, _)| i.clone())
                    .collect(),
            });
        }
        Err(IncidentError::Changed)
    }
}
