//! Who may see a subject. Subjects belong to the instance (ADR 0006), but an integration sees
//! only those it is *linked* to: it registered the subject, sent to it, recorded consent for
//! it or received its inbound message (ADR 0011). Everything else answers as if it did not
//! exist (GDPR Art. 5(1)(c) and 25, HIPAA minimum necessary §164.502(b)).
//!
//! Links are only ever added, so a link once seen stays true on every node: a bounded cache of
//! known links spares the look-up on the send path; a miss asks the store.

use crate::auth::{Principal, Scope};
use crate::clock::Timestamp;
use crate::ids::{IntegrationId, SubjectId};

/// How an integration came to know a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkReason {
    Registered,
    Messaged,
    Consent,
    Inbound,
    /// A look-up by number by a caller that may register subjects (it could have registered
    /// the number anyway, and now holds the id).
    Lookup,
    RightsRequest,
}

impl LinkReason {
    pub const ALL: [LinkReason; 6] = [
        LinkReason::Registered,
        LinkReason::Messaged,
        LinkReason::Consent,
        LinkReason::Inbound,
        LinkReason::Lookup,
        LinkReason::RightsRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkReason::Registered => "registered",
            LinkReason::Messaged => "messaged",
            LinkReason::Consent => "consent",
            LinkReason::Inbound => "inbound",
            LinkReason::Lookup => "lookup",
            LinkReason::RightsRequest => "rights_request",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One link, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectLink {
    pub subject_id: SubjectId,
    pub integration_id: IntegrationId,
    pub reason: LinkReason,
    pub at: Timestamp,
}

/// What a caller may do with subjects: see those it is linked to (or all of them), and
/// whether it may register (create or link) new ones.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The caller's integration (links are made for it); `None` for the operator's command
    /// line.
    pub integration: Option<&'a IntegrationId>,
    /// `admin` and the operator see every subject.
    pub every_subject: bool,
    /// `subjects:write`: registering a number (or sending to a new one) links the caller.
    pub may_register: bool,
}

impl<'a> Access<'a> {
    /// The local operator (the command line), who holds the database and the keys anyway.
    pub fn operator() -> Self {
        Self {
            integration: None,
            every_subject: true,
            may_register: true,
        }
    }

    pub fn of(principal: &'a Principal) -> Self {
        Self {
            integration: Some(&principal.integration_id),
            every_subject: principal.is_admin(),
            may_register: principal.may(Scope::SubjectsWrite),
        }
    }
}

/// Links known to exist (a positive cache: links are never removed).
pub(crate) struct KnownLinks(quick_cache::sync::Cache<(SubjectId, IntegrationId), ()>);

/// Links remembered at most (~100 bytes each).
const KNOWN_LINKS: usize = 65_536;

impl std::fmt::Debug for KnownLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownLinks")
            .field("len", &self.0.len())
            .finish()
    }
}

impl KnownLinks {
    pub(crate) fn new() -> Self {
        Self(quick_cache::sync::Cache::new(KNOWN_LINKS))
    }

    pub(crate) fn contains(&self, subject: &SubjectId, integration: &IntegrationId) -> bool {
        self.0
            .get(&(subject.clone(), integration.clone()))
            .is_some()
    }

    pub(crate) fn remember(&self, subject: &SubjectId, integration: &IntegrationId) {
        self.0.insert((subject.clone(), integration.clone()), ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scopes;
    use crate::ids::ApiKeyId;

    fn principal(scopes: &[Scope]) -> Principal {
        Principal {
            integration_id: IntegrationId::generate().unwrap(),
            credential: crate::auth::Credential::ApiKey(ApiKeyId::generate().unwrap()),
            scopes: Scopes::new(scopes.iter().copied()),
        }
    }

    #[test]
    fn access_follows_the_scopes() {
        let reader = principal(&[Scope::SubjectsRead]);
        let access = Access::of(&reader);
        assert!(!access.every_subject && !access.may_register);
        assert_eq!(access.integration, Some(&reader.integration_id));
        let writer = principal(&[Scope::SubjectsWrite]);
        assert!(Access::of(&writer).may_register);
        assert!(!Access::of(&writer).every_subject);
        let admin = principal(&[Scope::Admin]);
        assert!(Access::of(&admin).every_subject && Access::of(&admin).may_register);
        assert!(Access::operator().every_subject && Access::operator().integration.is_none());
    }

    #[test]
    fn link_reasons_round_trip() {
        for reason in LinkReason::ALL {
            assert_eq!(LinkReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(LinkReason::parse("friend"), None);
    }

    #[test]
    fn known_links_are_per_pair() {
        let links = KnownLinks::new();
        let (s, a, b) = (
            SubjectId::generate().unwrap(),
            IntegrationId::generate().unwrap(),
            IntegrationId::generate().unwrap(),
        );
        assert!(!links.contains(&s, &a));
        links.remember(&s, &a);
        assert!(links.contains(&s, &a));
        assert!(!links.contains(&s, &b));
    }
}
