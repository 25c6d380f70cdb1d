//! `/v1/subjects`: register (create-or-find), look up and read data subjects. Phone numbers
//! travel only in request bodies, never in paths or query strings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use herald_domain::ids::SubjectId;
use herald_domain::rights::SubjectStanding;
use herald_domain::subjects::Registration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{ApiJson, Authorized, SubjectsRead, SubjectsWrite};
use crate::http::problem::{Problem, ProblemBody};
use crate::http::time::{rfc3339, rfc3339_opt};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(lookup))
}

impl PhoneRequest {
    pub fn phone(&self) -> &str {
        &self.phone
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneRequest {
    /// A phone number in E.164 (`+4915112345678`) or any common spelling of it
    /// (`+49 151 1234 5678`). Numbers without `+` are read in the configured default region.
    #[schema(example = "+4915112345678", max_length = 40)]
    phone: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectRef {
    #[schema(value_type = String, example = "sub_8h2kq3v0c1m5t7p9r4s6u2w8ya")]
    id: SubjectId,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhatsappState {
    /// When the subject last wrote to us on WhatsApp (opens the 24-hour window).
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_inbound_at: Option<herald_domain::clock::Timestamp>,
}

/// A data subject, without contact data.
#[derive(Debug, Serialize, ToSchema)]
pub struct Subject {
    #[schema(value_type = String)]
    id: SubjectId,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: herald_domain::clock::Timestamp,
    /// Processing restricted (GDPR Art. 18): nothing is sent to the subject and no event about
    /// the subject reaches an integrator.
    restricted: bool,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    restricted_at: Option<herald_domain::clock::Timestamp>,
    /// A legal hold applies: erasure is refused.
    legal_hold: bool,
    /// When the phone number was last corrected.
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    rectified_at: Option<herald_domain::clock::Timestamp>,
    whatsapp: WhatsappState,
}

impl From<SubjectStanding> for Subject {
    fn from(standing: SubjectStanding) -> Self {
        let record = standing.record;
        Self {
            id: record.id,
            created_at: record.created_at,
            restricted: record.restricted,
            restricted_at: standing.restricted_at,
            legal_hold: standing.legal_hold_at.is_some(),
            rectified_at: standing.rectified_at,
            whatsapp: WhatsappState {
                last_inbound_at: record.last_inbound_at,
            },
        }
    }
}

/// Register a subject by phone number, or find the one already registered.
#[utoipa::path(post, path = "/v1/subjects", tag = "subjects",
    request_body = PhoneRequest,
    security(("bearer" = ["subjects:write"])),
    responses(
        (status = 201, description = "Registered now", body = SubjectRef),
        (status = 200, description = "Already registered", body = SubjectRef),
        (status = 400, description = "Malformed body", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "invalid_phone_number", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn register(
    State(state): State<AppState>,
    caller: Authorized<SubjectsWrite>,
    ApiJson(body): ApiJson<PhoneRequest>,
) -> Result<(StatusCode, Extension<ActionAudited>, Json<SubjectRef>), Problem> {
    crate::http::limits::observe_lookup(&state, &caller, &body.phone).await?;
    let registration = state
        .subjects
        .register(&body.phone, &caller.initiator(), caller.access())
        .await
        .map_err(errors::subjects)?;
    let status = match registration {
        Registration::Created(_) => StatusCode::CREATED,
        Registration::Existing(_) => StatusCode::OK,
    };
    let id = registration.subject().id.clone();
    Ok((status, Extension(ActionAudited), Json(SubjectRef { id })))
}

/// Find the subject holding a phone number. Answers only for a subject the caller is linked to
/// or, with `subjects:write`, may register (it is then linked); any other number is `404`,
/// exactly as an unknown one.
#[utoipa::path(post, path = "/v1/subjects/lookup", tag = "subjects",
    request_body = PhoneRequest,
    security(("bearer" = ["subjects:read"])),
    responses(
        (status = 200, description = "Found", body = SubjectRef),
        (status = 404, description = "No subject the caller may know has this number", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "invalid_phone_number", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn lookup(
    State(state): State<AppState>,
    caller: Authorized<SubjectsRead>,
    ApiJson(body): ApiJson<PhoneRequest>,
) -> Result<(Extension<ActionAudited>, Json<SubjectRef>), Problem> {
    crate::http::limits::observe_lookup(&state, &caller, &body.phone).await?;
    let subject = state
        .subjects
        .lookup(&body.phone, &caller.initiator(), caller.access())
        .await
        .map_err(errors::subjects)?
        .ok_or_else(Problem::not_found)
        // Found or not, the look-up itself was recorded by the capability.
        .map_err(|problem| problem.audited())?;
    Ok((
        Extension(ActionAudited),
        Json(SubjectRef { id: subject.id }),
    ))
}
