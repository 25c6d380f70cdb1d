//! What a subject's own messages and the provider's preference reports do to their consents:
//! `STOP` and its equivalents withdraw the opt-out purposes at once, `START` re-grants where a
//! purpose allows it, a confirmation word (or button) confirms a pending double opt-in, and an
//! opt-in code grants its purpose. The changes are prepared here and written in the same
//! transaction as the message that caused them, only if that message is new (a redelivered
//! callback changes nothing twice).

use serde_json::{Map, Value};

use super::keywords::{Keyword, normalize};
use super::ledger::ConsentChange;
use super::model::{ConsentState, Method, Transition};
use super::opt_in::{code_candidates, code_hash};
use super::service::{ConsentError, Consents, Planned};
use crate::audit::Initiator;
use crate::clock::Timestamp;
use crate::consent::StoredConsent;
use crate::ids::MessageId;
use crate::messages::catalog::CONSENT_NOTICE_PURPOSE;
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

impl Consents {
    /// The purposes an opt-out withdraws.
    fn opt_out_purposes(&self) -> Vec<String> {
        match &self.settings().opt_out_purposes {
            Some(list) => list.clone(),
            None => self
                .inner
                .catalog
                .purposes()
                .filter(|p| p.marketing && !p.internal)
                .map(|p| p.name.clone())
                .collect(),
        }
    }

    fn plans(
        &self,
        purposes: impl IntoIterator<Item = String>,
        transition: Transition,
        method: Method,
        at: Timestamp,
        evidence: &Map<String, Value>,
    ) -> Vec<Planned> {
        purposes
            .into_iter()
            .map(|purpose| Planned {
                purpose,
                channel: Channel::Whatsapp,
                transition,
                method,
                notice_version: None,
                integration: None,
                captured_at: at,
                evidence: evidence.clone(),
            })
            .collect()
    }

    /// The changes one inbound message makes (none for most messages). `earlier`: changes
    /// already prepared for the same callback, not yet written.
    pub async fn on_inbound(
        &self,
        subject: &SubjectRecord,
        inbound_id: &MessageId,
        content: &InboundContent,
        at: Timestamp,
        earlier: &[ConsentChange],
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
        let plans = match intent {
            Some(Keyword::Stop) => {
                evidence.insert("keyword".into(), "stop".into());
                reply = self.settings().opt_out_reply.clone();
                self.plans(
                    self.opt_out_purposes(),
                    Transition::Withdraw,
                    Method::InboundKeyword,
                    at,
                    &evidence,
                )
            }
            Some(Keyword::Start) => {
                evidence.insert("keyword".into(), "start".into());
                reply = self.settings().opt_in_reply.clone();
                let allowed: Vec<String> = on_channel(ConsentState::Withdrawn)
                    .filter(|c| {
                        self.inner
                            .catalog
                            .public_purpose(&c.purpose)
                            .is_some_and(|p| p.reopt_in_by_keyword)
                    })
                    .map(|c| c.purpose.clone())
                    .collect();
                self.plans(
                    allowed,
                    Transition::Grant,
                    Method::InboundKeyword,
                    at,
                    &evidence,
                )
            }
            Some(Keyword::Confirm) => {
                reply = self.settings().opt_in_reply.clone();
                let pending: Vec<&StoredConsent> = on_channel(ConsentState::Pending).collect();
                pending
                    .into_iter()
                    .map(|c| {
                        let mut evidence = evidence.clone();
                        evidence.insert("confirms".into(), c.event_id.as_str().into());
                        Planned {
                            purpose: c.purpose.clone(),
                            channel: c.channel,
                            transition: Transition::Grant,
                            method: Method::DoubleOptIn,
                            notice_version: None,
                            integration: None,
                            captured_at: at,
                            evidence,
                        }
                    })
                    .collect()
            }
            None => self.code_plans(content, at, &evidence).await?,
        };
        if !plans.is_empty() && plans.iter().all(|p| p.method == Method::DoubleOptIn) {
            reply = self.settings().opt_in_reply.clone();
        }
        let key = self.inner.keys.subject_key(&subject.id).await?;
        let mut plans = plans;
        // The notice a confirmation agrees to is the one its request named.
        for plan in &mut plans {
            if plan.notice_version.is_none()
                && let Some(confirms) = plan.evidence.get("confirms").and_then(Value::as_str)
            {
                plan.notice_version = self.requested_notice(&subject.id, confirms).await?;
            }
        }
        let changes = self.prepare(&key, &subject.id, &current, &plans, &Initiator::system())?;
        let mut replies = Vec::new();
        if !changes.is_empty()
            && let Some(text) = reply
        {
            let integration = self.system_integration().await?;
            replies.push(self.internal_message(
                &key,
                &subject.id,
                &integration,
                CONSENT_NOTICE_PURPOSE,
                Content::Text { body: text },
            )?);
        }
        Ok(InboundConsent { changes, replies })
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

    /// An opt-in code anywhere in a text message grants its purpose.
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
                    notice_version: Some(code.notice_version),
                    integration: Some(code.integration_id),
                    captured_at: at,
                    evidence,
                }
            })
            .collect())
    }

    /// The changes a provider preference makes (`user_preferences`): a stop withdraws the
    /// opt-out purposes; a resume re-grants those that allow re-opt-in without a new consent.
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
        let plans = match preference {
            Preference::StopMarketing => {
                evidence.insert("preference".into(), "stop".into());
                self.plans(
                    self.opt_out_purposes(),
                    Transition::Withdraw,
                    Method::ProviderPreference,
                    at,
                    &evidence,
                )
            }
            Preference::ResumeMarketing => {
                evidence.insert("preference".into(), "resume".into());
                let allowed: Vec<String> = current
                    .iter()
                    .filter(|c| {
                        c.standing.at(now) == ConsentState::Withdrawn
                            && self
                                .inner
                                .catalog
                                .public_purpose(&c.purpose)
                                .is_some_and(|p| p.reopt_in_by_keyword)
                    })
                    .map(|c| c.purpose.clone())
                    .collect();
                self.plans(
                    allowed,
                    Transition::Grant,
                    Method::ProviderPreference,
                    at,
                    &evidence,
                )
            }
        };
        let key = self.inner.keys.subject_key(&subject.id).await?;
        self.prepare(&key, &subject.id, &current, &plans, &Initiator::system())
    }
}
