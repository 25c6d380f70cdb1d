//! The enumeration signal: one credential looking up (or registering) many distinct numbers
//! in a short time is what a leaked key sweeping the customer base looks like — the
//! breach-detection signal for the incident process (issue 9).
//!
//! Numbers are remembered only as keyed hashes under a key that lives in this process's
//! memory (never stored, different on every node and start), for one window, so the tracker
//! holds nothing that identifies anyone once the window or the process ends.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::TimeDelta;
use herald_crypto::CryptoError;
use herald_crypto::hash::hmac_sha256;

use crate::clock::Timestamp;

/// When lookups of distinct numbers by one credential are suspicious.
#[derive(Debug, Clone)]
pub struct EnumerationSettings {
    /// Distinct numbers within `window` above which it is suspicious.
    pub distinct_numbers: u32,
    pub window: TimeDelta,
}

/// A credential passed the threshold: audited once per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspicion {
    pub distinct_numbers: u32,
    pub window_seconds: i64,
}

struct Window {
    started: Timestamp,
    numbers: HashSet<[u8; 16]>,
    reported: bool,
}

/// Credentials followed at most; beyond, a new credential is not followed until old windows
/// end (bounded memory, and a sweep by one credential is still caught by its own window).
const MAX_CREDENTIALS: usize = 10_000;

pub(super) struct Tracker {
    settings: EnumerationSettings,
    key: [u8; 32],
    windows: Mutex<HashMap<String, Window>>,
}

impl Tracker {
    pub(super) fn new(settings: EnumerationSettings) -> Result<Self, CryptoError> {
        Ok(Self {
            settings,
            key: herald_crypto::random::bytes::<32>()?,
            windows: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn note(&self, holder: &str, number: &str, now: Timestamp) -> Option<Suspicion> {
        let digest = hmac_sha256(&self.key, &[number.as_bytes()]);
        let mut short = [0u8; 16];
        short.copy_from_slice(&digest[..16]);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !windows.contains_key(holder) && windows.len() >= MAX_CREDENTIALS {
            let window = self.settings.window;
            windows.retain(|_, w| now - w.started < window);
            if windows.len() >= MAX_CREDENTIALS {
                return None;
            }
        }
        let window = windows.entry(holder.to_owned()).or_insert_with(|| Window {
            started: now,
            numbers: HashSet::new(),
            reported: false,
        });
        if now - window.started >= self.settings.window {
            *window = Window {
                started: now,
                numbers: HashSet::new(),
                reported: false,
            };
        }
        // Past the threshold one more number tells nothing new; the set stops growing.
        let threshold = self.settings.distinct_numbers as usize;
        if window.numbers.len() <= threshold {
            window.numbers.insert(short);
        }
        if window.numbers.len() > threshold && !window.reported {
            window.reported = true;
            return Some(Suspicion {
                distinct_numbers: u32::try_from(window.numbers.len()).unwrap_or(u32::MAX),
                window_seconds: self.settings.window.num_seconds(),
            });
        }
        None
    }

    pub(super) fn forget_old(&self, now: Timestamp) {
        let window = self.settings.window;
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, w| now - w.started < window);
    }
}
