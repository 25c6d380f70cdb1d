use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::clock::Timestamp;
use herald_domain::ids::SubjectId;
use herald_domain::store::{KeyStore, RewrappedKey, StoreError, StoredKey};

use crate::audit::insert_audit;
use crate::convert::{id, limit, millis, version};
use crate::{Database, from_sqlx, read, write_tx};

const SYSTEM: &str = "system";

fn stored(root_version: i64, wrapped: Vec<u8>) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        root_version: version(root_version)?,
        wrapped,
    })
}

#[async_trait]
impl KeyStore for Database {
    async fn system_key(&self) -> Result<Option<StoredKey>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = read!(self, |pool| sqlx::query_as(
            "SELECT root_version, wrapped_key FROM system_keys WHERE name = $1"
        )
        .bind(SYSTEM)
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(|(v, w)| stored(v, w)).transpose()
    }

    async fn insert_system_key(&self, key: &StoredKey, now: Timestamp) -> Result<bool, StoreError> {
        let inserted = write_tx!(self, |tx| sqlx::query(
            "INSERT INTO system_keys (name, root_version, wrapped_key, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING"
        )
        .bind(SYSTEM)
        .bind(i64::from(key.root_version))
        .bind(&key.wrapped)
        .bind(millis(now))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?
        .rows_affected());
        Ok(inserted == 1)
    }

    async fn replace_system_key(
        &self,
        previous_version: u32,
        key: &StoredKey,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let updated = write_tx!(self, |tx| {
            let updated = sqlx::query(
                "UPDATE system_keys SET root_version = $1, wrapped_key = $2, rewrapped_at = $3
                 WHERE name = $4 AND root_version = $5",
            )
            .bind(i64::from(key.root_version))
            .bind(&key.wrapped)
            .bind(millis(now))
            .bind(SYSTEM)
            .bind(i64::from(previous_version))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            if updated {
                insert_audit!(&mut *tx, audit)?;
            }
            updated
        });
        Ok(updated)
    }

    async fn subject_key(&self, subject: &SubjectId) -> Result<Option<StoredKey>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = read!(self, |pool| sqlx::query_as(
            "SELECT root_version, wrapped_key FROM subject_keys WHERE subject_id = $1"
        )
        .bind(subject.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(|(v, w)| stored(v, w)).transpose()
    }

    async fn subject_keys_below(
        &self,
        root_version: u32,
        max: u32,
    ) -> Result<Vec<(SubjectId, StoredKey)>, StoreError> {
        let rows: Vec<(String, i64, Vec<u8>)> = read!(self, |pool| sqlx::query_as(
            "SELECT subject_id, root_version, wrapped_key FROM subject_keys
             WHERE root_version < $1 ORDER BY subject_id LIMIT $2"
        )
        .bind(i64::from(root_version))
        .bind(limit(max))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter()
            .map(|(subject, v, w)| Ok((id(&subject, SubjectId::parse)?, stored(v, w)?)))
            .collect()
    }

    async fn replace_subject_keys(
        &self,
        keys: &[RewrappedKey],
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError> {
        let replaced = write_tx!(self, |tx| {
            let mut replaced = 0;
            for key in keys {
                replaced += sqlx::query(
                    "UPDATE subject_keys SET root_version = $1, wrapped_key = $2, rewrapped_at = $3
                     WHERE subject_id = $4 AND root_version = $5",
                )
                .bind(i64::from(key.key.root_version))
                .bind(&key.key.wrapped)
                .bind(millis(now))
                .bind(key.subject_id.as_str())
                .bind(i64::from(key.previous_version))
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
            }
            if replaced > 0 {
                insert_audit!(&mut *tx, audit)?;
            }
            replaced
        });
        Ok(replaced)
    }
}
