use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::auth::Scopes;
use herald_domain::auth::oauth::{
    ClientAuthMethod, ClientJwk, IntegrationRevocation, NewOAuthClient, OAuthClientRecord,
    OAuthSnapshot, OAuthStore, RevokeIntegrationAuditFn, RevokedToken, StoredOAuthClient,
    StoredSigningKey,
};
use herald_domain::clock::Timestamp;
use herald_domain::ids::{AccessTokenId, IntegrationId, OAuthClientId};
use herald_domain::store::{PageRequest, StoreError};

use crate::audit::insert_audit;
use crate::convert::{id, limit, millis, opt_millis, opt_time, time};
use crate::{Database, from_sqlx, read, write_tx};

macro_rules! client_columns {
    () => {
        "id, integration_id, name, auth_method, scopes, jwk, created_at, revoked_at, secret_hash"
    };
}
type ClientRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<Vec<u8>>,
);

fn client(row: ClientRow) -> Result<StoredOAuthClient, StoreError> {
    let (client_id, integration_id, name, method, scopes, jwk, created_at, revoked_at, hash) = row;
    let corrupt = |what: &str| StoreError::Corrupt(format!("a stored OAuth client's {what}"));
    let jwk = match jwk {
        Some(text) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| corrupt("key is not JSON"))?;
            Some(ClientJwk::parse(&value).map_err(|_| corrupt("key is not valid"))?)
        }
        None => None,
    };
    Ok(StoredOAuthClient {
        record: OAuthClientRecord {
            id: id(&client_id, OAuthClientId::parse)?,
            integration_id: id(&integration_id, IntegrationId::parse)?,
            name,
            auth_method: ClientAuthMethod::parse(&method)
                .ok_or_else(|| corrupt("method is unknown"))?,
            scopes: Scopes::from_storage(&scopes).map_err(|_| corrupt("scope is unknown"))?,
            jwk,
            created_at: time(created_at)?,
            revoked_at: opt_time(revoked_at)?,
        },
        secret_hash: hash,
    })
}

/// Moves the revocation generation forward inside the caller's transaction. On PostgreSQL the
/// row lock orders concurrent revocations, and a node that reads the new number is
/// guaranteed to see the change that made it (same commit).
macro_rules! bump_generation {
    ($executor:expr) => {
        sqlx::query("UPDATE oauth_generation SET generation = generation + 1 WHERE id = 1")
            .execute($executor)
            .await
            .map_err(from_sqlx)
    };
}

