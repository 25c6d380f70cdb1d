//! What an audit entry can say: who ([`Actor`]), did what ([`Action`]), to what ([`Target`]),
//! with which [`Outcome`], in which request, plus a few [`Detail`]s.
//!
//! Personal data cannot get in by construction: every string an entry can hold is either a
//! compile-time constant (`&'static str`), a validated pseudonymous id, a validated route
//! template, a digest or a time. There is no way to put a runtime `String` — a phone number, a
//! name, a message — into an entry:
//!
//! What does compile — constants, typed ids, numbers:
//!
//! ```
//! # use herald_domain::audit::Detail;
//! let id = herald_domain::ids::SubjectId::generate().unwrap();
//! let _ = (Detail::from("revoked"), Detail::from(&id), Detail::from(42u32));
//! ```
//!
//! What does not:
//!
//! ```compile_fail
//! # use herald_domain::audit::Detail;
//! let phone = herald_domain::phone::parse("+4915112345678", None).unwrap();
//! let _ = Detail::from(phone);
//! ```
//!
//! ```compile_fail
//! # use herald_domain::audit::Detail;
//! let text = String::from("Hello Anna");
//! let _ = Detail::from(text.as_str());
//! ```

use std::collections::BTreeMap;
use std::fmt;

#[cfg(test)]
use chrono::SecondsFormat;
#[cfg(test)]
use serde_json::{Value, json};

use crate::auth::{Credential, Principal};
use crate::clock::Timestamp;
use crate::ids::{
    AccessTokenId, ApiKeyId, CallbackId, ConsentEventId, EventId, IncidentId, IntegrationId,
    MessageId, OAuthClientId, RightsRequestId, SubjectId, WebhookEndpointId,
};

/// A request id as Herald generates them: `req_` and 16 lowercase base32hex characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(value: &str) -> Option<Self> {
        let body = value.strip_prefix("req_")?;
        (body.len() == 16
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)))
        .then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An integration, through one of its API keys.
    Integration {
        integration_id: IntegrationId,
        key_id: ApiKeyId,
    },
    /// An integration, through an OAuth 2.0 access token issued to one of its clients.
    OAuthClient {
        integration_id: IntegrationId,
        client_id: OAuthClientId,
        token_id: AccessTokenId,
    },
    /// An operator, at Herald's command line.
    Admin,
    /// The data subject (e.g. by replying STOP).
    Subject(SubjectId),
    /// Herald itself (start-up, sealing, retention).
    System,
    /// A caller that did not authenticate.
    Anonymous,
}

impl Actor {
    /// The integration and credential behind an authenticated request.
    pub fn of(principal: &Principal) -> Self {
        let integration_id = principal.integration_id.clone();
        match &principal.credential {
            Credential::ApiKey(key_id) => Actor::Integration {
                integration_id,
                key_id: key_id.clone(),
            },
            Credential::OAuth {
                client_id,
                token_id,
            } => Actor::OAuthClient {
                integration_id,
                client_id: client_id.clone(),
                token_id: token_id.clone(),
            },
        }
    }

    /// The JSON tree the canonical form is defined over (tests compare `body.rs` with it).
    #[cfg(test)]
    fn json(&self) -> Value {
        match self {
            Actor::Integration {
                integration_id,
                key_id,
            } => {
                json!({"type": "integration", "integration_id": integration_id.as_str(), "key_id": key_id.as_str()})
            }
            Actor::OAuthClient {
                integration_id,
                client_id,
                token_id,
            } => json!({
                "type": "oauth_client",
                "integration_id": integration_id.as_str(),
                "client_id": client_id.as_str(),
                "token_id": token_id.as_str(),
            }),
            Actor::Admin => json!({"type": "admin", "via": "cli"}),
            Actor::Subject(id) => json!({"type": "subject", "id": id.as_str()}),
            Actor::System => json!({"type": "system"}),
            Actor::Anonymous => json!({"type": "anonymous"}),
        }
    }
}

