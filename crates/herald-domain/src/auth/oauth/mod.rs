//! OAuth 2.0 for integrations, machine to machine: the client-credentials grant (RFC 6749
//! §4.4) with secrets or signed client assertions (RFC 7523), JWT access tokens (RFC 9068)
//! signed with a rotating Ed25519 key, revocation (RFC 7009) and introspection (RFC 7662).
//!
//! Revocation binds on the next request on every node without a per-request read of the
//! token's state: each node keeps the revoked clients and tokens and the verifying keys as of
//! a *generation* that every revocation and key change moves forward in the same transaction.
//! A request reads only the generation — one tiny query shared by all requests waiting at
//! that moment — and the node re-reads the rest when it moved (ADR 0014).

mod client_auth;
pub mod jwt;
mod model;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use chrono::TimeDelta;
use herald_crypto::CryptoError;
use herald_crypto::aead::Binding;
use herald_crypto::signing::SigningKey;
use secrecy::SecretString;
use serde_json::{Value, json};

pub use jwt::{AccessClaims, ClientJwk, JwtRefusal};
pub use model::{
    ClientAuthMethod, ClientSecret, CreatedOAuthClient, IntegrationRevocation, NewOAuthClient,
    OAuthClientRecord, OAuthSnapshot, OAuthStore, RevokeIntegrationAuditFn, RevokedToken,
    StoredOAuthClient, StoredSigningKey,
};

use self::jwt::{TokenSigningKey, TokenVerifyingKey};
use super::{AuthError, Credential, Principal, Scope, Scopes, Unauthorized};
use crate::audit::{Action, Actor, Audit, AuditEvent, AuditRecord, Detail, Details, Initiator};
use crate::audit::{Outcome, Target};
use crate::batch::Batcher;
use crate::clock::{Clock, Timestamp};
use crate::ids::{AccessTokenId, IntegrationId, OAuthClientId};
use crate::keys::{KeyError, Keyring};
use crate::store::{Store, StoreError};

/// The assertion type of RFC 7523 §2.2.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The JWT authorization grant (RFC 7523 §2.1): Herald understands it but authorises no
/// client for it (`unauthorized_client`).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// Client secrets start with this, so secret scanners recognise a leaked one.
pub const CLIENT_SECRET_PREFIX: &str = "hcs_";
/// Longest access-token lifetime the configuration may set (compliance.md OAUTH-1).
pub const MAX_TOKEN_LIFETIME: TimeDelta = TimeDelta::minutes(15);
/// Verified tokens remembered per node, so a token's signature is checked once, not on
/// every request (the send path's budget: ADR 0014).
const VERIFIED_CACHE: usize = 10_000;

/// OAuth's error codes (RFC 6749 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
        }
    }
}

/// A refused OAuth request: the RFC error, a description for the caller (constant text, no
/// input echoed) and the finer reason for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub error: OAuthErrorCode,
    pub description: &'static str,
    pub reason: &'static str,
}

impl Refusal {
    pub const fn new(error: OAuthErrorCode, description: &'static str) -> Self {
        Self {
            error,
            description,
            reason: error_reason(error),
        }
    }

    const fn because(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }
}

const fn error_reason(error: OAuthErrorCode) -> &'static str {
    match error {
        OAuthErrorCode::InvalidRequest => "invalid_request",
        OAuthErrorCode::InvalidClient => "invalid_client",
        OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
        OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
        OAuthErrorCode::InvalidScope => "invalid_scope",
    }
}

const CLIENT_AUTH_FAILED: Refusal = Refusal::new(
    OAuthErrorCode::InvalidClient,
    "client authentication failed",
);

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("refused: {}", .0.error.as_str())]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot sign the access token")]
    Signing,
    #[error("the random number generator failed")]
    Random(#[from] CryptoError),
}

impl From<Refusal> for OAuthError {
    fn from(refusal: Refusal) -> Self {
        OAuthError::Refused(refusal)
    }
}

