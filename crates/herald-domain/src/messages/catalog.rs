//! What may be sent, and why: the purposes (with their lawful basis) and the approved templates,
//! both from configuration. Names are plain identifiers, so they may appear in audit entries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// GDPR Art. 6(1) lawful bases Herald distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LawfulBasis {
    Consent,
    Contract,
    LegalObligation,
    VitalInterests,
    LegitimateInterests,
}

impl LawfulBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            LawfulBasis::Consent => "consent",
            LawfulBasis::Contract => "contract",
            LawfulBasis::LegalObligation => "legal_obligation",
            LawfulBasis::VitalInterests => "vital_interests",
            LawfulBasis::LegitimateInterests => "legitimate_interests",
        }
    }
}

/// WhatsApp template categories (reference §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateCategory {
    Utility,
    Marketing,
    Authentication,
}

impl TemplateCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateCategory::Utility => "utility",
            TemplateCategory::Marketing => "marketing",
            TemplateCategory::Authentication => "authentication",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    pub name: String,
    pub basis: LawfulBasis,
    /// Marketing purposes are the ones an opt-out ("STOP") withdraws (unless configured
    /// otherwise).
    pub marketing: bool,
    /// The channels the purpose may be used on (and consent recorded for).
    pub channels: Vec<super::Channel>,
    /// The versions of the text shown to people when their consent (or opt-in) is asked for
    /// this purpose. Evidence names one; its hash is stored with the consent record.
    pub notices: Vec<Notice>,
    /// Whether `START` (and its equivalents) re-grants this purpose after an opt-out. Off by
    /// default: a keyword proves less than the original consent did.
    pub reopt_in_by_keyword: bool,
    /// At most this many messages per subject per window.
    pub frequency_cap: Option<FrequencyCap>,
    /// Herald's own messages (opt-in confirmations, opt-out acknowledgements): never named by
    /// integrators.
    pub internal: bool,
    /// What a subject's "STOP" ends for this purpose (default: the channel opt-in itself).
    pub stop_withdraws: StopScope,
}

/// What an opt-out keyword (or the stop button) withdraws for a purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopScope {
    /// The WhatsApp opt-in itself: after STOP no business-initiated message of this purpose
    /// goes out until the subject opts in again (the default, and WhatsApp's policy).
    Channel,
    /// Only marketing: a non-marketing purpose with this setting keeps its business-initiated
    /// messages after STOP, on its own (or another surviving) grant. For what a law or contract
    /// requires to be sent (a legal notice the subject cannot object to on this channel).
    Marketing,
}

impl StopScope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "channel" => Some(StopScope::Channel),
            "marketing" => Some(StopScope::Marketing),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopScope::Channel => "channel",
            StopScope::Marketing => "marketing",
        }
    }
}

impl Purpose {
    /// A purpose with no notices, no cap, not marketing.
    pub fn new(name: &str, basis: LawfulBasis) -> Self {
        Self {
            name: name.to_owned(),
            basis,
            marketing: false,
            channels: vec![super::Channel::Whatsapp],
            notices: Vec::new(),
            reopt_in_by_keyword: false,
            frequency_cap: None,
            internal: false,
            stop_withdraws: StopScope::Channel,
        }
    }

    pub fn offers(&self, channel: super::Channel) -> bool {
        self.channels.contains(&channel)
    }

    /// Whether a subject's opt-out ("STOP") ends this purpose's business-initiated messages.
    pub fn stopped_by_opt_out(&self) -> bool {
        self.marketing || self.stop_withdraws == StopScope::Channel
    }

    pub fn notice(&self, version: &str) -> Option<&Notice> {
        self.notices.iter().find(|n| n.version == version)
    }
}

/// One version of a consent notice: the exact text's SHA-256 (the text itself stays in the
/// configuration and the operator's records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub version: String,
    pub sha256: [u8; 32],
}

/// A frequency cap: `max` messages per subject within `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub max: u32,
    pub per: chrono::TimeDelta,
}

