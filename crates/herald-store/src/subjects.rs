use async_trait::async_trait;
use herald_domain::audit::AuditRecord;
use herald_domain::clock::Timestamp;
use herald_domain::ids::SubjectId;
use herald_domain::store::{NewSubject, StoreError, SubjectInsert, SubjectRecord, SubjectStore};

use crate::audit::insert_audit;
use crate::convert::{id, millis, opt_time, time};
use crate::{Database, from_sqlx, read, select_in, write_tx};

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
    })
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
        let rows: Vec<(String, i64, bool, Option<i64>, Vec<u8>)> = read!(self, |pool| select_in!(
            pool,
            (String, i64, bool, Option<i64>, Vec<u8>),
            concat!(
                "SELECT ",
                subject_columns!(),
                ", phone_index FROM subjects WHERE erased_at IS NULL AND phone_index"
            ),
            indexes,
            |index: &[u8; 32]| index.to_vec()
        )?);
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for (a, b, c, d, index) in rows {
            found.insert(index, subject((a, b, c, d))?);
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
        let rows: Vec<(String, i64, bool, Option<i64>, Option<i64>)> =
            read!(self, |pool| select_in!(
                pool,
                (String, i64, bool, Option<i64>, Option<i64>),
                concat!(
                    "SELECT ",
                    subject_columns!(),
                    ", erased_at FROM subjects WHERE id"
                ),
                ids,
                |id: &SubjectId| id.as_str().to_owned()
            )?);
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for (a, b, c, d, erased_at) in rows {
            let record = subject((a, b, c, d))?;
            found.insert(record.id.clone(), (record, opt_time(erased_at)?));
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
}
