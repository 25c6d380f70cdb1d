//! What the capabilities need from storage. `herald-store` implements these traits for SQLite
//! and PostgreSQL; nothing above it sees SQL.
//!
//! Every method is one transaction: a capability prepares everything (ids, ciphertexts,
//! hashes) first, then hands the store one complete change, so no transaction waits on
//! cryptography or on the network.

use std::fmt;

use async_trait::async_trait;

use crate::audit::{AuditKeyRecord, AuditRecord, Checkpoint, SealInput, SealPlan, SealedEntry};
use crate::auth::{ApiKeyRecord, IntegrationRecord, NewApiKey};
use crate::clock::Timestamp;
use crate::consent::{ConsentChange, OptInCode, StoredConsent, StoredConsentEvent};
use crate::ids::{ApiKeyId, CallbackId, IntegrationId, MessageId, RightsRequestId, SubjectId};
use crate::messages::{
    AcceptOutcome, ClaimedMessage, DeliveryUpdate, InboxEntry, MessageRecord, NewMessage,
    ReportBatch, ReportTarget,
};
use crate::rights::{RequestStatus, RightsRequest};
use crate::webhooks::{ClaimedEvent, EndpointRecord, EventOutcome, NewEndpoint};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Storage failed. Deliberately coarse: callers decide between "try again later"
/// ([`StoreError::Unavailable`]), "that already exists" ([`StoreError::Conflict`]) and "bug or
/// corruption" (the rest). The source chain is for the log only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("the change conflicts with existing data")]
    Conflict,
    /// The audit entry that must accompany the change could not be written, so the change was
    /// not made either.
    #[error("the audit trail cannot be written")]
    AuditUnavailable(#[source] BoxError),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("database error")]
    Internal(#[source] BoxError),
}

impl StoreError {
    /// The same kind of error, for handing one failure to several waiting callers (the source
    /// becomes its message).
    pub fn duplicate(&self) -> StoreError {
        let message: BoxError = self.to_string().into();
        match self {
            StoreError::Unavailable(source) => StoreError::Unavailable(source.to_string().into()),
            StoreError::Conflict => StoreError::Conflict,
            StoreError::AuditUnavailable(source) => {
                StoreError::AuditUnavailable(source.to_string().into())
            }
            StoreError::Corrupt(what) => StoreError::Corrupt(what.clone()),
            StoreError::Internal(_) => StoreError::Internal(message),
        }
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A page of a list: items after the cursor `after` (an id), at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

/// A data key as stored: wrapped under root-key version `root_version`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub root_version: u32,
    pub wrapped: Vec<u8>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("root_version", &self.root_version)
            .finish_non_exhaustive()
    }
}

/// A subject's data key re-wrapped under a new root-key version.
#[derive(Debug, Clone)]
pub struct RewrappedKey {
    pub subject_id: SubjectId,
    pub previous_version: u32,
    pub key: StoredKey,
}

/// A subject as stored, without its (encrypted) contact data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRecord {
    pub id: SubjectId,
    pub created_at: Timestamp,
    pub restricted: bool,
    pub last_inbound_at: Option<Timestamp>,
    /// The subject's consent records, read in the same query (the send gate's view: no second
    /// round trip on the send path). Empty where a look-up does not load them.
    pub consents: Vec<StoredConsent>,
}

/// A subject about to be stored: its phone number only as ciphertext and blind index.
#[derive(Debug, Clone)]
pub struct NewSubject {
    pub id: SubjectId,
    pub phone_index: [u8; 32],
    pub phone_ciphertext: Vec<u8>,
    pub key: StoredKey,
    pub created_at: Timestamp,
    /// The integration that came to know the subject by creating it, linked in the same
    /// transaction.
    pub link: Option<crate::subjects::SubjectLink>,
    /// Opt-outs the number was suppressed with (an erased subject's objection), written as the
    /// new subject's consent records.
    pub consents: Vec<crate::consent::ConsentChange>,
}