#[async_trait]
impl OAuthStore for Database {
    async fn insert_oauth_client(
        &self,
        new: &NewOAuthClient,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let r = &new.record;
        let jwk = r.jwk.as_ref().map(|k| k.to_json().to_string());
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO oauth_clients (id, integration_id, name, auth_method, scopes,
                                            secret_hash, jwk, created_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)",
            )
            .bind(r.id.as_str())
            .bind(r.integration_id.as_str())
            .bind(r.name.as_str())
            .bind(r.auth_method.as_str())
            .bind(r.scopes.to_storage())
            .bind(new.secret_hash.map(|h| h.to_vec()))
            .bind(jwk.as_deref())
            .bind(millis(r.created_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            insert_audit!(&mut *tx, audit)?;
        });
        Ok(())
    }

    async fn oauth_client(
        &self,
        client_id: &OAuthClientId,
    ) -> Result<Option<StoredOAuthClient>, StoreError> {
        let row: Option<ClientRow> = read!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients WHERE id = $1"
        ))
        .bind(client_id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(client).transpose()
    }

    async fn oauth_clients(
        &self,
        integration_id: &IntegrationId,
        page: &PageRequest,
    ) -> Result<Vec<OAuthClientRecord>, StoreError> {
        let after = page.after.as_deref().unwrap_or("");
        let rows: Vec<ClientRow> = read!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients WHERE integration_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(integration_id.as_str())
        .bind(after)
        .bind(limit(page.limit))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter()
            .map(|row| client(row).map(|c| c.record))
            .collect()
    }

    async fn revoke_oauth_client(
        &self,
        client_id: &OAuthClientId,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Option<(OAuthClientRecord, bool)>, StoreError> {
        let (row, revoked): (Option<ClientRow>, bool) = write_tx!(self, |tx| {
            let revoked = sqlx::query(
                "UPDATE oauth_clients SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(millis(at))
            .bind(client_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            if revoked {
                bump_generation!(&mut *tx)?;
                insert_audit!(&mut *tx, audit)?;
            }
            let row = sqlx::query_as(concat!(
                "SELECT ",
                client_columns!(),
                " FROM oauth_clients WHERE id = $1"
            ))
            .bind(client_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            (row, revoked)
        });
        row.map(|row| Ok((client(row)?.record, revoked)))
            .transpose()
    }

    async fn revoke_access_token(
        &self,
        token: &RevokedToken,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let revoked = write_tx!(self, |tx| {
            let revoked = sqlx::query(
                "INSERT INTO oauth_revoked_tokens (token_id, client_id, expires_at, revoked_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (token_id) DO NOTHING",
            )
            .bind(token.token_id.as_str())
            .bind(token.client_id.as_str())
            .bind(millis(token.expires_at))
            .bind(millis(audit.recorded_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            if revoked {
                // Expired revocations are forgotten: an expired token is refused anyway.
                sqlx::query("DELETE FROM oauth_revoked_tokens WHERE expires_at <= $1")
                    .bind(millis(audit.recorded_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                bump_generation!(&mut *tx)?;
                insert_audit!(&mut *tx, audit)?;
            }
            revoked
        });
        Ok(revoked)
    }

    async fn revoke_integration(
        &self,
        integration_id: &IntegrationId,
        at: Timestamp,
        audit: RevokeIntegrationAuditFn<'_>,
    ) -> Result<Option<Option<IntegrationRevocation>>, StoreError> {
        let outcome = write_tx!(self, |tx| {
            let exists: Option<(Option<i64>,)> =
                sqlx::query_as("SELECT revoked_at FROM integrations WHERE id = $1")
                    .bind(integration_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            match exists {
                None => None,
                Some((Some(_),)) => Some(None),
                Some((None,)) => {
                    sqlx::query("UPDATE integrations SET revoked_at = $1 WHERE id = $2")
                        .bind(millis(at))
                        .bind(integration_id.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(from_sqlx)?;
                    let api_keys = sqlx::query(
                        "UPDATE api_keys SET revoked_at = $1
                         WHERE integration_id = $2 AND revoked_at IS NULL",
                    )
                    .bind(millis(at))
                    .bind(integration_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?
                    .rows_affected();
                    let oauth_clients = sqlx::query(
                        "UPDATE oauth_clients SET revoked_at = $1
                         WHERE integration_id = $2 AND revoked_at IS NULL",
                    )
                    .bind(millis(at))
                    .bind(integration_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?
                    .rows_affected();
                    bump_generation!(&mut *tx)?;
                    let counts = IntegrationRevocation {
                        api_keys,
                        oauth_clients,
                    };
                    insert_audit!(&mut *tx, &audit(counts))?;
                    Some(Some(counts))
                }
            }
        });
        Ok(outcome)
    }

    async fn remember_assertion(
        &self,
        client_id: &OAuthClientId,
        jti_hash: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let fresh = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM oauth_assertions WHERE expires_at <= $1")
                .bind(millis(now))
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            sqlx::query(
                "INSERT INTO oauth_assertions (client_id, jti_hash, expires_at)
                 VALUES ($1, $2, $3) ON CONFLICT (client_id, jti_hash) DO NOTHING",
            )
            .bind(client_id.as_str())
            .bind(&jti_hash[..])
            .bind(millis(expires_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1
        });
        Ok(fresh)
    }

    async fn oauth_generation(&self) -> Result<i64, StoreError> {
        let (generation,): (i64,) = read!(self, |pool| sqlx::query_as(
            "SELECT generation FROM oauth_generation WHERE id = 1"
        )
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?);
        Ok(generation)
    }

    async fn oauth_snapshot(&self, now: Timestamp) -> Result<OAuthSnapshot, StoreError> {
        // The generation first: whatever is read after it is at least as new, so a node never
        // believes it is up to date with less than the generation promises.
        let generation = self.oauth_generation().await?;
        let clients: Vec<(String,)> = read!(self, |pool| sqlx::query_as(
            "SELECT id FROM oauth_clients WHERE revoked_at IS NOT NULL"
        )
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        let tokens: Vec<(String,)> = read!(self, |pool| sqlx::query_as(
            "SELECT token_id FROM oauth_revoked_tokens WHERE expires_at > $1"
        )
        .bind(millis(now))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        type KeyRow = (
            String,
            Vec<u8>,
            Option<Vec<u8>>,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let keys: Vec<KeyRow> = read!(self, |pool| {
            sqlx::query_as(
            "SELECT kid, public_key, private_key_ciphertext, created_at, retired_at, verify_until
             FROM oauth_signing_keys
             WHERE retired_at IS NULL OR verify_until IS NULL OR verify_until > $1
             ORDER BY created_at"
        )
        .bind(millis(now))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?
        });
        Ok(OAuthSnapshot {
            generation,
            revoked_clients: clients
                .into_iter()
                .map(|(c,)| id(&c, OAuthClientId::parse))
                .collect::<Result<_, _>>()?,
            revoked_tokens: tokens
                .into_iter()
                .map(|(t,)| id(&t, AccessTokenId::parse))
                .collect::<Result<_, _>>()?,
            signing_keys: keys
                .into_iter()
                .map(|(kid, public_key, private, created, retired, until)| {
                    Ok(StoredSigningKey {
                        kid,
                        public_key,
                        private_key_ciphertext: private,
                        created_at: time(created)?,
                        retired_at: opt_time(retired)?,
                        verify_until: opt_time(until)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        })
    }

    async fn insert_oauth_signing_key(
        &self,
        key: &StoredSigningKey,
        verify_until: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            // The keys active until now only verify from here on: their private halves go.
            sqlx::query(
                "UPDATE oauth_signing_keys
                 SET retired_at = $1, verify_until = $2, private_key_ciphertext = NULL
                 WHERE retired_at IS NULL",
            )
            .bind(millis(key.created_at))
            .bind(millis(verify_until))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            sqlx::query(
                "INSERT INTO oauth_signing_keys (kid, public_key, private_key_ciphertext,
                                                 created_at, retired_at, verify_until)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(key.kid.as_str())
            .bind(&key.public_key[..])
            .bind(key.private_key_ciphertext.as_deref())
            .bind(millis(key.created_at))
            .bind(opt_millis(key.retired_at))
            .bind(opt_millis(key.verify_until))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            bump_generation!(&mut *tx)?;
            insert_audit!(&mut *tx, audit)?;
        });
        Ok(())
    }
}
