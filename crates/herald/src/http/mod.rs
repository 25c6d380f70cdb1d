//! The HTTP API: axum routers, extractors, problem documents, middleware and the OpenAPI
//! document generated from the handlers.
//!
//! Handlers are thin: extract (auth, body, path), call one capability, map the result.
//! Capabilities never import this module.

pub mod access;
pub mod errors;
pub mod extract;
pub mod limits;
pub mod middleware;
mod oauth;
mod ops;
pub mod problem;
mod provider;
pub mod request_id;
mod time;
mod v1;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use herald_domain::audit::Audit;
use herald_domain::auth::Auth;
use herald_domain::consent::Consents;
use herald_domain::limits::RateLimits;
use herald_domain::messages::{Messages, Reports};
use herald_domain::rights::{RightsRequests, SubjectRights};
use herald_domain::store::Store;
use herald_domain::subjects::Subjects;
use herald_domain::webhooks::WebhookEndpoints;
use secrecy::SecretString;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::metrics::Metrics;

/// What handlers share. One reference count to clone: axum clones the state for every
/// extractor of every request, and cloning each capability's own handles (dozens of counters
/// shared by both cores) showed in the send path's profile.
#[derive(Clone, Debug)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The capabilities and settings behind [`AppState`].
#[derive(Debug)]
pub struct SharedState {
    pub subjects: Subjects,
    pub auth: Auth,
    pub audit: Audit,
    pub messages: Messages,
    pub consents: Consents,
    pub rights: RightsRequests,
    pub subject_rights: SubjectRights,
    pub reports: Reports,
    pub endpoints: WebhookEndpoints,
    pub whatsapp: Option<Arc<WhatsappSecrets>>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub limits: RateLimits,
    pub backups: crate::backup::BackupRegister,
    pub incidents: herald_domain::incidents::Incidents,
    pub incident_contacts: herald_domain::incidents::Contacts,
    pub vendors: herald_domain::vendors::Vendors,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub tls: bool,
    openapi: Arc<String>,
}

/// What checks Meta's callbacks: the app secret (signatures) and the verify token (set-up).
pub struct WhatsappSecrets {
    pub app_secret: SecretString,
    pub verify_token: SecretString,
}

impl std::fmt::Debug for WhatsappSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WhatsappSecrets([REDACTED])")
    }
}

/// The capabilities and settings the HTTP layer is built from.
#[derive(Debug, Clone)]
pub struct HttpParts {
    pub subjects: Subjects,
    pub auth: Auth,
    pub audit: Audit,
    pub messages: Messages,
    pub consents: Consents,
    pub rights: RightsRequests,
    pub subject_rights: SubjectRights,
    pub reports: Reports,
    pub endpoints: WebhookEndpoints,
    pub whatsapp: Option<Arc<WhatsappSecrets>>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub limits: RateLimits,
    pub backups: crate::backup::BackupRegister,
    pub incidents: herald_domain::incidents::Incidents,
    pub incident_contacts: herald_domain::incidents::Contacts,
    pub vendors: herald_domain::vendors::Vendors,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub tls: bool,
    /// Serve the API (`/v1`, `/webhooks`); without it only the operations endpoints.
    pub api: bool,
    pub body_limit: usize,
    pub request_timeout: Duration,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Self-hosted messaging gateway: consent-first, encrypted, auditable. \
                       Errors are RFC 9457 problem documents (application/problem+json) with a \
                       stable `code`."
    ),
    modifiers(&BearerAuth),
    components(schemas(problem::ProblemBody, problem::FieldError)),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "subjects", description = "Data subjects (people), by pseudonymous id"),
        (name = "messages", description = "Sending messages and following their delivery"),
        (name = "integrations", description = "Connected systems, their API keys and webhook endpoints (admin)"),
        (name = "oauth", description = "The OAuth 2.0 authorization server for integrations (client credentials): RFC 6749 error answers, not problem documents"),
        (name = "webhooks", description = "Provider callbacks (WhatsApp), authenticated by signature"),
        (name = "audit", description = "The tamper-evident audit trail: entries, verification, checkpoints, keys"),
        (name = "incidents", description = "The incident register: security incidents and personal-data breaches with their notification clocks"),
        (name = "vendors", description = "The provider register: the vendors messages go through, their contracts, regions and reviews")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // utoipa fills the licence from Cargo metadata; Herald has not chosen one yet, and an
        // empty licence name is not valid OpenAPI.
        openapi.info.license = None;
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(scopes_description()))
                    .build(),
            ),
        );
    }
}

