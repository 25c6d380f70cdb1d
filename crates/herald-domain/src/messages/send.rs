//! Accepting a message: validate, apply the policy, encrypt, and commit it with its audit entry
//! (group-committed with concurrent sends) before answering.
//!
//! The policy, in order: a known purpose; a configured template with the right number of
//! parameters; no PHI over a channel without a BAA; a subject that exists, is not erased and is
//! not restricted; the consent gate (see [`ConsentGate`]); and free-form text only within 24
//! hours of the subject's last inbound message. Every refusal is recorded and nothing is queued.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeDelta;
use herald_crypto::aead::Binding;
use herald_crypto::hash::sha256;

use super::catalog::{Catalog, Purpose};
use super::model::{Channel, Content, MAX_PARAMETER_CHARS, MAX_TEXT_CHARS};
use crate::audit::{
    Action, Audit, AuditEvent, AuditRecord, Detail, Details, Initiator, Outcome, Target,
};
use crate::auth::Principal;
use crate::batch::Batcher;
use crate::clock::{Clock, Timestamp};
use crate::consent::CHANNEL_OPT_IN;
use crate::ids::{ConsentEventId, IntegrationId, MessageId, SubjectId};
use crate::keys::{KeyError, Keyring};
use crate::phone::PhoneError;
use crate::store::{Store, StoreError, SubjectRecord};
use crate::subjects::{Access, Resolved, SubjectError, Subjects};

/// The customer-service window: free-form text only this long after the last inbound message.
pub const SERVICE_WINDOW: TimeDelta = TimeDelta::hours(24);
/// How long an `Idempotency-Key` replays the first answer.
pub const IDEMPOTENCY_WINDOW: TimeDelta = TimeDelta::hours(24);
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A send as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendCommand {
    pub to: Option<String>,
    pub subject_id: Option<SubjectId>,
    pub content: Content,
    pub purpose: String,
    pub channel: Channel,
    pub phi: bool,
}

/// Why a send was refused by policy: a stable code for the answer and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the purpose is not configured")]
    UnknownPurpose,
    #[error("no approved template has this name and language")]
    UnknownTemplate,
    #[error("the template takes {expected} parameters, {given} were given")]
    TemplateParametersMismatch { expected: u32, given: usize },
    #[error(
        "free-form text can only be sent within 24 hours of the subject's last message; use a template"
    )]
    TemplateRequiredOutsideWindow,
    #[error(
        "protected health information may only be sent through a channel covered by a business associate agreement; WhatsApp is not"
    )]
    PhiRequiresBaa,
    #[error("the subject was erased")]
    SubjectErased,
    #[error("processing for this subject is restricted")]
    SubjectRestricted,
    #[error("there is no consent (or opt-in) for this purpose and channel")]
    ConsentMissing,
    #[error("the subject has not yet confirmed the opt-in")]
    ConsentPending,
    #[error("the subject withdrew consent for this purpose and channel")]
    ConsentWithdrawn,
    #[error("the purpose's frequency cap for this subject is reached")]
    RateLimited { retry_after_seconds: u64 },
    /// The channel's vendor does not stand in the provider register.
    #[error("the channel's vendor {vendor} may not carry messages: {}", reason.code())]
    VendorNotApproved {
        vendor: crate::vendors::VendorId,
        reason: crate::vendors::NotApproved,
    },
}

