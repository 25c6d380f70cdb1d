//! Double opt-in: Herald asks, the subject confirms from the same number within the time
//! allowed (default 48 hours), or the request lapses. Two ways in:
//!
//! - business-initiated (`POST /v1/opt-ins` with `to`): the record goes pending and one
//!   confirmation template (configured, not promotional) is queued in the same transaction;
//!   the subject's confirmation word or the template's quick-reply button grants it.
//! - user-initiated (`POST /v1/opt-ins` without `to`): Herald issues a code; whoever sends it
//!   to the business number (a click-to-chat link carries it) proves they hold that number,
//!   opens the 24-hour window and is granted the purpose.
//!
//! A confirmation from another number is a message from another subject: it finds no pending
//! request of its own, so it confirms nothing.

use chrono::TimeDelta;
use herald_crypto::SymmetricKey;
use herald_crypto::hash::sha256;
use serde_json::Map;

use super::keywords::normalize;
use super::model::{ConsentState, Method, Origin, Transition};
use super::service::{ConsentError, Consents, PlanOutcome, Planned};
use crate::audit::{Action, AuditEvent, AuditRecord, Detail, Details, Initiator, Outcome, Target};
use crate::clock::Timestamp;
use crate::ids::{ConsentEventId, IntegrationId, MessageId, SubjectId};
use crate::messages::catalog::{CONSENT_NOTICE_PURPOSE, OPT_IN_REQUEST_PURPOSE};
use crate::messages::send::{Draft, SendError};
use crate::messages::{Channel, Content, NewMessage};
use crate::store::StoreError;
use crate::subjects::Access;

/// Letters and digits of an opt-in code: no 0/O, 1/I/L, so it survives being read aloud.
const CODE_ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a code.
pub const CODE_LENGTH: usize = 8;
/// Lapsed requests one sweep expires at most.
const SWEEP_BATCH: u32 = 256;

/// SHA-256 of a normalized code: what the store keeps and looks up.
pub fn code_hash(code: &str) -> [u8; 32] {
    sha256(&[b"herald/opt-in-code/v1\0", normalize(code).as_bytes()])
}

/// The words of a message that could be a code.
pub fn code_candidates(text: &str) -> Vec<String> {
    normalize(text)
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == CODE_LENGTH && w.bytes().all(|b| CODE_ALPHABET.contains(&b)))
        .take(4)
        .map(str::to_owned)
        .collect()
}

/// The messages Herald sends itself about consent.
#[derive(Debug, Clone)]
pub(crate) enum Internal {
    /// An acknowledgement inside the window the subject's message opened (after STOP, START, a
    /// confirmation).
    Acknowledgement,
    /// A double opt-in's confirmation template, naming the request it asks about (a reply to
    /// it confirms exactly that request). Business-initiated: a STOP cancels it.
    ConfirmationRequest(Option<ConsentEventId>),
}

/// A business-initiated double opt-in, started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptInStarted {
    pub subject_id: SubjectId,
    pub state: ConsentState,
    pub expires_at: Option<Timestamp>,
    /// The confirmation template's message, when this call sent one (`None` when the subject
    /// had already opted in or a request is already pending: nothing is asked twice).
    pub message_id: Option<MessageId>,
}

/// A user-initiated opt-in code, issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptInCodeIssued {
    pub code: String,
    pub purpose: String,
    pub expires_at: Timestamp,
}

impl Consents {
    /// A message Herald sends itself, accepted as any other (its audit entry included).
    pub(crate) fn internal_message(
        &self,
        key: &SymmetricKey,
        subject: &SubjectId,
        integration: &IntegrationId,
        kind: Internal,
        content: Content,
    ) -> Result<NewMessage, ConsentError> {
        let now = self.now();
        let (purpose, consent_event_id, business_initiated) = match kind {
            Internal::Acknowledgement => (CONSENT_NOTICE_PURPOSE, None, false),
            Internal::ConfirmationRequest(request) => (OPT_IN_REQUEST_PURPOSE, request, true),
        };
        Draft {
            id: MessageId::generate_ordered(now)?,
            integration,
            subject,
            purpose,
            channel: Channel::Whatsapp,
            content: &content,
            phi: false,
            idempotency: None,
            // Herald's own messages about consent rely on no consent: they are part of asking
            // for it or of honouring its withdrawal. A confirmation request names the request
            // it asks the subject to confirm (a reply to it confirms exactly that request).
            consent_event_id,
            business_initiated,
        }
        .seal(key, &Initiator::system(), now)
        .map_err(|e| match e {
            SendError::Keys(e) => ConsentError::Keys(e),
            other => StoreError::Corrupt(other.to_string()).into(),
        })
    }

