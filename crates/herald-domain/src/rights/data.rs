//! What the store hands the rights capability: a subject's standing (restriction, legal hold,
//! erasure) and, for an export, every row that holds data about the subject, as stored
//! (ciphertexts included; the capability decrypts).

use crate::audit::AuditRecord;
use crate::clock::Timestamp;
use crate::ids::SubjectId;
use crate::rights::RightsRequest;
use crate::store::SubjectRecord;
use crate::webhooks::NewEvent;

/// A subject with the rights-related parts of its row. Erased subjects are included.
#[derive(Clone)]
pub struct SubjectStanding {
    pub record: SubjectRecord,
    /// `None` once erased.
    pub phone_index: Option<[u8; 32]>,
    pub erased_at: Option<Timestamp>,
    pub restricted_at: Option<Timestamp>,
    /// Under the subject's data key.
    pub restriction_reason_ciphertext: Option<Vec<u8>>,
    pub legal_hold_at: Option<Timestamp>,
    /// Under the system key.
    pub legal_hold_reason_ciphertext: Option<Vec<u8>>,
    pub rectified_at: Option<Timestamp>,
}

impl std::fmt::Debug for SubjectStanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectStanding")
            .field("id", &self.record.id)
            .field("restricted", &self.record.restricted)
            .field("erased_at", &self.erased_at)
            .field("legal_hold_at", &self.legal_hold_at)
            .finish_non_exhaustive()
    }
}

/// Restricting processing or lifting the restriction.
#[derive(Clone)]
pub struct RestrictionChange {
    pub subject_id: SubjectId,
    pub restrict: bool,
    pub at: Timestamp,
    /// Under the subject's data key; `None` when lifting.
    pub reason_ciphertext: Option<Vec<u8>>,
    pub audit: AuditRecord,
}

/// Placing (with its reason, under the system key) or releasing a legal hold.
#[derive(Clone)]
pub struct LegalHoldChange {
    pub subject_id: SubjectId,
    pub hold_reason_ciphertext: Option<Vec<u8>>,
    pub at: Timestamp,
    pub audit: AuditRecord,
}

/// A corrected phone number: the new ciphertext and blind index replace the old ones if the
/// stored index is still `previous_index`.
#[derive(Clone)]
pub struct Rectification {
    pub subject_id: SubjectId,
    pub previous_index: [u8; 32],
    pub phone_index: [u8; 32],
    pub phone_ciphertext: Vec<u8>,
    pub at: Timestamp,
    pub audit: AuditRecord,
    pub event: NewEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rectified {
    Done,
    /// Another subject holds the new number.
    PhoneInUse,
    /// The subject changed (or was erased) meanwhile.
    Changed,
}

/// What one erasure removed, counted in its transaction (the receipt states these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasureTally {
    /// Queued or retrying messages that will never be sent.
    pub messages_cancelled: u64,
    /// Messages whose content or provider reference was still stored.
    pub message_contents_deleted: u64,
    pub inbound_messages_deleted: u64,
    /// Consent events whose evidence (under the destroyed key) can no longer be read.
    pub consent_evidence_shredded: u64,
    /// Events to integrators not yet delivered.
    pub events_cancelled: u64,
    /// Opt-outs kept as a suppression (the number's blind index, the channel, the date) so
    /// that the subject's objection outlives the erasure.
    pub opt_outs_kept: u64,
}

/// What the erasure transaction writes besides its deletions, built from its tally.
#[derive(Clone)]
pub struct ErasureRecords {
    /// The signed receipt (JSON), kept in the erasure ledger.
    pub receipt: String,
    pub audit: AuditRecord,
    /// `subject.erased` (its payload under the system key: the subject's key is gone).
    pub event: NewEvent,
}

/// Builds the receipt, audit entry and event once the tally is known.
pub type SealErasure = dyn Fn(&ErasureTally) -> Result<ErasureRecords, String> + Send + Sync;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasure {
    /// Done; the signed receipt (also kept in the ledger).
    Erased {
        receipt: String,
    },
    NotFound,
    /// Erased before.
    AlreadyErased,
    /// A legal hold blocks it: nothing changed.
    LegalHold,
}

/// A message sent to the subject, as stored.
#[derive(Debug, Clone)]
pub struct MessageData {
    pub id: String,
    pub integration_id: String,
    pub channel: String,
    pub purpose: String,
    pub kind: String,
    pub template_name: Option<String>,
    pub template_language: Option<String>,
    pub content_ciphertext: Option<Vec<u8>>,
    pub phi: bool,
    pub status: String,
    pub attempts: u32,
    pub provider_ref_ciphertext: Option<Vec<u8>>,
    pub error_code: Option<String>,
    pub provider_code: Option<i64>,
    pub consent_event_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub content_purge_at: Option<Timestamp>,
    pub history: Vec<(String, Timestamp)>,
    pub attempt_log: Vec<AttemptData>,
}

#[derive(Debug, Clone)]
pub struct AttemptData {
    pub attempt: u32,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub provider_code: Option<i64>,
    pub latency_ms: i64,
}

/// A message the subject sent, as stored.
#[derive(Debug, Clone)]
pub struct InboundData {
    pub id: String,
    pub channel: String,
    pub kind: String,
    pub content_ciphertext: Option<Vec<u8>>,
    pub sent_at: Timestamp,
    pub received_at: Timestamp,
    pub content_purge_at: Option<Timestamp>,
}

