//! When to try a failed delivery again, and when to give up: a pure function of the attempt
//! number, the failure, the time and a jitter factor, so it is tested without waiting.

use chrono::TimeDelta;

use super::provider::ProviderFailure;
use crate::clock::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The pause after the first failed attempt; it doubles with every further one…
    pub base: TimeDelta,
    /// …up to this.
    pub max: TimeDelta,
    /// A provider's `Retry-After` is honoured up to this long.
    pub retry_after_cap: TimeDelta,
    pub max_attempts: u32,
    /// A message still unsent this long after it was accepted is given up.
    pub max_age: TimeDelta,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    RetryAt(Timestamp),
    /// Give up: the message fails with this Herald error code.
    Fail {
        code: &'static str,
    },
}

pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";

impl RetryPolicy {
    /// `attempt`: attempts made so far, this one included (1 after the first). `jitter` in
    /// `[0, 1)`: spreads retries of messages that failed together ("equal jitter": between half
    /// and all of the exponential delay).
    pub fn decide(
        &self,
        attempt: u32,
        failure: &ProviderFailure,
        created_at: Timestamp,
        now: Timestamp,
        jitter: f64,
    ) -> Decision {
        let retry_after = match failure {
            ProviderFailure::Permanent { code, .. } => return Decision::Fail { code },
            ProviderFailure::Retryable { retry_after, .. } => *retry_after,
        };
        if attempt >= self.max_attempts {
            return Decision::Fail {
                code: RETRIES_EXHAUSTED,
            };
        }
        let exponent = attempt.saturating_sub(1).min(30);
        let exponential = self
            .base
            .checked_mul(1i32 << exponent)
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        let half = exponential / 2;
        let spread = TimeDelta::milliseconds((half.num_milliseconds() as f64 * jitter) as i64);
        let mut delay = half + spread;
        if let Some(asked) = retry_after {
            delay = delay.max(asked.min(self.retry_after_cap));
        }
        let at = now + delay;
        if at - created_at > self.max_age {
            return Decision::Fail {
                code: RETRIES_EXHAUSTED,
            };
        }
        Decision::RetryAt(at)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: TimeDelta::seconds(2),
            max: TimeDelta::hours(1),
            retry_after_cap: TimeDelta::minutes(15),
            max_attempts: 8,
            max_age: TimeDelta::hours(24),
        }
    }

    fn t0() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
    }

    fn retryable(retry_after: Option<TimeDelta>) -> ProviderFailure {
        ProviderFailure::Retryable {
            http_status: Some(503),
            provider_code: None,
            retry_after,
        }
    }

    #[test]
    fn delays_double_and_are_capped() {
        let p = policy();
        let at = |attempt, jitter| match p.decide(attempt, &retryable(None), t0(), t0(), jitter) {
            Decision::RetryAt(at) => at - t0(),
            other => panic!("{other:?}"),
        };
        // No jitter: half the exponential delay; full jitter: all of it.
        assert_eq!(at(1, 0.0), TimeDelta::seconds(1));
        assert_eq!(at(1, 0.999_999), TimeDelta::milliseconds(1999));
        assert_eq!(at(2, 0.0), TimeDelta::seconds(2));
        assert_eq!(at(3, 0.0), TimeDelta::seconds(4));
        assert_eq!(at(7, 0.0), TimeDelta::seconds(64));
        let capped = RetryPolicy {
            max_attempts: 40,
            max_age: TimeDelta::days(30),
            ..policy()
        };
        match capped.decide(30, &retryable(None), t0(), t0(), 0.999) {
            Decision::RetryAt(at) => assert!(at - t0() <= TimeDelta::hours(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy();
        assert_eq!(
            p.decide(1, &retryable(Some(TimeDelta::seconds(30))), t0(), t0(), 0.0),
            Decision::RetryAt(t0() + TimeDelta::seconds(30))
        );
        assert_eq!(
            p.decide(1, &retryable(Some(TimeDelta::hours(5))), t0(), t0(), 0.0),
            Decision::RetryAt(t0() + TimeDelta::minutes(15))
        );
        // A shorter Retry-After than the backoff does not shorten it.
        assert_eq!(
            p.decide(7, &retryable(Some(TimeDelta::seconds(1))), t0(), t0(), 0.0),
            Decision::RetryAt(t0() + TimeDelta::seconds(64))
        );
    }

    #[test]
    fn permanent_failures_fail_at_once_and_attempts_and_age_run_out() {
        let p = policy();
        let permanent = ProviderFailure::Permanent {
            http_status: Some(400),
            provider_code: Some(131026),
            code: "undeliverable",
        };
        assert_eq!(
            p.decide(1, &permanent, t0(), t0(), 0.5),
            Decision::Fail {
                code: "undeliverable"
            }
        );
        assert_eq!(
            p.decide(8, &retryable(None), t0(), t0(), 0.5),
            Decision::Fail {
                code: RETRIES_EXHAUSTED
            }
        );
        // The next try (about 3 s away) would fall past the 24-hour limit.
        let late = t0() + TimeDelta::hours(23) + TimeDelta::minutes(59) + TimeDelta::seconds(59);
        assert_eq!(
            p.decide(2, &retryable(None), t0(), late, 0.5),
            Decision::Fail {
                code: RETRIES_EXHAUSTED
            }
        );
    }

    proptest! {
        #[test]
        fn a_retry_is_always_in_the_future_and_within_bounds(attempt in 1u32..8, jitter in 0.0f64..1.0,
                                                             retry_after in proptest::option::of(0i64..100_000)) {
            let p = policy();
            let failure = retryable(retry_after.map(TimeDelta::seconds));
            match p.decide(attempt, &failure, t0(), t0(), jitter) {
                Decision::RetryAt(at) => {
                    prop_assert!(at > t0());
                    prop_assert!(at - t0() <= p.max.max(p.retry_after_cap));
                }
                Decision::Fail { code } => prop_assert_eq!(code, RETRIES_EXHAUSTED),
            }
        }
    }
}
