//! Configuration: the embedded `config.default.toml` → an optional `herald.toml` (or
//! `--config FILE`) → `HERALD_*` environment variables, each layer overriding the last.
//! Nested keys use `__` (`HERALD_TLS__CERT_FILE`); secrets may also come from a file named in
//! `<VARIABLE>_FILE`. Unknown keys are errors. Validation runs right after loading, so a bad
//! setting stops start-up with a message naming it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use herald_domain::phone::Region;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

mod backup;
mod consent;
mod incidents;
mod limits;
mod messaging;
mod oauth;
mod vendors;

pub use backup::BackupConfig;
pub use consent::{ConsentConfig, FrequencyCapConfig, NoticeConfig, OptInTemplateConfig};
pub use incidents::IncidentsConfig;
pub use limits::{LimitsConfig, RateConfig};
pub use oauth::OAuthConfig;
pub use vendors::VendorConfig;

pub use messaging::{
    DeliveryConfig, PurposeConfig, Purposes, RetentionConfig, RolesConfig, SANDBOX_DEMO_PURPOSE,
    SANDBOX_DEMO_TEMPLATE, StopWithdraws, TemplateConfig, WebhooksConfig, WhatsappConfig,
};

/// The defaults, compiled in; also the commented configuration reference.
pub const DEFAULTS: &str = include_str!("../../../../config.default.toml");
const ENV_PREFIX: &str = "HERALD_";
/// Read from the working directory when no `--config` is given.
const LOCAL_FILE: &str = "herald.toml";
/// Keys whose value may come from a file (`HERALD_<KEY>_FILE`), written as dotted paths.
const SECRET_KEYS: [&str; 6] = [
    "database_url",
    "backup.passphrase",
    "keys.root_key",
    "whatsapp.access_token",
    "whatsapp.app_secret",
    "whatsapp.verify_token",
];
/// Environment variables that share the prefix but are not configuration.
const NOT_CONFIG_PREFIXES: [&str; 1] = ["test_"];

/// A secret value: never printed, never serialised (serialising gives a mask).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

/// A database URL. It may hold a password, so it serialises with the password masked.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(Secret);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL with any password replaced by `********`.
    pub fn masked(&self) -> String {
        mask_url(self.expose())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.masked())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "********".into();
    };
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let masked_authority = match authority_and_path.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:********@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority_and_path.to_owned(),
    };
    let masked_query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=********"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match masked_query {
        Some(q) => format!("{scheme}://{masked_authority}?{q}"),
        None => format!("{scheme}://{masked_authority}"),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<DatabaseUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
    pub tls: TlsConfig,
    pub keys: KeysConfig,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub oauth: OAuthConfig,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    pub roles: RolesConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappConfig>,
    #[serde(default)]
    pub purposes: Purposes,
    #[serde(default)]
    pub templates: Vec<TemplateConfig>,
    pub delivery: DeliveryConfig,
    pub retention: RetentionConfig,
    pub webhooks: WebhooksConfig,
    pub consent: ConsentConfig,
    pub rights: RightsConfig,
    pub inbound: InboundConfig,
    pub callbacks: CallbacksConfig,
    pub backup: BackupConfig,
    pub incidents: IncidentsConfig,
    /// Vendor reviews recorded in configuration, by vendor id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vendors: vendors::Vendors,
}

/// Customers' messages that no conversation claims.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// The integration (by name) that receives `message.inbound` for messages that reply to
    /// nothing and follow no integration's message within the service window. Absent: such
    /// messages are stored and nobody is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_integration: Option<String>,
}

/// Processing stored provider callbacks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Attempts after which a callback that keeps failing is set aside (dead-lettered).
    pub max_attempts: u32,
}

/// Data-subject rights.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RightsConfig {
    /// The erasure ledger outside the database, re-applied at start-up (a restored backup
    /// cannot bring an erased subject back). Default: `<data_dir>/erasure-ledger.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure_ledger_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderKind {
    File,
    Env,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub provider: KeyProviderKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key: Option<Secret>,
    pub subject_key_cache: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub body_limit: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client, for the
    /// per-source limits and the aggregation of failures. Empty: the peer address counts.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub default_key_lifetime_days: u32,
    #[serde(with = "humantime_serde")]
    pub last_used_flush_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_file: Option<PathBuf>,
    pub checkpoint_every: u64,
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub seal_interval: Duration,
    pub seal_batch: u32,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration: cannot read {variable} (named by {variable}_FILE): {source}")]
    SecretFile {
        variable: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration: set {0} or {0}_FILE, not both")]
    SecretTwice(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Load(Box::new(e))
    }
}

