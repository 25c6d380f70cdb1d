//! `/v1/incidents`: the incident register with its notification clocks (GDPR Art. 33/34,
//! HIPAA §164.404–408). Thin: the register validates, decides transitions and computes clocks.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use herald_domain::clock::Timestamp;
use herald_domain::ids::IncidentId;
use herald_domain::incidents::{Deadline, Incident, IncidentChange, NewIncident};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Page, overfetch};
use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{
    ApiJson, Authorized, IdPath, IncidentsRead, IncidentsWrite, StatusPageQuery,
};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::{rfc3339, rfc3339_opt};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_incident, list_incidents))
        .routes(routes!(get_incident, change_incident))
}

pub(super) fn invalid(field: &str, rule: &'static str) -> Problem {
    Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
}

pub(super) fn time(field: &str, text: &str) -> Result<Timestamp, Problem> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid(field, "an RFC 3339 time"))
}

fn opt_time(field: &str, text: Option<&String>) -> Result<Option<Timestamp>, Problem> {
    text.map(|t| time(field, t)).transpose()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenIncident {
    /// What happened, in a few sentences (stored encrypted; at most 4000 characters).
    summary: String,
    /// When the incident was discovered (HIPAA's discovery date), RFC 3339.
    #[schema(format = DateTime)]
    detected_at: String,
    /// When the controller became aware that personal data was breached (GDPR's 72 hours run
    /// from here), RFC 3339; not before `detected_at`.
    #[schema(format = DateTime)]
    became_aware_at: String,
    /// confidentiality, integrity and/or availability.
    kinds: Vec<String>,
    /// The categories of personal data concerned (identifiers: contact_data, message_content,
    /// health …).
    #[serde(default)]
    data_categories: Vec<String>,
    /// How it was found (an identifier: audit_review, report, alert …).
    source: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeIncident {
    /// open, assessed, notified or closed (one step at a time).
    status: Option<String>,
    /// unlikely, risk or high (GDPR Art. 33/34).
    risk: Option<String>,
    /// An Art. 34(3) ground for not telling the people affected: encrypted_keys_uncompromised,
    /// risk_no_longer_likely or public_communication.
    subject_notice_exemption: Option<String>,
    /// Protected health information is involved (HIPAA applies).
    phi_involved: Option<bool>,
    /// The PHI was secured (encrypted per HHS guidance): not a breach of unsecured PHI.
    phi_secured: Option<bool>,
    /// People affected (counted or estimated).
    affected: Option<u64>,
    /// Affected residents per US State or jurisdiction (postal codes).
    affected_by_state: Option<BTreeMap<String, u64>>,
    /// Whether some affected people's State is still unknown.
    states_incomplete: Option<bool>,
    data_categories: Option<Vec<String>>,
    assessment: Option<String>,
    consequences: Option<String>,
    measures: Option<String>,
    /// Required with `risk: unlikely`.
    unlikely_reason: Option<String>,
    /// Required when the authority was told more than 72 hours after awareness.
    delay_reason: Option<String>,
    /// What the people affected should do to protect themselves (HIPAA §164.404(c)(1)(C)).
    advice: Option<String>,
    /// When the breach itself happened, if known; not after `detected_at`.
    #[schema(format = DateTime)]
    occurred_at: Option<String>,
    /// Approximate number of personal-data records concerned (GDPR Art. 33(3)(a)).
    records: Option<u64>,
    /// The HHS report's type of breach: hacking_it_incident, unauthorized_access_disclosure,
    /// theft, loss, improper_disposal or other.
    breach_type: Option<String>,
    #[schema(format = DateTime)]
    authority_notified_at: Option<String>,
    #[schema(format = DateTime)]
    subjects_notified_at: Option<String>,
    #[schema(format = DateTime)]
    individuals_notified_at: Option<String>,
    #[schema(format = DateTime)]
    hhs_notified_at: Option<String>,
    #[schema(format = DateTime)]
    media_notified_at: Option<String>,
    /// When the integrations whose subjects are affected were told another way than
    /// `notify-integrations`.
    #[schema(format = DateTime)]
    controllers_notified_at: Option<String>,
}

/// One notification clock.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClockView {
    /// gdpr_authority, gdpr_subjects, hipaa_individuals, hipaa_hhs, hipaa_media or
    /// controllers.
    clock: &'static str,
    /// The provision it comes from.
    basis: &'static str,
    /// not_applicable, needs_facts, pending, overdue, met or met_late.
    #[schema(value_type = String)]
    status: herald_domain::incidents::ClockStatus,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    due_at: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    done_at: Option<Timestamp>,
    reason: Option<&'static str>,
    /// Facts the clock still needs.
    missing: Vec<&'static str>,
}

fn clock_view(d: Deadline) -> ClockView {
    ClockView {
        clock: d.kind.as_str(),
        basis: d.kind.basis(),
        status: d.status,
        due_at: d.due_at,
        done_at: d.done_at,
        reason: d.reason,
        missing: d.missing,
    }
}

/// An incident with its clocks as of now.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    #[schema(value_type = String, example = "inc_06h2ftkqu3rt85cij90ad2r0kg")]
    id: IncidentId,
    /// open, assessed, notified or closed.
    status: &'static str,
    /// A clock is past its deadline.
    overdue: bool,
    summary: String,
    kinds: Vec<String>,
    data_categories: Vec<String>,
    source: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    detected_at: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    became_aware_at: Timestamp,
    risk: Option<String>,
    subject_notice_exemption: Option<String>,
    phi_involved: Option<bool>,
    phi_secured: bool,
    affected: Option<u64>,
    affected_by_state: BTreeMap<String, u64>,
    states_incomplete: bool,
    assessment: Option<String>,
    consequences: Option<String>,
    measures: Option<String>,
    unlikely_reason: Option<String>,
    delay_reason: Option<String>,
    advice: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    occurred_at: Option<Timestamp>,
    records: Option<u64>,
    breach_type: Option<String>,
    /// Distinct subjects the scopes found (`POST …/scope`); `affected` is never fewer.
    scoped_subjects: u64,
    /// The scopes computed from the audit trail, oldest first.
    scopes: Vec<ScopeView>,
    /// Notices sent to the people affected through Herald, one per call.
    subject_notices: Vec<NoticeRunView>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    authority_notified_at: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    subjects_notified_at: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    individuals_notified_at: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    hhs_notified_at: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    media_notified_at: Option<Timestamp>,
    /// When the integrations whose subjects are affected were told.
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    controllers_notified_at: Option<Timestamp>,
    clocks: Vec<ClockView>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

/// A scope computed from the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScopeView {
    /// credential, integration or route.
    by: String,
    /// The key or OAuth client id, the integration id, or the route template.
    value: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    from: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    to: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    computed_at: Timestamp,
    /// Audit entries in the window that were read.
    entries_scanned: u64,
    /// Subjects this scope found.
    subjects: u64,
    /// Subjects per kind of contact: changed, exported, read, sent (one subject counts once
    /// per kind).
    by_kind: BTreeMap<String, u64>,
}

