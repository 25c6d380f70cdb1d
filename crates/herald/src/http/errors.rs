//! Domain errors → problem documents. Server-side failures are logged here with their cause
//! chain (which never holds personal data: domain types redact themselves) and answered with a
//! generic body.

use herald_domain::audit::AuditError;
use herald_domain::auth::AuthError;
use herald_domain::consent::ConsentError;
use herald_domain::keys::KeyError;
use herald_domain::messages::{Refusal, SendError};
use herald_domain::phone::PhoneError;
use herald_domain::rights::{RightsError, SubjectRightsError};
use herald_domain::store::StoreError;
use herald_domain::subjects::SubjectError;

use super::problem::{Code, FieldError, Problem};

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

pub fn store(error: StoreError) -> Problem {
    match error {
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %chain(&error), "database unavailable");
            Problem::unavailable()
        }
        StoreError::Conflict => Problem::new(Code::AlreadyExists),
        StoreError::AuditUnavailable(_) => {
            tracing::error!(error = %chain(&error), "the audit trail cannot be written; refusing the action");
            Problem::new(Code::AuditUnavailable).retry_after(1)
        }
        StoreError::Corrupt(_) | StoreError::Internal(_) => {
            tracing::error!(error = %chain(&error), "database error");
            Problem::internal()
        }
    }
}

pub fn audit(error: AuditError) -> Problem {
    match error {
        AuditError::Store(e) => store(e),
        other => {
            tracing::error!(error = %chain(&other), "audit trail error");
            Problem::internal()
        }
    }
}

fn random(error: &herald_crypto::CryptoError) -> Problem {
    tracing::error!(error = %error, "random number generator failed");
    Problem::internal()
}

pub fn send(error: SendError) -> Problem {
    match error {
        SendError::Refused(refusal) => {
            let code = match &refusal {
                Refusal::UnknownPurpose => Code::UnknownPurpose,
                Refusal::UnknownTemplate => Code::UnknownTemplate,
                Refusal::TemplateParametersMismatch { .. } => Code::TemplateParametersMismatch,
                Refusal::TemplateRequiredOutsideWindow => Code::TemplateRequiredOutsideWindow,
                Refusal::PhiRequiresBaa => Code::PhiRequiresBaa,
                Refusal::SubjectErased => Code::SubjectErased,
                Refusal::SubjectRestricted => Code::SubjectRestricted,
                Refusal::ConsentMissing => Code::ConsentMissing,
                Refusal::ConsentPending => Code::ConsentPending,
                Refusal::ConsentWithdrawn => Code::ConsentWithdrawn,
                Refusal::VendorNotApproved { .. } => Code::VendorNotApproved,
                Refusal::RateLimited {
                    retry_after_seconds,
                } => {
                    return Problem::new(Code::RateLimited)
                        .detail(refusal.to_string())
                        .retry_after(*retry_after_seconds)
                        .audited();
                }
            };
            // The capability recorded the refusal.
            Problem::new(code).detail(refusal.to_string()).audited()
        }
        SendError::Invalid { field, rule } => {
            Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
        }
        SendError::Phone(e) => phone(e, "to"),
        SendError::SubjectNotFound => Problem::not_found().detail("no such subject"),
        SendError::MayNotRegister => Problem::new(Code::Forbidden).detail(
            "sending to a number not linked to this integration requires the scope subjects:write",
        ),
        SendError::IdempotencyKeyReused => Problem::new(Code::IdempotencyKeyReused),
        SendError::Store(e) => store(e),
        SendError::Keys(e) => keys(e),
        SendError::Random(e) => random(&e),
    }
}

pub fn consent(error: ConsentError) -> Problem {
    match error {
        ConsentError::UnknownPurpose => {
            Problem::new(Code::UnknownPurpose).detail(error.to_string())
        }
        ConsentError::SubjectNotFound => Problem::not_found().detail("no such subject"),
        ConsentError::SubjectErased => Problem::new(Code::SubjectErased),
        ConsentError::SubjectRestricted => Problem::new(Code::SubjectRestricted),
        ConsentError::Invalid { field, rule } => {
            Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
        }
        ConsentError::OptInNotConfigured => {
            Problem::new(Code::OptInNotConfigured).detail(error.to_string())
        }
        ConsentError::Stale => Problem::new(Code::ConsentStale).detail(error.to_string()),
        // The capability recorded the refusal.
        ConsentError::SubjectOptedOut => Problem::new(Code::SubjectOptedOut)
            .detail(error.to_string())
            .audited(),
        ConsentError::RateLimited {
            retry_after_seconds,
        } => Problem::new(Code::RateLimited)
            .detail(error.to_string())
            .retry_after(retry_after_seconds)
            .audited(),
        ConsentError::Subject(e) => subjects(e),
        ConsentError::Store(e) => store(e),
        ConsentError::Keys(e) => keys(e),
    }
}

pub fn rights(error: RightsError) -> Problem {
    match error {
        RightsError::NotFound => Problem::not_found(),
        RightsError::SubjectNotFound => Problem::not_found().detail("no such subject"),
        RightsError::Invalid { field, rule } => {
            Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
        }
        RightsError::Refused { code, detail } => {
            let code = match code {
                "extension_too_late" => Code::ExtensionTooLate,
                "extension_exceeds_limit" => Code::ExtensionExceedsLimit,
                "request_closed" => Code::RequestClosed,
                _ => Code::RequestChanged,
            };
            Problem::new(code).detail(detail)
        }
        RightsError::Store(e) => store(e),
        RightsError::Keys(e) => keys(e),
    }
}

