//! Computing and keeping who an incident affected: the audit-trail scan behind
//! `POST /v1/incidents/{id}/scope` and the list behind `GET …/affected`.

use std::collections::{BTreeMap, HashMap};

use super::register::{Incident, IncidentError, Incidents};
use super::scope::{Contact, ScopeRecord, Selector, Tally, Touched, Touches, touched};
use crate::audit::{Action, AuditEvent, AuditRecord, Detail, Details, Initiator, Outcome, Target};
use crate::clock::Timestamp;
use crate::ids::{IncidentId, MessageId, SubjectId};
use crate::store::{AffectedRow, StoreError};

/// Entries read per page of the scan.
const SCAN_PAGE: u32 = 2000;
/// Entries are sealed in the order they were written, which on several nodes (or within one
/// commit batch) is not strictly the order of their times: the scan reads this far past the
/// window's end before it stops.
const CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// What a scope asks for.
#[derive(Debug, Clone)]
pub struct ScopeQuery {
    pub selector: Selector,
    pub from: Timestamp,
    /// `None`: until now.
    pub to: Option<Timestamp>,
}

/// What one scope found, and the incident afterwards.
#[derive(Debug, Clone)]
pub struct ScopeOutcome {
    pub record: ScopeRecord,
    /// Subjects this scope found that no earlier scope had.
    pub added: u64,
    pub incident: Incident,
}

/// A subject an incident affected, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedSubject {
    pub subject_id: SubjectId,
    pub touches: Touches,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    pub notice_message_id: Option<MessageId>,
    pub notice_at: Option<Timestamp>,
}

fn corrupt(what: &str) -> IncidentError {
    IncidentError::Store(StoreError::Corrupt(what.into()))
}

impl Incidents {
    /// Scans the audit trail for what `query.selector` did in the window, adds the subjects
    /// it touched to the incident's affected set (a union over every scope: two leaked keys
    /// are two scopes) and records the scope with its counts. Everything pending is sealed
    /// first, so the scan sees every entry written before it started.
    pub async fn scope(
        &self,
        id: &IncidentId,
        query: ScopeQuery,
        initiator: &Initiator,
    ) -> Result<ScopeOutcome, IncidentError> {
        let now = self.clock.now();
        let to = query.to.unwrap_or(now);
        if query.from >= to {
            return Err(IncidentError::Invalid {
                field: "from",
                rule: "must be before to",
            });
        }
        if to > now {
            return Err(IncidentError::Invalid {
                field: "to",
                rule: "must not be in the future",
            });
        }
        if let Selector::Route(route) = &query.selector
            && !Detail::is_route(route)
        {
            return Err(IncidentError::Invalid {
                field: "route",
                rule: "a route template such as /v1/subjects/{id}",
            });
        }
        let (mut incident, version) = self.load(id).await?;
        self.audit.seal().await.map_err(IncidentError::Audit)?;
        let tally = self.scan(&query.selector, query.from, to).await?;

        // Merge with what earlier scopes found.
        let mut merged: Vec<AffectedRow> = Vec::with_capacity(tally.subjects.len());
        let mut added = 0u64;
        let existing = self.all_affected(id).await?;
        for (subject, contact) in &tally.subjects {
            let contact = match existing.get(subject) {
                Some(before) => before.merge(*contact),
                None => {
                    added += 1;
                    *contact
                }
            };
            merged.push(AffectedRow {
                subject_id: subject.clone(),
                kinds: contact.touches.encode(),
                first_at: contact.first_at,
                last_at: contact.last_at,
                notice_message_id: None,
                notice_at: None,
            });
        }
        let by_kind: BTreeMap<String, u64> = tally
            .by_kind()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let record = ScopeRecord {
            by: query.selector.kind().to_owned(),
            value: query.selector.value().to_owned(),
            from: query.from,
            to,
            computed_at: now,
            entries_scanned: tally.entries,
            subjects: tally.subjects.len() as u64,
            by_kind: by_kind.clone(),
        };
        let facts = &mut incident.facts;
        facts.scopes.push(record.clone());
        facts.scoped_subjects = existing.len() as u64 + added;
        // The people Herald can name are affected; an estimate that counts fewer is raised.
        if facts.affected.is_none_or(|n| n < facts.scoped_subjects) {
            facts.affected = Some(facts.scoped_subjects);
        }
        let mut details = Details::new()
            .with("by", query.selector.kind())
            .with("from", Detail::Time(query.from))
            .with("to", Detail::Time(to))
            .with("entries_scanned", tally.entries)
            .with("subjects", tally.subjects.len() as u64)
            .with("added", added)
            .with("total", facts.scoped_subjects);
        details = match &query.selector {
            Selector::ApiKey(key) => details.with("key_id", key),
            Selector::OAuthClient(client) => {
                details.with("client_id", Detail::Id(client.as_str().to_owned()))
            }
            Selector::Integration(integration) => details.with("integration_id", integration),
            Selector::Route(route) => details.with_opt("scope_route", Detail::route(route)),
        };
        let event = AuditEvent::new(initiator, Action::IncidentScoped, Outcome::Success)
            .target(Target::Incident(incident.id.clone()))
            .details(details);
        let next = self.row(&incident, version + 1, now)?;
        if !self
            .store
            .merge_incident_affected(&next, version, &merged, &AuditRecord::new(&event, now))
            .await?
        {
            return Err(IncidentError::Changed);
        }
        let (incident, _) = self.read(next)?;
        Ok(ScopeOutcome {
            record,
            added,
            incident,
        })
    }