/// The actor and request behind a capability call: passed into every state-changing call so
/// its audit entry can be written with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiator {
    pub actor: Actor,
    pub request_id: Option<RequestId>,
    /// The API route template the request came in on (`/v1/subjects/{id}`): every entry the
    /// request causes names it, so an incident scoped to a vulnerable route finds them all.
    pub route: Option<String>,
    /// The incident the action is taken for (breach notices to the people affected).
    pub incident: Option<IncidentId>,
}

impl Initiator {
    pub fn new(actor: Actor, request_id: Option<RequestId>) -> Self {
        Self {
            actor,
            request_id,
            route: None,
            incident: None,
        }
    }

    pub fn system() -> Self {
        Self::new(Actor::System, None)
    }

    pub fn admin() -> Self {
        Self::new(Actor::Admin, None)
    }

    pub fn integration(principal: &Principal, request_id: Option<RequestId>) -> Self {
        Self::new(Actor::of(principal), request_id)
    }

    /// The same, on a route (ignored unless it is a plausible template: see [`Detail::route`]).
    #[must_use]
    pub fn on_route(mut self, route: &str) -> Self {
        self.route = Detail::is_route(route).then(|| route.to_owned());
        self
    }

    /// The same, acting for an incident.
    #[must_use]
    pub fn for_incident(mut self, incident: &IncidentId) -> Self {
        self.incident = Some(incident.clone());
        self
    }
}

macro_rules! actions {
    ($($variant:ident => $name:literal, $description:literal;)*) => {
        /// Every kind of audit entry. The names are stable: auditors and alert rules rely on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $($variant,)*
        }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            /// What the entry records (the audit event inventory, docs/audit.md).
            pub fn description(self) -> &'static str {
                match self {
                    $(Action::$variant => $description,)*
                }
            }
        }
    };
}

