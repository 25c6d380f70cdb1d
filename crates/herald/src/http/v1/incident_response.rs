//! `/v1/incidents/{id}/…`: responding to a breach — who was affected (from the audit
//! trail), the notification drafts, and telling the people affected. Thin: the register
//! computes, decides and audits.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use herald_domain::clock::Timestamp;
use herald_domain::ids::{IncidentId, IntegrationId, MessageId, SubjectId};
use herald_domain::incidents::{
    Draft, MAX_NOTICES_PER_CALL, NoticeRequest, ScopeQuery, Selector, drafts,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Page;
use super::incidents::{NoticeRunView, ScopeView, invalid, notice_view, scope_view, time};
use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{
    ApiJson, Authorized, FormatQuery, IdPath, IncidentsRead, IncidentsWrite, PageQuery,
};
use crate::http::problem::{Problem, ProblemBody};
use crate::http::time::{rfc3339, rfc3339_opt};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(scope_incident))
        .routes(routes!(list_affected))
        .routes(routes!(notification_drafts))
        .routes(routes!(notify_subjects))
        .routes(routes!(notify_integrations))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeRequest {
    /// An API key id (`key_…`) or OAuth client id (`ocl_…`): what that credential did.
    credential: Option<String>,
    /// An integration id: what any of its credentials did.
    integration: Option<String>,
    /// A route template (`/v1/subjects/{id}`): what any authenticated request on it did.
    route: Option<String>,
    /// Start of the window, RFC 3339.
    #[schema(format = DateTime)]
    from: String,
    /// End of the window, RFC 3339; default now.
    #[schema(format = DateTime)]
    to: Option<String>,
}

/// What a scope found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScopeResult {
    scope: ScopeView,
    /// Subjects no earlier scope of this incident had found.
    added: u64,
    /// Distinct subjects all the incident's scopes found.
    scoped_subjects: u64,
    /// The incident's count of people affected afterwards (never fewer than scoped).
    affected: Option<u64>,
}

fn selector(body: &ScopeRequest) -> Result<Selector, Problem> {
    match (&body.credential, &body.integration, &body.route) {
        (Some(id), None, None) => Selector::credential(id).ok_or_else(|| {
            invalid(
                "credential",
                "an API key id (key_…) or OAuth client id (ocl_…)",
            )
        }),
        (None, Some(id), None) => IntegrationId::parse(id)
            .map(Selector::Integration)
            .map_err(|_| invalid("integration", "an integration id (int_…)")),
        (None, None, Some(route)) => Ok(Selector::Route(route.clone())),
        _ => Err(invalid(
            "credential",
            "give exactly one of credential, integration or route",
        )),
    }
}

/// Find who an incident affected: the subjects a credential, an integration or a route read,
/// exported, changed or sent to in a window, from the audit trail. Adds them to the
/// incident's affected set (a union over every scope) and records the scope.
#[utoipa::path(post, path = "/v1/incidents/{id}/scope", tag = "incidents",
    params(("id" = String, Path, description = "inc_…")),
    request_body = ScopeRequest,
    security(("bearer" = ["incidents:write"])),
    responses(
        (status = 200, description = "The scope and the incident's totals", body = ScopeResult),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such incident", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "incident_changed", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn scope_incident(
    State(state): State<AppState>,
    caller: Authorized<IncidentsWrite>,
    IdPath(id): IdPath<IncidentId>,
    ApiJson(body): ApiJson<ScopeRequest>,
) -> Result<(Extension<ActionAudited>, Json<ScopeResult>), Problem> {
    let query = ScopeQuery {
        selector: selector(&body)?,
        from: time("from", &body.from)?,
        to: body.to.as_deref().map(|t| time("to", t)).transpose()?,
    };
    let outcome = state
        .incidents
        .scope(&id, query, &caller.initiator())
        .await
        .map_err(errors::incidents)?;
    Ok((
        Extension(ActionAudited),
        Json(ScopeResult {
            scope: scope_view(outcome.record),
            added: outcome.added,
            scoped_subjects: outcome.incident.facts.scoped_subjects,
            affected: outcome.incident.facts.affected,
        }),
    ))
}

/// A subject an incident affected.
#[derive(Debug, Serialize, ToSchema)]
pub struct AffectedView {
    #[schema(value_type = String, example = "sub_06h2ftkqu3rt85cij90ad2r0kg")]
    subject_id: SubjectId,
    /// How: changed, exported, read and/or sent.
    kinds: Vec<&'static str>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    first_at: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    last_at: Timestamp,
    /// The breach notice Herald sent them, if any.
    #[schema(value_type = Option<String>)]
    notice_message_id: Option<MessageId>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    notice_at: Option<Timestamp>,
}

