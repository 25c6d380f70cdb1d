//! Messages: what integrations send, and what happens to it.
//!
//! - [`catalog`]: purposes (lawful basis) and approved templates, from configuration.
//! - [`model`]: statuses (forward only), content, errors.
//! - [`send`]: accepting a message — policy, encryption, group commit with its audit entry.
//! - [`delivery`]: the worker that hands due messages to the provider, with leases.
//! - [`retry`]: when to try again and when to give up (a pure function).
//! - [`pacing`]: per-number and per-recipient token buckets.
//! - [`provider`]: the channel adapter trait and the sandbox channel.
//! - [`reports`]: provider callbacks — statuses and customers' messages.

pub mod catalog;
pub mod delivery;
pub mod model;
pub mod pacing;
pub mod provider;
pub mod reports;
pub mod retry;
pub mod send;

pub use catalog::{
    Catalog, FrequencyCap, LawfulBasis, Notice, Purpose, Template, TemplateCategory,
};
pub use delivery::{
    AttemptRecord, ClaimedMessage, Delivery, DeliveryError, DeliverySettings, DeliveryUpdate,
};
pub use model::{Channel, Content, MessageError, MessageRecord, MessageStatus};
pub use pacing::Pacer;
pub use provider::{
    Outgoing, Provider, ProviderFailure, SandboxCallbacks, SandboxProvider, SandboxReply, Sent,
};
pub use reports::{
    CallbackError, CallbackParser, CallbackStats, InboundContent, InboundReport, InboxEntry,
    NewInbound, ProviderReport, ReportBatch, ReportError, ReportSettings, ReportTarget, Reports,
    StatusChange, StatusReport,
};
pub use retry::RetryPolicy;
pub use send::{
    AcceptOutcome, Accepted, ChannelVendor, ConsentGate, IdempotencyClaim, Messages, NewMessage,
    Refusal, SendCommand, SendError,
};
