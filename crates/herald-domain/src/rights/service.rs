//! Restriction (GDPR Art. 18), legal holds (Art. 17(3)(b),(e)), rectification (Art. 16) and
//! erasure by crypto-shredding (Art. 17), each in one call, each audited in its own
//! transaction.
//!
//! Erasure destroys the subject's data key first in the same transaction that deletes the
//! ciphertexts: whatever copy of a ciphertext survives (a backup, a replica, a file copied
//! before) cannot be decrypted any more. What stays is pseudonymous: the subject's random id,
//! message metadata (purpose, status, times), consent events without their evidence, the
//! audit trail and the erasure ledger.

use std::sync::Arc;

use chrono::TimeDelta;
use herald_crypto::aead::Binding;
use serde_json::{Value, json};

use crate::audit::{Action, Audit, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::clock::{Clock, Timestamp};
use crate::consent::{ConsentError, Consents};
use crate::ids::SubjectId;
use crate::keys::{KeyError, Keyring};
use crate::messages::Channel;
use crate::phone::PhoneError;
use crate::store::{Store, StoreError};
use crate::subjects::{SubjectError, Subjects};
use crate::webhooks::event::rfc3339;
use crate::webhooks::{EventType, NewEvent};

use super::data::{
    Erasure, ErasureRecords, ErasureTally, LegalHoldChange, Rectification, Rectified,
    RestrictionChange, SubjectStanding,
};
use super::export::ProcessingInfo;
use super::ledger::{ErasureLedger, LedgerEntry};

/// The longest reason accepted for a restriction or a legal hold.
pub const MAX_REASON_CHARS: usize = 2000;
/// Signatures over erasure receipts are domain-separated from audit checkpoints.
pub const ERASURE_RECEIPT_DOMAIN: &[u8] = b"herald-erasure-receipt/v1\n";
/// How far in the future a stated time may lie (clock skew between systems).
const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum SubjectRightsError {
    #[error("no such subject")]
    NotFound,
    #[error("the subject was erased")]
    Erased,
    #[error("a legal hold applies: the subject's data must be kept")]
    LegalHold,
    #[error("another subject holds this phone number")]
    PhoneInUse,
    #[error("the subject changed meanwhile; read it again and retry")]
    Changed,
    #[error("{field} {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    #[error(transparent)]
    Phone(#[from] PhoneError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Subjects(#[from] SubjectError),
    #[error(transparent)]
    Consent(#[from] ConsentError),
}

impl From<herald_crypto::CryptoError> for SubjectRightsError {
    fn from(e: herald_crypto::CryptoError) -> Self {
        Self::Keys(KeyError::Crypto(e))
    }
}

/// The answer to an erasure: when, and the signed receipt (see [`SubjectRights::erase`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ErasureReceipt {
    pub subject_id: SubjectId,
    pub erased_at: Timestamp,
    /// `{statement, key_id, algorithm, signature}`.
    pub receipt: Value,
}

pub(crate) fn restriction_binding(id: &SubjectId) -> Binding<'_> {
    Binding::new("subjects", "restriction_reason_ciphertext", id.as_str())
}

pub(crate) fn legal_hold_binding(id: &SubjectId) -> Binding<'_> {
    Binding::new("subjects", "legal_hold_reason_ciphertext", id.as_str())
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub keys: Arc<Keyring>,
    pub clock: Arc<dyn Clock>,
    pub audit: Audit,
    pub subjects: Subjects,
    pub consents: Consents,
    pub processing: ProcessingInfo,
    pub ledger: Arc<dyn ErasureLedger>,
    pub callbacks: Option<crate::messages::Reports>,
}

/// What the rights capability is configured with.
#[derive(Debug, Clone)]
pub struct RightsSettings {
    /// What the export states about recipients and retention.
    pub processing: ProcessingInfo,
    /// The erasure ledger outside the database.
    pub ledger: Arc<dyn ErasureLedger>,
    /// The stored provider callbacks an erasure redacts (`None`: no callbacks are processed).
    pub callbacks: Option<crate::messages::Reports>,
}

/// The rights capability. Cheap to clone.
#[derive(Clone)]
pub struct SubjectRights {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SubjectRights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectRights").finish_non_exhaustive()
    }
}

fn reason(text: Option<&str>, required: bool) -> Result<Option<&str>, SubjectRightsError> {
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    match text {
        None if required => Err(SubjectRightsError::Invalid {
            field: "reason",
            rule: "is required",
        }),
        Some(t) if t.chars().count() > MAX_REASON_CHARS => Err(SubjectRightsError::Invalid {
            field: "reason",
            rule: "must hold at most 2000 characters",
        }),
        t => Ok(t),
    }
}

