//! Messages: what integrations send, and what happens to it.
//!
//! - [`catalog`]: purposes (lawful basis) and approved templates, from configuration.
//! - [`model`]: statuses (forward only), content, errors.
//! - [`send`]: accepting a message — policy, encryption, group commit with its audit entry.

pub mod catalog;
pub mod model;
pub mod send;

pub use catalog::{Catalog, LawfulBasis, Purpose, Template, TemplateCategory};
pub use model::{Channel, Content, MessageError, MessageRecord, MessageStatus};
pub use send::{
    AcceptOutcome, Accepted, ConsentGate, IdempotencyClaim, Messages, NewMessage, NoConsentLedger,
    Refusal, SendCommand, SendError,
};