actions! {
    ApiRequest => "api.request", "An authenticated API call that changed nothing (reads, refused writes): method, route template, status.";
    AuthFailed => "auth.failed", "API calls without a valid credential: missing, malformed, unknown, revoked or expired (reason, source: the caller's address truncated to /24 or /48, count: calls in the window, window_seconds). At most two entries per source and reason per minute: the first, then one with the rest of the count.";
    AuthForbidden => "auth.forbidden", "An API call with a valid credential lacking the required scope (required_scope).";
    SubjectRegistered => "subject.registered", "A subject was registered by phone number, or found already registered (created).";
    SubjectLookedUp => "subject.looked_up", "A subject was looked up by phone number (found).";
    SubjectRestricted => "subject.restricted", "Processing for a subject was restricted, GDPR Art. 18 (reason_given; the reason itself is stored encrypted).";
    SubjectRestrictionLifted => "subject.restriction_lifted", "A subject's restriction was lifted after the subject was told (subject_notified_at).";
    SubjectLegalHoldPlaced => "subject.legal_hold_placed", "A legal hold was placed on a subject: erasure is refused while it stands (the reason is stored encrypted).";
    SubjectLegalHoldReleased => "subject.legal_hold_released", "A subject's legal hold was released.";
    SubjectRectified => "subject.rectified", "A subject's phone number was corrected (fields, consents_lapsed); the number is never in the entry.";
    SubjectErased => "subject.erased", "A subject was erased by crypto-shredding (counts of what was removed), or the erasure was refused by a legal hold (reason).";
    SubjectExported => "subject.exported", "Everything held about a subject was exported, GDPR Art. 15/20 (counts per section).";
    IntegrationCreated => "integration.created", "An integration was created.";
    ApiKeyCreated => "api_key.created", "An API key was issued (scopes, expires_at).";
    ApiKeyRevoked => "api_key.revoked", "An API key was revoked (already_revoked).";
    IntegrationRevoked => "integration.revoked", "An integration was revoked: every key and OAuth client of it refused from the next request on (api_keys, oauth_clients: how many were revoked with it).";
    OAuthClientCreated => "oauth.client_created", "An OAuth 2.0 client was registered for an integration (integration_id, auth_method, scopes); never its secret or key.";
    OAuthClientRevoked => "oauth.client_revoked", "An OAuth 2.0 client was revoked: its tokens are refused from the next request on.";
    OAuthTokenIssued => "oauth.token_issued", "An access token was issued to a client (auth_method, scopes, expires_at); the actor names client and token id, never the token.";
    OAuthTokenRefused => "oauth.token_refused", "Token, revocation or introspection requests that failed client authentication or were malformed (reason: the OAuth error code, source, count), aggregated per source network and reason per minute.";
    OAuthTokenRevoked => "oauth.token_revoked", "An access token was revoked by its client (RFC 7009); refused from the next request on.";
    RateLimited => "api.rate_limited", "Requests refused by a rate limit (reason: the limit's name, e.g. credential, route:export, source; source, count), aggregated per source network and limit per minute.";
    RateLimitChanged => "integration.rate_limit_changed", "An integration's credentials were given a rate limit of their own (per_minute, burst), or back the configured one (rate: default).";
    EnumerationSuspected => "security.enumeration_suspected", "One credential looked up or registered more distinct numbers than limits.enumeration allows within its window (distinct_numbers, window_seconds): a possible sweep of the customer base by a leaked key. Review it as a possible incident.";
    OAuthSigningKeyCreated => "oauth.signing_key_created", "A new key for signing access tokens became the active one (key_id, previous_key_id: the key that keeps verifying until its last token expired, verify_until).";
    KeysInitialised => "keys.initialised", "A new database got its system data key (and, with the file provider, a new root key file).";
    RootKeyRotated => "root_key.rotated", "The system key was re-wrapped under a new root-key version (root_version).";
    SubjectKeysRewrapped => "subject_keys.rewrapped", "A batch of subject data keys was re-wrapped under a new root-key version (count, root_version).";
    HeraldStarted => "herald.started", "Herald started serving (version).";
    ConfigLoaded => "config.loaded", "The configuration Herald started with (SHA-256 of the masked configuration, database backend, TLS).";
    HeraldStopped => "herald.stopped", "Herald stopped serving after a graceful shutdown.";
    AuditKeyCreated => "audit.signing_key_created", "A new Ed25519 key for signing audit checkpoints was created (key_id).";
    AuditVerified => "audit.verified", "The audit trail was verified (entries, first_bad, reason).";
    AuditExported => "audit.exported", "The audit trail was exported (after, entries).";
    MessageAccepted => "message.accepted", "A message was accepted for delivery (subject_id, purpose, kind, template, channel).";
    MessageRefused => "message.refused", "A message was refused by policy and not queued (code, purpose, kind).";
    AuditPruned => "audit.pruned", "Entries older than the retention period were removed behind a signed horizon checkpoint (through_seq, entries).";
    MessageSent => "message.sent", "The provider accepted a message (attempt, provider).";
    MessageAttemptFailed => "message.attempt_failed", "A delivery attempt failed and will be retried (attempt, http_status, provider_code, retry_in_seconds).";
    MessageFailed => "message.failed", "A message was given up (code, attempts, provider_code).";
    MessageStatus => "message.status", "The provider reported a new status for a message (status, provider_code).";
    MessageInbound => "message.inbound", "A subject's message arrived and was stored encrypted; it opens the 24-hour window (kind, channel).";
    MessagesPurged => "messages.content_purged", "Message bodies past their retention were deleted; metadata stays (outbound, inbound).";
    ProviderWebhookReceived => "provider_webhook.received", "A signed provider callback was stored for processing (provider, bytes).";
    ProviderWebhookRejected => "provider_webhook.rejected", "Provider callbacks that failed their signature check and were discarded unread (provider, reason, source, count, window_seconds), aggregated as auth.failed.";
    ProviderWebhookProcessed => "provider_webhook.processed", "A stored provider callback was processed (statuses, inbound, ignored, preferences, unknown_messages, unusable_numbers, foreign_numbers, unparseable).";
    ProviderWebhookDeadLettered => "provider_webhook.dead_lettered", "A stored provider callback failed processing too often and was set aside with its reason (callback_id, attempts, reason); purged with the inbox retention.";
    ProviderInboxPurged => "provider_inbox.purged", "Stored provider callbacks past the inbox retention (dead-lettered ones included) were deleted (count).";
    WebhookEndpointCreated => "webhook_endpoint.created", "An integrator webhook endpoint was registered (events).";
    WebhookDelivered => "webhook.delivered", "An event reached an integrator endpoint (event_type, attempt, http_status).";
    WebhookAttemptFailed => "webhook.attempt_failed", "An event delivery attempt failed and will be retried (event_type, attempt, http_status, retry_in_seconds).";
    WebhookFailed => "webhook.failed", "An event was given up for an endpoint (event_type, attempts, reason).";
    ConsentChanged => "consent.changed", "A consent event was recorded (purpose, channel, state, method, origin, effective: false when older than the record's latest event and so kept as history only, notice_version, notice_sha256, consent_event_id).";
    ConsentRefused => "consent.refused", "A consent change was refused (code: subject_opted_out, rate_limited; purpose, channel).";
    OptInCodeIssued => "consent.opt_in_code_issued", "A user-initiated opt-in code was issued (purpose, channel, notice_version, expires_at).";
    RightsRequestLogged => "rights_request.logged", "A data-subject rights request was logged (request_id, kind, due_at).";
    RightsRequestExtended => "rights_request.extended", "A rights request's due date was extended, the reason recorded encrypted (request_id, kind, due_at, extended_months).";
    RightsRequestCompleted => "rights_request.completed", "A rights request was marked done (request_id, kind, due_at).";
    BackupCreated => "backup.created", "A backup was written and its manifest signed (backup_id, bytes, duration_ms, audit_head_seq, erasures, trigger: cli or schedule).";
    BackupFailed => "backup.failed", "A backup could not be written (trigger, reason); nothing partial is kept.";
    BackupVerified => "backup.verified", "A backup was decrypted and checked against its signed manifest, its audit chain and checkpoints (backup_id, ok, reason).";
    BackupRestored => "backup.restored", "The first start of a database restored from a backup (backup_id, restored_at, erasures_reapplied): the entries between the backup and the restore are lost with the machine; this entry records the gap.";
    BackupDrilled => "backup.drilled", "A restore drill restored a backup into a scratch directory and checked it (backup_id, ok, rto_ms: time to restore and verify, rpo_seconds: the backup's age, erasures_reapplied, erased_subjects_checked).";
    BackupPruned => "backup.pruned", "Backups past backup.keep were deleted (count).";
    KeysMoved => "keys.moved", "The root key file was moved out of the data directory (from, to: the file names only).";
    KeysEscrowed => "keys.escrowed", "The root key ring was written encrypted to an offline age recipient (recipient fingerprint, root_versions); never the keys themselves.";
    ErasureLedgerMissingAccepted => "erasure_ledger.missing_accepted", "An operator started Herald with --accept-missing-ledger although the erasure ledger was missing or did not match (reason, restored_from): erasures made after the database's copy may have been undone.";
    ErasureLedgerImported => "erasure_ledger.imported", "Entries of an erasure ledger copy were merged into the ledger (entries, added).";
    IncidentOpened => "incident.opened", "A security incident was entered in the incident register (detected_at, became_aware_at); its text is stored encrypted, never in the entry.";
    IncidentUpdated => "incident.updated", "An incident's assessment, notifications or state changed (from, to: the states; fields: the names of what changed).";
    IncidentScoped => "incident.scoped", "The subjects an incident affected were computed from the audit trail (by: credential, integration or route; key_id, client_id, integration_id or scope_route; from, to, entries_scanned, subjects, added, total); the subjects are stored with the incident, never in the entry.";
    IncidentSubjectsNotified => "incident.subjects_notified", "Notices were sent to the people an incident affected (template, sent, already_notified, skipped); each send's message.accepted entry names the incident.";
    VendorAdded => "vendor.added", "A vendor was entered in the provider register (status); the reason is kept in the vendor's history.";
    VendorChanged => "vendor.changed", "A vendor's facts or status changed: a review, an approval, a suspension (from, to: statuses; fields; version); who and why are kept in the vendor's history.";
    IncidentControllersNotified => "incident.controllers_notified", "The integrations whose subjects an incident affected were sent incident.notified (integrations, subjects, events); the subject ids travel only in each integration's own event.";
    IncidentDeadline => "incident.deadline", "A notification clock of an incident is within 24 hours of its deadline or past it (clock, state: approaching or missed, due_at).";
    WebhookEndpointDisabled => "webhook_endpoint.disabled", "An endpoint was disabled after a run of failed deliveries or a 410 Gone (consecutive_failures, reason).";
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The /24 (IPv4) or /48 (IPv6) network of an address, written as a prefix. An IPv4 address
/// mapped into IPv6 counts as IPv4.
pub fn network_of(address: std::net::IpAddr) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

/// What the action was done to: pseudonymous ids or named parts of the system only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Subject(SubjectId),
    Message(MessageId),
    Integration(IntegrationId),
    ApiKey(ApiKeyId),
    WebhookEndpoint(WebhookEndpointId),
    OAuthClient(OAuthClientId),
    AccessToken(AccessTokenId),
    /// The keys that sign OAuth access tokens.
    OAuthSigningKeys,
    AuditTrail,
    RootKey,
    Service,
    /// A backup, by its id (`bkp_…`, derived from its time: no personal data).
    Backup(String),
    Incident(IncidentId),
    ErasureLedger,
    /// A vendor in the provider register, by its slug (no personal data).
    Vendor(String),
}

