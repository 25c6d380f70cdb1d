//! The key hierarchy at run time: root keys from a provider, the system data key, one data key
//! per subject, and the purpose keys derived from the system key.
//!
//! ```text
//! root key ring (provider: file | env) ── wraps ─┬─ system data key ── HKDF ─┬─ blind index
//!                                                │                           └─ token hashes
//!                                                └─ one data key per subject ── that subject's
//!                                                                               personal data
//! ```
//!
//! Start-up fails closed: a database that has a system key but no root key, or a root key that
//! cannot unwrap it, stops Herald with a clear message instead of creating fresh keys (which
//! would silently orphan every encrypted value).

use std::sync::{Arc, RwLock};

use herald_crypto::aead::{self, Binding};
use herald_crypto::{
    BlindIndexer, CryptoError, KeyProviderError, RootKeyProvider, RootKeyRing, SymmetricKey,
    TokenHasher,
};
use zeroize::Zeroizing;

use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::clock::Timestamp;
use crate::ids::SubjectId;
use crate::phone::PhoneNumber;
use crate::store::{RewrappedKey, Store, StoreError, StoredKey};

/// Data keys are not rotated yet; every data envelope carries this version so they can be.
const DATA_KEY_VERSION: u32 = 1;
/// How many subject keys one rotation transaction re-wraps.
const ROTATION_BATCH: u32 = 500;

fn system_key_binding() -> Binding<'static> {
    Binding::new("system_keys", "wrapped_key", "system")
}

fn subject_key_binding(id: &SubjectId) -> Binding<'_> {
    Binding::new("subject_keys", "wrapped_key", id.as_str())
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "this database was initialised with a root key that is not available ({provider}). \
         Restore the original root key; Herald will not create a new one for an existing database"
    )]
    RootKeyMissing { provider: String },
    #[error(
        "the root key ({provider}) does not belong to this database: it cannot unwrap the \
         system key. Restore the root key this database was initialised with"
    )]
    RootKeyMismatch { provider: String },
    #[error("root key version {version} is needed but not loaded from {provider}")]
    RootKeyVersionMissing { version: u32, provider: String },
    #[error(
        "the database has not been initialised yet (run `herald serve` or `herald migrate` once)"
    )]
    NotInitialised,
    #[error("subject {0} has no data key (erased?)")]
    NoSubjectKey(SubjectId),
    #[error("a rotation made no progress: is another rotation running?")]
    RotationStalled,
    #[error(transparent)]
    Provider(#[from] KeyProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Whether [`Keyring::open`] found an initialised database or initialised a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringState {
    Initialised,
    Existing,
}

/// The outcome of a root-key rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub active_version: u32,
    pub system_key_rewrapped: bool,
    pub subject_keys_rewrapped: u64,
}

pub struct Keyring {
    store: Arc<dyn Store>,
    provider: Arc<dyn RootKeyProvider>,
    // A std lock, never held across an await: reads are a pointer clone.
    root: RwLock<Arc<RootKeyRing>>,
    system: SymmetricKey,
    blind: BlindIndexer,
    tokens: TokenHasher,
    // Unwrapped subject keys. Bounded; an evicted key is zeroised when its last user drops it.
    subject_keys: quick_cache::sync::Cache<SubjectId, Arc<SymmetricKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("provider", &self.provider)
            .field("cached_subject_keys", &self.subject_keys.len())
            .finish_non_exhaustive()
    }
}

fn unwrap_system(
    ring: &RootKeyRing,
    stored: &StoredKey,
    provider: &dyn RootKeyProvider,
) -> Result<SymmetricKey, KeyError> {
    ring.unwrap_key(&stored.wrapped, &system_key_binding())
        .map_err(|e| match e {
            CryptoError::UnknownKeyVersion(version) => KeyError::RootKeyVersionMissing {
                version,
                provider: provider.describe(),
            },
            _ => KeyError::RootKeyMismatch {
                provider: provider.describe(),
            },
        })
}

