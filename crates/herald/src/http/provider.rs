//! `/webhooks/whatsapp`: Meta's set-up handshake (GET) and its callbacks (POST). A callback is
//! authenticated over its raw bytes before anything reads it, stored encrypted, and answered
//! `200` at once; a worker processes it. A failed check is recorded and nothing is processed.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_domain::messages::ReportError;
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::errors;
use super::problem::{Code, Problem, ProblemBody};

/// Callbacks can batch many entries; larger than the API's own request limit.
pub const CALLBACK_BODY_LIMIT: usize = 1024 * 1024;
/// Meta's challenge is a short number; anything longer is not Meta.
const MAX_CHALLENGE_LEN: usize = 256;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handshake, receive))
        .layer(DefaultBodyLimit::max(CALLBACK_BODY_LIMIT))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    #[param(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    #[param(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    #[param(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's webhook set-up check: echoes the challenge when the verify token matches.
#[utoipa::path(get, path = "/webhooks/whatsapp", tag = "webhooks",
    params(Handshake),
    responses(
        (status = 200, description = "The challenge, as plain text", body = String, content_type = "text/plain"),
        (status = 403, description = "Wrong mode or verify token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "The WhatsApp channel is not configured", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn handshake(
    State(state): State<AppState>,
    Query(query): Query<Handshake>,
) -> Result<Response, Problem> {
    let Some(whatsapp) = &state.whatsapp else {
        return Err(Problem::not_found().detail("the WhatsApp channel is not configured"));
    };
    let token_ok = query.verify_token.as_deref().is_some_and(|given| {
        herald_whatsapp::verify_token_matches(whatsapp.verify_token.expose_secret(), given)
    });
    match (query.mode.as_deref(), query.challenge) {
        (Some("subscribe"), Some(challenge))
            if token_ok && !challenge.is_empty() && challenge.len() <= MAX_CHALLENGE_LEN =>
        {
            tracing::info!("WhatsApp webhook verification succeeded");
            Ok((
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                challenge,
            )
                .into_response())
        }
        _ => {
            tracing::warn!("WhatsApp webhook verification refused");
            Err(Problem::new(Code::Forbidden).detail("wrong hub.mode or hub.verify_token"))
        }
    }
}

/// A WhatsApp callback (statuses, customers' messages), signed with the app secret.
#[utoipa::path(post, path = "/webhooks/whatsapp", tag = "webhooks",
    request_body(content = String, description = "Meta's callback JSON, verified byte for byte", content_type = "application/json"),
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the body under the app secret>")),
    responses(
        (status = 200, description = "Stored; processing follows"),
        (status = 401, description = "Missing or wrong signature: nothing was processed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "The WhatsApp channel is not configured", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited (limit `source`): the network sent too many callbacks, or too many with bad signatures; Meta retries", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Could not be stored; Meta retries", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn receive(
    State(state): State<AppState>,
    connection: Option<axum::Extension<super::limits::Source>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let Some(whatsapp) = &state.whatsapp else {
        return Err(Problem::not_found().detail("the WhatsApp channel is not configured"));
    };
    let source = connection.and_then(|c| c.0.0);
    state
        .limits
        .check_source(source, true)
        .map_err(super::limits::limited)?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = herald_whatsapp::verify(
        whatsapp.app_secret.expose_secret().as_bytes(),
        signature,
        &body,
    ) {
        tracing::warn!(
            reason = e.code(),
            "WhatsApp callback refused: bad signature"
        );
        state.limits.source_failure(source);
        state
            .reports
            .reject(herald_whatsapp::PROVIDER, e.code(), source)
            .await
            .map_err(errors::store)?;
        return Err(Problem::new(Code::Unauthorized)
            .detail("missing or invalid X-Hub-Signature-256")
            .audited());
    }
    match state
        .reports
        .receive(herald_whatsapp::PROVIDER, &body)
        .await
    {
        Ok(_) => Ok(StatusCode::OK),
        Err(ReportError::Store(e)) => Err(errors::store(e)),
        Err(ReportError::Keys(e)) => Err(errors::keys(e)),
        Err(e) => {
            tracing::error!(error = %e, "could not store a WhatsApp callback");
            Err(Problem::internal())
        }
    }
}
