//! The notification clocks of a personal-data breach, computed from an incident's facts
//! (compliance rows GDPR-33, GDPR-34, HIPAA-404). Pure functions of the facts and the time:
//! every instant is UTC, so a deadline counted in hours is that many hours of real time
//! whatever the local clocks did (72 hours across a DST change are 72 hours, not 71 or 73),
//! and a deadline counted in calendar days is counted on the UTC calendar.
//!
//! - GDPR Art. 33(1): the supervisory authority within 72 hours of becoming aware, unless the
//!   breach is unlikely to result in a risk (a recorded decision with its reason). A late
//!   notification needs the reasons for the delay.
//! - GDPR Art. 34(1): the data subjects without undue delay when the risk is high, unless an
//!   Art. 34(3) exemption is recorded (e.g. (a): the data was unintelligible — encrypted, keys
//!   not compromised). No fixed hour: the clock is "due now" from the decision on.
//! - HIPAA §164.404(b): individuals without unreasonable delay, at the latest 60 calendar days
//!   after discovery, for a breach of unsecured PHI.
//! - HIPAA §164.408: the Secretary (HHS) contemporaneously (the same 60 days) when 500 or more
//!   individuals are affected; otherwise in the yearly log, within 60 days after the end of
//!   the calendar year of discovery.
//! - HIPAA §164.406: prominent media of a State or jurisdiction within 60 days when more than
//!   500 of its residents are affected.

use std::collections::BTreeMap;

use chrono::{Datelike, TimeDelta, TimeZone, Utc};
use serde::Serialize;

use crate::clock::Timestamp;

/// The risk assessment's outcome for GDPR purposes (Art. 33/34).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Unlikely to result in a risk to people's rights and freedoms: no Art. 33 notification
    /// (the reason must be recorded).
    Unlikely,
    /// A risk: notify the authority.
    Risk,
    /// A high risk: notify the authority and the people affected.
    High,
}

impl Risk {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "unlikely" => Some(Risk::Unlikely),
            "risk" => Some(Risk::Risk),
            "high" => Some(Risk::High),
            _ => None,
        }
    }
}

/// What the clocks depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockFacts {
    /// When the breach was discovered (HIPAA: the first day it is known, or would have been
    /// known with reasonable diligence).
    pub detected_at: Option<Timestamp>,
    /// When the controller became aware (GDPR: reasonable certainty that a breach occurred).
    pub became_aware_at: Option<Timestamp>,
    pub risk: Option<Risk>,
    /// Art. 34(3) exemption recorded (e.g. `encrypted_keys_uncompromised`).
    pub subject_notice_exempt: bool,
    /// PHI involved (HIPAA applies), and whether it was "secured" (encrypted per HHS guidance:
    /// then it is not a breach of unsecured PHI and no HIPAA clock runs).
    pub phi_involved: Option<bool>,
    pub phi_secured: bool,
    /// Individuals affected (counted from the scope, or estimated).
    pub affected: Option<u64>,
    /// Affected residents per State or jurisdiction, where known.
    pub affected_by_state: BTreeMap<String, u64>,
    /// Whether some affected people's State is not known yet.
    pub states_incomplete: bool,
    pub authority_notified_at: Option<Timestamp>,
    pub subjects_notified_at: Option<Timestamp>,
    pub individuals_notified_at: Option<Timestamp>,
    pub hhs_notified_at: Option<Timestamp>,
    pub media_notified_at: Option<Timestamp>,
    /// Subjects the incident's scopes found (`None`: never scoped): the integrations whose
    /// subjects they are must be told.
    pub scoped_subjects: Option<u64>,
    pub controllers_notified_at: Option<Timestamp>,
}

/// Which obligation a clock measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    GdprAuthority,
    GdprSubjects,
    HipaaIndividuals,
    HipaaHhs,
    HipaaMedia,
    /// Herald's operator (the processor) tells the integrations (the controllers) whose
    /// subjects are affected.
    Controllers,
}