/// The issuer, audience and lifetimes Herald's tokens carry.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The `iss` of every token and the base of every endpoint URL (no trailing slash).
    pub issuer: String,
    /// The `aud` of every token: the API the tokens are for.
    pub audience: String,
    pub token_lifetime: TimeDelta,
}

impl OAuthSettings {
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.issuer)
    }
}

/// How a caller presented its client credentials.
pub enum PresentedClient {
    Secret {
        method: ClientAuthMethod,
        client_id: String,
        secret: SecretString,
    },
    Assertion {
        client_id: Option<String>,
        assertion: String,
    },
}

impl std::fmt::Debug for PresentedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PresentedClient::Secret { method, .. } => write!(f, "PresentedClient({method})"),
            PresentedClient::Assertion { .. } => f.write_str("PresentedClient(private_key_jwt)"),
        }
    }
}

/// A token request (RFC 6749 §4.4.2), parsed from the form.
#[derive(Debug)]
pub struct TokenRequest {
    pub grant_type: String,
    pub scope: Option<String>,
    pub client: Option<PresentedClient>,
}

/// An issued access token. `Debug` never prints the token.
pub struct IssuedToken {
    pub access_token: SecretString,
    pub token_id: AccessTokenId,
    pub expires_in: i64,
    pub scope: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_id", &self.token_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A token that verified, as remembered per node.
#[derive(Debug)]
struct Verified {
    claims: AccessClaims,
    integration_id: IntegrationId,
    client_id: OAuthClientId,
    token_id: AccessTokenId,
    scopes: Scopes,
}

impl Verified {
    fn from_claims(claims: AccessClaims) -> Option<Self> {
        Some(Self {
            integration_id: IntegrationId::parse(&claims.integration_id).ok()?,
            client_id: OAuthClientId::parse(&claims.client_id).ok()?,
            token_id: AccessTokenId::parse(&claims.jti).ok()?,
            scopes: Scopes::from_storage(&claims.scope).ok()?,
            claims,
        })
    }
}

/// What this node knows about revocations and keys, as of one generation.
#[derive(Debug, Default)]
struct View {
    generation: i64,
    revoked_clients: HashSet<OAuthClientId>,
    revoked_tokens: HashSet<AccessTokenId>,
    /// With the time until which each verifies (`None`: the active key).
    verifying: Vec<(TokenVerifyingKey, Option<Timestamp>)>,
    signing: Option<Arc<TokenSigningKey>>,
}

impl View {
    fn keys_at(&self, now: Timestamp) -> Vec<TokenVerifyingKey> {
        self.verifying
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| until > now))
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn is_revoked(&self, verified: &Verified) -> bool {
        self.revoked_clients.contains(&verified.client_id)
            || self.revoked_tokens.contains(&verified.token_id)
    }
}

fn signing_key_binding(kid: &str) -> Binding<'_> {
    Binding::new("oauth_signing_keys", "private_key_ciphertext", kid)
}

struct Inner {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    audit: Audit,
    settings: OAuthSettings,
    view: RwLock<Arc<View>>,
    reload: tokio::sync::Mutex<()>,
    generations: Batcher<(), i64>,
    verified: quick_cache::sync::Cache<String, Arc<Verified>>,
}

