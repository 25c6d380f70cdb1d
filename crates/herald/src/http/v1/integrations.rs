//! `/v1/integrations` and `/v1/keys`: connected systems and their API keys
//! (`integrations:manage`: provisioning without access to personal data; only `admin` grants
//! `admin` or reaches the `admin` integration).
//! A key's token is in the creation answer and nowhere else, ever.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use herald_domain::auth::{ApiKeyRecord, IntegrationRecord, Scope, Scopes};
use herald_domain::ids::{ApiKeyId, IntegrationId};
use herald_domain::limits::Rate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Page, overfetch};
use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{ApiJson, Authorized, IdPath, IntegrationsManage, PageQuery};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::{rfc3339, rfc3339_opt};

const MAX_SCOPES: usize = 16;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_integration, list_integrations))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(revoke_integration, update_integration))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntegration {
    /// 1–64 characters: letters, digits, space, `.`, `_`, `-`; unique.
    #[schema(example = "web-shop")]
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Integration {
    #[schema(value_type = String, example = "int_2b4d6f8h0j2l4n6p8r0t2v4x6z")]
    id: IntegrationId,
    name: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: herald_domain::clock::Timestamp,
    /// When it was revoked with all its keys and clients; absent while it is active.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<herald_domain::clock::Timestamp>,
}

impl From<IntegrationRecord> for Integration {
    fn from(r: IntegrationRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// At least one of: messages:send, messages:read, consents:read, consents:write,
    /// subjects:read, subjects:write, subjects:erase, subjects:export, subjects:hold,
    /// audit:read, integrations:manage, admin (`admin` only from an admin key).
    #[schema(example = json!(["messages:send", "subjects:write"]))]
    scopes: Vec<String>,
    /// Lifetime in days (1–3650). Default: the configured `auth.default_key_lifetime_days`.
    expires_in_days: Option<u32>,
}

/// An API key as listed. The token itself is never shown again after creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    #[schema(value_type = String, example = "key_0c2e4g6i8k0m2o4q6s8u0a2c4e")]
    id: ApiKeyId,
    #[schema(value_type = String)]
    integration_id: IntegrationId,
    /// The public start of the token, to recognise it.
    #[schema(example = "hk_1a2b3c4d")]
    prefix: String,
    scopes: Vec<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: herald_domain::clock::Timestamp,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<herald_domain::clock::Timestamp>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<herald_domain::clock::Timestamp>,
    /// Updated in batches (every few seconds), not on every request.
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_used_at: Option<herald_domain::clock::Timestamp>,
}

impl From<ApiKeyRecord> for ApiKey {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            integration_id: r.integration_id,
            prefix: r.prefix,
            scopes: r.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// A newly created key, with its token: store it now, it is not shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    details: ApiKey,
    /// The bearer token (`hk_…`). Shown this once.
    #[serde(rename = "key")]
    #[schema(example = "hk_…")]
    token: String,
}

pub(super) fn parse_scopes(raw: &[String]) -> Result<Scopes, Problem> {
    if raw.len() > MAX_SCOPES {
        return Err(Problem::new(Code::InvalidRequest).field(FieldError::new(
            "scopes",
            format!("at most {MAX_SCOPES} scopes"),
        )));
    }
    let mut errors = Vec::new();
    let mut scopes = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        match name.parse::<Scope>() {
            Ok(scope) => scopes.push(scope),
            Err(_) => errors.push(FieldError::new(format!("scopes[{i}]"), "unknown scope")),
        }
    }
    if errors.is_empty() {
        Ok(Scopes::new(scopes))
    } else {
        Err(Problem::new(Code::InvalidRequest).fields(errors))
    }
}

