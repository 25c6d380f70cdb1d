//! The OAuth 2.0 authorization server's endpoints: token (RFC 6749 §4.4), revocation
//! (RFC 7009), introspection (RFC 7662), the signing keys (RFC 7517) and the metadata
//! (RFC 8414).
//!
//! These endpoints speak OAuth's own wire format, not problem+json: form-encoded requests and
//! `{"error", "error_description"}` answers (RFC 6749 §5.2), because that is what integrators'
//! OAuth libraries parse. Unknown parameters are ignored as RFC 6749 §3.2 requires — the one
//! place Herald does not refuse them — but a parameter given twice is refused (same section).
//! Server failures (5xx) stay problem documents like everywhere else.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_domain::auth::oauth::{
    ClientAuthMethod, JWT_BEARER_ASSERTION, OAuthError, OAuthErrorCode, PresentedClient, Refusal,
    TokenRequest,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::errors;
use super::extract::{Authorized, OAuthIntrospect};
use super::limits::Source;
use super::problem::{Problem, ProblemBody};

/// Token requests are a handful of short parameters; an assertion is the longest.
const FORM_LIMIT: usize = 16 * 1024;
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(revoke))
        .routes(routes!(introspect))
        .routes(routes!(jwks))
        .routes(routes!(metadata))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
}

/// Marks a response whose error body is in its own format (OAuth's), so the middleware that
/// turns bare error statuses into problem documents leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct OwnErrorFormat;