/// The authorization server and the verifier of its tokens. Cheap to clone.
#[derive(Clone)]
pub struct OAuth(Arc<Inner>);

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("issuer", &self.0.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl OAuth {
    /// Loads the signing keys (creating the first one on a new database) and the revocations.
    /// Must be called inside a Tokio runtime.
    pub async fn open(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        audit: Audit,
        settings: OAuthSettings,
    ) -> Result<Self, OAuthError> {
        let reader = Arc::clone(&store);
        // Every request waiting at one moment shares one read of the generation.
        let generations = Batcher::spawn(1024, 1, move |waiting: Vec<()>| {
            let store = Arc::clone(&reader);
            async move {
                let generation = store.oauth_generation().await?;
                Ok(vec![generation; waiting.len()])
            }
        });
        let oauth = Self(Arc::new(Inner {
            store,
            keyring,
            clock,
            audit,
            settings,
            view: RwLock::new(Arc::new(View {
                generation: -1,
                ..View::default()
            })),
            reload: tokio::sync::Mutex::new(()),
            generations,
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE),
        }));
        if oauth.current().await?.signing.is_none() {
            oauth.rotate_signing_key(&Initiator::system()).await?;
        }
        Ok(oauth)
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.0.settings
    }

    fn cached_view(&self) -> Arc<View> {
        Arc::clone(&self.0.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The view as of now: reads the generation (shared with concurrent callers) and, if it
    /// moved, everything else.
    async fn current(&self) -> Result<Arc<View>, OAuthError> {
        let generation = self.0.generations.submit(()).await?;
        let view = self.cached_view();
        if view.generation >= generation {
            return Ok(view);
        }
        let _one_reload_at_a_time = self.0.reload.lock().await;
        let view = self.cached_view();
        if view.generation >= generation {
            return Ok(view);
        }
        let snapshot = self.0.store.oauth_snapshot(self.0.clock.now()).await?;
        let fresh = Arc::new(self.view_of(snapshot)?);
        *self.0.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }

    fn view_of(&self, snapshot: OAuthSnapshot) -> Result<View, OAuthError> {
        let mut signing: Option<(Timestamp, Arc<TokenSigningKey>)> = None;
        let mut verifying = Vec::with_capacity(snapshot.signing_keys.len());
        for key in snapshot.signing_keys {
            if key.retired_at.is_none()
                && let Some(ciphertext) = &key.private_key_ciphertext
                && signing.as_ref().is_none_or(|(at, _)| key.created_at > *at)
            {
                let pkcs8 = self
                    .0
                    .keyring
                    .open_system(&signing_key_binding(&key.kid), ciphertext)?;
                signing = Some((
                    key.created_at,
                    Arc::new(TokenSigningKey::from_pkcs8(key.kid.clone(), &pkcs8)),
                ));
            }
            let until = if key.retired_at.is_some() {
                key.verify_until.or(key.retired_at)
            } else {
                None
            };
            verifying.push((TokenVerifyingKey::new(key.kid, key.public_key), until));
        }
        Ok(View {
            generation: snapshot.generation,
            revoked_clients: snapshot.revoked_clients.into_iter().collect(),
            revoked_tokens: snapshot.revoked_tokens.into_iter().collect(),
            verifying,
            signing: signing.map(|(_, key)| key),
        })
    }

    /// Makes a new signing key active. The previous one keeps verifying until the last token
    /// it can have signed has expired (now + the token lifetime), then leaves the key set.
    pub async fn rotate_signing_key(
        &self,
        initiator: &Initiator,
    ) -> Result<(String, Option<String>), OAuthError> {
        let previous = self
            .current()
            .await?
            .signing
            .as_ref()
            .map(|k| k.kid().to_owned());
        let (key, pkcs8) = SigningKey::generate()?;
        let kid = jwt::key_id_of(key.public_key());
        let now = self.0.clock.now();
        let verify_until = now + self.0.settings.token_lifetime;
        let stored = StoredSigningKey {
            kid: kid.clone(),
            public_key: key.public_key().to_vec(),
            private_key_ciphertext: Some(
                self.0
                    .keyring
                    .seal_system(&signing_key_binding(&kid), &pkcs8)?,
            ),
            created_at: now,
            retired_at: None,
            verify_until: None,
        };
        let mut details = Details::new().with("key_id", Detail::Id(kid.clone()));
        if let Some(previous) = &previous {
            details = details
                .with("previous_key_id", Detail::Id(previous.clone()))
                .with("verify_until", Detail::Time(verify_until));
        }
        let event = AuditEvent::new(initiator, Action::OAuthSigningKeyCreated, Outcome::Success)
            .target(Target::OAuthSigningKeys)
            .details(details);
        self.0
            .store
            .insert_oauth_signing_key(&stored, verify_until, &AuditRecord::new(&event, now))
            .await?;
        self.current().await?;
        Ok((kid, previous))
    }

    /// The public keys that verify tokens now (`/oauth/jwks.json`, RFC 7517).
    pub async fn jwks(&self) -> Result<Value, OAuthError> {
        let view = self.current().await?;
        let keys: Vec<Value> = view
            .keys_at(self.0.clock.now())
            .iter()
            .map(TokenVerifyingKey::jwk)
            .collect();
        Ok(json!({ "keys": keys }))
    }

    /// The authorization server metadata (RFC 8414 §2).
    pub fn metadata(&self) -> Value {
        let issuer = &self.0.settings.issuer;
        let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        let methods: Vec<&str> = ClientAuthMethod::ALL.iter().map(|m| m.as_str()).collect();
        json!({
            "issuer": issuer,
            "token_endpoint": self.0.settings.token_endpoint(),
            "jwks_uri": format!("{issuer}/oauth/jwks.json"),
            "scopes_supported": scopes,
            "response_types_supported": [],
            "grant_types_supported": [CLIENT_CREDENTIALS],
            "token_endpoint_auth_methods_supported": methods,
            "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256"],
            "revocation_endpoint": format!("{issuer}/oauth/revoke"),
            "revocation_endpoint_auth_methods_supported": methods,
            "introspection_endpoint": format!("{issuer}/oauth/introspect"),
            "introspection_endpoint_auth_methods_supported": ["bearer"],
            "service_documentation": format!("{issuer}/openapi.json"),
        })
    }

    /// Authenticates a bearer access token: signature (once per token per node), issuer,
    /// audience, type, time, and the revocations as of this request.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let view = self.current().await.map_err(|e| match e {
            OAuthError::Store(e) => AuthError::Store(e),
            other => AuthError::Store(StoreError::Internal(other.to_string().into())),
        })?;
        let verified = self.verified(token, &view)?;
        jwt::check_times(
            self.0.clock.now(),
            verified.claims.exp,
            Some(verified.claims.iat),
            None,
        )
        .map_err(unauthorized)?;
        if view.is_revoked(&verified) {
            return Err(Unauthorized::Revoked.into());
        }
        Ok(Principal {
            integration_id: verified.integration_id.clone(),
            credential: Credential::OAuth {
                client_id: verified.client_id.clone(),
                token_id: verified.token_id.clone(),
            },
            scopes: verified.scopes.clone(),
        })
    }

    fn verified(&self, token: &str, view: &View) -> Result<Arc<Verified>, Unauthorized> {
        if let Some(found) = self.0.verified.get(token) {
            return Ok(found);
        }
        let settings = &self.0.settings;
        let claims = jwt::verify_access_token(
            token,
            &view.keys_at(self.0.clock.now()),
            &settings.issuer,
            &settings.audience,
        )
        .map_err(unauthorized)?;
        let verified = Arc::new(Verified::from_claims(claims).ok_or(Unauthorized::Unknown)?);
        self.0
            .verified
            .insert(token.to_owned(), Arc::clone(&verified));
        Ok(verified)
    }

    /// Records a refused OAuth request, aggregated per source network and reason.
    pub async fn refused(
        &self,
        refusal: &Refusal,
        source: Option<std::net::IpAddr>,
        endpoint: &'static str,
    ) -> Result<(), StoreError> {
        self.0
            .audit
            .failure(
                Action::OAuthTokenRefused,
                source,
                refusal.reason,
                Details::new().with("endpoint", endpoint),
            )
            .await
    }

    /// The token endpoint (RFC 6749 §4.4): authenticates the client, checks the grant and the
    /// scope, signs a token and records its issue.
    pub async fn issue_token(&self, request: &TokenRequest) -> Result<IssuedToken, OAuthError> {
        let client = self.authenticate_client(request.client.as_ref()).await?;
        match request.grant_type.as_str() {
            CLIENT_CREDENTIALS => {}
            JWT_BEARER_GRANT => {
                return Err(Refusal::new(
                    OAuthErrorCode::UnauthorizedClient,
                    "clients may use the client_credentials grant only",
                )
                .into());
            }
            _ => {
                return Err(Refusal::new(
                    OAuthErrorCode::UnsupportedGrantType,
                    "only the client_credentials grant is supported",
                )
                .into());
            }
        }
        let scopes = granted_scopes(&client.record.scopes, request.scope.as_deref())?;
        let view = self.current().await?;
        let signer = view.signing.as_ref().ok_or(OAuthError::Signing)?;
        let now = self.0.clock.now();
        let lifetime = self.0.settings.token_lifetime;
        let token_id = AccessTokenId::generate()?;
        let record = &client.record;
        let claims = AccessClaims {
            iss: self.0.settings.issuer.clone(),
            aud: self.0.settings.audience.clone(),
            sub: record.id.to_string(),
            client_id: record.id.to_string(),
            scope: scopes.to_storage(),
            jti: token_id.to_string(),
            iat: now.timestamp(),
            exp: (now + lifetime).timestamp(),
            integration_id: record.integration_id.to_string(),
        };
        let token = signer.sign(&claims).map_err(|_| OAuthError::Signing)?;
        let scope_names: Vec<&'static str> = scopes.iter().map(Scope::as_str).collect();
        let initiator = Initiator::new(
            Actor::OAuthClient {
                integration_id: record.integration_id.clone(),
                client_id: record.id.clone(),
                token_id: token_id.clone(),
            },
            None,
        );
        let event = AuditEvent::new(&initiator, Action::OAuthTokenIssued, Outcome::Success)
            .target(Target::AccessToken(token_id.clone()))
            .details(
                Details::new()
                    .with("auth_method", record.auth_method.as_str())
                    .with("scopes", scope_names)
                    .with("expires_at", Detail::Time(now + lifetime)),
            );
        // No token leaves without its record.
        self.0.audit.append(&event).await?;
        Ok(IssuedToken {
            access_token: SecretString::from(token),
            token_id,
            expires_in: lifetime.num_seconds(),
            scope: claims.scope,
        })
    }

    /// Token revocation (RFC 7009): the client revokes one of its own tokens. An invalid or
    /// expired token is not an error (§2.2); another client's token is refused.
    pub async fn revoke_token(
        &self,
        client: Option<&PresentedClient>,
        token: &str,
    ) -> Result<bool, OAuthError> {
        let client = self.authenticate_client(client).await?;
        let view = self.current().await?;
        let now = self.0.clock.now();
        let Some(verified) = self.verified(token, &view).ok() else {
            return Ok(false);
        };
        if verified.claims.exp <= now.timestamp() {
            return Ok(false);
        }
        if verified.client_id != client.record.id {
            return Err(Refusal::new(
                OAuthErrorCode::UnauthorizedClient,
                "the token was not issued to this client",
            )
            .into());
        }
        let initiator = Initiator::new(
            Actor::OAuthClient {
                integration_id: verified.integration_id.clone(),
                client_id: verified.client_id.clone(),
                token_id: verified.token_id.clone(),
            },
            None,
        );
        let event = AuditEvent::new(&initiator, Action::OAuthTokenRevoked, Outcome::Success)
            .target(Target::AccessToken(verified.token_id.clone()));
        let revoked = RevokedToken {
            token_id: verified.token_id.clone(),
            client_id: verified.client_id.clone(),
            expires_at: chrono::DateTime::from_timestamp(verified.claims.exp, 0).unwrap_or(now),
        };
        let now_revoked = self
            .0
            .store
            .revoke_access_token(&revoked, &AuditRecord::new(&event, now))
            .await?;
        Ok(now_revoked)
    }

    /// Token introspection (RFC 7662): the claims of an active token, or `None`. A caller
    /// other than `admin` learns only about its own integration's tokens.
    pub async fn introspect(
        &self,
        token: &str,
        caller: &Principal,
    ) -> Result<Option<AccessClaims>, OAuthError> {
        let view = self.current().await?;
        let Ok(verified) = self.verified(token, &view) else {
            return Ok(None);
        };
        let now = self.0.clock.now();
        let active = jwt::check_times(now, verified.claims.exp, Some(verified.claims.iat), None)
            .is_ok()
            && !view.is_revoked(&verified)
            && (caller.is_admin() || caller.integration_id == verified.integration_id);
        Ok(active.then(|| verified.claims.clone()))
    }
}