fn event(initiator: &Initiator, action: Action, outcome: Outcome, id: &SubjectId) -> AuditEvent {
    AuditEvent::new(initiator, action, outcome).target(Target::Subject(id.clone()))
}

impl SubjectRights {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        audit: Audit,
        subjects: Subjects,
        consents: Consents,
        settings: RightsSettings,
    ) -> Self {
        let RightsSettings {
            processing,
            ledger,
            callbacks,
        } = settings;
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                clock,
                audit,
                subjects,
                consents,
                processing,
                ledger,
                callbacks,
            }),
        }
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The subject's standing; erased subjects are [`SubjectRightsError::Erased`].
    pub async fn standing(&self, id: &SubjectId) -> Result<SubjectStanding, SubjectRightsError> {
        let standing = self
            .inner
            .store
            .subject_standing(id)
            .await?
            .ok_or(SubjectRightsError::NotFound)?;
        if standing.erased_at.is_some() {
            return Err(SubjectRightsError::Erased);
        }
        Ok(standing)
    }

    /// The restriction's reason, decrypted.
    pub async fn restriction_reason(
        &self,
        standing: &SubjectStanding,
    ) -> Result<Option<String>, SubjectRightsError> {
        let Some(ciphertext) = &standing.restriction_reason_ciphertext else {
            return Ok(None);
        };
        let key = self.inner.keys.subject_key(&standing.record.id).await?;
        let plain =
            Keyring::open_for_subject(&key, &restriction_binding(&standing.record.id), ciphertext)?;
        Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
    }

    /// Restricts processing (Art. 18): the data is kept, but nothing is sent to the subject and
    /// no event about the subject reaches an integrator until the restriction is lifted.
    /// Restricting a restricted subject changes nothing.
    pub async fn restrict(
        &self,
        id: &SubjectId,
        why: Option<&str>,
        initiator: &Initiator,
    ) -> Result<(SubjectStanding, bool), SubjectRightsError> {
        let why = reason(why, false)?;
        let standing = self.standing(id).await?;
        if standing.record.restricted {
            return Ok((standing, false));
        }
        let now = self.now();
        let reason_ciphertext = match why {
            Some(text) => {
                let key = self.inner.keys.subject_key(id).await?;
                Some(Keyring::seal_for_subject(
                    &key,
                    &restriction_binding(id),
                    text.as_bytes(),
                )?)
            }
            None => None,
        };
        let audit = AuditRecord::new(
            &event(initiator, Action::SubjectRestricted, Outcome::Success, id)
                .details(Details::new().with("reason_given", why.is_some())),
            now,
        );
        let change = RestrictionChange {
            subject_id: id.clone(),
            restrict: true,
            at: now,
            reason_ciphertext,
            audit,
        };
        let changed = self.inner.store.set_restriction(&change).await?;
        Ok((self.standing(id).await?, changed))
    }

    /// Lifts the restriction. Art. 18(3): the subject must have been told before it is lifted,
    /// so the caller states when.
    pub async fn lift_restriction(
        &self,
        id: &SubjectId,
        subject_notified_at: Timestamp,
        initiator: &Initiator,
    ) -> Result<(SubjectStanding, bool), SubjectRightsError> {
        let now = self.now();
        if subject_notified_at > now + CLOCK_SKEW {
            return Err(SubjectRightsError::Invalid {
                field: "subject_notified_at",
                rule: "is in the future",
            });
        }
        let standing = self.standing(id).await?;
        if !standing.record.restricted {
            return Ok((standing, false));
        }
        let audit = AuditRecord::new(
            &event(
                initiator,
                Action::SubjectRestrictionLifted,
                Outcome::Success,
                id,
            )
            .details(Details::new().with("subject_notified_at", subject_notified_at)),
            now,
        );
        let change = RestrictionChange {
            subject_id: id.clone(),
            restrict: false,
            at: now,
            reason_ciphertext: None,
            audit,
        };
        let changed = self.inner.store.set_restriction(&change).await?;
        Ok((self.standing(id).await?, changed))
    }

    /// Places a legal hold (a retention duty: litigation, tax, medical records law): erasure is
    /// refused while it stands. The reason is required and kept encrypted.
    pub async fn place_legal_hold(
        &self,
        id: &SubjectId,
        why: &str,
        initiator: &Initiator,
    ) -> Result<(SubjectStanding, bool), SubjectRightsError> {
        let why = reason(Some(why), true)?.unwrap_or_default();
        self.standing(id).await?;
        let now = self.now();
        let change = LegalHoldChange {
            subject_id: id.clone(),
            hold_reason_ciphertext: Some(
                self.inner
                    .keys
                    .seal_system(&legal_hold_binding(id), why.as_bytes())?,
            ),
            at: now,
            audit: AuditRecord::new(
                &event(
                    initiator,
                    Action::SubjectLegalHoldPlaced,
                    Outcome::Success,
                    id,
                ),
                now,
            ),
        };
        if !self.inner.store.set_legal_hold(&change).await? {
            return Err(SubjectRightsError::Erased);
        }
        Ok((self.standing(id).await?, true))
    }

    pub async fn release_legal_hold(
        &self,
        id: &SubjectId,
        initiator: &Initiator,
    ) -> Result<(SubjectStanding, bool), SubjectRightsError> {
        let standing = self.standing(id).await?;
        if standing.legal_hold_at.is_none() {
            return Ok((standing, false));
        }
        let now = self.now();
        let change = LegalHoldChange {
            subject_id: id.clone(),
            hold_reason_ciphertext: None,
            at: now,
            audit: AuditRecord::new(
                &event(
                    initiator,
                    Action::SubjectLegalHoldReleased,
                    Outcome::Success,
                    id,
                ),
                now,
            ),
        };
        if !self.inner.store.set_legal_hold(&change).await? {
            return Err(SubjectRightsError::Erased);
        }
        Ok((self.standing(id).await?, true))
    }

    /// The legal hold's reason, decrypted.
    pub fn legal_hold_reason(
        &self,
        standing: &SubjectStanding,
    ) -> Result<Option<String>, SubjectRightsError> {
        let Some(ciphertext) = &standing.legal_hold_reason_ciphertext else {
            return Ok(None);
        };
        let plain = self
            .inner
            .keys
            .open_system(&legal_hold_binding(&standing.record.id), ciphertext)?;
        Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
    }

    /// Corrects the phone number (Art. 16). The blind index moves with it, so the old number no
    /// longer finds the subject. The new number's holder has not opted in: the subject's
    /// WhatsApp consents and opt-ins lapse first (a fresh double opt-in is needed), and the
    /// service window, which belonged to the old number, closes. Integrators learn of it by
    /// `subject.rectified` (Art. 19). Returns the standing and whether anything changed.
    pub async fn rectify(
        &self,
        id: &SubjectId,
        phone: &str,
        initiator: &Initiator,
    ) -> Result<(SubjectStanding, bool), SubjectRightsError> {
        let phone = self.inner.subjects.parse_phone(phone)?;
        let index = self.inner.keys.phone_index(&phone);
        let standing = self.standing(id).await?;
        let Some(previous_index) = standing.phone_index else {
            return Err(SubjectRightsError::Erased);
        };
        if previous_index == index {
            return Ok((standing, false));
        }
        if self
            .inner
            .store
            .subject_by_phone_index(&index)
            .await?
            .is_some()
        {
            return Err(SubjectRightsError::PhoneInUse);
        }
        // Consents first: should the number change fail after this, the subject is asked again
        // on the old number — never messaged on the new one without a yes.
        let lapsed = self
            .inner
            .consents
            .lapse_channel(id, Channel::Whatsapp, initiator)
            .await?;
        let key = self.inner.keys.subject_key(id).await?;
        let now = self.now();
        let phone_ciphertext = Keyring::seal_for_subject(
            &key,
            &crate::subjects::phone_binding(id),
            phone.e164().as_bytes(),
        )?;
        let audit = AuditRecord::new(
            &event(initiator, Action::SubjectRectified, Outcome::Success, id).details(
                Details::new()
                    .with("fields", vec!["phone"])
                    .with("consents_lapsed", lapsed as u64),
            ),
            now,
        );
        let notice = NewEvent::seal(
            &key,
            EventType::SubjectRectified,
            None,
            id,
            json!({"subject_id": id.as_str(), "fields": ["phone"], "at": rfc3339(now)}),
            now,
        )?;
        let change = Rectification {
            subject_id: id.clone(),
            previous_index,
            phone_index: index,
            phone_ciphertext,
            at: now,
            audit,
            event: notice,
        };
        match self.inner.store.rectify_subject(&change).await? {
            Rectified::Done => Ok((self.standing(id).await?, true)),
            Rectified::PhoneInUse => Err(SubjectRightsError::PhoneInUse),
            Rectified::Changed => Err(SubjectRightsError::Changed),
        }
    }

    /// Erases the subject (Art. 17) in one transaction: destroys its data key
    /// (crypto-shredding), deletes its contact data and blind index, message contents and
    /// provider references, inbound messages and undelivered events, cancels queued messages,
    /// appends the id to the erasure ledger, writes the audit entry (the pseudonymous id and
    /// counts only) and emits `subject.erased`. The receipt is signed with the audit key.
    /// A legal hold refuses it (recorded, nothing changed); erasing again answers
    /// [`SubjectRightsError::Erased`].
    pub async fn erase(
        &self,
        id: &SubjectId,
        initiator: &Initiator,
    ) -> Result<ErasureReceipt, SubjectRightsError> {
        self.erase_as(id, initiator, false).await
    }

    async fn erase_as(
        &self,
        id: &SubjectId,
        initiator: &Initiator,
        reapplied: bool,
    ) -> Result<ErasureReceipt, SubjectRightsError> {
        self.forget_stored_callbacks(id, reapplied).await?;
        let now = self.now();
        let keys = Arc::clone(&self.inner.keys);
        let audit = self.inner.audit.clone();
        let subject = id.clone();
        let who = initiator.clone();
        let seal = move |tally: &ErasureTally| -> Result<ErasureRecords, String> {
            let statement = receipt_statement(&subject, now, tally);
            let receipt = audit.sign_statement(ERASURE_RECEIPT_DOMAIN, &statement);
            let record = AuditRecord::new(
                &event(&who, Action::SubjectErased, Outcome::Success, &subject).details(
                    Details::new()
                        .with("messages_cancelled", tally.messages_cancelled)
                        .with("message_contents_deleted", tally.message_contents_deleted)
                        .with("inbound_messages_deleted", tally.inbound_messages_deleted)
                        .with("consent_evidence_shredded", tally.consent_evidence_shredded)
                        .with("events_cancelled", tally.events_cancelled)
                        .with("opt_outs_kept", tally.opt_outs_kept)
                        .with("reapplied", reapplied),
                ),
                now,
            );
            let notice = NewEvent::seal_for_system(
                &keys,
                EventType::SubjectErased,
                &subject,
                json!({"subject_id": subject.as_str(), "erased_at": rfc3339(now)}),
                now,
            )
            .map_err(|e| e.to_string())?;
            Ok(ErasureRecords {
                receipt: receipt.to_string(),
                audit: record,
                event: notice,
            })
        };
        match self
            .inner
            .store
            .erase_subject(id, now, reapplied, &seal)
            .await?
        {
            Erasure::Erased { receipt } => {
                // This node's cached copy of the key goes too (zeroised when dropped).
                self.inner.keys.forget_subject_key(id);
                let entry = LedgerEntry {
                    subject_id: id.clone(),
                    erased_at: now,
                };
                // The database holds the erasure already; should this copy fail, the next
                // start copies it from the database (see `reconcile_erasures`).
                if let Err(e) = self.inner.ledger.append(&[entry]) {
                    tracing::error!(subject_id = %id, ledger = %self.inner.ledger.describe(), error = %e,
                        "the erasure could not be copied to the erasure ledger file");
                }
                let receipt = serde_json::from_str(&receipt)
                    .map_err(|_| StoreError::Corrupt("an erasure receipt is not JSON".into()))?;
                Ok(ErasureReceipt {
                    subject_id: id.clone(),
                    erased_at: now,
                    receipt,
                })
            }
            Erasure::NotFound => Err(SubjectRightsError::NotFound),
            Erasure::AlreadyErased => Err(SubjectRightsError::Erased),
            Erasure::LegalHold => {
                self.inner
                    .audit
                    .append(
                        &event(initiator, Action::SubjectErased, Outcome::Denied, id)
                            .details(Details::new().with("reason", "legal_hold")),
                    )
                    .await?;
                Err(SubjectRightsError::LegalHold)
            }
        }
    }
}

