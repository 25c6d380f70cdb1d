//! The delivery worker's queue: leased claims, outcomes, content purges.

use std::collections::HashSet;

use async_trait::async_trait;
use herald_domain::clock::Timestamp;
use herald_domain::consent::{ConsentState, Standing};
use herald_domain::ids::{IntegrationId, MessageId, SubjectId};
use herald_domain::messages::{ClaimedMessage, DeliveryUpdate};
use herald_domain::store::{DeliveryStore, PurgeAuditFn, StoreError};
use herald_domain::webhooks::NewEvent;

use crate::bulk::{AuditBulk, MessageBulk};
use crate::bulk_delivery::{DeliveryBulk, FailedRow, RequeueRow, SentRow};
use crate::convert::{id, millis, opt_time, time};
use crate::{Database, claim_leased, from_sqlx, read, select_in, write_tx};

type ClaimRow = (
    String,
    String,
    String,
    i64,
    i64,
    Option<Vec<u8>>,
    String,
    String,
    bool,
);

/// Claims due messages: the inner select picks them (PostgreSQL skipping rows another node is
/// claiming right now), the update leases them. The lease is also the new due time, so a
/// message whose node died becomes due again when its lease runs out.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, lease_owner = $1,
               leased_until = $2, due_at = $2, updated_at = $3
             WHERE id IN (SELECT id FROM messages
                          WHERE status IN ('queued', 'sending') AND due_at <= $3
                          ORDER BY due_at LIMIT $4",
            $lock,
            ")
             RETURNING id, integration_id, subject_id, attempts, created_at, content_ciphertext,
               purpose, channel, business_initiated"
        )
    };
}

/// A claimed message's subject with one of its consent records (all null without any): the
/// subject and its consents come in one query.
type SubjectConsentRow = (
    String,
    Option<Vec<u8>>,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
);

fn claimed(row: ClaimRow, subjects: &[SubjectConsentRow]) -> Result<ClaimedMessage, StoreError> {
    let (
        message_id,
        integration_id,
        subject_id,
        attempts,
        created_at,
        content,
        purpose,
        channel,
        business_initiated,
    ) = row;
    let subject = subjects.iter().find(|(s, ..)| *s == subject_id);
    // The subject's records on the channel as they stand now: a withdrawal since the message
    // was accepted cancels it before this attempt.
    let mut consents: Vec<(String, Standing)> = Vec::new();
    for (s, _, _, p, c, state, expires_at, effective_at, by_subject) in subjects {
        let (Some(p), Some(state)) = (p, state) else {
            continue;
        };
        if *s != subject_id || c.as_deref() != Some(channel.as_str()) {
            continue;
        }
        if consents.iter().any(|(known, _)| known == p) {
            continue;
        }
        let standing = Standing {
            state: ConsentState::parse(state)
                .ok_or_else(|| StoreError::Corrupt("a stored consent state is unknown".into()))?,
            expires_at: opt_time(*expires_at)?,
            effective_at: time(effective_at.unwrap_or(0))?,
            by_subject: by_subject.unwrap_or(false),
        };
        consents.push((p.clone(), standing));
    }
    Ok(ClaimedMessage {
        purpose,
        consents,
        business_initiated,
        id: id(&message_id, MessageId::parse)?,
        integration_id: id(&integration_id, IntegrationId::parse)?,
        subject_id: id(&subject_id, SubjectId::parse)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at: time(created_at)?,
        content_ciphertext: content,
        phone_ciphertext: subject.and_then(|(_, phone, ..)| phone.clone()),
        subject_restricted: subject.is_some_and(|(_, _, restricted, ..)| *restricted),
    })
}

#[async_trait]
impl DeliveryStore for Database {
    async fn claim_messages(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let rows = claim_leased!(
            self,
            ClaimRow,
            claim_sql,
            " FOR UPDATE SKIP LOCKED",
            owner,
            lease_until,
            now,
            limit
        )?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut subject_ids: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        subject_ids.sort_unstable();
        subject_ids.dedup();
        let subjects: Vec<SubjectConsentRow> = read!(self, |pool| select_in!(
            pool,
            SubjectConsentRow,
            "SELECT s.id, s.phone_ciphertext, s.restricted, c.purpose, c.channel, c.state,
               c.expires_at, c.effective_at, c.by_subject
             FROM subjects AS s LEFT JOIN consents AS c ON c.subject_id = s.id
             WHERE s.id",
            &subject_ids,
            |s: &&str| s.to_string()
        )?);
        rows.into_iter()
            .map(|row| claimed(row, &subjects))
            .collect()
    }

