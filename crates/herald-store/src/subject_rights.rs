//! Restriction, legal holds, rectification, erasure and the export's read (issue 6).

use async_trait::async_trait;
use herald_domain::clock::Timestamp;
use herald_domain::ids::SubjectId;
use herald_domain::rights::data::{
    AttemptData, AuditData, EventData, InboundData, IncidentContactData, LinkData, MessageData,
};
use herald_domain::rights::{
    Erasure, ErasureTally, LegalHoldChange, Rectification, Rectified, RestrictionChange,
    SealErasure, SubjectData, SubjectStanding,
};
use herald_domain::store::{StoreError, SubjectRecord, SubjectRightsStore};
use sqlx::Row as _;

use crate::audit::{insert_audit, update_audited};
use crate::bulk_delivery::DeliveryBulk;
use crate::convert::{id, millis, opt_time, time};
use crate::{Database, Pools, from_sqlx, read, write_tx};

type StandingRow = (
    String,
    i64,
    bool,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<Vec<u8>>,
);

const STANDING_SQL: &str = "SELECT id, created_at, restricted, last_inbound_at, phone_index,
    erased_at, restricted_at, restriction_reason_ciphertext, legal_hold_at,
    legal_hold_reason_ciphertext, rectified_at, phone_ciphertext
    FROM subjects WHERE id = $1";

/// The standing and the phone number's ciphertext.
fn standing(row: StandingRow) -> Result<(SubjectStanding, Option<Vec<u8>>), StoreError> {
    let (
        subject_id,
        created_at,
        restricted,
        last_inbound_at,
        phone_index,
        erased_at,
        restricted_at,
        restriction_reason,
        legal_hold_at,
        legal_hold_reason,
        rectified_at,
        phone_ciphertext,
    ) = row;
    let phone_index = phone_index
        .map(|i| {
            <[u8; 32]>::try_from(i.as_slice())
                .map_err(|_| StoreError::Corrupt("a stored blind index is malformed".into()))
        })
        .transpose()?;
    Ok((
        SubjectStanding {
            record: SubjectRecord {
                id: id(&subject_id, SubjectId::parse)?,
                created_at: time(created_at)?,
                restricted,
                last_inbound_at: opt_time(last_inbound_at)?,
                consents: Vec::new(),
            },
            phone_index,
            erased_at: opt_time(erased_at)?,
            restricted_at: opt_time(restricted_at)?,
            restriction_reason_ciphertext: restriction_reason,
            legal_hold_at: opt_time(legal_hold_at)?,
            legal_hold_reason_ciphertext: legal_hold_reason,
            rectified_at: opt_time(rectified_at)?,
        },
        phone_ciphertext,
    ))
}