impl ClockKind {
    pub const ALL: [ClockKind; 6] = [
        ClockKind::GdprAuthority,
        ClockKind::GdprSubjects,
        ClockKind::HipaaIndividuals,
        ClockKind::HipaaHhs,
        ClockKind::HipaaMedia,
        ClockKind::Controllers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClockKind::GdprAuthority => "gdpr_authority",
            ClockKind::GdprSubjects => "gdpr_subjects",
            ClockKind::HipaaIndividuals => "hipaa_individuals",
            ClockKind::HipaaHhs => "hipaa_hhs",
            ClockKind::HipaaMedia => "hipaa_media",
            ClockKind::Controllers => "controllers",
        }
    }

    /// Where the obligation comes from.
    pub fn basis(self) -> &'static str {
        match self {
            ClockKind::GdprAuthority => "GDPR Art. 33(1)",
            ClockKind::GdprSubjects => "GDPR Art. 34(1)",
            ClockKind::HipaaIndividuals => "45 CFR 164.404(b)",
            ClockKind::HipaaHhs => "45 CFR 164.408",
            ClockKind::HipaaMedia => "45 CFR 164.406",
            ClockKind::Controllers => "GDPR Art. 33(2), 45 CFR 164.410",
        }
    }
}

/// Where a clock stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    /// The obligation does not arise (the reason says why).
    NotApplicable,
    /// A fact the clock needs is not recorded yet (listed in `missing`).
    NeedsFacts,
    /// Running: due at `due_at`.
    Pending,
    Overdue,
    Met,
    /// Done, but after the deadline.
    MetLate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deadline {
    pub kind: ClockKind,
    pub status: ClockStatus,
    /// The latest time the obligation allows (absent when not applicable, or when the law
    /// says only "without undue delay": then the obligation is due from the decision on).
    pub due_at: Option<Timestamp>,
    pub done_at: Option<Timestamp>,
    pub reason: Option<&'static str>,
    pub missing: Vec<&'static str>,
}

/// The processor tells the controllers within this of awareness (GDPR Art. 33(2) says "without
/// undue delay"; 24 hours is Herald's commitment, compliance PROC-NOTIFY).
pub const CONTROLLER_WINDOW: TimeDelta = TimeDelta::hours(24);
/// The GDPR authority deadline: 72 hours of real time.
pub const GDPR_AUTHORITY_WINDOW: TimeDelta = TimeDelta::hours(72);
/// HIPAA's "60 calendar days" (UTC calendar).
pub const HIPAA_WINDOW: TimeDelta = TimeDelta::days(60);
/// HHS is told contemporaneously from this many affected individuals on (§164.408(b)).
pub const HHS_IMMEDIATE_THRESHOLD: u64 = 500;
/// The media are told when more than this many residents of one State are affected.
pub const MEDIA_THRESHOLD: u64 = 500;
/// How long before a deadline it is reported as approaching.
pub const APPROACHING: TimeDelta = TimeDelta::hours(24);

fn timed(kind: ClockKind, due: Timestamp, done: Option<Timestamp>, now: Timestamp) -> Deadline {
    let status = match done {
        Some(at) if at <= due => ClockStatus::Met,
        Some(_) => ClockStatus::MetLate,
        None if now > due => ClockStatus::Overdue,
        None => ClockStatus::Pending,
    };
    Deadline {
        kind,
        status,
        due_at: Some(due),
        done_at: done,
        reason: None,
        missing: Vec::new(),
    }
}

fn not_applicable(kind: ClockKind, reason: &'static str) -> Deadline {
    Deadline {
        kind,
        status: ClockStatus::NotApplicable,
        due_at: None,
        done_at: None,
        reason: Some(reason),
        missing: Vec::new(),
    }
}

fn needs(kind: ClockKind, missing: Vec<&'static str>) -> Deadline {
    Deadline {
        kind,
        status: ClockStatus::NeedsFacts,
        due_at: None,
        done_at: None,
        reason: None,
        missing,
    }
}