/// An event about the subject queued for (or delivered to) an integrator's endpoint.
#[derive(Debug, Clone)]
pub struct EventData {
    pub event_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An integration that knows the subject, and how it came to (a recipient, Art. 15(1)(c)).
#[derive(Debug, Clone)]
pub struct LinkData {
    pub integration_id: String,
    pub reason: String,
    pub linked_at: Timestamp,
}

/// An audit entry that names the subject.
#[derive(Debug, Clone)]
pub struct AuditData {
    pub seq: u64,
    pub recorded_at: Timestamp,
    pub body: String,
}

/// An incident (a possible breach) the subject's data was part of.
#[derive(Debug, Clone)]
pub struct IncidentContactData {
    pub incident_id: String,
    /// Comma-separated: changed, exported, read, sent.
    pub kinds: String,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    pub notice_message_id: Option<String>,
    pub notice_at: Option<Timestamp>,
}

/// Everything stored about one subject, table by table (see [`SUBJECT_DATA_TABLES`]); the
/// consent tables are read, and their evidence decrypted, by the consent capability.
#[derive(Clone)]
pub struct SubjectData {
    pub standing: SubjectStanding,
    pub phone_ciphertext: Option<Vec<u8>>,
    /// The integrations linked to the subject.
    pub links: Vec<LinkData>,
    pub messages: Vec<MessageData>,
    pub inbound_messages: Vec<InboundData>,
    pub events: Vec<EventData>,
    pub rights_requests: Vec<RightsRequest>,
    pub audit_entries: Vec<AuditData>,
    pub incidents: Vec<IncidentContactData>,
}

/// Every table of the schema and where its rows about a subject appear in the export (the
/// section name), or why it holds none. A test compares this list with the live schema, so a
/// new table cannot hold subject data without the export (or a stated reason) covering it.
pub const SUBJECT_DATA_TABLES: &[(&str, Coverage)] = &[
    ("subjects", Coverage::Exported("subject")),
    (
        "subject_keys",
        Coverage::NotSubjectData(
            "the subject's wrapped data key: key material, not data about the person",
        ),
    ),
    ("messages", Coverage::Exported("messages")),
    ("message_history", Coverage::Exported("messages")),
    ("message_attempts", Coverage::Exported("messages")),
    ("inbound_messages", Coverage::Exported("inbound_messages")),
    ("consents", Coverage::Exported("consents")),
    ("consent_events", Coverage::Exported("consents")),
    ("webhook_deliveries", Coverage::Exported("events")),
    ("rights_requests", Coverage::Exported("rights_requests")),
    ("subject_links", Coverage::Exported("integrations")),
    (
        "suppressions",
        Coverage::NotSubjectData(
            "written only when an opted-out subject is erased (a blind index and a date), when there is no subject left to export; a subject created later for the number shows it as its consent state",
        ),
    ),
    (
        "audit_seal_mark",
        Coverage::NotSubjectData("how far the audit trail is sealed"),
    ),
    ("audit_log", Coverage::Exported("audit_entries")),
    ("audit_pending", Coverage::Exported("audit_entries")),
    (
        "erasure_ledger",
        Coverage::NotSubjectData(
            "written only once the subject is erased, when there is nothing left to export",
        ),
    ),
    (
        "idempotency_keys",
        Coverage::NotSubjectData(
            "hashes of integrators' request keys, linked to messages already exported",
        ),
    ),
    (
        "provider_inbox",
        Coverage::NotSubjectData(
            "provider callbacks awaiting processing (encrypted under the system key, minutes long); processed into messages and inbound messages",
        ),
    ),
    (
        "opt_in_codes",
        Coverage::NotSubjectData("codes an integration issued; not linked to a subject"),
    ),
    ("system_keys", Coverage::NotSubjectData("key material")),
    ("integrations", Coverage::NotSubjectData("the integrators")),
    (
        "api_keys",
        Coverage::NotSubjectData("integrators' credentials"),
    ),
    (
        "webhook_endpoints",
        Coverage::NotSubjectData("integrators' endpoints"),
    ),
    (
        "audit_checkpoints",
        Coverage::NotSubjectData("signed chain heads"),
    ),
    ("audit_keys", Coverage::NotSubjectData("signing keys")),
    (
        "oauth_clients",
        Coverage::NotSubjectData("integrators' OAuth clients"),
    ),
    (
        "oauth_signing_keys",
        Coverage::NotSubjectData("access-token signing keys"),
    ),
    (
        "oauth_revoked_tokens",
        Coverage::NotSubjectData("ids of revoked access tokens"),
    ),
    (
        "oauth_assertions",
        Coverage::NotSubjectData(
            "hashes of clients' assertion ids, kept minutes for replay detection",
        ),
    ),
    (
        "oauth_generation",
        Coverage::NotSubjectData("a counter of revocations"),
    ),
    (
        "recovery_state",
        Coverage::NotSubjectData(
            "the erasure ledger's id and whether a restore awaits its first start",
        ),
    ),
    ("incident_affected", Coverage::Exported("incidents")),
    (
        "vendors",
        Coverage::NotSubjectData("the provider register: contracts, regions, review dates"),
    ),
    (
        "vendor_history",
        Coverage::NotSubjectData("every version of a vendor's register entry, with who and why"),
    ),
    (
        "incidents",
        Coverage::NotSubjectData(
            "the incident register: facts without personal data, free text under the system key",
        ),
    ),
    (
        "backups",
        Coverage::NotSubjectData(
            "the register of backups: times, sizes, manifests of counts and hashes",
        ),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Rows about the subject appear in this section of the export.
    Exported(&'static str),
    /// The table holds no data about a person, for this reason.
    NotSubjectData(&'static str),
}
