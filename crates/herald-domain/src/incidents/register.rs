//! The incident register (GDPR Art. 33(5): document every personal-data breach, its facts,
//! effects and the remedial action; HIPAA §164.308(a)(6)(ii): identify, respond, mitigate and
//! document security incidents). States `open → assessed → notified → closed`, every change
//! audited; free text sealed under the system key; the clocks of `clocks.rs` computed on read.

use std::collections::BTreeMap;
use std::sync::Arc;

use herald_crypto::Binding;
use serde::{Deserialize, Serialize};

use super::clocks::{ClockFacts, ClockStatus, Deadline, Risk, deadlines};
use super::scope::ScopeRecord;
use crate::audit::{
    Action, Audit, AuditEvent, AuditRecord, Detail, Details, Initiator, Outcome, Target,
};
use crate::clock::{Clock, Timestamp};
use crate::ids::IncidentId;
use crate::keys::{KeyError, Keyring};
use crate::store::{IncidentRow, PageRequest, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Assessed,
    Notified,
    Closed,
}

impl IncidentStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(Self::Open),
            "assessed" => Some(Self::Assessed),
            "notified" => Some(Self::Notified),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Assessed => "assessed",
            Self::Notified => "notified",
            Self::Closed => "closed",
        }
    }
}

/// Which security property the incident hit (the ENISA/EDPB breach types).
pub const KINDS: [&str; 3] = ["confidentiality", "integrity", "availability"];
/// The HHS breach portal's types of breach (45 CFR §164.408 reports).
pub const BREACH_TYPES: [&str; 6] = [
    "hacking_it_incident",
    "unauthorized_access_disclosure",
    "theft",
    "loss",
    "improper_disposal",
    "other",
];
/// Art. 34(3) grounds for not telling the people affected.
pub const EXEMPTIONS: [&str; 3] = [
    // (a) the data was unintelligible to anyone not authorised (encrypted, keys not compromised)
    "encrypted_keys_uncompromised",
    // (b) later measures ensure the high risk is no longer likely to materialise
    "risk_no_longer_likely",
    // (c) individual notice would take disproportionate effort: a public communication instead
    "public_communication",
];

/// The facts, stored as JSON: codes, counts and times only (no personal data, no free text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub kinds: Vec<String>,
    pub data_categories: Vec<String>,
    pub source: String,
    pub detected_at: Timestamp,
    pub became_aware_at: Timestamp,
    pub risk: Option<String>,
    pub subject_notice_exemption: Option<String>,
    pub phi_involved: Option<bool>,
    pub phi_secured: bool,
    pub affected: Option<u64>,
    pub affected_by_state: BTreeMap<String, u64>,
    pub states_incomplete: bool,
    pub authority_notified_at: Option<Timestamp>,
    pub subjects_notified_at: Option<Timestamp>,
    pub individuals_notified_at: Option<Timestamp>,
    pub hhs_notified_at: Option<Timestamp>,
    pub media_notified_at: Option<Timestamp>,
    /// When the breach itself happened, if known (HIPAA notices give it beside the discovery).
    #[serde(default)]
    pub occurred_at: Option<Timestamp>,
    /// Approximate number of personal-data records concerned (GDPR Art. 33(3)(a)).
    #[serde(default)]
    pub records: Option<u64>,
    /// The HHS breach report's type of breach (see [`BREACH_TYPES`]).
    #[serde(default)]
    pub breach_type: Option<String>,
    /// The scopes computed from the audit trail (`POST …/scope`), oldest first.
    #[serde(default)]
    pub scopes: Vec<ScopeRecord>,
    /// Distinct subjects the scopes found (the union): `affected` is never fewer.
    #[serde(default)]
    pub scoped_subjects: u64,
    /// Notices sent to the people affected through Herald (`POST …/notify-subjects`).
    #[serde(default)]
    pub subject_notices: Vec<NoticeRun>,
    /// When the integrations whose subjects are affected were told (`notify-integrations`, or
    /// recorded when told another way).
    #[serde(default)]
    pub controllers_notified_at: Option<Timestamp>,
    /// Deadline reports already made (`gdpr_authority:approaching`, …): each is made once.
    #[serde(default)]
    pub alerts: Vec<String>,
}

