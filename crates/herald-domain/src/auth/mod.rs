//! Integrations and their API keys: who may call Herald, with which scopes, until when.
//!
//! Keys are bearer tokens with 256 random bits. Only a keyed hash is stored; a presented token
//! is hashed, looked up by hash and the hashes compared in constant time. Revocation and expiry
//! are read from the store on every request, so they bind on the very next request on every
//! node. `last_used_at` is collected in memory and written in batches, so authentication costs
//! one indexed read and no write.

mod clients;
pub mod oauth;

pub use clients::ClientRegistration;
mod scope;
mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::TimeDelta;

pub use oauth::OAuth;
pub use scope::{Scope, Scopes, UnknownScope};
pub use token::{ApiToken, TOKEN_PREFIX};

use crate::audit::{Action, AuditEvent, AuditRecord, Detail, Details, Initiator, Outcome, Target};
use crate::batch::Batcher;
use crate::clock::{Clock, Timestamp};
use crate::ids::{AccessTokenId, ApiKeyId, IntegrationId, OAuthClientId};
use crate::keys::Keyring;
use crate::store::{PageRequest, Store, StoreError};

/// Look-ups one query takes at most, and how many such queries may run at once.
const LOOKUP_BATCH: usize = 256;
const LOOKUPS_IN_FLIGHT: usize = 1;

/// The integration created on first start; its first key is printed once.
pub const ADMIN_INTEGRATION: &str = "admin";
/// Longest key lifetime a caller may ask for: ten years.
pub const MAX_KEY_LIFETIME_DAYS: u32 = 3650;
const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRecord {
    pub id: IntegrationId,
    pub name: String,
    pub created_at: Timestamp,
    /// Revoked integrations keep their records (and the audit trail naming them); nothing
    /// of theirs authenticates again and they get no new credentials.
    pub revoked_at: Option<Timestamp>,
}

/// An API key as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub integration_id: IntegrationId,
    /// The public start of the token (`hk_1a2b3c4d`), to recognise it.
    pub prefix: String,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

/// A key about to be stored: its record and the keyed hash of its token.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub token_hash: [u8; 32],
}

/// A freshly issued key: the record and the token, which is never available again.
#[derive(Debug)]
pub struct IssuedApiKey {
    pub record: ApiKeyRecord,
    pub token: ApiToken,
}

/// What a caller authenticated with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// An API key (`hk_…`).
    ApiKey(ApiKeyId),
    /// An OAuth 2.0 access token issued to one of the integration's clients.
    OAuth {
        client_id: OAuthClientId,
        token_id: AccessTokenId,
    },
}

impl Credential {
    /// The long-lived credential behind the request: the key, or the OAuth client (not the
    /// token, which a client replaces every few minutes). Rate limits count per credential.
    pub fn holder(&self) -> &str {
        match self {
            Credential::ApiKey(id) => id.as_str(),
            Credential::OAuth { client_id, .. } => client_id.as_str(),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub integration_id: IntegrationId,
    pub credential: Credential,
    pub scopes: Scopes,
}

impl Principal {
    /// The bootstrap superuser (`admin`): every scope, every integration's resources, every
    /// subject.
    pub fn is_admin(&self) -> bool {
        self.scopes.is_admin()
    }

    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.allows(scope)
    }
}

/// Who manages integrations and keys: the local operator (the command line, which holds the
/// database and the root key anyway) or an API key with `integrations:manage` or `admin`.
#[derive(Debug, Clone, Copy)]
pub enum Manager<'a> {
    Operator,
    Key(&'a Principal),
}

impl Manager<'_> {
    /// Only an operator or an admin key reaches the `admin` integration or grants `admin`: a
    /// key manager provisions integrations without becoming the superuser.
    fn is_superuser(self) -> bool {
        match self {
            Manager::Operator => true,
            Manager::Key(principal) => principal.is_admin(),
        }
    }
}

