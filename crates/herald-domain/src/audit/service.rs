//! The audit service: batched appends, the sealer, checkpoints and the witness, verification,
//! export and retention.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::TimeDelta;
use herald_crypto::aead::Binding;
use herald_crypto::hash::sha256;
use herald_crypto::signing::SigningKey;

use super::chain::{
    self, ChainHead, ChainVerifier, Checkpoint, CheckpointKind, Report, SealedEntry,
};
use super::event::{Action, Actor, AuditEvent, Detail, Details, Initiator, Outcome, Target};
use super::witness::Witness;
use super::{AuditKeyRecord, AuditRecord, SealInput, SealPlan};
use crate::batch::Batcher;
use crate::clock::{Clock, Timestamp};
use crate::keys::{KeyError, Keyring};
use crate::store::{Store, StoreError};

/// How many standalone entries one append transaction takes at most.
const APPEND_BATCH: usize = 1024;
/// How many append transactions may run at once.
const APPENDS_IN_FLIGHT: usize = 8;
/// How many sealed entries verification reads per query…
const VERIFY_PAGE: u32 = 10_000;
/// …and how many such queries run ahead of the chain check.
const VERIFY_PREFETCH: usize = 3;

#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// A checkpoint at least every this many entries…
    pub checkpoint_every: u64,
    /// …and at least this often while entries arrive.
    pub checkpoint_interval: TimeDelta,
    /// Entries sealed per transaction.
    pub seal_batch: u32,
    /// Entries older than this may be pruned.
    pub retention: TimeDelta,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            checkpoint_interval: TimeDelta::seconds(5),
            seal_batch: 10_000,
            retention: TimeDelta::days(6 * 365 + 2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot use the audit witness ({witness}): {source}")]
    Witness {
        witness: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit signing key is unusable")]
    SigningKey,
    #[error("refusing to prune: the audit trail does not verify ({0})")]
    PruneRefused(String),
}

/// The outcome of sealing everything pending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealReport {
    pub sealed: u64,
    pub checkpoints: u64,
}

/// How many entries each sealing transaction takes within one pass. A pass starts small and
/// doubles while it keeps finding full batches: in steady state each transaction is short (on
/// SQLite it holds the one writer, and every send waits behind it: measured p99 30 ms with
/// 2,500-entry transactions at 10,000 sends/s), while a backlog is still sealed in batches of
/// up to `seal_batch` (per-transaction cost dominates there, on PostgreSQL especially).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SealBatches {
    size: u32,
    max: u32,
}

impl SealBatches {
    const FIRST: u32 = 256;

    fn new(max: u32) -> Self {
        let max = max.max(1);
        Self {
            size: Self::FIRST.min(max),
            max,
        }
    }

    fn size(&self) -> u32 {
        self.size
    }

    fn grow(&mut self) {
        self.size = self.size.saturating_mul(2).min(self.max);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub through_seq: u64,
    pub removed: u64,
}

/// The window anonymous failures are aggregated over.
pub const FAILURE_WINDOW: TimeDelta = TimeDelta::minutes(1);

/// A checkpoint-signing public key, for verifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub created_at: Timestamp,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    witness: Arc<dyn Witness>,
    settings: AuditSettings,
    signing: SigningKey,
    key_id: String,
    appends: Batcher<AuditRecord, ()>,
    failures: super::flood::FloodGate,
}

/// The audit trail. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("key_id", &self.inner.key_id)
            .field("witness", &self.inner.witness)
            .finish_non_exhaustive()
    }
}

fn private_key_binding(key_id: &str) -> Binding<'_> {
    Binding::new("audit_keys", "private_key_ciphertext", key_id)
}

fn key_id_of(public_key: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&sha256(&[public_key])[..8])
}

