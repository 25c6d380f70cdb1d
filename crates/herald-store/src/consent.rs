//! The consent ledger's storage: events appended, standings moved with an optimistic check,
//! and the messages a change queues — all in the caller's one transaction.

use async_trait::async_trait;
use herald_domain::clock::Timestamp;
use herald_domain::consent::{
    ConsentChange, ConsentState, Method, OptInCode, Origin, Standing, StoredConsent,
    StoredConsentEvent,
};
use herald_domain::ids::{ConsentEventId, IntegrationId, SubjectId};
use herald_domain::messages::{Channel, NewMessage};
use herald_domain::store::{ConsentStore, StoreError};

use crate::audit::insert_audit;
use crate::convert::{id, millis, opt_time, time};
use crate::{Database, from_sqlx, read, select_in, write_tx};

/// Appends consent changes inside the caller's transaction `$tx`: each event, its standing
/// (only if still the one the change was derived from, else `Conflict` and the caller's
/// transaction rolls back), its audit entry. Events to integrators are returned for the
/// caller's own bulk insert.
macro_rules! write_consent_changes {
    ($tx:expr, $changes:expr) => {{
        let changes: &[herald_domain::consent::ConsentChange] = $changes;
        let mut result: Result<(), herald_domain::store::StoreError> = Ok(());
        for change in changes {
            sqlx::query(
                "INSERT INTO consent_events (id, subject_id, purpose, channel, state, method,
                   notice_version, notice_hash, integration_id, evidence_ciphertext, captured_at,
                   recorded_at, expires_at, origin, effective)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(change.event_id.as_str())
            .bind(change.subject_id.as_str())
            .bind(&change.purpose)
            .bind(change.channel.as_str())
            .bind(change.state.as_str())
            .bind(change.method.as_str())
            .bind(change.notice_version.as_deref())
            .bind(change.notice_hash.map(|h| h.to_vec()))
            .bind(change.integration_id.as_ref().map(|i| i.as_str()))
            .bind(&change.evidence_ciphertext)
            .bind($crate::convert::millis(change.captured_at))
            .bind($crate::convert::millis(change.recorded_at))
            .bind($crate::convert::opt_millis(change.expires_at))
            .bind(change.origin.as_str())
            .bind(change.effective)
            .execute(&mut *$tx)
            .await
            .map_err($crate::from_sqlx)?;
            let standing = &change.standing;
            let moved = match (&change.previous, change.effective) {
                (None, _) => sqlx::query(
                    "INSERT INTO consents (subject_id, purpose, channel, state, expires_at,
                       event_id, updated_at, effective_at, by_subject)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (subject_id, purpose, channel) DO NOTHING",
                )
                .bind(change.subject_id.as_str())
                .bind(&change.purpose)
                .bind(change.channel.as_str())
                .bind(standing.state.as_str())
                .bind($crate::convert::opt_millis(standing.expires_at))
                .bind(change.event_id.as_str())
                .bind($crate::convert::millis(change.recorded_at))
                .bind($crate::convert::millis(standing.effective_at))
                .bind(standing.by_subject)
                .execute(&mut *$tx)
                .await
                .map_err($crate::from_sqlx)?,
                (Some(previous), true) => sqlx::query(
                    "UPDATE consents SET state = $4, expires_at = $5, event_id = $6,
                       updated_at = $7, effective_at = $9, by_subject = $10
                     WHERE subject_id = $1 AND purpose = $2 AND channel = $3 AND event_id = $8",
                )
                .bind(change.subject_id.as_str())
                .bind(&change.purpose)
                .bind(change.channel.as_str())
                .bind(standing.state.as_str())
                .bind($crate::convert::opt_millis(standing.expires_at))
                .bind(change.event_id.as_str())
                .bind($crate::convert::millis(change.recorded_at))
                .bind(previous.as_str())
                .bind($crate::convert::millis(standing.effective_at))
                .bind(standing.by_subject)
                .execute(&mut *$tx)
                .await
                .map_err($crate::from_sqlx)?,
                // A stale event leaves the standing, but was judged against it: it must still
                // be the one it was derived from.
                (Some(previous), false) => sqlx::query(
                    "UPDATE consents SET event_id = event_id
                     WHERE subject_id = $1 AND purpose = $2 AND channel = $3 AND event_id = $4",
                )
                .bind(change.subject_id.as_str())
                .bind(&change.purpose)
                .bind(change.channel.as_str())
                .bind(previous.as_str())
                .execute(&mut *$tx)
                .await
                .map_err($crate::from_sqlx)?,
            };
            if moved.rows_affected() != 1 {
                result = Err(herald_domain::store::StoreError::Conflict);
                break;
            }
            // Recording consent for a subject links the integration to it.
            if let Some(integration) = &change.integration_id {
                $crate::subjects::insert_link!(
                    &mut *$tx,
                    &herald_domain::subjects::SubjectLink {
                        subject_id: change.subject_id.clone(),
                        integration_id: integration.clone(),
                        reason: herald_domain::subjects::LinkReason::Consent,
                        at: change.recorded_at,
                    }
                )?;
            }
            $crate::audit::insert_audit!(&mut *$tx, &change.audit)?;
        }
        result
    }};
}

