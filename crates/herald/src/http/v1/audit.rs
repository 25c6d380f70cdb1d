//! `/v1/audit`: the trail in sequence order, its verification, checkpoints and public keys.
//! Everything an outside verifier needs, without personal data (there is none in the trail).

use axum::extract::State;
use axum::{Extension, Json};
use chrono::SecondsFormat;
use data_encoding::{BASE64, HEXLOWER};
use herald_domain::audit::Report;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Page;
use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{AuditRead, Authorized, PageQuery};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(entries))
        .routes(routes!(verify))
        .routes(routes!(checkpoints))
        .routes(routes!(public_key))
}

fn after_seq(after: Option<&str>) -> Result<u64, Problem> {
    match after {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| {
            Problem::new(Code::InvalidRequest)
                .field(FieldError::new("after", "must be a sequence number"))
        }),
    }
}

/// An audit entry: the canonical fields (`seq`, `time`, `actor`, `action`, `target`,
/// `outcome`, `request_id`, `details`) and its chain `hash` (hex).
#[derive(Debug, Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct Entry(Value);

/// Audit entries in sequence order.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(
        ("limit" = Option<u32>, Query, description = "1–500, default 50"),
        ("after" = Option<String>, Query, description = "A sequence number: entries after it"),
    ),
    security(("bearer" = ["audit:read"])),
    responses((status = 200, description = "A page of entries", body = Page<Entry>)))]
async fn entries(
    State(state): State<AppState>,
    _caller: Authorized<AuditRead>,
    PageQuery(page): PageQuery,
) -> Result<Json<Page<Entry>>, Problem> {
    let after = after_seq(page.after.as_deref())?;
    let sealed = state
        .audit
        .entries(after, page.limit + 1)
        .await
        .map_err(errors::audit)?;
    let items = sealed.iter().map(|e| Entry(e.export_json())).collect();
    Ok(Json(Page::from_overfetch(
        items,
        page.limit,
        |e: &Entry| e.0["seq"].to_string(),
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Head {
    seq: u64,
    /// h(seq), hex.
    hash: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FirstBad {
    seq: u64,
    /// modified | deleted | reordered | truncated | bad_signature | witness_mismatch
    reason: &'static str,
    explanation: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Verification {
    ok: bool,
    /// Entries checked (after the horizon, if older ones were pruned).
    entries: u64,
    head: Head,
    /// The latest signed checkpoint that matched the chain.
    checkpoint: Option<u64>,
    first_bad: Option<FirstBad>,
}

impl From<Report> for Verification {
    fn from(r: Report) -> Self {
        Self {
            ok: r.ok,
            entries: r.entries,
            head: Head {
                seq: r.head.seq,
                hash: HEXLOWER.encode(&r.head.hash),
            },
            checkpoint: r.checkpoint,
            first_bad: r.first_bad.map(|f| FirstBad {
                seq: f.seq,
                reason: f.problem.as_str(),
                explanation: f.explanation,
            }),
        }
    }
}

/// Verify the trail: recompute the chain, check every checkpoint signature and the witness.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    security(("bearer" = ["audit:read"])),
    responses(
        (status = 200, description = "The verification (ok or the first bad entry and why)", body = Verification),
        (status = 503, description = "unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn verify(
    State(state): State<AppState>,
    caller: Authorized<AuditRead>,
) -> Result<(Extension<ActionAudited>, Json<Verification>), Problem> {
    let report = state
        .audit
        .verify(&caller.initiator())
        .await
        .map_err(errors::audit)?;
    Ok((Extension(ActionAudited), Json(report.into())))
}

/// A signed checkpoint, as in the witness file.
#[derive(Debug, Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct CheckpointView(Value);

/// Signed checkpoints in sequence order.
#[utoipa::path(get, path = "/v1/audit/checkpoints", tag = "audit",
    params(
        ("limit" = Option<u32>, Query, description = "1–500, default 50"),
        ("after" = Option<String>, Query, description = "A sequence number: checkpoints after it"),
    ),
    security(("bearer" = ["audit:read"])),
    responses((status = 200, description = "A page of checkpoints", body = Page<CheckpointView>)))]
async fn checkpoints(
    State(state): State<AppState>,
    _caller: Authorized<AuditRead>,
    PageQuery(page): PageQuery,
) -> Result<Json<Page<CheckpointView>>, Problem> {
    let after = after_seq(page.after.as_deref())?;
    let all = state.audit.checkpoints().await.map_err(errors::audit)?;
    let items = all
        .iter()
        .filter(|c| c.seq > after)
        .take(usize::try_from(page.limit + 1).unwrap_or(usize::MAX))
        .map(|c| CheckpointView(c.to_json()))
        .collect();
    Ok(Json(Page::from_overfetch(
        items,
        page.limit,
        |c: &CheckpointView| c.0["seq"].to_string(),
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeyView {
    key_id: String,
    #[schema(example = "Ed25519")]
    algorithm: &'static str,
    /// The raw 32-byte Ed25519 public key, base64.
    public_key: String,
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeys {
    /// The key signing new checkpoints.
    active_key_id: String,
    keys: Vec<PublicKeyView>,
}

/// The public keys that verify checkpoint signatures.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit",
    security(("bearer" = ["audit:read"])),
    responses((status = 200, description = "The verification keys", body = PublicKeys)))]
async fn public_key(
    State(state): State<AppState>,
    _caller: Authorized<AuditRead>,
) -> Result<Json<PublicKeys>, Problem> {
    let keys = state.audit.public_keys().await.map_err(errors::audit)?;
    Ok(Json(PublicKeys {
        active_key_id: state.audit.key_id().to_owned(),
        keys: keys
            .into_iter()
            .map(|k| PublicKeyView {
                key_id: k.key_id,
                algorithm: "Ed25519",
                public_key: BASE64.encode(&k.public_key),
                created_at: k.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            })
            .collect(),
    }))
}