pub(super) fn scope_view(s: herald_domain::incidents::ScopeRecord) -> ScopeView {
    ScopeView {
        by: s.by,
        value: s.value,
        from: s.from,
        to: s.to,
        computed_at: s.computed_at,
        entries_scanned: s.entries_scanned,
        subjects: s.subjects,
        by_kind: s.by_kind,
    }
}

/// One call of `notify-subjects`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeRunView {
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    started_at: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    finished_at: Timestamp,
    purpose: String,
    template: String,
    language: String,
    /// Notices accepted for delivery.
    sent: u64,
    /// Subjects an earlier call had told already.
    already_notified: u64,
    /// Subjects not told, by refusal code (subject_erased, consent_withdrawn, …): tell them
    /// another way.
    skipped: BTreeMap<String, u64>,
}

pub(super) fn notice_view(n: herald_domain::incidents::NoticeRun) -> NoticeRunView {
    NoticeRunView {
        started_at: n.started_at,
        finished_at: n.finished_at,
        purpose: n.purpose,
        template: n.template,
        language: n.language,
        sent: n.sent,
        already_notified: n.already_notified,
        skipped: n.skipped,
    }
}

pub(super) fn view(i: Incident) -> IncidentView {
    let overdue = i.overdue();
    IncidentView {
        id: i.id,
        status: i.status.as_str(),
        overdue,
        summary: i.narrative.summary,
        kinds: i.facts.kinds,
        data_categories: i.facts.data_categories,
        source: i.facts.source,
        detected_at: i.facts.detected_at,
        became_aware_at: i.facts.became_aware_at,
        risk: i.facts.risk,
        subject_notice_exemption: i.facts.subject_notice_exemption,
        phi_involved: i.facts.phi_involved,
        phi_secured: i.facts.phi_secured,
        affected: i.facts.affected,
        affected_by_state: i.facts.affected_by_state,
        states_incomplete: i.facts.states_incomplete,
        assessment: i.narrative.assessment,
        consequences: i.narrative.consequences,
        measures: i.narrative.measures,
        unlikely_reason: i.narrative.unlikely_reason,
        delay_reason: i.narrative.delay_reason,
        advice: i.narrative.advice,
        occurred_at: i.facts.occurred_at,
        records: i.facts.records,
        breach_type: i.facts.breach_type,
        scoped_subjects: i.facts.scoped_subjects,
        scopes: i.facts.scopes.into_iter().map(scope_view).collect(),
        subject_notices: i
            .facts
            .subject_notices
            .into_iter()
            .map(notice_view)
            .collect(),
        authority_notified_at: i.facts.authority_notified_at,
        subjects_notified_at: i.facts.subjects_notified_at,
        individuals_notified_at: i.facts.individuals_notified_at,
        hhs_notified_at: i.facts.hhs_notified_at,
        media_notified_at: i.facts.media_notified_at,
        controllers_notified_at: i.facts.controllers_notified_at,
        clocks: i.deadlines.into_iter().map(clock_view).collect(),
        created_at: i.created_at,
        updated_at: i.updated_at,
    }
}

