//! What a subject's own messages and the provider's preference reports do to their consents:
//! `STOP` and its equivalents withdraw the WhatsApp opt-in itself (and every record it covers)
//! at once, `START` reopens the channel and re-grants where a purpose allows it, a confirmation
//! word (or button) confirms exactly the pending double opt-in it answers, and an opt-in code
//! grants its purpose. Each is the subject's own word, timed by the provider's clock: only the
//! subject reopens what the subject closed, and an older word arriving late changes nothing. The changes are prepared here and written in the same
//! transaction as the message that caused them, only if that message is new (a redelivered
//! callback changes nothing twice).

use serde_json::{Map, Value};

use super::keywords::{Keyword, normalize};
use super::ledger::ConsentChange;
use super::model::{CHANNEL_OPT_IN, ConsentState, Method, Origin, Transition};
use super::opt_in::{Internal, code_candidates, code_hash};
use super::service::{ConsentError, Consents, Planned};
use crate::audit::Initiator;
use crate::clock::Timestamp;
use crate::consent::StoredConsent;
use crate::ids::{ConsentEventId, MessageId};
use crate::messages::reports::InboundContent;
use crate::messages::{Channel, Content, NewMessage};
use crate::store::SubjectRecord;

/// A preference the provider reports (WhatsApp `user_preferences`, category
/// `marketing_messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// The subject used WhatsApp's own control to stop this business's marketing.
    StopMarketing,
    /// …and to receive it again.
    ResumeMarketing,
}

/// What one inbound message changes, to be written with it.
#[derive(Debug, Default)]
pub struct InboundConsent {
    pub changes: Vec<ConsentChange>,
    /// Acknowledgements to send (inside the window the message just opened).
    pub replies: Vec<NewMessage>,
}

/// What the message asks for: a keyword, or a button whose payload is configured.
fn intent(consents: &Consents, content: &InboundContent) -> Option<Keyword> {
    let settings = consents.settings();
    let payload = content
        .details
        .get("button_payload")
        .or_else(|| content.details.get("reply_id"))
        .and_then(Value::as_str)
        .map(normalize);
    if let Some(payload) = payload {
        let matches = |list: &[String]| list.iter().any(|p| normalize(p) == payload);
        if matches(&settings.stop_payloads) {
            return Some(Keyword::Stop);
        }
        if matches(&settings.confirm_payloads) {
            return Some(Keyword::Confirm);
        }
    }
    match content.kind.as_str() {
        "text" | "button" | "interactive" => content
            .text
            .as_deref()
            .and_then(|t| settings.keywords.classify(t)),
        _ => None,
    }
}

/// The subject's records with earlier, not yet written changes of the same batch laid over
/// them (a callback may carry "STOP" and "START" from one person).
fn overlay(mut current: Vec<StoredConsent>, earlier: &[ConsentChange]) -> Vec<StoredConsent> {
    for change in earlier {
        let after = change.record_after();
        match current
            .iter_mut()
            .find(|c| c.purpose == change.purpose && c.channel == change.channel)
        {
            Some(c) => *c = after,
            None => current.push(after),
        }
    }
    current
}

/// The confirmation request a reply answers, as the provider's `context` names it: the
/// message replied to (Herald's id) and the consent event it was sent for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepliedTo {
    pub message_id: MessageId,
    pub purpose: String,
    pub consent_event_id: Option<ConsentEventId>,
}

impl Consents {
    /// A plan for the subject's own word on WhatsApp.
    fn subject_plan(
        purpose: String,
        transition: Transition,
        method: Method,
        at: Timestamp,
        evidence: &Map<String, Value>,
    ) -> Planned {
        Planned {
            purpose,
            channel: Channel::Whatsapp,
            transition,
            method,
            origin: Origin::Subject,
            notice_version: None,
            integration: None,
            captured_at: at,
            evidence: evidence.clone(),
        }
    }

    /// The channel opt-in granted again by the subject's own opt-in (START, a confirmation, a
    /// code), unless it already stands.
    fn reopen_channel(
        current: &[StoredConsent],
        now: Timestamp,
        method: Method,
        at: Timestamp,
        evidence: &Map<String, Value>,
    ) -> Option<Planned> {
        let granted = current.iter().any(|c| {
            c.purpose == CHANNEL_OPT_IN
                && c.channel == Channel::Whatsapp
                && c.standing.at(now) == ConsentState::Granted
        });
        (!granted).then(|| {
            Self::subject_plan(
                CHANNEL_OPT_IN.to_owned(),
                Transition::Grant,
                method,
                at,
                evidence,
            )
        })
    }

