//! Problem documents (RFC 9457, `application/problem+json`): every error Herald answers.
//!
//! How to add an error: add a variant to [`Code`] with its status, stable code and title; list
//! it in `docs/problems.md`; map the domain error that produces it in `http/errors.rs`. The
//! `detail` never contains personal data, secrets or internals: describe the rule that was
//! broken, not the input that broke it. 5xx answers are generic; their cause goes to the log.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::request_id;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
const TYPE_BASE: &str = "urn:herald:problem:";

/// Every stable problem code Herald answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MalformedJson,
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    AlreadyExists,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidPhoneNumber,
    RateLimited,
    Internal,
    Unavailable,
    AuditUnavailable,
    UnknownPurpose,
    UnknownTemplate,
    TemplateParametersMismatch,
    TemplateRequiredOutsideWindow,
    PhiRequiresBaa,
    IdempotencyKeyReused,
    SubjectErased,
    SubjectRestricted,
    ConsentMissing,
    ConsentPending,
    ConsentWithdrawn,
    OptInNotConfigured,
    ExtensionTooLate,
    ExtensionExceedsLimit,
    RequestClosed,
    RequestChanged,
    LegalHold,
    PhoneInUse,
    SubjectChanged,
    ConsentStale,
    SubjectOptedOut,
    IntegrationRevoked,
    InvalidTransition,
    IncidentChanged,
    DelayReasonRequired,
    PurposeNotLegalObligation,
    VendorChanged,
    VendorNotApproved,
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::MalformedJson | Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidPhoneNumber => StatusCode::UNPROCESSABLE_ENTITY,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable | Code::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::UnknownPurpose => StatusCode::UNPROCESSABLE_ENTITY,
            Code::UnknownTemplate => StatusCode::UNPROCESSABLE_ENTITY,
            Code::TemplateParametersMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Code::TemplateRequiredOutsideWindow => StatusCode::UNPROCESSABLE_ENTITY,
            Code::PhiRequiresBaa => StatusCode::UNPROCESSABLE_ENTITY,
            Code::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Code::SubjectErased => StatusCode::GONE,
            Code::SubjectRestricted
            | Code::ConsentMissing
            | Code::ConsentPending
            | Code::ConsentWithdrawn => StatusCode::CONFLICT,
            Code::OptInNotConfigured => StatusCode::UNPROCESSABLE_ENTITY,
            Code::ExtensionTooLate
            | Code::ExtensionExceedsLimit
            | Code::RequestClosed
            | Code::RequestChanged
            | Code::LegalHold
            | Code::PhoneInUse
            | Code::SubjectChanged
            | Code::ConsentStale
            | Code::SubjectOptedOut
            | Code::IntegrationRevoked
            | Code::InvalidTransition
            | Code::IncidentChanged
            | Code::VendorChanged => StatusCode::CONFLICT,
            Code::DelayReasonRequired
            | Code::PurposeNotLegalObligation
            | Code::VendorNotApproved => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::MalformedJson => "malformed_json",
            Code::InvalidRequest => "invalid_request",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::AlreadyExists => "already_exists",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::InvalidPhoneNumber => "invalid_phone_number",
            Code::RateLimited => "rate_limited",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::AuditUnavailable => "audit_unavailable",
            Code::UnknownPurpose => "unknown_purpose",
            Code::UnknownTemplate => "unknown_template",
            Code::TemplateParametersMismatch => "template_parameters_mismatch",
            Code::TemplateRequiredOutsideWindow => "template_required_outside_window",
            Code::PhiRequiresBaa => "phi_requires_baa",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::SubjectErased => "subject_erased",
            Code::SubjectRestricted => "subject_restricted",
            Code::ConsentMissing => "consent_missing",
            Code::ConsentPending => "consent_pending",
            Code::ConsentWithdrawn => "consent_withdrawn",
            Code::OptInNotConfigured => "opt_in_not_configured",
            Code::ExtensionTooLate => "extension_too_late",
            Code::ExtensionExceedsLimit => "extension_exceeds_limit",
            Code::RequestClosed => "request_closed",
            Code::RequestChanged => "request_changed",
            Code::LegalHold => "legal_hold",
            Code::PhoneInUse => "phone_in_use",
            Code::SubjectChanged => "subject_changed",
            Code::ConsentStale => "consent_stale",
            Code::SubjectOptedOut => "subject_opted_out",
            Code::IntegrationRevoked => "integration_revoked",
            Code::InvalidTransition => "invalid_transition",
            Code::IncidentChanged => "incident_changed",
            Code::DelayReasonRequired => "delay_reason_required",
            Code::PurposeNotLegalObligation => "purpose_not_legal_obligation",
            Code::VendorChanged => "vendor_changed",
            Code::VendorNotApproved => "vendor_not_approved",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Code::MalformedJson => "The request body is not valid JSON",
            Code::InvalidRequest => "The request is not valid",
            Code::Unauthorized => "Authentication required",
            Code::Forbidden => "The credential lacks the required scope",
            Code::NotFound => "Not found",
            Code::MethodNotAllowed => "Method not allowed",
            Code::AlreadyExists => "The resource already exists",
            Code::PayloadTooLarge => "The request body is too large",
            Code::UnsupportedMediaType => "Unsupported media type",
            Code::InvalidPhoneNumber => "The phone number is not valid",
            Code::RateLimited => "Too many requests",
            Code::Internal => "Internal error",
            Code::Unavailable => "Service unavailable",
            Code::AuditUnavailable => "The audit trail cannot be written; nothing was done",
            Code::UnknownPurpose => "The purpose is not configured",
            Code::UnknownTemplate => "No approved template has this name and language",
            Code::TemplateParametersMismatch => "The template takes another number of parameters",
            Code::TemplateRequiredOutsideWindow => {
                "Free-form text is only allowed within 24 hours of the subject's last message"
            }
            Code::PhiRequiresBaa => {
                "Health information needs a channel covered by a business associate agreement"
            }
            Code::IdempotencyKeyReused => "The Idempotency-Key was used with a different request",
            Code::SubjectErased => "The subject was erased",
            Code::SubjectRestricted => "Processing for this subject is restricted",
            Code::ConsentMissing => "There is no consent for this purpose and channel",
            Code::ConsentPending => "The subject has not yet confirmed the opt-in",
            Code::ConsentWithdrawn => "The subject withdrew consent for this purpose and channel",
            Code::OptInNotConfigured => "Double opt-in has no confirmation template configured",
            Code::ExtensionTooLate => "An extension must be recorded before the due date",
            Code::ExtensionExceedsLimit => "The answer may be postponed by two months at most",
            Code::RequestClosed => "The request is already done",
            Code::RequestChanged => "The request changed meanwhile",
            Code::LegalHold => "A legal hold applies: the subject's data must be kept",
            Code::PhoneInUse => "Another subject holds this phone number",
            Code::SubjectChanged => "The subject changed meanwhile",
            Code::ConsentStale => {
                "The record has a later event; this one was kept as history and changed nothing"
            }
            Code::SubjectOptedOut => "The subject opted out; only the subject can opt in again",
            Code::IntegrationRevoked => "The integration is revoked; it takes no new credentials",
            Code::InvalidTransition => "The incident cannot move to that state now",
            Code::IncidentChanged => "The incident changed meanwhile",
            Code::DelayReasonRequired => {
                "A notification after 72 hours needs the reasons for the delay"
            }
            Code::PurposeNotLegalObligation => {
                "Breach notices go out under a purpose whose lawful basis is legal_obligation"
            }
            Code::VendorChanged => "The vendor changed meanwhile",
            Code::VendorNotApproved => {
                "The channel's vendor is not approved in the provider register"
            }
        }
    }

    /// The generic problem for an error status produced outside a handler (router fallbacks,
    /// body limits, timeouts).
    pub fn for_status(status: StatusCode) -> Code {
        match status {
            StatusCode::BAD_REQUEST => Code::InvalidRequest,
            StatusCode::UNAUTHORIZED => Code::Unauthorized,
            StatusCode::FORBIDDEN => Code::Forbidden,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::GONE => Code::SubjectErased,
            StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => Code::RateLimited,
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            s if s.is_client_error() => Code::InvalidRequest,
            _ => Code::Internal,
        }
    }
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where in the request: a JSON path such as `scopes[1]`, or a query parameter name.
    pub field: String,
    /// What rule the value broke (never the value itself).
    pub message: Cow<'static, str>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// `urn:herald:problem:<code>`; each code is described in docs/problems.md.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: &'static str,
    pub status: u16,
    /// Explanation for humans; never personal data, secrets or internals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'static, str>>,
    /// Stable, machine-readable code.
    pub code: &'static str,
    /// The id of this request (also in `X-Request-Id`), for support and the logs.
    pub request_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For `rate_limited`: the limit reached (`credential`, `route:export`, `source`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
}

