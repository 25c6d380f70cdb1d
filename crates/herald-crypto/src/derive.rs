//! Purpose keys derived with HKDF-SHA256 from a data key, so one stored secret (the system data
//! key, itself wrapped by the root key) yields independent keys for independent jobs.
//!
//! They are derived from the system data key rather than from the root key on purpose: root-key
//! rotation re-wraps the system key but does not change it, so blind indexes and token hashes
//! stay valid across rotations, and the database alone (without the root key) yields neither.

use std::fmt;

use ring::{hkdf, hmac};
use subtle::ConstantTimeEq;

use crate::{CryptoError, SymmetricKey};

const SALT: &[u8] = b"herald/hkdf/v1";

fn derive_hmac_key(master: &SymmetricKey, label: &'static str) -> Result<hmac::Key, CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(master.expose());
    let info = [label.as_bytes()];
    // `expand` only fails when asked for more than 255 hash blocks; ours is one.
    let okm = prk
        .expand(&info, hmac::HMAC_SHA256)
        .map_err(|_| CryptoError::Malformed)?;
    Ok(hmac::Key::from(okm))
}

/// Computes blind indexes: keyed HMAC-SHA256 digests that let Herald find a subject by phone
/// number without storing or comparing the number itself.
pub struct BlindIndexer {
    key: hmac::Key,
}

impl fmt::Debug for BlindIndexer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndexer([REDACTED])")
    }
}

impl BlindIndexer {
    pub fn new(master: &SymmetricKey) -> Result<Self, CryptoError> {
        Ok(Self {
            key: derive_hmac_key(master, "herald/blind-index/v1")?,
        })
    }

    /// The blind index of `value` within `domain` (e.g. `"phone"`), so equal values in
    /// different domains never share an index.
    pub fn index(&self, domain: &str, value: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

/// Hashes bearer tokens (API keys) for storage. The tokens carry 256 bits of randomness, so a
/// fast keyed hash is enough; a slow password hash would only slow every request down.
pub struct TokenHasher {
    key: hmac::Key,
}

impl fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHasher([REDACTED])")
    }
}

impl TokenHasher {
    pub fn new(master: &SymmetricKey) -> Result<Self, CryptoError> {
        Ok(Self {
            key: derive_hmac_key(master, "herald/token-hash/v1")?,
        })
    }

    pub fn hash(&self, token: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.key, token.as_bytes()).as_ref());
        out
    }

    /// Whether `token` hashes to `stored`, compared in constant time.
    pub fn matches(&self, token: &str, stored: &[u8]) -> bool {
        self.hash(token).ct_eq(stored).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blind_index_is_deterministic_and_keyed() {
        let a = BlindIndexer::new(&SymmetricKey::from_bytes([1; 32])).unwrap();
        let b = BlindIndexer::new(&SymmetricKey::from_bytes([2; 32])).unwrap();
        let phone = "+4915112345678";
        assert_eq!(a.index("phone", phone), a.index("phone", phone));
        assert_ne!(a.index("phone", phone), b.index("phone", phone));
        assert_ne!(a.index("phone", phone), a.index("email", phone));
        assert_ne!(a.index("phone", phone), a.index("phone", "+4915112345679"));
    }

    #[test]
    fn purposes_are_independent() {
        let master = SymmetricKey::from_bytes([3; 32]);
        let index = BlindIndexer::new(&master).unwrap().index("", "x");
        let hash = TokenHasher::new(&master).unwrap().hash("\0x");
        assert_ne!(index, hash);
    }

    #[test]
    fn token_matching() {
        let hasher = TokenHasher::new(&SymmetricKey::from_bytes([4; 32])).unwrap();
        let stored = hasher.hash("hk_abc");
        assert!(hasher.matches("hk_abc", &stored));
        assert!(!hasher.matches("hk_abd", &stored));
        assert!(!hasher.matches("hk_abc", &stored[..31]));
    }

    #[test]
    fn debug_is_redacted() {
        let master = SymmetricKey::from_bytes([5; 32]);
        assert_eq!(
            format!("{:?}", BlindIndexer::new(&master).unwrap()),
            "BlindIndexer([REDACTED])"
        );
        assert_eq!(
            format!("{:?}", TokenHasher::new(&master).unwrap()),
            "TokenHasher([REDACTED])"
        );
    }
}
