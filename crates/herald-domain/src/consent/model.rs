//! The consent ledger's pure rules: the states a record moves through, how the current state
//! follows from the history, and what a send or a delivery may do given the subject's consents.
//! No I/O here: the service in [`super::service`] reads and writes, these functions decide.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::messages::{LawfulBasis, Purpose};

/// Where a subject × purpose × channel record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    Granted,
    /// A double opt-in was started and is waiting for the subject's confirmation.
    Pending,
    Withdrawn,
    /// A pending double opt-in that was not confirmed in time.
    Expired,
}

impl ConsentState {
    pub const ALL: [ConsentState; 4] = [
        ConsentState::Granted,
        ConsentState::Pending,
        ConsentState::Withdrawn,
        ConsentState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Granted => "granted",
            ConsentState::Pending => "pending",
            ConsentState::Withdrawn => "withdrawn",
            ConsentState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How a consent event came about (the evidence's `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Recorded by an integration through the API (consent obtained elsewhere).
    Api,
    /// A web form the integrator runs; the form's address is the source.
    WebForm,
    /// Herald's double opt-in: a confirmation asked for and given on the channel.
    DoubleOptIn,
    /// A keyword the subject sent (`STOP`, `START`, a confirmation word).
    InboundKeyword,
    /// The provider reported the subject's preference (WhatsApp `user_preferences`).
    ProviderPreference,
    /// Herald itself (a pending opt-in running out).
    System,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Api,
        Method::WebForm,
        Method::DoubleOptIn,
        Method::InboundKeyword,
        Method::ProviderPreference,
        Method::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Api => "api",
            Method::WebForm => "web_form",
            Method::DoubleOptIn => "double_opt_in",
            Method::InboundKeyword => "inbound_keyword",
            Method::ProviderPreference => "provider_preference",
            Method::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What one event does to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Grant,
    Request {
        expires_at: Timestamp,
    },
    Withdraw,
    Expire,
    /// The address the consent was given for changed (the phone number was rectified): a
    /// granted or pending record lapses and needs a fresh opt-in (GDPR Art. 16 with 7(1): the
    /// new number's holder never said yes). A withdrawal stays a withdrawal.
    Lapse,
}

/// A record's state as the ledger holds it: the last effective event's state and, while
/// pending, when the request runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub state: ConsentState,
    pub expires_at: Option<Timestamp>,
}

impl Standing {
    /// The state at `now`: a pending request past its expiry counts as expired even before the
    /// sweeper records the `expired` event.
    pub fn at(self, now: Timestamp) -> ConsentState {
        match (self.state, self.expires_at) {
            (ConsentState::Pending, Some(until)) if until <= now => ConsentState::Expired,
            (state, _) => state,
        }
    }
}

/// The next standing after `event`, or `None` when the event changes nothing and is not
/// recorded: an expiry applies only to a pending request; a new request does not undo a
/// granted consent (the subject already said yes).
pub fn apply(current: Option<Standing>, event: Transition) -> Option<Standing> {
    let state = current.map(|s| s.state);
    match event {
        Transition::Grant => Some(Standing {
            state: ConsentState::Granted,
            expires_at: None,
        }),
        Transition::Withdraw => Some(Standing {
            state: ConsentState::Withdrawn,
            expires_at: None,
        }),
        Transition::Request { expires_at } => {
            (state != Some(ConsentState::Granted)).then_some(Standing {
                state: ConsentState::Pending,
                expires_at: Some(expires_at),
            })
        }
        Transition::Expire => (state == Some(ConsentState::Pending)).then_some(Standing {
            state: ConsentState::Expired,
            expires_at: None,
        }),
        Transition::Lapse => matches!(state, Some(ConsentState::Granted | ConsentState::Pending))
            .then_some(Standing {
                state: ConsentState::Expired,
                expires_at: None,
            }),
    }
}

/// The standing a whole history leads to (events in order; ignored ones change nothing).
pub fn derive(history: impl IntoIterator<Item = Transition>) -> Option<Standing> {
    history
        .into_iter()
        .fold(None, |current, event| apply(current, event).or(current))
}

/// Why the consent rules refuse a send (409 codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    #[error("there is no consent (or opt-in) for this purpose and channel")]
    Missing,
    #[error("the subject has not yet confirmed the opt-in")]
    Pending,
    #[error("the subject withdrew consent for this purpose and channel")]
    Withdrawn,
}

