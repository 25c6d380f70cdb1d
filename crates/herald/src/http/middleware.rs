//! The request envelope every request passes through: request id, tracing span, access log,
//! metrics, security headers, and problem documents for errors produced outside handlers
//! (unknown routes, wrong methods, body limits, timeouts, panics).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::AppState;
use super::access::{self, AccessNote};
use super::limits;
use super::problem::{Code, PROBLEM_CONTENT_TYPE, Problem};
use super::request_id;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id::generate();
    let method = crate::metrics::method_label(request.method().as_str());
    let note = AccessNote::default();
    request.extensions_mut().insert(note.clone());
    let source = limits::source_of(
        access::client_address(request.extensions()),
        request.headers(),
        &state.trusted_proxies,
    );
    request.extensions_mut().insert(limits::Source(source));
    let rate = limits::RateNote::default();
    request.extensions_mut().insert(rate.clone());
    // The route template (`/v1/subjects/{id}`), never the concrete path or the query string.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = method,
        route = %route,
        integration_id = tracing::field::Empty,
        key_id = tracing::field::Empty,
        client_id = tracing::field::Empty,
        token_id = tracing::field::Empty,
    );
    let response = request_id::scope(id.clone(), async {
        let response = problem_for_bare_errors(next.run(request).await);
        access::record(&state.audit, &note, response, &id, method, &route, source).await
    })
    .instrument(span.clone())
    .await;
    let mut response = response;
    let status = response.status();
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(method, &route, status.as_u16(), elapsed);
    span.in_scope(|| {
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), latency_us, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), latency_us, "request");
        }
    });
    if let Some(limited) = response.extensions().get::<limits::LimitedBy>() {
        state.metrics.rate_limited(limited.0);
    }
    let headers = response.headers_mut();
    if let Some(allowance) = rate.take() {
        limits::set_headers(headers, &allowance);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID, value);
    }
    set_security_headers(headers, state.tls);
    response
}

fn set_security_headers(headers: &mut axum::http::HeaderMap, tls: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // API answers (keys shown once, personal data) must never sit in a cache; only a handler
    // answering public data (the JWKS) says otherwise.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
}

/// Turns an error response that is not already a problem document (axum's 404/405, a body limit,
/// a timeout) into one, keeping the headers that matter.
fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response
            .extensions()
            .get::<super::oauth::OwnErrorFormat>()
            .is_some()
    {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_CONTENT_TYPE));
    if is_problem {
        return response;
    }
    let (parts, _body) = response.into_parts();
    let code = Code::for_status(status);
    let problem = match code {
        // A timeout or overload: tell the client when to come back.
        Code::Unavailable => Problem::unavailable(),
        code => Problem::new(code),
    };
    let mut problem = problem.into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    problem
}

/// The answer to a panic inside a handler: a generic 500; the panic message goes to the log.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string panic)");
    tracing::error!(panic = message, "handler panicked");
    Problem::internal().into_response()
}
