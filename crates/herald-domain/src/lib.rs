//! Herald's capabilities, free of HTTP and SQL.
//!
//! - [`ids`]: random, prefixed pseudonyms (`sub_…`, `int_…`, `key_…`).
//! - [`phone`]: E.164 parsing; a [`phone::PhoneNumber`] never prints itself.
//! - [`clock`]: time is passed in ([`clock::Clock`]), so tests control it.
//! - [`keys`]: the key hierarchy at run time — root keys, the system key, per-subject data
//!   keys (cached, zeroised), the blind index, root-key rotation.
//! - [`subjects`]: create-or-find people by phone number; the number is stored only encrypted.
//! - [`auth`]: integrations, API keys, scopes, authentication.
//! - [`audit`]: the tamper-evident trail: entries written with their actions, a hash chain
//!   sealed in batches, signed checkpoints, a witness, verification, export, retention.
//! - [`consent`]: the consent ledger — purposes' lawful bases, evidence, double opt-in,
//!   opt-out keywords, the gate every send passes.
//! - [`messages`]: sending, delivery with retries and pacing, provider callbacks.
//! - [`webhooks`]: events to integrators (Standard Webhooks), their endpoints and delivery.
//! - [`worker`]: the leased claim-and-handle loop the background workers share.
//! - [`rights`]: data-subject rights — the request register with its legal deadlines.
//! - [`store`]: the storage traits `herald-store` implements for SQLite and PostgreSQL.
//!
//! Capabilities take their collaborators (`Arc<dyn Store>`, the keyring, the clock) in their
//! constructors and return typed errors; the HTTP layer maps those to problem documents.

pub mod audit;
pub mod auth;
pub mod batch;
pub mod clock;
pub mod consent;
pub mod ids;
pub mod incidents;
pub mod keys;
pub mod limits;
pub mod messages;
pub mod phone;
mod phone_memo;
pub mod rights;
pub mod store;
pub mod subjects;
pub mod vendors;
pub mod webhooks;
pub mod worker;