pub fn incidents(error: herald_domain::incidents::IncidentError) -> Problem {
    use herald_domain::incidents::IncidentError;
    match error {
        IncidentError::Invalid { field, rule } => {
            Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
        }
        IncidentError::NotFound => Problem::not_found(),
        e @ IncidentError::InvalidTransition { .. } => {
            Problem::new(Code::InvalidTransition).detail(e.to_string())
        }
        IncidentError::DelayReasonRequired => Problem::new(Code::DelayReasonRequired),
        IncidentError::Changed => Problem::new(Code::IncidentChanged),
        IncidentError::NotLegalObligation => Problem::new(Code::PurposeNotLegalObligation),
        IncidentError::Store(e) => store(e),
        IncidentError::Keys(e) => keys(e),
        IncidentError::Audit(e) => {
            tracing::error!(error = %chain(&e), "audit trail unavailable for an incident scope");
            Problem::new(Code::AuditUnavailable)
        }
    }
}

pub fn keys(error: KeyError) -> Problem {
    match error {
        KeyError::Store(e) => store(e),
        other => {
            tracing::error!(error = %chain(&other), "key management error");
            Problem::internal()
        }
    }
}

pub fn phone(error: PhoneError, field: &'static str) -> Problem {
    Problem::new(Code::InvalidPhoneNumber).field(FieldError::new(field, error.to_string()))
}

pub fn subjects(error: SubjectError) -> Problem {
    match error {
        SubjectError::Phone(e) => phone(e, "phone"),
        SubjectError::MayNotRegister => Problem::new(Code::Forbidden)
            .detail("registering a subject requires the scope subjects:write"),
        SubjectError::Store(e) => store(e),
        SubjectError::Keys(e) => keys(e),
        SubjectError::Random(e) => {
            tracing::error!(error = %e, "random number generator failed");
            Problem::internal()
        }
    }
}

pub fn auth(error: AuthError) -> Problem {
    match error {
        AuthError::NameTaken => {
            Problem::new(Code::AlreadyExists).detail("an integration with this name already exists")
        }
        AuthError::InvalidName(rule) => {
            Problem::new(Code::InvalidRequest).field(FieldError::new("name", rule))
        }
        AuthError::NoScopes => Problem::new(Code::InvalidRequest)
            .field(FieldError::new("scopes", "at least one scope is required")),
        AuthError::InvalidLifetime => Problem::new(Code::InvalidRequest).field(FieldError::new(
            "expires_in_days",
            format!(
                "must be between 1 and {}",
                herald_domain::auth::MAX_KEY_LIFETIME_DAYS
            ),
        )),
        AuthError::IntegrationNotFound | AuthError::KeyNotFound | AuthError::ClientNotFound => {
            Problem::not_found()
        }
        AuthError::IntegrationRevoked => Problem::new(Code::IntegrationRevoked),
        AuthError::AdminRevocationRefused => Problem::new(Code::Forbidden)
            .detail("the admin integration cannot be revoked; revoke its keys one by one"),
        AuthError::InvalidClientKey(rule) => {
            Problem::new(Code::InvalidRequest).field(FieldError::new("jwk", rule))
        }
        AuthError::AdminGrantRefused => {
            Problem::new(Code::Forbidden).detail("only an admin key may grant the admin scope")
        }
        AuthError::Unauthorized(_) => Problem::new(Code::Unauthorized),
        AuthError::Store(e) => store(e),
        AuthError::Random(e) => {
            tracing::error!(error = %e, "random number generator failed");
            Problem::internal()
        }
    }
}

pub fn subject_rights(error: SubjectRightsError) -> Problem {
    match error {
        SubjectRightsError::NotFound => Problem::not_found(),
        SubjectRightsError::Erased => Problem::new(Code::SubjectErased),
        SubjectRightsError::LegalHold => Problem::new(Code::LegalHold)
            .detail("release the legal hold first, or restrict processing instead"),
        SubjectRightsError::PhoneInUse => Problem::new(Code::PhoneInUse),
        SubjectRightsError::Changed => Problem::new(Code::SubjectChanged),
        SubjectRightsError::Invalid { field, rule } => {
            Problem::new(Code::InvalidRequest).field(FieldError::new(field, rule))
        }
        SubjectRightsError::Phone(e) => phone(e, "phone"),
        SubjectRightsError::Store(e) => store(e),
        SubjectRightsError::Keys(e) => keys(e),
        SubjectRightsError::Subjects(e) => subjects(e),
        SubjectRightsError::Consent(e) => consent(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_by_kind() {
        let unavailable = store(StoreError::Unavailable("pool timed out".into()));
        assert_eq!(unavailable.code(), Code::Unavailable);
        assert_eq!(store(StoreError::Conflict).code(), Code::AlreadyExists);
        let internal = store(StoreError::Internal("syntax error near SELECT".into()));
        assert_eq!(internal.code(), Code::Internal);
        // Internals stay in the log, not in the answer.
        let body = serde_json::to_string(&internal.body()).unwrap();
        assert!(!body.contains("SELECT"));
    }

    #[test]
    fn phone_errors_describe_the_rule() {
        let problem = subjects(SubjectError::Phone(PhoneError::NoCountryCode));
        assert_eq!(problem.code(), Code::InvalidPhoneNumber);
        assert_eq!(problem.body().errors[0].field, "phone");
    }
}
