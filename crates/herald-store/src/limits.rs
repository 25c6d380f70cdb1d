//! Integrations' own credential rates (`PATCH /v1/integrations/{id}`).

use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::ids::IntegrationId;
use herald_domain::limits::{LimitsStore, Rate};
use herald_domain::store::StoreError;

use crate::audit::insert_audit;
use crate::convert::id;
use crate::{Database, from_sqlx, read, write_tx};

#[async_trait]
impl LimitsStore for Database {
    async fn set_integration_rate(
        &self,
        integration: &IntegrationId,
        rate: Option<Rate>,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let (per_minute, burst) = match rate {
            Some(r) => (Some(i64::from(r.per_minute)), Some(i64::from(r.burst))),
            None => (None, None),
        };
        let found = write_tx!(self, |tx| {
            let updated = sqlx::query(
                "UPDATE integrations SET rate_per_minute = $1, rate_burst = $2 WHERE id = $3",
            )
            .bind(per_minute)
            .bind(burst)
            .bind(integration.as_str())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
            if updated == 1 {
                insert_audit!(&mut *tx, audit)?;
            }
            updated == 1
        });
        Ok(found)
    }

    async fn integration_rates(&self) -> Result<Vec<(IntegrationId, Rate)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = read!(self, |pool| sqlx::query_as(
            "SELECT id, rate_per_minute, rate_burst FROM integrations
             WHERE rate_per_minute IS NOT NULL AND rate_burst IS NOT NULL"
        )
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter()
            .map(|(integration, per_minute, burst)| {
                let corrupt = || StoreError::Corrupt("an integration's rate limit".into());
                let rate = Rate::new(
                    u32::try_from(per_minute).map_err(|_| corrupt())?,
                    u32::try_from(burst).map_err(|_| corrupt())?,
                )
                .map_err(|_| corrupt())?;
                Ok((id(&integration, IntegrationId::parse)?, rate))
            })
            .collect()
    }
}