/// Herald's purpose for the one confirmation template of a double opt-in (not promotional).
pub const OPT_IN_REQUEST_PURPOSE: &str = "herald.opt_in_request";
/// Herald's purpose for acknowledging an opt-out or re-opt-in keyword.
pub const CONSENT_NOTICE_PURPOSE: &str = "herald.consent_notice";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    /// The template's language code exactly as approved (`de`, `en_US`).
    pub language: String,
    /// Number of body parameters (`{{1}}` … `{{n}}`).
    pub parameters: u32,
    pub category: TemplateCategory,
}

/// Whether `name` is a plain identifier: ASCII letter first, then letters, digits, `_`, `.`,
/// `-`; at most 64 characters. Purposes and template names must be, so they can be named in
/// audit entries and logs without carrying anything else.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A notice version: 1 to 32 of letters, digits, `_ . -` (`2026-01`, `v3`).
pub fn is_identifier_or_version(version: &str) -> bool {
    (1..=32).contains(&version.len())
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A template language code: letters, optionally `_` and a region (`de`, `en_US`, `pt_BR`).
pub fn is_language(code: &str) -> bool {
    (2..=8).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
        && code.as_bytes()[0].is_ascii_alphabetic()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("purpose {0:?} is not a plain identifier (letter first; letters, digits, _ . -)")]
    PurposeName(String),
    #[error("template {0:?} is not a plain identifier (letter first; letters, digits, _ . -)")]
    TemplateName(String),
    #[error("template {name:?} has an invalid language code {language:?}")]
    TemplateLanguage { name: String, language: String },
    #[error("template {name:?} ({language}) is configured twice")]
    DuplicateTemplate { name: String, language: String },
    #[error("template {0:?} has more than 100 parameters")]
    TooManyParameters(String),
    #[error("purpose {0:?} has basis consent but no notice: configure the text people agree to")]
    ConsentWithoutNotice(String),
    #[error("purpose {purpose:?} has an invalid notice version {version:?}")]
    NoticeVersion { purpose: String, version: String },
    #[error("purpose {0:?} has a frequency cap of zero messages or over no time")]
    FrequencyCap(String),
    #[error("purpose {0:?} names no channel")]
    NoChannel(String),
}

/// Purposes and templates, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    purposes: BTreeMap<String, Purpose>,
    templates: BTreeMap<(String, String), Template>,
}

impl Catalog {
    pub fn new(
        purposes: impl IntoIterator<Item = Purpose>,
        templates: impl IntoIterator<Item = Template>,
    ) -> Result<Self, CatalogError> {
        let mut catalog = Catalog::default();
        for purpose in purposes {
            if !is_identifier(&purpose.name) || purpose.name.starts_with("herald.") {
                return Err(CatalogError::PurposeName(purpose.name));
            }
            if purpose.channels.is_empty() {
                return Err(CatalogError::NoChannel(purpose.name));
            }
            if purpose.basis == LawfulBasis::Consent && purpose.notices.is_empty() {
                return Err(CatalogError::ConsentWithoutNotice(purpose.name));
            }
            if let Some(notice) = purpose
                .notices
                .iter()
                .find(|n| !is_identifier_or_version(&n.version))
            {
                return Err(CatalogError::NoticeVersion {
                    version: notice.version.clone(),
                    purpose: purpose.name,
                });
            }
            if purpose
                .frequency_cap
                .is_some_and(|c| c.max == 0 || c.per <= chrono::TimeDelta::zero())
            {
                return Err(CatalogError::FrequencyCap(purpose.name));
            }
            catalog.purposes.insert(purpose.name.clone(), purpose);
        }
        // Herald's own messages about consent: not promotional, sent because the law asks for
        // a confirmation (GDPR Art. 7(1) proof of consent; Art. 7(3) withdrawal as easy as
        // giving consent).
        for name in [OPT_IN_REQUEST_PURPOSE, CONSENT_NOTICE_PURPOSE] {
            catalog.purposes.insert(
                name.to_owned(),
                Purpose {
                    internal: true,
                    ..Purpose::new(name, LawfulBasis::LegalObligation)
                },
            );
        }
        for template in templates {
            if !is_identifier(&template.name) {
                return Err(CatalogError::TemplateName(template.name));
            }
            if !is_language(&template.language) {
                return Err(CatalogError::TemplateLanguage {
                    name: template.name,
                    language: template.language,
                });
            }
            if template.parameters > 100 {
                return Err(CatalogError::TooManyParameters(template.name));
            }
            let key = (template.name.clone(), template.language.clone());
            if catalog.templates.contains_key(&key) {
                return Err(CatalogError::DuplicateTemplate {
                    name: template.name,
                    language: template.language,
                });
            }
            catalog.templates.insert(key, template);
        }
        Ok(catalog)
    }