    async fn record_deliveries(
        &self,
        owner: &str,
        updates: &[DeliveryUpdate],
    ) -> Result<Vec<bool>, StoreError> {
        let mut sent: Vec<SentRow<'_>> = Vec::new();
        let mut retried: Vec<RequeueRow<'_>> = Vec::new();
        let mut deferred: Vec<RequeueRow<'_>> = Vec::new();
        let mut failed: Vec<FailedRow<'_>> = Vec::new();
        let mut attempts = Vec::new();
        let mut audit = Vec::new();
        for update in updates {
            match update {
                DeliveryUpdate::Sent {
                    id,
                    provider_ref_index,
                    provider_ref_ciphertext,
                    attempt,
                    keep_content_until,
                    delivered_at,
                    audit: records,
                    ..
                } => {
                    sent.push((
                        id.as_str(),
                        provider_ref_index,
                        provider_ref_ciphertext,
                        delivered_at.map(millis),
                        keep_content_until.map(millis),
                        millis(attempt.finished_at),
                    ));
                    attempts.push((id.as_str(), attempt));
                    audit.extend(records.iter().cloned());
                }
                DeliveryUpdate::Retry {
                    id,
                    due_at,
                    attempt,
                    audit: record,
                } => {
                    retried.push((id.as_str(), millis(*due_at), millis(attempt.finished_at)));
                    attempts.push((id.as_str(), attempt));
                    audit.push(record.clone());
                }
                DeliveryUpdate::Failed {
                    id,
                    code,
                    provider_code,
                    at,
                    attempt,
                    audit: record,
                    ..
                } => {
                    failed.push((id.as_str(), code, *provider_code, millis(*at)));
                    if let Some(attempt) = attempt {
                        attempts.push((id.as_str(), attempt));
                    }
                    audit.push(record.clone());
                }
                DeliveryUpdate::Deferred { id, due_at } => {
                    deferred.push((id.as_str(), millis(*due_at), millis(*due_at)));
                }
            }
        }
        let held: HashSet<String> = write_tx!(self, |tx| {
            let mut held = HashSet::new();
            if !sent.is_empty() {
                held.extend(tx.mark_sent(owner, &sent).await.map_err(from_sqlx)?);
            }
            if !retried.is_empty() {
                held.extend(
                    tx.requeue(owner, &retried, false)
                        .await
                        .map_err(from_sqlx)?,
                );
            }
            if !deferred.is_empty() {
                held.extend(
                    tx.requeue(owner, &deferred, true)
                        .await
                        .map_err(from_sqlx)?,
                );
            }
            if !failed.is_empty() {
                held.extend(tx.mark_failed(owner, &failed).await.map_err(from_sqlx)?);
            }
            // What changed gets its history and events; every attempt made is recorded, and
            // audited, even when the lease was lost meanwhile — the provider was called.
            let mut history: Vec<(&str, &str, i64)> = Vec::new();
            let mut events: Vec<&NewEvent> = Vec::new();
            for update in updates {
                if !held.contains(update.id().as_str()) {
                    continue;
                }
                match update {
                    DeliveryUpdate::Sent {
                        id,
                        attempt,
                        delivered_at,
                        events: sent_events,
                        ..
                    } => {
                        history.push((id.as_str(), "sent", millis(attempt.finished_at)));
                        if let Some(at) = delivered_at {
                            history.push((id.as_str(), "delivered", millis(*at)));
                        }
                        events.extend(sent_events.iter());
                    }
                    DeliveryUpdate::Failed { id, at, event, .. } => {
                        history.push((id.as_str(), "failed", millis(*at)));
                        events.extend(event.iter());
                    }
                    DeliveryUpdate::Retry { .. } | DeliveryUpdate::Deferred { .. } => {}
                }
            }
            if !history.is_empty() {
                MessageBulk::insert_history(&mut *tx, &history)
                    .await
                    .map_err(from_sqlx)?;
            }
            if !attempts.is_empty() {
                tx.insert_attempts(&attempts).await.map_err(from_sqlx)?;
            }
            if !events.is_empty() {
                tx.insert_events(&events).await.map_err(from_sqlx)?;
            }
            if !audit.is_empty() {
                AuditBulk::insert_pending(&mut *tx, &audit)
                    .await
                    .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
            }
            held
        });
        Ok(updates
            .iter()
            .map(|u| held.contains(u.id().as_str()))
            .collect())
    }

    async fn purge_content(
        &self,
        now: Timestamp,
        limit: u32,
        audit: PurgeAuditFn<'_>,
    ) -> Result<(u64, u64), StoreError> {
        let limit = i64::from(limit.max(1));
        let counts = write_tx!(self, |tx| {
            let outbound = sqlx::query(
                "UPDATE messages SET content_ciphertext = NULL, content_purge_at = NULL
                 WHERE id IN (SELECT id FROM messages
                              WHERE content_purge_at IS NOT NULL AND content_purge_at <= $1
                              LIMIT $2)",
            )
            .bind(millis(now))
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
            let inbound = sqlx::query(
                "UPDATE inbound_messages SET content_ciphertext = NULL, content_purge_at = NULL
                 WHERE id IN (SELECT id FROM inbound_messages
                              WHERE content_purge_at IS NOT NULL AND content_purge_at <= $1
                              LIMIT $2)",
            )
            .bind(millis(now))
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
            if outbound + inbound > 0 {
                AuditBulk::insert_pending(&mut *tx, &[audit(outbound, inbound)])
                    .await
                    .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
            }
            (outbound, inbound)
        });
        Ok(counts)
    }
}
