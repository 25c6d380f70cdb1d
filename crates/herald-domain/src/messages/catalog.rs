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
    /// Marketing purposes are the ones an opt-out ("STOP") withdraws.
    pub marketing: bool,
}

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
            if !is_identifier(&purpose.name) {
                return Err(CatalogError::PurposeName(purpose.name));
            }
            catalog.purposes.insert(purpose.name.clone(), purpose);
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

    pub fn purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.get(name)
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
        self.purposes.is_empty()
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
        let purpose = Purpose {
            name: "order_updates".into(),
            basis: LawfulBasis::Contract,
            marketing: false,
        };
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
    }
}