    /// Starts a business-initiated double opt-in: pending record plus one confirmation
    /// template, in one transaction. Already granted, or already pending: nothing is sent
    /// (asking again would only be noise). After the subject's opt-out only the subject can
    /// start one (`SubjectOptedOut`); at most `opt_in_max_requests` confirmation messages go to
    /// one number in 30 days (`RateLimited`).
    pub async fn start_opt_in(
        &self,
        to: &str,
        purpose: &str,
        notice_version: &str,
        integration: &IntegrationId,
        access: Access<'_>,
        initiator: &Initiator,
    ) -> Result<OptInStarted, ConsentError> {
        let channel = Channel::Whatsapp;
        let (name, language, parameters) = self
            .settings()
            .opt_in_template
            .clone()
            .ok_or(ConsentError::OptInNotConfigured)?;
        self.purpose_and_notice(purpose, channel, Some(notice_version))?;
        let resolved = self
            .inner
            .subjects
            .resolve_for(to, initiator, access)
            .await?;
        let subject = resolved.subject;
        if subject.restricted {
            return Err(ConsentError::SubjectRestricted);
        }
        if let Some(reason) = resolved.link {
            self.inner
                .subjects
                .link(&subject.id, integration, reason)
                .await?;
        }
        let now = self.now();
        let current = self.inner.store.consents(&subject.id).await?;
        if let Some(record) = current
            .iter()
            .find(|c| c.purpose == purpose && c.channel == channel)
        {
            match record.standing.at(now) {
                ConsentState::Granted => {
                    return Ok(OptInStarted {
                        subject_id: subject.id,
                        state: ConsentState::Granted,
                        expires_at: None,
                        message_id: None,
                    });
                }
                ConsentState::Pending => {
                    return Ok(OptInStarted {
                        subject_id: subject.id,
                        state: ConsentState::Pending,
                        expires_at: record.standing.expires_at,
                        message_id: None,
                    });
                }
                ConsentState::Withdrawn | ConsentState::Expired => {}
            }
        }
        if self.opted_out(&current, purpose, channel) {
            self.record_refusal(
                initiator,
                &subject.id,
                purpose,
                channel,
                "subject_opted_out",
            )
            .await?;
            return Err(ConsentError::SubjectOptedOut);
        }
        let window = TimeDelta::days(30);
        let (sent, oldest) = self
            .inner
            .store
            .messages_since(&subject.id, OPT_IN_REQUEST_PURPOSE, now - window)
            .await?;
        if sent >= u64::from(self.settings().opt_in_max_requests) {
            self.record_refusal(initiator, &subject.id, purpose, channel, "rate_limited")
                .await?;
            let free_at = oldest.map_or(now + window, |t| t + window);
            return Err(ConsentError::RateLimited {
                retry_after_seconds: u64::try_from((free_at - now).num_seconds().max(1))
                    .unwrap_or(1),
            });
        }
        let expires_at = now + self.settings().opt_in_ttl;
        let plan = Planned {
            purpose: purpose.to_owned(),
            channel,
            transition: Transition::Request { expires_at },
            method: Method::DoubleOptIn,
            origin: Origin::Integration,
            notice_version: Some(notice_version.to_owned()),
            integration: Some(integration.clone()),
            captured_at: now,
            evidence: Map::new(),
        };
        let key = self.inner.keys.subject_key(&subject.id).await?;
        let content = Content::Template {
            name,
            language,
            parameters,
        };
        // The confirmation template names the request it asks about; the request's event id
        // is known only once prepared, so the message is built inside the commit.
        let message_id = std::sync::Mutex::new(None);
        let committed = self
            .commit(&subject.id, vec![plan], initiator, |changes| {
                let request = changes
                    .iter()
                    .find(|c| c.effective)
                    .map(|c| c.event_id.clone());
                let message = self.internal_message(
                    &key,
                    &subject.id,
                    integration,
                    Internal::ConfirmationRequest(request),
                    content.clone(),
                )?;
                *message_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.id.clone());
                Ok(vec![message])
            })
            .await?;
        match committed.outcomes.first() {
            Some(PlanOutcome::OptedOut) => {
                self.record_refusal(
                    initiator,
                    &subject.id,
                    purpose,
                    channel,
                    "subject_opted_out",
                )
                .await?;
                Err(ConsentError::SubjectOptedOut)
            }
            Some(PlanOutcome::Recorded) => Ok(OptInStarted {
                subject_id: subject.id,
                state: ConsentState::Pending,
                expires_at: Some(expires_at),
                message_id: message_id.into_inner().unwrap_or_else(|e| e.into_inner()),
            }),
            // Changed meanwhile (granted or asked concurrently): answer what stands now.
            _ => {
                let now = self.now();
                let record = self
                    .inner
                    .store
                    .consents(&subject.id)
                    .await?
                    .into_iter()
                    .find(|c| c.purpose == purpose && c.channel == channel);
                let state = record
                    .as_ref()
                    .map_or(ConsentState::Expired, |r| r.standing.at(now));
                Ok(OptInStarted {
                    subject_id: subject.id,
                    state,
                    expires_at: record
                        .filter(|_| state == ConsentState::Pending)
                        .and_then(|r| r.standing.expires_at),
                    message_id: None,
                })
            }
        }
    }

    /// Issues a user-initiated opt-in code for a purpose and notice version.
    pub async fn issue_code(
        &self,
        purpose: &str,
        notice_version: &str,
        integration: &IntegrationId,
        initiator: &Initiator,
    ) -> Result<OptInCodeIssued, ConsentError> {
        let channel = Channel::Whatsapp;
        self.purpose_and_notice(purpose, channel, Some(notice_version))?;
        let now = self.now();
        let mut random = [0u8; CODE_LENGTH];
        herald_crypto::random::fill(&mut random)?;
        // 31 symbols: the modulo bias (256 % 31 = 8) leaves ~39 bits of entropy, plenty for a
        // code that only grants what its issuer asked for anyway.
        let code: String = random
            .iter()
            .map(|b| CODE_ALPHABET[usize::from(*b) % CODE_ALPHABET.len()] as char)
            .collect();
        let expires_at = now + self.settings().code_ttl;
        let record = super::ledger::OptInCode {
            code_hash: code_hash(&code),
            integration_id: integration.clone(),
            purpose: purpose.to_owned(),
            channel,
            notice_version: notice_version.to_owned(),
            created_at: now,
            expires_at,
        };
        let audit = AuditRecord::new(
            &AuditEvent::new(initiator, Action::OptInCodeIssued, Outcome::Success)
                .target(Target::Integration(integration.clone()))
                .details(
                    Details::new()
                        .with_opt("purpose", Detail::name(purpose))
                        .with("channel", channel.as_str())
                        .with_opt("notice_version", Detail::name(notice_version))
                        .with("expires_at", expires_at),
                ),
            now,
        );
        self.inner.store.insert_opt_in_code(&record, &audit).await?;
        Ok(OptInCodeIssued {
            code,
            purpose: purpose.to_owned(),
            expires_at,
        })
    }

    /// Records the expiry of requests that lapsed (their state already reads `expired`; this
    /// writes the event, its audit entry and `consent.changed`). Returns how many.
    pub async fn expire_lapsed(&self) -> Result<usize, ConsentError> {
        let now = self.now();
        let lapsed = self.inner.store.lapsed_opt_ins(now, SWEEP_BATCH).await?;
        let mut expired = 0;
        for record in lapsed {
            let plan = Planned {
                purpose: record.purpose.clone(),
                channel: record.channel,
                transition: Transition::Expire,
                method: Method::System,
                origin: Origin::System,
                notice_version: None,
                integration: None,
                captured_at: record.standing.expires_at.unwrap_or(now),
                evidence: Map::new(),
            };
            match self
                .commit(&record.subject_id, vec![plan], &Initiator::system(), |_| {
                    Ok(Vec::new())
                })
                .await
            {
                Ok(committed) => expired += committed.changes.len(),
                // An erased subject's key is gone; its records go with the erasure.
                Err(ConsentError::Keys(e)) => {
                    tracing::warn!(subject_id = %record.subject_id, error = %e, "a lapsed opt-in could not be expired");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_in_a_sentence_whatever_the_case() {
        assert_eq!(
            code_candidates("Please subscribe me: k7pq2xma"),
            vec!["K7PQ2XMA"]
        );
        assert_eq!(code_candidates("K7PQ2XMA"), vec!["K7PQ2XMA"]);
        // Words of other lengths or with ambiguous letters are not codes.
        assert!(code_candidates("ABCDEFG").is_empty());
        assert!(code_candidates("K7PQ2XM0").is_empty());
        assert!(code_candidates("hello there").is_empty());
        assert_eq!(code_hash("k7pq2xma"), code_hash("K7PQ2XMA"));
        assert_ne!(code_hash("K7PQ2XMA"), code_hash("K7PQ2XMB"));
    }
}