impl ConsentRefusal {
    pub fn code(self) -> &'static str {
        match self {
            ConsentRefusal::Missing => "consent_missing",
            ConsentRefusal::Pending => "consent_pending",
            ConsentRefusal::Withdrawn => "consent_withdrawn",
        }
    }

    fn from_state(state: ConsentState) -> Option<Self> {
        match state {
            ConsentState::Granted => None,
            ConsentState::Pending => Some(ConsentRefusal::Pending),
            ConsentState::Withdrawn => Some(ConsentRefusal::Withdrawn),
            // An opt-in that ran out was never given.
            ConsentState::Expired => Some(ConsentRefusal::Missing),
        }
    }
}

/// Whether a send may go ahead, given the subject's current states on the message's channel
/// (`states`: purpose name → state at now). `Ok` names the purpose whose granted record the
/// send relies on, if it relies on one.
///
/// - A purpose whose basis is consent needs its own granted record.
/// - A business-initiated message (a template outside a conversation the subject started)
///   also needs the subject's opt-in for the channel, whatever the basis: a granted record for
///   any purpose on that channel.
/// - A withdrawn record for the purpose itself always refuses (an objection or an opt-out),
///   even inside the window.
/// - Otherwise a reply inside the 24-hour window needs nothing more.
pub fn decide_send<'a>(
    purpose: &Purpose,
    states: impl IntoIterator<Item = (&'a str, ConsentState)> + Clone,
    business_initiated: bool,
) -> Result<Option<&'a str>, ConsentRefusal> {
    if purpose.internal {
        return Ok(None);
    }
    let own = states
        .clone()
        .into_iter()
        .find(|(name, _)| *name == purpose.name);
    let own_granted = own
        .filter(|(_, state)| *state == ConsentState::Granted)
        .map(|(name, _)| name);
    if purpose.basis == LawfulBasis::Consent {
        return match own {
            None => Err(ConsentRefusal::Missing),
            Some((name, state)) => ConsentRefusal::from_state(state).map_or(Ok(Some(name)), Err),
        };
    }
    if own.is_some_and(|(_, state)| state == ConsentState::Withdrawn) {
        return Err(ConsentRefusal::Withdrawn);
    }
    if !business_initiated {
        return Ok(own_granted);
    }
    if own_granted.is_some() {
        return Ok(own_granted);
    }
    let mut any_withdrawn = false;
    let mut any_pending = false;
    for (name, state) in states {
        match state {
            ConsentState::Granted => return Ok(Some(name)),
            ConsentState::Withdrawn => any_withdrawn = true,
            ConsentState::Pending => any_pending = true,
            ConsentState::Expired => {}
        }
    }
    Err(if any_pending {
        ConsentRefusal::Pending
    } else if any_withdrawn {
        ConsentRefusal::Withdrawn
    } else {
        ConsentRefusal::Missing
    })
}

