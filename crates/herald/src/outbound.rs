//! HTTP for events to integrators: one client, no redirects, a per-attempt timeout, and — unless
//! insecure targets are allowed — a resolver that refuses host names resolving to loopback,
//! private or link-local addresses, checked at connection time so a DNS answer that changes
//! after registration cannot aim Herald at its own network.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use herald_domain::webhooks::target::is_public;
use herald_domain::webhooks::{EventTransport, TransportError, TransportResponse};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, Clone, Copy)]
struct PublicOnly;

#[derive(Debug, thiserror::Error)]
#[error("the host resolves to no public address")]
struct NotPublic;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(NotPublic) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the webhook HTTP client cannot be built: {0}")]
pub struct BuildError(#[source] reqwest::Error);

/// Events over HTTP.
#[derive(Debug, Clone)]
pub struct HttpEventTransport {
    http: reqwest::Client,
    allow_insecure: bool,
}

impl HttpEventTransport {
    pub fn new(timeout: Duration, allow_insecure: bool) -> Result<Self, BuildError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald-webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_insecure {
            builder = builder
                .dns_resolver(std::sync::Arc::new(PublicOnly))
                .https_only(true);
        }
        Ok(Self {
            http: builder.build().map_err(BuildError)?,
            allow_insecure,
        })
    }
}

#[async_trait]
impl EventTransport for HttpEventTransport {
    async fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<TransportResponse, TransportError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| TransportError::TargetRefused)?;
        // Address literals never reach the resolver: check them here.
        if !self.allow_insecure
            && let Some(host) = parsed.host_str()
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            && !is_public(ip)
        {
            return Err(TransportError::TargetRefused);
        }
        let mut request = self.http.post(parsed).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .filter(|s| *s >= 0)
                    .map(chrono::TimeDelta::seconds);
                Ok(TransportResponse {
                    status: response.status().as_u16(),
                    retry_after,
                })
            }
            Err(e) if e.is_timeout() => Err(TransportError::Timeout),
            Err(_) => Err(TransportError::Connect),
        }
    }
}
