//! Herald's cryptography, in one place and on one audited library (`ring`).
//!
//! - [`random`]: the operating system's CSPRNG; the only source of key material and nonces.
//! - [`aead`]: AES-256-GCM envelopes. Each ciphertext carries its key version and is bound
//!   (through the AAD) to its place — table, column, row — so a ciphertext copied elsewhere
//!   does not decrypt.
//! - [`root`]: versioned root keys (key-encryption keys) and the providers that hold them
//!   (`file`, `env`). Root keys only ever wrap data keys; they never encrypt data.
//! - [`derive`]: HKDF-derived purpose keys: the blind index for phone-number look-ups and the
//!   keyed hash for API tokens.
//! - [`signing`]: Ed25519 signatures (audit checkpoints), verifiable with the public key alone.
//!
//! Randomness is deliberately *not* injectable here: a fake RNG that could reach key or nonce
//! generation is a worse risk than the test determinism it would buy.

pub mod aead;
pub mod derive;
mod error;
pub mod hash;
pub mod random;
pub mod root;
pub mod signing;

pub use aead::{Binding, SymmetricKey};
pub use derive::{BlindIndexer, TokenHasher};
pub use error::{CryptoError, KeyProviderError};
pub use root::{EnvKeyProvider, FileKeyProvider, RootKeyProvider, RootKeyRing};
