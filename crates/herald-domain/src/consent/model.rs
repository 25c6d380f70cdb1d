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

/// Who made an event. The subject's own word is the last word: what the subject closed, only
/// the subject reopens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A keyword, a button, a confirmation, an opt-in code, WhatsApp's own control.
    Subject,
    /// An integration through the API (consent obtained elsewhere, a double opt-in request).
    Integration,
    /// Herald itself (a request running out, a lapse on rectification).
    System,
}

impl Origin {
    pub const ALL: [Origin; 3] = [Origin::Subject, Origin::Integration, Origin::System];

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Subject => "subject",
            Origin::Integration => "integration",
            Origin::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One event as the rules see it: what it does, who made it, and when it happened (the
/// evidence's capture time, the provider's message time — never later than Herald learnt of
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub transition: Transition,
    pub origin: Origin,
    pub at: Timestamp,
}

/// A record's state as the ledger holds it: the last effective event's state, when that event
/// happened and whether the subject made it, and, while pending, when the request runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub state: ConsentState,
    pub expires_at: Option<Timestamp>,
    pub effective_at: Timestamp,
    pub by_subject: bool,
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

    /// The subject withdrew this record themselves (an opt-out): only the subject reopens it.
    pub fn opted_out(self) -> bool {
        self.state == ConsentState::Withdrawn && self.by_subject
    }
}

/// What an event does to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record moves to this standing.
    Changed(Standing),
    /// The same state said again, later: recorded, and the record's time moves to it (so that
    /// an older word arriving afterwards is stale), but nothing changed for anyone else.
    Reaffirmed(Standing),
    /// Nothing to record: an expiry after a grant, a new request while one is pending or after
    /// a grant, a withdrawal of what is withdrawn.
    Unchanged,
    /// Older than the record's latest effective event (events arrive out of order: Meta does
    /// not guarantee order and retries failed callbacks later; integrators send late): kept in
    /// the history, the standing stays.
    Stale,
    /// The subject opted out and only the subject may opt back in.
    OptedOut,
}

/// What `event` does to the record standing at `current` (already read at the event's
/// processing time: a lapsed request counts as expired).
///
/// - An event older than the latest effective one is stale — except the subject's own
///   withdrawal, which no integration's claim outranks whenever it was made, and the subject's
///   confirmation of a pending request (it answers that request, whatever the clocks say).
/// - After the subject's own opt-out, a later grant or request that the subject did not make
///   is refused ([`Applied::OptedOut`]).
/// - Otherwise: a grant or withdrawal decides; a request makes a record pending unless it is
///   granted or already pending; an expiry ends only a pending request; a lapse ends a granted
///   or pending record.
pub fn apply(current: Option<Standing>, event: Event) -> Applied {
    let by_subject = event.origin == Origin::Subject;
    let changed = |state, expires_at| {
        Applied::Changed(Standing {
            state,
            expires_at,
            effective_at: event.at,
            by_subject,
        })
    };
    if let Some(now) = current {
        let objection_over_a_claim =
            by_subject && event.transition == Transition::Withdraw && !now.by_subject;
        let confirmation = by_subject
            && event.transition == Transition::Grant
            && now.state == ConsentState::Pending;
        if event.at < now.effective_at && !objection_over_a_claim && !confirmation {
            return Applied::Stale;
        }
        let reopening = matches!(
            event.transition,
            Transition::Grant | Transition::Request { .. }
        );
        if now.opted_out() && reopening && !by_subject {
            return Applied::OptedOut;
        }
    }
    let state = current.map(|s| s.state);
    match event.transition {
        Transition::Grant => changed(ConsentState::Granted, None),
        Transition::Withdraw if state == Some(ConsentState::Withdrawn) => match current {
            // The subject withdrawing what an integration withdrew is still news: it is now
            // the subject's own opt-out.
            Some(now) if by_subject && !now.by_subject => changed(ConsentState::Withdrawn, None),
            // Said again, later, by the same side: the record's time moves. (An integration's
            // withdrawal never replaces the subject's own opt-out.)
            Some(now) if by_subject == now.by_subject && event.at > now.effective_at => {
                Applied::Reaffirmed(Standing {
                    effective_at: event.at,
                    ..now
                })
            }
            _ => Applied::Unchanged,
        },
        Transition::Withdraw => changed(ConsentState::Withdrawn, None),
        Transition::Request { expires_at } => match state {
            Some(ConsentState::Granted | ConsentState::Pending) => Applied::Unchanged,
            _ => changed(ConsentState::Pending, Some(expires_at)),
        },
        Transition::Expire if state == Some(ConsentState::Pending) => {
            changed(ConsentState::Expired, None)
        }
        Transition::Lapse
            if matches!(state, Some(ConsentState::Granted | ConsentState::Pending)) =>
        {
            changed(ConsentState::Expired, None)
        }
        Transition::Expire | Transition::Lapse => Applied::Unchanged,
    }
}