impl Audit {
    /// Loads (or, on first start, creates) the checkpoint-signing key and starts the appender.
    /// Must be called inside a Tokio runtime.
    pub async fn open(
        store: Arc<dyn Store>,
        keyring: &Keyring,
        clock: Arc<dyn Clock>,
        witness: Arc<dyn Witness>,
        settings: AuditSettings,
    ) -> Result<Self, AuditError> {
        let (signing, key_id) = match store.audit_keys().await?.pop() {
            Some(stored) => {
                let pkcs8 = keyring.open_system(
                    &private_key_binding(&stored.key_id),
                    &stored.private_key_ciphertext,
                )?;
                let key = SigningKey::from_pkcs8(&pkcs8).map_err(|_| AuditError::SigningKey)?;
                (key, stored.key_id)
            }
            None => {
                let (key, pkcs8) = SigningKey::generate().map_err(|_| AuditError::SigningKey)?;
                let key_id = key_id_of(key.public_key());
                let now = clock.now();
                let record = AuditKeyRecord {
                    public_key: key.public_key().to_vec(),
                    private_key_ciphertext: keyring
                        .seal_system(&private_key_binding(&key_id), &pkcs8)?,
                    key_id: key_id.clone(),
                    created_at: now,
                };
                let event = AuditEvent::new(
                    &Initiator::system(),
                    Action::AuditKeyCreated,
                    Outcome::Success,
                )
                .target(Target::AuditTrail)
                .details(Details::new().with("key_id", Detail::Id(key_id.clone())));
                if store
                    .insert_audit_key(&record, &AuditRecord::new(&event, now))
                    .await?
                {
                    (key, key_id)
                } else {
                    // Another node created one at the same moment: use the stored one.
                    return Box::pin(Self::open(store, keyring, clock, witness, settings)).await;
                }
            }
        };
        let writer = Arc::clone(&store);
        // Standalone entries from concurrent callers share transactions (group commit).
        let appends = Batcher::spawn(
            APPEND_BATCH,
            APPENDS_IN_FLIGHT,
            move |records: Vec<AuditRecord>| {
                let store = Arc::clone(&writer);
                async move {
                    store.append_audit(&records).await.map_err(|e| {
                    tracing::error!(error = %e, entries = records.len(), "cannot write audit entries");
                    e
                })?;
                    Ok(vec![(); records.len()])
                }
            },
        );
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clock,
                witness,
                settings,
                signing,
                key_id,
                appends,
                failures: super::flood::FloodGate::new(FAILURE_WINDOW),
            }),
        })
    }

    /// Records a failure an anonymous caller can repeat at will (a bad credential, a badly
    /// signed callback) — aggregated per source network, action and reason (see
    /// [`super::flood`]): the first of a minute now, with `first` (what that request was); the
    /// rest as one entry with their count once the minute is over ([`Audit::flush_failures`]).
    pub async fn failure(
        &self,
        action: Action,
        source: Option<std::net::IpAddr>,
        reason: &'static str,
        first: Details,
    ) -> Result<(), StoreError> {
        let now = self.inner.clock.now();
        let records = self.inner.failures.failure(action, source, reason, now);
        let mut first = Some(first);
        for record in records {
            let details = if record.count == 1 && record.since == now {
                first.take().unwrap_or_default()
            } else {
                Details::new()
            };
            self.append(&self.failure_event(&record, details)).await?;
        }
        Ok(())
    }

    /// Writes the counts of aggregated failures whose minute is over (`all`: every open one,
    /// at shutdown). Returns how many entries were written.
    pub async fn flush_failures(&self, all: bool) -> Result<usize, StoreError> {
        let records = self.inner.failures.drain(self.inner.clock.now(), all);
        for record in &records {
            self.append(&self.failure_event(record, Details::new()))
                .await?;
        }
        Ok(records.len())
    }

    fn failure_event(&self, record: &super::flood::FailureRecord, details: Details) -> AuditEvent {
        let initiator = Initiator::new(Actor::Anonymous, None);
        let source = match record.key.source.as_str() {
            "unknown" => Detail::Code("unknown"),
            "other" => Detail::Code("other"),
            network => Detail::Network(network.to_owned()),
        };
        AuditEvent::new(&initiator, record.key.action, Outcome::Denied).details(
            details
                .with("reason", record.key.reason)
                .with("source", source)
                .with("count", record.count)
                .with("since", record.since)
                .with("window_seconds", self.inner.failures.window().num_seconds()),
        )
    }

    /// Prepares an entry to be written with the action it records (same transaction).
    pub fn record(&self, event: &AuditEvent) -> AuditRecord {
        AuditRecord::new(event, self.inner.clock.now())
    }

    /// Writes an entry that accompanies no state change; returns once it is durable. Entries
    /// from concurrent callers share one transaction.
    pub async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner
            .appends
            .submit(self.record(event))
            .await
            .map_err(|e| match e {
                StoreError::AuditUnavailable(source) => StoreError::AuditUnavailable(source),
                // Whatever failed, it is the audit entry that could not be written.
                other => StoreError::AuditUnavailable(other.to_string().into()),
            })
    }

    /// Signs a statement other than a checkpoint (an erasure receipt) with the audit key:
    /// Ed25519 over `domain` followed by the statement's canonical form, so that verifiers need
    /// only the public key (`GET /v1/audit/public-key`). Returns
    /// `{statement, key_id, algorithm, signature}`.
    pub fn sign_statement(
        &self,
        domain: &[u8],
        statement: &serde_json::Value,
    ) -> serde_json::Value {
        let mut message = domain.to_vec();
        message.extend_from_slice(super::chain::canonical(statement).as_bytes());
        let signature = self.inner.signing.sign(&message);
        crate::rights::service::signed(statement.clone(), &self.inner.key_id, &signature)
    }

    /// The id of the key signing new checkpoints.
    pub fn key_id(&self) -> &str {
        &self.inner.key_id
    }

    /// Seals the pending entries and signs a checkpoint at every `checkpoint_every`-th entry
    /// since the last one, plus one at the head when `checkpoint_interval` has passed.
    fn plan(&self, input: SealInput, now: Timestamp, final_pass: bool) -> Result<SealPlan, String> {
        let settings = &self.inner.settings;
        // A head behind the last signed checkpoint means entries were cut off the end of the
        // trail. Sealing on would write new entries under the removed sequence numbers and
        // blur the evidence, so sealing stops until someone has looked (verification reports it).
        if let Some((checkpointed, _)) = input.last_checkpoint
            && checkpointed > input.head.seq
        {
            return Err(format!(
                "the chain head (entry {}) is behind the last signed checkpoint (entry {checkpointed}): \
                 entries were removed from the end of the trail",
                input.head.seq
            ));
        }
        let sealed = chain::seal(input.head, &input.pending).map_err(|e| e.to_string())?;
        let sign = |head: ChainHead| {
            Checkpoint::sign(
                &self.inner.signing,
                &self.inner.key_id,
                CheckpointKind::Periodic,
                head,
                now,
            )
        };
        let mut last = input.last_checkpoint.map_or(0, |(seq, _)| seq);
        let mut checkpoints = Vec::new();
        for entry in &sealed {
            if entry.seq.saturating_sub(last) >= settings.checkpoint_every {
                checkpoints.push(sign(ChainHead {
                    seq: entry.seq,
                    hash: entry.hash,
                }));
                last = entry.seq;
            }
        }
        let head = sealed.last().map_or(input.head, |e| ChainHead {
            seq: e.seq,
            hash: e.hash,
        });
        let interval_passed = match (checkpoints.last(), input.last_checkpoint) {
            (Some(_), _) => false,
            (None, None) => true,
            (None, Some((_, at))) => final_pass || now - at >= settings.checkpoint_interval,
        };
        if head.seq > last && interval_passed {
            checkpoints.push(sign(head));
        }
        Ok(SealPlan {
            pending_ids: input.pending.iter().map(|p| p.id).collect(),
            sealed,
            checkpoints,
        })
    }

    fn witness_error(&self, source: std::io::Error) -> AuditError {
        AuditError::Witness {
            witness: self.inner.witness.describe(),
            source,
        }
    }

    /// Seals everything pending, in batches, signing checkpoints as due and copying them to the
    /// witness. Waits for another node's sealing pass to finish first, so that what was pending
    /// when this was called is sealed when it returns (for exports, verification, shutdown).
    pub async fn seal(&self) -> Result<SealReport, AuditError> {
        self.seal_pass(true, false).await
    }

    /// Seals everything pending and signs a checkpoint at the head whatever the interval (a
    /// graceful stop): nothing written before the stop can be cut off the end unnoticed.
    pub async fn seal_final(&self) -> Result<SealReport, AuditError> {
        self.seal_pass(true, true).await
    }

    /// One background pass: returns at once if another node is sealing (it will seal what is
    /// pending; waiting would only queue the nodes' sealers behind each other).
    async fn seal_pass(
        &self,
        wait_for_lock: bool,
        final_pass: bool,
    ) -> Result<SealReport, AuditError> {
        let mut report = SealReport::default();
        let mut batch = SealBatches::new(self.inner.settings.seal_batch);
        loop {
            let now = self.inner.clock.now();
            let plan = |input: SealInput| self.plan(input, now, final_pass);
            let limit = batch.size();
            let Some(done) = self
                .inner
                .store
                .seal_audit(limit, wait_for_lock, &plan)
                .await?
            else {
                return Ok(report);
            };
            let sealed = done.sealed.len() as u64;
            report.sealed += sealed;
            // After the commit: a witness line always names a checkpoint the database has.
            for checkpoint in &done.checkpoints {
                self.inner
                    .witness
                    .append(checkpoint)
                    .map_err(|e| self.witness_error(e))?;
                report.checkpoints += 1;
            }
            if sealed < u64::from(limit) {
                return Ok(report);
            }
            batch.grow();
        }
    }

    /// Seals continuously until `stop` flips to true; `every` is the pause between passes.
    pub async fn run_sealer(
        &self,
        every: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        // The start-up pass is the server's own, before it listens (`Herald::serve`): a
        // first pass here raced the first requests' entries.
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.seal_pass(false, false).await {
                tracing::error!(error = %e, "sealing the audit trail failed; will retry");
            }
        }
    }

    pub async fn public_keys(&self) -> Result<Vec<PublicKey>, AuditError> {
        Ok(self
            .inner
            .store
            .audit_keys()
            .await?
            .into_iter()
            .map(|k| PublicKey {
                key_id: k.key_id,
                public_key: k.public_key,
                created_at: k.created_at,
            })
            .collect())
    }

    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        Ok(self.inner.store.audit_checkpoints().await?)
    }

    /// Sealed entries after `after`, in sequence order.
    pub async fn entries(&self, after: u64, limit: u32) -> Result<Vec<SealedEntry>, AuditError> {
        Ok(self.inner.store.audit_entries(after, limit).await?)
    }

    /// Recomputes the chain from the horizon (or genesis), checks every checkpoint signature and
    /// the witness, without recording anything.
    async fn check(&self) -> Result<Report, AuditError> {
        verify_trail(&self.inner.store, self.inner.witness.as_ref()).await
    }

    /// [`Audit::verify`] reporting progress as it goes.
    pub async fn verify_observed(
        &self,
        initiator: &Initiator,
        observe: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Report, AuditError> {
        let report =
            verify_trail_observed(&self.inner.store, self.inner.witness.as_ref(), observe).await?;
        self.record_verification(initiator, &report).await?;
        Ok(report)
    }

    /// Verifies the trail and records that it did.
    pub async fn verify(&self, initiator: &Initiator) -> Result<Report, AuditError> {
        let report = self.check().await?;
        self.record_verification(initiator, &report).await?;
        Ok(report)
    }

    async fn record_verification(
        &self,
        initiator: &Initiator,
        report: &Report,
    ) -> Result<(), AuditError> {
        let details = Details::new()
            .with("entries", report.entries)
            .with_opt("first_bad", report.first_bad.as_ref().map(|f| f.seq))
            .with_opt(
                "reason",
                report.first_bad.as_ref().map(|f| f.problem.as_str()),
            );
        let outcome = if report.ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let event = AuditEvent::new(initiator, Action::AuditVerified, outcome)
            .target(Target::AuditTrail)
            .details(details);
        self.append(&event).await?;
        if !report.ok {
            tracing::error!(
                first_bad = report.first_bad.as_ref().map(|f| f.seq),
                reason = report.first_bad.as_ref().map(|f| f.problem.as_str()),
                "the audit trail does not verify"
            );
        }
        Ok(())
    }

    /// Removes entries older than the retention period behind a signed horizon checkpoint, after
    /// proving the trail intact. Returns `None` when nothing is old enough.
    pub async fn prune(&self, initiator: &Initiator) -> Result<Option<PruneReport>, AuditError> {
        let now = self.inner.clock.now();
        let cutoff = now - self.inner.settings.retention;
        self.seal().await?;
        let store = &self.inner.store;
        let Some(through) = store.audit_prunable_through(cutoff).await? else {
            return Ok(None);
        };
        let report = self.check().await?;
        if let Some(finding) = &report.first_bad {
            return Err(AuditError::PruneRefused(format!(
                "{} at {}",
                finding.problem.as_str(),
                finding.seq
            )));
        }
        let Some(entry) = store
            .audit_entries(through.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|e| e.seq == through)
        else {
            return Ok(None);
        };
        let horizon = Checkpoint::sign(
            &self.inner.signing,
            &self.inner.key_id,
            CheckpointKind::Horizon,
            ChainHead {
                seq: entry.seq,
                hash: entry.hash,
            },
            now,
        );
        let event = AuditEvent::new(initiator, Action::AuditPruned, Outcome::Success)
            .target(Target::AuditTrail)
            .details(Details::new().with("through_seq", through));
        let removed = store
            .prune_audit(&horizon, &AuditRecord::new(&event, now))
            .await?;
        self.inner
            .witness
            .append(&horizon)
            .map_err(|e| self.witness_error(e))?;
        Ok(Some(PruneReport {
            through_seq: through,
            removed,
        }))
    }

    /// Records an export of the trail (the caller streams the entries).
    pub async fn record_export(
        &self,
        initiator: &Initiator,
        after: u64,
        entries: u64,
    ) -> Result<(), StoreError> {
        let event = AuditEvent::new(initiator, Action::AuditExported, Outcome::Success)
            .target(Target::AuditTrail)
            .details(Details::new().with("after", after).with("entries", entries));
        self.append(&event).await
    }
}

