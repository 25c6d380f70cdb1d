//! `/v1/integrations/{id}/webhooks`: where an integration receives its events. Admin only.
//! The signing secret is in the creation answer and nowhere else, ever.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use herald_domain::ids::{IntegrationId, WebhookEndpointId};
use herald_domain::webhooks::{EndpointError, EndpointRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::access::ActionAudited;
use crate::http::errors;
use crate::http::extract::{ApiJson, Authorized, IdPath, IntegrationsManage};
use crate::http::problem::{Code, FieldError, Problem, ProblemBody};
use crate::http::time::{rfc3339, rfc3339_opt};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_endpoint, list_endpoints))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// An `https://` URL with a public host (at most 2048 characters).
    #[schema(example = "https://shop.example.com/hooks/herald")]
    url: String,
    /// One or more of `message.status`, `message.inbound`.
    #[schema(example = json!(["message.status", "message.inbound"]))]
    events: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Endpoint {
    #[schema(value_type = String, example = "whk_3c5e7g9i1k3m5o7q9s1u3w5y7a")]
    id: WebhookEndpointId,
    #[schema(value_type = String)]
    integration_id: IntegrationId,
    url: String,
    events: Vec<&'static str>,
    /// `false` once disabled after a run of failed deliveries or a `410 Gone`.
    enabled: bool,
    consecutive_failures: u32,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    disabled_at: Option<herald_domain::clock::Timestamp>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: herald_domain::clock::Timestamp,
}

impl From<EndpointRecord> for Endpoint {
    fn from(r: EndpointRecord) -> Self {
        Self {
            id: r.id,
            integration_id: r.integration_id,
            url: r.url,
            events: r.events.iter().map(|e| e.as_str()).collect(),
            enabled: r.enabled,
            consecutive_failures: r.consecutive_failures,
            disabled_at: r.disabled_at,
            created_at: r.created_at,
        }
    }
}

/// A new endpoint with its signing secret: store it now, it is not shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// `whsec_…`: verifies the `webhook-signature` header (Standard Webhooks). Shown this once.
    #[schema(example = "whsec_…")]
    secret: String,
}

fn endpoint_error(error: EndpointError) -> Problem {
    match error {
        EndpointError::UnknownIntegration => Problem::not_found().detail("no such integration"),
        EndpointError::Url(e) => {
            Problem::new(Code::InvalidRequest).field(FieldError::new("url", e.to_string()))
        }
        EndpointError::Events => Problem::new(Code::InvalidRequest).field(FieldError::new(
            "events",
            format!(
                "one or more of: {}",
                herald_domain::webhooks::EventType::ALL
                    .map(|t| t.as_str())
                    .join(", ")
            ),
        )),
        EndpointError::TooMany => Problem::new(Code::InvalidRequest)
            .detail("the integration already has the maximum number of endpoints (16)"),
        EndpointError::Store(e) => errors::store(e),
        EndpointError::Keys(e) => errors::keys(e),
    }
}

/// Register a webhook endpoint for an integration. The signing secret is in this answer only.
#[utoipa::path(post, path = "/v1/integrations/{id}/webhooks", tag = "integrations",
    params(("id" = String, Path, description = "Integration id (int_…)")),
    request_body = CreateEndpoint,
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = CreatedEndpoint),
        (status = 400, description = "Bad URL (not https, not public) or events", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such integration", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_endpoint(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(integration_id): IdPath<IntegrationId>,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, Extension<ActionAudited>, Json<CreatedEndpoint>), Problem> {
    state
        .auth
        .managed_integration(&integration_id, caller.manager())
        .await
        .map_err(errors::auth)?;
    // Events about the incident register go only where the register may be read.
    if body
        .events
        .iter()
        .any(|e| herald_domain::webhooks::EventType::parse(e).is_some_and(|t| t.operator_only()))
        && !caller
            .principal
            .scopes
            .allows(herald_domain::auth::Scope::IncidentsRead)
    {
        return Err(Problem::new(Code::Forbidden)
            .detail("subscribing to incident.deadline requires the scope incidents:read"));
    }
    let (record, secret) = state
        .endpoints
        .create(
            &integration_id,
            &body.url,
            &body.events,
            &caller.initiator(),
        )
        .await
        .map_err(endpoint_error)?;
    tracing::info!(endpoint_id = %record.id, integration_id = %integration_id, "webhook endpoint created");
    Ok((
        StatusCode::CREATED,
        Extension(ActionAudited),
        Json(CreatedEndpoint {
            endpoint: record.into(),
            secret: secret.to_string(),
        }),
    ))
}

/// List an integration's webhook endpoints (never their secrets).
#[utoipa::path(get, path = "/v1/integrations/{id}/webhooks", tag = "integrations",
    params(("id" = String, Path, description = "Integration id (int_…)")),
    security(("bearer" = ["integrations:manage"])),
    responses(
        (status = 200, description = "The endpoints", body = Vec<Endpoint>),
        (status = 404, description = "No such integration", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_endpoints(
    State(state): State<AppState>,
    caller: Authorized<IntegrationsManage>,
    IdPath(integration_id): IdPath<IntegrationId>,
) -> Result<Json<Vec<Endpoint>>, Problem> {
    state
        .auth
        .managed_integration(&integration_id, caller.manager())
        .await
        .map_err(errors::auth)?;
    let records = state
        .endpoints
        .list(&integration_id)
        .await
        .map_err(errors::store)?;
    Ok(Json(records.into_iter().map(Endpoint::from).collect()))
}