pub(crate) use write_consent_changes;

/// Queues messages Herald sends itself (one at a time: a handful per change at most) inside
/// the caller's transaction `$tx`, each with its `queued` history entry and audit entry.
macro_rules! insert_internal_messages {
    ($tx:expr, $messages:expr) => {{
        let messages: &[herald_domain::messages::NewMessage] = $messages;
        for m in messages {
            let created = $crate::convert::millis(m.created_at);
            sqlx::query(
                "INSERT INTO messages (id, integration_id, subject_id, channel, purpose, kind,
                   template_name, template_language, content_ciphertext, phi, status, due_at,
                   created_at, updated_at, consent_event_id, business_initiated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $11, $11, $12,
                         $13)",
            )
            .bind(m.id.as_str())
            .bind(m.integration_id.as_str())
            .bind(m.subject_id.as_str())
            .bind(m.channel.as_str())
            .bind(&m.purpose)
            .bind(m.kind)
            .bind(m.template.as_ref().map(|(n, _)| n.as_str()))
            .bind(m.template.as_ref().map(|(_, l)| l.as_str()))
            .bind(&m.content_ciphertext)
            .bind(m.phi)
            .bind(created)
            .bind(m.consent_event_id.as_ref().map(|e| e.as_str()))
            .bind(m.business_initiated)
            .execute(&mut *$tx)
            .await
            .map_err($crate::from_sqlx)?;
            sqlx::query(
                "INSERT INTO message_history (message_id, status, at) VALUES ($1, 'queued', $2)",
            )
            .bind(m.id.as_str())
            .bind(created)
            .execute(&mut *$tx)
            .await
            .map_err($crate::from_sqlx)?;
            $crate::audit::insert_audit!(&mut *$tx, &m.audit)?;
        }
    }};
}

pub(crate) use insert_internal_messages;

pub(crate) type ConsentRow = (
    String,
    String,
    String,
    String,
    Option<i64>,
    String,
    i64,
    i64,
    bool,
);

macro_rules! consent_columns {
    () => {
        "subject_id, purpose, channel, state, expires_at, event_id, updated_at, effective_at,
         by_subject"
    };
}

fn channel(value: &str) -> Result<Channel, StoreError> {
    Channel::parse(value).ok_or_else(|| StoreError::Corrupt("a stored channel is unknown".into()))
}

fn state(value: &str) -> Result<ConsentState, StoreError> {
    ConsentState::parse(value)
        .ok_or_else(|| StoreError::Corrupt("a stored consent state is unknown".into()))
}

pub(crate) fn consent(row: ConsentRow) -> Result<StoredConsent, StoreError> {
    let (
        subject_id,
        purpose,
        channel_name,
        state_name,
        expires_at,
        event_id,
        updated_at,
        effective_at,
        by_subject,
    ) = row;
    Ok(StoredConsent {
        subject_id: id(&subject_id, SubjectId::parse)?,
        purpose,
        channel: channel(&channel_name)?,
        standing: Standing {
            state: state(&state_name)?,
            expires_at: opt_time(expires_at)?,
            effective_at: time(effective_at)?,
            by_subject,
        },
        event_id: id(&event_id, ConsentEventId::parse)?,
        updated_at: time(updated_at)?,
    })
}

type EventRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Vec<u8>,
    i64,
    i64,
    Option<i64>,
    String,
    bool,
);

fn event(row: EventRow) -> Result<StoredConsentEvent, StoreError> {
    let (
        event_id,
        purpose,
        channel_name,
        state_name,
        method,
        notice_version,
        notice_hash,
        integration,
        evidence_ciphertext,
        captured_at,
        recorded_at,
        expires_at,
        origin,
        effective,
    ) = row;
    Ok(StoredConsentEvent {
        origin: Origin::parse(&origin)
            .ok_or_else(|| StoreError::Corrupt("a stored consent origin is unknown".into()))?,
        effective,
        id: id(&event_id, ConsentEventId::parse)?,
        purpose,
        channel: channel(&channel_name)?,
        state: state(&state_name)?,
        method: Method::parse(&method)
            .ok_or_else(|| StoreError::Corrupt("a stored consent method is unknown".into()))?,
        notice_version,
        notice_hash: notice_hash
            .map(|h| {
                <[u8; 32]>::try_from(h.as_slice())
                    .map_err(|_| StoreError::Corrupt("a stored notice hash is malformed".into()))
            })
            .transpose()?,
        integration_id: integration
            .as_deref()
            .map(|i| id(i, IntegrationId::parse))
            .transpose()?,
        evidence_ciphertext,
        captured_at: time(captured_at)?,
        recorded_at: time(recorded_at)?,
        expires_at: opt_time(expires_at)?,
    })
}

