//! What a Cloud API error means for Herald: try again later, or give up with one of Herald's
//! stable codes. Keyed on Meta's integer `code` (never on titles, which Meta deprecates), then on
//! the HTTP status when no code came back. Source: reference/whatsapp-cloud-api.md §2.

use chrono::TimeDelta;
use herald_domain::messages::ProviderFailure;

/// Herald's codes for permanent failures.
pub const UNDELIVERABLE: &str = "undeliverable";
pub const OUTSIDE_WINDOW: &str = "outside_window";
pub const OPTED_OUT: &str = "opted_out";
pub const TEMPLATE_REJECTED: &str = "template_rejected";
pub const CONFIGURATION: &str = "configuration";
pub const PROVIDER_REJECTED: &str = "provider_rejected";
pub const WITHHELD: &str = "withheld_by_provider";

/// How a Cloud API error code is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Transient or a rate limit: back off and try again.
    Retry,
    /// Will not work as sent: fail with this code.
    Permanent(&'static str),
}

/// The reference's error table.
pub fn classify_code(code: i64) -> Option<Class> {
    use Class::{Permanent, Retry};
    Some(match code {
        // Throughput, pair rate, app and WABA rate limits, spam-rate limit, temporary errors,
        // maintenance, a paused template (may be resumed), registration rate limit.
        4 | 80007 | 130429 | 131048 | 131056 | 131000 | 131016 | 131057 | 1 | 2 | 132015
        | 133016 => Retry,
        131026 => Permanent(UNDELIVERABLE),
        131047 => Permanent(OUTSIDE_WINDOW),
        131050 => Permanent(OPTED_OUT),
        // Withheld by Meta (per-user marketing cap, experiment hold-out): resending at once
        // fails again, and not before 24 h is longer than a message may wait.
        131049 | 130472 => Permanent(WITHHELD),
        132000 | 132001 | 132005 | 132007 | 132012 | 132016 => Permanent(TEMPLATE_REJECTED),
        // Credentials, permissions, account state, billing, allow-list: the operator must act.
        0 | 3 | 10 | 190 | 200..=299 | 368 | 131005 | 131030 | 131031 | 131042 => {
            Permanent(CONFIGURATION)
        }
        100 | 131008 | 131009 | 131021 | 131051 | 131052 | 131053 => Permanent(PROVIDER_REJECTED),
        _ => return None,
    })
}

/// When no (known) code came back: by HTTP status.
fn classify_status(status: u16) -> Class {
    match status {
        408 | 425 | 429 | 500..=599 => Class::Retry,
        401 | 403 => Class::Permanent(CONFIGURATION),
        _ => Class::Permanent(PROVIDER_REJECTED),
    }
}

/// The failure for an error response.
pub fn failure(status: u16, code: Option<i64>, retry_after: Option<TimeDelta>) -> ProviderFailure {
    let class = code
        .and_then(classify_code)
        .unwrap_or_else(|| classify_status(status));
    match class {
        Class::Retry => ProviderFailure::Retryable {
            http_status: Some(status),
            provider_code: code,
            retry_after,
        },
        Class::Permanent(herald_code) => ProviderFailure::Permanent {
            http_status: Some(status),
            provider_code: code,
            code: herald_code,
        },
    }
}

/// Herald's code for a failure reported in a status webhook.
pub fn status_failure_code(code: Option<i64>) -> &'static str {
    match code.and_then(classify_code) {
        Some(Class::Permanent(herald_code)) => herald_code,
        // A delivery the provider gave up on after accepting it, for a reason that would be
        // transient at send time: Herald does not resend on its own.
        Some(Class::Retry) | None => PROVIDER_REJECTED,
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<TimeDelta> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return (seconds >= 0).then(|| TimeDelta::seconds(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - now).max(TimeDelta::zero()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_issue_examples_are_classified_as_the_reference_says() {
        for code in [130429, 131056, 80007, 4, 131000] {
            assert_eq!(classify_code(code), Some(Class::Retry), "{code}");
        }
        for (code, herald) in [
            (131026, UNDELIVERABLE),
            (131047, OUTSIDE_WINDOW),
            (131051, PROVIDER_REJECTED),
            (132000, TEMPLATE_REJECTED),
            (132001, TEMPLATE_REJECTED),
            (131049, WITHHELD),
            (190, CONFIGURATION),
            (131050, OPTED_OUT),
        ] {
            assert_eq!(
                classify_code(code),
                Some(Class::Permanent(herald)),
                "{code}"
            );
        }
    }

    #[test]
    fn without_a_known_code_the_status_decides() {
        assert!(matches!(
            failure(503, None, None),
            ProviderFailure::Retryable { .. }
        ));
        assert!(matches!(
            failure(429, Some(999_999), None),
            ProviderFailure::Retryable { .. }
        ));
        assert!(matches!(
            failure(401, None, None),
            ProviderFailure::Permanent {
                code: CONFIGURATION,
                ..
            }
        ));
        assert!(matches!(
            failure(400, None, None),
            ProviderFailure::Permanent {
                code: PROVIDER_REJECTED,
                ..
            }
        ));
        // The code wins over the status: 131056 is sometimes sent with 400.
        assert!(matches!(
            failure(400, Some(131056), None),
            ProviderFailure::Retryable { .. }
        ));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = chrono::Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(parse_retry_after("30", now), Some(TimeDelta::seconds(30)));
        assert_eq!(
            parse_retry_after("Tue, 01 Jan 2030 00:02:00 GMT", now),
            Some(TimeDelta::minutes(2))
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
