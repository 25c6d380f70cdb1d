//! Notification drafts from what the register holds: the GDPR Art. 33(3) notification to the
//! supervisory authority, the Art. 34(2) notice to the people affected in plain language, the
//! HIPAA §164.404(c) notice to individuals and the data the HHS breach report asks for
//! (§164.408). Each names the facts the law requires, fills what is recorded and lists what is
//! missing — a draft never invents a fact. Text in English for the officer to paste, adapt and
//! translate; the JSON form is for tools.

use chrono::SecondsFormat;

use super::clocks::{ClockKind, ClockStatus};
use super::register::Incident;
use crate::clock::Timestamp;

/// Who the drafts name, from configuration (`[incidents]`).
#[derive(Debug, Clone, Default)]
pub struct Contacts {
    /// The controller / covered entity: name and address.
    pub controller: Option<String>,
    /// The data protection officer or other contact point (Art. 33(3)(b)).
    pub dpo_contact: Option<String>,
    /// How individuals reach the covered entity: toll-free number, e-mail, web site or postal
    /// address (§164.404(c)(1)(E)).
    pub individual_contact: Option<String>,
}

/// One fact of a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftField {
    pub name: &'static str,
    pub label: &'static str,
    pub value: Option<String>,
    /// Required by the provision the draft follows.
    pub required: bool,
}

/// One notification draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub kind: ClockKind,
    pub title: &'static str,
    pub basis: &'static str,
    /// The clock behind it: whether the notification is owed at all, and by when.
    pub clock_status: Option<ClockStatus>,
    pub due_at: Option<Timestamp>,
    pub fields: Vec<DraftField>,
    /// Required facts not recorded yet, by field name (and where to record them).
    pub missing: Vec<&'static str>,
}

