//! What OAuth stores: clients, signing keys, revocations, and the storage they need.

use std::fmt;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::jwt::ClientJwk;
use crate::audit::AuditRecord;
use crate::auth::Scopes;
use crate::clock::Timestamp;
use crate::ids::{AccessTokenId, IntegrationId, OAuthClientId};
use crate::store::{PageRequest, StoreError};

/// How a client proves who it is at the token endpoint (RFC 7591 `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAuthMethod {
    /// The secret in HTTP Basic authentication (RFC 6749 §2.3.1), the default.
    ClientSecretBasic,
    /// The secret in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523); Herald holds only the public key.
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    pub const ALL: [ClientAuthMethod; 3] = [
        ClientAuthMethod::ClientSecretBasic,
        ClientAuthMethod::ClientSecretPost,
        ClientAuthMethod::PrivateKeyJwt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == value)
    }

    pub fn uses_secret(self) -> bool {
        self != ClientAuthMethod::PrivateKeyJwt
    }
}

impl fmt::Display for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OAuth client as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClientRecord {
    pub id: OAuthClientId,
    pub integration_id: IntegrationId,
    pub name: String,
    pub auth_method: ClientAuthMethod,
    /// The scopes it may request.
    pub scopes: Scopes,
    /// Its public key, for `private_key_jwt`.
    pub jwk: Option<ClientJwk>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A client as the token endpoint reads it: with the keyed hash of its secret.
#[derive(Debug, Clone)]
pub struct StoredOAuthClient {
    pub record: OAuthClientRecord,
    pub secret_hash: Option<Vec<u8>>,
}

/// A client about to be stored.
#[derive(Debug, Clone)]
pub struct NewOAuthClient {
    pub record: OAuthClientRecord,
    pub secret_hash: Option<[u8; 32]>,
}

/// A client secret (`hcs_` and 256 random bits). Shown once; `Debug` never prints it.
pub struct ClientSecret(pub(super) SecretString);

impl ClientSecret {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([REDACTED])")
    }
}

/// A newly registered client and, for the secret methods, its secret (never available again).
#[derive(Debug)]
pub struct CreatedOAuthClient {
    pub record: OAuthClientRecord,
    pub secret: Option<ClientSecret>,
}

/// An access-token signing key as stored: its private half encrypted under the system key,
/// and dropped once the key is retired (a retired key only verifies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    pub public_key: Vec<u8>,
    pub private_key_ciphertext: Option<Vec<u8>>,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
    /// After a rotation: when the last token it signed expires; it is not listed afterwards.
    pub verify_until: Option<Timestamp>,
}

/// Everything a node needs to verify tokens, as of one revocation generation.
#[derive(Debug, Clone, Default)]
pub struct OAuthSnapshot {
    /// Increases with every revocation and key change, so a node re-reads the rest only when
    /// it moved.
    pub generation: i64,
    pub revoked_clients: Vec<OAuthClientId>,
    /// Revoked tokens not yet expired.
    pub revoked_tokens: Vec<AccessTokenId>,
    pub signing_keys: Vec<StoredSigningKey>,
}

/// A revoked access token, remembered until it would have expired anyway.
#[derive(Debug, Clone)]
pub struct RevokedToken {
    pub token_id: AccessTokenId,
    pub client_id: OAuthClientId,
    pub expires_at: Timestamp,
}

/// How many credentials an integration's revocation took with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntegrationRevocation {
    pub api_keys: u64,
    pub oauth_clients: u64,
}

/// The audit entry of an integration's revocation, made once the counts are known.
pub type RevokeIntegrationAuditFn<'a> =
    &'a (dyn Fn(IntegrationRevocation) -> AuditRecord + Send + Sync);

#[async_trait]
pub trait OAuthStore: Send + Sync {
    async fn insert_oauth_client(
        &self,
        client: &NewOAuthClient,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    async fn oauth_client(
        &self,
        id: &OAuthClientId,
    ) -> Result<Option<StoredOAuthClient>, StoreError>;
    async fn oauth_clients(
        &self,
        integration: &IntegrationId,
        page: &PageRequest,
    ) -> Result<Vec<OAuthClientRecord>, StoreError>;
    /// Revokes a client (the first revocation time stays) and moves the generation. Returns
    /// the client and whether this call revoked it (and wrote `audit`).
    async fn revoke_oauth_client(
        &self,
        id: &OAuthClientId,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Option<(OAuthClientRecord, bool)>, StoreError>;
    /// Remembers a revoked token and moves the generation; false if it was revoked already.
    async fn revoke_access_token(
        &self,
        token: &RevokedToken,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    /// Revokes an integration with all its keys and clients, in one transaction. `None`: no
    /// such integration; `Some(None)`: it was revoked already.
    async fn revoke_integration(
        &self,
        id: &IntegrationId,
        at: Timestamp,
        audit: RevokeIntegrationAuditFn<'_>,
    ) -> Result<Option<Option<IntegrationRevocation>>, StoreError>;
    /// Remembers a client assertion's `jti` (hashed) until it expires. False when it was seen
    /// before: a replay. Forgets expired ones on the way.
    async fn remember_assertion(
        &self,
        client: &OAuthClientId,
        jti_hash: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// The current revocation generation: one tiny read.
    async fn oauth_generation(&self) -> Result<i64, StoreError>;
    async fn oauth_snapshot(&self, now: Timestamp) -> Result<OAuthSnapshot, StoreError>;
    /// Adds a signing key; the keys active until now are retired (`retired_at`, their private
    /// halves dropped) and verify until `verify_until`. Moves the generation.
    async fn insert_oauth_signing_key(
        &self,
        key: &StoredSigningKey,
        verify_until: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
}