impl Target {
    /// The target's type and, where it has one, its id.
    pub(crate) fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Target::Subject(id) => ("subject", Some(id.as_str())),
            Target::Message(id) => ("message", Some(id.as_str())),
            Target::Integration(id) => ("integration", Some(id.as_str())),
            Target::ApiKey(id) => ("api_key", Some(id.as_str())),
            Target::WebhookEndpoint(id) => ("webhook_endpoint", Some(id.as_str())),
            Target::OAuthClient(id) => ("oauth_client", Some(id.as_str())),
            Target::AccessToken(id) => ("access_token", Some(id.as_str())),
            Target::OAuthSigningKeys => ("oauth_signing_keys", None),
            Target::AuditTrail => ("audit_trail", None),
            Target::RootKey => ("root_key", None),
            Target::Service => ("service", None),
            Target::Backup(id) => ("backup", Some(id.as_str())),
            Target::Incident(id) => ("incident", Some(id.as_str())),
            Target::ErasureLedger => ("erasure_ledger", None),
            Target::Vendor(id) => ("vendor", Some(id.as_str())),
        }
    }

    /// The JSON tree the canonical form is defined over (tests compare `body.rs` with it).
    #[cfg(test)]
    fn json(&self) -> Value {
        match self {
            Target::Subject(id) => json!({"type": "subject", "id": id.as_str()}),
            Target::Message(id) => json!({"type": "message", "id": id.as_str()}),
            Target::Integration(id) => json!({"type": "integration", "id": id.as_str()}),
            Target::ApiKey(id) => json!({"type": "api_key", "id": id.as_str()}),
            Target::WebhookEndpoint(id) => json!({"type": "webhook_endpoint", "id": id.as_str()}),
            Target::OAuthClient(id) => json!({"type": "oauth_client", "id": id.as_str()}),
            Target::AccessToken(id) => json!({"type": "access_token", "id": id.as_str()}),
            Target::OAuthSigningKeys => json!({"type": "oauth_signing_keys"}),
            Target::AuditTrail => json!({"type": "audit_trail"}),
            Target::RootKey => json!({"type": "root_key"}),
            Target::Service => json!({"type": "service"}),
            Target::Backup(id) => json!({"type": "backup", "id": id}),
            Target::Incident(id) => json!({"type": "incident", "id": id.as_str()}),
            Target::ErasureLedger => json!({"type": "erasure_ledger"}),
            Target::Vendor(id) => json!({"type": "vendor", "id": id}),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The action was attempted and did not happen (invalid input, not found, conflict, error).
    Failure,
    /// The action was refused by policy (authentication, authorisation, consent).
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// One value in an entry's details. See the module documentation for why there is no
/// free-text variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Bool(bool),
    Int(i64),
    /// A constant: a reason code, a scope name, a method.
    Code(&'static str),
    Codes(Vec<&'static str>),
    /// A pseudonymous id (validated when the typed id was made).
    Id(String),
    /// An HTTP route template such as `/v1/subjects/{id}`.
    Route(String),
    /// A SHA-256 digest, hex.
    Digest(String),
    /// A configured name (a purpose, a template): a plain identifier.
    Name(String),
    Time(Timestamp),
    /// A caller's network, never its address: IPv4 truncated to /24, IPv6 to /48.
    Network(String),
}

impl Detail {
    /// A route template, if it looks like one (`/`, letters, digits, `{}`, `_`, `.`, `-`).
    pub fn route(template: &str) -> Option<Self> {
        Self::is_route(template).then(|| Detail::Route(template.to_owned()))
    }

    /// Whether `template` looks like a route template (checked without allocating: every
    /// authenticated request's initiator is checked).
    pub fn is_route(template: &str) -> bool {
        template.starts_with('/')
            && template.len() <= 100
            && template.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'/' | b'{' | b'}' | b'_' | b'.' | b'-')
            })
    }

    /// A configured name, if it is a plain identifier (letter first; letters, digits, `_`,
    /// `.`, `-`) — so it can never be a phone number or free text.
    pub fn name(name: &str) -> Option<Self> {
        crate::messages::catalog::is_identifier(name).then(|| Detail::Name(name.to_owned()))
    }

    pub fn digest(bytes: &[u8; 32]) -> Self {
        Detail::Digest(data_encoding::HEXLOWER.encode(bytes))
    }

    /// The network a caller's address is in (`203.0.113.0/24`, `2001:db8:1::/48`): enough to
    /// see where failures come from, too coarse to name a household.
    pub fn network(address: std::net::IpAddr) -> Self {
        Detail::Network(network_of(address))
    }

    /// The JSON tree the canonical form is defined over (tests compare `body.rs` with it).
    #[cfg(test)]
    fn json(&self) -> Value {
        match self {
            Detail::Bool(b) => json!(b),
            Detail::Int(i) => json!(i),
            Detail::Code(c) => json!(c),
            Detail::Codes(cs) => json!(cs),
            Detail::Id(s)
            | Detail::Route(s)
            | Detail::Digest(s)
            | Detail::Name(s)
            | Detail::Network(s) => json!(s),
            Detail::Time(t) => json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }
}

impl From<bool> for Detail {
    fn from(value: bool) -> Self {
        Detail::Bool(value)
    }
}

impl From<i64> for Detail {
    fn from(value: i64) -> Self {
        Detail::Int(value)
    }
}

impl From<u32> for Detail {
    fn from(value: u32) -> Self {
        Detail::Int(i64::from(value))
    }
}

impl From<u64> for Detail {
    fn from(value: u64) -> Self {
        Detail::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<&'static str> for Detail {
    fn from(value: &'static str) -> Self {
        Detail::Code(value)
    }
}

impl From<Vec<&'static str>> for Detail {
    fn from(value: Vec<&'static str>) -> Self {
        Detail::Codes(value)
    }
}

impl From<Timestamp> for Detail {
    fn from(value: Timestamp) -> Self {
        Detail::Time(value)
    }
}

macro_rules! id_detail {
    ($($id:ty),*) => {
        $(impl From<&$id> for Detail {
            fn from(value: &$id) -> Self {
                Detail::Id(value.as_str().to_owned())
            }
        })*
    };
}

id_detail!(
    SubjectId,
    IntegrationId,
    ApiKeyId,
    MessageId,
    WebhookEndpointId,
    EventId,
    CallbackId,
    ConsentEventId,
    RightsRequestId
);

/// An entry's details: a few named values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details(BTreeMap<&'static str, Detail>);

impl Details {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn with(mut self, key: &'static str, value: impl Into<Detail>) -> Self {
        self.0.insert(key, value.into());
        self
    }

    /// Adds a value only when there is one.
    #[must_use]
    pub fn with_opt(self, key: &'static str, value: Option<impl Into<Detail>>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    /// The details in key order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&&'static str, &Detail)> {
        self.0.iter()
    }

    /// The JSON tree the canonical form is defined over (tests compare `body.rs` with it).
    #[cfg(test)]
    fn json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.json()))
                .collect(),
        )
    }
}

