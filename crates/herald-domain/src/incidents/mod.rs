//! Security incidents and personal-data breaches (issue 16, second half): the notification
//! clocks first (`clocks`); the register, the affected-subject scope from the audit trail, the
//! notification drafts and telling the people affected build on them.

pub mod clocks;
pub mod register;

pub use clocks::{
    ClockFacts, ClockKind, ClockStatus, Deadline, Risk, approaching, deadline, deadlines,
    end_of_year_deadline,
};
pub use register::{
    EXEMPTIONS, Facts, Incident, IncidentChange, IncidentError, IncidentStatus, Incidents, KINDS,
    Narrative, NewIncident,
};