impl Facts {
    /// What the clocks are computed from.
    pub fn clock_facts(&self) -> ClockFacts {
        let facts = self;
        ClockFacts {
            detected_at: Some(facts.detected_at),
            became_aware_at: Some(facts.became_aware_at),
            risk: facts.risk.as_deref().and_then(Risk::parse),
            subject_notice_exempt: facts.subject_notice_exemption.is_some(),
            phi_involved: facts.phi_involved,
            phi_secured: facts.phi_secured,
            affected: facts.affected,
            affected_by_state: facts.affected_by_state.clone(),
            states_incomplete: facts.states_incomplete,
            authority_notified_at: facts.authority_notified_at,
            subjects_notified_at: facts.subjects_notified_at,
            individuals_notified_at: facts.individuals_notified_at,
            hhs_notified_at: facts.hhs_notified_at,
            media_notified_at: facts.media_notified_at,
            scoped_subjects: (!facts.scopes.is_empty()).then_some(facts.scoped_subjects),
            controllers_notified_at: facts.controllers_notified_at,
        }
    }
}

/// One run of notices to the people affected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeRun {
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub purpose: String,
    pub template: String,
    pub language: String,
    /// Accepted for delivery.
    pub sent: u64,
    /// Sent an earlier run already.
    pub already_notified: u64,
    /// Not sent, by refusal code (`subject_erased`, `consent_withdrawn`, …).
    pub skipped: BTreeMap<String, u64>,
}

/// The free text, sealed under the system key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Narrative {
    pub summary: String,
    pub assessment: Option<String>,
    pub consequences: Option<String>,
    pub measures: Option<String>,
    /// Why the breach is unlikely to result in a risk (required with `risk = unlikely`).
    pub unlikely_reason: Option<String>,
    /// Why the authority was told after 72 hours (required then, Art. 33(1)).
    pub delay_reason: Option<String>,
    /// What the people affected should do to protect themselves (HIPAA §164.404(c)(1)(C)).
    #[serde(default)]
    pub advice: Option<String>,
}

/// An incident as read: facts, text, and the clocks at the time of reading.
#[derive(Debug, Clone)]
pub struct Incident {
    pub id: IncidentId,
    pub status: IncidentStatus,
    pub facts: Facts,
    pub narrative: Narrative,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deadlines: Vec<Deadline>,
}

impl Incident {
    pub fn overdue(&self) -> bool {
        self.deadlines
            .iter()
            .any(|d| d.status == ClockStatus::Overdue)
    }
}

#[derive(Debug, Clone)]
pub struct NewIncident {
    pub summary: String,
    pub detected_at: Timestamp,
    pub became_aware_at: Timestamp,
    pub kinds: Vec<String>,
    pub data_categories: Vec<String>,
    pub source: String,
}