/// The result of create-or-find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectInsert {
    Inserted(SubjectRecord),
    /// Another subject already has this phone number (possibly registered concurrently).
    Existing(SubjectRecord),
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The system data key, if the database has been initialised.
    async fn system_key(&self) -> Result<Option<StoredKey>, StoreError>;
    /// Stores the system data key unless one exists; `false` when another start won the race.
    async fn insert_system_key(&self, key: &StoredKey, now: Timestamp) -> Result<bool, StoreError>;
    /// Replaces the system key if it is still wrapped under `previous_version`.
    async fn replace_system_key(
        &self,
        previous_version: u32,
        key: &StoredKey,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    async fn subject_key(&self, id: &SubjectId) -> Result<Option<StoredKey>, StoreError>;
    /// Up to `limit` subject keys wrapped under a root-key version below `version`.
    async fn subject_keys_below(
        &self,
        version: u32,
        limit: u32,
    ) -> Result<Vec<(SubjectId, StoredKey)>, StoreError>;
    /// Stores re-wrapped keys, each only if still under its previous version; returns how many.
    async fn replace_subject_keys(
        &self,
        keys: &[RewrappedKey],
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait SubjectStore: Send + Sync {
    /// Subjects (not erased) by blind index, one answer per index, in order: one query for a
    /// whole batch of look-ups.
    async fn subjects_by_phone_indexes(
        &self,
        indexes: &[[u8; 32]],
    ) -> Result<Vec<Option<SubjectRecord>>, StoreError>;
    async fn subject_by_phone_index(
        &self,
        index: &[u8; 32],
    ) -> Result<Option<SubjectRecord>, StoreError> {
        Ok(self
            .subjects_by_phone_indexes(&[*index])
            .await?
            .pop()
            .flatten())
    }
    /// Inserts the subject, its data key and `audit` (written only if the subject is new), or
    /// finds the subject already holding this index.
    async fn insert_subject(
        &self,
        subject: &NewSubject,
        audit: &AuditRecord,
    ) -> Result<SubjectInsert, StoreError>;
    async fn subject(&self, id: &SubjectId) -> Result<Option<SubjectRecord>, StoreError>;
    /// Subjects even if erased, with the time of their erasure, one answer per id, in order.
    async fn subjects_with_erasure(
        &self,
        ids: &[SubjectId],
    ) -> Result<Vec<Option<(SubjectRecord, Option<Timestamp>)>>, StoreError>;
    async fn subject_phone_ciphertext(&self, id: &SubjectId)
    -> Result<Option<Vec<u8>>, StoreError>;
    /// The opt-outs kept for a number after its subject was erased: (channel, when).
    async fn suppressions(
        &self,
        phone_index: &[u8; 32],
    ) -> Result<Vec<(crate::messages::Channel, Timestamp)>, StoreError>;
    /// Whether the integration is linked to the subject.
    async fn subject_linked(
        &self,
        subject: &SubjectId,
        integration: &IntegrationId,
    ) -> Result<bool, StoreError>;
    /// Links the integration to the subject unless it already is (the first reason stays).
    async fn link_subject(&self, link: &crate::subjects::SubjectLink) -> Result<(), StoreError>;
}

#[async_trait]
pub trait AuthStore: Send + Sync {
    /// [`StoreError::Conflict`] when the name is taken.
    async fn insert_integration(
        &self,
        integration: &IntegrationRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    async fn integration(
        &self,
        id: &IntegrationId,
    ) -> Result<Option<IntegrationRecord>, StoreError>;
    async fn integration_by_name(
        &self,
        name: &str,
    ) -> Result<Option<IntegrationRecord>, StoreError>;
    async fn integrations(&self, page: &PageRequest) -> Result<Vec<IntegrationRecord>, StoreError>;
    /// Creates the integration and its key together, unless an integration of that name exists
    /// (then nothing is written and `false` comes back).
    async fn insert_integration_with_key(
        &self,
        integration: &IntegrationRecord,
        key: &NewApiKey,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;
    async fn insert_api_key(&self, key: &NewApiKey, audit: &AuditRecord) -> Result<(), StoreError>;
    async fn api_key(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// The keys whose token hashes are `hashes`, one answer per hash, in order, each with the
    /// hash as stored (for a constant-time check): one query for a whole batch of requests.
    async fn api_keys_by_hashes(
        &self,
        hashes: &[[u8; 32]],
    ) -> Result<Vec<Option<(ApiKeyRecord, Vec<u8>)>>, StoreError>;
    async fn api_keys(
        &self,
        integration: Option<&IntegrationId>,
        page: &PageRequest,
    ) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Sets `revoked_at` and writes `audit` unless the key is already revoked; returns the key
    /// as it now is and whether this call revoked it.
    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Option<(ApiKeyRecord, bool)>, StoreError>;
    /// Records when keys were last used (batched; never moves a time backwards).
    async fn touch_api_keys(&self, uses: &[(ApiKeyId, Timestamp)]) -> Result<(), StoreError>;
}

/// Decides, under the sealing lock, what to seal (see [`crate::audit::Audit::seal`]).
pub type SealFn<'a> = &'a (dyn Fn(SealInput) -> Result<SealPlan, String> + Send + Sync);

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Writes entries that accompany no state change, in one transaction.
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// One sealing step, in one transaction under the sealing lock (PostgreSQL: an advisory
    /// lock; SQLite: the write lock): reads the head and up to `limit` pending entries, lets
    /// `plan` decide, writes the sealed entries and the checkpoint, removes the pending ones.
    /// With `wait_for_lock` false, `None` when another node holds the lock; with it true, waits
    /// for the lock (PostgreSQL; SQLite's write lock is always waited for).
    async fn seal_audit(
        &self,
        limit: u32,
        wait_for_lock: bool,
        plan: SealFn<'_>,
    ) -> Result<Option<SealPlan>, StoreError>;
    /// Sealed entries with `seq > after`, in order, at most `limit`.
    async fn audit_entries(&self, after: u64, limit: u32) -> Result<Vec<SealedEntry>, StoreError>;
    /// Sealed entries with `after < seq <= through`, in order.
    async fn audit_entries_between(
        &self,
        after: u64,
        through: u64,
    ) -> Result<Vec<SealedEntry>, StoreError>;
    /// The highest sealed sequence number, if any.
    async fn audit_last_seq(&self) -> Result<Option<u64>, StoreError>;
    /// Every checkpoint, by sequence number.
    async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;
    async fn audit_pending_count(&self) -> Result<u64, StoreError>;
    /// Checkpoint-signing keys, oldest first.
    async fn audit_keys(&self) -> Result<Vec<AuditKeyRecord>, StoreError>;
    /// Stores a signing key unless one with its id exists, with its audit entry.
    async fn insert_audit_key(
        &self,
        key: &AuditKeyRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    /// The highest sequence number such that it and every entry before it were recorded before
    /// `cutoff`.
    async fn audit_prunable_through(&self, cutoff: Timestamp) -> Result<Option<u64>, StoreError>;
    /// Stores the horizon checkpoint, deletes the sealed entries it covers and writes `audit`,
    /// in one transaction; returns how many entries were deleted.
    async fn prune_audit(
        &self,
        horizon: &Checkpoint,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError>;
}

/// An Idempotency-Key's stored claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentMessage {
    pub fingerprint: [u8; 32],
    pub message_id: MessageId,
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Commits a batch of accepted messages — each with its `queued` history entry, its audit
    /// entry and its idempotency claim — in one transaction. A message whose Idempotency-Key is
    /// already claimed is skipped whole.
    async fn accept_messages(&self, batch: &[NewMessage])
    -> Result<Vec<AcceptOutcome>, StoreError>;
    /// The message claimed by an unexpired Idempotency-Key of `integration`.
    async fn idempotent_message(
        &self,
        integration: &IntegrationId,
        key_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<IdempotentMessage>, StoreError>;
    /// A message with its status history (any integration's).
    async fn message(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError>;
}

/// Builds the audit entry of a purge from what it removed (outbound bodies, inbound bodies).
pub type PurgeAuditFn<'a> = &'a (dyn Fn(u64, u64) -> AuditRecord + Send + Sync);

/// The delivery worker's queue.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Leases up to `limit` due messages (queued, or sending with an expired lease) to `owner`
    /// until `lease_until`, counting the attempt, in one short transaction. PostgreSQL skips
    /// rows other nodes are claiming at the same moment.
    async fn claim_messages(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, StoreError>;
    /// Records outcomes in one transaction, each only if `owner` still holds the message's
    /// lease (attempts and audit entries are written regardless: the attempt happened). One
    /// answer per update: whether the lease was still held.
    async fn record_deliveries(
        &self,
        owner: &str,
        updates: &[DeliveryUpdate],
    ) -> Result<Vec<bool>, StoreError>;
    /// Deletes message bodies (outbound and inbound) whose retention ended by `now`, up to
    /// `limit` of each, with the audit entry `audit` builds, if anything was deleted.
    async fn purge_content(
        &self,
        now: Timestamp,
        limit: u32,
        audit: PurgeAuditFn<'_>,
    ) -> Result<(u64, u64), StoreError>;
}

/// Provider callbacks: stored as received, then processed.
#[async_trait]
pub trait CallbackStore: Send + Sync {
    /// Stores a callback as received, to be purged at `purge_at` at the latest.
    async fn insert_callback(
        &self,
        entry: &InboxEntry,
        purge_at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    async fn claim_callbacks(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<InboxEntry>, StoreError>;
    /// Gives a callback back for a later try.
    async fn release_callback(
        &self,
        id: &CallbackId,
        owner: &str,
        due_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// The messages that status reports name, by blind index of the provider's id or by
    /// Herald's id.
    async fn report_targets(
        &self,
        provider_ref_indexes: &[[u8; 32]],
        ids: &[MessageId],
    ) -> Result<Vec<ReportTarget>, StoreError>;
    /// Applies a processed callback and removes it, in one transaction: each status change only
    /// if the message is still in one of its `from` statuses (then its audit entry and event
    /// too), each inbound message only if its provider id is new (then the window, the owner's
    /// link, audit entry and event too).
    async fn apply_reports(&self, batch: &ReportBatch) -> Result<(), StoreError>;
    /// Sets a callback aside (it is claimed no more) with its reason and audit entry, if
    /// `owner` still holds it.
    async fn dead_letter_callback(
        &self,
        id: &CallbackId,
        owner: &str,
        reason: &str,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    /// Deletes up to `limit` stored callbacks whose retention ended by `now`, with the audit
    /// entry `audit` builds from the count (if any were deleted); returns the count.
    async fn purge_callbacks(
        &self,
        now: Timestamp,
        limit: u32,
        audit: &(dyn Fn(u64) -> AuditRecord + Send + Sync),
    ) -> Result<u64, StoreError>;
    /// Every stored callback (pending or dead-lettered), for an erasure to redact.
    async fn stored_callbacks(&self) -> Result<Vec<InboxEntry>, StoreError>;
    /// Replaces a stored callback's body, or deletes the callback (`None`).
    async fn replace_callback(
        &self,
        id: &CallbackId,
        body_ciphertext: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    /// The integration that last sent the subject a message on `channel` after `since`
    /// (Herald's own acknowledgements aside): the conversation's owner for a reply.
    async fn last_sender(
        &self,
        subject: &SubjectId,
        channel: crate::messages::Channel,
        since: Timestamp,
    ) -> Result<Option<IntegrationId>, StoreError>;
}

/// Integrators' endpoints and the events queued for them.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn insert_webhook_endpoint(
        &self,
        endpoint: &NewEndpoint,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    async fn webhook_endpoints(
        &self,
        integration: &IntegrationId,
    ) -> Result<Vec<EndpointRecord>, StoreError>;
    /// Leases up to `limit` due deliveries to enabled endpoints.
    async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedEvent>, StoreError>;
    /// Records one outcome if `owner` still holds the lease (else `false`), updating the
    /// endpoint's run of failures and disabling it at `disable_after` failures or on `410`.
    async fn record_webhook_outcome(
        &self,
        owner: &str,
        outcome: &EventOutcome,
        disable_after: u32,
    ) -> Result<bool, StoreError>;
}

/// The consent ledger.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// Appends the events, moves each record's standing, writes their audit entries and
    /// events, and queues `messages` (an opt-in's confirmation template, a keyword's
    /// acknowledgement), in one transaction. [`StoreError::Conflict`] (and nothing written)
    /// when a record's standing is no longer the one a change was derived from.
    async fn record_consents(
        &self,
        changes: &[ConsentChange],
        messages: &[NewMessage],
    ) -> Result<(), StoreError>;
    /// The subject's records, every purpose and channel.
    async fn consents(&self, subject: &SubjectId) -> Result<Vec<StoredConsent>, StoreError>;
    /// The subject's whole history, in the order it was appended.
    async fn consent_history(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<StoredConsentEvent>, StoreError>;
    /// Pending records whose request ran out by `now`, at most `limit`.
    async fn lapsed_opt_ins(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredConsent>, StoreError>;
    async fn insert_opt_in_code(
        &self,
        code: &OptInCode,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    /// The unexpired codes among `hashes`.
    async fn opt_in_codes(
        &self,
        hashes: &[[u8; 32]],
        now: Timestamp,
    ) -> Result<Vec<OptInCode>, StoreError>;
    /// Messages accepted (and not failed) for the subject and purpose after `since`: how many, and when
    /// the oldest of them was (frequency caps).
    async fn messages_since(
        &self,
        subject: &SubjectId,
        purpose: &str,
        since: Timestamp,
    ) -> Result<(u64, Option<Timestamp>), StoreError>;
}

/// The register of data-subject rights requests.
#[async_trait]
pub trait RightsStore: Send + Sync {
    async fn insert_rights_request(
        &self,
        request: &RightsRequest,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    async fn rights_request(
        &self,
        id: &RightsRequestId,
    ) -> Result<Option<RightsRequest>, StoreError>;
    /// Requests by status at `now` (overdue: open and past due), in the order they were
    /// logged, after the cursor (a request id); only `owner`'s when given.
    async fn rights_requests(
        &self,
        status: Option<RequestStatus>,
        now: Timestamp,
        page: &PageRequest,
        owner: Option<&IntegrationId>,
    ) -> Result<Vec<RightsRequest>, StoreError>;
    /// Stores the extension if the request is still open with due date `previous_due`, with its
    /// audit entry; `false` when it changed meanwhile.
    async fn extend_rights_request(
        &self,
        extended: &RightsRequest,
        previous_due: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    /// Marks the request done if it is open, with its audit entry; `false` if it was not open.
    async fn complete_rights_request(
        &self,
        id: &RightsRequestId,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
}

/// Restriction, legal holds, rectification, erasure and the export's read (issue 6).
#[async_trait]
pub trait SubjectRightsStore: Send + Sync {
    /// The subject with its rights-related state, erased or not.
    async fn subject_standing(
        &self,
        id: &SubjectId,
    ) -> Result<Option<crate::rights::SubjectStanding>, StoreError>;
    /// Applies the change with its audit entry if the subject exists, is not erased and is
    /// not already in the requested state; `false` otherwise (nothing written).
    async fn set_restriction(
        &self,
        change: &crate::rights::RestrictionChange,
    ) -> Result<bool, StoreError>;
    /// Places or releases the hold with its audit entry if the subject exists and is not
    /// erased; `false` otherwise.
    async fn set_legal_hold(
        &self,
        change: &crate::rights::LegalHoldChange,
    ) -> Result<bool, StoreError>;
    /// Replaces the phone number (ciphertext and blind index), closes the old number's
    /// service window, writes the audit entry and the `subject.rectified` event.
    async fn rectify_subject(
        &self,
        change: &crate::rights::Rectification,
    ) -> Result<crate::rights::Rectified, StoreError>;
    /// Erases the subject in one transaction: its data key, contact data, message contents,
    /// inbound messages, undelivered events and queued messages; the ledger row, audit entry
    /// and `subject.erased` event built by `seal` from what was removed.
    /// A legal hold refuses it unless `despite_hold` (re-applying an erasure that already
    /// happened, after a restore brought back an older state).
    async fn erase_subject(
        &self,
        id: &SubjectId,
        at: Timestamp,
        despite_hold: bool,
        seal: &crate::rights::SealErasure,
    ) -> Result<crate::rights::Erasure, StoreError>;
    /// The erasure ledger's entries in the database, in order.
    async fn erased_subjects(&self) -> Result<Vec<(SubjectId, Timestamp)>, StoreError>;
    /// Every stored row about the subject (for the export).
    async fn subject_data(
        &self,
        id: &SubjectId,
    ) -> Result<Option<crate::rights::SubjectData>, StoreError>;
    /// The tables of the live schema (for the export's coverage check).
    async fn table_names(&self) -> Result<Vec<String>, StoreError>;
}

/// A stored incident: its facts as JSON (no personal data, no free text) and its free text
/// sealed under the system key. `version` guards concurrent changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRow {
    pub id: crate::ids::IncidentId,
    pub status: String,
    pub facts: String,
    pub text_ciphertext: Vec<u8>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

/// A subject an incident affected (ids, kinds and times only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedRow {
    pub subject_id: SubjectId,
    /// Comma-separated, sorted: `changed`, `exported`, `read`, `sent`.
    pub kinds: String,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    /// The breach notice Herald sent the subject for this incident, if any.
    pub notice_message_id: Option<MessageId>,
    pub notice_at: Option<Timestamp>,
}

/// The incident register (issue 16).
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// The incident's affected subjects by subject id, after `after`, at most `limit`.
    async fn incident_affected(
        &self,
        id: &crate::ids::IncidentId,
        after: Option<&SubjectId>,
        limit: u32,
    ) -> Result<Vec<AffectedRow>, StoreError>;
    /// Replaces the incident (if still at `expected_version`) and writes `rows` (inserted, or
    /// replacing the kinds and times of rows already there; notices are kept), with the audit
    /// entry, in one transaction; `false` when the incident changed meanwhile.
    async fn merge_incident_affected(
        &self,
        incident: &IncidentRow,
        expected_version: i64,
        rows: &[AffectedRow],
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    /// Replaces the incident (if still at `expected_version`: it records which alerts were
    /// sent), writes the audit entry and queues `event` for every enabled endpoint subscribed
    /// to its type whose integration holds a live credential with `incidents:read` (or
    /// `admin`), in one transaction; `false` when the incident changed meanwhile.
    async fn record_incident_alert(
        &self,
        incident: &IncidentRow,
        expected_version: i64,
        audit: &AuditRecord,
        event: &crate::webhooks::OperatorEvent,
    ) -> Result<bool, StoreError>;
    /// The integrations linked to the incident's affected subjects: (integration, subject),
    /// ordered by integration then subject.
    async fn incident_links(
        &self,
        id: &crate::ids::IncidentId,
    ) -> Result<Vec<(IntegrationId, SubjectId)>, StoreError>;
    /// Replaces the incident (if still at `expected_version`), writes the audit entry and
    /// queues each event for the enabled endpoints of its integration subscribed to its type,
    /// in one transaction. Returns, per event, how many deliveries were queued; `None` when
    /// the incident changed meanwhile.
    async fn record_controller_notices(
        &self,
        incident: &IncidentRow,
        expected_version: i64,
        audit: &AuditRecord,
        events: &[(IntegrationId, crate::webhooks::OperatorEvent)],
    ) -> Result<Option<Vec<u64>>, StoreError>;
    /// Records that the subject was sent the incident's notice.
    async fn record_incident_notice(
        &self,
        id: &crate::ids::IncidentId,
        subject: &SubjectId,
        message: &MessageId,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    async fn insert_incident(
        &self,
        row: &IncidentRow,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    async fn incident(
        &self,
        id: &crate::ids::IncidentId,
    ) -> Result<Option<IncidentRow>, StoreError>;
    /// Incidents in the order they were opened, after the cursor (an incident id).
    async fn incidents(&self, page: &PageRequest) -> Result<Vec<IncidentRow>, StoreError>;
    /// Replaces the incident if it is still at `expected_version`, with its audit entry;
    /// `false` when it changed meanwhile.
    async fn update_incident(
        &self,
        row: &IncidentRow,
        expected_version: i64,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
}

/// Everything Herald stores.
#[async_trait]
pub trait Store:
    KeyStore
    + SubjectStore
    + AuthStore
    + crate::auth::oauth::OAuthStore
    + crate::limits::LimitsStore
    + AuditStore
    + MessageStore
    + DeliveryStore
    + CallbackStore
    + WebhookStore
    + ConsentStore
    + RightsStore
    + SubjectRightsStore
    + IncidentStore
    + crate::vendors::VendorStore
    + fmt::Debug
    + 'static
{
    fn backend(&self) -> Backend;
    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Releases connections (graceful shutdown).
    async fn close(&self);
}
