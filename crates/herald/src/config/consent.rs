//! Configuration of the consent ledger: purposes' notices and caps (in `[purposes.*]`),
//! opt-out and opt-in keywords, acknowledgements, double opt-in.

use std::time::Duration;

use chrono::TimeDelta;
use herald_crypto::hash::sha256;
use herald_domain::consent::{ConsentSettings, KeywordPolicy, keywords};
use herald_domain::messages::{FrequencyCap, Notice, TemplateCategory};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// One version of a purpose's notice: the exact text shown (its SHA-256 is what the ledger
/// records), or only that hash when the text lives elsewhere.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeConfig {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Hex SHA-256 of the exact text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl NoticeConfig {
    pub fn notice(&self, purpose: &str) -> Result<Notice, ConfigError> {
        let hash = match (&self.text, &self.sha256) {
            (Some(text), None) if !text.trim().is_empty() => sha256(&[text.as_bytes()]),
            (None, Some(hex)) => data_encoding::HEXLOWER_PERMISSIVE
                .decode(hex.as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "purposes.{purpose}.notices: sha256 of version {:?} is not 64 hex digits",
                        self.version
                    ))
                })?,
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "purposes.{purpose}.notices: version {:?} needs exactly one of text or sha256",
                    self.version
                )));
            }
        };
        Ok(Notice {
            version: self.version.clone(),
            sha256: hash,
        })
    }
}

/// At most `max` messages of a purpose per subject within `per`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCapConfig {
    pub max: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

impl FrequencyCapConfig {
    pub fn cap(&self) -> FrequencyCap {
        FrequencyCap {
            max: self.max,
            per: TimeDelta::from_std(self.per).unwrap_or(TimeDelta::MAX),
        }
    }
}

/// The double opt-in's confirmation template.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptInTemplateConfig {
    pub name: String,
    pub language: String,
    /// Fixed body parameters (the business's name, say).
    #[serde(default)]
    pub parameters: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    /// Whole-message opt-out words (case and accents ignored). Absent: English, German,
    /// French, Spanish, Italian, Dutch and Portuguese defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_keywords: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_keywords: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_keywords: Option<Vec<String>>,
    /// Quick-reply button payloads meaning "stop" and "confirm".
    pub stop_button_payloads: Vec<String>,
    pub confirm_button_payloads: Vec<String>,
    /// Sent after an opt-out ("" or absent: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_reply: Option<String>,
    /// Sent after a re-opt-in or a confirmed opt-in ("" or absent: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in_reply: Option<String>,
    /// How long a double opt-in waits for the confirmation.
    #[serde(with = "humantime_serde")]
    pub opt_in_expiry: Duration,
    /// How long a user-initiated opt-in code stays valid.
    #[serde(with = "humantime_serde")]
    pub code_expiry: Duration,
    /// Confirmation requests one number receives in 30 days at most.
    pub opt_in_max_requests: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in_template: Option<OptInTemplateConfig>,
}

fn reply(text: &Option<String>) -> Option<String> {
    text.as_ref().filter(|t| !t.trim().is_empty()).cloned()
}

impl super::Config {
    /// The consent settings, validated against the purposes and templates.
    pub fn consent_settings(&self) -> Result<ConsentSettings, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let c = &self.consent;
        let words = |list: &Option<Vec<String>>, defaults: &[&str]| -> Vec<String> {
            list.clone()
                .unwrap_or_else(|| defaults.iter().map(|w| (*w).to_owned()).collect())
        };
        let stop = words(&c.stop_keywords, keywords::DEFAULT_STOP);
        let start = words(&c.start_keywords, keywords::DEFAULT_START);
        let confirm = words(&c.confirm_keywords, keywords::DEFAULT_CONFIRM);
        if stop.iter().all(|w| keywords::normalize(w).is_empty()) {
            return invalid(
                "consent.stop_keywords must name at least one word: people must be able to opt out"
                    .into(),
            );
        }
        let catalog = self.catalog()?;
        if !(1..=10).contains(&c.opt_in_max_requests) {
            return invalid("consent.opt_in_max_requests must be between 1 and 10".into());
        }
        for (name, text) in [
            ("opt_out_reply", &c.opt_out_reply),
            ("opt_in_reply", &c.opt_in_reply),
        ] {
            if text.as_ref().is_some_and(|t| t.chars().count() > 4096) {
                return invalid(format!("consent.{name} has more than 4096 characters"));
            }
        }
        let opt_in_ttl = TimeDelta::from_std(c.opt_in_expiry).unwrap_or(TimeDelta::MAX);
        if opt_in_ttl < TimeDelta::minutes(5) || opt_in_ttl > TimeDelta::days(30) {
            return invalid("consent.opt_in_expiry must be between 5m and 30d".into());
        }
        let code_ttl = TimeDelta::from_std(c.code_expiry).unwrap_or(TimeDelta::MAX);
        if code_ttl < TimeDelta::minutes(5) || code_ttl > TimeDelta::days(3650) {
            return invalid("consent.code_expiry must be between 5m and 10 years".into());
        }
        let opt_in_template = match &c.opt_in_template {
            None => None,
            Some(t) => {
                let Some(template) = catalog.template(&t.name, &t.language) else {
                    return invalid(format!(
                        "consent.opt_in_template {:?} ({}) is not a configured template",
                        t.name, t.language
                    ));
                };
                if template.category == TemplateCategory::Marketing {
                    return invalid("consent.opt_in_template must not be a marketing template: the confirmation request may not promote anything".into());
                }
                if template.parameters as usize != t.parameters.len() {
                    return invalid(format!(
                        "consent.opt_in_template gives {} parameters; the template takes {}",
                        t.parameters.len(),
                        template.parameters
                    ));
                }
                Some((t.name.clone(), t.language.clone(), t.parameters.clone()))
            }
        };
        Ok(ConsentSettings {
            keywords: KeywordPolicy::new(
                stop.iter().map(String::as_str),
                start.iter().map(String::as_str),
                confirm.iter().map(String::as_str),
            ),
            stop_payloads: c.stop_button_payloads.clone(),
            confirm_payloads: c.confirm_button_payloads.clone(),
            opt_out_reply: reply(&c.opt_out_reply),
            opt_in_reply: reply(&c.opt_in_reply),
            opt_in_ttl,
            opt_in_template,
            code_ttl,
            opt_in_max_requests: c.opt_in_max_requests,
        })
    }
}
