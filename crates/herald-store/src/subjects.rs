use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::clock::Timestamp;
use herald_domain::ids::{IntegrationId, SubjectId};
use herald_domain::messages::Channel;
use herald_domain::store::{NewSubject, StoreError, SubjectInsert, SubjectRecord, SubjectStore};
use herald_domain::subjects::SubjectLink;

use crate::audit::insert_audit;
use crate::convert::{id, millis, opt_time, time};
use crate::{Database, from_sqlx, read, select_in, write_tx};

/// Links an integration to a subject inside the caller's transaction (no-op if linked).
macro_rules! insert_link {
    ($executor:expr, $link:expr) => {{
        let link: &herald_domain::subjects::SubjectLink = $link;
        sqlx::query(
            "INSERT INTO subject_links (subject_id, integration_id, reason, linked_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (subject_id, integration_id) DO NOTHING",
        )
        .bind(link.subject_id.as_str())
        .bind(link.integration_id.as_str())
        .bind(link.reason.as_str())
        .bind($crate::convert::millis(link.at))
        .execute($executor)
        .await
        .map(|_| ())
        .map_err($crate::from_sqlx)
    }};
}

pub(crate) use insert_link;

type SubjectRow = (String, i64, bool, Option<i64>);

/// The columns [`subject`] decodes, in its tuple's order (a macro: queries stay `&'static str`).
macro_rules! subject_columns {
    () => {
        "id, created_at, restricted, last_inbound_at"
    };
}

fn subject(row: SubjectRow) -> Result<SubjectRecord, StoreError> {
    let (subject_id, created_at, restricted, last_inbound_at) = row;
    Ok(SubjectRecord {
        id: id(&subject_id, SubjectId::parse)?,
        created_at: time(created_at)?,
        restricted,
        last_inbound_at: opt_time(last_inbound_at)?,
        consents: Vec::new(),
    })
}

/// The consent columns of a look-up joined with `consents` (all null without a record).
type JoinedConsent = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
);

/// `LEFT JOIN consents`: the send path reads a subject and its consent records in one query.
macro_rules! joined_consent_columns {
    () => {
        ", c.purpose, c.channel, c.state, c.expires_at, c.event_id, c.updated_at,
           c.effective_at, c.by_subject
         FROM subjects AS s LEFT JOIN consents AS c ON c.subject_id = s.id"
    };
}

/// Adds a joined consent row to its subject (the padded IN list may repeat rows).
fn attach(record: &mut SubjectRecord, joined: JoinedConsent) -> Result<(), StoreError> {
    let (purpose, channel, state, expires_at, event_id, updated_at, effective_at, by_subject) =
        joined;
    let (
        Some(purpose),
        Some(channel),
        Some(state),
        Some(event_id),
        Some(updated_at),
        Some(effective_at),
        Some(by_subject),
    ) = (
        purpose,
        channel,
        state,
        event_id,
        updated_at,
        effective_at,
        by_subject,
    )
    else {
        return Ok(());
    };
    let consent = crate::consent::consent((
        record.id.as_str().to_owned(),
        purpose,
        channel,
        state,
        expires_at,
        event_id,
        updated_at,
        effective_at,
        by_subject,
    ))?;
    if !record.consents.contains(&consent) {
        record.consents.push(consent);
    }
    Ok(())
}