/// The subjects an incident affected, by id (ids only: who they are stays encrypted).
#[utoipa::path(get, path = "/v1/incidents/{id}/affected", tag = "incidents",
    params(("id" = String, Path, description = "inc_…"),
           ("limit" = Option<u32>, Query, description = "1–500, default 50"),
           ("after" = Option<String>, Query, description = "cursor")),
    security(("bearer" = ["incidents:read"])),
    responses(
        (status = 200, description = "A page of affected subjects", body = Page<AffectedView>),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such incident", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_affected(
    State(state): State<AppState>,
    _caller: Authorized<IncidentsRead>,
    IdPath(id): IdPath<IncidentId>,
    PageQuery(page): PageQuery,
) -> Result<Json<Page<AffectedView>>, Problem> {
    let after = page
        .after
        .as_deref()
        .map(SubjectId::parse)
        .transpose()
        .map_err(|_| invalid("after", "is not a valid cursor"))?;
    let rows = state
        .incidents
        .affected(&id, after.as_ref(), page.limit)
        .await
        .map_err(errors::incidents)?;
    let items = rows
        .into_iter()
        .map(|a| AffectedView {
            subject_id: a.subject_id,
            kinds: a.touches.iter().map(|t| t.as_str()).collect(),
            first_at: a.first_at,
            last_at: a.last_at,
            notice_message_id: a.notice_message_id,
            notice_at: a.notice_at,
        })
        .collect();
    Ok(Json(Page::from_overfetch(
        items,
        page.limit,
        |a: &AffectedView| a.subject_id.to_string(),
    )))
}

/// One fact of a draft.
#[derive(Debug, Serialize, ToSchema)]
pub struct DraftFieldView {
    name: &'static str,
    label: &'static str,
    /// Absent when not recorded.
    value: Option<String>,
    required: bool,
}

/// One notification draft.
#[derive(Debug, Serialize, ToSchema)]
pub struct DraftView {
    /// gdpr_authority, gdpr_subjects, hipaa_individuals or hipaa_hhs.
    kind: &'static str,
    title: &'static str,
    basis: &'static str,
    /// The clock behind it (not_applicable: not owed).
    #[schema(value_type = Option<String>)]
    clock_status: Option<herald_domain::incidents::ClockStatus>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    due_at: Option<Timestamp>,
    /// Required facts not recorded: record them (PATCH, or `[incidents]` in the
    /// configuration) — the draft never invents them.
    missing: Vec<&'static str>,
    fields: Vec<DraftFieldView>,
    /// The draft as text to paste.
    text: String,
}

/// The drafts.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drafts {
    drafts: Vec<DraftView>,
}

fn draft_view(draft: Draft, incident: &IncidentId) -> DraftView {
    let text = herald_domain::incidents::drafts::render(&draft, incident.as_str());
    DraftView {
        kind: draft.kind.as_str(),
        title: draft.title,
        basis: draft.basis,
        clock_status: draft.clock_status,
        due_at: draft.due_at,
        missing: draft.missing,
        fields: draft
            .fields
            .into_iter()
            .map(|f| DraftFieldView {
                name: f.name,
                label: f.label,
                value: f.value,
                required: f.required,
            })
            .collect(),
        text,
    }
}