/// A change: only what is given changes.
#[derive(Debug, Clone, Default)]
pub struct IncidentChange {
    pub status: Option<String>,
    pub risk: Option<String>,
    pub subject_notice_exemption: Option<String>,
    pub phi_involved: Option<bool>,
    pub phi_secured: Option<bool>,
    pub affected: Option<u64>,
    pub affected_by_state: Option<BTreeMap<String, u64>>,
    pub states_incomplete: Option<bool>,
    pub data_categories: Option<Vec<String>>,
    pub assessment: Option<String>,
    pub consequences: Option<String>,
    pub measures: Option<String>,
    pub unlikely_reason: Option<String>,
    pub delay_reason: Option<String>,
    pub advice: Option<String>,
    pub occurred_at: Option<Timestamp>,
    pub records: Option<u64>,
    pub breach_type: Option<String>,
    pub authority_notified_at: Option<Timestamp>,
    pub subjects_notified_at: Option<Timestamp>,
    pub individuals_notified_at: Option<Timestamp>,
    pub hhs_notified_at: Option<Timestamp>,
    pub media_notified_at: Option<Timestamp>,
    pub controllers_notified_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("{field}: {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    #[error("no such incident")]
    NotFound,
    #[error("an incident cannot go from {from} to {to}: {why}")]
    InvalidTransition {
        from: &'static str,
        to: &'static str,
        why: &'static str,
    },
    #[error("the authority was told more than 72 hours after awareness: delay_reason is required")]
    DelayReasonRequired,
    #[error("the incident changed meanwhile")]
    Changed,
    #[error("breach notices go out under a purpose whose lawful basis is legal_obligation")]
    NotLegalObligation,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Audit(crate::audit::AuditError),
}

fn invalid(field: &'static str, rule: &'static str) -> IncidentError {
    IncidentError::Invalid { field, rule }
}

const MAX_TEXT: usize = 4000;

fn identifier(text: &str) -> bool {
    (1..=40).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_text(field: &'static str, text: &str) -> Result<(), IncidentError> {
    if text.trim().is_empty() || text.chars().count() > MAX_TEXT {
        return Err(invalid(field, "must hold 1 to 4000 characters"));
    }
    Ok(())
}

fn check_categories(categories: &[String]) -> Result<(), IncidentError> {
    if categories.len() > 20 || !categories.iter().all(|c| identifier(c)) {
        return Err(invalid(
            "data_categories",
            "at most 20 identifiers of lowercase letters, digits and _",
        ));
    }
    Ok(())
}

fn binding(id: &IncidentId) -> Binding<'_> {
    Binding::new("incidents", "text_ciphertext", id.as_str())
}

/// The register. Cheap to clone.
#[derive(Clone)]
pub struct Incidents {
    pub(super) store: Arc<dyn Store>,
    pub(super) keyring: Arc<Keyring>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) audit: Audit,
}

impl std::fmt::Debug for Incidents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Incidents")
    }
}