impl Keyring {
    /// Loads the root keys and the system key, initialising both on a fresh database.
    pub async fn open(
        store: Arc<dyn Store>,
        provider: Arc<dyn RootKeyProvider>,
        cache_capacity: usize,
        now: Timestamp,
    ) -> Result<(Self, KeyringState), KeyError> {
        let stored = store.system_key().await?;
        let ring = provider.load()?;
        let (ring, system, state) = match (stored, ring) {
            (Some(_), None) => {
                return Err(KeyError::RootKeyMissing {
                    provider: provider.describe(),
                });
            }
            (Some(stored), Some(ring)) => {
                let system = unwrap_system(&ring, &stored, provider.as_ref())?;
                (ring, system, KeyringState::Existing)
            }
            (None, ring) => {
                let ring = match ring {
                    Some(ring) => ring,
                    None => provider.create()?,
                };
                let system = SymmetricKey::generate()?;
                let wrapped = StoredKey {
                    root_version: ring.active_version(),
                    wrapped: ring.wrap(&system, &system_key_binding())?,
                };
                if store.insert_system_key(&wrapped, now).await? {
                    (ring, system, KeyringState::Initialised)
                } else {
                    // Another node initialised the database first: use its key, if ours opens it.
                    let stored = store.system_key().await?.ok_or(KeyError::NotInitialised)?;
                    let system = unwrap_system(&ring, &stored, provider.as_ref())?;
                    (ring, system, KeyringState::Existing)
                }
            }
        };
        let keyring = Self {
            blind: BlindIndexer::new(&system)?,
            tokens: TokenHasher::new(&system)?,
            system,
            store,
            provider,
            root: RwLock::new(Arc::new(ring)),
            subject_keys: quick_cache::sync::Cache::new(cache_capacity.max(16)),
        };
        Ok((keyring, state))
    }