fn env_name(dotted: &str) -> String {
    format!("{ENV_PREFIX}{}", dotted.replace('.', "__").to_uppercase())
}

impl Config {
    /// Loads from the usual places: `config_file` if given (it must exist), else `herald.toml`
    /// in the working directory if present; then the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(config_file, &env)
    }

    /// Loads with an explicit environment (tests).
    pub fn load_from(
        config_file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        figment = match config_file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::Invalid(format!(
                        "the configuration file {} does not exist",
                        path.display()
                    )));
                }
                figment.merge(Toml::file_exact(path))
            }
            None if Path::new(LOCAL_FILE).is_file() => figment.merge(Toml::file_exact(LOCAL_FILE)),
            None => figment,
        };
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        // Secrets from files: HERALD_KEYS__ROOT_KEY_FILE=/run/secrets/root-key.
        for key in SECRET_KEYS {
            let variable = env_name(key);
            if let Some(path) = lookup(&format!("{variable}_FILE")) {
                if lookup(&variable).is_some() {
                    return Err(ConfigError::SecretTwice(variable));
                }
                let contents =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                        variable: variable.clone(),
                        source,
                    })?;
                let value = contents.trim_end_matches(['\n', '\r']).to_owned();
                figment = figment.merge((key, value));
            }
        }
        let vars = env
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(ENV_PREFIX)?.to_lowercase();
                let is_secret_file = SECRET_KEYS
                    .iter()
                    .any(|key| rest == format!("{}_file", key.replace('.', "__")));
                let not_config = NOT_CONFIG_PREFIXES.iter().any(|p| rest.starts_with(p));
                (!is_secret_file && !not_config).then(|| (k.clone(), v.clone()))
            })
            .collect::<Vec<_>>();
        figment = figment.merge(EnvSnapshot(vars));
        let config: Config = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// The compiled-in defaults alone (tests start from these).
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::load_from(None, &[])
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(url) = &self.database_url {
            herald_store::backend_of(url.expose())
                .map_err(|e| ConfigError::Invalid(format!("database_url: {e}")))?;
        }
        self.region()?;
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return invalid("tls: set both cert_file and key_file, or neither".into());
            }
            _ => {}
        }
        if self.keys.provider == KeyProviderKind::File && self.keys.root_key.is_some() {
            return invalid(
                "keys.root_key is set but keys.provider is \"file\"; set provider = \"env\" to use it"
                    .into(),
            );
        }
        if self.keys.subject_key_cache == 0 {
            return invalid("keys.subject_key_cache must be at least 1".into());
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections must be at least 1".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.body_limit) {
            return invalid("http.body_limit must be between 1024 and 16777216 bytes".into());
        }
        if self.http.request_timeout.is_zero() {
            return invalid("http.request_timeout must be more than zero".into());
        }
        if self.auth.default_key_lifetime_days > herald_domain::auth::MAX_KEY_LIFETIME_DAYS {
            return invalid(format!(
                "auth.default_key_lifetime_days must be at most {}",
                herald_domain::auth::MAX_KEY_LIFETIME_DAYS
            ));
        }
        if self.auth.last_used_flush_interval.is_zero() {
            return invalid("auth.last_used_flush_interval must be more than zero".into());
        }
        if self.audit.checkpoint_every == 0 || self.audit.checkpoint_interval.is_zero() {
            return invalid(
                "audit.checkpoint_every and audit.checkpoint_interval must be more than zero"
                    .into(),
            );
        }
        if self.audit.seal_interval.is_zero() || !(1..=50_000).contains(&self.audit.seal_batch) {
            return invalid(
                "audit.seal_interval must be more than zero and audit.seal_batch 1 to 50000".into(),
            );
        }
        if self.audit.retention < Duration::from_secs(24 * 3600) {
            return invalid("audit.retention must be at least one day".into());
        }
        self.validate_oauth()?;
        self.validate_backup()?;
        self.validate_incidents()?;
        self.validate_vendors()?;
        self.validate_limits()?;
        self.validate_messaging()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::Invalid(format!("log.level: {e}")))?;
        Ok(())
    }

    /// The default region for national numbers, if configured.
    pub fn region(&self) -> Result<Option<Region>, ConfigError> {
        match self.default_region.as_deref() {
            None | Some("") => Ok(None),
            Some(code) => code
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::Invalid(format!("default_region: {e}"))),
        }
    }

    /// The database URL, defaulting to SQLite inside the data directory.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| {
            DatabaseUrl::new(format!(
                "sqlite://{}",
                self.data_dir.join("herald.db").display()
            ))
        })
    }

    /// The root key file (file provider): `keys.file`, else `herald-keys/root.key` beside the
    /// data directory — apart from the data, so one copy of the data directory (or a backup)
    /// is never enough to decrypt it (compliance HHS-KEYSEP). An installation that still has
    /// its key at the old default (`<data_dir>/root.key`) keeps using it, with a warning at
    /// start, until `herald keys move`.
    pub fn root_key_file(&self) -> PathBuf {
        if let Some(file) = &self.keys.file {
            return file.clone();
        }
        let default = self.default_root_key_file();
        let legacy = self.legacy_root_key_file();
        if !default.exists() && legacy.exists() {
            legacy
        } else {
            default
        }
    }

    /// `herald-keys/root.key` in the data directory's parent.
    pub fn default_root_key_file(&self) -> PathBuf {
        let parent = self
            .data_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        parent.join("herald-keys").join("root.key")
    }

    /// Where versions before 0.2 put the root key by default.
    pub fn legacy_root_key_file(&self) -> PathBuf {
        self.data_dir.join("root.key")
    }

    /// The erasure ledger file, defaulting to `erasure-ledger.jsonl` inside the data directory.
    pub fn erasure_ledger_file(&self) -> PathBuf {
        self.rights
            .erasure_ledger_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("erasure-ledger.jsonl"))
    }

    /// The audit witness file, defaulting to `audit-witness.jsonl` inside the data directory.
    pub fn audit_witness_file(&self) -> PathBuf {
        self.audit
            .witness_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-witness.jsonl"))
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.cert_file.is_some()
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> Result<String, ConfigError> {
        let mut effective = self.clone();
        effective.database_url = Some(self.database_url());
        if effective.keys.provider == KeyProviderKind::File {
            effective.keys.file = Some(self.root_key_file());
        }
        effective.audit.witness_file = Some(self.audit_witness_file());
        effective.rights.erasure_ledger_file = Some(self.erasure_ledger_file());
        toml::to_string_pretty(&effective)
            .map_err(|e| ConfigError::Invalid(format!("cannot print the configuration: {e}")))
    }
}

