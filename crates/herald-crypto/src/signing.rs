//! Ed25519 signatures (audit checkpoints, erasure receipts).
//!
//! The private key is a PKCS#8 document; callers store it encrypted (under the system key) and
//! hand it back here to sign. Verification needs only the 32-byte public key, so anyone holding
//! it can check a signature without Herald.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::CryptoError;

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signing key. `Debug` shows only the public half.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field(
                "public_key",
                &data_encoding::HEXLOWER.encode(self.public_key()),
            )
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key; returns it and its PKCS#8 encoding (secret: store it encrypted).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| CryptoError::Random)?;
        let pkcs8 = Zeroizing::new(document.as_ref().to_vec());
        let key = Self::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError::Malformed)?;
        Ok(Self { pair })
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// Whether `signature` is a valid Ed25519 signature of `message` under `public_key`.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let (key, pkcs8) = SigningKey::generate().unwrap();
        let signature = key.sign(b"checkpoint 42");
        assert!(verify(key.public_key(), b"checkpoint 42", &signature));
        assert!(!verify(key.public_key(), b"checkpoint 43", &signature));
        let mut bad = signature;
        bad[0] ^= 1;
        assert!(!verify(key.public_key(), b"checkpoint 42", &bad));
        let reloaded = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(reloaded.public_key(), key.public_key());
        let (other, _) = SigningKey::generate().unwrap();
        assert!(!verify(other.public_key(), b"checkpoint 42", &signature));
        assert!(!format!("{key:?}").contains("pkcs8"));
    }
}