/// An audit entry before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: Actor,
    pub action: Action,
    pub target: Option<Target>,
    pub outcome: Outcome,
    pub request_id: Option<RequestId>,
    pub details: Details,
}

impl AuditEvent {
    pub fn new(initiator: &Initiator, action: Action, outcome: Outcome) -> Self {
        let mut details = Details::new();
        if let Some(route) = &initiator.route {
            details.0.insert("route", Detail::Route(route.clone()));
        }
        if let Some(incident) = &initiator.incident {
            details
                .0
                .insert("incident_id", Detail::Id(incident.as_str().to_owned()));
        }
        Self {
            actor: initiator.actor.clone(),
            action,
            target: None,
            outcome,
            request_id: initiator.request_id.clone(),
            details,
        }
    }

    #[must_use]
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// Adds details to those the initiator gave (its route and incident).
    #[must_use]
    pub fn details(mut self, details: Details) -> Self {
        self.details.0.extend(details.0);
        self
    }

    /// The entry as JSON, without its sequence number (assigned when sealed): the definition
    /// `body.rs` writes directly.
    #[cfg(test)]
    pub(crate) fn json(&self, time: Timestamp) -> Value {
        json!({
            "action": self.action.as_str(),
            "actor": self.actor.json(),
            "details": self.details.json(),
            "outcome": self.outcome.as_str(),
            "request_id": self.request_id.as_ref().map(RequestId::as_str),
            "target": self.target.as_ref().map(Target::json),
            "time": time.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_validated() {
        assert!(RequestId::parse("req_0123456789abcdef").is_some());
        assert!(RequestId::parse("req_0123456789abcdew").is_none());
        assert!(RequestId::parse("req_+4915112345678").is_none());
        assert!(RequestId::parse("0123456789abcdef0000").is_none());
    }

    #[test]
    fn routes_are_validated() {
        assert!(Detail::route("/v1/subjects/{id}").is_some());
        assert!(Detail::route("/v1/subjects/+4915112345678").is_none());
        assert!(Detail::route("v1/x").is_none());
        assert!(Detail::route("/v1/a b").is_none());
    }

    #[test]
    fn every_action_is_in_the_event_inventory() {
        let inventory = include_str!("../../../../docs/audit.md");
        for action in Action::ALL {
            assert!(
                inventory.contains(&format!("| `{}` |", action.as_str())),
                "{} is missing from docs/audit.md",
                action.as_str()
            );
        }
    }

    #[test]
    fn every_action_has_a_distinct_dotted_name() {
        let mut seen = std::collections::HashSet::new();
        for action in Action::ALL {
            assert!(seen.insert(action.as_str()));
            assert!(action.as_str().contains('.'));
            assert!(!action.description().is_empty());
        }
    }
}
