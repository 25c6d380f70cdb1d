//! Failures an anonymous caller can produce at will — requests without a valid credential,
//! callbacks with a bad signature — must not fill a trail that is kept for years, nor load its
//! single writer. They are aggregated: per source network (/24, /48) and reason, the first
//! failure of a minute is recorded at once; the rest of that minute become one entry carrying
//! their count when the minute is over. So a flood leaves at most two entries per source,
//! reason and minute, and an isolated failure is still recorded the moment it happens.
//!
//! Many distinct sources at once (a distributed flood) share one "other" bucket beyond
//! [`MAX_SOURCES`] tracked networks, so memory stays bounded too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::TimeDelta;

use super::event::network_of;
use crate::clock::Timestamp;

/// Networks tracked at once; beyond, failures count under one shared bucket.
pub const MAX_SOURCES: usize = 4096;

/// What failed, from where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailureKey {
    /// The kind of entry (`auth.failed`, `provider_webhook.rejected`).
    pub action: super::Action,
    /// `/24` or `/48` network, or `"other"` beyond [`MAX_SOURCES`], or `"unknown"`.
    pub source: String,
    pub reason: &'static str,
}

/// A failure to record now (the first of its window), or a window's remainder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub key: FailureKey,
    /// Failures this entry stands for.
    pub count: u64,
    /// When the window began.
    pub since: Timestamp,
}

#[derive(Debug)]
struct Window {
    started: Timestamp,
    /// Failures after the first in this window, not yet recorded.
    pending: u64,
}

/// Aggregates failures per source network and reason over a fixed window.
#[derive(Debug)]
pub struct FloodGate {
    window: TimeDelta,
    windows: Mutex<HashMap<FailureKey, Window>>,
}

impl FloodGate {
    pub fn new(window: TimeDelta) -> Self {
        Self {
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn window(&self) -> TimeDelta {
        self.window
    }

    /// Counts a failure at `now`. Returns what to record at once: the failure itself if it
    /// opens a window, the closed window's remainder if one ended, nothing while a window is
    /// open.
    pub fn failure(
        &self,
        action: super::Action,
        source: Option<IpAddr>,
        reason: &'static str,
        now: Timestamp,
    ) -> Vec<FailureRecord> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut source = source.map_or_else(|| "unknown".to_owned(), network_of);
        if !windows.contains_key(&FailureKey {
            action,
            source: source.clone(),
            reason,
        }) && windows.len() >= MAX_SOURCES
        {
            source = "other".to_owned();
        }
        let key = FailureKey {
            action,
            source,
            reason,
        };
        let mut out = Vec::new();
        match windows.get_mut(&key) {
            Some(open) if now - open.started < self.window => {
                open.pending += 1;
            }
            Some(ended) => {
                if ended.pending > 0 {
                    out.push(FailureRecord {
                        key: key.clone(),
                        count: ended.pending,
                        since: ended.started,
                    });
                }
                *ended = Window {
                    started: now,
                    pending: 0,
                };
                out.push(FailureRecord {
                    key,
                    count: 1,
                    since: now,
                });
            }
            None => {
                windows.insert(
                    key.clone(),
                    Window {
                        started: now,
                        pending: 0,
                    },
                );
                out.push(FailureRecord {
                    key,
                    count: 1,
                    since: now,
                });
            }
        }
        out
    }

    /// The remainders of windows that ended by `now` (all of them with `flush_all`, at
    /// shutdown); ended windows are forgotten.
    pub fn drain(&self, now: Timestamp, flush_all: bool) -> Vec<FailureRecord> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        windows.retain(|key, window| {
            let ended = flush_all || now - window.started >= self.window;
            if ended && window.pending > 0 {
                out.push(FailureRecord {
                    key: key.clone(),
                    count: window.pending,
                    since: window.started,
                });
            }
            !ended
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    const A: super::super::Action = super::super::Action::AuthFailed;

    fn t(seconds: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(seconds)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_flood_is_one_entry_now_and_one_with_the_count_after_the_minute() {
        let gate = FloodGate::new(TimeDelta::minutes(1));
        let first = gate.failure(A, ip("203.0.113.7"), "unknown", t(0));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].count, 1);
        assert_eq!(first[0].key.source, "203.0.113.0/24");
        for i in 1..1000 {
            // Another address of the same /24 counts in the same window.
            let host = format!("203.0.113.{}", i % 250);
            assert!(gate.failure(A, ip(&host), "unknown", t(i % 59)).is_empty());
        }
        assert!(
            gate.drain(t(59), false).is_empty(),
            "the minute is not over"
        );
        let rest = gate.drain(t(60), false);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].count, 999);
        assert_eq!(rest[0].since, t(0));
        assert!(gate.drain(t(120), false).is_empty());
    }

    #[test]
    fn sources_and_reasons_are_apart() {
        let gate = FloodGate::new(TimeDelta::minutes(1));
        assert_eq!(gate.failure(A, ip("203.0.113.7"), "unknown", t(0)).len(), 1);
        assert_eq!(gate.failure(A, ip("203.0.114.7"), "unknown", t(0)).len(), 1);
        assert_eq!(gate.failure(A, ip("203.0.113.7"), "revoked", t(0)).len(), 1);
        assert_eq!(
            gate.failure(A, ip("2001:db8:1:2::9"), "unknown", t(0))[0]
                .key
                .source,
            "2001:db8:1::/48"
        );
        assert_eq!(
            gate.failure(A, ip("::ffff:198.51.100.20"), "unknown", t(0))[0]
                .key
                .source,
            "198.51.100.0/24"
        );
        assert_eq!(
            gate.failure(A, None, "unknown", t(0))[0].key.source,
            "unknown"
        );
    }

    #[test]
    fn a_failure_after_the_window_closes_it_and_opens_the_next() {
        let gate = FloodGate::new(TimeDelta::minutes(1));
        gate.failure(A, ip("203.0.113.7"), "unknown", t(0));
        gate.failure(A, ip("203.0.113.7"), "unknown", t(10));
        let next = gate.failure(A, ip("203.0.113.7"), "unknown", t(61));
        assert_eq!(next.len(), 2);
        assert_eq!((next[0].count, next[0].since), (1, t(0)));
        assert_eq!((next[1].count, next[1].since), (1, t(61)));
        // At shutdown every open window's remainder is written.
        gate.failure(A, ip("203.0.113.7"), "unknown", t(62));
        let flushed = gate.drain(t(63), true);
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].count, 1);
    }

    #[test]
    fn memory_is_bounded_under_a_distributed_flood() {
        let gate = FloodGate::new(TimeDelta::minutes(1));
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let address = IpAddr::from((0x0a00_0000u32 + (i << 8)).to_be_bytes());
            gate.failure(A, Some(address), "unknown", t(0));
        }
        let windows = gate.windows.lock().unwrap();
        assert!(windows.len() <= MAX_SOURCES + 1);
        assert!(windows.keys().any(|k| k.source == "other"));
    }
}
