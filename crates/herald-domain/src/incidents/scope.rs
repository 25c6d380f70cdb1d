//! Who an incident affected, from the audit trail (GDPR Art. 33(3)(a): "the categories and
//! approximate number of data subjects concerned"; HIPAA §164.404: every individual whose
//! unsecured PHI was breached). Given a leaked credential, a compromised integration or a
//! vulnerable route and a time window, every entry that credential, integration or route caused
//! names the subjects it read, exported, changed or sent to — issue 7 made reads name their
//! targets, and every entry a request causes names its route. Pure classification here; the
//! scan and the stored result in [`super::Incidents::scope`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::ids::{ApiKeyId, IntegrationId, MessageId, OAuthClientId, SubjectId};

/// What a scope is computed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Selector {
    /// One API key.
    ApiKey(ApiKeyId),
    /// One OAuth client, every token it was issued.
    OAuthClient(OAuthClientId),
    /// Every credential of one integration.
    Integration(IntegrationId),
    /// Every authenticated request on one route template (`/v1/subjects/{id}`), any caller.
    Route(String),
}

impl Selector {
    /// A credential id: an API key (`key_…`) or an OAuth client (`ocl_…`).
    pub fn credential(id: &str) -> Option<Self> {
        if let Ok(key) = ApiKeyId::parse(id) {
            return Some(Self::ApiKey(key));
        }
        OAuthClientId::parse(id).ok().map(Self::OAuthClient)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApiKey(_) | Self::OAuthClient(_) => "credential",
            Self::Integration(_) => "integration",
            Self::Route(_) => "route",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Self::ApiKey(id) => id.as_str(),
            Self::OAuthClient(id) => id.as_str(),
            Self::Integration(id) => id.as_str(),
            Self::Route(route) => route,
        }
    }
}

/// How an entry touched a subject. Ordered as stored (`changed,exported,read,sent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Touch {
    Changed,
    Exported,
    Read,
    Sent,
}

impl Touch {
    pub const ALL: [Touch; 4] = [Touch::Changed, Touch::Exported, Touch::Read, Touch::Sent];

