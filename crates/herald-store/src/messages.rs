use async_trait::async_trait;
use herald_domain::clock::Timestamp;
use herald_domain::ids::{IntegrationId, MessageId, SubjectId};
use herald_domain::messages::{
    AcceptOutcome, Channel, MessageError, MessageRecord, MessageStatus, NewMessage,
};
use herald_domain::store::{IdempotentMessage, MessageStore, StoreError};

use crate::bulk::{AuditBulk, MessageBulk};
use crate::convert::{id, millis, time};
use crate::{Database, from_sqlx, read, write_tx};

type MessageRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<Vec<u8>>,
    Option<String>,
    Option<i64>,
    i64,
    i64,
);

macro_rules! message_columns {
    () => {
        "id, integration_id, subject_id, channel, purpose, kind, status, attempts,
         provider_ref_ciphertext, error_code, provider_code, created_at, updated_at"
    };
}

fn status(value: &str) -> Result<MessageStatus, StoreError> {
    MessageStatus::parse(value)
        .ok_or_else(|| StoreError::Corrupt("a stored message status is unknown".into()))
}

fn message(row: MessageRow, history: Vec<(String, i64)>) -> Result<MessageRecord, StoreError> {
    let (
        message_id,
        integration_id,
        subject_id,
        channel,
        purpose,
        kind,
        current,
        attempts,
        provider_ref_ciphertext,
        error_code,
        provider_code,
        created_at,
        updated_at,
    ) = row;
    let mut history = history
        .into_iter()
        .map(|(s, at)| Ok((status(&s)?, time(at)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Reports can arrive out of order; show the history in the order of the life cycle.
    history.sort_by_key(|(s, at)| (MessageStatus::ALL.iter().position(|x| x == s), *at));
    Ok(MessageRecord {
        id: id(&message_id, MessageId::parse)?,
        integration_id: id(&integration_id, IntegrationId::parse)?,
        subject_id: id(&subject_id, SubjectId::parse)?,
        channel: Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt("a stored channel is unknown".into()))?,
        purpose,
        kind,
        status: status(&current)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        provider_message_id: None,
        provider_ref_ciphertext,
        error: error_code.map(|code| MessageError {
            code,
            provider_code,
        }),
        history,
        created_at: time(created_at)?,
        updated_at: time(updated_at)?,
    })
}

#[async_trait]
impl MessageStore for Database {
    async fn accept_messages(
        &self,
        batch: &[NewMessage],
    ) -> Result<Vec<AcceptOutcome>, StoreError> {
        let outcomes = write_tx!(self, |tx| {
            let mut outcomes = Vec::with_capacity(batch.len());
            for m in batch {
                let claimed = match &m.idempotency {
                    None => true,
                    // An expired claim is taken over; a live one makes this message a replay.
                    Some(claim) => {
                        sqlx::query(
                            "INSERT INTO idempotency_keys
                               (integration_id, key_hash, fingerprint, message_id, expires_at)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (integration_id, key_hash) DO UPDATE
                               SET fingerprint = excluded.fingerprint,
                                   message_id = excluded.message_id,
                                   expires_at = excluded.expires_at
                               WHERE idempotency_keys.expires_at <= $6",
                        )
                        .bind(m.integration_id.as_str())
                        .bind(&claim.key_hash[..])
                        .bind(&claim.fingerprint[..])
                        .bind(m.id.as_str())
                        .bind(millis(claim.expires_at))
                        .bind(millis(m.created_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(from_sqlx)?
                        .rows_affected()
                            == 1
                    }
                };
                outcomes.push(if claimed {
                    AcceptOutcome::Accepted
                } else {
                    AcceptOutcome::IdempotencyKeyTaken
                });
            }
            let accepted: Vec<&NewMessage> = batch
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| **outcome == AcceptOutcome::Accepted)
                .map(|(m, _)| m)
                .collect();
            if !accepted.is_empty() {
                MessageBulk::insert_messages(&mut *tx, &accepted)
                    .await
                    .map_err(from_sqlx)?;
                let history: Vec<(&str, &str, i64)> = accepted
                    .iter()
                    .map(|m| (m.id.as_str(), "queued", millis(m.created_at)))
                    .collect();
                MessageBulk::insert_history(&mut *tx, &history)
                    .await
                    .map_err(from_sqlx)?;
                let audit: Vec<_> = accepted.iter().map(|m| m.audit.clone()).collect();
                AuditBulk::insert_pending(&mut *tx, &audit)
                    .await
                    .map_err(|e| StoreError::AuditUnavailable(Box::new(e)))?;
            }
            outcomes
        });
        Ok(outcomes)
    }

    async fn idempotent_message(
        &self,
        integration: &IntegrationId,
        key_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<IdempotentMessage>, StoreError> {
        let row: Option<(Vec<u8>, String)> = read!(self, |pool| sqlx::query_as(
            "SELECT fingerprint, message_id FROM idempotency_keys
             WHERE integration_id = $1 AND key_hash = $2 AND expires_at > $3"
        )
        .bind(integration.as_str())
        .bind(&key_hash[..])
        .bind(millis(now))
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(|(fingerprint, message_id)| {
            Ok(IdempotentMessage {
                fingerprint: fingerprint.try_into().map_err(|_| {
                    StoreError::Corrupt("a stored fingerprint has the wrong length".into())
                })?,
                message_id: id(&message_id, MessageId::parse)?,
            })
        })
        .transpose()
    }

    async fn message(&self, message_id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        let (row, history): (Option<MessageRow>, Vec<(String, i64)>) = read!(self, |pool| {
            let row = sqlx::query_as(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE id = $1"
            ))
            .bind(message_id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(from_sqlx)?;
            let history =
                sqlx::query_as("SELECT status, at FROM message_history WHERE message_id = $1")
                    .bind(message_id.as_str())
                    .fetch_all(pool)
                    .await
                    .map_err(from_sqlx)?;
            (row, history)
        });
        row.map(|row| message(row, history)).transpose()
    }
}
