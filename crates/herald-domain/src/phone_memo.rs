//! A memo of phone inputs already parsed: what an integrator sent (`"+4915112345678"`) → the
//! blind index of the number it parses to. Parsing and validating a number costs ~7 µs (the
//! `phonenumber` crate's metadata regexes), about a tenth of a send's CPU, and integrators send
//! to the same customers again and again.
//!
//! It holds no phone numbers. Keys are HMACs of the raw input under a key made at start-up and
//! never stored; values are blind indexes, which the database holds anyway. Whoever can read
//! this memory can read the blind-index key beside it, so the memo exposes nothing new. Only
//! inputs that parsed are remembered: an invalid number is parsed, and refused, every time.
//! Parsing depends only on the input and the configured default region, which is fixed for
//! the memo's lifetime (one per [`crate::subjects::Subjects`]).

use std::collections::HashMap;
use std::sync::Mutex;

use herald_crypto::CryptoError;
use herald_crypto::aead::SymmetricKey;
use herald_crypto::derive::BlindIndexer;

/// Entries kept at most (~100 bytes each); when full, the memo starts over. Simpler than an
/// LRU and bounded all the same: a miss costs one parse.
const CAPACITY: usize = 16_384;

pub(crate) struct PhoneIndexMemo {
    input_key: BlindIndexer,
    entries: Mutex<HashMap<[u8; 32], [u8; 32]>>,
}

impl std::fmt::Debug for PhoneIndexMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneIndexMemo").finish_non_exhaustive()
    }
}

/// The memo's key for one raw input.
#[derive(Clone, Copy)]
pub(crate) struct InputKey([u8; 32]);

impl PhoneIndexMemo {
    pub(crate) fn new() -> Result<Self, CryptoError> {
        Ok(Self {
            input_key: BlindIndexer::new(&SymmetricKey::generate()?)?,
            entries: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn key(&self, input: &str) -> InputKey {
        InputKey(self.input_key.index("phone-input", input))
    }

    pub(crate) fn get(&self, key: InputKey) -> Option<[u8; 32]> {
        self.lock().get(&key.0).copied()
    }

    pub(crate) fn remember(&self, key: InputKey, phone_index: [u8; 32]) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key.0, phone_index);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], [u8; 32]>> {
        // The map holds no invariant a panicking holder could break.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_by_input_and_only_what_it_was_given() {
        let memo = PhoneIndexMemo::new().unwrap();
        let key = memo.key("+4915112345678");
        assert_eq!(memo.get(key), None);
        memo.remember(key, [7; 32]);
        assert_eq!(memo.get(memo.key("+4915112345678")), Some([7; 32]));
        // Another spelling is another input (it is parsed once, then remembered on its own).
        assert_eq!(memo.get(memo.key("+49 151 12345678")), None);
    }

    #[test]
    fn keys_are_keyed_per_process_not_plain_hashes() {
        let (a, b) = (
            PhoneIndexMemo::new().unwrap(),
            PhoneIndexMemo::new().unwrap(),
        );
        assert_ne!(a.key("+4915112345678").0, b.key("+4915112345678").0);
    }

    #[test]
    fn stays_bounded() {
        let memo = PhoneIndexMemo::new().unwrap();
        for n in 0..(CAPACITY + 10) {
            memo.remember(memo.key(&format!("+49151{n:08}")), [0; 32]);
        }
        assert!(memo.len() <= CAPACITY);
        assert!(memo.len() >= 10);
    }
}
