//! Configuration of messaging: the WhatsApp channel (or the sandbox), purposes, templates,
//! delivery, retention and integrator webhooks.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_domain::messages::catalog::StopScope;
use herald_domain::messages::{Catalog, Channel, LawfulBasis, Purpose, Template, TemplateCategory};
use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// Which roles this node plays; several nodes on one PostgreSQL can specialise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// Serve the HTTP API.
    pub api: bool,
    /// Run the delivery workers (messages to providers, events to integrators).
    pub worker: bool,
}

fn default_base_url() -> String {
    "https://graph.facebook.com".to_owned()
}

fn default_api_version() -> String {
    "v21.0".to_owned()
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(15)
}

fn default_messages_per_second() -> u32 {
    80
}

/// The WhatsApp Business Cloud API. Absent: the sandbox channel.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    pub phone_number_id: String,
    pub access_token: Secret,
    pub app_secret: Secret,
    pub verify_token: Secret,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_messages_per_second")]
    pub messages_per_second: u32,
    /// The vendor in the provider register this channel goes through (default
    /// `meta_whatsapp_cloud`, shipped `unreviewed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub name: String,
    pub language: String,
    pub parameters: u32,
    pub category: TemplateCategory,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeConfig {
    pub basis: LawfulBasis,
    #[serde(default)]
    pub marketing: bool,
    /// The channels the purpose may be used on (default: whatsapp, the only one yet).
    #[serde(default = "default_channels")]
    pub channels: Vec<Channel>,
    /// The texts shown when consent or an opt-in is asked for (required for basis consent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<super::consent::NoticeConfig>,
    /// `START` re-grants this purpose after an opt-out.
    #[serde(default)]
    pub reopt_in_by_keyword: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_cap: Option<super::consent::FrequencyCapConfig>,
    /// What a subject's "STOP" ends: `channel` (default: every business-initiated message of
    /// the purpose) or `marketing` (only if the purpose is marketing).
    #[serde(default)]
    pub stop_withdraws: StopWithdraws,
}

/// `stop_withdraws` of a purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopWithdraws {
    #[default]
    Channel,
    Marketing,
}

fn default_channels() -> Vec<Channel> {
    vec![Channel::Whatsapp]
}

