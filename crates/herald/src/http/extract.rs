//! Extractors that turn a request into typed, checked values or into a problem document:
//! [`Authorized`] (credential and scope), [`ApiJson`] (body), [`IdPath`] (typed ids in paths)
//! and [`PageQuery`] (list paging).

use std::borrow::Cow;
use std::marker::PhantomData;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use herald_domain::audit::{Initiator, RequestId};
use herald_domain::auth::{AuthError, Credential, Principal, Scope};
use herald_domain::store::PageRequest;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::access::{AccessNote, Refusal, reason_code};
use super::problem::{Code, FieldError, Problem};

/// A scope an endpoint requires, as a type, so the requirement is visible in the signature.
pub trait RequiredScope: Send + Sync {
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($name:ident => $scope:expr),* $(,)?) => {
        $(
            #[derive(Debug)]
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: Scope = $scope;
            }
        )*
    };
}

scopes! {
    AdminScope => Scope::Admin,
    AuditRead => Scope::AuditRead,
    ConsentsRead => Scope::ConsentsRead,
    ConsentsWrite => Scope::ConsentsWrite,
    MessagesSend => Scope::MessagesSend,
    MessagesRead => Scope::MessagesRead,
    SubjectsRead => Scope::SubjectsRead,
    SubjectsWrite => Scope::SubjectsWrite,
    SubjectsErase => Scope::SubjectsErase,
    SubjectsExport => Scope::SubjectsExport,
    SubjectsHold => Scope::SubjectsHold,
    IntegrationsManage => Scope::IntegrationsManage,
    OAuthIntrospect => Scope::OAuthIntrospect,
    BackupsRead => Scope::BackupsRead,
    IncidentsRead => Scope::IncidentsRead,
    IncidentsWrite => Scope::IncidentsWrite,
    VendorsRead => Scope::VendorsRead,
    VendorsWrite => Scope::VendorsWrite,
}

/// The authenticated caller, holding scope `S`. Missing, malformed, unknown, revoked or expired
/// credentials are `401` (all alike to the caller); a valid credential without `S` is `403`.
#[derive(Debug)]
pub struct Authorized<S: RequiredScope> {
    pub principal: Principal,
    /// The route template the request matched, for the audit entries it causes.
    route: Option<MatchedPath>,
    _scope: PhantomData<S>,
}

impl<S: RequiredScope> Authorized<S> {
    /// Which subjects the caller may see and register.
    pub fn access(&self) -> herald_domain::subjects::Access<'_> {
        herald_domain::subjects::Access::of(&self.principal)
    }

    /// The caller as a manager of integrations and keys.
    pub fn manager(&self) -> herald_domain::auth::Manager<'_> {
        herald_domain::auth::Manager::Key(&self.principal)
    }

    /// The caller and this request, for the audit entries of the actions it asks for.
    pub fn initiator(&self) -> Initiator {
        let initiator = Initiator::integration(
            &self.principal,
            super::request_id::current().and_then(|id| RequestId::parse(&id)),
        );
        match &self.route {
            Some(route) => initiator.on_route(route.as_str()),
            None => initiator,
        }
    }
}

fn bearer_token(parts: &Parts) -> Result<Option<&str>, ()> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let (scheme, token) = value.split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(());
    }
    Ok(Some(token.trim()))
}