impl SubjectRights {
    /// Removes what provider callbacks still stored (not yet processed, or dead-lettered) say
    /// about the subject's number, while the number can still be read — unless a legal hold
    /// keeps everything (the erasure will be refused).
    async fn forget_stored_callbacks(
        &self,
        id: &SubjectId,
        despite_hold: bool,
    ) -> Result<(), SubjectRightsError> {
        let Some(callbacks) = &self.inner.callbacks else {
            return Ok(());
        };
        let Some(standing) = self.inner.store.subject_standing(id).await? else {
            return Ok(());
        };
        if standing.erased_at.is_some() || (standing.legal_hold_at.is_some() && !despite_hold) {
            return Ok(());
        }
        let Some(phone) = self.inner.subjects.phone(id).await? else {
            return Ok(());
        };
        let changed = callbacks.forget_number(phone.e164()).await.map_err(|e| {
            SubjectRightsError::Store(StoreError::Unavailable(
                format!("stored callbacks could not be redacted: {}", e.reason()).into(),
            ))
        })?;
        if changed > 0 {
            tracing::info!(subject_id = %id, callbacks = changed, "removed the subject from stored provider callbacks");
        }
        Ok(())
    }
}

impl SubjectRights {
    /// Runs at start-up, before anything is served: re-applies every erasure the ledger file
    /// lists that this database does not hold (it was restored from a backup taken before the
    /// erasure), then copies into the file the database's erasures it lacks (made by another
    /// node, or whose copy failed). Returns how many erasures were re-applied.
    pub async fn reconcile_erasures(&self) -> Result<usize, SubjectRightsError> {
        let ledger = &self.inner.ledger;
        let listed = ledger.read_all().map_err(|e| {
            SubjectRightsError::Store(StoreError::Unavailable(
                format!(
                    "the erasure ledger ({}) cannot be read: {e}",
                    ledger.describe()
                )
                .into(),
            ))
        })?;
        // One read of the database's own ledger; only entries it lacks are looked at (a
        // restored database), so start-up stays one query however many erasures there were.
        let in_database = self.inner.store.erased_subjects().await?;
        let recorded: std::collections::HashSet<&SubjectId> =
            in_database.iter().map(|(id, _)| id).collect();
        let mut reapplied = 0;
        for entry in listed.iter().filter(|e| !recorded.contains(&e.subject_id)) {
            let Some(standing) = self.inner.store.subject_standing(&entry.subject_id).await? else {
                // Restored from before the subject existed: there is nothing to erase.
                continue;
            };
            if standing.erased_at.is_none() {
                tracing::warn!(subject_id = %entry.subject_id,
                    "re-applying an erasure the database does not hold (restored from an older copy?)");
                self.erase_as(&entry.subject_id, &Initiator::system(), true)
                    .await?;
                reapplied += 1;
            }
        }
        let known: std::collections::HashSet<&SubjectId> =
            listed.iter().map(|e| &e.subject_id).collect();
        let missing: Vec<LedgerEntry> = in_database
            .iter()
            .filter(|(id, _)| !known.contains(id))
            .map(|(subject_id, erased_at)| LedgerEntry {
                subject_id: subject_id.clone(),
                erased_at: *erased_at,
            })
            .collect();
        // Entries re-applied just now were appended by the erasure itself.
        ledger.append(&missing).map_err(|e| {
            SubjectRightsError::Store(StoreError::Unavailable(
                format!(
                    "the erasure ledger ({}) cannot be written: {e}",
                    ledger.describe()
                )
                .into(),
            ))
        })?;
        Ok(reapplied)
    }
}