impl Refusal {
    /// The vendor and why, for a [`Refusal::VendorNotApproved`].
    pub fn vendor(&self) -> Option<(&crate::vendors::VendorId, crate::vendors::NotApproved)> {
        match self {
            Refusal::VendorNotApproved { vendor, reason } => Some((vendor, *reason)),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownPurpose => "unknown_purpose",
            Refusal::UnknownTemplate => "unknown_template",
            Refusal::TemplateParametersMismatch { .. } => "template_parameters_mismatch",
            Refusal::TemplateRequiredOutsideWindow => "template_required_outside_window",
            Refusal::PhiRequiresBaa => "phi_requires_baa",
            Refusal::SubjectErased => "subject_erased",
            Refusal::SubjectRestricted => "subject_restricted",
            Refusal::ConsentMissing => "consent_missing",
            Refusal::ConsentPending => "consent_pending",
            Refusal::ConsentWithdrawn => "consent_withdrawn",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::VendorNotApproved { .. } => "vendor_not_approved",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The request's shape breaks a rule (`field`, `rule`).
    #[error("{field}: {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    #[error(transparent)]
    Phone(#[from] PhoneError),
    #[error("no such subject")]
    SubjectNotFound,
    /// Sending by number to a subject the caller is not linked to (or a new one) registers it:
    /// that needs `subjects:write`.
    #[error("sending to a number not yet linked to the caller requires the scope subjects:write")]
    MayNotRegister,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("the random number generator failed")]
    Random(#[from] herald_crypto::CryptoError),
}

impl From<SubjectError> for SendError {
    fn from(error: SubjectError) -> Self {
        match error {
            SubjectError::Phone(e) => SendError::Phone(e),
            SubjectError::Store(e) => SendError::Store(e),
            SubjectError::Keys(e) => SendError::Keys(e),
            SubjectError::Random(e) => SendError::Random(e),
            SubjectError::MayNotRegister => SendError::MayNotRegister,
        }
    }
}

/// Where the consent ledger decides ([`crate::consent::Consents`]): consent for the purpose,
/// the channel opt-in for business-initiated messages, frequency caps.
#[async_trait]
pub trait ConsentGate: Send + Sync + std::fmt::Debug {
    /// `business_initiated`: a template outside a conversation the subject started. `Ok`
    /// names the consent event the send relies on, if any (kept with the message: the
    /// evidence for every message sent).
    async fn check(
        &self,
        subject: &SubjectRecord,
        purpose: &Purpose,
        channel: Channel,
        business_initiated: bool,
        now: Timestamp,
    ) -> Result<Option<ConsentEventId>, SendError>;
}

/// A message ready to be committed: row, content ciphertext, idempotency claim, audit entry.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub integration_id: IntegrationId,
    pub subject_id: SubjectId,
    pub channel: Channel,
    pub purpose: String,
    pub kind: &'static str,
    pub template: Option<(String, String)>,
    pub content_ciphertext: Vec<u8>,
    pub phi: bool,
    pub created_at: Timestamp,
    pub idempotency: Option<IdempotencyClaim>,
    /// The consent event the send relies on (see [`ConsentGate::check`]).
    pub consent_event_id: Option<ConsentEventId>,
    /// A template outside a conversation the subject started: delivery re-checks the channel
    /// opt-in it relied on.
    pub business_initiated: bool,
    /// The purpose's frequency cap, enforced in the commit itself (so concurrent sends cannot
    /// exceed it).
    pub cap: Option<CapClaim>,
    pub audit: AuditRecord,
}

/// A frequency cap a message must fit: at most `max` accepted (not failed) messages of its
/// subject and purpose after `since`, this one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapClaim {
    pub max: u32,
    pub since: Timestamp,
}

/// A message about to be accepted, before its content is sealed.
pub(crate) struct Draft<'a> {
    pub id: MessageId,
    pub integration: &'a IntegrationId,
    pub subject: &'a SubjectId,
    pub purpose: &'a str,
    pub channel: Channel,
    pub content: &'a Content,
    pub phi: bool,
    pub idempotency: Option<IdempotencyClaim>,
    pub consent_event_id: Option<ConsentEventId>,
    pub business_initiated: bool,
}

