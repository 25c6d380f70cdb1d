//! Security incidents and personal-data breaches (issue 16, second half): the notification
//! clocks first (`clocks`); the register, the affected-subject scope from the audit trail, the
//! notification drafts and telling the people affected build on them.

pub mod affected;
pub mod clocks;
pub mod controllers;
pub mod drafts;
pub mod notify;
pub mod register;
pub mod scope;
pub mod watch;

pub use affected::{AffectedSubject, ScopeOutcome, ScopeQuery};
pub use clocks::{
    ClockFacts, ClockKind, ClockStatus, Deadline, Risk, approaching, deadline, deadlines,
    end_of_year_deadline,
};
pub use controllers::{ControllersNotified, SUBJECTS_PER_EVENT};
pub use drafts::{Contacts, Draft, DraftField};
pub use notify::{MAX_NOTICES_PER_CALL, NoticeOutcome, NoticeRequest};
pub use register::{
    BREACH_TYPES, EXEMPTIONS, Facts, Incident, IncidentChange, IncidentError, IncidentStatus,
    Incidents, KINDS, Narrative, NewIncident, NoticeRun,
};
pub use scope::{ScopeRecord, Selector, Touch, Touches};
pub use watch::{AlertState, DeadlineAlert, WatchReport};
