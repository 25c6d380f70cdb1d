use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::auth::{ApiKeyRecord, IntegrationRecord, NewApiKey, Scopes};
use herald_domain::clock::Timestamp;
use herald_domain::ids::{ApiKeyId, IntegrationId};
use herald_domain::store::{AuthStore, PageRequest, StoreError};

use crate::audit::insert_audit;
use crate::convert::{id, limit, millis, opt_millis, opt_time, time};
use crate::{Database, from_sqlx, read, select_in, write_tx};

type IntegrationRow = (String, String, i64, Option<i64>);

/// The columns [`api_key`] decodes, in its tuple's order. A macro, so every query stays a
/// `&'static str` (sqlx refuses SQL built at run time unless asserted safe).
macro_rules! api_key_columns {
    () => {
        "id, integration_id, prefix, scopes, created_at, expires_at, revoked_at, last_used_at"
    };
}
type ApiKeyRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn integration(row: IntegrationRow) -> Result<IntegrationRecord, StoreError> {
    let (integration_id, name, created_at, revoked_at) = row;
    Ok(IntegrationRecord {
        id: id(&integration_id, IntegrationId::parse)?,
        name,
        created_at: time(created_at)?,
        revoked_at: opt_time(revoked_at)?,
    })
}

fn api_key(row: ApiKeyRow) -> Result<ApiKeyRecord, StoreError> {
    let (key_id, integration_id, prefix, scopes, created_at, expires_at, revoked_at, last_used_at) =
        row;
    Ok(ApiKeyRecord {
        id: id(&key_id, ApiKeyId::parse)?,
        integration_id: id(&integration_id, IntegrationId::parse)?,
        prefix,
        scopes: Scopes::from_storage(&scopes)
            .map_err(|_| StoreError::Corrupt("a stored scope is unknown".into()))?,
        created_at: time(created_at)?,
        expires_at: opt_time(expires_at)?,
        revoked_at: opt_time(revoked_at)?,
        last_used_at: opt_time(last_used_at)?,
    })
}

/// Inserts one API key row; a macro so it compiles for whichever backend's executor it gets.
macro_rules! insert_api_key {
    ($executor:expr, $key:expr) => {{
        let key: &NewApiKey = $key;
        let r = &key.record;
        sqlx::query(
            "INSERT INTO api_keys (id, integration_id, token_hash, prefix, scopes, created_at,
                                   expires_at, revoked_at, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.id.as_str())
        .bind(r.integration_id.as_str())
        .bind(&key.token_hash[..])
        .bind(r.prefix.as_str())
        .bind(r.scopes.to_storage())
        .bind(millis(r.created_at))
        .bind(opt_millis(r.expires_at))
        .bind(opt_millis(r.revoked_at))
        .bind(opt_millis(r.last_used_at))
        .execute($executor)
        .await
        .map_err(from_sqlx)
    }};
}