impl<S: RequiredScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let note = parts
            .extensions
            .get::<AccessNote>()
            .cloned()
            .unwrap_or_default();
        let source = parts
            .extensions
            .get::<super::limits::Source>()
            .and_then(|s| s.0);
        // A network cooling off after failed authentications gets nothing, not even a check
        // of its next guess.
        if let Err(limited) = state.limits.check_source(source, false) {
            note.refused(Refusal::RateLimited(limited.limit));
            return Err(super::limits::limited(limited));
        }
        let token = match bearer_token(parts) {
            Ok(token) => token,
            Err(()) => {
                state.limits.source_failure(source);
                tracing::info!(
                    reason = "malformed authorization header",
                    "authentication failed"
                );
                note.refused(Refusal::Unauthenticated("malformed"));
                return Err(Problem::new(Code::Unauthorized).bearer_error("invalid_request"));
            }
        };
        let presented = token.is_some();
        let principal = match state.auth.authenticate(token).await {
            Ok(principal) => principal,
            Err(AuthError::Unauthorized(reason)) => {
                tracing::info!(reason = %reason, "authentication failed");
                state.limits.source_failure(source);
                note.refused(Refusal::Unauthenticated(reason_code(reason)));
                let problem = Problem::new(Code::Unauthorized);
                return Err(if presented {
                    problem.bearer_error("invalid_token")
                } else {
                    problem
                });
            }
            Err(other) => return Err(super::errors::auth(other)),
        };
        let span = tracing::Span::current();
        span.record("integration_id", principal.integration_id.as_str());
        match &principal.credential {
            Credential::ApiKey(key_id) => span.record("key_id", key_id.as_str()),
            Credential::OAuth {
                client_id,
                token_id,
            } => span
                .record("client_id", client_id.as_str())
                .record("token_id", token_id.as_str()),
        };
        note.authenticated(&principal);
        // For extractors after this one that scope what the caller may reach
        // ([`LinkedSubject`]).
        parts.extensions.insert(principal.clone());
        // Every request of a valid credential counts, also one its scope does not allow.
        let class = parts
            .extensions
            .get::<MatchedPath>()
            .and_then(|route| super::limits::route_class(&parts.method, route.as_str()));
        match state.limits.check_credential(&principal, class) {
            Ok(Some(allowance)) => {
                if let Some(note) = parts.extensions.get::<super::limits::RateNote>() {
                    note.note(allowance);
                }
            }
            Ok(None) => {}
            Err(limited) => {
                tracing::info!(limit = limited.limit, "rate limited");
                note.refused(Refusal::RateLimited(limited.limit));
                return Err(super::limits::limited(limited));
            }
        }
        if !principal.scopes.allows(S::SCOPE) {
            tracing::info!(required = %S::SCOPE, "authorisation failed: missing scope");
            note.refused(Refusal::Forbidden(S::SCOPE));
            return Err(Problem::new(Code::Forbidden)
                .detail(format!("this endpoint requires the scope {}", S::SCOPE)));
        }
        let route = parts.extensions.get::<MatchedPath>().cloned();
        Ok(Self {
            principal,
            route,
            _scope: PhantomData,
        })
    }
}

/// A JSON request body. Wrong content type → 415; too large → 413; not JSON → 400
/// `malformed_json`; JSON of the wrong shape (missing, unknown or mistyped fields) → 400
/// `invalid_request` with the offending fields named, never their values.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &St) -> Result<Self, Problem> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            return Err(Problem::new(Code::UnsupportedMediaType)
                .detail("send the body as application/json"));
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        Problem::new(Code::PayloadTooLarge)
                    } else {
                        Problem::new(Code::MalformedJson).detail("the body could not be read")
                    }
                })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body into `T`, describing errors without echoing any part of the input
/// except field names that are plain identifiers.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => value,
        Err(error) => {
            let path = safe_path(error.path());
            let inner = error.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    Problem::new(Code::InvalidRequest).field(describe_data_error(&path, &inner))
                }
                _ => Problem::new(Code::MalformedJson).detail(format!(
                    "invalid JSON at line {}, column {}",
                    inner.line(),
                    inner.column()
                )),
            });
        }
    };
    deserializer.end().map_err(|_| {
        Problem::new(Code::MalformedJson).detail("unexpected data after the JSON value")
    })?;
    Ok(value)
}

/// A key from the input, if it is a plain identifier; otherwise it could be anything
/// (including personal data), so it is not repeated back.
fn safe_name(name: &str) -> &str {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain { name } else { "(unnamed)" }
}