/// A message row with raw times (converted after the read).
type RawMessage = (MessageData, i64, i64, Option<i64>);

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Reads every row of one subject, on whichever pool `$pool` is (the body compiles per backend).
macro_rules! subject_rows {
    ($pool:expr, $subject:expr, $like:expr, $audit_sql:expr) => {{
        let pool = $pool;
        let subject: &str = $subject;
        let standing: Option<StandingRow> = sqlx::query_as(STANDING_SQL)
            .bind(subject)
            .fetch_optional(pool)
            .await
            .map_err(from_sqlx)?;
        let messages: Vec<RawMessage> = sqlx::query(
            "SELECT id, integration_id, channel, purpose, kind, template_name, template_language,
                    content_ciphertext, phi, status, attempts, provider_ref_ciphertext, error_code,
                    provider_code, consent_event_id, created_at, updated_at, content_purge_at
             FROM messages WHERE subject_id = $1 ORDER BY created_at, id",
        )
        .bind(subject)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?
        .iter()
        .map(|r| -> Result<RawMessage, sqlx::Error> {
            let message = MessageData {
                id: r.try_get(0)?,
                integration_id: r.try_get(1)?,
                channel: r.try_get(2)?,
                purpose: r.try_get(3)?,
                kind: r.try_get(4)?,
                template_name: r.try_get(5)?,
                template_language: r.try_get(6)?,
                content_ciphertext: r.try_get(7)?,
                phi: r.try_get(8)?,
                status: r.try_get(9)?,
                attempts: u32_of(r.try_get(10)?),
                provider_ref_ciphertext: r.try_get(11)?,
                error_code: r.try_get(12)?,
                provider_code: r.try_get(13)?,
                consent_event_id: r.try_get(14)?,
                created_at: Timestamp::UNIX_EPOCH,
                updated_at: Timestamp::UNIX_EPOCH,
                content_purge_at: None,
                history: Vec::new(),
                attempt_log: Vec::new(),
            };
            Ok((message, r.try_get(15)?, r.try_get(16)?, r.try_get(17)?))
        })
        .collect::<Result<_, _>>()
        .map_err(from_sqlx)?;
        let history: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT h.message_id, h.status, h.at FROM message_history AS h
             JOIN messages AS m ON m.id = h.message_id
             WHERE m.subject_id = $1 ORDER BY h.at, h.status",
        )
        .bind(subject)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
        type AttemptRow = (String, i64, i64, i64, String, Option<i64>, Option<i64>, i64);
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT a.message_id, a.attempt, a.started_at, a.finished_at, a.outcome,
                    a.http_status, a.provider_code, a.latency_ms
             FROM message_attempts AS a JOIN messages AS m ON m.id = a.message_id
             WHERE m.subject_id = $1 ORDER BY a.message_id, a.attempt",
        )
        .bind(subject)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
        type InboundRow = (
            String,
            String,
            String,
            Option<Vec<u8>>,
            i64,
            i64,
            Option<i64>,
        );
        let inbound: Vec<InboundRow> = sqlx::query_as(
            "SELECT id, channel, kind, content_ciphertext, sent_at, received_at, content_purge_at
             FROM inbound_messages WHERE subject_id = $1 ORDER BY received_at, id",
        )
        .bind(subject)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
        type EventRow = (String, String, String, String, i64, i64, i64);
        let events: Vec<EventRow> = sqlx::query_as(
            "SELECT event_id, endpoint_id, event_type, status, attempts, created_at, updated_at
             FROM webhook_deliveries WHERE subject_id = $1 ORDER BY created_at, event_id",
        )
        .bind(subject)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
        let requests: Vec<crate::rights::Row> = sqlx::query_as(concat!(
            "SELECT ",
            crate::rights::columns!(),
            " FROM rights_requests WHERE subject_id = $1 ORDER BY received_at, id"
        ))
        .bind(subject)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
        let audit: Vec<(i64, i64, String)> = sqlx::query_as($audit_sql)
            .bind($like)
            .bind(subject)
            .fetch_all(pool)
            .await
            .map_err(from_sqlx)?;
        let links: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT integration_id, reason, linked_at FROM subject_links WHERE subject_id = $1
             ORDER BY linked_at, integration_id",
        )
        .bind(subject)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
        (
            standing, messages, history, attempts, inbound, events, requests, audit, links,
        )
    }};
}

#[async_trait]
impl SubjectRightsStore for Database {
    async fn subject_standing(
        &self,
        subject: &SubjectId,
    ) -> Result<Option<SubjectStanding>, StoreError> {
        let row: Option<StandingRow> = read!(self, |pool| sqlx::query_as(STANDING_SQL)
            .bind(subject.as_str())
            .fetch_optional(pool)
            .await
            .map_err(from_sqlx)?);
        row.map(|r| standing(r).map(|(s, _)| s)).transpose()
    }

    async fn set_restriction(&self, change: &RestrictionChange) -> Result<bool, StoreError> {
        let applied = update_audited!(
            self,
            sqlx::query(
                "UPDATE subjects SET restricted = $2, restricted_at = $3,
                   restriction_reason_ciphertext = $4
                 WHERE id = $1 AND erased_at IS NULL AND restricted = $5",
            )
            .bind(change.subject_id.as_str())
            .bind(change.restrict)
            .bind(change.restrict.then(|| millis(change.at)))
            .bind(change.reason_ciphertext.as_deref())
            .bind(!change.restrict),
            &change.audit
        );
        Ok(applied)
    }

    async fn set_legal_hold(&self, change: &LegalHoldChange) -> Result<bool, StoreError> {
        let hold = change.hold_reason_ciphertext.is_some();
        let applied = update_audited!(
            self,
            sqlx::query(
                "UPDATE subjects SET legal_hold_at = $2, legal_hold_reason_ciphertext = $3
                 WHERE id = $1 AND erased_at IS NULL",
            )
            .bind(change.subject_id.as_str())
            .bind(hold.then(|| millis(change.at)))
            .bind(change.hold_reason_ciphertext.as_deref()),
            &change.audit
        );
        Ok(applied)
    }

