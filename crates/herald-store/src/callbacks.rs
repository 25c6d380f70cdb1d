//! Provider callbacks: the inbox, the messages status reports name, and applying a processed
//! callback (status changes, customers' messages, events) in one transaction.

use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::clock::Timestamp;
use herald_domain::ids::{CallbackId, ConsentEventId, IntegrationId, MessageId, SubjectId};
use herald_domain::messages::catalog::CONSENT_NOTICE_PURPOSE;
use herald_domain::messages::{Channel, InboxEntry, MessageStatus, ReportBatch, ReportTarget};
use herald_domain::store::{CallbackStore, StoreError};
use herald_domain::webhooks::NewEvent;

use crate::bulk::{AuditBulk, MessageBulk};
use crate::bulk_delivery::DeliveryBulk;
use crate::convert::{id, millis, time};
use crate::{Database, claim_leased, from_sqlx, read, select_in, write_tx};

type InboxRow = (String, String, Vec<u8>, i64, i64);
type TargetRow = (
    String,
    String,
    String,
    String,
    Option<Vec<u8>>,
    String,
    Option<String>,
);

macro_rules! claim_callbacks_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE provider_inbox SET attempts = attempts + 1, lease_owner = $1, due_at = $2
             WHERE id IN (SELECT id FROM provider_inbox WHERE due_at <= $3 AND dead_at IS NULL
                          ORDER BY due_at LIMIT $4",
            $lock,
            ")
             RETURNING id, provider, body_ciphertext, received_at, attempts"
        )
    };
}

fn target(row: TargetRow) -> Result<ReportTarget, StoreError> {
    let (message_id, integration_id, subject_id, status, index, purpose, consent_event) = row;
    Ok(ReportTarget {
        id: id(&message_id, MessageId::parse)?,
        integration_id: id(&integration_id, IntegrationId::parse)?,
        subject_id: id(&subject_id, SubjectId::parse)?,
        status: MessageStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt("a stored message status is unknown".into()))?,
        provider_ref_index: index.and_then(|i| <[u8; 32]>::try_from(i.as_slice()).ok()),
        purpose,
        consent_event_id: consent_event
            .as_deref()
            .map(|e| id(e, ConsentEventId::parse))
            .transpose()?,
    })
}