    fn ring(&self) -> Arc<RootKeyRing> {
        Arc::clone(&self.root.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The active root-key version (the one new data keys are wrapped under).
    pub fn active_root_version(&self) -> u32 {
        self.ring().active_version()
    }

    /// Re-reads the root keys from the provider (after `herald keys rotate-root` in another
    /// process). The new ring is adopted only if it opens this database's system key and yields
    /// the key in use; otherwise the loaded ring stays and the error is returned.
    pub async fn reload_root(&self) -> Result<bool, KeyError> {
        let Some(ring) = self.provider.load()? else {
            return Err(KeyError::RootKeyMissing {
                provider: self.provider.describe(),
            });
        };
        if ring.versions().eq(self.ring().versions()) {
            return Ok(false);
        }
        let stored = self
            .store
            .system_key()
            .await?
            .ok_or(KeyError::NotInitialised)?;
        if unwrap_system(&ring, &stored, self.provider.as_ref())? != self.system {
            return Err(KeyError::RootKeyMismatch {
                provider: self.provider.describe(),
            });
        }
        *self.root.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(true)
    }

    /// The blind index of a phone number: how subjects are found without decrypting anything.
    pub fn phone_index(&self, phone: &PhoneNumber) -> [u8; 32] {
        self.blind.index("phone", phone.e164())
    }

    /// The blind index of a provider's message id (a WhatsApp id embeds the phone number, so
    /// it is stored encrypted and found through this).
    pub fn provider_ref_index(&self, provider_message_id: &str) -> [u8; 32] {
        self.blind.index("provider_message", provider_message_id)
    }

    pub fn token_hasher(&self) -> &TokenHasher {
        &self.tokens
    }

    /// A fresh data key for a new subject, and its wrapped form to store.
    pub fn new_subject_key(
        &self,
        id: &SubjectId,
    ) -> Result<(Arc<SymmetricKey>, StoredKey), KeyError> {
        let ring = self.ring();
        let key = SymmetricKey::generate()?;
        let stored = StoredKey {
            root_version: ring.active_version(),
            wrapped: ring.wrap(&key, &subject_key_binding(id))?,
        };
        Ok((Arc::new(key), stored))
    }

    /// Keeps a subject key that was just stored, sparing the first use an unwrap.
    pub fn remember_subject_key(&self, id: &SubjectId, key: Arc<SymmetricKey>) {
        self.subject_keys.insert(id.clone(), key);
    }

    /// Drops a subject key from the cache (erasure). The memory is zeroised when the last
    /// user lets go of it.
    pub fn forget_subject_key(&self, id: &SubjectId) {
        self.subject_keys.remove(id);
    }

    /// The subject's data key, from the cache or unwrapped from the store.
    pub async fn subject_key(&self, id: &SubjectId) -> Result<Arc<SymmetricKey>, KeyError> {
        if let Some(key) = self.subject_keys.get(id) {
            return Ok(key);
        }
        let stored = self
            .store
            .subject_key(id)
            .await?
            .ok_or_else(|| KeyError::NoSubjectKey(id.clone()))?;
        let key = match self
            .ring()
            .unwrap_key(&stored.wrapped, &subject_key_binding(id))
        {
            Err(CryptoError::UnknownKeyVersion(_)) => {
                // Wrapped by a newer root version than we loaded: another process rotated.
                self.reload_root().await?;
                self.ring()
                    .unwrap_key(&stored.wrapped, &subject_key_binding(id))
                    .map_err(|e| match e {
                        CryptoError::UnknownKeyVersion(version) => {
                            KeyError::RootKeyVersionMissing {
                                version,
                                provider: self.provider.describe(),
                            }
                        }
                        other => KeyError::Crypto(other),
                    })?
            }
            other => other?,
        };
        let key = Arc::new(key);
        self.subject_keys.insert(id.clone(), Arc::clone(&key));
        Ok(key)
    }

    /// Encrypts a subject's personal data under the subject's data key.
    pub fn seal_for_subject(
        key: &SymmetricKey,
        at: &Binding<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        Ok(aead::seal(key, DATA_KEY_VERSION, at, plaintext)?)
    }

    pub fn open_for_subject(
        key: &SymmetricKey,
        at: &Binding<'_>,
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        Ok(aead::open(key, at, envelope)?)
    }

    /// Encrypts system secrets (provider credentials, webhook secrets) under the system key.
    pub fn seal_system(&self, at: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(aead::seal(&self.system, DATA_KEY_VERSION, at, plaintext)?)
    }

    pub fn open_system(
        &self,
        at: &Binding<'_>,
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        Ok(aead::open(&self.system, at, envelope)?)
    }
}

/// Makes a new root-key version active (file provider) or adopts the newest one handed in
/// (env provider), then re-wraps the system key and every subject key still under an older
/// version. Data is never re-encrypted. Safe to re-run: it continues where it stopped.
pub async fn rotate_root(
    store: &dyn Store,
    provider: &dyn RootKeyProvider,
    now: Timestamp,
    initiator: &Initiator,
) -> Result<RotationReport, KeyError> {
    let stored_system = store.system_key().await?.ok_or(KeyError::NotInitialised)?;
    let current = provider.load()?.ok_or_else(|| KeyError::RootKeyMissing {
        provider: provider.describe(),
    })?;
    // Prove the current keys fit this database before creating anything new.
    let system = unwrap_system(&current, &stored_system, provider)?;
    let ring = provider.rotate()?;
    let active = ring.active_version();
    let mut report = RotationReport {
        active_version: active,
        system_key_rewrapped: false,
        subject_keys_rewrapped: 0,
    };
    if stored_system.root_version < active {
        let rewrapped = StoredKey {
            root_version: active,
            wrapped: ring.wrap(&system, &system_key_binding())?,
        };
        let event = AuditEvent::new(initiator, Action::RootKeyRotated, Outcome::Success)
            .target(Target::RootKey)
            .details(
                Details::new()
                    .with("root_version", active)
                    .with("previous_version", stored_system.root_version),
            );
        report.system_key_rewrapped = store
            .replace_system_key(
                stored_system.root_version,
                &rewrapped,
                now,
                &AuditRecord::new(&event, now),
            )
            .await?;
    }
    loop {
        let batch = store.subject_keys_below(active, ROTATION_BATCH).await?;
        if batch.is_empty() {
            break;
        }
        let rewrapped = batch
            .into_iter()
            .map(|(subject_id, stored)| {
                let at = subject_key_binding(&subject_id);
                let key = ring.unwrap_key(&stored.wrapped, &at).map_err(|e| match e {
                    CryptoError::UnknownKeyVersion(version) => KeyError::RootKeyVersionMissing {
                        version,
                        provider: provider.describe(),
                    },
                    other => KeyError::Crypto(other),
                })?;
                let wrapped = ring.wrap(&key, &at)?;
                Ok(RewrappedKey {
                    previous_version: stored.root_version,
                    key: StoredKey {
                        root_version: active,
                        wrapped,
                    },
                    subject_id,
                })
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        let event = AuditEvent::new(initiator, Action::SubjectKeysRewrapped, Outcome::Success)
            .target(Target::RootKey)
            .details(
                Details::new()
                    .with("root_version", active)
                    .with("count", rewrapped.len() as u64),
            );
        let replaced = store
            .replace_subject_keys(&rewrapped, now, &AuditRecord::new(&event, now))
            .await?;
        if replaced == 0 {
            return Err(KeyError::RotationStalled);
        }
        report.subject_keys_rewrapped += replaced;
    }
    Ok(report)
}