    async fn rectify_subject(&self, change: &Rectification) -> Result<Rectified, StoreError> {
        let result = write_tx!(self, |tx| {
            let updated = sqlx::query(
                "UPDATE subjects SET phone_index = $2, phone_ciphertext = $3,
                   last_inbound_at = NULL, rectified_at = $4
                 WHERE id = $1 AND phone_index = $5 AND erased_at IS NULL",
            )
            .bind(change.subject_id.as_str())
            .bind(&change.phone_index[..])
            .bind(&change.phone_ciphertext)
            .bind(millis(change.at))
            .bind(&change.previous_index[..])
            .execute(&mut *tx)
            .await;
            match updated {
                // The new number is another subject's (registered meanwhile): nothing written.
                Err(e) => match from_sqlx(e) {
                    StoreError::Conflict => return Ok(Rectified::PhoneInUse),
                    other => return Err(other),
                },
                Ok(done) if done.rows_affected() == 0 => return Ok(Rectified::Changed),
                Ok(_) => {}
            }
            insert_audit!(&mut *tx, &change.audit)?;
            DeliveryBulk::insert_events(&mut *tx, &[&change.event])
                .await
                .map_err(from_sqlx)?;
            Rectified::Done
        });
        Ok(result)
    }

    async fn erase_subject(
        &self,
        subject: &SubjectId,
        at: Timestamp,
        despite_hold: bool,
        seal: &SealErasure,
    ) -> Result<Erasure, StoreError> {
        let subject = subject.as_str();
        let at_ms = millis(at);
        let sealed_error = |e: String| StoreError::Internal(e.into());
        let outcome = write_tx!(self, |tx| {
            // PostgreSQL: the row is locked so a concurrent hold or erasure waits (SQLite's
            // write transaction already excludes every other writer).
            let select = match &self.pools {
                Pools::Sqlite { .. } => {
                    "SELECT erased_at, legal_hold_at FROM subjects WHERE id = $1"
                }
                Pools::Postgres(_) => {
                    "SELECT erased_at, legal_hold_at FROM subjects WHERE id = $1 FOR UPDATE"
                }
            };
            let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(select)
                .bind(subject)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            match row {
                None => return Ok(Erasure::NotFound),
                Some((Some(_), _)) => return Ok(Erasure::AlreadyErased),
                Some((None, Some(_))) if !despite_hold => return Ok(Erasure::LegalHold),
                Some((None, _)) => {}
            }
            // The key first: from here on, no ciphertext of the subject's can be read anywhere.
            sqlx::query("DELETE FROM subject_keys WHERE subject_id = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            // Queued or retrying messages are cancelled (their `failed` status recorded);
            // then one pass over the subject's messages cancels them and drops every content
            // and provider reference (a queued message always still has its content).
            let mut tally = ErasureTally {
                messages_cancelled: sqlx::query(
                    "INSERT INTO message_history (message_id, status, at)
                     SELECT id, 'failed', $2 FROM messages
                     WHERE subject_id = $1 AND status IN ('queued', 'sending')
                     ON CONFLICT DO NOTHING",
                )
                .bind(subject)
                .bind(at_ms)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected(),
                ..ErasureTally::default()
            };
            tally.message_contents_deleted = sqlx::query(
                "UPDATE messages SET
                   error_code = CASE WHEN status IN ('queued', 'sending') THEN 'subject_erased'
                                     ELSE error_code END,
                   provider_code = CASE WHEN status IN ('queued', 'sending') THEN NULL
                                        ELSE provider_code END,
                   updated_at = CASE WHEN status IN ('queued', 'sending') THEN $2
                                     ELSE updated_at END,
                   status = CASE WHEN status IN ('queued', 'sending') THEN 'failed'
                                 ELSE status END,
                   lease_owner = NULL, leased_until = NULL,
                   content_ciphertext = NULL, provider_ref_ciphertext = NULL,
                   provider_ref_index = NULL, content_purge_at = NULL
                 WHERE subject_id = $1
                   AND (status IN ('queued', 'sending') OR content_ciphertext IS NOT NULL
                        OR provider_ref_ciphertext IS NOT NULL)",
            )
            .bind(subject)
            .bind(at_ms)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
            tally.inbound_messages_deleted =
                sqlx::query("DELETE FROM inbound_messages WHERE subject_id = $1")
                    .bind(subject)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?
                    .rows_affected();
            let (evidence,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM consent_events WHERE subject_id = $1")
                    .bind(subject)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            tally.consent_evidence_shredded = u64::try_from(evidence).unwrap_or(0);
            tally.events_cancelled = sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', payload_ciphertext = NULL,
                   lease_owner = NULL, updated_at = $2
                 WHERE subject_id = $1 AND status = 'pending'",
            )
            .bind(subject)
            .bind(at_ms)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
            // The subject's own opt-outs outlive the erasure as a bare suppression of the
            // number: a subject created for it later starts opted out (GDPR Art. 21(3)).
            tally.opt_outs_kept = sqlx::query(
                "INSERT INTO suppressions (phone_index, channel, opted_out_at, recorded_at)
                 SELECT s.phone_index, c.channel, MAX(c.effective_at), $2
                 FROM subjects AS s JOIN consents AS c ON c.subject_id = s.id
                 WHERE s.id = $1 AND s.phone_index IS NOT NULL AND c.state = 'withdrawn'
                   AND c.by_subject = $3
                 GROUP BY s.phone_index, c.channel
                 ON CONFLICT (phone_index, channel) DO NOTHING",
            )
            .bind(subject)
            .bind(at_ms)
            .bind(true)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
            sqlx::query(
                "UPDATE subjects SET phone_index = NULL, phone_ciphertext = NULL,
                   restricted = $3, restricted_at = NULL, restriction_reason_ciphertext = NULL,
                   legal_hold_at = NULL, legal_hold_reason_ciphertext = NULL,
                   last_inbound_at = NULL, erased_at = $2
                 WHERE id = $1",
            )
            .bind(subject)
            .bind(at_ms)
            .bind(false)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            let records = seal(&tally).map_err(sealed_error)?;
            sqlx::query(
                // A re-applied erasure (a restore brought the subject back) keeps the first
                // entry: the ledger is append-only.
                "INSERT INTO erasure_ledger (subject_id, erased_at, receipt) VALUES ($1, $2, $3)
                 ON CONFLICT (subject_id) DO NOTHING",
            )
            .bind(subject)
            .bind(at_ms)
            .bind(&records.receipt)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            insert_audit!(&mut *tx, &records.audit)?;
            DeliveryBulk::insert_events(&mut *tx, &[&records.event])
                .await
                .map_err(from_sqlx)?;
            Erasure::Erased {
                receipt: records.receipt,
            }
        });
        Ok(outcome)
    }

    async fn erased_subjects(&self) -> Result<Vec<(SubjectId, Timestamp)>, StoreError> {
        let rows: Vec<(String, i64)> = read!(self, |pool| sqlx::query_as(
            "SELECT subject_id, erased_at FROM erasure_ledger ORDER BY seq"
        )
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter()
            .map(|(subject, at)| Ok((id(&subject, SubjectId::parse)?, time(at)?)))
            .collect()
    }

    async fn subject_data(&self, subject: &SubjectId) -> Result<Option<SubjectData>, StoreError> {
        // Entries that name the subject (as a quoted id, `"id":"sub_…"`; `_` escaped for LIKE)
        // or whose target is one of the subject's messages (sent, status, failed).
        let like = format!("%\"{}\"%", subject.as_str().replace('_', "\\_"));
        let audit_sql = match &self.pools {
            Pools::Sqlite { .. } => {
                "SELECT seq, recorded_at, body FROM audit_log
                 WHERE body LIKE $1 ESCAPE '\\'
                    OR json_extract(body, '$.target.id') IN
                       (SELECT id FROM messages WHERE subject_id = $2)
                 ORDER BY seq"
            }
            Pools::Postgres(_) => {
                "SELECT seq, recorded_at, body FROM audit_log
                 WHERE body LIKE $1 ESCAPE '\\'
                    OR (body::jsonb -> 'target' ->> 'id') IN
                       (SELECT id FROM messages WHERE subject_id = $2)
                 ORDER BY seq"
            }
        };
        let (standing_row, messages, history, attempts, inbound, events, requests, audit, links) = read!(
            self,
            |pool| subject_rows!(pool, subject.as_str(), &like, audit_sql)
        );
        let Some(standing_row) = standing_row else {
            return Ok(None);
        };
        let (standing, phone_ciphertext) = standing(standing_row)?;
        let mut out_messages = Vec::with_capacity(messages.len());
        for (mut message, created_at, updated_at, purge_at) in messages {
            message.created_at = time(created_at)?;
            message.updated_at = time(updated_at)?;
            message.content_purge_at = opt_time(purge_at)?;
            out_messages.push(message);
        }
        let position: std::collections::HashMap<String, usize> = out_messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        for (message_id, status, at) in history {
            if let Some(&i) = position.get(&message_id) {
                out_messages[i].history.push((status, time(at)?));
            }
        }
        for (message_id, attempt, started, finished, outcome, http, provider, latency) in attempts {
            if let Some(&i) = position.get(&message_id) {
                out_messages[i].attempt_log.push(AttemptData {
                    attempt: u32_of(attempt),
                    started_at: time(started)?,
                    finished_at: time(finished)?,
                    outcome,
                    http_status: http,
                    provider_code: provider,
                    latency_ms: latency,
                });
            }
        }
        let inbound_messages = inbound
            .into_iter()
            .map(|(id, channel, kind, content, sent, received, purge)| {
                Ok(InboundData {
                    id,
                    channel,
                    kind,
                    content_ciphertext: content,
                    sent_at: time(sent)?,
                    received_at: time(received)?,
                    content_purge_at: opt_time(purge)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let events = events
            .into_iter()
            .map(
                |(event_id, endpoint_id, event_type, status, attempts, created, updated)| {
                    Ok(EventData {
                        event_id,
                        endpoint_id,
                        event_type,
                        status,
                        attempts: u32_of(attempts),
                        created_at: time(created)?,
                        updated_at: time(updated)?,
                    })
                },
            )
            .collect::<Result<_, StoreError>>()?;
        let rights_requests = requests
            .into_iter()
            .map(crate::rights::request)
            .collect::<Result<_, _>>()?;
        let audit_entries = audit
            .into_iter()
            .map(|(seq, recorded_at, body)| {
                Ok(AuditData {
                    seq: u64::try_from(seq).unwrap_or(0),
                    recorded_at: time(recorded_at)?,
                    body,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let links = links
            .into_iter()
            .map(|(integration, reason, at)| {
                Ok(LinkData {
                    integration_id: integration,
                    reason,
                    linked_at: time(at)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let incident_rows: Vec<(String, String, i64, i64, Option<String>, Option<i64>)> =
            read!(self, |pool| sqlx::query_as(
                "SELECT incident_id, kinds, first_at, last_at, notice_message_id, notice_at
                 FROM incident_affected WHERE subject_id = $1 ORDER BY incident_id"
            )
            .bind(subject.as_str())
            .fetch_all(pool)
            .await
            .map_err(from_sqlx)?);
        let incidents = incident_rows
            .into_iter()
            .map(
                |(incident_id, kinds, first, last, notice_message_id, notice)| {
                    Ok(IncidentContactData {
                        incident_id,
                        kinds,
                        first_at: time(first)?,
                        last_at: time(last)?,
                        notice_message_id,
                        notice_at: opt_time(notice)?,
                    })
                },
            )
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(SubjectData {
            standing,
            phone_ciphertext,
            incidents,
            links,
            messages: out_messages,
            inbound_messages,
            events,
            rights_requests,
            audit_entries,
        }))
    }

    async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = match &self.pools {
            Pools::Sqlite { reader, .. } => sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                   AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_sqlx%' ESCAPE '\\'
                 ORDER BY name",
            )
            .fetch_all(reader)
            .await
            .map_err(from_sqlx)?,
            Pools::Postgres(pool) => sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                   AND table_name NOT LIKE '\\_sqlx%' ESCAPE '\\'
                 ORDER BY table_name",
            )
            .fetch_all(pool)
            .await
            .map_err(from_sqlx)?,
        };
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }
}