/// Open an incident (state `open`); its clocks start from `detected_at` and
/// `became_aware_at`.
#[utoipa::path(post, path = "/v1/incidents", tag = "incidents",
    request_body = OpenIncident,
    security(("bearer" = ["incidents:write"])),
    responses(
        (status = 201, description = "Opened", body = IncidentView),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn open_incident(
    State(state): State<AppState>,
    caller: Authorized<IncidentsWrite>,
    ApiJson(body): ApiJson<OpenIncident>,
) -> Result<(StatusCode, Extension<ActionAudited>, Json<IncidentView>), Problem> {
    let incident = state
        .incidents
        .open(
            NewIncident {
                summary: body.summary,
                detected_at: time("detected_at", &body.detected_at)?,
                became_aware_at: time("became_aware_at", &body.became_aware_at)?,
                kinds: body.kinds,
                data_categories: body.data_categories,
                source: body.source,
            },
            &caller.initiator(),
        )
        .await
        .map_err(errors::incidents)?;
    Ok((
        StatusCode::CREATED,
        Extension(ActionAudited),
        Json(view(incident)),
    ))
}

/// The register, in the order incidents were opened: all, `open` (not closed) or `overdue`
/// (a clock past its deadline).
#[utoipa::path(get, path = "/v1/incidents", tag = "incidents",
    params(("status" = Option<String>, Query, description = "open or overdue"),
           ("limit" = Option<u32>, Query, description = "1–500, default 50"),
           ("after" = Option<String>, Query, description = "cursor")),
    security(("bearer" = ["incidents:read"])),
    responses(
        (status = 200, description = "A page of incidents with their clocks", body = Page<IncidentView>),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_incidents(
    State(state): State<AppState>,
    _caller: Authorized<IncidentsRead>,
    StatusPageQuery(page, status): StatusPageQuery,
) -> Result<Json<Page<IncidentView>>, Problem> {
    if status
        .as_deref()
        .is_some_and(|s| s != "open" && s != "overdue")
    {
        return Err(invalid("status", "open or overdue"));
    }
    let incidents = state
        .incidents
        .list(status.as_deref(), &overfetch(&page))
        .await
        .map_err(errors::incidents)?;
    let items: Vec<IncidentView> = incidents.into_iter().map(view).collect();
    Ok(Json(Page::from_overfetch(
        items,
        page.limit,
        |i: &IncidentView| i.id.to_string(),
    )))
}

/// One incident with its clocks.
#[utoipa::path(get, path = "/v1/incidents/{id}", tag = "incidents",
    params(("id" = String, Path, description = "inc_…")),
    security(("bearer" = ["incidents:read"])),
    responses(
        (status = 200, description = "The incident", body = IncidentView),
        (status = 404, description = "No such incident", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_incident(
    State(state): State<AppState>,
    _caller: Authorized<IncidentsRead>,
    IdPath(id): IdPath<IncidentId>,
) -> Result<Json<IncidentView>, Problem> {
    let incident = state.incidents.get(&id).await.map_err(errors::incidents)?;
    Ok(Json(view(incident)))
}

/// Record the assessment, notifications made, or the next state. Only what is given changes.
#[utoipa::path(patch, path = "/v1/incidents/{id}", tag = "incidents",
    params(("id" = String, Path, description = "inc_…")),
    request_body = ChangeIncident,
    security(("bearer" = ["incidents:write"])),
    responses(
        (status = 200, description = "Changed", body = IncidentView),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such incident", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "invalid_transition, incident_changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "delay_reason_required", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn change_incident(
    State(state): State<AppState>,
    caller: Authorized<IncidentsWrite>,
    IdPath(id): IdPath<IncidentId>,
    ApiJson(body): ApiJson<ChangeIncident>,
) -> Result<(Extension<ActionAudited>, Json<IncidentView>), Problem> {
    let change = IncidentChange {
        authority_notified_at: opt_time(
            "authority_notified_at",
            body.authority_notified_at.as_ref(),
        )?,
        subjects_notified_at: opt_time("subjects_notified_at", body.subjects_notified_at.as_ref())?,
        individuals_notified_at: opt_time(
            "individuals_notified_at",
            body.individuals_notified_at.as_ref(),
        )?,
        hhs_notified_at: opt_time("hhs_notified_at", body.hhs_notified_at.as_ref())?,
        media_notified_at: opt_time("media_notified_at", body.media_notified_at.as_ref())?,
        controllers_notified_at: opt_time(
            "controllers_notified_at",
            body.controllers_notified_at.as_ref(),
        )?,
        status: body.status,
        risk: body.risk,
        subject_notice_exemption: body.subject_notice_exemption,
        phi_involved: body.phi_involved,
        phi_secured: body.phi_secured,
        affected: body.affected,
        affected_by_state: body.affected_by_state,
        states_incomplete: body.states_incomplete,
        data_categories: body.data_categories,
        assessment: body.assessment,
        consequences: body.consequences,
        measures: body.measures,
        unlikely_reason: body.unlikely_reason,
        delay_reason: body.delay_reason,
        advice: body.advice,
        occurred_at: opt_time("occurred_at", body.occurred_at.as_ref())?,
        records: body.records,
        breach_type: body.breach_type,
    };
    let incident = state
        .incidents
        .change(&id, change, &caller.initiator())
        .await
        .map_err(errors::incidents)?;
    Ok((Extension(ActionAudited), Json(view(incident))))
}