#[async_trait]
impl AuthStore for Database {
    async fn insert_integration(
        &self,
        record: &IntegrationRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query("INSERT INTO integrations (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(record.id.as_str())
                .bind(record.name.as_str())
                .bind(millis(record.created_at))
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            insert_audit!(&mut *tx, audit)?;
        });
        Ok(())
    }

    async fn integration(
        &self,
        integration_id: &IntegrationId,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let row: Option<IntegrationRow> = read!(self, |pool| sqlx::query_as(
            "SELECT id, name, created_at, revoked_at FROM integrations WHERE id = $1"
        )
        .bind(integration_id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(integration).transpose()
    }

    async fn integration_by_name(
        &self,
        name: &str,
    ) -> Result<Option<IntegrationRecord>, StoreError> {
        let row: Option<IntegrationRow> = read!(self, |pool| sqlx::query_as(
            "SELECT id, name, created_at, revoked_at FROM integrations WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(integration).transpose()
    }

    async fn integrations(&self, page: &PageRequest) -> Result<Vec<IntegrationRecord>, StoreError> {
        let after = page.after.as_deref().unwrap_or("");
        let rows: Vec<IntegrationRow> = read!(self, |pool| {
            sqlx::query_as(
            "SELECT id, name, created_at, revoked_at FROM integrations WHERE id > $1 ORDER BY id LIMIT $2"
        )
        .bind(after)
        .bind(limit(page.limit))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?
        });
        rows.into_iter().map(integration).collect()
    }

    async fn insert_integration_with_key(
        &self,
        record: &IntegrationRecord,
        key: &NewApiKey,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let created = write_tx!(self, |tx| {
            let created = sqlx::query(
                "INSERT INTO integrations (id, name, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(record.id.as_str())
            .bind(record.name.as_str())
            .bind(millis(record.created_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            if created {
                insert_api_key!(&mut *tx, key)?;
                for record in audit {
                    insert_audit!(&mut *tx, record)?;
                }
            }
            created
        });
        Ok(created)
    }

    async fn insert_api_key(&self, key: &NewApiKey, audit: &AuditRecord) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            insert_api_key!(&mut *tx, key)?;
            insert_audit!(&mut *tx, audit)?;
        });
        Ok(())
    }

    async fn api_key(&self, key_id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<ApiKeyRow> = read!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            api_key_columns!(),
            " FROM api_keys WHERE id = $1"
        ))
        .bind(key_id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(api_key).transpose()
    }

    async fn api_keys_by_hashes(
        &self,
        hashes: &[[u8; 32]],
    ) -> Result<Vec<Option<(ApiKeyRecord, Vec<u8>)>>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        type Row = (
            String,
            String,
            String,
            String,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Vec<u8>,
        );
        let rows: Vec<Row> = read!(self, |pool| select_in!(
            pool,
            Row,
            concat!(
                "SELECT ",
                api_key_columns!(),
                ", token_hash FROM api_keys WHERE token_hash"
            ),
            hashes,
            |hash: &[u8; 32]| hash.to_vec()
        )?);
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for (a, b, c, d, e, f, g, h, stored) in rows {
            found.insert(stored.clone(), (api_key((a, b, c, d, e, f, g, h))?, stored));
        }
        Ok(hashes
            .iter()
            .map(|hash| found.get(&hash[..]).cloned())
            .collect())
    }

    async fn api_keys(
        &self,
        integration_id: Option<&IntegrationId>,
        page: &PageRequest,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let after = page.after.as_deref().unwrap_or("");
        let rows: Vec<ApiKeyRow> = match integration_id {
            Some(integration_id) => read!(self, |pool| sqlx::query_as(concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE integration_id = $1 AND id > $2 ORDER BY id LIMIT $3"
            ))
            .bind(integration_id.as_str())
            .bind(after)
            .bind(limit(page.limit))
            .fetch_all(pool)
            .await
            .map_err(from_sqlx)?),
            None => read!(self, |pool| sqlx::query_as(concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .bind(after)
            .bind(limit(page.limit))
            .fetch_all(pool)
            .await
            .map_err(from_sqlx)?),
        };
        rows.into_iter().map(api_key).collect()
    }

    async fn revoke_api_key(
        &self,
        key_id: &ApiKeyId,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<Option<(ApiKeyRecord, bool)>, StoreError> {
        let (row, revoked): (Option<ApiKeyRow>, bool) = write_tx!(self, |tx| {
            let revoked = sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(millis(at))
            .bind(key_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            if revoked {
                insert_audit!(&mut *tx, audit)?;
            }
            let row = sqlx::query_as(concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE id = $1"
            ))
            .bind(key_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            (row, revoked)
        });
        row.map(|row| Ok((api_key(row)?, revoked))).transpose()
    }

    async fn touch_api_keys(&self, uses: &[(ApiKeyId, Timestamp)]) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            for (key_id, at) in uses {
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $1
                     WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
                )
                .bind(millis(*at))
                .bind(key_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            }
        });
        Ok(())
    }
}
