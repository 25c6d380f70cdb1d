//! Configuration of the rate limits (`[limits]`) and of the trusted proxies whose
//! `X-Forwarded-For` names the client (`http.trusted_proxies`).

use std::collections::BTreeMap;
use std::time::Duration;

use herald_domain::limits::{EnumerationSettings, LimitSettings, Rate, RouteClass};
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// A rate as configured: `per_minute` on average, `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub per_minute: u32,
    pub burst: u32,
}

impl RateConfig {
    fn rate(self, key: &str) -> Result<Rate, ConfigError> {
        Rate::new(self.per_minute, self.burst)
            .map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    pub lookup: RateConfig,
    pub export: RateConfig,
    pub erase: RateConfig,
    pub opt_in: RateConfig,
    pub audit: RateConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnumerationConfig {
    pub distinct_numbers: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub enabled: bool,
    pub credential: RateConfig,
    pub routes: RoutesConfig,
    pub source_requests: RateConfig,
    pub source_failures: RateConfig,
    #[serde(with = "humantime_serde")]
    pub cooling_off: Duration,
    pub enumeration: EnumerationConfig,
    /// Per-integration credential rates, by integration name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub integrations: BTreeMap<String, RateConfig>,
}

impl Config {
    pub fn limit_settings(&self) -> Result<LimitSettings, ConfigError> {
        let l = &self.limits;
        let routes = [
            (RouteClass::Lookup, l.routes.lookup),
            (RouteClass::Export, l.routes.export),
            (RouteClass::Erase, l.routes.erase),
            (RouteClass::OptIn, l.routes.opt_in),
            (RouteClass::Audit, l.routes.audit),
        ]
        .into_iter()
        .map(|(class, rate)| {
            rate.rate(&format!("limits.routes.{}", class.config_name()))
                .map(|r| (class, r))
        })
        .collect::<Result<Vec<_>, _>>()?;
        let window = chrono::TimeDelta::from_std(l.enumeration.window)
            .ok()
            .filter(|w| *w >= chrono::TimeDelta::minutes(1) && *w <= chrono::TimeDelta::days(1))
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "limits.enumeration.window must be between 1 minute and 1 day".into(),
                )
            })?;
        if l.enumeration.distinct_numbers == 0 {
            return Err(ConfigError::Invalid(
                "limits.enumeration.distinct_numbers must be at least 1".into(),
            ));
        }
        if l.cooling_off.is_zero() || l.cooling_off > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::Invalid(
                "limits.cooling_off must be more than zero and at most a day".into(),
            ));
        }
        let configured_overrides = l
            .integrations
            .iter()
            .map(|(name, rate)| {
                rate.rate(&format!("limits.integrations.{name}"))
                    .map(|r| (name.clone(), r))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LimitSettings {
            enabled: l.enabled,
            credential: l.credential.rate("limits.credential")?,
            routes,
            source_requests: l.source_requests.rate("limits.source_requests")?,
            source_failures: l.source_failures.rate("limits.source_failures")?,
            cooling_off: l.cooling_off,
            enumeration: EnumerationSettings {
                distinct_numbers: l.enumeration.distinct_numbers,
                window,
            },
            configured_overrides,
        })
    }

    /// The proxies whose `X-Forwarded-For` is believed (none by default).
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.http
            .trusted_proxies
            .iter()
            .map(|range| {
                range
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| range.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "http.trusted_proxies: {range:?} is not an address or CIDR range"
                        ))
                    })
            })
            .collect()
    }

    pub(super) fn validate_limits(&self) -> Result<(), ConfigError> {
        self.limit_settings()?;
        self.trusted_proxies()?;
        Ok(())
    }
}