impl Draft<'_> {
    /// The content sealed under the subject's key, with the `message.accepted` entry (the same
    /// for integrators' sends and Herald's own messages).
    pub(crate) fn seal(
        self,
        key: &herald_crypto::SymmetricKey,
        initiator: &Initiator,
        now: Timestamp,
    ) -> Result<NewMessage, SendError> {
        let plaintext = serde_json::to_vec(self.content).map_err(|_| SendError::Invalid {
            field: "content",
            rule: "cannot be encoded",
        })?;
        let content_ciphertext =
            Keyring::seal_for_subject(key, &content_binding(&self.id), &plaintext)?;
        let template = match self.content {
            Content::Template { name, language, .. } => Some((name.clone(), language.clone())),
            Content::Text { .. } => None,
        };
        let event = AuditEvent::new(initiator, Action::MessageAccepted, Outcome::Success)
            .target(Target::Message(self.id.clone()))
            .details(
                Details::new()
                    .with("subject_id", self.subject)
                    .with_opt("purpose", Detail::name(self.purpose))
                    .with("kind", self.content.kind())
                    .with_opt(
                        "template",
                        template.as_ref().and_then(|(n, _)| Detail::name(n)),
                    )
                    .with("channel", self.channel.as_str())
                    .with_opt("consent_event_id", self.consent_event_id.as_ref()),
            );
        Ok(NewMessage {
            id: self.id,
            integration_id: self.integration.clone(),
            subject_id: self.subject.clone(),
            channel: self.channel,
            purpose: self.purpose.to_owned(),
            kind: self.content.kind(),
            template,
            content_ciphertext,
            phi: self.phi,
            created_at: now,
            idempotency: self.idempotency,
            consent_event_id: self.consent_event_id,
            business_initiated: self.business_initiated,
            cap: None,
            audit: AuditRecord::new(&event, now),
        })
    }
}

/// The claim an `Idempotency-Key` makes: a hash of the key (the key itself is the caller's text
/// and is never stored) and a fingerprint of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub key_hash: [u8; 32],
    pub fingerprint: [u8; 32],
    pub expires_at: Timestamp,
}

/// What the committer did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptOutcome {
    Accepted,
    /// Another request holding the same Idempotency-Key got there first; nothing was written.
    IdempotencyKeyTaken,
    /// The purpose's frequency cap for the subject was reached (by sends committed meanwhile);
    /// nothing was written.
    CapReached,
}

/// An accepted (or replayed) send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: MessageId,
    pub subject_id: SubjectId,
    pub created_at: Timestamp,
    /// The answer is a replay of an earlier request with the same Idempotency-Key.
    pub replayed: bool,
}

pub(crate) fn content_binding(id: &MessageId) -> Binding<'_> {
    Binding::new("messages", "content_ciphertext", id.as_str())
}

fn key_hash(integration: &IntegrationId, key: &str) -> [u8; 32] {
    sha256(&[
        b"herald/idempotency/v1\0",
        integration.as_str().as_bytes(),
        b"\0",
        key.as_bytes(),
    ])
}

/// A digest of everything that makes a send what it is, for Idempotency-Key replays.
fn fingerprint(command: &SendCommand) -> [u8; 32] {
    let content = serde_json::to_vec(&command.content).unwrap_or_default();
    sha256(&[
        b"herald/send/v1\0",
        command.to.as_deref().unwrap_or("").as_bytes(),
        b"\0",
        command
            .subject_id
            .as_ref()
            .map_or("", |s| s.as_str())
            .as_bytes(),
        b"\0",
        &content,
        b"\0",
        command.purpose.as_bytes(),
        b"\0",
        command.channel.as_str().as_bytes(),
        if command.phi { b"\x01" } else { b"\x00" },
    ])
}

