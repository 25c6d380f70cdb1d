//! What the provider register knows about a vendor (GDPR Art. 28: a processor with sufficient
//! guarantees, bound by a contract; HIPAA §164.308(b), §164.502(e): a business associate with a
//! BAA), and the rule that decides whether a message may go through it.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A vendor's id: an operator-chosen slug (`meta_whatsapp_cloud`), 3–40 lowercase letters,
/// digits and `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VendorId(String);

impl VendorId {
    pub fn parse(text: &str) -> Option<Self> {
        let ok = (3..=40).contains(&text.len())
            && text.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        ok.then(|| Self(text.to_owned()))
    }

    /// One of Herald's own ids (`builtin.rs`; a test holds them to [`VendorId::parse`]).
    pub(crate) fn known(id: &'static str) -> Self {
        Self(id.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VendorId {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or("a vendor id: 3 to 40 of a-z, 0-9 and _, starting with a letter")
    }
}

impl From<VendorId> for String {
    fn from(id: VendorId) -> Self {
        id.0
    }
}

impl std::str::FromStr for VendorId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or("not a vendor id")
    }
}

impl std::fmt::Display for VendorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a vendor stands in the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VendorStatus {
    Unreviewed,
    Approved,
    Suspended,
}

impl VendorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VendorStatus::Unreviewed => "unreviewed",
            VendorStatus::Approved => "approved",
            VendorStatus::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Unreviewed, Self::Approved, Self::Suspended]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleKind {
    Processor,
    SubProcessor,
    IndependentController,
    /// Herald itself (the sandbox): no third party, no contract to hold.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub kind: RoleKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The data-processing agreement (GDPR Art. 28(3)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpa {
    pub signed_at: NaiveDate,
    pub version: String,
    /// SHA-256 of the signed document (hex), so the copy on file can be shown to be the one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where the signed document is kept (a document-management reference, not the text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// The business associate agreement (HIPAA §164.504(e)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baa {
    pub signed_at: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<NaiveDate>,
    /// The vendor's products the BAA covers (e.g. `whatsapp_cloud_api`).
    pub products: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certification {
    /// ISO/IEC 27001, SOC 2 Type II, …
    pub name: String,
    pub issuer: String,
    pub expires_at: NaiveDate,
    /// Where the certificate or report is on file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// How personal data may leave the EEA through the vendor (GDPR Chapter V).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMechanism {
    /// No transfer outside the EEA.
    NotApplicable,
    /// An adequacy decision (Art. 45), e.g. the EU-US Data Privacy Framework.
    Adequacy,
    /// Standard contractual clauses (Art. 46(2)(c)).
    Sccs,
    /// Binding corporate rules (Art. 47).
    Bcrs,
    /// None recorded.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageMode {
    /// e.g. `default` (Meta: message content at rest up to 30 days), `local_storage` (at rest
    /// only in a chosen region), `no_storage` (kept up to 1 hour in transit), `none`.
    pub kind: String,
    /// How long content stays with the vendor (`30 days`, `1 hour`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionSupport {
    /// The vendor offers an API to delete a person's data.
    Api,
    /// Deletion on request under the contract.
    Contractual,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    pub support: DeletionSupport,
    /// What it covers (and what it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<String>,
}

/// Everything the register records about a vendor (no personal data of data subjects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorFacts {
    pub legal_name: String,
    /// The service used (`WhatsApp Business Platform, Cloud API`).
    pub service: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpa: Option<Dpa>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baa: Option<Baa>,
    #[serde(default)]
    pub certifications: Vec<Certification>,
    /// Where the vendor processes data (ISO 3166 codes or `eu`, `us`, `global` …).
    #[serde(default)]
    pub processing_regions: Vec<String>,
    /// Where it stores data at rest.
    #[serde(default)]
    pub storage_regions: Vec<String>,
    pub transfer_mechanism: TransferMechanism,
    pub storage_mode: StorageMode,
    pub deletion: Deletion,
    #[serde(default)]
    pub sub_processors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_contact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_review_at: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_review_due: Option<NaiveDate>,
    /// Where the facts come from (documentation addresses, contract references).
    #[serde(default)]
    pub sources: Vec<String>,
}

