//! `/v1/vendors`: the provider register (GDPR Art. 28, HIPAA §164.308(b)). Thin: the register
//! validates, keeps the history and audits.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use herald_domain::clock::Timestamp;
use herald_domain::vendors::{Vendor, VendorError, VendorFacts, VendorId, VendorStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{ApiJson, Authorized, IdPath, VendorsRead, VendorsWrite};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::rfc3339;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_vendor, list_vendors))
        .routes(routes!(get_vendor, change_vendor))
}

fn problem(error: VendorError) -> Problem {
    match error {
        VendorError::Invalid { field, rule } => {
            Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
        }
        VendorError::NotFound => Problem::not_found(),
        VendorError::Exists => {
            Problem::new(Code::AlreadyExists).detail("a vendor with this id exists")
        }
        VendorError::Changed => Problem::new(Code::VendorChanged),
        VendorError::Store(e) => errors::store(e),
    }
}

fn status(field: &str, text: &str) -> Result<VendorStatus, Problem> {
    VendorStatus::parse(text).ok_or_else(|| {
        Problem::new(Code::InvalidRequest)
            .field(FieldError::new(field, "unreviewed, approved or suspended"))
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddVendor {
    /// 3–40 of a-z, 0-9 and _, starting with a letter.
    id: String,
    /// legal_name, service, role {kind, note}, dpa {signed_at, version, sha256, location},
    /// baa {signed_at, expires_at, products}, certifications [{name, issuer, expires_at,
    /// evidence}], processing_regions, storage_regions, transfer_mechanism (not_applicable,
    /// adequacy, sccs, bcrs, none), storage_mode {kind, retention, note}, deletion {support:
    /// api|contractual|none, covers}, sub_processors, security_contact, last_review_at,
    /// next_review_due, sources (docs/compliance.md).
    #[schema(value_type = Object)]
    facts: VendorFacts,
    /// unreviewed (default), approved or suspended.
    status: Option<String>,
    /// Why (kept in the vendor's history).
    reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeVendor {
    /// The whole entry as it now stands (a review replaces the facts).
    #[schema(value_type = Option<Object>)]
    facts: Option<VendorFacts>,
    /// unreviewed, approved or suspended.
    status: Option<String>,
    /// Why (kept in the vendor's history).
    reason: String,
}

/// Whether the vendor may carry messages now.
#[derive(Debug, Serialize, ToSchema)]
pub struct StandingView {
    approved: bool,
    /// unreviewed, suspended, dpa_missing, review_overdue or certification_expired.
    reason: Option<&'static str>,
}

/// One version of the entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    version: i64,
    status: String,
    reason: String,
    /// Who: an integration and its key or client, `admin (cli)` or `system`.
    actor: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VendorView {
    id: String,
    status: &'static str,
    standing: StandingView,
    #[schema(value_type = Object)]
    facts: VendorFacts,
    version: i64,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
    /// Every version, oldest first (on `GET /v1/vendors/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Vec<HistoryView>>,
}

fn view(vendor: Vendor, now: Timestamp) -> VendorView {
    let standing = vendor.standing(now);
    VendorView {
        id: vendor.id.to_string(),
        status: vendor.status.as_str(),
        standing: StandingView {
            approved: standing.is_ok(),
            reason: standing.err().map(|r| r.code()),
        },
        facts: vendor.facts,
        version: vendor.version,
        created_at: vendor.created_at,
        updated_at: vendor.updated_at,
        history: None,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VendorList {
    data: Vec<VendorView>,
}

/// Add a vendor to the register (`unreviewed` unless approved here with the reason).
#[utoipa::path(post, path = "/v1/vendors", tag = "vendors",
    request_body = AddVendor,
    security(("bearer" = ["vendors:write"])),
    responses(
        (status = 201, description = "Added", body = VendorView),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "already_exists", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn add_vendor(
    State(state): State<AppState>,
    caller: Authorized<VendorsWrite>,
    ApiJson(body): ApiJson<AddVendor>,
) -> Result<(StatusCode, Extension<ActionAudited>, Json<VendorView>), Problem> {
    let id = VendorId::parse(&body.id).ok_or_else(|| {
        Problem::new(Code::InvalidRequest).field(FieldError::new(
            "id",
            "3 to 40 of a-z, 0-9 and _, starting with a letter",
        ))
    })?;
    let status = match body.status.as_deref() {
        Some(text) => status("status", text)?,
        None => VendorStatus::Unreviewed,
    };
    let vendor = state
        .vendors
        .add(id, body.facts, status, &body.reason, &caller.initiator())
        .await
        .map_err(problem)?;
    Ok((
        StatusCode::CREATED,
        Extension(ActionAudited),
        Json(view(vendor, state.vendors.now())),
    ))
}

/// The register, by id, each vendor with whether it may carry messages now.
#[utoipa::path(get, path = "/v1/vendors", tag = "vendors",
    security(("bearer" = ["vendors:read"])),
    responses((status = 200, description = "Every vendor", body = VendorList)))]
async fn list_vendors(
    State(state): State<AppState>,
    _caller: Authorized<VendorsRead>,
) -> Result<Json<VendorList>, Problem> {
    state.vendors.refresh().await.map_err(problem)?;
    let now = state.vendors.now();
    Ok(Json(VendorList {
        data: state
            .vendors
            .list()
            .into_iter()
            .map(|v| view(v, now))
            .collect(),
    }))
}

/// One vendor with its history: every version, who changed it and why.
#[utoipa::path(get, path = "/v1/vendors/{id}", tag = "vendors",
    params(("id" = String, Path, description = "The vendor's id")),
    security(("bearer" = ["vendors:read"])),
    responses(
        (status = 200, description = "The vendor", body = VendorView),
        (status = 404, description = "No such vendor", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_vendor(
    State(state): State<AppState>,
    _caller: Authorized<VendorsRead>,
    IdPath(id): IdPath<VendorId>,
) -> Result<Json<VendorView>, Problem> {
    let vendor = state.vendors.get(&id).await.map_err(problem)?;
    let history = state.vendors.history(&id).await.map_err(problem)?;
    let mut out = view(vendor, state.vendors.now());
    out.history = Some(
        history
            .into_iter()
            .map(|h| HistoryView {
                version: h.version,
                status: h.status,
                reason: h.reason,
                actor: h.actor,
                at: h.at,
            })
            .collect(),
    );
    Ok(Json(out))
}

/// Record a review (new facts), approve, suspend or re-open a vendor, with the reason.
#[utoipa::path(patch, path = "/v1/vendors/{id}", tag = "vendors",
    params(("id" = String, Path, description = "The vendor's id")),
    request_body = ChangeVendor,
    security(("bearer" = ["vendors:write"])),
    responses(
        (status = 200, description = "Changed", body = VendorView),
        (status = 400, description = "invalid_request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such vendor", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "vendor_changed", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn change_vendor(
    State(state): State<AppState>,
    caller: Authorized<VendorsWrite>,
    IdPath(id): IdPath<VendorId>,
    ApiJson(body): ApiJson<ChangeVendor>,
) -> Result<(Extension<ActionAudited>, Json<VendorView>), Problem> {
    let status = body
        .status
        .as_deref()
        .map(|s| status("status", s))
        .transpose()?;
    let vendor = state
        .vendors
        .change(&id, body.facts, status, &body.reason, &caller.initiator())
        .await
        .map_err(problem)?;
    Ok((
        Extension(ActionAudited),
        Json(view(vendor, state.vendors.now())),
    ))
}