/// Create an integration.
#[utoipa::path(post, path = "/v1/integrations", tag = "integrations",
    request_body = CreateIntegration,
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 201, description = "Created", body = Integration),
        (status = 400, description = "Invalid name", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "already_exists", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_integration(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    ApiJson(body): ApiJson<CreateIntegration>,
) -> Result<(StatusCode, Extension<ActionAudited>, Json<Integration>), Problem> {
    let record = state
        .auth
        .create_integration(&body.name, &caller.initiator())
        .await
        .map_err(errors::auth)?;
    tracing::info!(integration_id = %record.id, "integration created");
    Ok((
        StatusCode::CREATED,
        Extension(ActionAudited),
        Json(record.into()),
    ))
}

/// List integrations.
#[utoipa::path(get, path = "/v1/integrations", tag = "integrations",
    params(
        ("limit" = Option<u32>, Query, description = "1–500, default 50"),
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
    ),
    security(("bearer" = ["integrations:manage"])),
    responses((status = 200, description = "A page of integrations", body = Page<Integration>)))]
async fn list_integrations(
    State(state): State<AppState>,
    _caller: Authorized<IntegrationsManage>,
    PageQuery(page): PageQuery,
) -> Result<Json<Page<Integration>>, Problem> {
    let records = state
        .auth
        .integrations(&overfetch(&page))
        .await
        .map_err(errors::auth)?;
    let items = records.into_iter().map(Integration::from).collect();
    Ok(Json(Page::from_overfetch(
        items,
        page.limit,
        |i: &Integration| i.id.to_string(),
    )))
}

/// Create an API key for an integration. The token is in this answer only.
#[utoipa::path(post, path = "/v1/integrations/{id}/keys", tag = "integrations",
    params(("id" = String, Path, description = "Integration id (int_…)")),
    request_body = CreateKey,
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 201, description = "Created; `key` holds the token, shown this once", body = CreatedKey),
        (status = 400, description = "Unknown scope, no scope, bad lifetime", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: the scope, or granting admin without being admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such integration", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_key(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(integration_id): IdPath<IntegrationId>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Extension<ActionAudited>, Json<CreatedKey>), Problem> {
    let scopes = parse_scopes(&body.scopes)?;
    let issued = state
        .auth
        .issue_key(
            &integration_id,
            scopes,
            body.expires_in_days,
            caller.manager(),
            &caller.initiator(),
        )
        .await
        .map_err(errors::auth)?;
    tracing::info!(key_id = %issued.record.id, integration_id = %integration_id, "API key created");
    Ok((
        StatusCode::CREATED,
        Extension(ActionAudited),
        Json(CreatedKey {
            token: issued.token.expose().to_owned(),
            details: issued.record.into(),
        }),
    ))
}

/// List an integration's API keys (never the tokens).
#[utoipa::path(get, path = "/v1/integrations/{id}/keys", tag = "integrations",
    params(
        ("id" = String, Path, description = "Integration id (int_…)"),
        ("limit" = Option<u32>, Query, description = "1–500, default 50"),
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
    ),
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 200, description = "A page of keys", body = Page<ApiKey>),
        (status = 404, description = "No such integration", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_keys(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(integration_id): IdPath<IntegrationId>,
    PageQuery(page): PageQuery,
) -> Result<Json<Page<ApiKey>>, Problem> {
    let records = state
        .auth
        .keys(Some(&integration_id), &overfetch(&page), caller.manager())
        .await
        .map_err(errors::auth)?;
    let items = records.into_iter().map(ApiKey::from).collect();
    Ok(Json(Page::from_overfetch(
        items,
        page.limit,
        |k: &ApiKey| k.id.to_string(),
    )))
}

/// Revoke an API key. It is refused from the next request on, on every node.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "integrations",
    params(("id" = String, Path, description = "API key id (key_…)")),
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 200, description = "Revoked (revoking again keeps the first time)", body = ApiKey),
        (status = 404, description = "No such key", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(key_id): IdPath<ApiKeyId>,
) -> Result<(Option<Extension<ActionAudited>>, Json<ApiKey>), Problem> {
    let (record, revoked_now) = state
        .auth
        .revoke_key(&key_id, caller.manager(), &caller.initiator())
        .await
        .map_err(errors::auth)?;
    tracing::info!(key_id = %record.id, revoked_now, "API key revoked");
    // Revoking again changes nothing and records nothing but the request itself.
    Ok((
        revoked_now.then_some(Extension(ActionAudited)),
        Json(record.into()),
    ))
}

