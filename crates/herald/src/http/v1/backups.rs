//! `/v1/backups`: the register of backups this installation wrote (`backups:read`). Manifests
//! hold counts, hashes and times, no personal data; the backups themselves never pass through
//! the API.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::backup::{BackupError, BackupSummary};
use crate::http::AppState;
use crate::http::extract::{Authorized, BackupsRead, PageQuery};
use crate::http::problem::Problem;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// One backup: when, how big, what it holds, and whether it was verified, drilled or pruned.
#[derive(Debug, Serialize, ToSchema)]
pub struct Backup {
    id: String,
    created_at: String,
    /// The encrypted payload's file name in `backup.dir`.
    file: String,
    size_bytes: u64,
    duration_ms: u64,
    /// The backend it was taken on (`sqlite`, `postgres`); it restores into either.
    backend: String,
    schema_version: i64,
    audit_head_seq: u64,
    subjects: u64,
    messages: u64,
    /// Erasures its copy of the erasure ledger lists.
    erasures: u64,
    verified_at: Option<String>,
    drilled_at: Option<String>,
    pruned_at: Option<String>,
    /// Both files are still in `backup.dir`.
    present: bool,
}

impl From<BackupSummary> for Backup {
    fn from(b: BackupSummary) -> Self {
        Self {
            id: b.id,
            created_at: b.created_at,
            file: b.file,
            size_bytes: b.size_bytes,
            duration_ms: b.duration_ms,
            backend: b.backend,
            schema_version: b.schema_version,
            audit_head_seq: b.audit_head_seq,
            subjects: b.subjects,
            messages: b.messages,
            erasures: b.erasures,
            verified_at: b.verified_at,
            drilled_at: b.drilled_at,
            pruned_at: b.pruned_at,
            present: b.present,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Backups {
    /// Newest first.
    data: Vec<Backup>,
}

/// The newest backups (up to `limit`), newest first.
#[utoipa::path(get, path = "/v1/backups", tag = "operations",
    params(("limit" = Option<u32>, Query, description = "1–500, default 50")),
    security(("bearer" = ["backups:read"])),
    responses((status = 200, description = "The register", body = Backups)))]
async fn list(
    State(state): State<AppState>,
    _caller: Authorized<BackupsRead>,
    PageQuery(page): PageQuery,
) -> Result<Json<Backups>, Problem> {
    let backups = state.backups.list(page.limit).await.map_err(|e| match e {
        BackupError::Store(e) => crate::http::errors::store(e),
        other => {
            tracing::error!(error = %other, "cannot list backups");
            Problem::internal()
        }
    })?;
    Ok(Json(Backups {
        data: backups.into_iter().map(Backup::from).collect(),
    }))
}