/// The JSON path of an error (`nested.scopes[0]`), with every key that is not a plain
/// identifier replaced.
fn safe_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(safe_name(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

fn quoted_name(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn describe_data_error(path: &str, error: &serde_json::Error) -> FieldError {
    let message = error.to_string();
    let (field, rule): (String, Cow<'static, str>) = if message.starts_with("unknown field") {
        // The path already ends with the (sanitised) unknown key.
        (path.to_owned(), "unknown field".into())
    } else if message.starts_with("missing field") {
        // The path is the parent; the missing name is one of our own field names.
        let name = quoted_name(&message).map(safe_name).unwrap_or("(unnamed)");
        let field = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        (field, "is required".into())
    } else if message.starts_with("invalid type") {
        (path.to_owned(), "has the wrong type".into())
    } else if message.starts_with("duplicate field") {
        (path.to_owned(), "appears more than once".into())
    } else if message.starts_with("unknown variant") {
        (path.to_owned(), "is not one of the allowed values".into())
    } else {
        (path.to_owned(), "has an invalid value".into())
    };
    let field = if field.is_empty() {
        "(body)".to_owned()
    } else {
        field
    };
    FieldError::new(field, rule)
}

/// A typed id taken from the path. A malformed id cannot name anything, so it is `404`.
#[derive(Debug)]
pub struct IdPath<T>(pub T);

impl<T: FromStr + Send, St: Send + Sync> FromRequestParts<St> for IdPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Problem> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::not_found())?;
        raw.parse().map(IdPath).map_err(|_| Problem::not_found())
    }
}

/// The subject named by the path's `{id}`, which the caller (authenticated by the [`Authorized`]
/// extractor before this one) may see: linked to it, or `admin`. Any other id — unknown,
/// malformed or another integration's subject — is the same `404`, after the same look-up.
#[derive(Debug)]
pub struct LinkedSubject(pub herald_domain::ids::SubjectId);

impl FromRequestParts<AppState> for LinkedSubject {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        // Fail closed: without an authenticated caller nothing is visible.
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("LinkedSubject used without Authorized before it");
                Problem::internal()
            })?;
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::not_found())?;
        let id = params
            .iter()
            .find(|(name, _)| name == "id")
            .and_then(|(_, raw)| raw.parse::<herald_domain::ids::SubjectId>().ok())
            .ok_or_else(Problem::not_found)?;
        let access = herald_domain::subjects::Access::of(&principal);
        if state
            .subjects
            .visible(&id, access)
            .await
            .map_err(super::errors::subjects)?
        {
            // The access entry names the subject read or acted on.
            if let Some(note) = parts.extensions.get::<AccessNote>() {
                note.target(herald_domain::audit::Target::Subject(id.clone()));
            }
            Ok(Self(id))
        } else {
            Err(Problem::not_found())
        }
    }
}

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPage {
    limit: Option<String>,
    after: Option<String>,
}

/// `?limit=` (1–500, default 50) and `?after=<cursor>`. Unknown parameters are refused, so a
/// phone number can never travel in a query string unnoticed.
#[derive(Debug, Clone)]
pub struct PageQuery(pub PageRequest);

impl<St: Send + Sync> FromRequestParts<St> for PageQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Problem> {
        let raw: RawPage = serde_urlencoded_like(parts.uri.query().unwrap_or(""))?;
        Ok(PageQuery(page(raw.limit, raw.after)?))
    }
}

fn page(limit: Option<String>, after: Option<String>) -> Result<PageRequest, Problem> {
    let limit = match limit {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE_SIZE).contains(l))
            .ok_or_else(|| {
                Problem::new(Code::InvalidRequest).field(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_PAGE_SIZE}"),
                ))
            })?,
    };
    let after = after.filter(|a| !a.is_empty());
    if after.as_ref().is_some_and(|a| a.len() > 64) {
        return Err(Problem::new(Code::InvalidRequest)
            .field(FieldError::new("after", "is not a valid cursor")));
    }
    Ok(PageRequest { after, limit })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatusPage {
    limit: Option<String>,
    after: Option<String>,
    status: Option<String>,
}

/// A page (as [`PageQuery`]) with an optional `?status=` filter; nothing else is accepted.
#[derive(Debug, Clone)]
pub struct StatusPageQuery(pub PageRequest, pub Option<String>);

