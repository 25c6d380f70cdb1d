//! `/v1/requests`: the register of data-subject rights requests with their legal deadlines
//! (GDPR Art. 12(3)). Thin: the register computes due dates and decides extensions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use herald_domain::ids::{RightsRequestId, SubjectId};
use herald_domain::rights::{NewRightsRequest, RequestKind, RequestStatus, RightsRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Page, overfetch};
use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{
    ApiJson, Authorized, IdPath, StatusPageQuery, SubjectsRead, SubjectsWrite,
};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::{rfc3339, rfc3339_opt};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(log_request, list_requests))
        .routes(routes!(extend_request))
        .routes(routes!(complete_request))
}

fn invalid(field: &str, rule: &'static str) -> Problem {
    Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRequest {
    /// access, rectification, restriction, erasure, objection or portability.
    #[schema(example = "access")]
    kind: String,
    /// The subject, where known (`sub_…`).
    subject_id: Option<String>,
    /// When the request reached the controller (RFC 3339); the deadline runs from it.
    #[schema(example = "2026-01-31T09:30:00Z", format = DateTime)]
    received_at: String,
    /// How it arrived (e-mail, letter, whatsapp…), free text of at most 32 characters.
    #[schema(example = "email", max_length = 32)]
    channel: Option<String>,
}

/// A request in the register.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    #[schema(value_type = String, example = "dsr_06h2ftkqu3rt85cij90ad2r0kg")]
    id: RightsRequestId,
    kind: &'static str,
    #[schema(value_type = Option<String>)]
    subject_id: Option<SubjectId>,
    channel: Option<String>,
    /// open, overdue (open and past due) or done.
    status: &'static str,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    received_at: herald_domain::clock::Timestamp,
    /// One calendar month after receipt (end-of-month rule), plus any extension.
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    due_at: herald_domain::clock::Timestamp,
    extended_months: u32,
    /// The extension's reason, as recorded.
    extension_reason: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    completed_at: Option<herald_domain::clock::Timestamp>,
}

fn view(state: &AppState, r: RightsRequest) -> Result<RequestView, Problem> {
    let now = state.rights.now();
    let extension_reason = state.rights.extension_reason(&r).map_err(errors::rights)?;
    Ok(RequestView {
        status: r.status(now).as_str(),
        kind: r.kind.as_str(),
        id: r.id,
        subject_id: r.subject_id,
        channel: r.channel,
        received_at: r.received_at,
        due_at: r.due_at,
        extended_months: r.extended_months,
        extension_reason,
        completed_at: r.completed_at,
    })
}

/// Whose requests the caller sees: its integration's own (`admin`: the whole register).
fn owner<S: crate::http::extract::RequiredScope>(
    caller: &Authorized<S>,
) -> Option<&herald_domain::ids::IntegrationId> {
    (!caller.principal.is_admin()).then_some(&caller.principal.integration_id)
}