    async fn scan(
        &self,
        selector: &Selector,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Tally, IncidentError> {
        let mut tally = Tally::default();
        let mut message_subjects: HashMap<MessageId, Option<SubjectId>> = HashMap::new();
        // Every entry up to this one was recorded before the window: start after it.
        let mut after = self.store.audit_prunable_through(from).await?.unwrap_or(0);
        'pages: loop {
            let page = self
                .audit
                .entries(after, SCAN_PAGE)
                .await
                .map_err(IncidentError::Audit)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = page.len() == SCAN_PAGE as usize;
            for entry in &page {
                if entry.recorded_at > to + CLOCK_SLACK {
                    break 'pages;
                }
                if entry.recorded_at < from || entry.recorded_at > to {
                    continue;
                }
                tally.entries += 1;
                let found = touched(&entry.body, selector).map_err(|e| corrupt(&e.to_string()))?;
                for touch in found {
                    match touch {
                        Touched::Subject(subject, kind) => {
                            tally.add(subject, kind, entry.recorded_at);
                        }
                        Touched::Message(message, kind) => {
                            let subject = match message_subjects.get(&message) {
                                Some(subject) => subject.clone(),
                                None => {
                                    let subject =
                                        self.store.message(&message).await?.map(|m| m.subject_id);
                                    message_subjects.insert(message, subject.clone());
                                    subject
                                }
                            };
                            if let Some(subject) = subject {
                                tally.add(subject, kind, entry.recorded_at);
                            }
                        }
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(tally)
    }

    async fn all_affected(
        &self,
        id: &IncidentId,
    ) -> Result<HashMap<SubjectId, Contact>, IncidentError> {
        let mut out = HashMap::new();
        let mut after: Option<SubjectId> = None;
        loop {
            let rows = self
                .store
                .incident_affected(id, after.as_ref(), 1000)
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.subject_id.clone());
            let full = rows.len() == 1000;
            for row in rows {
                let touches =
                    Touches::decode(&row.kinds).ok_or_else(|| corrupt("affected kinds"))?;
                out.insert(
                    row.subject_id,
                    Contact {
                        touches,
                        first_at: row.first_at,
                        last_at: row.last_at,
                    },
                );
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// The incident's affected subjects by id, after the cursor; up to `limit + 1` (the extra
    /// one says there is more).
    pub async fn affected(
        &self,
        id: &IncidentId,
        after: Option<&SubjectId>,
        limit: u32,
    ) -> Result<Vec<AffectedSubject>, IncidentError> {
        if self.store.incident(id).await?.is_none() {
            return Err(IncidentError::NotFound);
        }
        self.store
            .incident_affected(id, after, limit + 1)
            .await?
            .into_iter()
            .map(|row| {
                Ok(AffectedSubject {
                    touches: Touches::decode(&row.kinds)
                        .ok_or_else(|| corrupt("affected kinds"))?,
                    subject_id: row.subject_id,
                    first_at: row.first_at,
                    last_at: row.last_at,
                    notice_message_id: row.notice_message_id,
                    notice_at: row.notice_at,
                })
            })
            .collect()
    }
}