/// The counts an integration's revocation took with it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedIntegration {
    #[serde(flatten)]
    integration: Integration,
    /// API keys revoked by this call (0 when it was revoked already).
    api_keys_revoked: u64,
    /// OAuth clients revoked by this call.
    oauth_clients_revoked: u64,
}

/// Revoke an integration: all its API keys and OAuth clients at once, refused from the next
/// request on, on every node; it takes no new credentials. Its data stays (erase subjects for
/// that). The `admin` integration cannot be revoked.
#[utoipa::path(delete, path = "/v1/integrations/{id}", tag = "integrations",
    params(("id" = String, Path, description = "Integration id (int_…)")),
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 200, description = "Revoked (revoking again keeps the first time; counts 0)", body = RevokedIntegration),
        (status = 403, description = "The admin integration, or the scope", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such integration", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn revoke_integration(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(integration_id): IdPath<IntegrationId>,
) -> Result<(Option<Extension<ActionAudited>>, Json<RevokedIntegration>), Problem> {
    let (record, revoked) = state
        .auth
        .revoke_integration(&integration_id, caller.manager(), &caller.initiator())
        .await
        .map_err(errors::auth)?;
    let counts = revoked.unwrap_or_default();
    tracing::info!(
        integration_id = %record.id,
        revoked_now = revoked.is_some(),
        api_keys = counts.api_keys,
        oauth_clients = counts.oauth_clients,
        "integration revoked"
    );
    Ok((
        revoked.is_some().then_some(Extension(ActionAudited)),
        Json(RevokedIntegration {
            integration: record.into(),
            api_keys_revoked: counts.api_keys,
            oauth_clients_revoked: counts.oauth_clients,
        }),
    ))
}

/// A credential rate: `per_minute` on average, `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    #[schema(example = 30000)]
    per_minute: u32,
    #[schema(example = 5000)]
    burst: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIntegration {
    /// The rate every credential of the integration gets (instead of `limits.credential`);
    /// `null`: back to the configured one. Required: a PATCH says what it changes.
    #[schema(value_type = Option<RateLimitBody>)]
    rate_limit: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpdatedIntegration {
    #[serde(flatten)]
    integration: Integration,
    /// The credential rate now in force for it on this node.
    rate_limit: RateLimitBody,
}

/// Change an integration: its credentials' rate limit. Applies on this node at once and on
/// the others within 30 s.
#[utoipa::path(patch, path = "/v1/integrations/{id}", tag = "integrations",
    params(("id" = String, Path, description = "Integration id (int_…)")),
    request_body = UpdateIntegration,
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 200, description = "Changed", body = UpdatedIntegration),
        (status = 400, description = "A rate of 0, or above 1000000", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such integration", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn update_integration(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(integration_id): IdPath<IntegrationId>,
    ApiJson(body): ApiJson<UpdateIntegration>,
) -> Result<(Extension<ActionAudited>, Json<UpdatedIntegration>), Problem> {
    let invalid = |rule: &'static str| {
        Problem::new(Code::InvalidRequest).field(FieldError::new("rate_limit", rule))
    };
    let rate = match body.rate_limit {
        Value::Null => None,
        value => {
            let asked: RateLimitBody = serde_json::from_value(value)
                .map_err(|_| invalid("an object {per_minute, burst}, or null"))?;
            Some(Rate::new(asked.per_minute, asked.burst).map_err(invalid)?)
        }
    };
    let record = state
        .auth
        .managed_integration(&integration_id, caller.manager())
        .await
        .map_err(errors::auth)?;
    let found = state
        .limits
        .set_integration_rate(state.store.as_ref(), &record.id, rate, &caller.initiator())
        .await
        .map_err(errors::store)?;
    if !found {
        return Err(Problem::not_found());
    }
    let now = state.limits.credential_rate(&record.id);
    tracing::info!(integration_id = %record.id, "integration rate limit changed");
    Ok((
        Extension(ActionAudited),
        Json(UpdatedIntegration {
            integration: record.into(),
            rate_limit: RateLimitBody {
                per_minute: now.per_minute,
                burst: now.burst,
            },
        }),
    ))
}
