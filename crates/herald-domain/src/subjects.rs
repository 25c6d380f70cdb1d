//! Data subjects: the people Herald messages, each a random pseudonym (`sub_…`) with the phone
//! number kept only as ciphertext (under the subject's own data key) and as a blind index.

use std::sync::Arc;

use herald_crypto::aead::Binding;

use crate::audit::{Action, Audit, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::batch::Batcher;
use crate::clock::{Clock, Timestamp};
use crate::ids::SubjectId;
use crate::keys::{KeyError, Keyring};
use crate::phone::{self, PhoneError, PhoneNumber, Region};
use crate::phone_memo::PhoneIndexMemo;
use crate::store::{NewSubject, Store, StoreError, SubjectInsert, SubjectRecord};

#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    #[error(transparent)]
    Phone(#[from] PhoneError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("the random number generator failed")]
    Random(#[from] herald_crypto::CryptoError),
}

/// The answer to create-or-find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Created(SubjectRecord),
    Existing(SubjectRecord),
}

impl Registration {
    pub fn subject(&self) -> &SubjectRecord {
        match self {
            Registration::Created(s) | Registration::Existing(s) => s,
        }
    }
}

pub(crate) fn phone_binding(id: &SubjectId) -> Binding<'_> {
    Binding::new("subjects", "phone_ciphertext", id.as_str())
}

type WithErasure = Option<(SubjectRecord, Option<Timestamp>)>;

#[derive(Debug, Clone)]
pub struct Subjects {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    audit: Audit,
    default_region: Option<Region>,
    // Inputs already parsed → their blind index (no numbers held; see phone_memo.rs).
    parsed: Arc<PhoneIndexMemo>,
    // Concurrent requests' look-ups share one query each (the send path's hot read).
    by_index: Batcher<[u8; 32], Option<SubjectRecord>>,
    by_id: Batcher<SubjectId, WithErasure>,
}

/// Look-ups one query takes at most, and how many such queries may run at once.
const LOOKUP_BATCH: usize = 256;
const LOOKUPS_IN_FLIGHT: usize = 1;

fn registered(initiator: &Initiator, id: &SubjectId, created: bool) -> AuditEvent {
    AuditEvent::new(initiator, Action::SubjectRegistered, Outcome::Success)
        .target(Target::Subject(id.clone()))
        .details(Details::new().with("created", created))
}