impl PurposeConfig {
    /// A purpose with only its basis (no notices, no cap, not marketing).
    pub fn basis(basis: LawfulBasis) -> Self {
        Self {
            basis,
            marketing: false,
            channels: default_channels(),
            notices: Vec::new(),
            reopt_in_by_keyword: false,
            frequency_cap: None,
            stop_withdraws: StopWithdraws::Channel,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Provider calls in flight at once, per node.
    pub concurrency: usize,
    /// Messages one claim takes.
    pub claim_batch: u32,
    /// How long a claimed message stays reserved for this node; if the node dies mid-send,
    /// another takes the message over after this.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    pub max_attempts: u32,
    /// A message not sent this long after it was accepted fails (`retries_exhausted`).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// The longest `Retry-After` from a provider that is honoured as given.
    #[serde(with = "humantime_serde")]
    pub retry_after_cap: Duration,
    /// Messages one recipient may receive in a burst, and how fast that allowance refills
    /// (WhatsApp's pair rate limit is about one message per 6 s).
    pub recipient_burst: u32,
    #[serde(with = "humantime_serde")]
    pub recipient_refill: Duration,
    /// How long an idle worker waits before looking for due messages again.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long message content is kept after the provider accepted it (`0s`: not at all).
    #[serde(with = "humantime_serde")]
    pub message_bodies: Duration,
    /// How long customers' messages are kept (they reach integrators as events at once).
    #[serde(with = "humantime_serde")]
    pub inbound_bodies: Duration,
    /// How long a stored provider callback is kept at most (dead-lettered ones included).
    #[serde(with = "humantime_serde")]
    pub callbacks: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Per delivery attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed deliveries after which an endpoint is disabled.
    pub disable_after_failures: u32,
    /// Event deliveries in flight at once, per node.
    pub concurrency: usize,
    /// Allow `http://` and private, loopback and link-local targets. Development and tests
    /// only: in production an integrator's URL must not reach Herald's own network.
    pub allow_insecure_targets: bool,
}

impl super::Config {
    /// Purposes and templates, validated. With the sandbox channel and nothing configured, a
    /// demonstration purpose and template make the gateway usable out of the box; with a real
    /// channel nothing is ever added.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let mut purposes: Vec<Purpose> = Vec::with_capacity(self.purposes.len());
        for (name, p) in &self.purposes {
            purposes.push(Purpose {
                marketing: p.marketing,
                channels: p.channels.clone(),
                notices: p
                    .notices
                    .iter()
                    .map(|n| n.notice(name))
                    .collect::<Result<_, _>>()?,
                reopt_in_by_keyword: p.reopt_in_by_keyword,
                frequency_cap: p.frequency_cap.as_ref().map(|c| c.cap()),
                stop_withdraws: match p.stop_withdraws {
                    StopWithdraws::Channel => StopScope::Channel,
                    StopWithdraws::Marketing => StopScope::Marketing,
                },
                ..Purpose::new(name, p.basis)
            });
        }
        let mut templates: Vec<Template> = self
            .templates
            .iter()
            .map(|t| Template {
                name: t.name.clone(),
                language: t.language.clone(),
                parameters: t.parameters,
                category: t.category,
            })
            .collect();
        if self.whatsapp.is_none() && purposes.is_empty() && templates.is_empty() {
            purposes.push(Purpose::new(SANDBOX_DEMO_PURPOSE, LawfulBasis::Contract));
            templates.push(Template {
                name: SANDBOX_DEMO_TEMPLATE.to_owned(),
                language: "en".to_owned(),
                parameters: 1,
                category: TemplateCategory::Utility,
            });
        }
        Catalog::new(purposes, templates).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    pub(super) fn validate_messaging(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        self.catalog()?;
        self.consent_settings()?;
        if let Some(whatsapp) = &self.whatsapp {
            if !whatsapp.base_url.starts_with("https://")
                && !whatsapp.base_url.starts_with("http://")
            {
                return invalid("whatsapp.base_url must be an http(s) URL");
            }
            if whatsapp.phone_number_id.is_empty()
                || !whatsapp.phone_number_id.bytes().all(|b| b.is_ascii_digit())
            {
                return invalid(
                    "whatsapp.phone_number_id must be the numeric id of the business number",
                );
            }
            if !whatsapp.api_version.starts_with('v') {
                return invalid("whatsapp.api_version looks like v21.0");
            }
            for (name, secret) in [
                ("access_token", &whatsapp.access_token),
                ("app_secret", &whatsapp.app_secret),
                ("verify_token", &whatsapp.verify_token),
            ] {
                if secret.expose().is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "whatsapp.{name} is empty; the channel refuses to start without it"
                    )));
                }
            }
            if whatsapp.messages_per_second == 0 {
                return invalid("whatsapp.messages_per_second must be at least 1");
            }
        }
        let d = &self.delivery;
        if d.concurrency == 0 || d.claim_batch == 0 || d.max_attempts == 0 || d.recipient_burst == 0
        {
            return invalid(
                "delivery.concurrency, claim_batch, max_attempts and recipient_burst must be at least 1",
            );
        }
        if d.lease < Duration::from_secs(5) {
            return invalid("delivery.lease must be at least 5s (longer than one provider call)");
        }
        if d.retry_base.is_zero() || d.retry_max < d.retry_base {
            return invalid(
                "delivery.retry_base must be more than zero and at most delivery.retry_max",
            );
        }
        if self.webhooks.timeout.is_zero()
            || self.webhooks.disable_after_failures == 0
            || self.webhooks.concurrency == 0
        {
            return invalid(
                "webhooks.timeout, disable_after_failures and concurrency must be more than zero",
            );
        }
        if let Some(whatsapp) = &self.whatsapp
            && d.lease <= whatsapp.request_timeout
        {
            return invalid(
                "delivery.lease must be longer than whatsapp.request_timeout, or a message still \
                 in flight could be claimed and sent again",
            );
        }
        Ok(())
    }
}

/// The sandbox's demonstration purpose and template (see [`super::Config::catalog`]).
pub const SANDBOX_DEMO_PURPOSE: &str = "demo";
pub const SANDBOX_DEMO_TEMPLATE: &str = "demo_update";

/// The config field type for purposes.
pub type Purposes = BTreeMap<String, PurposeConfig>;

impl super::Config {
    /// What an export states about recipients and retention (GDPR Art. 15(1)(c),(d)), from the
    /// configured channel and retention periods.
    pub fn processing_info(&self) -> herald_domain::rights::export::ProcessingInfo {
        use herald_domain::rights::export::{ProcessingInfo, Recipient};
        let period = |d: Duration| {
            if d.is_zero() {
                "not kept once delivered".to_owned()
            } else {
                humantime_serde::re::humantime::format_duration(d).to_string()
            }
        };
        let recipients = match &self.whatsapp {
            Some(_) => vec![Recipient {
                name: "Meta Platforms (WhatsApp Business Cloud API)".into(),
                role: "processor".into(),
                purpose: "delivering messages to and from the subject's WhatsApp number".into(),
            }],
            None => vec![Recipient {
                name: "none (sandbox channel: nothing leaves this gateway)".into(),
                role: "none".into(),
                purpose: "testing".into(),
            }],
        };
        let mut recipients = recipients;
        recipients.push(Recipient {
            name: "the integrating business's systems (webhook endpoints)".into(),
            role: "controller".into(),
            purpose: "message statuses, replies and consent changes".into(),
        });
        ProcessingInfo {
            recipients,
            retention: vec![
                (
                    "message content".into(),
                    period(self.retention.message_bodies),
                ),
                (
                    "inbound message content".into(),
                    period(self.retention.inbound_bodies),
                ),
                (
                    "message metadata and consent records".into(),
                    "until the subject is erased".into(),
                ),
                (
                    "audit trail (pseudonymous)".into(),
                    period(self.audit.retention),
                ),
            ],
        }
    }
}