    /// The changes one inbound message makes (none for most messages). `earlier`: changes
    /// already prepared for the same callback, not yet written. `replied_to`: the message the
    /// customer answered (a button's or a quoted reply's `context`), if Herald sent it.
    pub async fn on_inbound(
        &self,
        subject: &SubjectRecord,
        inbound_id: &MessageId,
        content: &InboundContent,
        at: Timestamp,
        earlier: &[ConsentChange],
        replied_to: Option<&RepliedTo>,
    ) -> Result<InboundConsent, ConsentError> {
        let intent = intent(self, content);
        // Most messages are conversation: no keyword, no code — nothing to read or write.
        let has_code = content.kind == "text"
            && content
                .text
                .as_deref()
                .is_some_and(|t| !code_candidates(t).is_empty());
        if intent.is_none() && !has_code {
            return Ok(InboundConsent::default());
        }
        let mut evidence = Map::new();
        evidence.insert("inbound_message_id".into(), inbound_id.as_str().into());
        let now = self.now();
        let current = overlay(self.inner.store.consents(&subject.id).await?, earlier);
        let on_channel = |state: ConsentState| {
            current
                .iter()
                .filter(move |c| c.channel == Channel::Whatsapp && c.standing.at(now) == state)
        };
        let mut reply = None;
        let mut plans = Vec::new();
        match intent {
            Some(Keyword::Stop) => {
                // STOP stops: the channel opt-in itself, and every record the opt-out covers.
                evidence.insert("keyword".into(), "stop".into());
                reply = self.settings().opt_out_reply.clone();
                plans.push(Self::subject_plan(
                    CHANNEL_OPT_IN.to_owned(),
                    Transition::Withdraw,
                    Method::InboundKeyword,
                    at,
                    &evidence,
                ));
                let covered = current.iter().filter(|c| {
                    c.channel == Channel::Whatsapp
                        && c.purpose != CHANNEL_OPT_IN
                        && matches!(
                            c.standing.at(now),
                            ConsentState::Granted | ConsentState::Pending
                        )
                        && self
                            .inner
                            .catalog
                            .purpose(&c.purpose)
                            .is_none_or(crate::messages::Purpose::stopped_by_opt_out)
                });
                let mut purposes: Vec<String> =
                    covered.map(|record| record.purpose.clone()).collect();
                // Every marketing purpose, recorded or not: the subject objected to marketing
                // (Art. 21(3)), inside a conversation too.
                for purpose in self.inner.catalog.purposes() {
                    if purpose.marketing && !purpose.internal && !purposes.contains(&purpose.name) {
                        purposes.push(purpose.name.clone());
                    }
                }
                for purpose in purposes {
                    plans.push(Self::subject_plan(
                        purpose,
                        Transition::Withdraw,
                        Method::InboundKeyword,
                        at,
                        &evidence,
                    ));
                }
            }
            Some(Keyword::Start) => {
                evidence.insert("keyword".into(), "start".into());
                reply = self.settings().opt_in_reply.clone();
                plans.extend(Self::reopen_channel(
                    &current,
                    now,
                    Method::InboundKeyword,
                    at,
                    &evidence,
                ));
                let allowed: Vec<String> = on_channel(ConsentState::Withdrawn)
                    .filter(|c| {
                        self.inner
                            .catalog
                            .public_purpose(&c.purpose)
                            .is_some_and(|p| p.reopt_in_by_keyword)
                    })
                    .map(|c| c.purpose.clone())
                    .collect();
                for purpose in allowed {
                    plans.push(Self::subject_plan(
                        purpose,
                        Transition::Grant,
                        Method::InboundKeyword,
                        at,
                        &evidence,
                    ));
                }
            }
            Some(Keyword::Confirm) => {
                reply = self.settings().opt_in_reply.clone();
                // Exactly the request it answers: the one whose confirmation message it
                // replies to, or else the latest pending request on this number.
                let answered = replied_to
                    .and_then(|r| r.consent_event_id.as_ref())
                    .and_then(|request| self.pending_request(&current, now, request));
                let latest = || {
                    on_channel(ConsentState::Pending)
                        .filter(|c| c.purpose != CHANNEL_OPT_IN)
                        .max_by_key(|c| (c.standing.effective_at, c.updated_at))
                };
                if let Some(request) = answered.or_else(latest) {
                    let mut evidence = evidence.clone();
                    evidence.insert("confirms".into(), request.event_id.as_str().into());
                    if let Some(replied) = replied_to {
                        evidence.insert(
                            "replied_to_message_id".into(),
                            replied.message_id.as_str().into(),
                        );
                    }
                    plans.extend(Self::reopen_channel(
                        &current,
                        now,
                        Method::DoubleOptIn,
                        at,
                        &evidence,
                    ));
                    let mut plan = Self::subject_plan(
                        request.purpose.clone(),
                        Transition::Grant,
                        Method::DoubleOptIn,
                        at,
                        &evidence,
                    );
                    // The notice a confirmation agrees to is the one its request named.
                    plan.notice_version = self
                        .requested_notice(&subject.id, request.event_id.as_str())
                        .await?;
                    plans.push(plan);
                }
            }
            None => {
                let granted = self.code_plans(content, at, &evidence).await?;
                if !granted.is_empty() {
                    plans.extend(Self::reopen_channel(
                        &current,
                        now,
                        Method::DoubleOptIn,
                        at,
                        &evidence,
                    ));
                    plans.extend(granted);
                }
            }
        }
        if !plans.is_empty() && plans.iter().all(|p| p.method == Method::DoubleOptIn) {
            reply = self.settings().opt_in_reply.clone();
        }
        let key = self.inner.keys.subject_key(&subject.id).await?;
        let committed = self.prepare(&key, &subject.id, &current, &plans, &Initiator::system())?;
        let mut replies = Vec::new();
        if committed
            .changes
            .iter()
            .any(|c| c.effective && !c.reaffirmed)
            && let Some(text) = reply
        {
            let integration = self.system_integration().await?;
            replies.push(self.internal_message(
                &key,
                &subject.id,
                &integration,
                Internal::Acknowledgement,
                Content::Text { body: text },
            )?);
        }
        Ok(InboundConsent {
            changes: committed.changes,
            replies,
        })
    }