fn time(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn list(items: &[String]) -> Option<String> {
    (!items.is_empty()).then(|| items.join(", ").replace('_', " "))
}

struct Builder {
    fields: Vec<DraftField>,
}

impl Builder {
    fn new() -> Self {
        Self { fields: Vec::new() }
    }

    fn required(mut self, name: &'static str, label: &'static str, value: Option<String>) -> Self {
        self.fields.push(DraftField {
            name,
            label,
            value,
            required: true,
        });
        self
    }

    fn optional(mut self, name: &'static str, label: &'static str, value: Option<String>) -> Self {
        self.fields.push(DraftField {
            name,
            label,
            value,
            required: false,
        });
        self
    }

    fn build(self, kind: ClockKind, title: &'static str, incident: &Incident) -> Draft {
        let missing = self
            .fields
            .iter()
            .filter(|f| f.required && f.value.is_none())
            .map(|f| f.name)
            .collect();
        let clock = incident.deadlines.iter().find(|d| d.kind == kind);
        Draft {
            kind,
            title,
            basis: kind.basis(),
            clock_status: clock.map(|d| d.status.clone()),
            due_at: clock.and_then(|d| d.due_at),
            fields: self.fields,
            missing,
        }
    }
}

/// The four drafts for `incident`, as of its clocks.
pub fn drafts(incident: &Incident, contacts: &Contacts) -> Vec<Draft> {
    let facts = &incident.facts;
    let text = &incident.narrative;
    let summary = Some(text.summary.clone());
    let categories = list(&facts.data_categories);
    let affected = facts.affected.map(|n| n.to_string());
    let late = facts.authority_notified_at.map_or_else(
        || {
            incident
                .deadlines
                .iter()
                .any(|d| d.kind == ClockKind::GdprAuthority && d.status == ClockStatus::Overdue)
        },
        |told| told > facts.became_aware_at + super::clocks::GDPR_AUTHORITY_WINDOW,
    );
    let authority = {
        let b = Builder::new()
            .optional("controller", "Controller", contacts.controller.clone())
            .required(
                "dpo_contact",
                "Data protection officer or other contact point (Art. 33(3)(b))",
                contacts.dpo_contact.clone(),
            )
            .required(
                "nature",
                "Nature of the breach (Art. 33(3)(a))",
                summary.clone(),
            )
            .optional("kinds", "Type of breach", list(&facts.kinds))
            .optional(
                "occurred_at",
                "Breach occurred",
                facts.occurred_at.map(time),
            )
            .required(
                "detected_at",
                "Breach detected",
                Some(time(facts.detected_at)),
            )
            .required(
                "became_aware_at",
                "Controller became aware",
                Some(time(facts.became_aware_at)),
            )
            .required(
                "data_categories",
                "Categories of personal data concerned",
                categories.clone(),
            )
            .required(
                "affected",
                "Approximate number of data subjects concerned",
                affected.clone(),
            )
            .required(
                "records",
                "Approximate number of personal-data records concerned",
                facts.records.map(|n| n.to_string()),
            )
            .required(
                "consequences",
                "Likely consequences (Art. 33(3)(c))",
                text.consequences.clone(),
            )
            .required(
                "measures",
                "Measures taken or proposed, including mitigation (Art. 33(3)(d))",
                text.measures.clone(),
            );
        let b = if late {
            b.required(
                "delay_reason",
                "Reasons for the delay (Art. 33(1))",
                text.delay_reason.clone(),
            )
        } else {
            b
        };
        b.build(
            ClockKind::GdprAuthority,
            "Notification of a personal data breach to the supervisory authority",
            incident,
        )
    };
    let subjects = Builder::new()
        .required("nature", "What happened", summary.clone())
        .optional(
            "data_categories",
            "What information about you was involved",
            categories.clone(),
        )
        .required(
            "consequences",
            "What this may mean for you (Art. 33(3)(c))",
            text.consequences.clone(),
        )
        .required(
            "measures",
            "What we are doing about it (Art. 33(3)(d))",
            text.measures.clone(),
        )
        .optional(
            "advice",
            "What you can do to protect yourself",
            text.advice.clone(),
        )
        .required(
            "dpo_contact",
            "Who to contact (Art. 33(3)(b))",
            contacts.dpo_contact.clone(),
        )
        .build(
            ClockKind::GdprSubjects,
            "Notice to the people affected by a personal data breach",
            incident,
        );
    let individuals = Builder::new()
        .required(
            "what_happened",
            "What happened (§164.404(c)(1)(A))",
            summary.clone(),
        )
        .required(
            "occurred_at",
            "Date of the breach",
            facts.occurred_at.map(time),
        )
        .required(
            "detected_at",
            "Date of discovery",
            Some(time(facts.detected_at)),
        )
        .required(
            "phi_types",
            "Types of unsecured protected health information involved (§164.404(c)(1)(B))",
            categories.clone(),
        )
        .required(
            "advice",
            "Steps you should take to protect yourself (§164.404(c)(1)(C))",
            text.advice.clone(),
        )
        .required(
            "measures",
            "What we are doing to investigate, mitigate harm and protect against further breaches (§164.404(c)(1)(D))",
            text.measures.clone(),
        )
        .required(
            "individual_contact",
            "How to contact us: toll-free number, e-mail, web site or postal address (§164.404(c)(1)(E))",
            contacts.individual_contact.clone(),
        )
        .optional("controller", "Covered entity", contacts.controller.clone())
        .build(
            ClockKind::HipaaIndividuals,
            "Notice to individuals of a breach of unsecured protected health information",
            incident,
        );
    let states = (!facts.affected_by_state.is_empty()).then(|| {
        facts
            .affected_by_state
            .iter()
            .map(|(state, n)| format!("{state}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let hhs = Builder::new()
        .required(
            "controller",
            "Name of covered entity",
            contacts.controller.clone(),
        )
        .required("dpo_contact", "Contact", contacts.dpo_contact.clone())
        .required(
            "occurred_at",
            "Breach start date",
            facts.occurred_at.map(time),
        )
        .required(
            "detected_at",
            "Date of discovery",
            Some(time(facts.detected_at)),
        )
        .required(
            "affected",
            "Approximate number of individuals affected",
            affected,
        )
        .required(
            "breach_type",
            "Type of breach",
            facts.breach_type.clone().map(|t| t.replace('_', " ")),
        )
        .required(
            "phi_types",
            "Type of protected health information",
            categories,
        )
        .required("nature", "Brief description of the breach", summary)
        .required(
            "measures",
            "Actions taken in response",
            text.measures.clone(),
        )
        .optional("affected_by_state", "Residents affected per State", states)
        .build(
            ClockKind::HipaaHhs,
            "Breach report data for the Secretary of HHS (§164.408)",
            incident,
        );
    vec![authority, subjects, individuals, hhs]
}

/// A draft as text an officer can paste: every field on its own line, a missing one marked.
pub fn render(draft: &Draft, incident_id: &str) -> String {
    let mut out = format!("{}\n{}\n", draft.title, "=".repeat(draft.title.len()));
    out.push_str(&format!("Basis: {}. Incident: {incident_id}.", draft.basis));
    if let Some(due) = draft.due_at {
        out.push_str(&format!(" Due: {}.", time(due)));
    }
    out.push('\n');
    if !draft.missing.is_empty() {
        out.push_str(&format!(
            "NOT READY — missing: {}.\n",
            draft.missing.join(", ")
        ));
    }
    out.push('\n');
    for field in &draft.fields {
        let value = match (&field.value, field.required) {
            (Some(value), _) => value.clone(),
            (None, true) => format!("[MISSING: {}]", field.name),
            (None, false) => "[not recorded]".to_owned(),
        };
        out.push_str(&format!(
            "{}:\n  {}\n",
            field.label,
            value.replace('\n', "\n  ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeDelta, TimeZone, Utc};

    use super::*;
    use crate::ids::IncidentId;
    use crate::incidents::clocks::deadlines;
    use crate::incidents::register::{Facts, IncidentStatus, Narrative};

    fn incident(risk: Option<&str>, now_after_aware: TimeDelta) -> Incident {
        let aware = Utc.with_ymd_and_hms(2026, 5, 4, 9, 0, 0).unwrap();
        let facts = Facts {
            kinds: vec!["confidentiality".into()],
            data_categories: vec!["contact_data".into()],
            source: "audit_review".into(),
            detected_at: aware,
            became_aware_at: aware,
            risk: risk.map(str::to_owned),
            subject_notice_exemption: None,
            phi_involved: Some(true),
            phi_secured: false,
            affected: Some(12),
            affected_by_state: BTreeMap::new(),
            states_incomplete: false,
            authority_notified_at: None,
            subjects_notified_at: None,
            individuals_notified_at: None,
            hhs_notified_at: None,
            media_notified_at: None,
            occurred_at: None,
            records: None,
            breach_type: None,
            scopes: Vec::new(),
            scoped_subjects: 12,
            subject_notices: Vec::new(),
            controllers_notified_at: None,
            alerts: Vec::new(),
        };
        Incident {
            id: IncidentId::generate().unwrap(),
            status: IncidentStatus::Open,
            deadlines: deadlines(&facts.clock_facts(), aware + now_after_aware),
            facts,
            narrative: Narrative {
                summary: "A leaked API key read contact data.".into(),
                measures: Some("The key was revoked.".into()),
                ..Narrative::default()
            },
            created_at: aware,
            updated_at: aware,
        }
    }

    #[test]
    fn missing_facts_are_listed_never_invented() {
        let drafts = drafts(
            &incident(Some("high"), TimeDelta::hours(1)),
            &Contacts::default(),
        );
        let authority = &drafts[0];
        assert_eq!(authority.kind, ClockKind::GdprAuthority);
        assert_eq!(
            authority.missing,
            vec!["dpo_contact", "records", "consequences"]
        );
        assert_eq!(authority.clock_status, Some(ClockStatus::Pending));
        let text = render(authority, "inc_x");
        assert!(text.contains("NOT READY — missing: dpo_contact, records, consequences."));
        assert!(text.contains("[MISSING: records]"));
        assert!(text.contains("The key was revoked."));
        let individuals = &drafts[2];
        assert_eq!(
            individuals.missing,
            vec!["occurred_at", "advice", "individual_contact"]
        );
        assert_eq!(
            drafts[3].missing,
            vec!["controller", "dpo_contact", "occurred_at", "breach_type"]
        );
    }

    #[test]
    fn a_complete_record_makes_a_ready_draft_and_lateness_asks_for_its_reason() {
        let contacts = Contacts {
            controller: Some("Example Clinic".into()),
            dpo_contact: Some("dpo@example.com".into()),
            individual_contact: Some("0800 123456".into()),
        };
        let mut on_time = incident(Some("high"), TimeDelta::hours(1));
        on_time.facts.records = Some(40);
        on_time.narrative.consequences = Some("Unwanted contact.".into());
        let ready = drafts(&on_time, &contacts);
        assert!(ready[0].missing.is_empty(), "{:?}", ready[0].missing);
        assert!(!render(&ready[0], "inc_x").contains("NOT READY"));
        assert!(ready[1].missing.is_empty());
        // Past 72 hours without telling the authority: the reasons for the delay are required.
        let mut late = incident(Some("high"), TimeDelta::hours(80));
        late.facts.records = Some(40);
        late.narrative.consequences = Some("Unwanted contact.".into());
        assert_eq!(drafts(&late, &contacts)[0].missing, vec!["delay_reason"]);
    }
}