    /// Any purpose, Herald's internal ones included.
    pub fn purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.get(name)
    }

    /// A purpose an integrator may name (not one of Herald's internal ones).
    pub fn public_purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.get(name).filter(|p| !p.internal)
    }

    pub fn template(&self, name: &str, language: &str) -> Option<&Template> {
        self.templates.get(&(name.to_owned(), language.to_owned()))
    }

    pub fn purposes(&self) -> impl Iterator<Item = &Purpose> {
        self.purposes.values()
    }

    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    pub fn is_empty(&self) -> bool {
        !self.purposes.values().any(|p| !p.internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(name: &str, language: &str) -> Template {
        Template {
            name: name.into(),
            language: language.into(),
            parameters: 1,
            category: TemplateCategory::Utility,
        }
    }

    #[test]
    fn identifiers() {
        for good in ["order_updates", "a", "marketing.eu", "appt-reminder2"] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in [
            "",
            "4915112345678",
            "_x",
            "has space",
            "ümlaut",
            &"x".repeat(65),
        ] {
            assert!(!is_identifier(bad), "{bad}");
        }
        assert!(is_language("de") && is_language("en_US") && is_language("pt_BR"));
        assert!(!is_language("d") && !is_language("de-DE") && !is_language("_de"));
    }

    #[test]
    fn catalog_validation() {
        let purpose = Purpose::new("order_updates", LawfulBasis::Contract);
        let catalog = Catalog::new(
            [purpose.clone()],
            [
                template("order_shipped", "de"),
                template("order_shipped", "en"),
            ],
        )
        .unwrap();
        assert_eq!(catalog.purpose("order_updates"), Some(&purpose));
        assert!(catalog.template("order_shipped", "de").is_some());
        assert!(catalog.template("order_shipped", "fr").is_none());
        assert!(matches!(
            Catalog::new([], [template("x", "de"), template("x", "de")]),
            Err(CatalogError::DuplicateTemplate { .. })
        ));
        assert!(matches!(
            Catalog::new([], [template("x", "de-DE")]),
            Err(CatalogError::TemplateLanguage { .. })
        ));
        assert!(matches!(
            Catalog::new(
                [Purpose {
                    name: "9x".into(),
                    ..purpose
                }],
                []
            ),
            Err(CatalogError::PurposeName(_))
        ));
        assert!(matches!(
            Catalog::new([Purpose::new("herald.x", LawfulBasis::Contract)], []),
            Err(CatalogError::PurposeName(_))
        ));
        assert!(matches!(
            Catalog::new([Purpose::new("news", LawfulBasis::Consent)], []),
            Err(CatalogError::ConsentWithoutNotice(_))
        ));
        assert!(matches!(
            Catalog::new(
                [Purpose {
                    channels: Vec::new(),
                    ..Purpose::new("nowhere", LawfulBasis::Contract)
                }],
                []
            ),
            Err(CatalogError::NoChannel(_))
        ));
        assert!(
            catalog
                .purpose("order_updates")
                .unwrap()
                .offers(super::super::Channel::Whatsapp)
        );
        let internal = catalog.purpose(OPT_IN_REQUEST_PURPOSE).unwrap();
        assert!(internal.internal);
        assert!(catalog.public_purpose(OPT_IN_REQUEST_PURPOSE).is_none());
        assert!(catalog.public_purpose("order_updates").is_some());
    }
}