    /// The record still pending on the request event `request`, if any.
    fn pending_request<'a>(
        &self,
        current: &'a [StoredConsent],
        now: Timestamp,
        request: &ConsentEventId,
    ) -> Option<&'a StoredConsent> {
        current.iter().find(|c| {
            c.channel == Channel::Whatsapp
                && &c.event_id == request
                && c.standing.at(now) == ConsentState::Pending
        })
    }

    /// The notice version of the request event `event_id` (a pending double opt-in).
    async fn requested_notice(
        &self,
        subject: &crate::ids::SubjectId,
        event_id: &str,
    ) -> Result<Option<String>, ConsentError> {
        Ok(self
            .inner
            .store
            .consent_history(subject)
            .await?
            .into_iter()
            .find(|e| e.id.as_str() == event_id)
            .and_then(|e| e.notice_version))
    }

    /// An opt-in code anywhere in a text message grants its purpose: the subject's own act,
    /// proving they hold the number.
    async fn code_plans(
        &self,
        content: &InboundContent,
        at: Timestamp,
        evidence: &Map<String, Value>,
    ) -> Result<Vec<Planned>, ConsentError> {
        let Some(text) = content.text.as_deref().filter(|_| content.kind == "text") else {
            return Ok(Vec::new());
        };
        let hashes: Vec<[u8; 32]> = code_candidates(text).iter().map(|c| code_hash(c)).collect();
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let codes = self.inner.store.opt_in_codes(&hashes, self.now()).await?;
        Ok(codes
            .into_iter()
            .filter(|code| self.inner.catalog.public_purpose(&code.purpose).is_some())
            .map(|code| {
                let mut evidence = evidence.clone();
                evidence.insert(
                    "opt_in_code_sha256".into(),
                    data_encoding::HEXLOWER.encode(&code.code_hash).into(),
                );
                Planned {
                    purpose: code.purpose,
                    channel: code.channel,
                    transition: Transition::Grant,
                    method: Method::DoubleOptIn,
                    origin: Origin::Subject,
                    notice_version: Some(code.notice_version),
                    integration: Some(code.integration_id),
                    captured_at: at,
                    evidence,
                }
            })
            .collect())
    }

    /// The changes a provider preference makes (`user_preferences`, the subject's own use of
    /// WhatsApp's marketing control): a stop withdraws every marketing purpose (so that only
    /// the subject reopens them); a resume re-grants those that allow re-opt-in without a new
    /// consent.
    pub async fn on_preference(
        &self,
        subject: &SubjectRecord,
        preference: Preference,
        at: Timestamp,
        earlier: &[ConsentChange],
    ) -> Result<Vec<ConsentChange>, ConsentError> {
        let now = self.now();
        let current = overlay(self.inner.store.consents(&subject.id).await?, earlier);
        let mut evidence = Map::new();
        let plans: Vec<Planned> = match preference {
            Preference::StopMarketing => {
                evidence.insert("preference".into(), "stop".into());
                self.inner
                    .catalog
                    .purposes()
                    .filter(|p| p.marketing && !p.internal)
                    .map(|p| {
                        Self::subject_plan(
                            p.name.clone(),
                            Transition::Withdraw,
                            Method::ProviderPreference,
                            at,
                            &evidence,
                        )
                    })
                    .collect()
            }
            Preference::ResumeMarketing => {
                evidence.insert("preference".into(), "resume".into());
                current
                    .iter()
                    .filter(|c| {
                        c.standing.at(now) == ConsentState::Withdrawn
                            && self
                                .inner
                                .catalog
                                .public_purpose(&c.purpose)
                                .is_some_and(|p| p.marketing && p.reopt_in_by_keyword)
                    })
                    .map(|c| {
                        Self::subject_plan(
                            c.purpose.clone(),
                            Transition::Grant,
                            Method::ProviderPreference,
                            at,
                            &evidence,
                        )
                    })
                    .collect()
            }
        };
        let key = self.inner.keys.subject_key(&subject.id).await?;
        Ok(self
            .prepare(&key, &subject.id, &current, &plans, &Initiator::system())?
            .changes)
    }
}