impl Subjects {
    /// Must be called inside a Tokio runtime (it starts the batched look-up tasks).
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        audit: Audit,
        default_region: Option<Region>,
    ) -> Result<Self, herald_crypto::CryptoError> {
        let reader = Arc::clone(&store);
        let by_index = Batcher::spawn(
            LOOKUP_BATCH,
            LOOKUPS_IN_FLIGHT,
            move |indexes: Vec<[u8; 32]>| {
                let store = Arc::clone(&reader);
                async move { store.subjects_by_phone_indexes(&indexes).await }
            },
        );
        let reader = Arc::clone(&store);
        let by_id = Batcher::spawn(
            LOOKUP_BATCH,
            LOOKUPS_IN_FLIGHT,
            move |ids: Vec<SubjectId>| {
                let store = Arc::clone(&reader);
                async move { store.subjects_with_erasure(&ids).await }
            },
        );
        Ok(Self {
            by_index,
            by_id,
            store,
            keys,
            clock,
            audit,
            default_region,
            parsed: Arc::new(PhoneIndexMemo::new()?),
        })
    }

    pub fn parse_phone(&self, input: &str) -> Result<PhoneNumber, PhoneError> {
        phone::parse(input, self.default_region)
    }

    /// The blind index of the number `input` spells, parsing it only the first time it is seen.
    fn phone_index(&self, input: &str) -> Result<[u8; 32], PhoneError> {
        let key = self.parsed.key(input);
        if let Some(index) = self.parsed.get(key) {
            return Ok(index);
        }
        let index = self.keys.phone_index(&self.parse_phone(input)?);
        self.parsed.remember(key, index);
        Ok(index)
    }

    /// Finds the subject holding this phone number, or creates one. Either way it is recorded.
    pub async fn register(
        &self,
        phone: &str,
        initiator: &Initiator,
    ) -> Result<Registration, SubjectError> {
        let phone = self.parse_phone(phone)?;
        let index = self.keys.phone_index(&phone);
        if let Some(existing) = self.by_index.submit(index).await? {
            self.audit
                .append(&registered(initiator, &existing.id, false))
                .await?;
            return Ok(Registration::Existing(existing));
        }
        let id = SubjectId::generate()?;
        let (key, stored_key) = self.keys.new_subject_key(&id)?;
        let phone_ciphertext =
            Keyring::seal_for_subject(&key, &phone_binding(&id), phone.e164().as_bytes())?;
        let now = self.clock.now();
        let new = NewSubject {
            id: id.clone(),
            phone_index: index,
            phone_ciphertext,
            key: stored_key,
            created_at: now,
        };
        let audit = AuditRecord::new(&registered(initiator, &id, true), now);
        match self.store.insert_subject(&new, &audit).await? {
            SubjectInsert::Inserted(record) => {
                self.keys.remember_subject_key(&id, key);
                Ok(Registration::Created(record))
            }
            // Registered concurrently by another request: that subject is the one.
            SubjectInsert::Existing(record) => {
                self.audit
                    .append(&registered(initiator, &record.id, false))
                    .await?;
                Ok(Registration::Existing(record))
            }
        }
    }

    /// Finds the subject holding this phone number, or creates one, for a capability that
    /// records its own action (a send names the subject in its own audit entry): only a
    /// creation is recorded here, in its transaction.
    pub async fn resolve(
        &self,
        phone: &str,
        initiator: &Initiator,
    ) -> Result<SubjectRecord, SubjectError> {
        let index = self.phone_index(phone)?;
        if let Some(existing) = self.by_index.submit(index).await? {
            return Ok(existing);
        }
        Ok(self.register(phone, initiator).await?.subject().clone())
    }

    /// The subject holding this phone number, if any. The look-up is recorded, found or not.
    pub async fn lookup(
        &self,
        phone: &str,
        initiator: &Initiator,
    ) -> Result<Option<SubjectRecord>, SubjectError> {
        let index = self.phone_index(phone)?;
        let found = self.by_index.submit(index).await?;
        let mut event = AuditEvent::new(initiator, Action::SubjectLookedUp, Outcome::Success)
            .details(Details::new().with("found", found.is_some()));
        if let Some(subject) = &found {
            event = event.target(Target::Subject(subject.id.clone()));
        }
        self.audit.append(&event).await?;
        Ok(found)
    }

    /// The subject, even if erased, with the time of its erasure.
    pub async fn with_erasure(&self, id: &SubjectId) -> Result<WithErasure, SubjectError> {
        Ok(self.by_id.submit(id.clone()).await?)
    }

    /// Decrypts the subject's phone number (for delivery, export and rectification only).
    pub async fn phone(&self, id: &SubjectId) -> Result<Option<PhoneNumber>, SubjectError> {
        let Some(ciphertext) = self.store.subject_phone_ciphertext(id).await? else {
            return Ok(None);
        };
        let key = self.keys.subject_key(id).await?;
        let plaintext = Keyring::open_for_subject(&key, &phone_binding(id), &ciphertext)?;
        let e164 = std::str::from_utf8(&plaintext).map_err(|_| {
            SubjectError::Store(StoreError::Corrupt(
                "decrypted phone number is not UTF-8".into(),
            ))
        })?;
        // Stored numbers were valid when written, and the encryption proves they are unchanged.
        PhoneNumber::from_stored(e164).map(Some).ok_or_else(|| {
            SubjectError::Store(StoreError::Corrupt(
                "a stored phone number is not in E.164 form".into(),
            ))
        })
    }
}
