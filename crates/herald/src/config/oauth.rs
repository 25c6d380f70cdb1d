//! Configuration of Herald's OAuth 2.0 authorization server.

use std::time::Duration;

use chrono::TimeDelta;
use herald_domain::auth::oauth::{MAX_TOKEN_LIFETIME, OAuthSettings};
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The `iss` of every access token and the base URL of the OAuth endpoints, as clients
    /// reach Herald (`https://herald.example.com`). Default: `http(s)://<listen>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The `aud` of every access token. Default: the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// How long an access token is valid: at most 15 minutes (short-lived by design, so a
    /// leaked token is worth little even before it is revoked).
    #[serde(with = "humantime_serde")]
    pub access_token_lifetime: Duration,
}

impl Config {
    /// The issuer URL: configured, or derived from the listen address.
    pub fn oauth_issuer(&self) -> String {
        match &self.oauth.issuer {
            Some(issuer) => issuer.trim_end_matches('/').to_owned(),
            None => {
                let scheme = if self.tls_enabled() { "https" } else { "http" };
                format!("{scheme}://{}", self.listen)
            }
        }
    }

    pub fn oauth_settings(&self) -> Result<OAuthSettings, ConfigError> {
        let issuer = self.oauth_issuer();
        let lifetime = TimeDelta::from_std(self.oauth.access_token_lifetime)
            .map_err(|_| invalid_lifetime())?;
        Ok(OAuthSettings {
            audience: self
                .oauth
                .audience
                .clone()
                .unwrap_or_else(|| issuer.clone()),
            issuer,
            token_lifetime: lifetime,
        })
    }

    pub(super) fn validate_oauth(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("oauth.issuer", &self.oauth.issuer),
            ("oauth.audience", &self.oauth.audience),
        ] {
            if let Some(url) = value {
                let parsed = url::Url::parse(url)
                    .map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))?;
                // RFC 8414 §2: an https URL with no query or fragment (http allowed for a
                // local or test deployment, as the listen address default is).
                if !matches!(parsed.scheme(), "https" | "http")
                    || parsed.query().is_some()
                    || parsed.fragment().is_some()
                {
                    return Err(ConfigError::Invalid(format!(
                        "{key} must be an http(s) URL without query or fragment"
                    )));
                }
            }
        }
        let lifetime = self.oauth.access_token_lifetime;
        if lifetime < Duration::from_secs(60) {
            return Err(invalid_lifetime());
        }
        match TimeDelta::from_std(lifetime) {
            Ok(l) if l <= MAX_TOKEN_LIFETIME => Ok(()),
            _ => Err(invalid_lifetime()),
        }
    }
}

fn invalid_lifetime() -> ConfigError {
    ConfigError::Invalid(format!(
        "oauth.access_token_lifetime must be between 1 minute and {} minutes",
        MAX_TOKEN_LIFETIME.num_minutes()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_issuer_defaults_to_the_listen_address_and_the_audience_to_the_issuer() {
        let config = Config::defaults().unwrap();
        let settings = config.oauth_settings().unwrap();
        assert_eq!(settings.issuer, "http://127.0.0.1:8080");
        assert_eq!(settings.audience, settings.issuer);
        assert_eq!(settings.token_lifetime, TimeDelta::minutes(10));
        let set = Config::load_from(
            None,
            &env(&[("HERALD_OAUTH__ISSUER", "https://herald.example.com/")]),
        )
        .unwrap();
        assert_eq!(set.oauth_issuer(), "https://herald.example.com");
    }

    #[test]
    fn long_lifetimes_and_odd_issuers_are_refused() {
        // compliance.md OAUTH-1: client-credentials tokens live at most 15 minutes.
        for (key, value) in [
            ("HERALD_OAUTH__ACCESS_TOKEN_LIFETIME", "16m"),
            ("HERALD_OAUTH__ACCESS_TOKEN_LIFETIME", "30s"),
            ("HERALD_OAUTH__ISSUER", "https://h.example.com/?x=1"),
            ("HERALD_OAUTH__ISSUER", "ftp://h.example.com"),
            ("HERALD_OAUTH__AUDIENCE", "not a url"),
        ] {
            let err = Config::load_from(None, &env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains("oauth."), "{key}={value}: {err}");
        }
        let fifteen = Config::load_from(
            None,
            &env(&[("HERALD_OAUTH__ACCESS_TOKEN_LIFETIME", "15m")]),
        );
        assert!(fifteen.is_ok());
    }
}