/// What [`verify_trail_observed`] reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Entries to check in all.
    Total(u64),
    /// This many more checked.
    Done(u64),
}

/// Recomputes the chain of the trail in `store` from the horizon (or genesis), checks every
/// checkpoint signature and the witness, recording nothing. Needs only public keys: backups
/// are verified with it in a scratch database, without the root key.
pub async fn verify_trail(
    store: &Arc<dyn Store>,
    witness: &dyn Witness,
) -> Result<Report, AuditError> {
    verify_trail_observed(store, witness, &|_| {}).await
}

/// [`verify_trail`], calling `observe` with the number of entries after each page (progress
/// for a person waiting on a long trail) and the total (`Some`) once, first.
pub async fn verify_trail_observed(
    store: &Arc<dyn Store>,
    witness: &dyn Witness,
    observe: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Report, AuditError> {
    let checkpoints = store.audit_checkpoints().await?;
    let keys: HashMap<String, Vec<u8>> = store
        .audit_keys()
        .await?
        .into_iter()
        .map(|k| (k.key_id, k.public_key))
        .collect();
    let start = checkpoints
        .iter()
        .filter(|c| c.kind == CheckpointKind::Horizon)
        .filter(|c| keys.get(&c.key_id).is_some_and(|k| c.verify(k)))
        .max_by_key(|c| c.seq)
        .map_or(ChainHead::GENESIS, |c| ChainHead {
            seq: c.seq,
            hash: c.head,
        });
    let witness = witness.read_all().map_err(|e| witness_error(witness, e))?;
    let mut verifier = ChainVerifier::new(start, &checkpoints, &witness, &keys);
    // Pages are fetched by sequence range, a few ahead, so reading the database overlaps
    // with hashing (which is sequential by nature).
    let last = store.audit_last_seq().await?.unwrap_or(start.seq);
    observe(Progress::Total(last.saturating_sub(start.seq)));
    let mut ranges = (start.seq..last)
        .step_by(VERIFY_PAGE as usize)
        .map(|from| (from, (from + u64::from(VERIFY_PAGE)).min(last)));
    let mut in_flight = std::collections::VecDeque::new();
    loop {
        while in_flight.len() < VERIFY_PREFETCH {
            let Some((after, through)) = ranges.next() else {
                break;
            };
            let store = Arc::clone(store);
            in_flight.push_back(tokio::spawn(async move {
                store.audit_entries_between(after, through).await
            }));
        }
        let Some(next) = in_flight.pop_front() else {
            break;
        };
        let page = next
            .await
            .map_err(|e| StoreError::Internal(Box::new(e)))??;
        for entry in &page {
            verifier.push(entry.seq, &entry.hash, &entry.body);
        }
        observe(Progress::Done(page.len() as u64));
        if !verifier.wants_more() {
            break;
        }
    }
    for pending in in_flight {
        pending.abort();
    }
    Ok(verifier.finish())
}

fn witness_error(witness: &dyn Witness, source: std::io::Error) -> AuditError {
    AuditError::Witness {
        witness: witness.describe(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::SealBatches;

    fn sizes(max: u32, batches: usize) -> Vec<u32> {
        let mut batch = SealBatches::new(max);
        (0..batches)
            .map(|_| {
                let size = batch.size();
                batch.grow();
                size
            })
            .collect()
    }

    #[test]
    fn a_pass_starts_small_and_doubles_up_to_the_configured_batch() {
        assert_eq!(
            sizes(10_000, 8),
            vec![256, 512, 1024, 2048, 4096, 8192, 10_000, 10_000]
        );
    }

    #[test]
    fn a_configured_batch_below_the_first_size_is_used_as_is() {
        assert_eq!(sizes(8, 3), vec![8, 8, 8]);
        assert_eq!(sizes(0, 2), vec![1, 1]);
    }

    #[test]
    fn a_backlog_reaches_full_batches_after_a_few_thousand_entries() {
        // Entries sealed before the first full-size batch: the latency-friendly ramp costs
        // little on a backlog of hundreds of thousands.
        let ramp: u32 = sizes(10_000, 6).iter().sum();
        assert_eq!(ramp, 256 + 512 + 1024 + 2048 + 4096 + 8192);
        assert!(ramp < 20_000);
    }
}
