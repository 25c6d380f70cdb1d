//! The data subject's rights on `/v1/subjects/{id}`: read, rectify (`PATCH`), erase
//! (`DELETE`), restrict and lift (`…/restriction`), legal holds (`…/legal-hold`) and the
//! export (`…/export`). Handlers only translate; the rights capability decides and records.

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use herald_domain::ids::SubjectId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::subjects::{PhoneRequest, Subject};
use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{
    ApiJson, Authorized, LinkedSubject, SubjectsErase, SubjectsExport, SubjectsHold, SubjectsRead,
    SubjectsWrite,
};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::rfc3339;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_subject, rectify, erase))
        .routes(routes!(restrict, lift_restriction))
        .routes(routes!(place_legal_hold, release_legal_hold))
        .routes(routes!(export))
}

/// The response of a change: audited by the capability when something changed; otherwise the
/// generic access entry records the call.
type Changed = (Option<Extension<ActionAudited>>, Json<Subject>);

fn changed(standing: herald_domain::rights::SubjectStanding, changed: bool) -> Changed {
    (
        changed.then_some(Extension(ActionAudited)),
        Json(standing.into()),
    )
}

/// Read a subject (no contact data).
#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "subjects",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    security(("bearer" = ["subjects:read"])),
    responses(
        (status = 200, description = "The subject", body = Subject),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_subject(
    State(state): State<AppState>,
    _caller: Authorized<SubjectsRead>,
    LinkedSubject(id): LinkedSubject,
) -> Result<Json<Subject>, Problem> {
    let standing = state
        .subject_rights
        .standing(&id)
        .await
        .map_err(errors::subject_rights)?;
    Ok(Json(standing.into()))
}

/// Correct the subject's phone number (GDPR Art. 16). The old number no longer finds the
/// subject; the WhatsApp consents lapse (the new number needs a fresh opt-in) and the service
/// window closes; integrators receive `subject.rectified`.
#[utoipa::path(patch, path = "/v1/subjects/{id}", tag = "subjects",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    request_body = PhoneRequest,
    security(("bearer" = ["subjects:write"])),
    responses(
        (status = 200, description = "Corrected (or already this number)", body = Subject),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "phone_in_use, subject_changed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "invalid_phone_number", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn rectify(
    State(state): State<AppState>,
    caller: Authorized<SubjectsWrite>,
    LinkedSubject(id): LinkedSubject,
    ApiJson(body): ApiJson<PhoneRequest>,
) -> Result<Changed, Problem> {
    let (standing, done) = state
        .subject_rights
        .rectify(&id, body.phone(), &caller.initiator())
        .await
        .map_err(errors::subject_rights)?;
    Ok(changed(standing, done))
}

/// The answer to an erasure.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    #[schema(value_type = String)]
    id: SubjectId,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    erased_at: herald_domain::clock::Timestamp,
    /// `{statement, key_id, algorithm: "Ed25519", signature}`: the signature (base64) is over
    /// `herald-erasure-receipt/v1\n` followed by the statement's canonical JSON (keys sorted,
    /// no spaces), verifiable with `GET /v1/audit/public-key`.
    #[schema(value_type = Object)]
    receipt: serde_json::Value,
}