/// An error answer under construction.
#[derive(Debug, Clone)]
pub struct Problem {
    code: Code,
    detail: Option<Cow<'static, str>>,
    errors: Vec<FieldError>,
    retry_after_seconds: Option<u64>,
    bearer_error: Option<&'static str>,
    audited: bool,
    /// A rate limit's name and its `RateLimit-Policy` and `RateLimit` values.
    /// Boxed: rare, and `Problem` travels in every handler's `Result`.
    rate_limit: Option<Box<(&'static str, String, String)>>,
}

impl Problem {
    pub fn new(code: Code) -> Self {
        Self {
            code,
            detail: None,
            errors: Vec::new(),
            retry_after_seconds: None,
            bearer_error: None,
            audited: false,
            rate_limit: None,
        }
    }

    /// The limit that refused the request (`limit` in the body) and its headers.
    pub fn rate_limit(mut self, limit: &'static str, policy: String, state: String) -> Self {
        self.rate_limit = Some(Box::new((limit, policy, state)));
        self
    }

    /// The refused or failed action was already recorded by the capability (see
    /// `http::access`): no generic access entry is needed.
    pub fn audited(mut self) -> Self {
        self.audited = true;
        self
    }

    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn field(mut self, error: FieldError) -> Self {
        self.errors.push(error);
        self
    }