impl Incidents {
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        audit: Audit,
    ) -> Self {
        Self {
            store,
            keyring,
            clock,
            audit,
        }
    }

    pub(super) fn read(&self, row: IncidentRow) -> Result<(Incident, i64), IncidentError> {
        let corrupt = |what: &str| IncidentError::Store(StoreError::Corrupt(what.into()));
        let facts: Facts =
            serde_json::from_str(&row.facts).map_err(|_| corrupt("incident facts"))?;
        let text = self
            .keyring
            .open_system(&binding(&row.id), &row.text_ciphertext)?;
        let narrative: Narrative =
            serde_json::from_slice(&text).map_err(|_| corrupt("incident text"))?;
        let status = IncidentStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
        let deadlines = deadlines(&facts.clock_facts(), self.clock.now());
        Ok((
            Incident {
                id: row.id,
                status,
                facts,
                narrative,
                created_at: row.created_at,
                updated_at: row.updated_at,
                deadlines,
            },
            row.version,
        ))
    }

    /// The incident and its version, or `NotFound`.
    pub(super) async fn load(&self, id: &IncidentId) -> Result<(Incident, i64), IncidentError> {
        let row = self
            .store
            .incident(id)
            .await?
            .ok_or(IncidentError::NotFound)?;
        self.read(row)
    }

    pub(super) fn row(
        &self,
        incident: &Incident,
        version: i64,
        now: Timestamp,
    ) -> Result<IncidentRow, IncidentError> {
        let facts = serde_json::to_string(&incident.facts)
            .map_err(|_| IncidentError::Store(StoreError::Corrupt("incident facts".into())))?;
        let text = serde_json::to_vec(&incident.narrative)
            .map_err(|_| IncidentError::Store(StoreError::Corrupt("incident text".into())))?;
        Ok(IncidentRow {
            id: incident.id.clone(),
            status: incident.status.as_str().to_owned(),
            facts,
            text_ciphertext: self.keyring.seal_system(&binding(&incident.id), &text)?,
            created_at: incident.created_at,
            updated_at: now,
            version,
        })
    }

    /// Opens an incident (`open`).
    pub async fn open(
        &self,
        new: NewIncident,
        initiator: &Initiator,
    ) -> Result<Incident, IncidentError> {
        let now = self.clock.now();
        check_text("summary", &new.summary)?;
        if new.kinds.is_empty()
            || new.kinds.len() > KINDS.len()
            || !new.kinds.iter().all(|k| KINDS.contains(&k.as_str()))
        {
            return Err(invalid(
                "kinds",
                "one or more of confidentiality, integrity, availability",
            ));
        }
        check_categories(&new.data_categories)?;
        if !identifier(&new.source) {
            return Err(invalid(
                "source",
                "an identifier of lowercase letters, digits and _ (e.g. audit_review, report)",
            ));
        }
        if new.detected_at > now || new.became_aware_at > now {
            return Err(invalid("became_aware_at", "must not be in the future"));
        }
        if new.became_aware_at < new.detected_at {
            return Err(invalid(
                "became_aware_at",
                "must not be before detected_at (awareness follows detection)",
            ));
        }
        let mut kinds = new.kinds.clone();
        kinds.sort();
        kinds.dedup();
        let incident = Incident {
            id: IncidentId::generate_ordered(now)
                .map_err(|e| IncidentError::Keys(KeyError::Crypto(e)))?,
            status: IncidentStatus::Open,
            facts: Facts {
                kinds,
                data_categories: new.data_categories,
                source: new.source,
                detected_at: new.detected_at,
                became_aware_at: new.became_aware_at,
                risk: None,
                subject_notice_exemption: None,
                phi_involved: None,
                phi_secured: false,
                affected: None,
                affected_by_state: BTreeMap::new(),
                states_incomplete: true,
                authority_notified_at: None,
                subjects_notified_at: None,
                individuals_notified_at: None,
                hhs_notified_at: None,
                media_notified_at: None,
                occurred_at: None,
                records: None,
                breach_type: None,
                scopes: Vec::new(),
                scoped_subjects: 0,
                subject_notices: Vec::new(),
                controllers_notified_at: None,
                alerts: Vec::new(),
            },
            narrative: Narrative {
                summary: new.summary,
                ..Narrative::default()
            },
            created_at: now,
            updated_at: now,
            deadlines: Vec::new(),
        };
        let row = self.row(&incident, 1, now)?;
        let event = AuditEvent::new(initiator, Action::IncidentOpened, Outcome::Success)
            .target(Target::Incident(incident.id.clone()))
            .details(
                Details::new()
                    .with("detected_at", Detail::Time(incident.facts.detected_at))
                    .with(
                        "became_aware_at",
                        Detail::Time(incident.facts.became_aware_at),
                    ),
            );
        self.store
            .insert_incident(&row, &AuditRecord::new(&event, now))
            .await?;
        let (incident, _) = self.read(row)?;
        Ok(incident)
    }

    pub async fn get(&self, id: &IncidentId) -> Result<Incident, IncidentError> {
        let row = self
            .store
            .incident(id)
            .await?
            .ok_or(IncidentError::NotFound)?;
        Ok(self.read(row)?.0)
    }

    /// Incidents in the order they were opened; `open`: not closed; `overdue`: a clock is
    /// past its deadline. Returns up to `page.limit + 1` (the extra one says there is more).
    pub async fn list(
        &self,
        filter: Option<&str>,
        page: &PageRequest,
    ) -> Result<Vec<Incident>, IncidentError> {
        let wanted = page.limit as usize + 1;
        let mut out = Vec::new();
        let mut cursor = page.after.clone();
        loop {
            let rows = self
                .store
                .incidents(&PageRequest {
                    after: cursor.clone(),
                    limit: 200,
                })
                .await?;
            let last = rows.last().map(|r| r.id.as_str().to_owned());
            let fetched = rows.len();
            for row in rows {
                let (incident, _) = self.read(row)?;
                let keep = match filter {
                    None => true,
                    Some("open") => incident.status != IncidentStatus::Closed,
                    Some(_) => incident.overdue(),
                };
                if keep {
                    out.push(incident);
                    if out.len() == wanted {
                        return Ok(out);
                    }
                }
            }
            if fetched < 200 {
                return Ok(out);
            }
            cursor = last;
        }
    }

    /// Applies a change (facts, text, notifications, status) and audits it. A late authority
    /// notification needs its reason; a status change must follow `open → assessed →
    /// notified → closed` with what each step requires.
    pub async fn change(
        &self,
        id: &IncidentId,
        change: IncidentChange,
        initiator: &Initiator,
    ) -> Result<Incident, IncidentError> {
        let now = self.clock.now();
        let (mut incident, version) = self.load(id).await?;
        let before = incident.status;
        let mut fields: Vec<&'static str> = Vec::new();
        apply(&mut incident, change, now, &mut fields)?;
        let facts = incident.facts.clock_facts();
        // Art. 33(1): "where the notification … is not made within 72 hours, it shall be
        // accompanied by reasons for the delay".
        if let Some(told) = incident.facts.authority_notified_at
            && told > incident.facts.became_aware_at + super::clocks::GDPR_AUTHORITY_WINDOW
            && incident.narrative.delay_reason.is_none()
        {
            return Err(IncidentError::DelayReasonRequired);
        }
        if incident.facts.risk.as_deref() == Some("unlikely")
            && incident.narrative.unlikely_reason.is_none()
        {
            return Err(invalid(
                "unlikely_reason",
                "required when risk is unlikely (Art. 33(5): the decision is documented)",
            ));
        }
        check_transition(before, incident.status, &facts, now)?;
        let next = self.row(&incident, version + 1, now)?;
        let event = AuditEvent::new(initiator, Action::IncidentUpdated, Outcome::Success)
            .target(Target::Incident(incident.id.clone()))
            .details(
                Details::new()
                    .with("from", before.as_str())
                    .with("to", incident.status.as_str())
                    .with("fields", fields),
            );
        if !self
            .store
            .update_incident(&next, version, &AuditRecord::new(&event, now))
            .await?
        {
            return Err(IncidentError::Changed);
        }
        Ok(self.read(next)?.0)
    }
}