    pub fn as_str(self) -> &'static str {
        match self {
            Touch::Changed => "changed",
            Touch::Exported => "exported",
            Touch::Read => "read",
            Touch::Sent => "sent",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Touch`]es.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Touches(u8);

impl Touches {
    pub fn insert(&mut self, touch: Touch) {
        self.0 |= touch.bit();
    }

    pub fn union(self, other: Touches) -> Touches {
        Touches(self.0 | other.0)
    }

    pub fn contains(self, touch: Touch) -> bool {
        self.0 & touch.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Touch> {
        Touch::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    /// The stored form: sorted codes, comma-separated.
    pub fn encode(self) -> String {
        self.iter().map(Touch::as_str).collect::<Vec<_>>().join(",")
    }

    /// Unknown codes are an error: a stored row Herald did not write.
    pub fn decode(text: &str) -> Option<Touches> {
        let mut out = Touches::default();
        for code in text.split(',').filter(|c| !c.is_empty()) {
            out.insert(Touch::parse(code)?);
        }
        Some(out)
    }
}

/// What one audit entry says about whom, as far as a scope is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    Subject(SubjectId, Touch),
    /// A message: its subject is looked up (reads of a message by id name only the message).
    Message(MessageId, Touch),
}

#[derive(Deserialize)]
struct EntryActor<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    integration_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    key_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct EntryTarget<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct EntryDetails<'a> {
    #[serde(borrow, default)]
    subject_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    route: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<bool>,
    #[serde(default)]
    found: Option<bool>,
}

/// The parts of an entry a scope reads; everything else is ignored (entries of every
/// version parse: unknown fields are not an error here).
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    actor: EntryActor<'a>,
    #[serde(borrow)]
    outcome: Cow<'a, str>,
    #[serde(borrow, default)]
    target: Option<EntryTarget<'a>>,
    #[serde(borrow, default)]
    details: Option<EntryDetails<'a>>,
}

fn caused_by(entry: &Entry<'_>, selector: &Selector) -> bool {
    let actor = &entry.actor;
    let is = |field: &Option<Cow<'_, str>>, value: &str| field.as_deref() == Some(value);
    match selector {
        Selector::ApiKey(id) => actor.kind == "integration" && is(&actor.key_id, id.as_str()),
        Selector::OAuthClient(id) => {
            actor.kind == "oauth_client" && is(&actor.client_id, id.as_str())
        }
        Selector::Integration(id) => {
            matches!(&*actor.kind, "integration" | "oauth_client")
                && is(&actor.integration_id, id.as_str())
        }
        Selector::Route(route) => {
            matches!(&*actor.kind, "integration" | "oauth_client")
                && entry.details.as_ref().is_some_and(|d| is(&d.route, route))
        }
    }
}

fn touch_of(action: &str, details: &EntryDetails<'_>) -> Touch {
    match action {
        "subject.exported" => Touch::Exported,
        "message.accepted" => Touch::Sent,
        // A read names what it read; finding a number already registered tells the caller
        // the person is there, which is a read too.
        "api.request" | "subject.looked_up" => Touch::Read,
        "subject.registered" if details.created == Some(false) => Touch::Read,
        _ => Touch::Changed,
    }
}

/// A sealed entry that does not parse as an audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an audit entry does not parse")]
pub struct UnreadableEntry;

/// What `body` (a sealed entry's canonical text) says the selector did to whom. Refused,
/// failed and denied requests touched nothing: only successful entries count. A body that
/// does not parse is reported as `Err` (the chain verifier is the judge of such entries; the
/// scan stops rather than under-counting).
pub fn touched(body: &str, selector: &Selector) -> Result<Vec<Touched>, UnreadableEntry> {
    let entry: Entry<'_> = serde_json::from_str(body).map_err(|_| UnreadableEntry)?;
    if entry.outcome != "success" || !caused_by(&entry, selector) {
        return Ok(Vec::new());
    }
    let details = entry.details.unwrap_or_default();
    if entry.action == "subject.looked_up" && details.found == Some(false) {
        return Ok(Vec::new());
    }
    let touch = touch_of(&entry.action, &details);
    let mut out = Vec::new();
    if let Some(subject) = details
        .subject_id
        .as_deref()
        .and_then(|s| SubjectId::parse(s).ok())
    {
        out.push(Touched::Subject(subject, touch));
    }
    if let Some(target) = &entry.target
        && let Some(id) = target.id.as_deref()
    {
        match &*target.kind {
            "subject" => {
                if let Ok(subject) = SubjectId::parse(id)
                    && !out.contains(&Touched::Subject(subject.clone(), touch))
                {
                    out.push(Touched::Subject(subject, touch));
                }
            }
            // The message itself when read; an accepted message already named its subject.
            "message" if out.is_empty() => {
                if let Ok(message) = MessageId::parse(id) {
                    out.push(Touched::Message(message, touch));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One subject's part in a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    pub touches: Touches,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

impl Contact {
    pub fn merge(self, other: Contact) -> Contact {
        Contact {
            touches: self.touches.union(other.touches),
            first_at: self.first_at.min(other.first_at),
            last_at: self.last_at.max(other.last_at),
        }
    }
}

/// Collects the subjects a scan finds.
#[derive(Debug, Default)]
pub struct Tally {
    pub subjects: BTreeMap<SubjectId, Contact>,
    pub entries: u64,
}

impl Tally {
    pub fn add(&mut self, subject: SubjectId, touch: Touch, at: Timestamp) {
        let mut touches = Touches::default();
        touches.insert(touch);
        let contact = Contact {
            touches,
            first_at: at,
            last_at: at,
        };
        self.subjects
            .entry(subject)
            .and_modify(|c| *c = c.merge(contact))
            .or_insert(contact);
    }

    /// Subjects per kind of contact (one subject counts once per kind it had).
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> =
            Touch::ALL.into_iter().map(|t| (t.as_str(), 0)).collect();
        for contact in self.subjects.values() {
            for touch in contact.touches.iter() {
                *out.entry(touch.as_str()).or_default() += 1;
            }
        }
        out
    }
}

/// A computed scope as the incident keeps it: what was asked, when, and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRecord {
    pub by: String,
    pub value: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub computed_at: Timestamp,
    pub entries_scanned: u64,
    pub subjects: u64,
    pub by_kind: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::audit::{
        Action, Actor, AuditEvent, AuditRecord, Details, Initiator, Outcome, RequestId, Target,
    };

    fn at() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn key_actor(integration: &IntegrationId, key: &ApiKeyId) -> Actor {
        Actor::Integration {
            integration_id: integration.clone(),
            key_id: key.clone(),
        }
    }

    fn body(event: &AuditEvent) -> String {
        AuditRecord::new(event, at()).body
    }

    #[test]
    fn entries_name_whom_a_credential_touched_and_how() {
        let integration = IntegrationId::generate().unwrap();
        let key = ApiKeyId::generate().unwrap();
        let other_key = ApiKeyId::generate().unwrap();
        let subject = SubjectId::generate().unwrap();
        let message = MessageId::generate().unwrap();
        let by_key = Initiator::new(key_actor(&integration, &key), None).on_route("/v1/messages");
        let selector = Selector::ApiKey(key);

        let accepted = AuditEvent::new(&by_key, Action::MessageAccepted, Outcome::Success)
            .target(Target::Message(message.clone()))
            .details(Details::new().with("subject_id", &subject));
        assert_eq!(
            touched(&body(&accepted), &selector),
            Ok(vec![Touched::Subject(subject.clone(), Touch::Sent)])
        );
        let read = AuditEvent::new(&by_key, Action::ApiRequest, Outcome::Success)
            .target(Target::Message(message.clone()));
        assert_eq!(
            touched(&body(&read), &selector),
            Ok(vec![Touched::Message(message, Touch::Read)])
        );
        let exported = AuditEvent::new(&by_key, Action::SubjectExported, Outcome::Success)
            .target(Target::Subject(subject.clone()));
        assert_eq!(
            touched(&body(&exported), &selector),
            Ok(vec![Touched::Subject(subject.clone(), Touch::Exported)])
        );
        let restricted = AuditEvent::new(&by_key, Action::SubjectRestricted, Outcome::Success)
            .target(Target::Subject(subject.clone()));
        assert_eq!(
            touched(&body(&restricted), &selector),
            Ok(vec![Touched::Subject(subject.clone(), Touch::Changed)])
        );
        let found = AuditEvent::new(&by_key, Action::SubjectRegistered, Outcome::Success)
            .target(Target::Subject(subject.clone()))
            .details(Details::new().with("created", false));
        assert_eq!(
            touched(&body(&found), &selector),
            Ok(vec![Touched::Subject(subject.clone(), Touch::Read)])
        );
        // A denied or failed request touched nothing; another key's entries are not in scope.
        let denied = AuditEvent::new(&by_key, Action::ApiRequest, Outcome::Denied)
            .target(Target::Subject(subject.clone()));
        assert_eq!(touched(&body(&denied), &selector), Ok(vec![]));
        let other = Initiator::new(key_actor(&integration, &other_key), None);
        let elsewhere = AuditEvent::new(&other, Action::SubjectExported, Outcome::Success)
            .target(Target::Subject(subject.clone()));
        assert_eq!(touched(&body(&elsewhere), &selector), Ok(vec![]));
        // …but the integration's scope covers both keys.
        let whole = Selector::Integration(integration);
        assert_eq!(touched(&body(&elsewhere), &whole).unwrap().len(), 1);
        assert_eq!(touched(&body(&accepted), &whole).unwrap().len(), 1);
        // The route scope: the entries a request on the route caused, whoever the caller.
        let route = Selector::Route("/v1/messages".into());
        assert_eq!(touched(&body(&accepted), &route).unwrap().len(), 1);
        assert_eq!(touched(&body(&elsewhere), &route), Ok(vec![]));
        // Herald's own and the subject's actions are nobody's leak.
        let system = AuditEvent::new(
            &Initiator::system(),
            Action::SubjectErased,
            Outcome::Success,
        )
        .target(Target::Subject(subject));
        assert_eq!(touched(&body(&system), &whole), Ok(vec![]));
        assert!(touched("not json", &whole).is_err());
    }

    #[test]
    fn oauth_clients_are_matched_by_client_whatever_the_token() {
        let integration = IntegrationId::generate().unwrap();
        let client = OAuthClientId::generate().unwrap();
        let subject = SubjectId::generate().unwrap();
        let initiator = Initiator::new(
            Actor::OAuthClient {
                integration_id: integration,
                client_id: client.clone(),
                token_id: crate::ids::AccessTokenId::generate().unwrap(),
            },
            RequestId::parse("req_0123456789abcdef"),
        );
        let event = AuditEvent::new(&initiator, Action::ApiRequest, Outcome::Success)
            .target(Target::Subject(subject.clone()));
        let selector = Selector::credential(client.as_str()).unwrap();
        assert_eq!(selector, Selector::OAuthClient(client));
        assert_eq!(
            touched(&body(&event), &selector),
            Ok(vec![Touched::Subject(subject, Touch::Read)])
        );
        assert!(Selector::credential("sub_nope").is_none());
    }

    proptest! {
        #[test]
        fn touches_round_trip_through_their_stored_form(bits in 0u8..16) {
            let mut touches = Touches::default();
            for touch in Touch::ALL {
                if bits & touch.bit() != 0 {
                    touches.insert(touch);
                }
            }
            prop_assert_eq!(Touches::decode(&touches.encode()), Some(touches));
        }

        #[test]
        fn merging_contacts_is_a_union_over_the_widest_window(
            a in 0i64..1_000_000, b in 0i64..1_000_000, x in 0u8..16, y in 0u8..16,
        ) {
            let t = |s| at() + chrono::TimeDelta::seconds(s);
            let one = Contact { touches: Touches(x), first_at: t(a.min(b)), last_at: t(a.max(b)) };
            let two = Contact { touches: Touches(y), first_at: t(b), last_at: t(b) };
            let merged = one.merge(two);
            prop_assert_eq!(merged, two.merge(one));
            prop_assert_eq!(merged.touches, Touches(x | y));
            prop_assert_eq!(merged.first_at, t(a.min(b)));
            prop_assert_eq!(merged.last_at, t(a.max(b)));
        }
    }
}