/// Midnight (UTC) starting the year after `t`'s, plus 60 days: the yearly HHS log's deadline
/// for breaches discovered in `t`'s year.
pub fn end_of_year_deadline(t: Timestamp) -> Timestamp {
    let next_year = Utc
        .with_ymd_and_hms(t.year() + 1, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(t);
    next_year + HIPAA_WINDOW
}

fn hipaa_applies(facts: &ClockFacts, kind: ClockKind) -> Result<Timestamp, Deadline> {
    match facts.phi_involved {
        None => return Err(needs(kind, vec!["phi_involved"])),
        Some(false) => return Err(not_applicable(kind, "no protected health information")),
        Some(true) => {}
    }
    if facts.phi_secured {
        return Err(not_applicable(
            kind,
            "the PHI was secured (encrypted per HHS guidance): not a breach of unsecured PHI",
        ));
    }
    facts
        .detected_at
        .ok_or_else(|| needs(kind, vec!["detected_at"]))
}

/// Every clock of the incident at `now`.
pub fn deadlines(facts: &ClockFacts, now: Timestamp) -> Vec<Deadline> {
    ClockKind::ALL
        .iter()
        .map(|kind| deadline(facts, *kind, now))
        .collect()
}

pub fn deadline(facts: &ClockFacts, kind: ClockKind, now: Timestamp) -> Deadline {
    match kind {
        ClockKind::GdprAuthority => {
            if facts.risk == Some(Risk::Unlikely) {
                return not_applicable(kind, "assessed as unlikely to result in a risk");
            }
            let Some(aware) = facts.became_aware_at else {
                return needs(kind, vec!["became_aware_at"]);
            };
            timed(
                kind,
                aware + GDPR_AUTHORITY_WINDOW,
                facts.authority_notified_at,
                now,
            )
        }
        ClockKind::GdprSubjects => match facts.risk {
            None => needs(kind, vec!["risk"]),
            Some(Risk::Unlikely | Risk::Risk) => {
                not_applicable(kind, "the risk is not high (Art. 34(1))")
            }
            Some(Risk::High) if facts.subject_notice_exempt => {
                not_applicable(kind, "an Art. 34(3) exemption is recorded")
            }
            Some(Risk::High) => Deadline {
                kind,
                // "Without undue delay": due from the decision on, no fixed hour.
                status: if facts.subjects_notified_at.is_some() {
                    ClockStatus::Met
                } else {
                    ClockStatus::Pending
                },
                due_at: None,
                done_at: facts.subjects_notified_at,
                reason: Some("without undue delay"),
                missing: Vec::new(),
            },
        },
        ClockKind::HipaaIndividuals => match hipaa_applies(facts, kind) {
            Err(d) => d,
            Ok(discovered) => timed(
                kind,
                discovered + HIPAA_WINDOW,
                facts.individuals_notified_at,
                now,
            ),
        },
        ClockKind::HipaaHhs => match hipaa_applies(facts, kind) {
            Err(d) => d,
            Ok(discovered) => {
                let Some(affected) = facts.affected else {
                    return needs(kind, vec!["affected"]);
                };
                let due = if affected >= HHS_IMMEDIATE_THRESHOLD {
                    discovered + HIPAA_WINDOW
                } else {
                    end_of_year_deadline(discovered)
                };
                timed(kind, due, facts.hhs_notified_at, now)
            }
        },
        ClockKind::Controllers => {
            let Some(aware) = facts.became_aware_at else {
                return needs(kind, vec!["became_aware_at"]);
            };
            match facts.scoped_subjects {
                // Whose data it was is known only once the audit trail was asked.
                None => needs(kind, vec!["scope"]),
                Some(0) => not_applicable(kind, "the scopes found no integration's subjects"),
                Some(_) => timed(
                    kind,
                    aware + CONTROLLER_WINDOW,
                    facts.controllers_notified_at,
                    now,
                ),
            }
        }
        ClockKind::HipaaMedia => match hipaa_applies(facts, kind) {
            Err(d) => d,
            Ok(discovered) => {
                if facts
                    .affected_by_state
                    .values()
                    .any(|n| *n > MEDIA_THRESHOLD)
                {
                    timed(
                        kind,
                        discovered + HIPAA_WINDOW,
                        facts.media_notified_at,
                        now,
                    )
                } else if facts.states_incomplete || facts.affected_by_state.is_empty() {
                    // Unknown States could still add up to more than 500 in one of them.
                    needs(kind, vec!["affected_by_state"])
                } else {
                    not_applicable(kind, "no State has more than 500 affected residents")
                }
            }
        },
    }
}

/// Whether a running clock is within [`APPROACHING`] of its deadline.
pub fn approaching(deadline: &Deadline, now: Timestamp) -> bool {
    deadline.status == ClockStatus::Pending
        && deadline
            .due_at
            .is_some_and(|due| due > now && due - now <= APPROACHING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn at(text: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn facts() -> ClockFacts {
        ClockFacts {
            detected_at: Some(at("2030-03-20T09:00:00Z")),
            became_aware_at: Some(at("2030-03-29T10:00:00+01:00")),
            risk: Some(Risk::High),
            phi_involved: Some(true),
            affected: Some(10),
            affected_by_state: BTreeMap::from([("CA".to_owned(), 10)]),
            ..ClockFacts::default()
        }
    }

    #[test]
    fn the_controllers_are_told_within_a_day_once_a_scope_found_their_subjects() {
        let now = at("2030-03-29T12:00:00Z");
        let unscoped = deadline(&facts(), ClockKind::Controllers, now);
        assert_eq!(unscoped.status, ClockStatus::NeedsFacts);
        assert_eq!(unscoped.missing, vec!["scope"]);
        let nobody = ClockFacts {
            scoped_subjects: Some(0),
            ..facts()
        };
        assert_eq!(
            deadline(&nobody, ClockKind::Controllers, now).status,
            ClockStatus::NotApplicable
        );
        let found = ClockFacts {
            scoped_subjects: Some(3),
            ..facts()
        };
        let running = deadline(&found, ClockKind::Controllers, now);
        assert_eq!(running.status, ClockStatus::Pending);
        assert_eq!(running.due_at, Some(at("2030-03-30T09:00:00Z")));
        assert!(approaching(&running, now));
        let late = deadline(&found, ClockKind::Controllers, at("2030-03-30T09:00:01Z"));
        assert_eq!(late.status, ClockStatus::Overdue);
        let told = ClockFacts {
            controllers_notified_at: Some(at("2030-03-29T20:00:00Z")),
            ..found
        };
        assert_eq!(
            deadline(&told, ClockKind::Controllers, now).status,
            ClockStatus::Met
        );
    }

    #[test]
    fn seventy_two_hours_are_real_hours_across_a_dst_change() {
        // Aware on Friday 29 March 2030, 10:00 CET (09:00 UTC); Europe's clocks jump forward
        // on Sunday 31 March. The deadline is 72 elapsed hours later: Monday 1 April 09:00 UTC,
        // 11:00 CEST (adding three days on the local clock would say 10:00 CEST, an hour early).
        let d = deadline(
            &facts(),
            ClockKind::GdprAuthority,
            at("2030-03-29T10:00:00Z"),
        );
        assert_eq!(d.due_at, Some(at("2030-04-01T09:00:00Z")));
        assert_eq!(d.due_at, Some(at("2030-04-01T11:00:00+02:00")));
        assert_eq!(d.status, ClockStatus::Pending);
        // One second past the deadline it is overdue; notified on the second it is met.
        let due = d.due_at.unwrap();
        assert_eq!(
            deadline(
                &facts(),
                ClockKind::GdprAuthority,
                due + TimeDelta::seconds(1)
            )
            .status,
            ClockStatus::Overdue
        );
        let mut done = facts();
        done.authority_notified_at = Some(due);
        assert_eq!(
            deadline(&done, ClockKind::GdprAuthority, due + TimeDelta::days(9)).status,
            ClockStatus::Met
        );
        done.authority_notified_at = Some(due + TimeDelta::seconds(1));
        assert_eq!(
            deadline(&done, ClockKind::GdprAuthority, due + TimeDelta::days(9)).status,
            ClockStatus::MetLate
        );
    }

    #[test]
    fn unlikely_risk_turns_the_gdpr_clocks_off_and_high_risk_turns_the_subjects_on() {
        let now = at("2030-03-30T00:00:00Z");
        let mut f = facts();
        f.risk = Some(Risk::Unlikely);
        assert_eq!(
            deadline(&f, ClockKind::GdprAuthority, now).status,
            ClockStatus::NotApplicable
        );
        assert_eq!(
            deadline(&f, ClockKind::GdprSubjects, now).status,
            ClockStatus::NotApplicable
        );
        f.risk = Some(Risk::High);
        let subjects = deadline(&f, ClockKind::GdprSubjects, now);
        assert_eq!(subjects.status, ClockStatus::Pending);
        assert_eq!(subjects.due_at, None, "without undue delay: no fixed hour");
        f.subject_notice_exempt = true;
        assert_eq!(
            deadline(&f, ClockKind::GdprSubjects, now).status,
            ClockStatus::NotApplicable
        );
        f.risk = None;
        assert_eq!(
            deadline(&f, ClockKind::GdprSubjects, now).missing,
            vec!["risk"]
        );
    }

    #[test]
    fn sixty_calendar_days_from_discovery() {
        let now = at("2030-03-21T00:00:00Z");
        let d = deadline(&facts(), ClockKind::HipaaIndividuals, now);
        // 20 March + 60 days = 19 May, same hour.
        assert_eq!(d.due_at, Some(at("2030-05-19T09:00:00Z")));
        let mut f = facts();
        f.phi_secured = true;
        assert_eq!(
            deadline(&f, ClockKind::HipaaIndividuals, now).status,
            ClockStatus::NotApplicable
        );
        f.phi_involved = Some(false);
        f.phi_secured = false;
        assert_eq!(
            deadline(&f, ClockKind::HipaaIndividuals, now).status,
            ClockStatus::NotApplicable
        );
        f.phi_involved = None;
        assert_eq!(
            deadline(&f, ClockKind::HipaaIndividuals, now).missing,
            vec!["phi_involved"]
        );
    }

    #[test]
    fn hhs_is_told_within_sixty_days_from_500_and_after_the_year_below() {
        let now = at("2030-03-21T00:00:00Z");
        let mut f = facts();
        f.affected = Some(499);
        // Below 500: 60 days after the end of 2030 (2031 is not a leap year: 1 March ends it).
        assert_eq!(
            deadline(&f, ClockKind::HipaaHhs, now).due_at,
            Some(at("2031-03-02T00:00:00Z"))
        );
        f.affected = Some(500);
        assert_eq!(
            deadline(&f, ClockKind::HipaaHhs, now).due_at,
            Some(at("2030-05-19T09:00:00Z"))
        );
        // A discovery in 2031 reports after a leap year's end: 29 February 2032 ends it.
        f.affected = Some(1);
        f.detected_at = Some(at("2031-12-31T23:59:59Z"));
        assert_eq!(
            deadline(&f, ClockKind::HipaaHhs, now).due_at,
            Some(at("2032-03-01T00:00:00Z"))
        );
        f.affected = None;
        assert_eq!(
            deadline(&f, ClockKind::HipaaHhs, now).missing,
            vec!["affected"]
        );
    }

    #[test]
    fn the_media_are_told_above_500_residents_of_one_state() {
        let now = at("2030-03-21T00:00:00Z");
        let mut f = facts();
        f.affected_by_state = BTreeMap::from([("CA".to_owned(), 500), ("NY".to_owned(), 400)]);
        assert_eq!(
            deadline(&f, ClockKind::HipaaMedia, now).status,
            ClockStatus::NotApplicable,
            "500 is not more than 500, and States do not add up"
        );
        f.states_incomplete = true;
        assert_eq!(
            deadline(&f, ClockKind::HipaaMedia, now).missing,
            vec!["affected_by_state"]
        );
        f.affected_by_state.insert("CA".to_owned(), 501);
        let d = deadline(&f, ClockKind::HipaaMedia, now);
        assert_eq!(d.status, ClockStatus::Pending);
        assert_eq!(d.due_at, Some(at("2030-05-19T09:00:00Z")));
    }

    #[test]
    fn a_deadline_approaches_in_its_last_24_hours() {
        let d = deadline(
            &facts(),
            ClockKind::GdprAuthority,
            at("2030-03-29T10:00:00Z"),
        );
        let due = d.due_at.unwrap();
        assert!(!approaching(&d, due - TimeDelta::hours(25)));
        assert!(approaching(&d, due - TimeDelta::hours(24)));
        assert!(approaching(&d, due - TimeDelta::seconds(1)));
        assert!(!approaching(&d, due + TimeDelta::seconds(1)));
    }

    proptest::proptest! {
        /// Whatever the facts, each clock has a status, and a due time exactly when it runs
        /// on a fixed deadline.
        #[test]
        fn every_clock_is_well_formed(
            aware in 0i64..4_000_000_000,
            offset in 0i64..100_000_000,
            affected in proptest::option::of(0u64..2000),
            risk in 0u8..4,
            phi in 0u8..3,
        ) {
            let aware = chrono::DateTime::from_timestamp(aware, 0).unwrap();
            let f = ClockFacts {
                detected_at: Some(aware),
                became_aware_at: Some(aware),
                risk: [None, Some(Risk::Unlikely), Some(Risk::Risk), Some(Risk::High)][risk as usize],
                phi_involved: [None, Some(false), Some(true)][phi as usize],
                affected,
                ..ClockFacts::default()
            };
            for d in deadlines(&f, aware + TimeDelta::seconds(offset)) {
                let fixed = matches!(d.status, ClockStatus::Pending | ClockStatus::Overdue | ClockStatus::Met | ClockStatus::MetLate);
                if d.kind != ClockKind::GdprSubjects {
                    proptest::prop_assert_eq!(d.due_at.is_some(), fixed);
                }
                if let Some(due) = d.due_at {
                    proptest::prop_assert!(due >= aware);
                }
            }
        }
    }
}