/// The token request (RFC 6749 §4.4.2, with §2.3.1 and RFC 7523 §2.2 client authentication).
#[derive(Debug, ToSchema)]
pub struct TokenForm {
    /// `client_credentials`.
    #[schema(example = "client_credentials")]
    grant_type: Option<String>,
    /// Space-separated scopes, each held by the client; default: all the client's scopes.
    #[schema(example = "messages:send")]
    scope: Option<String>,
    /// With `client_secret_post` or an assertion (otherwise in the Basic header).
    client_id: Option<String>,
    /// `client_secret_post` only; `client_secret_basic` sends it in `Authorization: Basic`.
    client_secret: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` (`private_key_jwt`).
    client_assertion_type: Option<String>,
    /// The client's signed JWT: `iss` = `sub` = client id, `aud` = the token endpoint, a
    /// unique `jti` (single use), `exp` at most an hour ahead.
    client_assertion: Option<String>,
}

/// A successful token answer (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenAnswer {
    /// A JWT (RFC 9068): send it as `Authorization: Bearer`.
    access_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until it expires.
    #[schema(example = 600)]
    expires_in: i64,
    /// The scopes granted, space-separated.
    scope: String,
}

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// invalid_request, invalid_client, unauthorized_client, unsupported_grant_type,
    /// invalid_scope.
    #[schema(example = "invalid_scope")]
    error: &'static str,
    error_description: &'static str,
}

/// Revocation (RFC 7009 §2.1), with the client's authentication as at the token endpoint.
#[derive(Debug, ToSchema)]
pub struct RevokeForm {
    /// The access token to revoke.
    token: Option<String>,
    /// `access_token` (the only kind Herald issues); other values are ignored (§2.1).
    token_type_hint: Option<String>,
}

/// Introspection (RFC 7662 §2.1).
#[derive(Debug, ToSchema)]
pub struct IntrospectForm {
    token: Option<String>,
    token_type_hint: Option<String>,
}

/// An introspection answer (RFC 7662 §2.2): only `active` for a token that is not active, or
/// not the caller's to see.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    /// The integration the token acts for (Herald's own member).
    #[serde(skip_serializing_if = "Option::is_none")]
    integration_id: Option<String>,
}

/// A JSON document whose shape its RFC defines (JWK Set, RFC 7517 §5; metadata, RFC 8414 §2).
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct RfcDocument(serde_json::Value);

/// A form's parameters, each at most once.
struct Form(HashMap<String, String>);

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, Refusal> {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM_CONTENT_TYPE));
        if !form_type {
            return Err(invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let mut params = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            // RFC 6749 §3.1/§3.2: an empty parameter is as if omitted.
            if value.is_empty() {
                continue;
            }
            if params
                .insert(name.into_owned(), value.into_owned())
                .is_some()
            {
                return Err(invalid_request("a parameter is given more than once"));
            }
        }
        Ok(Self(params))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    fn token_form(mut self) -> TokenForm {
        TokenForm {
            grant_type: self.take("grant_type"),
            scope: self.take("scope"),
            client_id: self.take("client_id"),
            client_secret: self.take("client_secret"),
            client_assertion_type: self.take("client_assertion_type"),
            client_assertion: self.take("client_assertion"),
        }
    }
}

const fn invalid_request(description: &'static str) -> Refusal {
    Refusal::new(OAuthErrorCode::InvalidRequest, description)
}

const fn invalid_client(description: &'static str) -> Refusal {
    Refusal::new(OAuthErrorCode::InvalidClient, description)
}

/// How the client authenticated: Basic header, form secret or assertion — exactly one
/// (RFC 6749 §2.3: "MUST NOT use more than one authentication method").
fn presented_client(
    headers: &HeaderMap,
    form: &mut TokenForm,
) -> Result<Option<PresentedClient>, Refusal> {
    let basic = basic_credentials(headers)?;
    let methods = usize::from(basic.is_some())
        + usize::from(form.client_secret.is_some())
        + usize::from(form.client_assertion.is_some() || form.client_assertion_type.is_some());
    if methods > 1 {
        return Err(invalid_request(
            "use exactly one client authentication method",
        ));
    }
    if let Some((client_id, secret)) = basic {
        if form.client_id.as_ref().is_some_and(|id| *id != client_id) {
            return Err(invalid_request(
                "client_id differs from the authenticated client",
            ));
        }
        return Ok(Some(PresentedClient::Secret {
            method: ClientAuthMethod::ClientSecretBasic,
            client_id,
            secret,
        }));
    }
    if let Some(secret) = form.client_secret.take() {
        let client_id = form
            .client_id
            .clone()
            .ok_or(invalid_request("client_secret needs client_id"))?;
        return Ok(Some(PresentedClient::Secret {
            method: ClientAuthMethod::ClientSecretPost,
            client_id,
            secret: SecretString::from(secret),
        }));
    }
    match (
        form.client_assertion_type.take(),
        form.client_assertion.take(),
    ) {
        (None, None) => Ok(None),
        (Some(kind), Some(assertion)) if kind == JWT_BEARER_ASSERTION => {
            Ok(Some(PresentedClient::Assertion {
                client_id: form.client_id.clone(),
                assertion,
            }))
        }
        (Some(_), Some(_)) => Err(invalid_client("unsupported client_assertion_type")),
        _ => Err(invalid_request(
            "client_assertion and client_assertion_type go together",
        )),
    }
}

/// `Authorization: Basic` with the form-encoded client id and secret (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, SecretString)>, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = invalid_client("malformed Basic credentials");
    let value = value.to_str().map_err(|_| malformed)?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid_client(
            "client authentication uses the Basic scheme here",
        ));
    }
    let decoded = data_encoding::BASE64
        .decode(encoded.trim().as_bytes())
        .map_err(|_| malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed)?;
    let (id, secret) = decoded.split_once(':').ok_or(malformed)?;
    let id = form_decode(id).ok_or(malformed)?;
    let secret = form_decode(secret).ok_or(malformed)?;
    Ok(Some((id, SecretString::from(secret))))
}

/// The `application/x-www-form-urlencoded` decoding of one value.
fn form_decode(value: &str) -> Option<String> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

/// A JSON answer with the headers every OAuth answer carries (RFC 6749 §5.1: no caching).
fn answer(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.extensions_mut().insert(OwnErrorFormat);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The RFC 6749 §5.2 error answer: `invalid_client` is 401 with a challenge, the rest 400.
fn refusal_answer(refusal: &Refusal) -> Response {
    let body = OAuthErrorBody {
        error: refusal.error.as_str(),
        error_description: refusal.description,
    };
    if refusal.error == OAuthErrorCode::InvalidClient {
        let mut response = answer(StatusCode::UNAUTHORIZED, &body);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"herald\""),
        );
        response
    } else {
        answer(StatusCode::BAD_REQUEST, &body)
    }
}

/// Records a refusal (aggregated per source network) and answers it; a failure that is not
/// the caller's becomes the usual problem document.
async fn refused(
    state: &AppState,
    error: OAuthError,
    source: Option<std::net::IpAddr>,
    endpoint: &'static str,
) -> Response {
    match error {
        OAuthError::Refused(refusal) => {
            if refusal.error == OAuthErrorCode::InvalidClient {
                // A failed client authentication counts like a bad API key (brute force).
                state.limits.source_failure(source);
            }
            tracing::info!(
                endpoint,
                error = refusal.error.as_str(),
                reason = refusal.reason,
                "OAuth request refused"
            );
            if let Err(e) = state.auth.oauth().refused(&refusal, source, endpoint).await {
                return errors::store(e).into_response();
            }
            refusal_answer(&refusal)
        }
        OAuthError::Store(e) => errors::store(e).into_response(),
        OAuthError::Keys(e) => errors::keys(e).into_response(),
        OAuthError::Signing | OAuthError::Random(_) => {
            tracing::error!(error = %error, "OAuth request failed");
            Problem::internal().into_response()
        }
    }
}

type Connection = Option<axum::Extension<Source>>;

fn source_of(connection: &Connection) -> Option<std::net::IpAddr> {
    connection.as_ref().and_then(|c| c.0.0)
}

/// The per-source limit of the unauthenticated endpoints: a network cooling off after
/// failures, or over its request rate, is answered 429 before any work.
fn source_limited(state: &AppState, source: Option<std::net::IpAddr>) -> Option<Response> {
    state
        .limits
        .check_source(source, true)
        .err()
        .map(|limited| super::limits::limited(limited).into_response())
}

/// Get an access token (client credentials grant).
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The access token (RFC 6749 §5.1); `Cache-Control: no-store`", body = TokenAnswer),
        (status = 400, description = "invalid_request, invalid_scope, unsupported_grant_type, unauthorized_client (RFC 6749 §5.2)", body = OAuthErrorBody),
        (status = 401, description = "invalid_client, with `WWW-Authenticate: Basic`", body = OAuthErrorBody),
        (status = 429, description = "rate_limited (limit `source`): too many requests or failed client authentications from the caller's network", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The database or the audit trail is unavailable", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn token(
    State(state): State<AppState>,
    connection: Connection,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = source_of(&connection);
    if let Some(limited) = source_limited(&state, source) {
        return limited;
    }
    let request = Form::parse(&headers, &body).and_then(|form| {
        let mut form = form.token_form();
        let client = presented_client(&headers, &mut form)?;
        let grant_type = form
            .grant_type
            .ok_or(invalid_request("grant_type is required"))?;
        Ok(TokenRequest {
            grant_type,
            scope: form.scope,
            client,
        })
    });
    let issued = match request {
        Ok(request) => state.auth.oauth().issue_token(&request).await,
        Err(refusal) => Err(OAuthError::Refused(refusal)),
    };
    match issued {
        Ok(issued) => {
            tracing::info!(token_id = %issued.token_id, "access token issued");
            answer(
                StatusCode::OK,
                &TokenAnswer {
                    access_token: issued.access_token.expose_secret().to_owned(),
                    token_type: "Bearer",
                    expires_in: issued.expires_in,
                    scope: issued.scope,
                },
            )
        }
        Err(error) => refused(&state, error, source, "token").await,
    }
}

/// Revoke an access token (RFC 7009): refused from the next request on, on every node.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = RevokeForm, description = "With the client's authentication as at /oauth/token", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked — or the token was invalid or expired already (RFC 7009 §2.2)"),
        (status = 400, description = "invalid_request; unauthorized_client: the token is another client's", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
        (status = 429, description = "rate_limited (limit `source`)", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn revoke(
    State(state): State<AppState>,
    connection: Connection,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = source_of(&connection);
    if let Some(limited) = source_limited(&state, source) {
        return limited;
    }
    let parsed = Form::parse(&headers, &body).and_then(|mut form| {
        let revoke = RevokeForm {
            token: form.take("token"),
            token_type_hint: form.take("token_type_hint"),
        };
        let mut client = form.token_form();
        let presented = presented_client(&headers, &mut client)?;
        let token = revoke.token.ok_or(invalid_request("token is required"))?;
        // §2.1: a hint the server does not understand is no error; Herald has one token kind.
        let _ = revoke.token_type_hint;
        Ok((presented, token))
    });
    let result = match parsed {
        Ok((client, token)) => {
            state
                .auth
                .oauth()
                .revoke_token(client.as_ref(), &token)
                .await
        }
        Err(refusal) => Err(OAuthError::Refused(refusal)),
    };
    match result {
        Ok(revoked_now) => {
            tracing::info!(revoked_now, "access token revocation");
            answer(StatusCode::OK, &serde_json::json!({}))
        }
        Err(error) => refused(&state, error, source, "revoke").await,
    }
}

/// Introspect an access token (RFC 7662); needs `oauth:introspect`. Outside `admin`, only the
/// caller's own integration's tokens are ever active.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = IntrospectForm, content_type = "application/x-www-form-urlencoded"),
    security(("bearer" = ["oauth:introspect"])),
    responses(
        (status = 200, description = "The token's state (RFC 7662 §2.2)", body = Introspection),
        (status = 400, description = "invalid_request", body = OAuthErrorBody),
        (status = 401, description = "No valid credential", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential lacks oauth:introspect", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn introspect(
    State(state): State<AppState>,
    caller: Authorized<OAuthIntrospect>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = Form::parse(&headers, &body).and_then(|mut form| {
        let asked = IntrospectForm {
            token: form.take("token"),
            token_type_hint: form.take("token_type_hint"),
        };
        let _ = asked.token_type_hint;
        asked.token.ok_or(invalid_request("token is required"))
    });
    let token = match token {
        Ok(token) => token,
        Err(refusal) => return refusal_answer(&refusal),
    };
    match state
        .auth
        .oauth()
        .introspect(&token, &caller.principal)
        .await
    {
        Ok(Some(claims)) => answer(
            StatusCode::OK,
            &Introspection {
                active: true,
                scope: Some(claims.scope),
                client_id: Some(claims.client_id),
                token_type: Some("Bearer"),
                exp: Some(claims.exp),
                iat: Some(claims.iat),
                sub: Some(claims.sub),
                aud: Some(claims.aud),
                iss: Some(claims.iss),
                jti: Some(claims.jti),
                integration_id: Some(claims.integration_id),
            },
        ),
        Ok(None) => answer(StatusCode::OK, &Introspection::default()),
        Err(error) => refused(&state, error, None, "introspect").await,
    }
}

/// The public keys that verify access tokens (RFC 7517), current and retired-but-valid.
#[utoipa::path(get, path = "/oauth/jwks.json", tag = "oauth",
    responses((status = 200, description = "A JWK Set (RFC 7517 §5)", body = RfcDocument)))]
async fn jwks(State(state): State<AppState>) -> Response {
    match state.auth.oauth().jwks().await {
        Ok(set) => {
            let mut response = axum::Json(RfcDocument(set)).into_response();
            // Short: after a rotation, verifiers see the new key within a minute (and RFC 9068
            // verifiers re-fetch on an unknown `kid` anyway).
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            response
        }
        Err(error) => refused(&state, error, None, "jwks").await,
    }
}

/// The authorization server's metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "RFC 8414 §2 metadata", body = RfcDocument)))]
async fn metadata(State(state): State<AppState>) -> Response {
    axum::Json(RfcDocument(state.auth.oauth().metadata())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn form_headers() -> HeaderMap {
        headers(&[(header::CONTENT_TYPE, FORM_CONTENT_TYPE)])
    }

    #[test]
    fn forms_refuse_repeats_and_other_media_types() {
        let err = Form::parse(&form_headers(), b"grant_type=a&grant_type=b")
            .err()
            .unwrap();
        assert_eq!(err.error, OAuthErrorCode::InvalidRequest);
        let json = headers(&[(header::CONTENT_TYPE, "application/json")]);
        assert!(Form::parse(&json, b"grant_type=a").is_err());
        let with_charset = headers(&[(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8",
        )]);
        let mut form = Form::parse(&with_charset, b"grant_type=client_credentials&x=1").unwrap();
        assert_eq!(form.take("grant_type").unwrap(), "client_credentials");
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        // RFC 6749 §2.3.1: id and secret are form-encoded before base64.
        let encoded = data_encoding::BASE64.encode(b"ocl_a%2Bb:s%3Ac+r");
        let map = headers(&[(header::AUTHORIZATION, &format!("Basic {encoded}"))]);
        let (id, secret) = basic_credentials(&map).unwrap().unwrap();
        assert_eq!(id, "ocl_a+b");
        assert_eq!(secret.expose_secret(), "s:c r");
        for bad in ["Basic !!!", "Basic", "Bearer abc"] {
            let map = headers(&[(header::AUTHORIZATION, bad)]);
            let err = basic_credentials(&map).err().unwrap();
            assert_eq!(err.error, OAuthErrorCode::InvalidClient, "{bad}");
        }
    }

    #[test]
    fn exactly_one_client_authentication_method() {
        let encoded = data_encoding::BASE64.encode(b"ocl_x:secret");
        let map = headers(&[(header::AUTHORIZATION, &format!("Basic {encoded}"))]);
        let mut form = Form::parse(
            &form_headers(),
            b"grant_type=client_credentials&client_id=ocl_x&client_secret=secret",
        )
        .unwrap()
        .token_form();
        let err = presented_client(&map, &mut form).err().unwrap();
        assert_eq!(err.error, OAuthErrorCode::InvalidRequest);
        let mut only_type = Form::parse(
            &form_headers(),
            format!("client_assertion_type={JWT_BEARER_ASSERTION}").as_bytes(),
        )
        .unwrap()
        .token_form();
        let err = presented_client(&HeaderMap::new(), &mut only_type)
            .err()
            .unwrap();
        assert_eq!(err.error, OAuthErrorCode::InvalidRequest);
        let mut other_type = Form::parse(
            &form_headers(),
            b"client_assertion_type=urn:x&client_assertion=a.b.c",
        )
        .unwrap()
        .token_form();
        let err = presented_client(&HeaderMap::new(), &mut other_type)
            .err()
            .unwrap();
        assert_eq!(err.error, OAuthErrorCode::InvalidClient);
        let mut none = Form::parse(&form_headers(), b"grant_type=client_credentials")
            .unwrap()
            .token_form();
        assert!(
            presented_client(&HeaderMap::new(), &mut none)
                .unwrap()
                .is_none()
        );
    }
}