#[async_trait]
impl CallbackStore for Database {
    async fn insert_callback(
        &self,
        entry: &InboxEntry,
        purge_at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO provider_inbox (id, provider, body_ciphertext, received_at, attempts,
                   due_at, purge_at) VALUES ($1, $2, $3, $4, 0, $4, $5)",
            )
            .bind(entry.id.as_str())
            .bind(&entry.provider)
            .bind(&entry.body_ciphertext)
            .bind(millis(entry.received_at))
            .bind(millis(purge_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            AuditBulk::insert_pending(&mut *tx, std::slice::from_ref(audit))
                .await
                .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
        });
        Ok(())
    }

    async fn claim_callbacks(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let rows = claim_leased!(
            self,
            InboxRow,
            claim_callbacks_sql,
            " FOR UPDATE SKIP LOCKED",
            owner,
            lease_until,
            now,
            limit
        )?;
        rows.into_iter()
            .map(|(cb, provider, body, received_at, attempts)| {
                Ok(InboxEntry {
                    id: id(&cb, CallbackId::parse)?,
                    provider,
                    body_ciphertext: body,
                    received_at: time(received_at)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn release_callback(
        &self,
        callback: &CallbackId,
        owner: &str,
        due_at: Timestamp,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE provider_inbox SET due_at = $3, lease_owner = NULL
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(callback.as_str())
            .bind(owner)
            .bind(millis(due_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        });
        Ok(())
    }

    async fn report_targets(
        &self,
        provider_ref_indexes: &[[u8; 32]],
        ids: &[MessageId],
    ) -> Result<Vec<ReportTarget>, StoreError> {
        let (by_index, by_id): (Vec<TargetRow>, Vec<TargetRow>) = read!(self, |pool| {
            let by_index = if provider_ref_indexes.is_empty() {
                Vec::new()
            } else {
                select_in!(
                    pool,
                    TargetRow,
                    "SELECT id, integration_id, subject_id, status, provider_ref_index, purpose,
                       consent_event_id
                     FROM messages WHERE provider_ref_index",
                    provider_ref_indexes,
                    |i: &[u8; 32]| i.to_vec()
                )?
            };
            let by_id = if ids.is_empty() {
                Vec::new()
            } else {
                select_in!(
                    pool,
                    TargetRow,
                    "SELECT id, integration_id, subject_id, status, provider_ref_index, purpose,
                       consent_event_id
                     FROM messages WHERE id",
                    ids,
                    |i: &MessageId| i.as_str().to_owned()
                )?
            };
            (by_index, by_id)
        });
        let mut targets = Vec::with_capacity(by_index.len() + by_id.len());
        for row in by_index.into_iter().chain(by_id) {
            let t = target(row)?;
            if !targets.iter().any(|known: &ReportTarget| known.id == t.id) {
                targets.push(t);
            }
        }
        Ok(targets)
    }

    async fn apply_reports(&self, batch: &ReportBatch) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            let mut audit: Vec<AuditRecord> = batch.audit.iter().cloned().collect();
            let mut events: Vec<&NewEvent> = Vec::new();
            for change in &batch.statuses {
                let error_code = change.error.as_ref().map(|e| e.code.as_str());
                let provider_code = change.error.as_ref().and_then(|e| e.provider_code);
                let from: Vec<&str> = change.from.iter().map(|s| s.as_str()).collect();
                // The allowed previous statuses as one delimited string: one statement shape
                // for any set.
                let from = format!(",{},", from.join(","));
                let purge_now =
                    change.status == MessageStatus::Failed || change.keep_content_until.is_none();
                let changed = sqlx::query(
                    "UPDATE messages SET status = $2, updated_at = $3,
                       error_code = COALESCE($4, error_code),
                       provider_code = COALESCE($5, provider_code),
                       content_ciphertext = CASE WHEN $6 THEN NULL ELSE content_ciphertext END,
                       content_purge_at = CASE WHEN $6 THEN NULL
                                               ELSE COALESCE(content_purge_at, $7) END
                     WHERE id = $1 AND $8 LIKE '%,' || status || ',%'",
                )
                .bind(change.message_id.as_str())
                .bind(change.status.as_str())
                .bind(millis(change.at))
                .bind(error_code)
                .bind(provider_code)
                .bind(purge_now)
                .bind(change.keep_content_until.map(millis))
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected()
                    == 1;
                if changed {
                    audit.push(change.audit.clone());
                    events.extend(change.event.iter());
                }
            }
            if !batch.history.is_empty() {
                let history: Vec<(&str, &str, i64)> = batch
                    .history
                    .iter()
                    .map(|(id, status, at)| (id.as_str(), status.as_str(), millis(*at)))
                    .collect();
                MessageBulk::insert_history(&mut *tx, &history)
                    .await
                    .map_err(from_sqlx)?;
            }
            for inbound in &batch.inbound {
                let stored = sqlx::query(
                    "INSERT INTO inbound_messages (id, subject_id, channel, provider_ref_index,
                       kind, content_ciphertext, sent_at, received_at, content_purge_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (provider_ref_index) DO NOTHING",
                )
                .bind(inbound.id.as_str())
                .bind(inbound.subject_id.as_str())
                .bind(inbound.channel.as_str())
                .bind(&inbound.provider_ref_index[..])
                .bind(&inbound.kind)
                .bind(&inbound.content_ciphertext)
                .bind(millis(inbound.sent_at))
                .bind(millis(inbound.received_at))
                .bind(millis(inbound.purge_at))
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected()
                    == 1;
                if !stored {
                    continue;
                }
                // The window runs from the customer's latest message.
                sqlx::query(
                    "UPDATE subjects SET last_inbound_at = $2
                     WHERE id = $1 AND (last_inbound_at IS NULL OR last_inbound_at < $2)",
                )
                .bind(inbound.subject_id.as_str())
                .bind(millis(inbound.sent_at))
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                if let Some(owner) = &inbound.owner {
                    crate::subjects::insert_link!(
                        &mut *tx,
                        &herald_domain::subjects::SubjectLink {
                            subject_id: inbound.subject_id.clone(),
                            integration_id: owner.clone(),
                            reason: herald_domain::subjects::LinkReason::Inbound,
                            at: inbound.received_at,
                        }
                    )?;
                }
                audit.push(inbound.audit.clone());
                events.extend(inbound.event.iter());
                // A keyword's consent changes and acknowledgement: only with a new message.
                crate::consent::write_consent_changes!(tx, &inbound.consent)?;
                crate::consent::insert_internal_messages!(tx, &inbound.replies);
                events.extend(inbound.consent.iter().filter_map(|c| c.event.as_ref()));
            }
            crate::consent::write_consent_changes!(tx, &batch.preferences)?;
            events.extend(batch.preferences.iter().filter_map(|c| c.event.as_ref()));
            if !events.is_empty() {
                tx.insert_events(&events).await.map_err(from_sqlx)?;
            }
            sqlx::query("DELETE FROM provider_inbox WHERE id = $1")
                .bind(batch.callback.as_str())
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            AuditBulk::insert_pending(&mut *tx, &audit)
                .await
                .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
        });
        Ok(())
    }

    async fn dead_letter_callback(
        &self,
        callback: &CallbackId,
        owner: &str,
        reason: &str,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            let set_aside = sqlx::query(
                "UPDATE provider_inbox SET dead_at = $3, dead_reason = $4, lease_owner = NULL
                 WHERE id = $1 AND lease_owner = $2 AND dead_at IS NULL",
            )
            .bind(callback.as_str())
            .bind(owner)
            .bind(millis(at))
            .bind(reason)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            if set_aside {
                AuditBulk::insert_pending(&mut *tx, std::slice::from_ref(audit))
                    .await
                    .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
            }
        });
        Ok(())
    }

    async fn purge_callbacks(
        &self,
        now: Timestamp,
        limit: u32,
        audit: &(dyn Fn(u64) -> AuditRecord + Send + Sync),
    ) -> Result<u64, StoreError> {
        let purged = write_tx!(self, |tx| {
            let purged = sqlx::query(
                "DELETE FROM provider_inbox WHERE id IN (
                   SELECT id FROM provider_inbox WHERE purge_at <= $1 ORDER BY purge_at LIMIT $2)",
            )
            .bind(millis(now))
            .bind(i64::from(limit.max(1)))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
            if purged > 0 {
                AuditBulk::insert_pending(&mut *tx, &[audit(purged)])
                    .await
                    .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
            }
            purged
        });
        Ok(purged)
    }

    async fn stored_callbacks(&self) -> Result<Vec<InboxEntry>, StoreError> {
        let rows: Vec<InboxRow> = read!(self, |pool| sqlx::query_as(
            "SELECT id, provider, body_ciphertext, received_at, attempts FROM provider_inbox
             ORDER BY id"
        )
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter()
            .map(|(cb, provider, body, received_at, attempts)| {
                Ok(InboxEntry {
                    id: id(&cb, CallbackId::parse)?,
                    provider,
                    body_ciphertext: body,
                    received_at: time(received_at)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn replace_callback(
        &self,
        callback: &CallbackId,
        body_ciphertext: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            match body_ciphertext {
                Some(body) => {
                    sqlx::query("UPDATE provider_inbox SET body_ciphertext = $2 WHERE id = $1")
                        .bind(callback.as_str())
                        .bind(body)
                        .execute(&mut *tx)
                        .await
                        .map_err(from_sqlx)?
                }
                None => sqlx::query("DELETE FROM provider_inbox WHERE id = $1")
                    .bind(callback.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?,
            };
        });
        Ok(())
    }

    async fn last_sender(
        &self,
        subject: &SubjectId,
        channel: Channel,
        since: Timestamp,
    ) -> Result<Option<IntegrationId>, StoreError> {
        let row: Option<(String,)> = read!(self, |pool| sqlx::query_as(
            "SELECT integration_id FROM messages
             WHERE subject_id = $1 AND channel = $2 AND created_at >= $3 AND purpose <> $4
             ORDER BY created_at DESC, id DESC LIMIT 1"
        )
        .bind(subject.as_str())
        .bind(channel.as_str())
        .bind(millis(since))
        .bind(CONSENT_NOTICE_PURPOSE)
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(|(i,)| id(&i, IntegrationId::parse)).transpose()
    }
}
