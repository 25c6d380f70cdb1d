//! `/v1/integrations/{id}/oauth-clients` and `/v1/oauth-clients`: an integration's OAuth 2.0
//! clients (`integrations:manage`). A client's secret is in the creation answer and nowhere
//! else, ever; a `private_key_jwt` client has no secret, only its registered public key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use herald_domain::auth::ClientRegistration;
use herald_domain::auth::oauth::{ClientAuthMethod, OAuthClientRecord};
use herald_domain::ids::{IntegrationId, OAuthClientId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::integrations::parse_scopes;
use super::{Page, overfetch};
use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{ApiJson, Authorized, IdPath, IntegrationsManage, PageQuery};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::{rfc3339, rfc3339_opt};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_client, list_clients))
        .routes(routes!(revoke_client))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// 1–64 characters: letters, digits, space, `.`, `_`, `-`.
    #[schema(example = "shop-backend")]
    name: String,
    /// The scopes the client may request (as for API keys; `admin` only from an admin key).
    #[schema(example = json!(["messages:send"]))]
    scopes: Vec<String>,
    /// `client_secret_basic` (default), `client_secret_post` or `private_key_jwt`.
    #[schema(example = "client_secret_basic")]
    token_endpoint_auth_method: Option<String>,
    /// For `private_key_jwt` only: the client's public key as a JWK (RFC 7517) — Ed25519
    /// (`{"kty":"OKP","crv":"Ed25519","x":…}`) or P-256 (`{"kty":"EC","crv":"P-256","x":…,"y":…}`).
    /// A key with private members is refused.
    #[schema(value_type = Option<Object>)]
    jwk: Option<Value>,
}

/// An OAuth client as listed. Its secret is never shown again after creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthClient {
    /// The `client_id` (`ocl_…`).
    #[schema(value_type = String, example = "ocl_0c2e4g6i8k0m2o4q6s8u0a2c4e")]
    id: OAuthClientId,
    #[schema(value_type = String)]
    integration_id: IntegrationId,
    name: String,
    scopes: Vec<String>,
    token_endpoint_auth_method: &'static str,
    /// The registered public key (`private_key_jwt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    jwk: Option<Value>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: herald_domain::clock::Timestamp,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<herald_domain::clock::Timestamp>,
}

impl From<OAuthClientRecord> for OAuthClient {
    fn from(r: OAuthClientRecord) -> Self {
        Self {
            id: r.id,
            integration_id: r.integration_id,
            name: r.name,
            scopes: r.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            token_endpoint_auth_method: r.auth_method.as_str(),
            jwk: r.jwk.as_ref().map(|k| k.to_json()),
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A newly registered client; for the secret methods with its secret: store it now.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClient {
    #[serde(flatten)]
    details: OAuthClient,
    /// The same as `id`, under its OAuth name.
    client_id: String,
    /// The secret (`hcs_…`, 256 random bits), shown this once; absent for `private_key_jwt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "hcs_…")]
    client_secret: Option<String>,
}

/// Register an OAuth client for an integration.
#[utoipa::path(post, path = "/v1/integrations/{id}/oauth-clients", tag = "integrations",
    params(("id" = String, Path, description = "Integration id (int_…)")),
    request_body = CreateClient,
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 201, description = "Created; `client_secret` is shown this once", body = CreatedClient),
        (status = 400, description = "Unknown scope or method, a bad or missing key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: the scope, or granting admin without being admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such integration", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "integration_revoked", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_client(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(integration_id): IdPath<IntegrationId>,
    ApiJson(body): ApiJson<CreateClient>,
) -> Result<(StatusCode, Extension<ActionAudited>, Json<CreatedClient>), Problem> {
    let scopes = parse_scopes(&body.scopes)?;
    let auth_method = match body.token_endpoint_auth_method.as_deref() {
        None => ClientAuthMethod::ClientSecretBasic,
        Some(name) => ClientAuthMethod::parse(name).ok_or_else(|| {
            Problem::new(Code::InvalidRequest).field(FieldError::new(
                "token_endpoint_auth_method",
                "one of client_secret_basic, client_secret_post, private_key_jwt",
            ))
        })?,
    };
    let registration = ClientRegistration {
        name: body.name,
        auth_method,
        scopes,
        jwk: body.jwk,
    };
    let created = state
        .auth
        .create_oauth_client(
            &integration_id,
            registration,
            caller.manager(),
            &caller.initiator(),
        )
        .await
        .map_err(errors::auth)?;
    tracing::info!(client_id = %created.record.id, integration_id = %integration_id, "OAuth client created");
    Ok((
        StatusCode::CREATED,
        Extension(ActionAudited),
        Json(CreatedClient {
            client_id: created.record.id.to_string(),
            client_secret: created.secret.as_ref().map(|s| s.expose().to_owned()),
            details: created.record.into(),
        }),
    ))
}

/// List an integration's OAuth clients (never their secrets).
#[utoipa::path(get, path = "/v1/integrations/{id}/oauth-clients", tag = "integrations",
    params(
        ("id" = String, Path, description = "Integration id (int_…)"),
        ("limit" = Option<u32>, Query, description = "1–500, default 50"),
        ("after" = Option<String>, Query, description = "Cursor: the `next` of the previous page"),
    ),
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 200, description = "A page of clients", body = Page<OAuthClient>),
        (status = 404, description = "No such integration", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_clients(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(integration_id): IdPath<IntegrationId>,
    PageQuery(page): PageQuery,
) -> Result<Json<Page<OAuthClient>>, Problem> {
    let records = state
        .auth
        .oauth_clients(&integration_id, &overfetch(&page), caller.manager())
        .await
        .map_err(errors::auth)?;
    let items = records.into_iter().map(OAuthClient::from).collect();
    Ok(Json(Page::from_overfetch(
        items,
        page.limit,
        |c: &OAuthClient| c.id.to_string(),
    )))
}

/// Revoke an OAuth client: its tokens are refused from the next request on, on every node,
/// and it gets no new ones.
#[utoipa::path(delete, path = "/v1/oauth-clients/{id}", tag = "integrations",
    params(("id" = String, Path, description = "Client id (ocl_…)")),
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 200, description = "Revoked (revoking again keeps the first time)", body = OAuthClient),
        (status = 404, description = "No such client", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn revoke_client(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(client_id): IdPath<OAuthClientId>,
) -> Result<(Option<Extension<ActionAudited>>, Json<OAuthClient>), Problem> {
    let (record, revoked_now) = state
        .auth
        .revoke_oauth_client(&client_id, caller.manager(), &caller.initiator())
        .await
        .map_err(errors::auth)?;
    tracing::info!(client_id = %record.id, revoked_now, "OAuth client revoked");
    Ok((
        revoked_now.then_some(Extension(ActionAudited)),
        Json(record.into()),
    ))
}