/// What an erasure receipt states (signed over its canonical form, after
/// [`ERASURE_RECEIPT_DOMAIN`]). Counts and the pseudonymous id only.
pub fn receipt_statement(subject: &SubjectId, at: Timestamp, tally: &ErasureTally) -> Value {
    json!({
        "type": "herald.erasure_receipt",
        "version": 1,
        "subject_id": subject.as_str(),
        "erased_at": rfc3339(at),
        "erased": {
            "subject_key": true,
            "contact_data": true,
            "messages_cancelled": tally.messages_cancelled,
            "message_contents_deleted": tally.message_contents_deleted,
            "inbound_messages_deleted": tally.inbound_messages_deleted,
            "consent_evidence_shredded": tally.consent_evidence_shredded,
            "events_cancelled": tally.events_cancelled,
        },
        "opt_outs_kept": tally.opt_outs_kept,
        "kept": [
            "message metadata without content (ids, purposes, statuses, times)",
            "consent events without evidence",
            "the audit trail (pseudonymous)",
            "the erasure ledger entry",
            "the subject's opt-out, if any, as the number's blind index and its date (so that the objection outlives the erasure)",
        ],
    })
}

/// `{statement, key_id, algorithm, signature}` with the signature in standard base64.
pub(crate) fn signed(statement: Value, key_id: &str, signature: &[u8]) -> Value {
    json!({
        "statement": statement,
        "key_id": key_id,
        "algorithm": "Ed25519",
        "signature": data_encoding::BASE64.encode(signature),
    })
}