/// Why a credential was refused. For logs and the audit trail; the caller only ever learns
/// "unauthorized", so probing cannot tell a revoked key from an unknown one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    #[error("no credential")]
    Missing,
    #[error("malformed credential")]
    Malformed,
    #[error("unknown credential")]
    Unknown,
    #[error("revoked credential")]
    Revoked,
    #[error("expired credential")]
    Expired,
    /// A token whose validity starts later than this node's clock allows (clock skew).
    #[error("credential not yet valid")]
    NotYetValid,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("an integration with this name already exists")]
    NameTaken,
    #[error("invalid integration name: {0}")]
    InvalidName(&'static str),
    #[error("a key needs at least one scope")]
    NoScopes,
    #[error("expires_in_days must be between 1 and {MAX_KEY_LIFETIME_DAYS}")]
    InvalidLifetime,
    #[error("integration not found")]
    IntegrationNotFound,
    #[error("API key not found")]
    KeyNotFound,
    #[error("OAuth client not found")]
    ClientNotFound,
    #[error("the integration is revoked")]
    IntegrationRevoked,
    #[error("the admin integration cannot be revoked")]
    AdminRevocationRefused,
    /// The client's key or authentication method does not fit (the text says why; constant).
    #[error("invalid client key: {0}")]
    InvalidClientKey(&'static str),
    /// A key manager without `admin` asked to grant `admin`.
    #[error("only an admin key may grant the admin scope")]
    AdminGrantRefused,
    #[error(transparent)]
    Unauthorized(#[from] Unauthorized),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the random number generator failed")]
    Random(#[from] herald_crypto::CryptoError),
}

/// Checks an integration name: 1–64 characters of letters, digits, space, `.`, `_` and `-`,
/// starting with a letter or digit. Names appear in logs and listings, so no control
/// characters and nothing that needs escaping.
pub fn validate_integration_name(name: &str) -> Result<(), AuthError> {
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(AuthError::InvalidName("1 to 64 characters"));
    }
    if !name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(AuthError::InvalidName("must start with a letter or digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'))
        || name.ends_with(' ')
    {
        return Err(AuthError::InvalidName(
            "letters, digits, space, '.', '_' and '-' only",
        ));
    }
    Ok(())
}

/// Key usage not yet written to the store.
#[derive(Debug, Default)]
struct LastUsed(Mutex<HashMap<ApiKeyId, Timestamp>>);

impl LastUsed {
    fn record(&self, id: &ApiKeyId, at: Timestamp) {
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(id) {
            Some(last) if *last >= at => {}
            Some(last) => *last = at,
            None => {
                pending.insert(id.clone(), at);
            }
        }
    }

    fn take(&self) -> Vec<(ApiKeyId, Timestamp)> {
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain().collect()
    }

    fn put_back(&self, uses: Vec<(ApiKeyId, Timestamp)>) {
        for (id, at) in uses {
            self.record(&id, at);
        }
    }
}

fn integration_created(initiator: &Initiator, record: &IntegrationRecord) -> AuditEvent {
    AuditEvent::new(initiator, Action::IntegrationCreated, Outcome::Success)
        .target(Target::Integration(record.id.clone()))
}

fn key_created(initiator: &Initiator, record: &ApiKeyRecord) -> AuditEvent {
    let scopes: Vec<&'static str> = record.scopes.iter().map(Scope::as_str).collect();
    AuditEvent::new(initiator, Action::ApiKeyCreated, Outcome::Success)
        .target(Target::ApiKey(record.id.clone()))
        .details(
            Details::new()
                .with("integration_id", &record.integration_id)
                .with("scopes", scopes)
                .with_opt("expires_at", record.expires_at.map(Detail::Time)),
        )
}

/// One stored key and its stored hash, as a token look-up finds it.
type FoundKey = Option<(ApiKeyRecord, Vec<u8>)>;

#[derive(Debug, Clone)]
pub struct Auth {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    default_lifetime: Option<TimeDelta>,
    last_used: Arc<LastUsed>,
    oauth: OAuth,
    // Concurrent requests' token look-ups share one query (still one per request's wait:
    // revocation binds on the next request).
    lookups: Batcher<[u8; 32], FoundKey>,
}

impl Auth {
    /// `default_lifetime_days`: the lifetime of keys issued without an explicit one
    /// (`None`: they do not expire).
    /// Must be called inside a Tokio runtime (it starts the batched look-up task).
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        default_lifetime_days: Option<u32>,
        oauth: OAuth,
    ) -> Self {
        let reader = Arc::clone(&store);
        let lookups = Batcher::spawn(
            LOOKUP_BATCH,
            LOOKUPS_IN_FLIGHT,
            move |hashes: Vec<[u8; 32]>| {
                let store = Arc::clone(&reader);
                async move { store.api_keys_by_hashes(&hashes).await }
            },
        );
        Self {
            lookups,
            store,
            keys,
            clock,
            default_lifetime: default_lifetime_days.map(|d| TimeDelta::days(i64::from(d))),
            last_used: Arc::default(),
            oauth,
        }
    }

    /// The OAuth 2.0 authorization server behind `/oauth/*`.
    pub fn oauth(&self) -> &OAuth {
        &self.oauth
    }

    pub async fn create_integration(
        &self,
        name: &str,
        initiator: &Initiator,
    ) -> Result<IntegrationRecord, AuthError> {
        validate_integration_name(name)?;
        let record = IntegrationRecord {
            id: IntegrationId::generate()?,
            name: name.to_owned(),
            created_at: self.clock.now(),
            revoked_at: None,
        };
        let audit = AuditRecord::new(&integration_created(initiator, &record), record.created_at);
        match self.store.insert_integration(&record, &audit).await {
            Ok(()) => Ok(record),
            Err(StoreError::Conflict) => Err(AuthError::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn integrations(
        &self,
        page: &PageRequest,
    ) -> Result<Vec<IntegrationRecord>, AuthError> {
        Ok(self.store.integrations(page).await?)
    }

    pub async fn integration(&self, id: &IntegrationId) -> Result<IntegrationRecord, AuthError> {
        self.store
            .integration(id)
            .await?
            .ok_or(AuthError::IntegrationNotFound)
    }

    /// The integration `by` may manage: any but `admin`'s own, which only the superuser
    /// reaches (to anyone else it does not exist).
    pub async fn managed_integration(
        &self,
        id: &IntegrationId,
        by: Manager<'_>,
    ) -> Result<IntegrationRecord, AuthError> {
        let record = self.integration(id).await?;
        if record.name == ADMIN_INTEGRATION && !by.is_superuser() {
            return Err(AuthError::IntegrationNotFound);
        }
        Ok(record)
    }

    /// Finds an integration by id (`int_…`) or by name, for the command line.
    pub async fn resolve_integration(
        &self,
        id_or_name: &str,
    ) -> Result<IntegrationRecord, AuthError> {
        let found = match IntegrationId::parse(id_or_name) {
            Ok(id) => self.store.integration(&id).await?,
            Err(_) => self.store.integration_by_name(id_or_name).await?,
        };
        found.ok_or(AuthError::IntegrationNotFound)
    }

    fn new_key(
        &self,
        integration_id: &IntegrationId,
        scopes: Scopes,
        lifetime_days: Option<u32>,
    ) -> Result<(NewApiKey, ApiToken), AuthError> {
        if scopes.is_empty() {
            return Err(AuthError::NoScopes);
        }
        let lifetime = match lifetime_days {
            Some(days) if (1..=MAX_KEY_LIFETIME_DAYS).contains(&days) => {
                Some(TimeDelta::days(i64::from(days)))
            }
            Some(_) => return Err(AuthError::InvalidLifetime),
            None => self.default_lifetime,
        };
        let now = self.clock.now();
        let token = ApiToken::generate()?;
        let record = ApiKeyRecord {
            id: ApiKeyId::generate()?,
            integration_id: integration_id.clone(),
            prefix: token.display_prefix(),
            scopes,
            created_at: now,
            expires_at: lifetime.map(|l| now + l),
            revoked_at: None,
            last_used_at: None,
        };
        let token_hash = self.keys.token_hasher().hash(token.expose());
        Ok((NewApiKey { record, token_hash }, token))
    }

    /// Issues a key for an integration. The token in the result is shown once and never again.
    /// A key manager that is not `admin` may grant any scope but `admin`.
    pub async fn issue_key(
        &self,
        integration_id: &IntegrationId,
        scopes: Scopes,
        lifetime_days: Option<u32>,
        by: Manager<'_>,
        initiator: &Initiator,
    ) -> Result<IssuedApiKey, AuthError> {
        let integration = self.managed_integration(integration_id, by).await?;
        if integration.revoked_at.is_some() {
            return Err(AuthError::IntegrationRevoked);
        }
        if scopes.is_admin() && !by.is_superuser() {
            return Err(AuthError::AdminGrantRefused);
        }
        let (new, token) = self.new_key(integration_id, scopes, lifetime_days)?;
        let audit = AuditRecord::new(&key_created(initiator, &new.record), new.record.created_at);
        self.store.insert_api_key(&new, &audit).await?;
        Ok(IssuedApiKey {
            record: new.record,
            token,
        })
    }

    /// Creates the `admin` integration with one admin key, the first time only. Returns the
    /// key when it was created now; `None` on every later start.
    pub async fn bootstrap_admin(&self) -> Result<Option<IssuedApiKey>, AuthError> {
        if self
            .store
            .integration_by_name(ADMIN_INTEGRATION)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let integration = IntegrationRecord {
            id: IntegrationId::generate()?,
            name: ADMIN_INTEGRATION.to_owned(),
            created_at: self.clock.now(),
            revoked_at: None,
        };
        let (new, token) = self.new_key(&integration.id, Scopes::new([Scope::Admin]), None)?;
        let system = Initiator::system();
        let audit = [
            AuditRecord::new(
                &integration_created(&system, &integration),
                integration.created_at,
            ),
            AuditRecord::new(&key_created(&system, &new.record), new.record.created_at),
        ];
        if self
            .store
            .insert_integration_with_key(&integration, &new, &audit)
            .await?
        {
            Ok(Some(IssuedApiKey {
                record: new.record,
                token,
            }))
        } else {
            Ok(None)
        }
    }

    pub async fn keys(
        &self,
        integration: Option<&IntegrationId>,
        page: &PageRequest,
        by: Manager<'_>,
    ) -> Result<Vec<ApiKeyRecord>, AuthError> {
        if let Some(id) = integration {
            self.managed_integration(id, by).await?;
        }
        Ok(self.store.api_keys(integration, page).await?)
    }

    /// Revokes a key; from the next request on it is refused. Revoking twice keeps the first
    /// revocation time. Returns the key and whether this call revoked it (and recorded that).
    /// The `admin` integration's keys exist only for the superuser: a key manager cannot lock
    /// the operator out.
    pub async fn revoke_key(
        &self,
        id: &ApiKeyId,
        by: Manager<'_>,
        initiator: &Initiator,
    ) -> Result<(ApiKeyRecord, bool), AuthError> {
        let key = self
            .store
            .api_key(id)
            .await?
            .ok_or(AuthError::KeyNotFound)?;
        match self.managed_integration(&key.integration_id, by).await {
            Ok(_) => {}
            Err(AuthError::IntegrationNotFound) => return Err(AuthError::KeyNotFound),
            Err(e) => return Err(e),
        }
        let now = self.clock.now();
        let event = AuditEvent::new(initiator, Action::ApiKeyRevoked, Outcome::Success)
            .target(Target::ApiKey(id.clone()));
        self.store
            .revoke_api_key(id, now, &AuditRecord::new(&event, now))
            .await?
            .ok_or(AuthError::KeyNotFound)
    }

    /// Authenticates a bearer credential: an API key or an OAuth access token.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let token = token.ok_or(Unauthorized::Missing)?;
        if !token::well_formed(token) {
            if oauth::jwt::looks_like_jwt(token) {
                return self.oauth.authenticate(token).await;
            }
            return Err(Unauthorized::Malformed.into());
        }
        let hasher = self.keys.token_hasher();
        let hash = hasher.hash(token);
        let (key, stored_hash) = self
            .lookups
            .submit(hash)
            .await?
            .ok_or(Unauthorized::Unknown)?;
        // The look-up was by hash already; the constant-time comparison keeps that property
        // even if a store ever matched on a prefix or case-insensitively.
        if !hasher.matches(token, &stored_hash) {
            return Err(Unauthorized::Unknown.into());
        }
        let now = self.clock.now();
        if key.revoked_at.is_some_and(|at| at <= now) {
            return Err(Unauthorized::Revoked.into());
        }
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(Unauthorized::Expired.into());
        }
        self.last_used.record(&key.id, now);
        Ok(Principal {
            integration_id: key.integration_id,
            credential: Credential::ApiKey(key.id),
            scopes: key.scopes,
        })
    }

    /// Writes collected `last_used_at` times in one transaction. On failure they are kept for
    /// the next flush.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let uses = self.last_used.take();
        if uses.is_empty() {
            return Ok(0);
        }
        match self.store.touch_api_keys(&uses).await {
            Ok(()) => Ok(uses.len()),
            Err(e) => {
                self.last_used.put_back(uses);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integration_names() {
        for good in ["shop", "Web Shop 2", "ehr.prod", "crm_eu-1", "a"] {
            assert!(validate_integration_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " shop",
            "shop ",
            "-shop",
            "shop\n",
            "shöp",
            "a/b",
            "<script>",
            &"x".repeat(65),
        ] {
            assert!(validate_integration_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn last_used_keeps_the_latest_time_per_key() {
        let tracker = LastUsed::default();
        let a = ApiKeyId::generate().unwrap();
        let t0 = chrono::DateTime::from_timestamp_millis(1_000).unwrap();
        let t1 = chrono::DateTime::from_timestamp_millis(2_000).unwrap();
        tracker.record(&a, t1);
        tracker.record(&a, t0);
        assert_eq!(tracker.take(), vec![(a.clone(), t1)]);
        assert!(tracker.take().is_empty());
        tracker.put_back(vec![(a.clone(), t0)]);
        tracker.record(&a, t1);
        assert_eq!(tracker.take(), vec![(a, t1)]);
    }
}