impl<St: Send + Sync> FromRequestParts<St> for StatusPageQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Problem> {
        let raw: RawStatusPage = serde_urlencoded_like(parts.uri.query().unwrap_or(""))?;
        Ok(StatusPageQuery(page(raw.limit, raw.after)?, raw.status))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormat {
    format: Option<String>,
}

/// `?format=json|text` (default json); nothing else is accepted. `true` for text.
#[derive(Debug, Clone, Copy)]
pub struct FormatQuery(pub bool);

impl<St: Send + Sync> FromRequestParts<St> for FormatQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Problem> {
        let raw: RawFormat = serde_urlencoded_like(parts.uri.query().unwrap_or(""))?;
        match raw.format.as_deref() {
            None | Some("json") => Ok(FormatQuery(false)),
            Some("text") => Ok(FormatQuery(true)),
            Some(_) => {
                Err(Problem::new(Code::InvalidRequest)
                    .field(FieldError::new("format", "json or text")))
            }
        }
    }
}

/// Parses a query string with axum's own parser, mapping errors to a problem that names
/// the parameter only when it is a plain identifier.
fn serde_urlencoded_like<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| Problem::new(Code::InvalidRequest).detail("the query string is malformed"))?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|rejection| {
            let text = rejection.body_text();
            let name = quoted_name(&text).map(safe_name).unwrap_or("(query)");
            let rule = if text.contains("unknown field") {
                "unknown query parameter"
            } else {
                "is not valid"
            };
            Problem::new(Code::InvalidRequest).field(FieldError::new(name, rule))
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        phone: String,
        count: Option<u32>,
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        scopes: Vec<String>,
    }

    fn field_of(json: &str) -> FieldError {
        let problem = parse_json::<Body>(json.as_bytes()).unwrap_err();
        assert_eq!(problem.code(), Code::InvalidRequest, "{json}");
        problem.body().errors.into_iter().next().unwrap()
    }

    #[test]
    fn shape_errors_name_the_field_not_the_value() {
        assert_eq!(field_of(r#"{}"#), FieldError::new("phone", "is required"));
        assert_eq!(
            field_of(r#"{"phone":"+4915112345678","extra":1}"#),
            FieldError::new("extra", "unknown field")
        );
        let mistyped = field_of(r#"{"phone":"x","count":"+4915112345678"}"#);
        assert_eq!(mistyped, FieldError::new("count", "has the wrong type"));
        let nested = field_of(r#"{"phone":"x","nested":{"scopes":[1]}}"#);
        assert_eq!(
            nested,
            FieldError::new("nested.scopes[0]", "has the wrong type")
        );
        let nested_unknown = field_of(r#"{"phone":"x","nested":{"scopes":[],"zz":1}}"#);
        assert_eq!(nested_unknown.field, "nested.zz");
    }

    #[test]
    fn a_field_name_that_is_not_an_identifier_is_not_echoed() {
        let error = field_of(r#"{"phone":"x","+4915112345678":1}"#);
        assert_eq!(error, FieldError::new("(unnamed)", "unknown field"));
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        for body in [
            "",
            "{",
            "{\"phone\": }",
            "{\"phone\": \"x\"",
            "{\"phone\":\"x\"} trailing",
        ] {
            let problem = parse_json::<Body>(body.as_bytes()).unwrap_err();
            assert_eq!(problem.code(), Code::MalformedJson, "{body}");
        }
    }

    #[test]
    fn content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }

    proptest! {
        /// Whatever the body, the answer never contains the body's string values.
        #[test]
        fn errors_never_echo_values(value in "[a-zA-Z0-9]{3,10}[+ ][a-zA-Z0-9+ ]{3,10}") {
            for body in [
                format!(r#"{{"phone":1,"count":"{value}"}}"#),
                format!(r#"{{"phone":"x","count":-1,"{value}":2}}"#),
                format!(r#"{{"phone":"{value}","nested":{{"scopes":"{value}"}}}}"#),
                format!(r#"{{"phone":"{value}""#),
            ] {
                if let Err(problem) = parse_json::<Body>(body.as_bytes()) {
                    let shown = serde_json::to_string(&problem.body()).unwrap();
                    prop_assert!(!shown.contains(&value), "{} echoed in {}", value, shown);
                }
            }
        }
    }
}