/// Why a vendor may not carry messages now: a stable code for refusals and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotApproved {
    Unreviewed,
    Suspended,
    DpaMissing,
    ReviewOverdue,
    CertificationExpired,
}

impl NotApproved {
    pub fn code(self) -> &'static str {
        match self {
            NotApproved::Unreviewed => "unreviewed",
            NotApproved::Suspended => "suspended",
            NotApproved::DpaMissing => "dpa_missing",
            NotApproved::ReviewOverdue => "review_overdue",
            NotApproved::CertificationExpired => "certification_expired",
        }
    }
}

/// Whether a vendor with these facts and this status may carry a message `today`. Fails
/// closed: an approved vendor still needs its contract, a review date in the future and every
/// certification it was approved on still valid (a third party; Herald's own sandbox needs no
/// contract).
pub fn standing(
    status: VendorStatus,
    facts: &VendorFacts,
    today: NaiveDate,
) -> Result<(), NotApproved> {
    match status {
        VendorStatus::Unreviewed => return Err(NotApproved::Unreviewed),
        VendorStatus::Suspended => return Err(NotApproved::Suspended),
        VendorStatus::Approved => {}
    }
    if facts.role.kind == RoleKind::Internal {
        return Ok(());
    }
    if facts.dpa.is_none() {
        return Err(NotApproved::DpaMissing);
    }
    if facts.next_review_due.is_none_or(|due| due < today) {
        return Err(NotApproved::ReviewOverdue);
    }
    if facts.certifications.iter().any(|c| c.expires_at < today) {
        return Err(NotApproved::CertificationExpired);
    }
    Ok(())
}

const MAX_TEXT: usize = 500;
const MAX_LIST: usize = 50;

