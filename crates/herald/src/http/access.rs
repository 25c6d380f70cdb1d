//! Access auditing: every authenticated API call, and every authentication or authorisation
//! failure, becomes an audit entry — written by the request middleware in one place, from what
//! the auth extractor noted during the request.
//!
//! A handler whose capability already recorded the action (in the action's own transaction)
//! marks its response with [`ActionAudited`], and no second, generic entry is written for it.
//! If the entry cannot be written, the answer is replaced by `503 audit_unavailable`: no access
//! without its record.

use std::sync::{Arc, Mutex};

use axum::response::{IntoResponse, Response};
use herald_domain::audit::{
    Action, Actor, Audit, AuditEvent, Detail, Details, Initiator, Outcome, RequestId, Target,
};
use herald_domain::auth::{Principal, Scope, Unauthorized};

use super::problem::{Code, Problem};

/// Marks a response whose action was recorded by the capability that performed it.
#[derive(Debug, Clone, Copy)]
pub struct ActionAudited;

#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    Unauthenticated(&'static str),
    Forbidden(Scope),
    /// Refused by a rate limit (its name): aggregated like authentication failures, so a
    /// caller over its limit cannot make the audit trail grow at its request rate.
    RateLimited(&'static str),
}

#[derive(Debug, Default)]
struct Noted {
    principal: Option<Principal>,
    refusal: Option<Refusal>,
    /// What the request reads or acts on (a subject, a message): every read of personal data
    /// names what was read.
    target: Option<Target>,
}

/// The peer address of a connection (plain or TLS), as the server hands it to each request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// The caller's address, where the server knows it: only ever used truncated to its network,
/// to aggregate failures per source.
pub fn client_address(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<ClientAddr>>()
        .map(|info| info.0.0.ip())
}

/// What the auth extractor learnt about the caller, for the middleware to record. One per
/// request, in the request's extensions.
#[derive(Debug, Default, Clone)]
pub struct AccessNote(Arc<Mutex<Noted>>);

impl AccessNote {
    pub fn authenticated(&self, principal: &Principal) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).principal = Some(principal.clone());
    }

    pub fn refused(&self, refusal: Refusal) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).refusal = Some(refusal);
    }

    /// The resource the request reads or acts on, for its access entry.
    pub fn target(&self, target: Target) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).target = Some(target);
    }

    fn take(&self) -> Noted {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub fn reason_code(reason: Unauthorized) -> &'static str {
    match reason {
        Unauthorized::Missing => "missing",
        Unauthorized::Malformed => "malformed",
        Unauthorized::Unknown => "unknown",
        Unauthorized::Revoked => "revoked",
        Unauthorized::Expired => "expired",
        Unauthorized::NotYetValid => "not_yet_valid",
    }
}

fn outcome_of(status: u16) -> Outcome {
    match status {
        200..=399 => Outcome::Success,
        401 | 403 => Outcome::Denied,
        _ => Outcome::Failure,
    }
}

/// The audit entry for this request, if it needs one (authentication failures go through the
/// flood gate instead: see [`record`]).
fn event(
    noted: Noted,
    audited: bool,
    request_id: Option<RequestId>,
    method: &'static str,
    route: &str,
    status: u16,
) -> Option<AuditEvent> {
    let details = Details::new()
        .with("method", method)
        .with_opt("route", Detail::route(route))
        .with("status", u32::from(status));
    let initiator = |actor| Initiator::new(actor, request_id.clone());
    let actor_of = Actor::of;
    match (noted.principal, noted.refusal) {
        (_, Some(Refusal::Unauthenticated(_) | Refusal::RateLimited(_))) => None,
        (Some(principal), Some(Refusal::Forbidden(scope))) => Some(
            AuditEvent::new(
                &initiator(actor_of(&principal)),
                Action::AuthForbidden,
                Outcome::Denied,
            )
            .details(details.with("required_scope", scope.as_str())),
        ),
        (Some(principal), None) if !audited => {
            let mut event = AuditEvent::new(
                &initiator(actor_of(&principal)),
                Action::ApiRequest,
                outcome_of(status),
            )
            .details(details);
            if let Some(target) = noted.target {
                event = event.target(target);
            }
            Some(event)
        }
        _ => None,
    }
}

/// Writes the request's access entry; on failure the answer becomes `503 audit_unavailable`.
/// A failed authentication is an anonymous caller's doing and can be repeated at will: it is
/// aggregated per source network and reason (at most two entries a minute).
pub async fn record(
    audit: &Audit,
    note: &AccessNote,
    response: Response,
    request_id: &str,
    method: &'static str,
    route: &str,
    source: Option<std::net::IpAddr>,
) -> Response {
    let audited = response.extensions().get::<ActionAudited>().is_some();
    let status = response.status().as_u16();
    let noted = note.take();
    let aggregated = match noted.refusal {
        Some(Refusal::Unauthenticated(reason)) => Some((Action::AuthFailed, reason)),
        Some(Refusal::RateLimited(limit)) => Some((Action::RateLimited, limit)),
        _ => None,
    };
    let written = if let Some((action, reason)) = aggregated {
        let first = Details::new()
            .with("method", method)
            .with_opt("route", Detail::route(route))
            .with("status", u32::from(status));
        audit.failure(action, source, reason, first).await
    } else {
        let Some(event) = event(
            noted,
            audited,
            RequestId::parse(request_id),
            method,
            route,
            status,
        ) else {
            return response;
        };
        audit.append(&event).await
    };
    match written {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, "cannot record the API access; withholding the answer");
            Problem::new(Code::AuditUnavailable)
                .retry_after(1)
                .into_response()
        }
    }
}
