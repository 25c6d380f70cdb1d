//! Telling the people a breach affected, through Herald (GDPR Art. 34; HIPAA §164.404): a
//! configured template to every affected subject not yet told, under a purpose whose lawful
//! basis is `legal_obligation`. Every send goes through the normal policy: an erased subject is
//! never messaged; a subject who withdrew a marketing consent still is (the notice relies on
//! the obligation, not on that consent); one WhatsApp would not let Herald reach — no opt-in on
//! the channel at all, or a STOP the purpose honours — is reported by refusal code, for the
//! officer to tell another way (Art. 34(3)(c)). Runs in pages with a cursor, so a large
//! incident is told in several calls, each paced by the group commit and then by the delivery
//! worker's pacing, and a crash in between repeats nobody's notice.

use std::collections::BTreeMap;

use super::register::{IncidentError, Incidents, NoticeRun};
use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::auth::Principal;
use crate::ids::{IncidentId, SubjectId};
use crate::messages::{Channel, Content, LawfulBasis, Messages, SendCommand, SendError};
use crate::subjects::Access;

/// Notices one call sends at most.
pub const MAX_NOTICES_PER_CALL: u32 = 1000;

#[derive(Debug, Clone)]
pub struct NoticeRequest {
    pub purpose: String,
    pub template: String,
    pub language: String,
    /// The template's body parameters, the same for everyone (no personal data: the template
    /// says what happened, the parameters e.g. a reference and a contact).
    pub parameters: Vec<String>,
    /// Continue after this subject (the previous call's `next`).
    pub after: Option<SubjectId>,
    pub limit: u32,
}

/// What one call did.
#[derive(Debug, Clone)]
pub struct NoticeOutcome {
    pub run: NoticeRun,
    /// Where the next call continues; `None` when every affected subject was reached.
    pub next: Option<SubjectId>,
}

fn invalid(field: &'static str, rule: &'static str) -> IncidentError {
    IncidentError::Invalid { field, rule }
}

impl Incidents {
    /// Sends the notice to affected subjects not yet told, after `request.after`, at most
    /// `request.limit`; records the run with the incident and audits it. Each send's own
    /// `message.accepted` entry names the incident.
    pub async fn notify_subjects(
        &self,
        id: &IncidentId,
        request: NoticeRequest,
        messages: &Messages,
        caller: &Principal,
        initiator: &Initiator,
    ) -> Result<NoticeOutcome, IncidentError> {
        let started_at = self.clock.now();
        if request.limit == 0 || request.limit > MAX_NOTICES_PER_CALL {
            return Err(invalid("limit", "1 to 1000"));
        }
        let catalog = messages.catalog();
        let purpose = catalog
            .public_purpose(&request.purpose)
            .ok_or_else(|| invalid("purpose", "a configured purpose"))?;
        if purpose.basis != LawfulBasis::LegalObligation {
            return Err(IncidentError::NotLegalObligation);
        }
        let template = catalog
            .template(&request.template, &request.language)
            .ok_or_else(|| invalid("template", "a configured template in that language"))?;
        if request.parameters.len() != template.parameters as usize {
            return Err(invalid(
                "parameters",
                "as many as the template has body parameters",
            ));
        }
        if self.store.incident(id).await?.is_none() {
            return Err(IncidentError::NotFound);
        }
        // The controller tells everyone affected, whichever integration knows them.
        let access = Access {
            integration: Some(&caller.integration_id),
            every_subject: true,
            may_register: false,
        };
        let initiator = initiator.clone().for_incident(id);
        let mut sent = 0u64;
        let mut already_notified = 0u64;
        let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
        let mut cursor = request.after.clone();
        let mut attempts = 0u32;
        let mut next = None;
        'pages: loop {
            let rows = self
                .store
                .incident_affected(id, cursor.as_ref(), 500)
                .await?;
            let Some(last) = rows.last() else { break };
            let last = last.subject_id.clone();
            let full = rows.len() == 500;
            for row in rows {
                if row.notice_message_id.is_some() {
                    already_notified += 1;
                    continue;
                }
                if attempts == request.limit {
                    // Someone is left: the next call starts after the last one tried.
                    next = cursor.clone();
                    break 'pages;
                }
                attempts += 1;
                let command = SendCommand {
                    to: None,
                    subject_id: Some(row.subject_id.clone()),
                    content: Content::Template {
                        name: request.template.clone(),
                        language: request.language.clone(),
                        parameters: request.parameters.clone(),
                    },
                    purpose: request.purpose.clone(),
                    channel: Channel::Whatsapp,
                    phi: false,
                };
                match messages
                    .send_as(command, caller, access, &initiator, None)
                    .await
                {
                    Ok(accepted) => {
                        self.store
                            .record_incident_notice(
                                id,
                                &row.subject_id,
                                &accepted.id,
                                accepted.created_at,
                            )
                            .await?;
                        sent += 1;
                    }
                    Err(SendError::Refused(refusal)) => {
                        *skipped.entry(refusal.code().to_owned()).or_default() += 1;
                    }
                    Err(SendError::SubjectNotFound) => {
                        *skipped.entry("subject_not_found".to_owned()).or_default() += 1;
                    }
                    Err(SendError::Store(e)) => return Err(IncidentError::Store(e)),
                    Err(SendError::Keys(e)) => return Err(IncidentError::Keys(e)),
                    Err(_) => {
                        *skipped.entry("invalid".to_owned()).or_default() += 1;
                    }
                }
                cursor = Some(row.subject_id);
            }
            if !full {
                break;
            }
            cursor = Some(last);
        }
        let run = NoticeRun {
            started_at,
            finished_at: self.clock.now(),
            purpose: request.purpose.clone(),
            template: request.template.clone(),
            language: request.language.clone(),
            sent,
            already_notified,
            skipped,
        };
        self.record_run(id, &run, initiator_without_incident(&initiator))
            .await?;
        Ok(NoticeOutcome { run, next })
    }

    /// Adds the run to the incident, retrying when another change got in first.
    async fn record_run(
        &self,
        id: &IncidentId,
        run: &NoticeRun,
        initiator: Initiator,
    ) -> Result<(), IncidentError> {
        let skipped: u64 = run.skipped.values().sum();
        for _ in 0..5 {
            let now = self.clock.now();
            let (mut incident, version) = self.load(id).await?;
            incident.facts.subject_notices.push(run.clone());
            let next = self.row(&incident, version + 1, now)?;
            let mut details = Details::new()
                .with("sent", run.sent)
                .with("already_notified", run.already_notified)
                .with("skipped", skipped);
            if let Some(name) = crate::audit::Detail::name(&run.template) {
                details = details.with("template", name);
            }
            let event = AuditEvent::new(
                &initiator,
                Action::IncidentSubjectsNotified,
                Outcome::Success,
            )
            .target(Target::Incident(id.clone()))
            .details(details);
            if self
                .store
                .update_incident(&next, version, &AuditRecord::new(&event, now))
                .await?
            {
                return Ok(());
            }
        }
        Err(IncidentError::Changed)
    }
}

/// The run's own entry targets the incident; it need not name it twice.
fn initiator_without_incident(initiator: &Initiator) -> Initiator {
    Initiator {
        incident: None,
        ..initiator.clone()
    }
}