/// The register's limits on what it stores: `Err` names the field and the rule.
pub fn validate(facts: &VendorFacts) -> Result<(), (&'static str, &'static str)> {
    let text = |value: &str| !value.trim().is_empty() && value.chars().count() <= MAX_TEXT;
    let rule = "1 to 500 characters";
    if !text(&facts.legal_name) {
        return Err(("legal_name", rule));
    }
    if !text(&facts.service) {
        return Err(("service", rule));
    }
    if !text(&facts.storage_mode.kind) {
        return Err(("storage_mode.kind", rule));
    }
    for (field, value) in [
        ("role.note", facts.role.note.as_deref()),
        (
            "storage_mode.retention",
            facts.storage_mode.retention.as_deref(),
        ),
        ("storage_mode.note", facts.storage_mode.note.as_deref()),
        ("deletion.covers", facts.deletion.covers.as_deref()),
        ("security_contact", facts.security_contact.as_deref()),
    ] {
        if value.is_some_and(|v| !text(v)) {
            return Err((field, rule));
        }
    }
    for (field, list) in [
        ("processing_regions", &facts.processing_regions),
        ("storage_regions", &facts.storage_regions),
        ("sub_processors", &facts.sub_processors),
        ("sources", &facts.sources),
    ] {
        if list.len() > MAX_LIST || !list.iter().all(|v| text(v)) {
            return Err((field, "at most 50 entries of 1 to 500 characters"));
        }
    }
    if facts.certifications.len() > MAX_LIST
        || !facts
            .certifications
            .iter()
            .all(|c| text(&c.name) && text(&c.issuer) && c.evidence.as_deref().is_none_or(text))
    {
        return Err((
            "certifications",
            "at most 50, each with a name and an issuer",
        ));
    }
    if let Some(dpa) = &facts.dpa {
        if !text(&dpa.version) || dpa.location.as_deref().is_some_and(|l| !text(l)) {
            return Err(("dpa", "a version (and location) of 1 to 500 characters"));
        }
        if dpa
            .sha256
            .as_deref()
            .is_some_and(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(("dpa.sha256", "64 hexadecimal characters"));
        }
    }
    if let Some(baa) = &facts.baa
        && (baa.products.is_empty()
            || baa.products.len() > MAX_LIST
            || !baa.products.iter().all(|p| text(p)))
    {
        return Err(("baa.products", "the products the BAA covers (1 to 50)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn reviewed() -> VendorFacts {
        VendorFacts {
            legal_name: "Example Messaging Ltd".into(),
            service: "SMS".into(),
            role: Role {
                kind: RoleKind::Processor,
                note: None,
            },
            dpa: Some(Dpa {
                signed_at: date("2026-01-10"),
                version: "2026-01".into(),
                sha256: None,
                location: None,
            }),
            baa: None,
            certifications: vec![Certification {
                name: "ISO/IEC 27001".into(),
                issuer: "Cert Body".into(),
                expires_at: date("2028-06-30"),
                evidence: None,
            }],
            processing_regions: vec!["eu".into()],
            storage_regions: vec!["de".into()],
            transfer_mechanism: TransferMechanism::NotApplicable,
            storage_mode: StorageMode {
                kind: "none".into(),
                retention: None,
                note: None,
            },
            deletion: Deletion {
                support: DeletionSupport::Contractual,
                covers: None,
            },
            sub_processors: vec![],
            security_contact: None,
            last_review_at: Some(date("2026-11-01")),
            next_review_due: Some(date("2027-11-01")),
            sources: vec![],
        }
    }

    #[test]
    fn only_an_approved_reviewed_contracted_certified_vendor_stands() {
        let today = date("2026-12-04");
        let facts = reviewed();
        assert_eq!(standing(VendorStatus::Approved, &facts, today), Ok(()));
        assert_eq!(
            standing(VendorStatus::Unreviewed, &facts, today),
            Err(NotApproved::Unreviewed)
        );
        assert_eq!(
            standing(VendorStatus::Suspended, &facts, today),
            Err(NotApproved::Suspended)
        );
        let no_dpa = VendorFacts {
            dpa: None,
            ..reviewed()
        };
        assert_eq!(
            standing(VendorStatus::Approved, &no_dpa, today),
            Err(NotApproved::DpaMissing)
        );
        // The review is due on its day, overdue the day after; never reviewed is overdue.
        assert_eq!(
            standing(VendorStatus::Approved, &facts, date("2027-11-01")),
            Ok(())
        );
        assert_eq!(
            standing(VendorStatus::Approved, &facts, date("2027-11-02")),
            Err(NotApproved::ReviewOverdue)
        );
        let never = VendorFacts {
            next_review_due: None,
            ..reviewed()
        };
        assert_eq!(
            standing(VendorStatus::Approved, &never, today),
            Err(NotApproved::ReviewOverdue)
        );
        let mut lapsing = reviewed();
        lapsing.certifications[0].expires_at = date("2027-01-31");
        assert_eq!(
            standing(VendorStatus::Approved, &lapsing, date("2027-01-31")),
            Ok(())
        );
        assert_eq!(
            standing(VendorStatus::Approved, &lapsing, date("2027-02-01")),
            Err(NotApproved::CertificationExpired)
        );
        // Herald's own sandbox needs no contract, but must still be approved.
        let internal = VendorFacts {
            role: Role {
                kind: RoleKind::Internal,
                note: None,
            },
            dpa: None,
            next_review_due: None,
            ..reviewed()
        };
        assert_eq!(standing(VendorStatus::Approved, &internal, today), Ok(()));
        assert_eq!(
            standing(VendorStatus::Suspended, &internal, today),
            Err(NotApproved::Suspended)
        );
    }

    #[test]
    fn ids_and_limits_are_checked() {
        assert!(VendorId::parse("meta_whatsapp_cloud").is_some());
        for bad in ["", "ab", "Meta", "1meta", "meta-cloud", &"a".repeat(41)] {
            assert!(VendorId::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(validate(&reviewed()), Ok(()));
        let blank = VendorFacts {
            legal_name: " ".into(),
            ..reviewed()
        };
        assert_eq!(validate(&blank).unwrap_err().0, "legal_name");
        let mut bad_hash = reviewed();
        bad_hash.dpa.as_mut().unwrap().sha256 = Some("abc".into());
        assert_eq!(validate(&bad_hash).unwrap_err().0, "dpa.sha256");
        let no_products = VendorFacts {
            baa: Some(Baa {
                signed_at: date("2026-01-01"),
                expires_at: None,
                products: vec![],
            }),
            ..reviewed()
        };
        assert_eq!(validate(&no_products).unwrap_err().0, "baa.products");
    }
}