/// Whether a queued message may still be handed to the provider, given its purpose's record
/// now: it was admitted at send time, so only a change since then stops it — a withdrawal (or
/// a consent-based purpose no longer granted). Cancelling here is what makes a withdrawal stop
/// messages already queued, retries included.
pub fn decide_delivery(
    purpose: Option<&Purpose>,
    own: Option<ConsentState>,
) -> Result<(), ConsentRefusal> {
    let Some(purpose) = purpose else {
        // A purpose removed from the configuration since: nothing says it may still be sent.
        return Err(ConsentRefusal::Missing);
    };
    if purpose.internal {
        return Ok(());
    }
    match (purpose.basis, own) {
        (_, Some(ConsentState::Withdrawn)) => Err(ConsentRefusal::Withdrawn),
        (LawfulBasis::Consent, None) => Err(ConsentRefusal::Missing),
        (LawfulBasis::Consent, Some(state)) => {
            ConsentRefusal::from_state(state).map_or(Ok(()), Err)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;

    fn t(minutes: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(minutes)
    }

    fn purpose(basis: LawfulBasis) -> Purpose {
        Purpose::new("p", basis)
    }

    const BASES: [LawfulBasis; 5] = [
        LawfulBasis::Consent,
        LawfulBasis::Contract,
        LawfulBasis::LegalObligation,
        LawfulBasis::VitalInterests,
        LawfulBasis::LegitimateInterests,
    ];

    #[test]
    fn every_state_times_every_basis_at_send() {
        for basis in BASES {
            let p = purpose(basis);
            for business_initiated in [true, false] {
                // No record at all.
                let none: [(&str, ConsentState); 0] = [];
                let expected = if basis == LawfulBasis::Consent || business_initiated {
                    Err(ConsentRefusal::Missing)
                } else {
                    Ok(())
                };
                assert_eq!(
                    decide_send(&p, none, business_initiated).map(|_| ()),
                    expected,
                    "{basis:?}"
                );
                for state in ConsentState::ALL {
                    let own = [("p", state)];
                    let expected =
                        match (state, basis == LawfulBasis::Consent || business_initiated) {
                            (ConsentState::Granted, _) => Ok(()),
                            (ConsentState::Withdrawn, _) => Err(ConsentRefusal::Withdrawn),
                            (_, false) => Ok(()),
                            (ConsentState::Pending, true) => Err(ConsentRefusal::Pending),
                            (ConsentState::Expired, true) => Err(ConsentRefusal::Missing),
                        };
                    let decided = decide_send(&p, own, business_initiated);
                    // A granted record is what the send relies on.
                    if state == ConsentState::Granted {
                        assert_eq!(decided, Ok(Some("p")));
                    }
                    assert_eq!(
                        decided.map(|_| ()),
                        expected,
                        "{basis:?} {state:?} business_initiated={business_initiated}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_opt_in_for_another_purpose_on_the_channel_allows_business_initiated_non_consent_sends() {
        let contract = purpose(LawfulBasis::Contract);
        let others = [("newsletter", ConsentState::Granted)];
        assert_eq!(decide_send(&contract, others, true), Ok(Some("newsletter")));
        // Inside the window a non-consent purpose relies on no record.
        assert_eq!(decide_send(&contract, others, false), Ok(None));
        // …but never stands in for a consent-based purpose's own consent.
        let consent = purpose(LawfulBasis::Consent);
        assert_eq!(
            decide_send(&consent, others, true),
            Err(ConsentRefusal::Missing)
        );
        // A withdrawn opt-in elsewhere and nothing granted: withdrawn.
        let withdrawn = [("newsletter", ConsentState::Withdrawn)];
        assert_eq!(
            decide_send(&contract, withdrawn, true),
            Err(ConsentRefusal::Withdrawn)
        );
        assert_eq!(
            decide_send(&contract, withdrawn, false),
            Ok(None),
            "a reply in the window"
        );
    }

    #[test]
    fn herald_s_own_purposes_pass() {
        let internal = Purpose {
            internal: true,
            ..purpose(LawfulBasis::LegalObligation)
        };
        let none: [(&str, ConsentState); 0] = [];
        assert_eq!(decide_send(&internal, none, true), Ok(None));
        assert_eq!(
            decide_delivery(Some(&internal), Some(ConsentState::Withdrawn)),
            Ok(())
        );
    }

    #[test]
    fn delivery_stops_after_a_withdrawal_only() {
        for basis in BASES {
            let p = purpose(basis);
            assert_eq!(
                decide_delivery(Some(&p), Some(ConsentState::Withdrawn)),
                Err(ConsentRefusal::Withdrawn)
            );
            assert_eq!(
                decide_delivery(Some(&p), Some(ConsentState::Granted)),
                Ok(())
            );
            let consent = basis == LawfulBasis::Consent;
            assert_eq!(decide_delivery(Some(&p), None).is_err(), consent);
            assert_eq!(
                decide_delivery(Some(&p), Some(ConsentState::Expired)).is_err(),
                consent
            );
        }
        assert_eq!(decide_delivery(None, None), Err(ConsentRefusal::Missing));
    }

    #[test]
    fn a_pending_request_expires_with_time() {
        let standing = derive([Transition::Request { expires_at: t(60) }]).unwrap();
        assert_eq!(standing.at(t(59)), ConsentState::Pending);
        assert_eq!(standing.at(t(60)), ConsentState::Expired);
        // Confirmed in time: granted for good.
        let granted =
            derive([Transition::Request { expires_at: t(60) }, Transition::Grant]).unwrap();
        assert_eq!(granted.at(t(6000)), ConsentState::Granted);
        // A late expiry event changes nothing once granted; a new request neither.
        assert_eq!(apply(Some(granted), Transition::Expire), None);
        assert_eq!(
            apply(Some(granted), Transition::Request { expires_at: t(9) }),
            None
        );
    }

    #[test]
    fn names_round_trip() {
        for s in ConsentState::ALL {
            assert_eq!(ConsentState::parse(s.as_str()), Some(s));
        }
        for m in Method::ALL {
            assert_eq!(Method::parse(m.as_str()), Some(m));
        }
        assert_eq!(ConsentState::parse("active"), None);
    }

    fn transition() -> impl Strategy<Value = Transition> {
        prop_oneof![
            Just(Transition::Grant),
            Just(Transition::Withdraw),
            Just(Transition::Expire),
            Just(Transition::Lapse),
            (0i64..100).prop_map(|m| Transition::Request { expires_at: t(m) }),
        ]
    }

    /// An independent statement of the rule: the last grant or withdrawal decides, unless it is
    /// followed by a request (which a grant ignores); a request is pending until an expiry
    /// after it.
    fn oracle(events: &[Transition]) -> Option<ConsentState> {
        // A lapse counts only where it ends a granted or pending record; the rules then start
        // again from `expired`. An ignored lapse is as if it never happened.
        if let Some(i) = events.iter().rposition(|e| *e == Transition::Lapse) {
            let before = oracle(&events[..i]);
            if matches!(before, Some(ConsentState::Granted | ConsentState::Pending)) {
                return oracle_from(Some(ConsentState::Expired), &events[i + 1..]);
            }
            let mut without = events.to_vec();
            without.remove(i);
            return oracle(&without);
        }
        oracle_from(None, events)
    }

    fn oracle_from(start: Option<ConsentState>, events: &[Transition]) -> Option<ConsentState> {
        let last_decision = events
            .iter()
            .rposition(|e| matches!(e, Transition::Grant | Transition::Withdraw));
        let decided = last_decision
            .map(|i| match events[i] {
                Transition::Grant => ConsentState::Granted,
                _ => ConsentState::Withdrawn,
            })
            .or(start);
        if decided == Some(ConsentState::Granted) {
            return decided;
        }
        let tail = &events[last_decision.map_or(0, |i| i + 1)..];
        let Some(request) = tail
            .iter()
            .rposition(|e| matches!(e, Transition::Request { .. }))
        else {
            return decided;
        };
        if tail[request..].contains(&Transition::Expire) {
            Some(ConsentState::Expired)
        } else {
            Some(ConsentState::Pending)
        }
    }

    proptest! {
        #[test]
        fn the_derived_state_is_the_last_effective_event(events in proptest::collection::vec(transition(), 0..40)) {
            let derived = derive(events.iter().copied()).map(|s| s.state);
            prop_assert_eq!(derived, oracle(&events));
        }

        #[test]
        fn keeping_the_state_in_step_equals_deriving_it(events in proptest::collection::vec(transition(), 0..40)) {
            // What the store keeps (apply each recorded event to the kept state) equals the
            // derivation over the whole history.
            let mut kept: Option<Standing> = None;
            let mut recorded = Vec::new();
            for event in &events {
                if let Some(next) = apply(kept, *event) {
                    kept = Some(next);
                    recorded.push(*event);
                }
            }
            prop_assert_eq!(kept, derive(events.iter().copied()));
            prop_assert_eq!(kept, derive(recorded));
        }
    }
}
