//! Data subjects: the people Herald messages, each a random pseudonym (`sub_…`) with the phone
//! number kept only as ciphertext (under the subject's own data key) and as a blind index.
//! [`links`] says which integrations may see which subject.

mod links;

use std::sync::Arc;

use links::KnownLinks;
pub use links::{Access, LinkReason, SubjectLink};

use herald_crypto::aead::Binding;

use crate::audit::{Action, Audit, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::batch::Batcher;
use crate::clock::{Clock, Timestamp};
use crate::ids::{IntegrationId, SubjectId};
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
    /// The caller may act only on subjects it is linked to, and this number is not one of
    /// them (whether it is known at all is not said): registering needs `subjects:write`.
    #[error("registering a subject requires the scope subjects:write")]
    MayNotRegister,
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

/// A subject found (or created) for a caller's send, and whether the send must link the
/// caller to it once its checks pass.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub subject: SubjectRecord,
    pub link: Option<LinkReason>,
}

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
    known_links: Arc<KnownLinks>,
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
            known_links: Arc::new(KnownLinks::new()),
        })
    }

    /// Whether `access` may see the subject: linked to it, or seeing every subject. Asked the
    /// same way whether the subject exists or not.
    pub async fn visible(&self, id: &SubjectId, access: Access<'_>) -> Result<bool, SubjectError> {
        if access.every_subject {
            return Ok(true);
        }
        let Some(integration) = access.integration else {
            return Ok(false);
        };
        self.linked(id, integration).await
    }

    /// Whether the integration is linked to the subject.
    pub async fn linked(
        &self,
        id: &SubjectId,
        integration: &IntegrationId,
    ) -> Result<bool, SubjectError> {
        if self.known_links.contains(id, integration) {
            return Ok(true);
        }
        let linked = self.store.subject_linked(id, integration).await?;
        if linked {
            self.known_links.remember(id, integration);
        }
        Ok(linked)
    }

    /// Links the integration to the subject (nothing happens if it already is).
    pub async fn link(
        &self,
        id: &SubjectId,
        integration: &IntegrationId,
        reason: LinkReason,
    ) -> Result<(), SubjectError> {
        if self.known_links.contains(id, integration) {
            return Ok(());
        }
        self.store
            .link_subject(&SubjectLink {
                subject_id: id.clone(),
                integration_id: integration.clone(),
                reason,
                at: self.clock.now(),
            })
            .await?;
        self.known_links.remember(id, integration);
        Ok(())
    }

    /// A link the caller of `access` makes to a subject it just came to know (none for the
    /// operator and for Herald's own processing).
    fn link_for(
        &self,
        id: &SubjectId,
        access: Access<'_>,
        reason: LinkReason,
    ) -> Option<SubjectLink> {
        access.integration.map(|integration| SubjectLink {
            subject_id: id.clone(),
            integration_id: integration.clone(),
            reason,
            at: self.clock.now(),
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

    /// Finds the subject holding this phone number, or creates one; either way it is recorded
    /// and the caller linked to it. Needs `access.may_register`.
    pub async fn register(
        &self,
        phone: &str,
        initiator: &Initiator,
        access: Access<'_>,
    ) -> Result<Registration, SubjectError> {
        if !access.may_register {
            return Err(SubjectError::MayNotRegister);
        }
        let phone = self.parse_phone(phone)?;
        let index = self.keys.phone_index(&phone);
        if let Some(existing) = self.by_index.submit(index).await? {
            if let Some(integration) = access.integration {
                self.link(&existing.id, integration, LinkReason::Registered)
                    .await?;
            }
            self.audit
                .append(&registered(initiator, &existing.id, false))
                .await?;
            return Ok(Registration::Existing(existing));
        }
        self.create(&phone, index, initiator, access, LinkReason::Registered)
            .await
    }

    /// Creates the subject (linked to the caller, if any) unless another request registered
    /// the number first.
    async fn create(
        &self,
        phone: &PhoneNumber,
        index: [u8; 32],
        initiator: &Initiator,
        access: Access<'_>,
        reason: LinkReason,
    ) -> Result<Registration, SubjectError> {
        let id = SubjectId::generate()?;
        let (key, stored_key) = self.keys.new_subject_key(&id)?;
        let phone_ciphertext =
            Keyring::seal_for_subject(&key, &phone_binding(&id), phone.e164().as_bytes())?;
        let now = self.clock.now();
        let link = self.link_for(&id, access, reason);
        // A number whose earlier subject opted out and was erased starts opted out.
        let consents = self
            .store
            .suppressions(&index)
            .await?
            .into_iter()
            .map(|(channel, at)| crate::consent::ledger::kept_opt_out(&key, &id, channel, at, now))
            .collect::<Result<Vec<_>, _>>()?;
        let new = NewSubject {
            id: id.clone(),
            phone_index: index,
            phone_ciphertext,
            key: stored_key,
            created_at: now,
            link: link.clone(),
            consents,
        };
        let audit = AuditRecord::new(&registered(initiator, &id, true), now);
        match self.store.insert_subject(&new, &audit).await? {
            SubjectInsert::Inserted(record) => {
                self.keys.remember_subject_key(&id, key);
                if let Some(link) = link {
                    self.known_links
                        .remember(&link.subject_id, &link.integration_id);
                }
                Ok(Registration::Created(record))
            }
            // Registered concurrently by another request: that subject is the one (read again,
            // with its consent records, for the checks that follow).
            SubjectInsert::Existing(record) => {
                let record = self.by_index.submit(index).await?.unwrap_or(record);
                if let Some(integration) = access.integration {
                    self.link(&record.id, integration, reason).await?;
                }
                self.audit
                    .append(&registered(initiator, &record.id, false))
                    .await?;
                Ok(Registration::Existing(record))
            }
        }
    }

    /// Finds the subject holding this phone number, or creates one, for Herald's own
    /// processing (a customer's message names its sender): only a creation is recorded here,
    /// in its transaction, and nobody is linked.
    pub async fn resolve(
        &self,
        phone: &str,
        initiator: &Initiator,
    ) -> Result<SubjectRecord, SubjectError> {
        let index = self.phone_index(phone)?;
        if let Some(existing) = self.by_index.submit(index).await? {
            return Ok(existing);
        }
        let phone = self.parse_phone(phone)?;
        Ok(self
            .create(
                &phone,
                index,
                initiator,
                Access::operator(),
                LinkReason::Inbound,
            )
            .await?
            .subject()
            .clone())
    }

    /// The subject a caller's send names by number: one it is linked to, or — with
    /// `subjects:write` — any (found or created, the caller then to be linked). Without it,
    /// an unknown number and another integration's subject answer alike
    /// ([`SubjectError::MayNotRegister`]): a send is no oracle for who is a customer.
    pub async fn resolve_for(
        &self,
        phone: &str,
        initiator: &Initiator,
        access: Access<'_>,
    ) -> Result<Resolved, SubjectError> {
        let index = self.phone_index(phone)?;
        let found = self.by_index.submit(index).await?;
        match found {
            Some(subject) => {
                let link = match access.integration {
                    Some(integration) if !self.linked(&subject.id, integration).await? => {
                        if !access.every_subject && !access.may_register {
                            return Err(SubjectError::MayNotRegister);
                        }
                        Some(LinkReason::Messaged)
                    }
                    _ => None,
                };
                Ok(Resolved { subject, link })
            }
            None if !access.may_register => Err(SubjectError::MayNotRegister),
            None => {
                let phone = self.parse_phone(phone)?;
                let subject = self
                    .create(&phone, index, initiator, access, LinkReason::Messaged)
                    .await?
                    .subject()
                    .clone();
                Ok(Resolved {
                    subject,
                    link: None,
                })
            }
        }
    }

    /// The subject holding this phone number, if the caller may know it: linked to it, or
    /// allowed to register it (then linked now). Anything else answers `None`, exactly as an
    /// unknown number does, after the same look-up. Recorded either way, with the subject when
    /// one was answered.
    pub async fn lookup(
        &self,
        phone: &str,
        initiator: &Initiator,
        access: Access<'_>,
    ) -> Result<Option<SubjectRecord>, SubjectError> {
        let index = self.phone_index(phone)?;
        let found = self.by_index.submit(index).await?;
        let answered = match found {
            Some(subject) => {
                let visible = self.visible(&subject.id, access).await?;
                match access.integration {
                    Some(integration) if !visible && access.may_register => {
                        self.link(&subject.id, integration, LinkReason::Lookup)
                            .await?;
                        Some(subject)
                    }
                    _ if visible => Some(subject),
                    _ => None,
                }
            }
            None => None,
        };
        let mut event = AuditEvent::new(initiator, Action::SubjectLookedUp, Outcome::Success)
            .details(Details::new().with("found", answered.is_some()));
        if let Some(subject) = &answered {
            event = event.target(Target::Subject(subject.id.clone()));
        }
        self.audit.append(&event).await?;
        Ok(answered)
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
