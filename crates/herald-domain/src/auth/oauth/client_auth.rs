//! Client authentication at the token and revocation endpoints (RFC 6749 §2.3, RFC 7523 §3):
//! a secret compared in constant time against its keyed hash, or a signed assertion whose `jti`
//! is remembered so it works once.

use secrecy::ExposeSecret;

use super::{
    CLIENT_AUTH_FAILED, ClientAuthMethod, JwtRefusal, OAuth, OAuthError, PresentedClient,
    StoredOAuthClient, jwt,
};
use crate::ids::OAuthClientId;
use herald_crypto::hash::sha256;

impl OAuth {
    /// The client a request authenticates as (RFC 6749 §2.3, RFC 7523 §3).
    pub(super) async fn authenticate_client(
        &self,
        presented: Option<&PresentedClient>,
    ) -> Result<StoredOAuthClient, OAuthError> {
        let presented = presented.ok_or(CLIENT_AUTH_FAILED.because("no_client_authentication"))?;
        match presented {
            PresentedClient::Secret {
                method,
                client_id,
                secret,
            } => {
                let hasher = self.0.keyring.token_hasher();
                let client = match OAuthClientId::parse(client_id) {
                    Ok(id) => self.0.store.oauth_client(&id).await?,
                    Err(_) => None,
                };
                let Some(client) = client else {
                    // Hashing anyway: an unknown client costs what a known one does.
                    let _ = hasher.hash(secret.expose_secret());
                    return Err(CLIENT_AUTH_FAILED.because("unknown_client").into());
                };
                let stored = client.secret_hash.as_deref().unwrap_or(&[]);
                if !hasher.matches(secret.expose_secret(), stored)
                    || client.record.auth_method != *method
                {
                    return Err(CLIENT_AUTH_FAILED.because("bad_secret").into());
                }
                Self::usable(client)
            }
            PresentedClient::Assertion {
                client_id,
                assertion,
            } => {
                let issuer = jwt::assertion_issuer(assertion);
                let id = match (client_id, &issuer) {
                    (Some(id), Some(iss)) if id != iss => None,
                    (Some(id), _) => Some(id.clone()),
                    (None, iss) => iss.clone(),
                };
                let client = match id.as_deref().map(OAuthClientId::parse) {
                    Some(Ok(id)) => self.0.store.oauth_client(&id).await?,
                    _ => None,
                };
                let client = client.ok_or(CLIENT_AUTH_FAILED.because("unknown_client"))?;
                let Some(jwk) = client
                    .record
                    .jwk
                    .as_ref()
                    .filter(|_| client.record.auth_method == ClientAuthMethod::PrivateKeyJwt)
                else {
                    return Err(CLIENT_AUTH_FAILED.because("wrong_auth_method").into());
                };
                let settings = &self.0.settings;
                let token_endpoint = settings.token_endpoint();
                let now = self.0.clock.now();
                let verified = jwt::verify_assertion(
                    assertion,
                    jwk,
                    client.record.id.as_str(),
                    &[token_endpoint.as_str(), settings.issuer.as_str()],
                    now,
                )
                .map_err(|refusal| {
                    CLIENT_AUTH_FAILED.because(match refusal {
                        JwtRefusal::Expired => "expired_assertion",
                        JwtRefusal::TooLong => "assertion_lifetime_too_long",
                        _ => "bad_assertion",
                    })
                })?;
                let expires_at = chrono::DateTime::from_timestamp(verified.exp, 0).unwrap_or(now);
                let fresh = self
                    .0
                    .store
                    .remember_assertion(
                        &client.record.id,
                        &sha256(&[verified.jti.as_bytes()]),
                        expires_at,
                        now,
                    )
                    .await?;
                if !fresh {
                    return Err(CLIENT_AUTH_FAILED.because("replayed_assertion").into());
                }
                Self::usable(client)
            }
        }
    }

    fn usable(client: StoredOAuthClient) -> Result<StoredOAuthClient, OAuthError> {
        if client.record.revoked_at.is_some() {
            return Err(CLIENT_AUTH_FAILED.because("revoked_client").into());
        }
        Ok(client)
    }
}