/// The bearer scheme's description: what each scope grants (docs/api.md, "Scopes"). An
/// exhaustive match, so a new scope cannot go undocumented.
fn scopes_description() -> String {
    use herald_domain::auth::Scope;
    let mut text = String::from(
        "An API key (hk_…) or an OAuth 2.0 access token (client credentials grant) holding the scope the operation names. No scope implies another \
         except admin. Subjects are visible only to integrations linked to them (404 \
         otherwise).\n",
    );
    for scope in Scope::ALL {
        let grants = match scope {
            Scope::MessagesSend => "send messages",
            Scope::MessagesRead => "read the integration's own messages and inbound content",
            Scope::ConsentsRead => {
                "read linked subjects' consent, and the integration's own evidence"
            }
            Scope::ConsentsWrite => "record and withdraw consent, start double opt-ins",
            Scope::SubjectsRead => "resolve ids and read linked subjects' pseudonymous standing",
            Scope::SubjectsWrite => {
                "register numbers (also implicitly when sending), rectify, restrict, log requests"
            }
            Scope::SubjectsErase => "erase subjects (not legal holds)",
            Scope::SubjectsExport => "the decrypted export of a linked subject (Art. 15/20)",
            Scope::SubjectsHold => "place and release legal holds",
            Scope::AuditRead => "read and verify the audit trail (no personal data)",
            Scope::IntegrationsManage => {
                "an operator's provisioning of integrations, keys and webhooks (no personal data)"
            }
            Scope::OAuthIntrospect => "introspect the integration's own access tokens (RFC 7662)",
            Scope::BackupsRead => "the register of backups (no personal data, never a backup)",
            Scope::IncidentsRead => "read the incident register (summaries, assessments, clocks)",
            Scope::IncidentsWrite => "open incidents, record assessments and notifications",
            Scope::VendorsRead => "read the provider register (contracts, regions, reviews)",
            Scope::VendorsWrite => "add, review, approve and suspend vendors",
            Scope::Admin => "everything, for every integration and subject",
        };
        text.push_str(&format!("\n- {scope}: {grants}"));
    }
    text
}

/// Every route with its OpenAPI description, before state and middleware.
fn documented_routes(api: bool) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(ops::router());
    if api {
        routes
            .merge(v1::router())
            .merge(oauth::router())
            .merge(provider::router())
    } else {
        routes
    }
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes(true).into_openapi()
}

/// The complete application: routes, fallbacks and the middleware stack.
pub fn app(parts: HttpParts) -> Router {
    let (router, api) = documented_routes(parts.api).split_for_parts();
    let openapi = api.to_pretty_json().unwrap_or_else(|_| "{}".to_owned());
    let state = AppState(Arc::new(SharedState {
        subjects: parts.subjects,
        auth: parts.auth,
        audit: parts.audit,
        messages: parts.messages,
        consents: parts.consents,
        rights: parts.rights,
        subject_rights: parts.subject_rights,
        reports: parts.reports,
        endpoints: parts.endpoints,
        whatsapp: parts.whatsapp,
        store: parts.store,
        metrics: parts.metrics,
        limits: parts.limits,
        backups: parts.backups,
        incidents: parts.incidents,
        incident_contacts: parts.incident_contacts,
        vendors: parts.vendors,
        trusted_proxies: parts.trusted_proxies,
        tls: parts.tls,
        openapi: Arc::new(openapi),
    }));
    // Layers run outside-in from the last one added: request context (id, log, metrics,
    // headers, problem bodies) → panic catcher → timeout → body limit → handler.
    router
        .fallback(|| async { problem::Problem::not_found() })
        .layer(DefaultBodyLimit::max(parts.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            parts.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .with_state(state)
}