fn unauthorized(refusal: JwtRefusal) -> Unauthorized {
    match refusal {
        JwtRefusal::Malformed => Unauthorized::Malformed,
        JwtRefusal::Expired => Unauthorized::Expired,
        JwtRefusal::NotYetValid => Unauthorized::NotYetValid,
        JwtRefusal::Algorithm
        | JwtRefusal::Type
        | JwtRefusal::UnknownKey
        | JwtRefusal::Invalid
        | JwtRefusal::TooLong => Unauthorized::Unknown,
    }
}

/// The scopes a token gets: those asked for, each of which the client must hold; all of the
/// client's when none are asked for (RFC 6749 §3.3).
fn granted_scopes(client: &Scopes, requested: Option<&str>) -> Result<Scopes, Refusal> {
    let refused = Refusal::new(
        OAuthErrorCode::InvalidScope,
        "a requested scope is unknown or not granted to this client",
    );
    let Some(requested) = requested.filter(|s| !s.trim().is_empty()) else {
        return Ok(client.clone());
    };
    let mut granted = Vec::new();
    for name in requested.split(' ').filter(|s| !s.is_empty()) {
        let scope: Scope = name.parse().map_err(|_| refused)?;
        // `allows`: a client holding `admin` may ask for less (least privilege by request).
        if !client.allows(scope) {
            return Err(refused);
        }
        granted.push(scope);
    }
    Ok(Scopes::new(granted))
}

