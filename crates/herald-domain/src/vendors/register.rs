//! The provider register: add, review, suspend; every change audited with who and why, every
//! version kept. The send path reads it from memory ([`Vendors::standing_of`]), refreshed on
//! every change made here and by [`Vendors::refresh`] for changes made on other nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::model::{NotApproved, VendorFacts, VendorId, VendorStatus, standing, validate};
use crate::audit::{
    Action, Actor, AuditEvent, AuditRecord, Detail, Details, Initiator, Outcome, Target,
};
use crate::clock::{Clock, Timestamp};
use crate::store::{Store, StoreError};

/// A vendor as stored: facts as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorRow {
    pub id: String,
    pub status: String,
    pub facts: String,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One version of a vendor: what it said, who changed it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorHistoryRow {
    pub vendor_id: String,
    pub version: i64,
    pub status: String,
    pub facts: String,
    pub reason: String,
    pub actor: String,
    pub at: Timestamp,
}

#[async_trait]
pub trait VendorStore: Send + Sync {
    /// Inserts a vendor with its first history row and audit entry, unless one with its id
    /// exists (`false`).
    async fn insert_vendor(
        &self,
        row: &VendorRow,
        history: &VendorHistoryRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    /// Replaces the vendor if still at `expected_version`, with a history row and the audit
    /// entry; `false` when it changed meanwhile.
    async fn update_vendor(
        &self,
        row: &VendorRow,
        expected_version: i64,
        history: &VendorHistoryRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    async fn vendors(&self) -> Result<Vec<VendorRow>, StoreError>;
    /// Every version of one vendor, oldest first.
    async fn vendor_history(&self, id: &str) -> Result<Vec<VendorHistoryRow>, StoreError>;
}

/// A vendor as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vendor {
    pub id: VendorId,
    pub status: VendorStatus,
    pub facts: VendorFacts,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Vendor {
    /// Whether it may carry a message at `now`.
    pub fn standing(&self, now: Timestamp) -> Result<(), NotApproved> {
        standing(self.status, &self.facts, now.date_naive())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    #[error("{field}: {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    #[error("no such vendor")]
    NotFound,
    #[error("a vendor with this id exists")]
    Exists,
    #[error("the vendor changed meanwhile")]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who made a change, as the history keeps it (ids only).
fn actor_text(actor: &Actor) -> String {
    match actor {
        Actor::Integration {
            integration_id,
            key_id,
        } => format!("{integration_id}/{key_id}"),
        Actor::OAuthClient {
            integration_id,
            client_id,
            ..
        } => format!("{integration_id}/{client_id}"),
        Actor::Admin => "admin (cli)".into(),
        Actor::Subject(id) => id.to_string(),
        Actor::System => "system".into(),
        Actor::Anonymous => "anonymous".into(),
    }
}

fn corrupt(what: &str) -> VendorError {
    VendorError::Store(StoreError::Corrupt(what.into()))
}

fn read(row: VendorRow) -> Result<Vendor, VendorError> {
    Ok(Vendor {
        id: VendorId::parse(&row.id).ok_or_else(|| corrupt("vendor id"))?,
        status: VendorStatus::parse(&row.status).ok_or_else(|| corrupt("vendor status"))?,
        facts: serde_json::from_str(&row.facts).map_err(|_| corrupt("vendor facts"))?,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

const MAX_REASON: usize = 1000;

fn check_reason(reason: &str) -> Result<(), VendorError> {
    if reason.trim().is_empty() || reason.chars().count() > MAX_REASON {
        return Err(VendorError::Invalid {
            field: "reason",
            rule: "why, in 1 to 1000 characters",
        });
    }
    Ok(())
}

/// The register. Cheap to clone; clones share the in-memory copy.
#[derive(Clone)]
pub struct Vendors {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    memory: Arc<RwLock<BTreeMap<VendorId, Vendor>>>,
}

impl std::fmt::Debug for Vendors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vendors")
    }
}

impl Vendors {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            memory: Arc::default(),
        }
    }

    /// The register's clock: standings are judged at this time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Re-reads the register into memory.
    pub async fn refresh(&self) -> Result<(), VendorError> {
        let rows = self.store.vendors().await?;
        let mut all = BTreeMap::new();
        for row in rows {
            let vendor = read(row)?;
            all.insert(vendor.id.clone(), vendor);
        }
        *self.memory.write().unwrap_or_else(|e| e.into_inner()) = all;
        Ok(())
    }

    /// From memory: whether `id` may carry a message now (an unknown vendor may not).
    pub fn standing_of(&self, id: &VendorId) -> Result<(), NotApproved> {
        let now = self.clock.now();
        self.memory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map_or(Err(NotApproved::Unreviewed), |v| v.standing(now))
    }

    /// Approved vendors whose review falls due within `days` (and has not yet passed: an
    /// overdue one no longer stands), with the date.
    pub fn reviews_due_within(&self, days: i64) -> Vec<(VendorId, chrono::NaiveDate)> {
        let today = self.clock.now().date_naive();
        let horizon = today + chrono::TimeDelta::days(days);
        self.list()
            .into_iter()
            .filter(|v| v.status == VendorStatus::Approved)
            .filter_map(|v| {
                let due = v.facts.next_review_due?;
                (due >= today && due <= horizon).then_some((v.id, due))
            })
            .collect()
    }

    pub fn list(&self) -> Vec<Vendor> {
        self.memory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub async fn get(&self, id: &VendorId) -> Result<Vendor, VendorError> {
        self.store
            .vendors()
            .await?
            .into_iter()
            .find(|r| r.id == id.as_str())
            .map(read)
            .transpose()?
            .ok_or(VendorError::NotFound)
    }

    pub async fn history(&self, id: &VendorId) -> Result<Vec<VendorHistoryRow>, VendorError> {
        let rows = self.store.vendor_history(id.as_str()).await?;
        if rows.is_empty() {
            return Err(VendorError::NotFound);
        }
        Ok(rows)
    }

    fn rows(
        vendor: &Vendor,
        reason: &str,
        initiator: &Initiator,
        now: Timestamp,
    ) -> Result<(VendorRow, VendorHistoryRow), VendorError> {
        let facts = serde_json::to_string(&vendor.facts).map_err(|_| corrupt("vendor facts"))?;
        Ok((
            VendorRow {
                id: vendor.id.as_str().to_owned(),
                status: vendor.status.as_str().to_owned(),
                facts: facts.clone(),
                version: vendor.version,
                created_at: vendor.created_at,
                updated_at: now,
            },
            VendorHistoryRow {
                vendor_id: vendor.id.as_str().to_owned(),
                version: vendor.version,
                status: vendor.status.as_str().to_owned(),
                facts,
                reason: reason.to_owned(),
                actor: actor_text(&initiator.actor),
                at: now,
            },
        ))
    }

    /// Adds a vendor (`unreviewed` unless `status` says otherwise).
    pub async fn add(
        &self,
        id: VendorId,
        facts: VendorFacts,
        status: VendorStatus,
        reason: &str,
        initiator: &Initiator,
    ) -> Result<Vendor, VendorError> {
        validate(&facts).map_err(|(field, rule)| VendorError::Invalid { field, rule })?;
        check_reason(reason)?;
        let now = self.clock.now();
        let vendor = Vendor {
            id,
            status,
            facts,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let (row, history) = Self::rows(&vendor, reason, initiator, now)?;
        let event = AuditEvent::new(initiator, Action::VendorAdded, Outcome::Success)
            .target(Target::Vendor(vendor.id.as_str().to_owned()))
            .details(Details::new().with("status", vendor.status.as_str()));
        if !self
            .store
            .insert_vendor(&row, &history, &AuditRecord::new(&event, now))
            .await?
        {
            return Err(VendorError::Exists);
        }
        self.refresh().await?;
        Ok(vendor)
    }

    /// Changes the facts and/or the status (a review, a suspension), with the reason.
    pub async fn change(
        &self,
        id: &VendorId,
        facts: Option<VendorFacts>,
        status: Option<VendorStatus>,
        reason: &str,
        initiator: &Initiator,
    ) -> Result<Vendor, VendorError> {
        check_reason(reason)?;
        if facts.is_none() && status.is_none() {
            return Err(VendorError::Invalid {
                field: "body",
                rule: "names nothing to change (facts or status)",
            });
        }
        if let Some(facts) = &facts {
            validate(facts).map_err(|(field, rule)| VendorError::Invalid { field, rule })?;
        }
        let now = self.clock.now();
        let before = self.get(id).await?;
        let mut vendor = before.clone();
        let mut fields: Vec<&'static str> = Vec::new();
        if let Some(facts) = facts
            && facts != vendor.facts
        {
            vendor.facts = facts;
            fields.push("facts");
        }
        if let Some(status) = status
            && status != vendor.status
        {
            vendor.status = status;
            fields.push("status");
        }
        if fields.is_empty() {
            return Ok(before);
        }
        vendor.version += 1;
        vendor.updated_at = now;
        let (row, history) = Self::rows(&vendor, reason, initiator, now)?;
        let event = AuditEvent::new(initiator, Action::VendorChanged, Outcome::Success)
            .target(Target::Vendor(vendor.id.as_str().to_owned()))
            .details(
                Details::new()
                    .with("from", before.status.as_str())
                    .with("to", vendor.status.as_str())
                    .with("fields", fields)
                    .with("version", Detail::Int(vendor.version)),
            );
        if !self
            .store
            .update_vendor(
                &row,
                before.version,
                &history,
                &AuditRecord::new(&event, now),
            )
            .await?
        {
            return Err(VendorError::Changed);
        }
        self.refresh().await?;
        Ok(vendor)
    }

    /// Makes the register hold `facts` and `status` for `id` (the shipped starting entries,
    /// and reviews recorded in configuration): adds it, or changes it when it differs; nothing
    /// when it already says so. `reason` says where it came from.
    pub async fn ensure(
        &self,
        id: VendorId,
        facts: VendorFacts,
        status: VendorStatus,
        only_if_absent: bool,
        reason: &str,
    ) -> Result<(), VendorError> {
        let initiator = Initiator::system();
        match self.get(&id).await {
            Err(VendorError::NotFound) => {
                match self.add(id, facts, status, reason, &initiator).await {
                    // Another node added it first.
                    Ok(_) | Err(VendorError::Exists) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Ok(_) if only_if_absent => Ok(()),
            Ok(_) => self
                .change(&id, Some(facts), Some(status), reason, &initiator)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }
}
