//! Configuration of backups: who can decrypt them (age recipients; Herald never holds an
//! identity), where they go, how often, how many are kept, and the restore drill.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Secret};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// age X25519 recipients (`age1…`) every backup is encrypted to. Only public keys: the
    /// identities stay offline with whoever may restore.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A passphrase recipient instead (age's scrypt); cannot be combined with `recipients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Secret>,
    /// Where backups are written. Default: `herald-backups` beside the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// How often `herald serve` takes a backup; `0s` turns the schedule off. Scheduled backups
    /// run only when a recipient or passphrase is configured.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// How many of the newest backups are kept in `dir`; older ones are deleted.
    pub keep: u32,
    /// How often the newest backup is restored in a scratch directory and checked; `0s`: never.
    #[serde(with = "humantime_serde")]
    pub drill_every: Duration,
    /// The age identity the scheduled drill decrypts with. Unset: no scheduled drill (run
    /// `herald backup drill --identity FILE` from where the identity is kept). Setting it puts
    /// an identity on this machine — prefer a separate drill host (docs/operations.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_identity_file: Option<PathBuf>,
}

impl Config {
    /// The backup directory: configured, or `herald-backups` beside the data directory.
    pub fn backup_dir(&self) -> PathBuf {
        if let Some(dir) = &self.backup.dir {
            return dir.clone();
        }
        let parent = self
            .data_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        parent.join("herald-backups")
    }

    /// Whether backups can be encrypted at all (a recipient or a passphrase is configured).
    pub fn backups_configured(&self) -> bool {
        !self.backup.recipients.is_empty() || self.backup.passphrase.is_some()
    }

    /// The configured recipients, parsed.
    pub fn backup_recipients(&self) -> Result<Vec<age::x25519::Recipient>, ConfigError> {
        self.backup
            .recipients
            .iter()
            .enumerate()
            .map(|(i, text)| {
                age::x25519::Recipient::from_str(text.trim()).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "backup.recipients[{i}] is not an age X25519 recipient (age1…)"
                    ))
                })
            })
            .collect()
    }

    pub(super) fn validate_backup(&self) -> Result<(), ConfigError> {
        self.backup_recipients()?;
        if !self.backup.recipients.is_empty() && self.backup.passphrase.is_some() {
            return Err(ConfigError::Invalid(
                "backup.recipients and backup.passphrase cannot be combined (age allows a passphrase only as the sole recipient)".into(),
            ));
        }
        if self
            .backup
            .passphrase
            .as_ref()
            .is_some_and(|p| p.expose().chars().count() < 16)
        {
            return Err(ConfigError::Invalid(
                "backup.passphrase must be at least 16 characters".into(),
            ));
        }
        if self.backup.keep == 0 {
            return Err(ConfigError::Invalid(
                "backup.keep must be at least 1".into(),
            ));
        }
        let minute = Duration::from_secs(60);
        for (key, every) in [
            ("backup.every", self.backup.every),
            ("backup.drill_every", self.backup.drill_every),
        ] {
            if !every.is_zero() && every < minute {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be 0s (off) or at least one minute"
                )));
            }
        }
        Ok(())
    }
}
