//! The tamper-evident audit trail.
//!
//! Writing: a capability builds an [`AuditEvent`] and either passes the prepared
//! [`AuditRecord`] to the store method that performs the action (same transaction: no action
//! without its record, and no record without its action), or, for events that change nothing
//! (reads, refusals, authentication failures), calls [`Audit::append`], which batches concurrent
//! entries into one transaction and returns once they are durable. Either way the entry lands
//! unsealed: writers never contend for the chain head.
//!
//! Sealing: [`Audit::seal`] (run by a background task, one sealer at a time across all nodes)
//! assigns sequence numbers in batches, chains the hashes, and every N entries or T seconds signs
//! a checkpoint with Ed25519 and appends it to the [`Witness`] outside the database.
//!
//! Verifying: [`Audit::verify`] recomputes the chain and checks every checkpoint and the witness;
//! [`chain`] documents the encoding so outsiders can do the same (tools/verify_audit.py).

mod body;
pub mod chain;
mod event;
pub mod flood;
mod service;
mod witness;

pub use chain::{
    ChainHead, Checkpoint, CheckpointKind, Finding, PendingEntry, Problem, Report, SealedEntry,
};
pub use event::{
    Action, Actor, AuditEvent, Detail, Details, Initiator, Outcome, RequestId, Target, network_of,
};
pub use service::{
    Audit, AuditError, AuditSettings, Progress, PruneReport, PublicKey, SealReport, verify_trail,
    verify_trail_observed,
};
pub use witness::{FileWitness, Witness};

use crate::clock::Timestamp;

/// An entry ready to be written: its time and its canonical JSON (without sequence number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub recorded_at: Timestamp,
    pub body: String,
}

impl AuditRecord {
    /// Prepares `event`, happening `now`, for writing.
    pub fn new(event: &AuditEvent, now: Timestamp) -> Self {
        Self {
            recorded_at: now,
            body: body::canonical_body(event, now),
        }
    }
}

/// A checkpoint-signing key as stored: the private half encrypted under the system key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditKeyRecord {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub private_key_ciphertext: Vec<u8>,
    pub created_at: Timestamp,
}

/// What the sealer sees under the sealing lock.
#[derive(Debug, Clone)]
pub struct SealInput {
    /// The last sealed entry (or the horizon, or genesis).
    pub head: ChainHead,
    /// The latest checkpoint's sequence number and time.
    pub last_checkpoint: Option<(u64, Timestamp)>,
    /// Unsealed entries in insertion order.
    pub pending: Vec<PendingEntry>,
}

/// What the sealer decided: entries to seal (replacing the pending ones) and the checkpoints
/// that fell due.
#[derive(Debug, Clone, Default)]
pub struct SealPlan {
    pub sealed: Vec<SealedEntry>,
    pub pending_ids: Vec<i64>,
    pub checkpoints: Vec<Checkpoint>,
}
