//! Scopes: what a credential may do. A key holds only the scopes it was issued with; `admin`
//! includes every other scope, and no other scope implies another (least privilege: reading a
//! subject does not export it, erasing does not place holds, managing keys reads no personal
//! data).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    MessagesSend,
    MessagesRead,
    ConsentsRead,
    ConsentsWrite,
    SubjectsRead,
    SubjectsWrite,
    SubjectsErase,
    /// The decrypted export of everything held about a subject (GDPR Art. 15/20).
    SubjectsExport,
    /// Placing and releasing legal holds: the hold exists to stop erasure, so whoever may erase
    /// must not be able to lift it.
    SubjectsHold,
    AuditRead,
    /// Integrations, their keys and webhook endpoints: an operator's provisioning, no personal
    /// data.
    IntegrationsManage,
    /// Asking whether an OAuth access token is active (RFC 7662), for resource servers: learns
    /// a token's client, scopes and lifetime, nothing else.
    OAuthIntrospect,
    /// The register of backups (times, sizes, manifests: no personal data); the backups
    /// themselves never pass through the API.
    BackupsRead,
    /// The incident register: read (summaries, assessments, clocks).
    IncidentsRead,
    /// The incident register: open incidents and record assessments and notifications.
    IncidentsWrite,
    /// The provider register: read (contracts, regions, reviews; no personal data).
    VendorsRead,
    /// The provider register: add, review, approve and suspend vendors.
    VendorsWrite,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 18] = [
        Scope::MessagesSend,
        Scope::MessagesRead,
        Scope::ConsentsRead,
        Scope::ConsentsWrite,
        Scope::SubjectsRead,
        Scope::SubjectsWrite,
        Scope::SubjectsErase,
        Scope::SubjectsExport,
        Scope::SubjectsHold,
        Scope::AuditRead,
        Scope::IntegrationsManage,
        Scope::OAuthIntrospect,
        Scope::BackupsRead,
        Scope::IncidentsRead,
        Scope::IncidentsWrite,
        Scope::VendorsRead,
        Scope::VendorsWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::MessagesSend => "messages:send",
            Scope::MessagesRead => "messages:read",
            Scope::ConsentsRead => "consents:read",
            Scope::ConsentsWrite => "consents:write",
            Scope::SubjectsRead => "subjects:read",
            Scope::SubjectsWrite => "subjects:write",
            Scope::SubjectsErase => "subjects:erase",
            Scope::SubjectsExport => "subjects:export",
            Scope::SubjectsHold => "subjects:hold",
            Scope::AuditRead => "audit:read",
            Scope::IntegrationsManage => "integrations:manage",
            Scope::OAuthIntrospect => "oauth:introspect",
            Scope::BackupsRead => "backups:read",
            Scope::IncidentsRead => "incidents:read",
            Scope::IncidentsWrite => "incidents:write",
            Scope::VendorsRead => "vendors:read",
            Scope::VendorsWrite => "vendors:write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope")]
pub struct UnknownScope;

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or(UnknownScope)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().collect())
    }

    /// Whether these scopes permit `scope` (`admin` permits everything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.0.contains(&Scope::Admin) || self.0.contains(&scope)
    }

    /// Whether these scopes include `admin` (the bootstrap superuser: every scope, every
    /// integration's resources, every subject).
    pub fn is_admin(&self) -> bool {
        self.0.contains(&Scope::Admin)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// Space-separated, as stored (and as OAuth 2.0 writes scopes).
    pub fn to_storage(&self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn from_storage(s: &str) -> Result<Self, UnknownScope> {
        s.split_whitespace()
            .map(Scope::from_str)
            .collect::<Result<_, _>>()
            .map(Scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_through_its_name() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert_eq!("messages:sendx".parse::<Scope>(), Err(UnknownScope));
        assert_eq!("ADMIN".parse::<Scope>(), Err(UnknownScope));
    }

    #[test]
    fn admin_allows_everything_others_only_themselves() {
        let admin = Scopes::new([Scope::Admin]);
        assert!(Scope::ALL.into_iter().all(|s| admin.allows(s)));
        let send = Scopes::new([Scope::MessagesSend]);
        assert!(send.allows(Scope::MessagesSend));
        assert!(!send.allows(Scope::MessagesRead));
        assert!(!send.allows(Scope::Admin));
        assert!(!Scopes::default().allows(Scope::MessagesSend));
    }

    #[test]
    fn no_scope_but_admin_implies_another() {
        for held in Scope::ALL.into_iter().filter(|s| *s != Scope::Admin) {
            let scopes = Scopes::new([held]);
            for other in Scope::ALL.into_iter().filter(|s| *s != held) {
                assert!(!scopes.allows(other), "{held} must not allow {other}");
            }
            assert!(!scopes.is_admin());
        }
        // The separations the scopes exist for.
        let erase = Scopes::new([Scope::SubjectsErase]);
        assert!(!erase.allows(Scope::SubjectsHold));
        let read = Scopes::new([Scope::SubjectsRead]);
        assert!(!read.allows(Scope::SubjectsExport));
        assert!(Scopes::new([Scope::Admin]).is_admin());
    }

    #[test]
    fn storage_form_round_trips() {
        let scopes = Scopes::new([Scope::SubjectsRead, Scope::MessagesSend]);
        assert_eq!(scopes.to_storage(), "messages:send subjects:read");
        assert_eq!(Scopes::from_storage(&scopes.to_storage()).unwrap(), scopes);
        assert_eq!(Scopes::from_storage("").unwrap(), Scopes::default());
        assert!(Scopes::from_storage("admin bogus").is_err());
    }
}
