use std::net::IpAddr;

use chrono::{TimeDelta, TimeZone, Utc};

use super::*;
use crate::auth::{Credential, Scopes};
use crate::clock::ManualClock;
use crate::ids::ApiKeyId;

fn settings() -> LimitSettings {
    LimitSettings {
        enabled: true,
        credential: Rate::new(60, 10).unwrap(),
        routes: vec![(RouteClass::Export, Rate::new(2, 2).unwrap())],
        source_requests: Rate::new(600, 100).unwrap(),
        source_failures: Rate::new(10, 10).unwrap(),
        cooling_off: Duration::from_secs(300),
        enumeration: EnumerationSettings {
            distinct_numbers: 5,
            window: TimeDelta::minutes(10),
        },
        configured_overrides: Vec::new(),
    }
}

fn limits() -> (RateLimits, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
    ));
    let limits = RateLimits::new(settings(), Arc::clone(&clock) as Arc<dyn Clock>).unwrap();
    (limits, clock)
}

fn principal(integration: &IntegrationId) -> Principal {
    Principal {
        integration_id: integration.clone(),
        credential: Credential::ApiKey(ApiKeyId::generate().unwrap()),
        scopes: Scopes::new([]),
    }
}

#[test]
fn a_burst_passes_then_the_rate_and_retry_after_are_exact() {
    let (limits, clock) = limits();
    let caller = principal(&IntegrationId::generate().unwrap());
    for i in 0..10 {
        let allowed = limits.check_credential(&caller, None).unwrap().unwrap();
        assert_eq!(allowed.remaining, 9 - i);
    }
    let refused = limits.check_credential(&caller, None).unwrap_err();
    assert_eq!(refused.limit, "credential");
    assert_eq!(refused.retry_after_seconds, 1);
    // One per second comes back.
    clock.advance(TimeDelta::seconds(1));
    assert!(limits.check_credential(&caller, None).is_ok());
    assert!(limits.check_credential(&caller, None).is_err());
    // Another credential has its own bucket.
    let other = principal(&caller.integration_id);
    assert!(limits.check_credential(&other, None).is_ok());
}

#[test]
fn a_route_class_is_stricter_and_named() {
    let (limits, clock) = limits();
    let caller = principal(&IntegrationId::generate().unwrap());
    for _ in 0..2 {
        let allowed = limits
            .check_credential(&caller, Some(RouteClass::Export))
            .unwrap()
            .unwrap();
        assert_eq!(allowed.limit, "route:export");
    }
    let refused = limits
        .check_credential(&caller, Some(RouteClass::Export))
        .unwrap_err();
    assert_eq!(refused.limit, "route:export");
    assert_eq!(refused.retry_after_seconds, 30);
    clock.advance(TimeDelta::seconds(29));
    assert!(
        limits
            .check_credential(&caller, Some(RouteClass::Export))
            .is_err()
    );
    clock.advance(TimeDelta::seconds(1));
    assert!(
        limits
            .check_credential(&caller, Some(RouteClass::Export))
            .is_ok()
    );
    // Other routes only count against the credential.
    assert!(limits.check_credential(&caller, None).is_ok());
}

#[test]
fn an_override_replaces_the_credential_rate_for_one_integration() {
    let (limits, _) = limits();
    let big = IntegrationId::generate().unwrap();
    limits.set_overrides(vec![(big.clone(), Rate::new(600, 50).unwrap())]);
    assert_eq!(limits.credential_rate(&big).burst, 50);
    let caller = principal(&big);
    for _ in 0..50 {
        assert!(limits.check_credential(&caller, None).is_ok());
    }
    assert!(limits.check_credential(&caller, None).is_err());
    limits.set_overrides(Vec::new());
    assert_eq!(limits.credential_rate(&big), settings().credential);
}

#[test]
fn failures_from_one_network_cool_it_off() {
    let (limits, clock) = limits();
    let attacker: IpAddr = "203.0.113.7".parse().unwrap();
    let neighbour: IpAddr = "203.0.113.99".parse().unwrap();
    let elsewhere: IpAddr = "198.51.100.1".parse().unwrap();
    for _ in 0..10 {
        limits.source_failure(Some(attacker));
        assert!(limits.check_source(Some(attacker), false).is_ok());
    }
    limits.source_failure(Some(attacker));
    let refused = limits.check_source(Some(neighbour), false).unwrap_err();
    assert_eq!(refused.limit, "source");
    assert_eq!(refused.retry_after_seconds, 300);
    assert!(limits.check_source(Some(elsewhere), false).is_ok());
    clock.advance(TimeDelta::seconds(299));
    assert_eq!(
        limits
            .check_source(Some(attacker), false)
            .unwrap_err()
            .retry_after_seconds,
        1
    );
    clock.advance(TimeDelta::seconds(1));
    assert!(limits.check_source(Some(attacker), false).is_ok());
}

#[test]
fn the_enumeration_signal_fires_once_per_window_on_distinct_numbers_only() {
    let (limits, clock) = limits();
    let caller = principal(&IntegrationId::generate().unwrap());
    // The same number again and again is not a sweep.
    for _ in 0..50 {
        assert!(limits.note_lookup(&caller, "+4915100000001").is_none());
    }
    for i in 2..=5 {
        assert!(
            limits
                .note_lookup(&caller, &format!("+491510000000{i}"))
                .is_none()
        );
    }
    let suspicion = limits.note_lookup(&caller, "+4915100000006").unwrap();
    assert_eq!(suspicion.distinct_numbers, 6);
    assert!(limits.note_lookup(&caller, "+4915100000007").is_none());
    clock.advance(TimeDelta::minutes(10));
    for i in 0..6 {
        let fired = limits.note_lookup(&caller, &format!("+4915200000{i:03}"));
        assert_eq!(fired.is_some(), i == 5);
    }
}

#[test]
fn disabled_limits_let_everything_through() {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
    ));
    let mut off = settings();
    off.enabled = false;
    let limits = RateLimits::new(off, clock as Arc<dyn Clock>).unwrap();
    let caller = principal(&IntegrationId::generate().unwrap());
    for _ in 0..100 {
        assert_eq!(limits.check_credential(&caller, None), Ok(None));
    }
}

#[test]
fn rates_refuse_zero() {
    assert!(Rate::new(0, 1).is_err());
    assert!(Rate::new(1, 0).is_err());
    assert!(Rate::new(2_000_000, 1).is_err());
}
