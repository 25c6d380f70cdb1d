//! AES-256-GCM envelopes bound to their place.
//!
//! Envelope layout (version 1), all integers big-endian:
//!
//! ```text
//! 0      1            5               17                 len-16      len
//! | 0x01 | key version | nonce (96 bit) | ciphertext ...  | tag (128 bit) |
//! ```
//!
//! The additional authenticated data is never stored; it is rebuilt from the ciphertext's
//! place ([`Binding`]) and the key version:
//!
//! ```text
//! "herald/aead/v1" | key version (u32) | len(table) u16 | table | len(column) u16 | column
//!                  | len(row) u16 | row
//! ```
//!
//! Length prefixes make the encoding unambiguous, so no two different places share an AAD.
//! Nonces are random (96 bits from the OS CSPRNG); at the volumes one key sees here (one data
//! key per subject) the collision bound of 2^32 messages per key is far away.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{CryptoError, random};

/// Length in bytes of every symmetric key Herald uses.
pub const KEY_LEN: usize = 32;
const ENVELOPE_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;
const AAD_DOMAIN: &[u8] = b"herald/aead/v1";

/// A 256-bit symmetric key: a root key, a data key, or a derived purpose key.
/// Zeroised when dropped and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SymmetricKey([u8; KEY_LEN]);

impl SymmetricKey {
    /// A fresh random key from the OS CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(random::bytes::<KEY_LEN>()?))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Builds a key from a slice that must be exactly [`KEY_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(array))
    }

    /// The raw key bytes. Only for wrapping and for handing to `ring`; never log them.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey([REDACTED])")
    }
}

/// The place a ciphertext belongs to. Decryption succeeds only at the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row: &'a str,
}

impl<'a> Binding<'a> {
    pub fn new(table: &'a str, column: &'a str, row: &'a str) -> Self {
        Self { table, column, row }
    }

    fn aad(&self, key_version: u32) -> Vec<u8> {
        let mut aad = Vec::with_capacity(
            AAD_DOMAIN.len() + 4 + 6 + self.table.len() + self.column.len() + self.row.len(),
        );
        aad.extend_from_slice(AAD_DOMAIN);
        aad.extend_from_slice(&key_version.to_be_bytes());
        for part in [self.table, self.column, self.row] {
            // Parts are identifiers we choose (table and column names, ids): far below 64 KiB.
            let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

fn ring_key(key: &SymmetricKey) -> Result<LessSafeKey, CryptoError> {
    let unbound =
        UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| CryptoError::Malformed)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypts `plaintext` under `key` (known to readers as `key_version`), bound to `binding`.
pub fn seal(
    key: &SymmetricKey,
    key_version: u32,
    binding: &Binding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce = random::bytes::<NONCE_LEN>()?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(ENVELOPE_V1);
    out.extend_from_slice(&key_version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = ring_key(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(binding.aad(key_version)),
            &mut out[HEADER_LEN..],
        )
        .map_err(|_| CryptoError::Malformed)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// The key version an envelope was sealed under, read without decrypting.
pub fn key_version(envelope: &[u8]) -> Result<u32, CryptoError> {
    if envelope.len() < HEADER_LEN + TAG_LEN || envelope[0] != ENVELOPE_V1 {
        return Err(CryptoError::Malformed);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&envelope[1..5]);
    Ok(u32::from_be_bytes(version))
}

/// Decrypts an envelope sealed by [`seal`] under `key` at `binding`. The plaintext is zeroised
/// when dropped.
pub fn open(
    key: &SymmetricKey,
    binding: &Binding<'_>,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let version = key_version(envelope)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&envelope[5..HEADER_LEN]);
    let mut buffer = Zeroizing::new(envelope[HEADER_LEN..].to_vec());
    let plaintext_len = ring_key(key)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(binding.aad(version)),
            &mut buffer,
        )
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buffer.truncate(plaintext_len);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn here() -> Binding<'static> {
        Binding::new("subjects", "phone", "sub_a")
    }

    #[test]
    fn round_trips() {
        let key = SymmetricKey::generate().unwrap();
        let envelope = seal(&key, 7, &here(), b"+4915112345678").unwrap();
        assert_eq!(key_version(&envelope).unwrap(), 7);
        assert_eq!(
            &open(&key, &here(), &envelope).unwrap()[..],
            b"+4915112345678"
        );
    }

    #[test]
    fn plaintext_is_not_in_the_envelope() {
        let key = SymmetricKey::generate().unwrap();
        let envelope = seal(&key, 1, &here(), b"+4915112345678").unwrap();
        assert!(!envelope.windows(14).any(|w| w == b"+4915112345678"));
    }

    #[test]
    fn same_plaintext_twice_gives_different_ciphertexts() {
        let key = SymmetricKey::generate().unwrap();
        let a = seal(&key, 1, &here(), b"x").unwrap();
        let b = seal(&key, 1, &here(), b"x").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn another_row_column_or_table_does_not_decrypt() {
        let key = SymmetricKey::generate().unwrap();
        let envelope = seal(&key, 1, &here(), b"secret").unwrap();
        for elsewhere in [
            Binding::new("subjects", "phone", "sub_b"),
            Binding::new("subjects", "name", "sub_a"),
            Binding::new("messages", "phone", "sub_a"),
            // Ambiguity check: moving bytes between parts must not produce the same AAD.
            Binding::new("subjectsphone", "", "sub_a"),
        ] {
            assert!(matches!(
                open(&key, &elsewhere, &envelope),
                Err(CryptoError::Decrypt)
            ));
        }
    }

    #[test]
    fn another_key_does_not_decrypt() {
        let envelope = seal(&SymmetricKey::generate().unwrap(), 1, &here(), b"s").unwrap();
        let other = SymmetricKey::generate().unwrap();
        assert!(matches!(
            open(&other, &here(), &envelope),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn truncated_or_unknown_format_is_malformed() {
        let key = SymmetricKey::generate().unwrap();
        let envelope = seal(&key, 1, &here(), b"").unwrap();
        assert!(matches!(
            open(&key, &here(), &envelope[..envelope.len() - 1]),
            Err(CryptoError::Malformed | CryptoError::Decrypt)
        ));
        let mut wrong_format = envelope;
        wrong_format[0] = 2;
        assert!(matches!(
            open(&key, &here(), &wrong_format),
            Err(CryptoError::Malformed)
        ));
        assert!(matches!(
            open(&key, &here(), &[]),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SymmetricKey::from_bytes([0xAB; KEY_LEN]);
        let shown = format!("{key:?}");
        assert_eq!(shown, "SymmetricKey([REDACTED])");
    }

    proptest! {
        /// Flipping any bit anywhere in an envelope (header, nonce, ciphertext, tag) is detected.
        #[test]
        fn any_flipped_bit_fails(plaintext in proptest::collection::vec(any::<u8>(), 0..200),
                                 position in any::<proptest::sample::Index>(),
                                 bit in 0u8..8) {
            let key = SymmetricKey::from_bytes([7; KEY_LEN]);
            let mut envelope = seal(&key, 3, &here(), &plaintext).unwrap();
            let i = position.index(envelope.len());
            envelope[i] ^= 1 << bit;
            prop_assert!(open(&key, &here(), &envelope).is_err());
        }
    }
}