/// Drafts of the notifications: GDPR Art. 33(3) to the supervisory authority, the Art. 34
/// notice to the people affected, the HIPAA §164.404(c) notice to individuals and the HHS
/// report data — filled from the register, with missing required facts listed. `?format=text`
/// answers `text/plain` to paste.
#[utoipa::path(get, path = "/v1/incidents/{id}/notifications", tag = "incidents",
    params(("id" = String, Path, description = "inc_…"),
           ("format" = Option<String>, Query, description = "json (default) or text")),
    security(("bearer" = ["incidents:read"])),
    responses(
        (status = 200, description = "The drafts",
            content((Drafts = "application/json"), (String = "text/plain"))),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such incident", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn notification_drafts(
    State(state): State<AppState>,
    _caller: Authorized<IncidentsRead>,
    IdPath(id): IdPath<IncidentId>,
    FormatQuery(as_text): FormatQuery,
) -> Result<Response, Problem> {
    let incident = state.incidents.get(&id).await.map_err(errors::incidents)?;
    let drafts: Vec<DraftView> = drafts::drafts(&incident, &state.incident_contacts)
        .into_iter()
        .map(|d| draft_view(d, &id))
        .collect();
    if as_text {
        let text = drafts
            .iter()
            .map(|d| d.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    Ok(Json(Drafts { drafts }).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySubjects {
    /// A configured purpose whose lawful basis is legal_obligation.
    purpose: String,
    /// A configured template (name and language).
    template: String,
    language: String,
    /// The template's body parameters, the same for everyone (no personal data).
    #[serde(default)]
    parameters: Vec<String>,
    /// Continue after this subject (the previous answer's `next`).
    after: Option<String>,
    /// Notices this call sends at most: 1–1000, default 200.
    limit: Option<u32>,
}

/// What one call did.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotifyResult {
    run: NoticeRunView,
    /// Call again with `after` set to this to go on; absent when everyone was reached.
    #[schema(value_type = Option<String>)]
    next: Option<SubjectId>,
}

/// Tell the people affected: the template to every affected subject not yet told, under a
/// legal_obligation purpose (a withdrawn marketing consent does not stop it; an erasure
/// does), as the caller's integration, paced, in pages. Each send is audited naming the
/// incident; the incident records the run.
#[utoipa::path(post, path = "/v1/incidents/{id}/notify-subjects", tag = "incidents",
    params(("id" = String, Path, description = "inc_…")),
    request_body = NotifySubjects,
    security(("bearer" = ["incidents:write"])),
    responses(
        (status = 200, description = "Notices sent this call", body = NotifyResult),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such incident", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "incident_changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "purpose_not_legal_obligation", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn notify_subjects(
    State(state): State<AppState>,
    caller: Authorized<IncidentsWrite>,
    IdPath(id): IdPath<IncidentId>,
    ApiJson(body): ApiJson<NotifySubjects>,
) -> Result<(Extension<ActionAudited>, Json<NotifyResult>), Problem> {
    let after = body
        .after
        .as_deref()
        .map(SubjectId::parse)
        .transpose()
        .map_err(|_| invalid("after", "a subject id (the previous answer's next)"))?;
    let limit = body.limit.unwrap_or(200);
    if limit == 0 || limit > MAX_NOTICES_PER_CALL {
        return Err(invalid("limit", "1 to 1000"));
    }
    let outcome = state
        .incidents
        .notify_subjects(
            &id,
            NoticeRequest {
                purpose: body.purpose,
                template: body.template,
                language: body.language,
                parameters: body.parameters,
                after,
                limit,
            },
            &state.messages,
            &caller.principal,
            &caller.initiator(),
        )
        .await
        .map_err(errors::incidents)?;
    Ok((
        Extension(ActionAudited),
        Json(NotifyResult {
            run: notice_view(outcome.run),
            next: outcome.next,
        }),
    ))
}

/// What telling the integrations did.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationsNotified {
    /// Integrations told, with how many of their subjects are affected.
    integrations: BTreeMap<String, u64>,
    /// Deliveries queued (one per part and endpoint).
    deliveries: u64,
    /// Integrations without an enabled endpoint for `incident.notified`: tell them another way
    /// (and record it with `controllers_notified_at`).
    without_endpoint: Vec<String>,
}

/// Tell the integrations whose subjects the incident affected (GDPR Art. 33(2): Herald's
/// operator is their processor): each gets `incident.notified` with the facts, the DPO contact
/// and its own affected subject ids only. Starts the `controllers` clock's `done_at`.
#[utoipa::path(post, path = "/v1/incidents/{id}/notify-integrations", tag = "incidents",
    params(("id" = String, Path, description = "inc_…")),
    security(("bearer" = ["incidents:write"])),
    responses(
        (status = 200, description = "The integrations told", body = IntegrationsNotified),
        (status = 404, description = "No such incident", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "incident_changed", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn notify_integrations(
    State(state): State<AppState>,
    caller: Authorized<IncidentsWrite>,
    IdPath(id): IdPath<IncidentId>,
) -> Result<(Extension<ActionAudited>, Json<IntegrationsNotified>), Problem> {
    let told = state
        .incidents
        .notify_controllers(
            &id,
            state.incident_contacts.dpo_contact.as_deref(),
            &caller.initiator(),
        )
        .await
        .map_err(errors::incidents)?;
    Ok((
        Extension(ActionAudited),
        Json(IntegrationsNotified {
            integrations: told
                .integrations
                .into_iter()
                .map(|(i, n)| (i.to_string(), n))
                .collect(),
            deliveries: told.deliveries,
            without_endpoint: told
                .without_endpoint
                .into_iter()
                .map(|i| i.to_string())
                .collect(),
        }),
    ))
}