/// Checks the request's shape; no look-ups.
fn validate(command: &SendCommand, idempotency_key: Option<&str>) -> Result<(), SendError> {
    let invalid = |field, rule| Err(SendError::Invalid { field, rule });
    match (&command.to, &command.subject_id) {
        (Some(_), Some(_)) | (None, None) => {
            return invalid("to", "give exactly one of to or subject_id");
        }
        _ => {}
    }
    match &command.content {
        Content::Text { body } => {
            if body.trim().is_empty() {
                return invalid("text", "must not be empty");
            }
            if body.chars().count() > MAX_TEXT_CHARS {
                return invalid("text", "at most 4096 characters");
            }
        }
        Content::Template { parameters, .. } => {
            if parameters
                .iter()
                .any(|p| p.is_empty() || p.chars().count() > MAX_PARAMETER_CHARS)
            {
                return invalid(
                    "template.parameters",
                    "each parameter has 1 to 1024 characters",
                );
            }
        }
    }
    if let Some(key) = idempotency_key
        && (key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY
            || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)))
    {
        return invalid("Idempotency-Key", "1 to 255 visible ASCII characters");
    }
    Ok(())
}

/// The send service.
#[derive(Clone)]
pub struct Messages {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    audit: Audit,
    subjects: Subjects,
    catalog: Arc<Catalog>,
    consent: Arc<dyn ConsentGate>,
    committer: Batcher<NewMessage, AcceptOutcome>,
    /// The vendor the channel goes through and the register that judges it; `None` only in
    /// unit tests of the send path without a register.
    route: Option<ChannelVendor>,
}

/// The vendor a channel goes through, judged by the provider register at every send.
#[derive(Debug, Clone)]
pub struct ChannelVendor {
    pub vendor: crate::vendors::VendorId,
    pub register: crate::vendors::Vendors,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages").finish_non_exhaustive()
    }
}

/// How many sends one transaction commits at most, and how many such transactions may be in
/// flight.
const COMMIT_BATCH: usize = 512;
const COMMITS_IN_FLIGHT: usize = 1;

