use async_trait::async_trait;
use herald_domain::clock::Timestamp;
use herald_domain::ids::{IntegrationId, MessageId, SubjectId};
use herald_domain::messages::{
    AcceptOutcome, Channel, MessageError, MessageRecord, MessageStatus, NewMessage,
};
use herald_domain::store::{IdempotentMessage, MessageStore, StoreError};

use std::collections::HashSet;

use crate::accept;
use crate::convert::{id, millis, time};
use crate::{Database, Pools, from_sqlx, read};

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
    Option<String>,
);

macro_rules! message_columns {
    () => {
        "id, integration_id, subject_id, channel, purpose, kind, status, attempts,
         provider_ref_ciphertext, error_code, provider_code, created_at, updated_at,
         consent_event_id"
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
        consent_event_id,
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
        consent_event_id: consent_event_id
            .as_deref()
            .map(|e| id(e, herald_domain::ids::ConsentEventId::parse))
            .transpose()?,
    })
}

#[async_trait]
impl MessageStore for Database {
    async fn accept_messages(
        &self,
        batch: &[NewMessage],
    ) -> Result<Vec<AcceptOutcome>, StoreError> {
        // Two sends with the same key in one batch: the first claims it, the others replay
        // (as if they had come a moment later).
        let mut keys = HashSet::new();
        let first_with_key: Vec<bool> = batch
            .iter()
            .map(|m| match &m.idempotency {
                None => true,
                Some(claim) => keys.insert((m.integration_id.as_str(), claim.key_hash)),
            })
            .collect();
        let candidates: Vec<&NewMessage> = batch
            .iter()
            .zip(&first_with_key)
            .filter(|(_, first)| **first)
            .map(|(m, _)| m)
            .collect();
        let written = match &self.pools {
            Pools::Sqlite { writer, .. } => accept::sqlite(writer, &candidates).await,
            // Boxed: its state (every column's array, the advisory locks) would otherwise make
            // this future, which the SQLite path also builds and moves, several KiB larger.
            Pools::Postgres(pool) => Box::pin(accept::postgres(pool, &candidates)).await,
        }
        .map_err(from_sqlx)?;
        Ok(batch
            .iter()
            .map(|m| {
                if written.capped.contains(m.id.as_str()) {
                    AcceptOutcome::CapReached
                } else if written.written.contains(m.id.as_str()) {
                    AcceptOutcome::Accepted
                } else {
                    AcceptOutcome::IdempotencyKeyTaken
                }
            })
            .collect())
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
