//! Rate limits on the wire: the caller's source address (behind trusted proxies), the route
//! classes, `429 rate_limited` answers and the `RateLimit-Policy` / `RateLimit` headers of
//! draft-ietf-httpapi-ratelimit-headers. The limits themselves are `herald_domain::limits`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use herald_domain::limits::{Allowance, Limited, Rate, RouteClass};
use ipnet::IpNet;

use super::problem::{Code, Problem};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Hops read from `X-Forwarded-For` at most (a longer chain is an attack, not a topology).
const MAX_HOPS: usize = 16;

/// Where the request came from, as far as Herald believes it: the peer, or behind a trusted
/// proxy the first untrusted hop of `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct Source(pub Option<IpAddr>);

/// The client address: `peer` unless it is a trusted proxy, then `X-Forwarded-For` read from
/// the right, skipping trusted hops (the left part is whatever the client wrote).
pub fn source_of(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev().take(MAX_HOPS) {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Unparseable: written by the client, not a proxy; the last good hop stands.
            Err(_) => break,
        }
    }
    Some(client)
}

/// Where the request's limit stands, for the middleware to put in the answer's headers.
#[derive(Debug, Clone, Default)]
pub struct RateNote(Arc<Mutex<Option<Allowance>>>);

impl RateNote {
    pub fn note(&self, allowance: Allowance) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(allowance);
    }

    pub fn take(&self) -> Option<Allowance> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A 429 answer's limit, for the metrics (the name only).
#[derive(Debug, Clone, Copy)]
pub struct LimitedBy(pub &'static str);

/// The enumeration signal for a lookup or registration of `phone` by `caller`.
pub async fn observe_lookup<S: super::extract::RequiredScope>(
    state: &super::AppState,
    caller: &super::extract::Authorized<S>,
    phone: &str,
) -> Result<(), Problem> {
    let raised = state
        .limits
        .observe_lookup(&state.audit, &caller.principal, &caller.initiator(), phone)
        .await
        .map_err(super::errors::store)?;
    if raised {
        tracing::warn!(
            integration_id = %caller.principal.integration_id,
            "enumeration suspected: many distinct numbers looked up by one credential"
        );
        state.metrics.enumeration_suspected();
    }
    Ok(())
}

/// The route classes with a stricter limit, by route template.
pub fn route_class(method: &Method, route: &str) -> Option<RouteClass> {
    match (method.as_str(), route) {
        ("POST", "/v1/subjects" | "/v1/subjects/lookup") => Some(RouteClass::Lookup),
        ("GET", "/v1/subjects/{id}/export") => Some(RouteClass::Export),
        ("DELETE", "/v1/subjects/{id}") => Some(RouteClass::Erase),
        ("POST", "/v1/opt-ins") => Some(RouteClass::OptIn),
        (_, r) if r == "/v1/audit" || r.starts_with("/v1/audit/") => Some(RouteClass::Audit),
        _ => None,
    }
}

fn policy(limit: &str, rate: Rate) -> String {
    format!("\"{limit}\";q={};w=60", rate.per_minute)
}

/// `RateLimit-Policy` and `RateLimit` for an allowed request.
pub fn set_headers(headers: &mut HeaderMap, allowance: &Allowance) {
    let values = [
        (RATELIMIT_POLICY, policy(allowance.limit, allowance.rate)),
        (
            RATELIMIT,
            format!(
                "\"{}\";r={};t={}",
                allowance.limit, allowance.remaining, allowance.reset_seconds
            ),
        ),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// The `429 rate_limited` answer naming the limit.
pub fn limited(limited: Limited) -> Problem {
    Problem::new(Code::RateLimited)
        .detail(format!(
            "the {} limit is reached; retry after {} s",
            limited.limit, limited.retry_after_seconds
        ))
        .retry_after(limited.retry_after_seconds)
        .rate_limit(
            limited.limit,
            policy(limited.limit, limited.rate),
            format!(
                "\"{}\";r=0;t={}",
                limited.limit, limited.retry_after_seconds
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "198.51.100.9".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let headers = xff("203.0.113.50, 192.0.2.1");
        // Off by default: the header is the client's word only.
        assert_eq!(source_of(Some(proxy), &headers, &[]), Some(proxy));
        // From a stranger it is never believed.
        assert_eq!(
            source_of(Some(stranger), &headers, &trusted),
            Some(stranger)
        );
        // Behind the proxy: the rightmost hop it did not add itself.
        assert_eq!(
            source_of(Some(proxy), &headers, &trusted),
            Some("192.0.2.1".parse().unwrap())
        );
        // Trusted hops are skipped; a forged left part cannot choose the address.
        let chain = xff("1.2.3.4, 198.51.100.7, 10.0.0.9");
        assert_eq!(
            source_of(Some(proxy), &chain, &trusted),
            Some("198.51.100.7".parse().unwrap())
        );
        let garbage = xff("not-an-ip, 10.0.0.9");
        assert_eq!(
            source_of(Some(proxy), &garbage, &trusted),
            Some("10.0.0.9".parse().unwrap())
        );
        assert_eq!(
            source_of(Some(proxy), &HeaderMap::new(), &trusted),
            Some(proxy)
        );
    }

    #[test]
    fn route_classes_by_template() {
        assert_eq!(
            route_class(&Method::POST, "/v1/subjects/lookup"),
            Some(RouteClass::Lookup)
        );
        assert_eq!(
            route_class(&Method::GET, "/v1/subjects/{id}/export"),
            Some(RouteClass::Export)
        );
        assert_eq!(
            route_class(&Method::DELETE, "/v1/subjects/{id}"),
            Some(RouteClass::Erase)
        );
        assert_eq!(route_class(&Method::GET, "/v1/subjects/{id}"), None);
        assert_eq!(
            route_class(&Method::GET, "/v1/audit/verify"),
            Some(RouteClass::Audit)
        );
        assert_eq!(route_class(&Method::POST, "/v1/messages"), None);
    }
}
