//! The register of rights requests (GDPR Art. 12(3)): every access, rectification,
//! restriction, erasure, objection or portability request is logged with the day it was
//! received; Herald computes when the answer is due — one calendar month later, on the same day
//! of the month or, where that month is shorter, its last day (31 January → 28 or 29 February)
//! — and allows one extension by up to two further months, with its reason recorded before the
//! due date. Open requests past their due date are overdue.

use std::sync::Arc;

use chrono::Months;
use herald_crypto::aead::Binding;
use serde::Serialize;

use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::clock::{Clock, Timestamp};
use crate::ids::{IntegrationId, RightsRequestId, SubjectId};
use crate::keys::{KeyError, Keyring};
use crate::store::{PageRequest, Store, StoreError};

/// Which right a request exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Access,
    Rectification,
    Restriction,
    Erasure,
    Objection,
    Portability,
}

impl RequestKind {
    pub const ALL: [RequestKind; 6] = [
        RequestKind::Access,
        RequestKind::Rectification,
        RequestKind::Restriction,
        RequestKind::Erasure,
        RequestKind::Objection,
        RequestKind::Portability,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Access => "access",
            RequestKind::Rectification => "rectification",
            RequestKind::Restriction => "restriction",
            RequestKind::Erasure => "erasure",
            RequestKind::Objection => "objection",
            RequestKind::Portability => "portability",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a request stands. `Overdue` is an open request past its due date (derived, not
/// stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Open,
    Overdue,
    Done,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Open => "open",
            RequestStatus::Overdue => "overdue",
            RequestStatus::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RequestStatus::Open,
            RequestStatus::Overdue,
            RequestStatus::Done,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The most an answer may be postponed, in months (Art. 12(3): "by two further months").
pub const MAX_EXTENSION_MONTHS: u32 = 2;
/// Longest extension reason.
pub const MAX_REASON_CHARS: usize = 2000;

/// When the answer to a request received at `received` is due after `months` calendar months:
/// the same day of the month, or the month's last day where it is shorter. Counted from the
/// day of receipt each time (31 January + 3 months is 30 April, not 28 April).
pub fn due_date(received: Timestamp, months: u32) -> Timestamp {
    received
        .checked_add_months(Months::new(months))
        .unwrap_or(received)
}

/// A request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RightsRequest {
    pub id: RightsRequestId,
    pub kind: RequestKind,
    pub subject_id: Option<SubjectId>,
    pub channel: Option<String>,
    pub integration_id: IntegrationId,
    pub received_at: Timestamp,
    pub due_at: Timestamp,
    pub extended_months: u32,
    /// Encrypted under the system key (the reason may describe the request).
    pub extension_reason_ciphertext: Option<Vec<u8>>,
    pub extended_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl RightsRequest {
    pub fn status(&self, now: Timestamp) -> RequestStatus {
        match self.completed_at {
            Some(_) => RequestStatus::Done,
            None if self.due_at < now => RequestStatus::Overdue,
            None => RequestStatus::Open,
        }
    }
}

/// A request about to be logged.
#[derive(Debug, Clone)]
pub struct NewRightsRequest {
    pub kind: RequestKind,
    pub subject_id: Option<SubjectId>,
    pub channel: Option<String>,
    pub received_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum RightsError {
    #[error("no such request")]
    NotFound,
    #[error("no such subject")]
    SubjectNotFound,
    #[error("{field}: {rule}")]
    Invalid {
        field: &'static str,
        rule: &'static str,
    },
    /// The change is not allowed in the request's state (`code` for the answer).
    #[error("{detail}")]
    Refused {
        code: &'static str,
        detail: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

impl From<herald_crypto::CryptoError> for RightsError {
    fn from(e: herald_crypto::CryptoError) -> Self {
        RightsError::Keys(KeyError::from(e))
    }
}

fn reason_binding(id: &RightsRequestId) -> Binding<'_> {
    Binding::new(
        "rights_requests",
        "extension_reason_ciphertext",
        id.as_str(),
    )
}

fn audit(
    initiator: &Initiator,
    action: Action,
    request: &RightsRequest,
    now: Timestamp,
) -> AuditRecord {
    let mut event = AuditEvent::new(initiator, action, Outcome::Success).details(
        Details::new()
            .with("request_id", &request.id)
            .with("kind", request.kind.as_str())
            .with("due_at", request.due_at)
            .with("extended_months", request.extended_months),
    );
    if let Some(subject) = &request.subject_id {
        event = event.target(Target::Subject(subject.clone()));
    }
    AuditRecord::new(&event, now)
}

/// The register. Cheap to clone.
#[derive(Clone)]
pub struct RightsRequests {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RightsRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RightsRequests").finish_non_exhaustive()
    }
}

impl RightsRequests {
    pub fn new(store: Arc<dyn Store>, keys: Arc<Keyring>, clock: Arc<dyn Clock>) -> Self {
        Self { store, keys, clock }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Logs a request; its due date is one calendar month after receipt. A subject it names
    /// must be one the integration may see (linked to it, or `every_subject`).
    pub async fn log(
        &self,
        new: NewRightsRequest,
        integration: &IntegrationId,
        every_subject: bool,
        initiator: &Initiator,
    ) -> Result<RightsRequest, RightsError> {
        let now = self.clock.now();
        if new.received_at > now + chrono::TimeDelta::minutes(5) {
            return Err(RightsError::Invalid {
                field: "received_at",
                rule: "is in the future",
            });
        }
        if let Some(subject) = &new.subject_id {
            let visible = every_subject || self.store.subject_linked(subject, integration).await?;
            if !visible || self.store.subject(subject).await?.is_none() {
                return Err(RightsError::SubjectNotFound);
            }
        }
        let request = RightsRequest {
            id: RightsRequestId::generate_ordered(now)?,
            kind: new.kind,
            subject_id: new.subject_id,
            channel: new.channel,
            integration_id: integration.clone(),
            received_at: new.received_at,
            due_at: due_date(new.received_at, 1),
            extended_months: 0,
            extension_reason_ciphertext: None,
            extended_at: None,
            completed_at: None,
            created_at: now,
        };
        let record = audit(initiator, Action::RightsRequestLogged, &request, now);
        self.store.insert_rights_request(&request, &record).await?;
        Ok(request)
    }

    /// A request, if `owner` logged it (`None`: the operator or `admin`, who see the whole
    /// register); another integration's request does not exist for it.
    pub async fn get(
        &self,
        id: &RightsRequestId,
        owner: Option<&IntegrationId>,
    ) -> Result<RightsRequest, RightsError> {
        self.store
            .rights_request(id)
            .await?
            .filter(|r| owner.is_none_or(|o| &r.integration_id == o))
            .ok_or(RightsError::NotFound)
    }

    /// The register in the order requests were logged, filtered by status; only `owner`'s
    /// requests when given.
    pub async fn list(
        &self,
        status: Option<RequestStatus>,
        page: &PageRequest,
        owner: Option<&IntegrationId>,
    ) -> Result<Vec<RightsRequest>, RightsError> {
        Ok(self
            .store
            .rights_requests(status, self.clock.now(), page, owner)
            .await?)
    }

    /// Extends an open request by `months` (1 or 2; at most two in all), before its due date,
    /// with the reason recorded.
    pub async fn extend(
        &self,
        id: &RightsRequestId,
        months: u32,
        reason: &str,
        owner: Option<&IntegrationId>,
        initiator: &Initiator,
    ) -> Result<RightsRequest, RightsError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(RightsError::Invalid {
                field: "reason",
                rule: "1 to 2000 characters",
            });
        }
        if !(1..=MAX_EXTENSION_MONTHS).contains(&months) {
            return Err(RightsError::Invalid {
                field: "months",
                rule: "1 or 2",
            });
        }
        let now = self.clock.now();
        let current = self.get(id, owner).await?;
        if current.completed_at.is_some() {
            return Err(RightsError::Refused {
                code: "request_closed",
                detail: "the request is already done",
            });
        }
        if current.due_at <= now {
            return Err(RightsError::Refused {
                code: "extension_too_late",
                detail: "an extension must be recorded before the due date",
            });
        }
        let total = current.extended_months + months;
        if total > MAX_EXTENSION_MONTHS {
            return Err(RightsError::Refused {
                code: "extension_exceeds_limit",
                detail: "the answer may be postponed by two further months at most",
            });
        }
        let ciphertext = self
            .keys
            .seal_system(&reason_binding(id), reason.as_bytes())?;
        let extended = RightsRequest {
            due_at: due_date(current.received_at, 1 + total),
            extended_months: total,
            extension_reason_ciphertext: Some(ciphertext),
            extended_at: Some(now),
            ..current.clone()
        };
        let record = audit(initiator, Action::RightsRequestExtended, &extended, now);
        // Applied only if nobody changed the request meanwhile (same due date, still open).
        if !self
            .store
            .extend_rights_request(&extended, current.due_at, &record)
            .await?
        {
            return Err(RightsError::Refused {
                code: "request_changed",
                detail: "the request changed meanwhile; read it again",
            });
        }
        Ok(extended)
    }

    /// The extension's reason, decrypted.
    pub fn extension_reason(&self, request: &RightsRequest) -> Result<Option<String>, RightsError> {
        let Some(ciphertext) = &request.extension_reason_ciphertext else {
            return Ok(None);
        };
        let plaintext = self
            .keys
            .open_system(&reason_binding(&request.id), ciphertext)?;
        Ok(Some(String::from_utf8_lossy(&plaintext).into_owned()))
    }

    /// Marks a request done.
    pub async fn complete(
        &self,
        id: &RightsRequestId,
        owner: Option<&IntegrationId>,
        initiator: &Initiator,
    ) -> Result<RightsRequest, RightsError> {
        let now = self.clock.now();
        let current = self.get(id, owner).await?;
        if current.completed_at.is_some() {
            return Ok(current);
        }
        let done = RightsRequest {
            completed_at: Some(now),
            ..current
        };
        let record = audit(initiator, Action::RightsRequestCompleted, &done, now);
        if !self.store.complete_rights_request(id, now, &record).await? {
            return self.get(id, owner).await;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, m, d, 9, 30, 0).unwrap()
    }

    #[test]
    fn one_calendar_month_with_the_end_of_month_rule() {
        assert_eq!(due_date(day(2026, 1, 15), 1), day(2026, 2, 15));
        // 31 January → the last day of February, in common and leap years.
        assert_eq!(due_date(day(2026, 1, 31), 1), day(2026, 2, 28));
        assert_eq!(due_date(day(2028, 1, 31), 1), day(2028, 2, 29));
        assert_eq!(due_date(day(2028, 1, 30), 1), day(2028, 2, 29));
        assert_eq!(due_date(day(2026, 1, 28), 1), day(2026, 2, 28));
        // 31st into a 30-day month; across the year's end.
        assert_eq!(due_date(day(2026, 3, 31), 1), day(2026, 4, 30));
        assert_eq!(due_date(day(2026, 12, 31), 1), day(2027, 1, 31));
        assert_eq!(due_date(day(2026, 2, 28), 1), day(2026, 3, 28));
    }

    #[test]
    fn extensions_count_from_the_day_of_receipt() {
        // 31 January + 1 month → 28 February; extended by two → 30 April (not 28 April).
        assert_eq!(due_date(day(2026, 1, 31), 3), day(2026, 4, 30));
        assert_eq!(due_date(day(2026, 1, 31), 2), day(2026, 3, 31));
        assert_eq!(due_date(day(2026, 11, 30), 3), day(2027, 2, 28));
    }

    #[test]
    fn status_follows_completion_and_the_due_date() {
        let request = RightsRequest {
            id: RightsRequestId::generate().unwrap(),
            kind: RequestKind::Access,
            subject_id: None,
            channel: None,
            integration_id: IntegrationId::generate().unwrap(),
            received_at: day(2026, 1, 31),
            due_at: day(2026, 2, 28),
            extended_months: 0,
            extension_reason_ciphertext: None,
            extended_at: None,
            completed_at: None,
            created_at: day(2026, 1, 31),
        };
        assert_eq!(request.status(day(2026, 2, 28)), RequestStatus::Open);
        assert_eq!(request.status(day(2026, 3, 1)), RequestStatus::Overdue);
        let done = RightsRequest {
            completed_at: Some(day(2026, 3, 2)),
            ..request
        };
        assert_eq!(done.status(day(2026, 4, 1)), RequestStatus::Done);
        for k in RequestKind::ALL {
            assert_eq!(RequestKind::parse(k.as_str()), Some(k));
        }
    }
}