/// The standing a whole history leads to (events in the order they were processed; ignored,
/// stale and refused ones change nothing).
pub fn derive(history: impl IntoIterator<Item = Event>) -> Option<Standing> {
    history
        .into_iter()
        .fold(None, |current, event| match apply(current, event) {
            Applied::Changed(next) | Applied::Reaffirmed(next) => Some(next),
            Applied::Unchanged | Applied::Stale | Applied::OptedOut => current,
        })
}

/// The purpose name of a subject's channel opt-in record: the opt-in WhatsApp requires for
/// any business-initiated message. Granted by the subject's own opt-in on the channel (START,
/// a confirmation, a code); withdrawn by their opt-out (STOP, the stop button).
pub const CHANNEL_OPT_IN: &str = "herald.channel";

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
/// (`states`: purpose name → state at now, the channel opt-in record [`CHANNEL_OPT_IN`]
/// included). `Ok` names the record whose granted event the send relies on, if it relies on
/// one.
///
/// - A withdrawn record for the purpose itself always refuses (an objection or an opt-out),
///   even inside the window.
/// - After the subject's opt-out of the channel ("STOP"), no business-initiated message of a
///   purpose the opt-out covers goes out ([`Purpose::stopped_by_opt_out`]).
/// - A purpose whose basis is consent needs its own granted record.
/// - A business-initiated message (a template outside a conversation the subject started)
///   also needs the subject's opt-in for the channel, whatever the basis: a granted record
///   for any purpose on that channel, or the channel opt-in itself.
/// - Otherwise a reply inside the 24-hour window needs nothing more.
pub fn decide_send<'a>(
    purpose: &Purpose,
    states: impl IntoIterator<Item = (&'a str, ConsentState)> + Clone,
    business_initiated: bool,
) -> Result<Option<&'a str>, ConsentRefusal> {
    if purpose.internal {
        return Ok(None);
    }
    let state_of = |name: &str| {
        states
            .clone()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, state)| state)
    };
    let own = states
        .clone()
        .into_iter()
        .find(|(name, _)| *name == purpose.name);
    let own_granted = own
        .filter(|(_, state)| *state == ConsentState::Granted)
        .map(|(name, _)| name);
    if own.is_some_and(|(_, state)| state == ConsentState::Withdrawn) {
        return Err(ConsentRefusal::Withdrawn);
    }
    if business_initiated
        && purpose.stopped_by_opt_out()
        && state_of(CHANNEL_OPT_IN) == Some(ConsentState::Withdrawn)
    {
        return Err(ConsentRefusal::Withdrawn);
    }
    if purpose.basis == LawfulBasis::Consent {
        return match own {
            None => Err(ConsentRefusal::Missing),
            Some((name, state)) => ConsentRefusal::from_state(state).map_or(Ok(Some(name)), Err),
        };
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

/// Whether a queued message may still be handed to the provider, given the subject's records
/// on its channel now (`states`, as for [`decide_send`]): it was admitted at send time, so only
/// a change since then stops it — a withdrawal of its purpose, a consent-based purpose no
/// longer granted, and for a business-initiated message the opt-in it relied on being gone
/// (a "STOP" since). Cancelling here is what makes a withdrawal stop messages already queued,
/// retries included.
pub fn decide_delivery<'a>(
    purpose: Option<&Purpose>,
    states: impl IntoIterator<Item = (&'a str, ConsentState)> + Clone,
    business_initiated: bool,
) -> Result<(), ConsentRefusal> {
    let Some(purpose) = purpose else {
        // A purpose removed from the configuration since: nothing says it may still be sent.
        return Err(ConsentRefusal::Missing);
    };
    if purpose.internal {
        // Herald's own acknowledgements go out after a STOP (they confirm it); its
        // business-initiated messages (a double opt-in's confirmation template) do not.
        let opted_out = states
            .into_iter()
            .any(|(name, state)| name == CHANNEL_OPT_IN && state == ConsentState::Withdrawn);
        return if business_initiated && opted_out {
            Err(ConsentRefusal::Withdrawn)
        } else {
            Ok(())
        };
    }
    let own = states
        .clone()
        .into_iter()
        .find(|(name, _)| *name == purpose.name)
        .map(|(_, state)| state);
    let stopped = states
        .clone()
        .into_iter()
        .any(|(name, state)| name == CHANNEL_OPT_IN && state == ConsentState::Withdrawn);
    if business_initiated && purpose.stopped_by_opt_out() && stopped {
        return Err(ConsentRefusal::Withdrawn);
    }
    match (purpose.basis, own) {
        (_, Some(ConsentState::Withdrawn)) => return Err(ConsentRefusal::Withdrawn),
        (LawfulBasis::Consent, None) => return Err(ConsentRefusal::Missing),
        (LawfulBasis::Consent, Some(state)) => {
            if let Some(refusal) = ConsentRefusal::from_state(state) {
                return Err(refusal);
            }
        }
        _ => {}
    }
    if business_initiated {
        decide_send(purpose, states, true).map(|_| ())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::messages::catalog::StopScope;

    fn t(minutes: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::minutes(minutes)
    }

    fn purpose(basis: LawfulBasis) -> Purpose {
        Purpose::new("p", basis)
    }

    fn by(origin: Origin, transition: Transition, minute: i64) -> Event {
        Event {
            transition,
            origin,
            at: t(minute),
        }
    }

    fn integration(transition: Transition, minute: i64) -> Event {
        by(Origin::Integration, transition, minute)
    }

    fn subject(transition: Transition, minute: i64) -> Event {
        by(Origin::Subject, transition, minute)
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
    fn stop_ends_business_initiated_messages_of_every_purpose_it_covers() {
        // The channel opt-in withdrawn by STOP, a grant for another purpose left over.
        let states = [
            (CHANNEL_OPT_IN, ConsentState::Withdrawn),
            ("legal_notices", ConsentState::Granted),
        ];
        for basis in BASES {
            let p = purpose(basis);
            assert_eq!(
                decide_send(&p, states, true),
                Err(ConsentRefusal::Withdrawn),
                "{basis:?}"
            );
            // A conversation the subject starts again may still be answered.
            if basis != LawfulBasis::Consent {
                assert_eq!(decide_send(&p, states, false).map(|_| ()), Ok(()));
            }
        }
        // A purpose configured to be stopped only as marketing keeps going on a surviving
        // grant; a marketing purpose never does.
        let legal = Purpose {
            stop_withdraws: StopScope::Marketing,
            ..purpose(LawfulBasis::LegalObligation)
        };
        assert_eq!(decide_send(&legal, states, true), Ok(Some("legal_notices")));
        let marketing = Purpose {
            marketing: true,
            ..legal
        };
        assert_eq!(
            decide_send(&marketing, states, true),
            Err(ConsentRefusal::Withdrawn)
        );
        // START granted the channel opt-in again: it is an opt-in of its own.
        let restarted = [(CHANNEL_OPT_IN, ConsentState::Granted)];
        assert_eq!(
            decide_send(&purpose(LawfulBasis::Contract), restarted, true),
            Ok(Some(CHANNEL_OPT_IN))
        );
    }

    #[test]
    fn herald_s_own_purposes_pass_unless_the_subject_stopped_the_channel() {
        let internal = Purpose {
            internal: true,
            ..purpose(LawfulBasis::LegalObligation)
        };
        let none: [(&str, ConsentState); 0] = [];
        assert_eq!(decide_send(&internal, none, true), Ok(None));
        let stopped = [(CHANNEL_OPT_IN, ConsentState::Withdrawn)];
        // An acknowledgement of the STOP goes out; a confirmation template does not.
        assert_eq!(decide_delivery(Some(&internal), stopped, false), Ok(()));
        assert_eq!(
            decide_delivery(Some(&internal), stopped, true),
            Err(ConsentRefusal::Withdrawn)
        );
    }

    #[test]
    fn delivery_stops_after_a_withdrawal_only() {
        for basis in BASES {
            let p = purpose(basis);
            let own = |state| [("p", state)];
            for business_initiated in [false, true] {
                assert_eq!(
                    decide_delivery(Some(&p), own(ConsentState::Withdrawn), business_initiated),
                    Err(ConsentRefusal::Withdrawn)
                );
                assert_eq!(
                    decide_delivery(Some(&p), own(ConsentState::Granted), business_initiated),
                    Ok(())
                );
            }
            let consent = basis == LawfulBasis::Consent;
            let none: [(&str, ConsentState); 0] = [];
            assert_eq!(decide_delivery(Some(&p), none, false).is_err(), consent);
            assert_eq!(
                decide_delivery(Some(&p), own(ConsentState::Expired), false).is_err(),
                consent
            );
            // A business-initiated message whose opt-in is gone (STOP since it was queued).
            let stopped = [
                (CHANNEL_OPT_IN, ConsentState::Withdrawn),
                ("newsletter", ConsentState::Withdrawn),
            ];
            assert_eq!(
                decide_delivery(Some(&p), stopped, true),
                Err(ConsentRefusal::Withdrawn)
            );
            if !consent {
                assert_eq!(decide_delivery(Some(&p), stopped, false), Ok(()));
            }
        }
        let none: [(&str, ConsentState); 0] = [];
        assert_eq!(
            decide_delivery(None, none, false),
            Err(ConsentRefusal::Missing)
        );
    }

    #[test]
    fn a_pending_request_expires_with_time() {
        let request = Transition::Request { expires_at: t(60) };
        let standing = derive([integration(request, 0)]).unwrap();
        assert_eq!(standing.at(t(59)), ConsentState::Pending);
        assert_eq!(standing.at(t(60)), ConsentState::Expired);
        // Confirmed in time: granted for good.
        let granted = derive([integration(request, 0), subject(Transition::Grant, 5)]).unwrap();
        assert_eq!(granted.at(t(6000)), ConsentState::Granted);
        assert!(granted.by_subject);
        // A late expiry event changes nothing once granted; a new request neither.
        assert_eq!(
            apply(Some(granted), by(Origin::System, Transition::Expire, 60)),
            Applied::Unchanged
        );
        assert_eq!(
            apply(
                Some(granted),
                integration(Transition::Request { expires_at: t(90) }, 30)
            ),
            Applied::Unchanged
        );
        // A repeated request while one is pending asks nothing twice.
        assert_eq!(
            apply(
                Some(standing),
                integration(Transition::Request { expires_at: t(90) }, 30)
            ),
            Applied::Unchanged
        );
    }

    #[test]
    fn an_older_event_is_stale_and_changes_nothing() {
        let stop = derive([subject(Transition::Withdraw, 10)]).unwrap();
        // A grant "captured" before the STOP, recorded after it: history only.
        assert_eq!(
            apply(Some(stop), integration(Transition::Grant, 5)),
            Applied::Stale
        );
        let withdrawn_by_api = derive([integration(Transition::Withdraw, 10)]).unwrap();
        assert_eq!(
            apply(Some(withdrawn_by_api), integration(Transition::Grant, 5)),
            Applied::Stale
        );
        // The same grant with a later capture time decides.
        assert!(matches!(
            apply(Some(withdrawn_by_api), integration(Transition::Grant, 15)),
            Applied::Changed(Standing {
                state: ConsentState::Granted,
                ..
            })
        ));
        // START then STOP, delivered in reverse order: the STOP (later) stands.
        let reversed = derive([
            subject(Transition::Withdraw, 20),
            subject(Transition::Grant, 19),
        ])
        .unwrap();
        assert_eq!(reversed.state, ConsentState::Withdrawn);
    }

    #[test]
    fn only_the_subject_reopens_what_the_subject_closed() {
        let stop = derive([subject(Transition::Withdraw, 10)]).unwrap();
        assert!(stop.opted_out());
        for transition in [Transition::Grant, Transition::Request { expires_at: t(99) }] {
            assert_eq!(
                apply(Some(stop), integration(transition, 30)),
                Applied::OptedOut
            );
        }
        // The subject's own START (later) reopens it.
        assert!(matches!(
            apply(Some(stop), subject(Transition::Grant, 30)),
            Applied::Changed(Standing {
                state: ConsentState::Granted,
                by_subject: true,
                ..
            })
        ));
        // An integration may still withdraw, or lapse, a record: nothing opens.
        assert_eq!(
            apply(Some(stop), integration(Transition::Withdraw, 30)),
            Applied::Unchanged
        );
        // The subject's STOP outranks an integration's grant recorded in the meantime, even
        // though the grant says it came later.
        let granted = derive([integration(Transition::Grant, 12)]).unwrap();
        assert!(matches!(
            apply(Some(granted), subject(Transition::Withdraw, 10)),
            Applied::Changed(Standing {
                state: ConsentState::Withdrawn,
                by_subject: true,
                ..
            })
        ));
        // A confirmation answers its request even if the provider's clock is behind ours.
        let pending = derive([integration(Transition::Request { expires_at: t(90) }, 10)]).unwrap();
        assert!(matches!(
            apply(Some(pending), subject(Transition::Grant, 9)),
            Applied::Changed(Standing {
                state: ConsentState::Granted,
                ..
            })
        ));
    }

    #[test]
    fn names_round_trip() {
        for s in ConsentState::ALL {
            assert_eq!(ConsentState::parse(s.as_str()), Some(s));
        }
        for m in Method::ALL {
            assert_eq!(Method::parse(m.as_str()), Some(m));
        }
        for o in Origin::ALL {
            assert_eq!(Origin::parse(o.as_str()), Some(o));
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

    /// An independent statement of the rule for events of one origin at one time (nothing
    /// stale, nobody outranked): the last grant or withdrawal decides, unless it is followed
    /// by a request (which a grant ignores); a request is pending until an expiry after it.
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
        // The first request after the decision makes it pending (later ones while pending
        // ask nothing again); an expiry after it ends it, and a request after that starts over.
        let mut state = decided;
        for event in tail {
            match event {
                Transition::Request { .. } if state != Some(ConsentState::Pending) => {
                    state = Some(ConsentState::Pending);
                }
                Transition::Expire if state == Some(ConsentState::Pending) => {
                    state = Some(ConsentState::Expired);
                }
                _ => {}
            }
        }
        state
    }

    fn at_once(events: &[Transition]) -> Vec<Event> {
        events.iter().map(|e| integration(*e, 0)).collect()
    }

    /// The subject's own grants and withdrawals, each at a distinct minute.
    fn subject_words() -> impl Strategy<Value = Vec<(bool, i64)>> {
        proptest::collection::vec(any::<bool>(), 1..20)
            .prop_flat_map(|grants| {
                let n = grants.len();
                (
                    Just(grants),
                    Just((0..n as i64).collect::<Vec<_>>()).prop_shuffle(),
                )
            })
            .prop_map(|(grants, minutes)| grants.into_iter().zip(minutes).collect())
    }

    proptest! {
        #[test]
        fn the_derived_state_is_the_last_effective_event(events in proptest::collection::vec(transition(), 0..40)) {
            let derived = derive(at_once(&events)).map(|s| s.state);
            prop_assert_eq!(derived, oracle(&events));
        }

        #[test]
        fn keeping_the_state_in_step_equals_deriving_it(events in proptest::collection::vec(transition(), 0..40)) {
            // What the store keeps (apply each recorded event to the kept state) equals the
            // derivation over the whole history.
            let mut kept: Option<Standing> = None;
            let mut recorded = Vec::new();
            for event in at_once(&events) {
                if let Applied::Changed(next) | Applied::Reaffirmed(next) = apply(kept, event) {
                    kept = Some(next);
                    recorded.push(event);
                }
            }
            prop_assert_eq!(kept, derive(at_once(&events)));
            prop_assert_eq!(kept, derive(recorded));
        }

        #[test]
        fn the_subject_s_latest_word_decides_whatever_the_arrival_order(words in subject_words()) {
            // START/STOP (grant/withdraw by the subject) processed in any order: the state is
            // that of the word said last.
            let events: Vec<Event> = words
                .iter()
                .map(|(grant, minute)| {
                    let transition = if *grant { Transition::Grant } else { Transition::Withdraw };
                    subject(transition, *minute)
                })
                .collect();
            let latest = words.iter().max_by_key(|(_, minute)| *minute).map(|(grant, _)| *grant);
            let expected = latest.map(|grant| if grant { ConsentState::Granted } else { ConsentState::Withdrawn });
            prop_assert_eq!(derive(events).map(|s| s.state), expected);
        }

        #[test]
        fn no_integration_event_reopens_a_subject_s_opt_out(
            stop_at in 0i64..100,
            events in proptest::collection::vec((transition(), 0i64..200), 0..30),
        ) {
            // Whatever integrations (and Herald) do after a subject's STOP, it is never
            // granted or pending again without the subject.
            let mut history = vec![subject(Transition::Withdraw, stop_at)];
            history.extend(events.iter().map(|(e, m)| integration(*e, *m)));
            history.extend(events.iter().map(|(e, m)| by(Origin::System, *e, *m)));
            let state = derive(history).map(|s| s.state);
            prop_assert_eq!(state, Some(ConsentState::Withdrawn));
        }
    }
}