    pub fn fields(mut self, errors: impl IntoIterator<Item = FieldError>) -> Self {
        self.errors.extend(errors);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// RFC 6750 `error` attribute for `WWW-Authenticate` (e.g. `invalid_token`).
    pub fn bearer_error(mut self, error: &'static str) -> Self {
        self.bearer_error = Some(error);
        self
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn not_found() -> Self {
        Self::new(Code::NotFound)
    }

    pub fn internal() -> Self {
        Self::new(Code::Internal)
    }

    pub fn unavailable() -> Self {
        Self::new(Code::Unavailable).retry_after(1)
    }

    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            type_: format!("{TYPE_BASE}{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str(),
            request_id: request_id::current().unwrap_or_default(),
            errors: self.errors.clone(),
            limit: self.rate_limit.as_ref().map(|r| r.0),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (self.code.status(), body).into_response();
        if self.audited {
            response
                .extensions_mut()
                .insert(super::access::ActionAudited);
        }
        if let Some(rate) = &self.rate_limit {
            response
                .extensions_mut()
                .insert(super::limits::LimitedBy(rate.0));
        }
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some((_, policy, state)) = self.rate_limit.map(|r| *r) {
            for (name, value) in [
                (super::limits::RATELIMIT_POLICY, policy),
                (super::limits::RATELIMIT, state),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
        }
        if self.code == Code::Unauthorized {
            let value = match self.bearer_error {
                Some(error) => format!("Bearer realm=\"herald\", error=\"{error}\""),
                None => "Bearer realm=\"herald\"".to_owned(),
            };
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Code; 42] = [
        Code::MalformedJson,
        Code::InvalidRequest,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::AlreadyExists,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::InvalidPhoneNumber,
        Code::RateLimited,
        Code::Internal,
        Code::Unavailable,
        Code::AuditUnavailable,
        Code::UnknownPurpose,
        Code::UnknownTemplate,
        Code::TemplateParametersMismatch,
        Code::TemplateRequiredOutsideWindow,
        Code::PhiRequiresBaa,
        Code::IdempotencyKeyReused,
        Code::SubjectErased,
        Code::SubjectRestricted,
        Code::ConsentMissing,
        Code::ConsentPending,
        Code::ConsentWithdrawn,
        Code::OptInNotConfigured,
        Code::ExtensionTooLate,
        Code::ExtensionExceedsLimit,
        Code::RequestClosed,
        Code::RequestChanged,
        Code::LegalHold,
        Code::PhoneInUse,
        Code::SubjectChanged,
        Code::ConsentStale,
        Code::SubjectOptedOut,
        Code::IntegrationRevoked,
        Code::InvalidTransition,
        Code::IncidentChanged,
        Code::DelayReasonRequired,
        Code::PurposeNotLegalObligation,
        Code::VendorChanged,
        Code::VendorNotApproved,
    ];

    #[test]
    fn every_code_is_documented() {
        let docs = include_str!("../../../../docs/problems.md");
        for code in ALL {
            assert!(
                docs.contains(&format!("`{}`", code.as_str())),
                "{} is missing from docs/problems.md",
                code.as_str()
            );
        }
    }

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ALL {
            assert!(seen.insert(code.as_str()));
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    #[test]
    fn response_carries_headers() {
        let response = Problem::new(Code::Unauthorized)
            .bearer_error("invalid_token")
            .into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"herald\", error=\"invalid_token\""
        );
        let limited = Problem::new(Code::RateLimited)
            .retry_after(7)
            .into_response();
        assert_eq!(limited.headers()[header::RETRY_AFTER], "7");
    }
}
