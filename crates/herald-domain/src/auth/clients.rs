//! Managing OAuth clients, and revoking whole integrations: the same rules as API keys (only
//! the superuser reaches the `admin` integration or grants `admin`), every change audited in
//! its own transaction.

use serde_json::Value;

use super::oauth::{
    ClientAuthMethod, ClientJwk, CreatedOAuthClient, IntegrationRevocation, NewOAuthClient,
    OAuthClientRecord, new_client_secret,
};
use super::{Auth, AuthError, IntegrationRecord, Manager, Scope, Scopes};
use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::ids::{IntegrationId, OAuthClientId};
use crate::store::PageRequest;

/// What registering a client asks for.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    pub name: String,
    pub auth_method: ClientAuthMethod,
    pub scopes: Scopes,
    /// The public JWK, for `private_key_jwt` (and only for it).
    pub jwk: Option<Value>,
}

impl Auth {
    /// Registers an OAuth client for an integration. For the secret methods the secret is in
    /// the result, shown once; for `private_key_jwt` Herald keeps only the public key.
    pub async fn create_oauth_client(
        &self,
        integration_id: &IntegrationId,
        registration: ClientRegistration,
        by: Manager<'_>,
        initiator: &Initiator,
    ) -> Result<CreatedOAuthClient, AuthError> {
        let integration = self.managed_integration(integration_id, by).await?;
        if integration.revoked_at.is_some() {
            return Err(AuthError::IntegrationRevoked);
        }
        super::validate_integration_name(&registration.name)?;
        if registration.scopes.is_empty() {
            return Err(AuthError::NoScopes);
        }
        if registration.scopes.is_admin() && !by.is_superuser() {
            return Err(AuthError::AdminGrantRefused);
        }
        let jwk = match (registration.auth_method, &registration.jwk) {
            (ClientAuthMethod::PrivateKeyJwt, Some(value)) => {
                Some(ClientJwk::parse(value).map_err(AuthError::InvalidClientKey)?)
            }
            (ClientAuthMethod::PrivateKeyJwt, None) => {
                return Err(AuthError::InvalidClientKey(
                    "private_key_jwt needs the client's public key (jwk)",
                ));
            }
            (_, Some(_)) => {
                return Err(AuthError::InvalidClientKey(
                    "a key is only registered for private_key_jwt",
                ));
            }
            (_, None) => None,
        };
        let secret = if registration.auth_method.uses_secret() {
            Some(new_client_secret()?)
        } else {
            None
        };
        let record = OAuthClientRecord {
            id: OAuthClientId::generate()?,
            integration_id: integration_id.clone(),
            name: registration.name,
            auth_method: registration.auth_method,
            scopes: registration.scopes,
            jwk,
            created_at: self.clock.now(),
            revoked_at: None,
        };
        let secret_hash = secret
            .as_ref()
            .map(|s| self.keys.token_hasher().hash(s.expose()));
        let scopes: Vec<&'static str> = record.scopes.iter().map(Scope::as_str).collect();
        let event = AuditEvent::new(initiator, Action::OAuthClientCreated, Outcome::Success)
            .target(Target::OAuthClient(record.id.clone()))
            .details(
                Details::new()
                    .with("integration_id", &record.integration_id)
                    .with("auth_method", record.auth_method.as_str())
                    .with("scopes", scopes),
            );
        let new = NewOAuthClient {
            record,
            secret_hash,
        };
        self.store
            .insert_oauth_client(&new, &AuditRecord::new(&event, new.record.created_at))
            .await?;
        Ok(CreatedOAuthClient {
            record: new.record,
            secret,
        })
    }

    pub async fn oauth_clients(
        &self,
        integration_id: &IntegrationId,
        page: &PageRequest,
        by: Manager<'_>,
    ) -> Result<Vec<OAuthClientRecord>, AuthError> {
        self.managed_integration(integration_id, by).await?;
        Ok(self.store.oauth_clients(integration_id, page).await?)
    }

    /// Revokes a client: its tokens are refused from the next request on, on every node, and
    /// it gets no new ones. Revoking again keeps the first time and records nothing.
    pub async fn revoke_oauth_client(
        &self,
        id: &OAuthClientId,
        by: Manager<'_>,
        initiator: &Initiator,
    ) -> Result<(OAuthClientRecord, bool), AuthError> {
        let client = self
            .store
            .oauth_client(id)
            .await?
            .ok_or(AuthError::ClientNotFound)?;
        match self
            .managed_integration(&client.record.integration_id, by)
            .await
        {
            Ok(_) => {}
            Err(AuthError::IntegrationNotFound) => return Err(AuthError::ClientNotFound),
            Err(e) => return Err(e),
        }
        let now = self.clock.now();
        let event = AuditEvent::new(initiator, Action::OAuthClientRevoked, Outcome::Success)
            .target(Target::OAuthClient(id.clone()));
        self.store
            .revoke_oauth_client(id, now, &AuditRecord::new(&event, now))
            .await?
            .ok_or(AuthError::ClientNotFound)
    }

    /// Revokes an integration with every API key and OAuth client it has, in one
    /// transaction. The `admin` integration cannot be revoked (it would lock the operator
    /// out); the command line's operator can still create a new admin key.
    pub async fn revoke_integration(
        &self,
        id: &IntegrationId,
        by: Manager<'_>,
        initiator: &Initiator,
    ) -> Result<(IntegrationRecord, Option<IntegrationRevocation>), AuthError> {
        let integration = self.managed_integration(id, by).await?;
        if integration.name == super::ADMIN_INTEGRATION {
            return Err(AuthError::AdminRevocationRefused);
        }
        let now = self.clock.now();
        let audit = |counts: IntegrationRevocation| {
            let event = AuditEvent::new(initiator, Action::IntegrationRevoked, Outcome::Success)
                .target(Target::Integration(id.clone()))
                .details(
                    Details::new()
                        .with("api_keys", counts.api_keys)
                        .with("oauth_clients", counts.oauth_clients),
                );
            AuditRecord::new(&event, now)
        };
        let revoked = self
            .store
            .revoke_integration(id, now, &audit)
            .await?
            .ok_or(AuthError::IntegrationNotFound)?;
        let record = self.integration(id).await?;
        Ok((record, revoked))
    }
}