type CodeRow = (Vec<u8>, String, String, String, String, i64, i64);

fn code(row: CodeRow) -> Result<OptInCode, StoreError> {
    let (hash, integration, purpose, channel_name, notice_version, created_at, expires_at) = row;
    Ok(OptInCode {
        code_hash: <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| StoreError::Corrupt("a stored code hash is malformed".into()))?,
        integration_id: id(&integration, IntegrationId::parse)?,
        purpose,
        channel: channel(&channel_name)?,
        notice_version,
        created_at: time(created_at)?,
        expires_at: time(expires_at)?,
    })
}

#[async_trait]
impl ConsentStore for Database {
    async fn record_consents(
        &self,
        changes: &[ConsentChange],
        messages: &[NewMessage],
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            write_consent_changes!(tx, changes)?;
            insert_internal_messages!(tx, messages);
            let events: Vec<_> = changes.iter().filter_map(|c| c.event.as_ref()).collect();
            if !events.is_empty() {
                crate::bulk_delivery::DeliveryBulk::insert_events(&mut *tx, &events)
                    .await
                    .map_err(from_sqlx)?;
            }
        });
        Ok(())
    }

    async fn consents(&self, subject: &SubjectId) -> Result<Vec<StoredConsent>, StoreError> {
        let rows: Vec<ConsentRow> = read!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            consent_columns!(),
            " FROM consents WHERE subject_id = $1 ORDER BY purpose, channel"
        ))
        .bind(subject.as_str())
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(consent).collect()
    }

    async fn consent_history(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<StoredConsentEvent>, StoreError> {
        let rows: Vec<EventRow> = read!(self, |pool| sqlx::query_as(
            "SELECT id, purpose, channel, state, method, notice_version, notice_hash,
               integration_id, evidence_ciphertext, captured_at, recorded_at, expires_at, origin,
               effective
             FROM consent_events WHERE subject_id = $1 ORDER BY seq"
        )
        .bind(subject.as_str())
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(event).collect()
    }

    async fn lapsed_opt_ins(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredConsent>, StoreError> {
        let rows: Vec<ConsentRow> = read!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            consent_columns!(),
            " FROM consents WHERE state = 'pending' AND expires_at <= $1
              ORDER BY expires_at LIMIT $2"
        ))
        .bind(millis(now))
        .bind(i64::from(limit.max(1)))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter().map(consent).collect()
    }

    async fn insert_opt_in_code(
        &self,
        code: &OptInCode,
        audit: &herald_domain::audit::AuditRecord,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO opt_in_codes (code_hash, integration_id, purpose, channel,
                   notice_version, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&code.code_hash[..])
            .bind(code.integration_id.as_str())
            .bind(&code.purpose)
            .bind(code.channel.as_str())
            .bind(&code.notice_version)
            .bind(millis(code.created_at))
            .bind(millis(code.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            insert_audit!(&mut *tx, audit)?;
        });
        Ok(())
    }

    async fn opt_in_codes(
        &self,
        hashes: &[[u8; 32]],
        now: Timestamp,
    ) -> Result<Vec<OptInCode>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<CodeRow> = read!(self, |pool| select_in!(
            pool,
            CodeRow,
            "SELECT code_hash, integration_id, purpose, channel, notice_version, created_at,
               expires_at FROM opt_in_codes WHERE code_hash",
            hashes,
            |h: &[u8; 32]| h.to_vec()
        )?);
        let mut codes: Vec<OptInCode> = rows
            .into_iter()
            .map(code)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|c| c.expires_at > now)
            .collect();
        codes.dedup_by(|a, b| a.code_hash == b.code_hash);
        Ok(codes)
    }

    async fn messages_since(
        &self,
        subject: &SubjectId,
        purpose: &str,
        since: Timestamp,
    ) -> Result<(u64, Option<Timestamp>), StoreError> {
        let (count, oldest): (i64, Option<i64>) = read!(self, |pool| sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM messages
             WHERE subject_id = $1 AND purpose = $2 AND created_at > $3
               AND status <> 'failed'"
        )
        .bind(subject.as_str())
        .bind(purpose)
        .bind(millis(since))
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?);
        Ok((u64::try_from(count).unwrap_or(0), opt_time(oldest)?))
    }
}