impl Messages {
    /// Must be called inside a Tokio runtime (it starts the group-commit task).
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        audit: Audit,
        subjects: Subjects,
        catalog: Arc<Catalog>,
        consent: Arc<dyn ConsentGate>,
    ) -> Self {
        let writer = Arc::clone(&store);
        let committer = Batcher::spawn(
            COMMIT_BATCH,
            COMMITS_IN_FLIGHT,
            move |batch: Vec<NewMessage>| {
                let store = Arc::clone(&writer);
                async move { store.accept_messages(&batch).await }
            },
        );
        Self {
            store,
            keys,
            clock,
            audit,
            subjects,
            catalog,
            consent,
            committer,
            route: None,
        }
    }

    /// Sends go through `route`'s vendor, refused while it does not stand.
    #[must_use]
    pub fn through(mut self, route: ChannelVendor) -> Self {
        self.route = Some(route);
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// A message, if `integration` sent it: another integration's message does not exist for it.
    pub async fn get(
        &self,
        id: &MessageId,
        integration: &IntegrationId,
    ) -> Result<Option<super::model::MessageRecord>, StoreError> {
        let Some(mut record) = self
            .store
            .message(id)
            .await?
            .filter(|m| &m.integration_id == integration)
        else {
            return Ok(None);
        };
        if let Some(ciphertext) = record.provider_ref_ciphertext.take() {
            // Unreadable once the subject is erased: then the provider's id is gone too.
            if let Ok(key) = self.keys.subject_key(&record.subject_id).await {
                let plaintext = Keyring::open_for_subject(
                    &key,
                    &super::delivery::provider_ref_binding(&record.id),
                    &ciphertext,
                )
                .map_err(|e| StoreError::Corrupt(format!("provider message id: {e}")))?;
                record.provider_message_id = String::from_utf8(plaintext.to_vec()).ok();
            }
        }
        Ok(Some(record))
    }

    /// Records a refusal (not a state change: a standalone, group-committed entry).
    async fn refuse(
        &self,
        initiator: &Initiator,
        command: &SendCommand,
        subject: Option<&SubjectId>,
        code: &'static str,
        vendor: Option<(&crate::vendors::VendorId, crate::vendors::NotApproved)>,
    ) -> Result<(), StoreError> {
        let mut event = AuditEvent::new(initiator, Action::MessageRefused, Outcome::Denied)
            .details(
                Details::new()
                    .with("code", code)
                    .with_opt("purpose", Detail::name(&command.purpose))
                    .with("kind", command.content.kind()),
            );
        if let Some((vendor, reason)) = vendor {
            event = event.details(
                Details::new()
                    .with_opt("vendor", Detail::name(vendor.as_str()))
                    .with("reason", reason.code()),
            );
        }
        if let Some(subject) = subject {
            event = event.target(Target::Subject(subject.clone()));
        }
        self.audit.append(&event).await
    }

    /// Accepts a message for delivery, or refuses it. With an `Idempotency-Key`, a repeated
    /// request replays the first answer (within 24 hours); the same key with a different
    /// request is refused.
    pub async fn send(
        &self,
        command: SendCommand,
        caller: &Principal,
        initiator: &Initiator,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, SendError> {
        self.send_as(
            command,
            caller,
            Access::of(caller),
            initiator,
            idempotency_key,
        )
        .await
    }

    /// [`Messages::send`] with the subjects `access` reaches instead of the caller's own: the
    /// controller's notices to the people a breach affected go to subjects of any integration.
    pub async fn send_as(
        &self,
        command: SendCommand,
        caller: &Principal,
        access: Access<'_>,
        initiator: &Initiator,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, SendError> {
        validate(&command, idempotency_key)?;
        let integration = &caller.integration_id;
        let now = self.clock.now();
        let claim = idempotency_key.map(|key| IdempotencyClaim {
            key_hash: key_hash(integration, key),
            fingerprint: fingerprint(&command),
            expires_at: now + IDEMPOTENCY_WINDOW,
        });
        if let Some(claim) = &claim
            && let Some(replay) = self.replay(integration, claim, now).await?
        {
            return Ok(replay);
        }
        let Resolved { subject, link } = match self.admit(&command, access, initiator).await {
            Ok(resolved) => resolved,
            Err(error) => {
                if let SendError::Refused(refusal) = &error {
                    self.refuse(initiator, &command, None, refusal.code(), refusal.vendor())
                        .await?;
                }
                return Err(error);
            }
        };
        let (consent_event_id, business_initiated) =
            match self.check_subject(&command, &subject, now).await {
                Ok(decided) => decided,
                Err(error) => {
                    if let SendError::Refused(refusal) = &error {
                        self.refuse(initiator, &command, Some(&subject.id), refusal.code(), None)
                            .await?;
                    }
                    return Err(error);
                }
            };
        // The caller sends to a subject it did not know yet (it may register subjects): from
        // now on it is linked, before the message can be accepted.
        if let Some(reason) = link {
            self.subjects.link(&subject.id, integration, reason).await?;
        }
        let id = MessageId::generate_ordered(now)?;
        let key = self.keys.subject_key(&subject.id).await?;
        let message = Draft {
            id: id.clone(),
            integration,
            subject: &subject.id,
            purpose: &command.purpose,
            channel: command.channel,
            content: &command.content,
            phi: command.phi,
            idempotency: claim.clone(),
            consent_event_id,
            business_initiated,
        }
        .seal(&key, initiator, now)?;
        let purpose_cap = self
            .catalog
            .public_purpose(&command.purpose)
            .and_then(|p| p.frequency_cap);
        let message = NewMessage {
            cap: purpose_cap.map(|cap| CapClaim {
                max: cap.max,
                since: now - cap.per,
            }),
            ..message
        };
        match self.committer.submit(message).await? {
            AcceptOutcome::Accepted => Ok(Accepted {
                id,
                subject_id: subject.id,
                created_at: now,
                replayed: false,
            }),
            AcceptOutcome::CapReached => {
                let refusal = match purpose_cap {
                    Some(cap) => {
                        let (_, oldest) = self
                            .store
                            .messages_since(&subject.id, &command.purpose, now - cap.per)
                            .await?;
                        let free_at = oldest.map_or(now + cap.per, |t| t + cap.per);
                        Refusal::RateLimited {
                            retry_after_seconds: u64::try_from(
                                (free_at - now).num_seconds().max(1),
                            )
                            .unwrap_or(1),
                        }
                    }
                    None => Refusal::RateLimited {
                        retry_after_seconds: 1,
                    },
                };
                self.refuse(initiator, &command, Some(&subject.id), refusal.code(), None)
                    .await?;
                Err(refusal.into())
            }
            AcceptOutcome::IdempotencyKeyTaken => {
                // A concurrent request with the same key won; answer as it did.
                let claim = claim.ok_or(SendError::IdempotencyKeyReused)?;
                self.replay(integration, &claim, now)
                    .await?
                    .ok_or(SendError::IdempotencyKeyReused)
            }
        }
    }

    async fn replay(
        &self,
        integration: &IntegrationId,
        claim: &IdempotencyClaim,
        now: Timestamp,
    ) -> Result<Option<Accepted>, SendError> {
        let Some(stored) = self
            .store
            .idempotent_message(integration, &claim.key_hash, now)
            .await?
        else {
            return Ok(None);
        };
        if stored.fingerprint != claim.fingerprint {
            return Err(SendError::IdempotencyKeyReused);
        }
        let message = self
            .store
            .message(&stored.message_id)
            .await?
            .ok_or(SendError::IdempotencyKeyReused)?;
        Ok(Some(Accepted {
            id: message.id,
            subject_id: message.subject_id,
            created_at: message.created_at,
            replayed: true,
        }))
    }

    /// The policy parts that need no subject, then the subject itself: by id only one the
    /// caller may see; by number one it is linked to, or any with `subjects:write` (found or
    /// created — only now, after the checks that need no subject).
    async fn admit(
        &self,
        command: &SendCommand,
        access: Access<'_>,
        initiator: &Initiator,
    ) -> Result<Resolved, SendError> {
        let Some(purpose) = self.catalog.public_purpose(&command.purpose) else {
            return Err(Refusal::UnknownPurpose.into());
        };
        if !purpose.offers(command.channel) {
            return Err(SendError::Invalid {
                field: "channel",
                rule: "the purpose is not offered on this channel",
            });
        }
        if let Content::Template {
            name,
            language,
            parameters,
        } = &command.content
        {
            let template = self
                .catalog
                .template(name, language)
                .ok_or(Refusal::UnknownTemplate)?;
            if parameters.len() != template.parameters as usize {
                return Err(Refusal::TemplateParametersMismatch {
                    expected: template.parameters,
                    given: parameters.len(),
                }
                .into());
            }
        }
        // The channel's vendor must stand in the provider register (read from memory).
        if let Some(route) = &self.route
            && let Err(reason) = route.register.standing_of(&route.vendor)
        {
            return Err(Refusal::VendorNotApproved {
                vendor: route.vendor.clone(),
                reason,
            }
            .into());
        }
        // WhatsApp offers no business associate agreement.
        if command.phi {
            return Err(Refusal::PhiRequiresBaa.into());
        }
        match (&command.to, &command.subject_id) {
            (Some(to), None) => Ok(self.subjects.resolve_for(to, initiator, access).await?),
            (None, Some(id)) => {
                if !self.subjects.visible(id, access).await? {
                    return Err(SendError::SubjectNotFound);
                }
                match self.subjects.with_erasure(id).await? {
                    None => Err(SendError::SubjectNotFound),
                    Some((_, Some(_erased_at))) => Err(Refusal::SubjectErased.into()),
                    Some((subject, None)) => Ok(Resolved {
                        subject,
                        link: None,
                    }),
                }
            }
            _ => Err(SendError::Invalid {
                field: "to",
                rule: "give exactly one of to or subject_id",
            }),
        }
    }

    /// The policy parts that depend on the subject; `Ok` names the consent event relied on
    /// and whether the message is business-initiated.
    async fn check_subject(
        &self,
        command: &SendCommand,
        subject: &SubjectRecord,
        now: Timestamp,
    ) -> Result<(Option<ConsentEventId>, bool), SendError> {
        if subject.restricted {
            return Err(Refusal::SubjectRestricted.into());
        }
        let purpose = self
            .catalog
            .public_purpose(&command.purpose)
            .ok_or(Refusal::UnknownPurpose)?;
        // The subject's "STOP" opened a window too, but it starts no conversation: only a
        // message after the opt-out does.
        let opted_out_at = subject
            .consents
            .iter()
            .find(|c| {
                c.purpose == CHANNEL_OPT_IN
                    && c.channel == command.channel
                    && c.standing.opted_out()
            })
            .map(|c| c.standing.effective_at);
        let inside_window = subject.last_inbound_at.is_some_and(|at| {
            now - at <= SERVICE_WINDOW && opted_out_at.is_none_or(|stopped| at > stopped)
        });
        if let Content::Text { .. } = command.content
            && !inside_window
        {
            return Err(Refusal::TemplateRequiredOutsideWindow.into());
        }
        // Free-form text is only ever a reply inside the window; a template outside it is the
        // business starting the conversation.
        let business_initiated = !inside_window;
        let relied_on = self
            .consent
            .check(subject, purpose, command.channel, business_initiated, now)
            .await?;
        Ok((relied_on, business_initiated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> SendCommand {
        SendCommand {
            to: Some("+4915112345678".into()),
            subject_id: None,
            content: Content::Text { body: "hi".into() },
            purpose: "order_updates".into(),
            channel: Channel::Whatsapp,
            phi: false,
        }
    }

    #[test]
    fn shape_rules() {
        assert!(validate(&command(), None).is_ok());
        let both = SendCommand {
            subject_id: Some(SubjectId::generate().unwrap()),
            ..command()
        };
        assert!(matches!(
            validate(&both, None),
            Err(SendError::Invalid { field: "to", .. })
        ));
        let neither = SendCommand {
            to: None,
            ..command()
        };
        assert!(validate(&neither, None).is_err());
        let empty = SendCommand {
            content: Content::Text { body: " ".into() },
            ..command()
        };
        assert!(matches!(
            validate(&empty, None),
            Err(SendError::Invalid { field: "text", .. })
        ));
        let long = SendCommand {
            content: Content::Text {
                body: "x".repeat(4097),
            },
            ..command()
        };
        assert!(validate(&long, None).is_err());
        for bad_key in ["", "has space", &"k".repeat(256), "ümlaut"] {
            assert!(validate(&command(), Some(bad_key)).is_err(), "{bad_key:?}");
        }
        assert!(validate(&command(), Some("order-42/attempt-1")).is_ok());
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let a = fingerprint(&command());
        assert_eq!(a, fingerprint(&command()));
        let other_text = SendCommand {
            content: Content::Text { body: "hi!".into() },
            ..command()
        };
        assert_ne!(a, fingerprint(&other_text));
        let other_purpose = SendCommand {
            purpose: "marketing".into(),
            ..command()
        };
        assert_ne!(a, fingerprint(&other_purpose));
    }

    #[test]
    fn idempotency_keys_are_scoped_to_the_integration() {
        let a = IntegrationId::generate().unwrap();
        let b = IntegrationId::generate().unwrap();
        assert_ne!(key_hash(&a, "k1"), key_hash(&b, "k1"));
        assert_ne!(key_hash(&a, "k1"), key_hash(&a, "k2"));
    }

    #[test]
    fn refusal_codes_are_the_documented_ones() {
        assert_eq!(Refusal::UnknownPurpose.code(), "unknown_purpose");
        assert_eq!(
            Refusal::TemplateParametersMismatch {
                expected: 1,
                given: 2
            }
            .code(),
            "template_parameters_mismatch"
        );
        assert_eq!(
            Refusal::TemplateRequiredOutsideWindow.code(),
            "template_required_outside_window"
        );
    }
}