/// A fresh client secret: shown once; only its keyed hash is stored.
pub(crate) fn new_client_secret() -> Result<ClientSecret, CryptoError> {
    super::token::random_secret(CLIENT_SECRET_PREFIX).map(ClientSecret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_narrowing_grants_only_what_the_client_holds() {
        let held = Scopes::new([Scope::MessagesSend, Scope::MessagesRead]);
        assert_eq!(granted_scopes(&held, None).unwrap(), held);
        assert_eq!(granted_scopes(&held, Some("  ")).unwrap(), held);
        assert_eq!(
            granted_scopes(&held, Some("messages:send")).unwrap(),
            Scopes::new([Scope::MessagesSend])
        );
        for refused in [
            "admin",
            "messages:send subjects:read",
            "bogus",
            "MESSAGES:SEND",
        ] {
            assert_eq!(
                granted_scopes(&held, Some(refused)).unwrap_err().error,
                OAuthErrorCode::InvalidScope,
                "{refused}"
            );
        }
        // A client holding `admin` may narrow its token to less.
        let admin = Scopes::new([Scope::Admin]);
        assert_eq!(
            granted_scopes(&admin, Some("messages:send")).unwrap(),
            Scopes::new([Scope::MessagesSend])
        );
    }

    #[test]
    fn client_secrets_are_long_random_and_prefixed() {
        let a = new_client_secret().unwrap();
        let b = new_client_secret().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert!(super::super::token::well_formed_secret(
            CLIENT_SECRET_PREFIX,
            a.expose()
        ));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