fn time_field(
    field: &'static str,
    at: Timestamp,
    facts: &Facts,
    now: Timestamp,
) -> Result<Timestamp, IncidentError> {
    if at > now {
        return Err(invalid(field, "must not be in the future"));
    }
    if at < facts.detected_at {
        return Err(invalid(field, "must not be before detected_at"));
    }
    Ok(at)
}

fn apply(
    incident: &mut Incident,
    change: IncidentChange,
    now: Timestamp,
    fields: &mut Vec<&'static str>,
) -> Result<(), IncidentError> {
    let facts = &mut incident.facts;
    if let Some(risk) = change.risk {
        if Risk::parse(&risk).is_none() {
            return Err(invalid("risk", "unlikely, risk or high"));
        }
        facts.risk = Some(risk);
        fields.push("risk");
    }
    if let Some(ground) = change.subject_notice_exemption {
        if !EXEMPTIONS.contains(&ground.as_str()) {
            return Err(invalid(
                "subject_notice_exemption",
                "encrypted_keys_uncompromised, risk_no_longer_likely or public_communication",
            ));
        }
        facts.subject_notice_exemption = Some(ground);
        fields.push("subject_notice_exemption");
    }
    if let Some(v) = change.phi_involved {
        facts.phi_involved = Some(v);
        fields.push("phi_involved");
    }
    if let Some(v) = change.phi_secured {
        facts.phi_secured = v;
        fields.push("phi_secured");
    }
    if let Some(v) = change.affected {
        facts.affected = Some(v);
        fields.push("affected");
    }
    if let Some(v) = change.records {
        facts.records = Some(v);
        fields.push("records");
    }
    if let Some(kind) = change.breach_type {
        if !BREACH_TYPES.contains(&kind.as_str()) {
            return Err(invalid(
                "breach_type",
                "hacking_it_incident, unauthorized_access_disclosure, theft, loss, improper_disposal or other",
            ));
        }
        facts.breach_type = Some(kind);
        fields.push("breach_type");
    }
    if let Some(at) = change.occurred_at {
        if at > now {
            return Err(invalid("occurred_at", "must not be in the future"));
        }
        if at > facts.detected_at {
            return Err(invalid("occurred_at", "must not be after detected_at"));
        }
        facts.occurred_at = Some(at);
        fields.push("occurred_at");
    }
    if let Some(states) = change.affected_by_state {
        if states.len() > 100
            || !states
                .keys()
                .all(|s| (2..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(invalid(
                "affected_by_state",
                "at most 100 State or jurisdiction codes (US postal: CA, NY, PR …)",
            ));
        }
        facts.affected_by_state = states;
        fields.push("affected_by_state");
    }
    if let Some(v) = change.states_incomplete {
        facts.states_incomplete = v;
        fields.push("states_incomplete");
    }
    if let Some(categories) = change.data_categories {
        check_categories(&categories)?;
        facts.data_categories = categories;
        fields.push("data_categories");
    }
    for (field, value, slot) in [
        (
            "authority_notified_at",
            change.authority_notified_at,
            &mut facts.authority_notified_at,
        ),
        (
            "subjects_notified_at",
            change.subjects_notified_at,
            &mut facts.subjects_notified_at,
        ),
        (
            "individuals_notified_at",
            change.individuals_notified_at,
            &mut facts.individuals_notified_at,
        ),
        (
            "hhs_notified_at",
            change.hhs_notified_at,
            &mut facts.hhs_notified_at,
        ),
        (
            "media_notified_at",
            change.media_notified_at,
            &mut facts.media_notified_at,
        ),
        (
            "controllers_notified_at",
            change.controllers_notified_at,
            &mut facts.controllers_notified_at,
        ),
    ] {
        if let Some(at) = value {
            *slot = Some(at);
            fields.push(field);
        }
    }
    let snapshot = facts.clone();
    for (field, value) in [
        ("authority_notified_at", snapshot.authority_notified_at),
        ("subjects_notified_at", snapshot.subjects_notified_at),
        ("individuals_notified_at", snapshot.individuals_notified_at),
        ("hhs_notified_at", snapshot.hhs_notified_at),
        ("media_notified_at", snapshot.media_notified_at),
        ("controllers_notified_at", snapshot.controllers_notified_at),
    ] {
        if let Some(at) = value
            && fields.contains(&field)
        {
            time_field(field, at, &snapshot, now)?;
        }
    }
    let narrative = &mut incident.narrative;
    for (field, value, slot) in [
        ("assessment", change.assessment, &mut narrative.assessment),
        (
            "consequences",
            change.consequences,
            &mut narrative.consequences,
        ),
        ("measures", change.measures, &mut narrative.measures),
        (
            "unlikely_reason",
            change.unlikely_reason,
            &mut narrative.unlikely_reason,
        ),
        (
            "delay_reason",
            change.delay_reason,
            &mut narrative.delay_reason,
        ),
        ("advice", change.advice, &mut narrative.advice),
    ] {
        if let Some(text) = value {
            check_text(field, &text)?;
            *slot = Some(text);
            fields.push(field);
        }
    }
    if let Some(status) = change.status {
        incident.status = IncidentStatus::parse(&status)
            .ok_or_else(|| invalid("status", "open, assessed, notified or closed"))?;
        fields.push("status");
    }
    if fields.is_empty() {
        return Err(invalid("body", "names nothing to change"));
    }
    Ok(())
}

/// Whether `from → to` is allowed with these facts.
fn check_transition(
    from: IncidentStatus,
    to: IncidentStatus,
    facts: &ClockFacts,
    now: Timestamp,
) -> Result<(), IncidentError> {
    use IncidentStatus::{Assessed, Closed, Notified, Open};
    let refuse = |why| IncidentError::InvalidTransition {
        from: from.as_str(),
        to: to.as_str(),
        why,
    };
    if from == to {
        return Ok(());
    }
    let clocks = deadlines(facts, now);
    let nothing_pending = clocks.iter().all(|d| {
        matches!(
            d.status,
            ClockStatus::NotApplicable | ClockStatus::Met | ClockStatus::MetLate
        )
    });
    match (from, to) {
        (Open, Assessed) => {
            if facts.risk.is_none() {
                return Err(refuse(
                    "the assessment needs a risk (unlikely, risk or high)",
                ));
            }
        }
        (Assessed, Notified) => {
            let any_notice = facts.authority_notified_at.is_some()
                || facts.subjects_notified_at.is_some()
                || facts.individuals_notified_at.is_some()
                || facts.hhs_notified_at.is_some()
                || facts.media_notified_at.is_some()
                || facts.controllers_notified_at.is_some();
            if !any_notice {
                return Err(refuse("no notification is recorded"));
            }
        }
        (Assessed | Notified, Closed) => {
            if !nothing_pending {
                return Err(refuse(
                    "a notification clock is still running, overdue or missing facts",
                ));
            }
        }
        _ => return Err(refuse("states go open → assessed → notified → closed")),
    }
    Ok(())
}
