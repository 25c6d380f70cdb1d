//! The consent ledger: nobody is messaged without a lawful basis, and "stop" works the moment
//! it is said (compliance.md GDPR-6.1, GDPR-7.1, GDPR-7.3, DOI-1, WA-OPTIN, WA-OPTOUT).
//!
//! - [`model`]: states, methods, and the pure rules — the current state from the history,
//!   what a send and a delivery may do.
//! - [`keywords`]: `STOP`/`START`/confirmation words, whole-message, case- and
//!   accent-insensitive.
//! - [`ledger`]: what is stored — append-only events with encrypted evidence, the current
//!   standing kept in step in the same transaction.
//! - [`service`]: recording, withdrawing, reading; the send gate.
//! - [`inbound`]: keywords, buttons, codes and provider preferences from the subject.
//! - [`opt_in`]: double opt-in, business- and user-initiated, and the expiry sweep.

pub mod inbound;
pub mod keywords;
pub mod ledger;
pub mod model;
pub mod opt_in;
pub mod service;

pub use inbound::{InboundConsent, Preference};
pub use keywords::{Keyword, KeywordPolicy};
pub use ledger::{ConsentChange, OptInCode, StoredConsent, StoredConsentEvent};
pub use model::{
    Applied, CHANNEL_OPT_IN, ConsentRefusal, ConsentState, Event, Method, Origin, Standing,
    Transition,
};
pub use opt_in::{OptInCodeIssued, OptInStarted};
pub use service::{
    ConsentError, ConsentOverview, ConsentSettings, ConsentView, Consents, EvidenceInput,
    HistoryEntry,
};