/// Log a rights request; its due date is computed. A subject it names must be one the caller
/// is linked to.
#[utoipa::path(post, path = "/v1/requests", tag = "rights",
    request_body = LogRequest,
    security(("bearer" = ["subjects:write"])),
    responses(
        (status = 201, description = "Logged", body = RequestView),
        (status = 400, description = "invalid_request (kind, received_at, subject_id, channel)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn log_request(
    State(state): State<AppState>,
    caller: Authorized<SubjectsWrite>,
    ApiJson(body): ApiJson<LogRequest>,
) -> Result<(StatusCode, Extension<ActionAudited>, Json<RequestView>), Problem> {
    let kind = RequestKind::parse(&body.kind).ok_or_else(|| {
        invalid(
            "kind",
            "access, rectification, restriction, erasure, objection or portability",
        )
    })?;
    let received_at = DateTime::parse_from_rfc3339(&body.received_at)
        .map_err(|_| invalid("received_at", "an RFC 3339 time"))?
        .with_timezone(&Utc);
    let subject_id = body
        .subject_id
        .as_deref()
        .map(SubjectId::parse)
        .transpose()
        .map_err(|_| invalid("subject_id", "is not a subject id"))?;
    if body.channel.as_deref().is_some_and(|c| {
        c.is_empty()
            || c.len() > 32
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    }) {
        return Err(invalid("channel", "1 to 32 letters, digits, _ - ."));
    }
    let request = state
        .rights
        .log(
            NewRightsRequest {
                kind,
                subject_id,
                channel: body.channel,
                received_at,
            },
            &caller.principal.integration_id,
            caller.principal.is_admin(),
            &caller.initiator(),
        )
        .await
        .map_err(errors::rights)?;
    Ok((
        StatusCode::CREATED,
        Extension(ActionAudited),
        Json(view(&state, request)?),
    ))
}

/// The register: open, overdue or done requests (all without `status`) — the caller's
/// integration's own (`admin`: every integration's).
#[utoipa::path(get, path = "/v1/requests", tag = "rights",
    params(("status" = Option<String>, Query, description = "open (includes overdue), overdue or done"),
           ("limit" = Option<u32>, Query, description = "1–500, default 50"),
           ("after" = Option<String>, Query, description = "cursor")),
    security(("bearer" = ["subjects:read"])),
    responses(
        (status = 200, description = "A page of requests in the order they were logged", body = Page<RequestView>),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_requests(
    State(state): State<AppState>,
    caller: Authorized<SubjectsRead>,
    StatusPageQuery(page, status): StatusPageQuery,
) -> Result<Json<Page<RequestView>>, Problem> {
    let status = status
        .as_deref()
        .map(|s| RequestStatus::parse(s).ok_or_else(|| invalid("status", "open, overdue or done")))
        .transpose()?;
    let records = state
        .rights
        .list(status, &overfetch(&page), owner(&caller))
        .await
        .map_err(errors::rights)?;
    let items = records
        .into_iter()
        .map(|r| view(&state, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Page::from_overfetch(
        items,
        page.limit,
        |r: &RequestView| r.id.to_string(),
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// Why the answer needs longer (complexity, number of requests); stored encrypted.
    #[schema(max_length = 2000)]
    reason: String,
    /// 1 or 2; at most two in all.
    months: u32,
}

/// Extend a request's deadline by up to two further months, before it is due.
#[utoipa::path(post, path = "/v1/requests/{id}/extend", tag = "rights",
    params(("id" = String, Path, description = "Request id (dsr_…)")),
    request_body = ExtendRequest,
    security(("bearer" = ["subjects:write"])),
    responses(
        (status = 200, description = "Extended", body = RequestView),
        (status = 400, description = "invalid_request (reason, months)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "extension_too_late, extension_exceeds_limit, request_closed, request_changed", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn extend_request(
    State(state): State<AppState>,
    caller: Authorized<SubjectsWrite>,
    IdPath(id): IdPath<RightsRequestId>,
    ApiJson(body): ApiJson<ExtendRequest>,
) -> Result<(Extension<ActionAudited>, Json<RequestView>), Problem> {
    let request = state
        .rights
        .extend(
            &id,
            body.months,
            &body.reason,
            owner(&caller),
            &caller.initiator(),
        )
        .await
        .map_err(errors::rights)?;
    Ok((Extension(ActionAudited), Json(view(&state, request)?)))
}

/// Mark a request done.
#[utoipa::path(post, path = "/v1/requests/{id}/complete", tag = "rights",
    params(("id" = String, Path, description = "Request id (dsr_…)")),
    security(("bearer" = ["subjects:write"])),
    responses(
        (status = 200, description = "Done (also when it already was)", body = RequestView),
        (status = 404, description = "No such request", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn complete_request(
    State(state): State<AppState>,
    caller: Authorized<SubjectsWrite>,
    IdPath(id): IdPath<RightsRequestId>,
) -> Result<(Extension<ActionAudited>, Json<RequestView>), Problem> {
    let request = state
        .rights
        .complete(&id, owner(&caller), &caller.initiator())
        .await
        .map_err(errors::rights)?;
    Ok((Extension(ActionAudited), Json(view(&state, request)?)))
}