/// Erase the subject (GDPR Art. 17) by crypto-shredding: the data key is destroyed, contact
/// data, message contents, inbound messages and undelivered events are deleted, queued
/// messages cancelled; pseudonymous metadata and the audit trail stay. Returns a signed receipt.
#[utoipa::path(delete, path = "/v1/subjects/{id}", tag = "subjects",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    security(("bearer" = ["subjects:erase"])),
    responses(
        (status = 200, description = "Erased", body = Erased),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "legal_hold", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased (already)", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn erase(
    State(state): State<AppState>,
    caller: Authorized<SubjectsErase>,
    LinkedSubject(id): LinkedSubject,
) -> Result<(Extension<ActionAudited>, Json<Erased>), Problem> {
    let receipt = state
        .subject_rights
        .erase(&id, &caller.initiator())
        .await
        .map_err(|e| {
            let refused = matches!(e, herald_domain::rights::SubjectRightsError::LegalHold);
            let problem = errors::subject_rights(e);
            // The refusal was recorded by the capability.
            if refused { problem.audited() } else { problem }
        })?;
    Ok((
        Extension(ActionAudited),
        Json(Erased {
            id: receipt.subject_id,
            erased_at: receipt.erased_at,
            receipt: receipt.receipt,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictRequest {
    /// Why (a contested accuracy, an objection under review…); kept encrypted under the
    /// subject's key, shown in the export.
    #[schema(max_length = 2000)]
    #[serde(default)]
    reason: Option<String>,
}

/// Restrict processing (GDPR Art. 18): the data is kept, but sends answer
/// `409 subject_restricted`, queued messages are not delivered and events about the subject are
/// held until the restriction is lifted.
#[utoipa::path(post, path = "/v1/subjects/{id}/restriction", tag = "subjects",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    request_body = RestrictRequest,
    security(("bearer" = ["subjects:write"])),
    responses(
        (status = 200, description = "Restricted (or already)", body = Subject),
        (status = 400, description = "invalid_request (reason)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn restrict(
    State(state): State<AppState>,
    caller: Authorized<SubjectsWrite>,
    LinkedSubject(id): LinkedSubject,
    ApiJson(body): ApiJson<RestrictRequest>,
) -> Result<Changed, Problem> {
    let (standing, done) = state
        .subject_rights
        .restrict(&id, body.reason.as_deref(), &caller.initiator())
        .await
        .map_err(errors::subject_rights)?;
    Ok(changed(standing, done))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiftRequest {
    /// When the subject was told the restriction will be lifted (GDPR Art. 18(3) requires it
    /// before lifting), RFC 3339.
    #[schema(format = DateTime)]
    subject_notified_at: String,
}

/// Lift the restriction. Held events are delivered afterwards.
#[utoipa::path(delete, path = "/v1/subjects/{id}/restriction", tag = "subjects",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    request_body = LiftRequest,
    security(("bearer" = ["subjects:write"])),
    responses(
        (status = 200, description = "Lifted (or was not restricted)", body = Subject),
        (status = 400, description = "invalid_request (subject_notified_at)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn lift_restriction(
    State(state): State<AppState>,
    caller: Authorized<SubjectsWrite>,
    LinkedSubject(id): LinkedSubject,
    ApiJson(body): ApiJson<LiftRequest>,
) -> Result<Changed, Problem> {
    let notified = DateTime::parse_from_rfc3339(&body.subject_notified_at)
        .map_err(|_| {
            Problem::new(Code::InvalidRequest)
                .field(FieldError::new("subject_notified_at", "an RFC 3339 time"))
        })?
        .with_timezone(&Utc);
    let (standing, done) = state
        .subject_rights
        .lift_restriction(&id, notified, &caller.initiator())
        .await
        .map_err(errors::subject_rights)?;
    Ok(changed(standing, done))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHoldRequest {
    /// The retention duty (statute, litigation reference); kept encrypted.
    #[schema(min_length = 1, max_length = 2000)]
    reason: String,
}

/// Place a legal hold: while it stands, erasure answers `409 legal_hold` (GDPR Art. 17(3)(b),(e)).
/// Its own scope: whoever may erase must not be able to lift what stops erasure.
#[utoipa::path(put, path = "/v1/subjects/{id}/legal-hold", tag = "subjects",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    request_body = LegalHoldRequest,
    security(("bearer" = ["subjects:hold"])),
    responses(
        (status = 200, description = "Held", body = Subject),
        (status = 400, description = "invalid_request (reason)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn place_legal_hold(
    State(state): State<AppState>,
    caller: Authorized<SubjectsHold>,
    LinkedSubject(id): LinkedSubject,
    ApiJson(body): ApiJson<LegalHoldRequest>,
) -> Result<Changed, Problem> {
    let (standing, done) = state
        .subject_rights
        .place_legal_hold(&id, &body.reason, &caller.initiator())
        .await
        .map_err(errors::subject_rights)?;
    Ok(changed(standing, done))
}

/// Release the legal hold.
#[utoipa::path(delete, path = "/v1/subjects/{id}/legal-hold", tag = "subjects",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    security(("bearer" = ["subjects:hold"])),
    responses(
        (status = 200, description = "Released (or was not held)", body = Subject),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn release_legal_hold(
    State(state): State<AppState>,
    caller: Authorized<SubjectsHold>,
    LinkedSubject(id): LinkedSubject,
) -> Result<Changed, Problem> {
    let (standing, done) = state
        .subject_rights
        .release_legal_hold(&id, &caller.initiator())
        .await
        .map_err(errors::subject_rights)?;
    Ok(changed(standing, done))
}

/// Everything Herald holds about the subject, decrypted (GDPR Art. 15 and 20): contact data,
/// consents with their full history and evidence, messages with their statuses and attempts
/// (and content where retention kept it), inbound messages, events to integrators, rights
/// requests, the audit entries naming the subject, and the processing information. The
/// document's JSON Schema is `docs/schemas/subject-export.schema.json`. It is complete — every
/// integration's messages and evidence, as Art. 15 requires — which is why it has a scope of
/// its own, held by the system that answers rights requests, and only for subjects it is
/// linked to.
#[utoipa::path(get, path = "/v1/subjects/{id}/export", tag = "subjects",
    params(("id" = String, Path, description = "Subject id (sub_…)")),
    security(("bearer" = ["subjects:export"])),
    responses(
        (status = 200, description = "The export", body = Object),
        (status = 404, description = "No such subject", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "subject_erased", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn export(
    State(state): State<AppState>,
    caller: Authorized<SubjectsExport>,
    LinkedSubject(id): LinkedSubject,
) -> Result<(Extension<ActionAudited>, Json<serde_json::Value>), Problem> {
    let document = state
        .subject_rights
        .export(&id, &caller.initiator())
        .await
        .map_err(errors::subject_rights)?;
    Ok((Extension(ActionAudited), Json(document)))
}