#[async_trait]
impl SubjectStore for Database {
    async fn subjects_by_phone_indexes(
        &self,
        indexes: &[[u8; 32]],
    ) -> Result<Vec<Option<SubjectRecord>>, StoreError> {
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        type Row = (
            String,
            i64,
            bool,
            Option<i64>,
            Vec<u8>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<bool>,
        );
        let rows: Vec<Row> = read!(self, |pool| select_in!(
            pool,
            Row,
            concat!(
                "SELECT s.id, s.created_at, s.restricted, s.last_inbound_at, s.phone_index",
                joined_consent_columns!(),
                " WHERE s.erased_at IS NULL AND s.phone_index"
            ),
            indexes,
            |index: &[u8; 32]| index.to_vec()
        )?);
        let mut found: std::collections::HashMap<Vec<u8>, SubjectRecord> =
            std::collections::HashMap::with_capacity(rows.len());
        for (a, b, c, d, index, e, f, g, h, i, j, k, l) in rows {
            let record = match found.entry(index) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(subject((a, b, c, d))?),
            };
            attach(record, (e, f, g, h, i, j, k, l))?;
        }
        Ok(indexes
            .iter()
            .map(|index| found.get(&index[..]).cloned())
            .collect())
    }

    async fn insert_subject(
        &self,
        new: &NewSubject,
        audit: &AuditRecord,
    ) -> Result<SubjectInsert, StoreError> {
        let row: Option<SubjectRow> = write_tx!(self, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO subjects (id, phone_index, phone_ciphertext, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (phone_index) DO NOTHING",
            )
            .bind(new.id.as_str())
            .bind(&new.phone_index[..])
            .bind(&new.phone_ciphertext)
            .bind(millis(new.created_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
                == 1;
            if inserted {
                sqlx::query(
                    "INSERT INTO subject_keys (subject_id, root_version, wrapped_key, created_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(new.id.as_str())
                .bind(i64::from(new.key.root_version))
                .bind(&new.key.wrapped)
                .bind(millis(new.created_at))
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                if let Some(link) = &new.link {
                    insert_link!(&mut *tx, link)?;
                }
                crate::consent::write_consent_changes!(tx, &new.consents)?;
                insert_audit!(&mut *tx, audit)?;
                None
            } else {
                sqlx::query_as(concat!(
                    "SELECT ",
                    subject_columns!(),
                    " FROM subjects WHERE phone_index = $1"
                ))
                .bind(&new.phone_index[..])
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?
            }
        });
        match row {
            None => Ok(SubjectInsert::Inserted(SubjectRecord {
                id: new.id.clone(),
                created_at: new.created_at,
                restricted: false,
                last_inbound_at: None,
                consents: new.consents.iter().map(|c| c.record_after()).collect(),
            })),
            Some(row) => Ok(SubjectInsert::Existing(subject(row)?)),
        }
    }

    async fn subject(&self, subject_id: &SubjectId) -> Result<Option<SubjectRecord>, StoreError> {
        let row: Option<SubjectRow> = read!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            subject_columns!(),
            " FROM subjects WHERE id = $1 AND erased_at IS NULL"
        ))
        .bind(subject_id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        row.map(subject).transpose()
    }

    async fn subjects_with_erasure(
        &self,
        ids: &[SubjectId],
    ) -> Result<Vec<Option<(SubjectRecord, Option<Timestamp>)>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        type Row = (
            String,
            i64,
            bool,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<bool>,
        );
        let rows: Vec<Row> = read!(self, |pool| select_in!(
            pool,
            Row,
            concat!(
                "SELECT s.id, s.created_at, s.restricted, s.last_inbound_at, s.erased_at",
                joined_consent_columns!(),
                " WHERE s.id"
            ),
            ids,
            |id: &SubjectId| id.as_str().to_owned()
        )?);
        let mut found: std::collections::HashMap<SubjectId, (SubjectRecord, Option<Timestamp>)> =
            std::collections::HashMap::with_capacity(rows.len());
        for (a, b, c, d, erased_at, e, f, g, h, i, j, k, l) in rows {
            let record = subject((a, b, c, d))?;
            let entry = match found.entry(record.id.clone()) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((record, opt_time(erased_at)?))
                }
            };
            attach(&mut entry.0, (e, f, g, h, i, j, k, l))?;
        }
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    async fn subject_phone_ciphertext(
        &self,
        subject_id: &SubjectId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Option<Vec<u8>>,)> = read!(self, |pool| sqlx::query_as(
            "SELECT phone_ciphertext FROM subjects WHERE id = $1"
        )
        .bind(subject_id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        Ok(row.and_then(|(c,)| c))
    }

    async fn suppressions(
        &self,
        phone_index: &[u8; 32],
    ) -> Result<Vec<(Channel, Timestamp)>, StoreError> {
        let rows: Vec<(String, i64)> = read!(self, |pool| sqlx::query_as(
            "SELECT channel, opted_out_at FROM suppressions WHERE phone_index = $1"
        )
        .bind(&phone_index[..])
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?);
        rows.into_iter()
            .map(|(channel, at)| {
                Ok((
                    Channel::parse(&channel).ok_or_else(|| {
                        StoreError::Corrupt("a suppression's channel is unknown".into())
                    })?,
                    time(at)?,
                ))
            })
            .collect()
    }

    async fn subject_linked(
        &self,
        subject: &SubjectId,
        integration: &IntegrationId,
    ) -> Result<bool, StoreError> {
        let row: Option<(String,)> = read!(self, |pool| sqlx::query_as(
            "SELECT reason FROM subject_links WHERE subject_id = $1 AND integration_id = $2"
        )
        .bind(subject.as_str())
        .bind(integration.as_str())
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?);
        Ok(row.is_some())
    }

    async fn link_subject(&self, link: &SubjectLink) -> Result<(), StoreError> {
        write_tx!(self, |tx| insert_link!(&mut *tx, link)?);
        Ok(())
    }
}
