//! Configuration of the incident register: who the notification drafts name, and how often
//! the deadline watcher looks at the clocks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsConfig {
    /// The controller (GDPR) or covered entity (HIPAA): name and address, for the drafts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The data protection officer or other contact point (GDPR Art. 33(3)(b)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo_contact: Option<String>,
    /// How individuals reach the covered entity (HIPAA §164.404(c)(1)(E)): a toll-free
    /// number, e-mail, web site or postal address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub individual_contact: Option<String>,
    /// How often `herald serve` looks for notification deadlines that are near (24 hours) or
    /// missed; `0s` turns the watcher off.
    #[serde(with = "humantime_serde")]
    pub check_every: Duration,
}

impl Config {
    pub(super) fn validate_incidents(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("incidents.controller", &self.incidents.controller),
            ("incidents.dpo_contact", &self.incidents.dpo_contact),
            (
                "incidents.individual_contact",
                &self.incidents.individual_contact,
            ),
        ] {
            if let Some(value) = value
                && (value.trim().is_empty() || value.chars().count() > 500)
            {
                return Err(ConfigError::Invalid(format!(
                    "{name} must hold 1 to 500 characters"
                )));
            }
        }
        if !self.incidents.check_every.is_zero()
            && self.incidents.check_every < Duration::from_secs(10)
        {
            return Err(ConfigError::Invalid(
                "incidents.check_every must be 0s (off) or at least 10s".into(),
            ));
        }
        Ok(())
    }

    /// The contacts the notification drafts name.
    pub fn incident_contacts(&self) -> herald_domain::incidents::Contacts {
        herald_domain::incidents::Contacts {
            controller: self.incidents.controller.clone(),
            dpo_contact: self.incidents.dpo_contact.clone(),
            individual_contact: self.incidents.individual_contact.clone(),
        }
    }
}