/// `HERALD_*` variables as a figment provider: `__` separates sections, the rest of the name
/// is the key, lower-cased; values are read like TOML values (numbers, booleans, strings).
struct EnvSnapshot(Vec<(String, String)>);

impl figment::Provider for EnvSnapshot {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("HERALD_* environment variable")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Map, Value};
        let mut dict = Dict::new();
        for (name, raw) in &self.0 {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path = rest.to_lowercase().replace("__", ".");
            let value: Value = match raw.parse() {
                Ok(value) => value,
                Err(never) => match never {},
            };
            if let Value::Dict(_, nested) = figment::util::nest(&path, value) {
                merge_dicts(&mut dict, nested);
            }
        }
        let mut map = Map::new();
        map.insert(figment::Profile::Default, dict);
        Ok(map)
    }
}

fn merge_dicts(into: &mut figment::value::Dict, from: figment::value::Dict) {
    use figment::value::Value;
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => {
                merge_dicts(existing, incoming);
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
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
    fn defaults_load_and_match_the_documented_values() {
        let config = Config::defaults().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(
            config.database_url().expose(),
            "sqlite://./herald-data/herald.db"
        );
        assert_eq!(
            config.root_key_file(),
            PathBuf::from("./herald-keys/root.key")
        );
        assert_eq!(config.http.body_limit, 64 * 1024);
        assert_eq!(config.keys.provider, KeyProviderKind::File);
        assert!(!config.tls_enabled());
    }

    #[test]
    fn environment_overrides_with_nested_keys() {
        let config = Config::load_from(
            None,
            &env(&[
                ("HERALD_LISTEN", "0.0.0.0:9000"),
                ("HERALD_HTTP__BODY_LIMIT", "2048"),
                ("HERALD_DEFAULT_REGION", "DE"),
                ("HERALD_LOG__FORMAT", "json"),
                ("HERALD_TEST_DATABASE_URL", "postgres://ignored"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.http.body_limit, 2048);
        assert_eq!(config.region().unwrap().unwrap().code(), "DE");
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::load_from(None, &env(&[("HERALD_LISTN", "0.0.0.0:1")])).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let err = Config::load_from(None, &env(&[("HERALD_HTTP__BODYLIMIT", "1")])).unwrap_err();
        assert!(err.to_string().contains("bodylimit"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, "[tls]\ncertfile = \"x\"\n").unwrap();
        let err = Config::load_from(Some(&file), &[]).unwrap_err();
        assert!(err.to_string().contains("certfile"), "{err}");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\n[http]\nbody_limit = 4096\n",
        )
        .unwrap();
        let config =
            Config::load_from(Some(&file), &env(&[("HERALD_HTTP__BODY_LIMIT", "8192")])).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.http.body_limit, 8192);
        let missing = Config::load_from(Some(&dir.path().join("nope.toml")), &[]);
        assert!(missing.is_err());
    }

    #[test]
    fn secrets_come_from_files_and_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("url");
        std::fs::write(&secret, "postgres://herald:s3cr3t-pw@db.internal/herald\n").unwrap();
        let root = dir.path().join("root");
        std::fs::write(&root, "1:AAAA\n").unwrap();
        let config = Config::load_from(
            None,
            &env(&[
                ("HERALD_DATABASE_URL_FILE", secret.to_str().unwrap()),
                ("HERALD_KEYS__PROVIDER", "env"),
                ("HERALD_KEYS__ROOT_KEY_FILE", root.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.database_url().expose(),
            "postgres://herald:s3cr3t-pw@db.internal/herald"
        );
        assert_eq!(config.keys.root_key.as_ref().unwrap().expose(), "1:AAAA");
        let shown = config.to_masked_toml().unwrap();
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(!shown.contains("1:AAAA"), "{shown}");
        assert!(
            shown.contains("postgres://herald:********@db.internal/herald"),
            "{shown}"
        );
        assert!(!format!("{config:?}").contains("s3cr3t-pw"));
        assert!(!format!("{config:?}").contains("1:AAAA"));
    }

    #[test]
    fn a_secret_set_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("url");
        std::fs::write(&secret, "sqlite://x.db").unwrap();
        let err = Config::load_from(
            None,
            &env(&[
                ("HERALD_DATABASE_URL", "sqlite://y.db"),
                ("HERALD_DATABASE_URL_FILE", secret.to_str().unwrap()),
            ]),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::SecretTwice(_)));
    }

    #[test]
    fn invalid_values_are_refused_with_the_key_named() {
        for (key, value, expected) in [
            ("HERALD_DATABASE_URL", "mysql://x", "database_url"),
            ("HERALD_DATABASE_URL", "sqlite://:memory:", "database_url"),
            ("HERALD_DEFAULT_REGION", "Germany", "default_region"),
            ("HERALD_TLS__CERT_FILE", "/x.pem", "tls"),
            ("HERALD_HTTP__BODY_LIMIT", "10", "body_limit"),
            ("HERALD_KEYS__PROVIDER", "vault", "provider"),
            ("HERALD_LOG__LEVEL", "info,[", "log.level"),
            ("HERALD_LISTEN", "not-an-address", "listen"),
            ("HERALD_KEYS__ROOT_KEY", "1:AAAA", "provider"),
        ] {
            let err = Config::load_from(None, &env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{key}={value}: {err}");
            assert!(!err.contains("1:AAAA"), "secret echoed: {err}");
        }
    }

    #[test]
    fn url_masking() {
        assert_eq!(
            mask_url("postgres://u:p@h:5432/d"),
            "postgres://u:********@h:5432/d"
        );
        assert_eq!(mask_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            mask_url("postgres://h/d?user=u&password=p&sslmode=require"),
            "postgres://h/d?user=u&password=********&sslmode=require"
        );
        assert_eq!(mask_url("sqlite://./x.db"), "sqlite://./x.db");
        assert_eq!(mask_url("garbage"), "********");
    }
}
