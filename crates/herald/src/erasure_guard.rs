//! The start-up guard that keeps erasures erased across restores (compliance
//! RESTORE-ERASURE): before anything is served, the erasure ledger file must be there and
//! be this database's. A database restored from a backup, or one whose ledger went missing,
//! does not start — a ledger rebuilt from such a database would silently forget every
//! erasure made after the copy — until the operator puts the newest ledger back, imports a
//! copy, or explicitly accepts the loss (audited).

use std::path::PathBuf;

use herald_domain::audit::{Action, Audit, AuditEvent, Details, Initiator, Outcome, Target};
use herald_domain::rights::{ErasureLedger, FileErasureLedger, LedgerEntry, LedgerFile};
use herald_domain::store::Store;
use herald_store::Database;

use crate::startup::StartupError;

/// What start-up does about the erasure ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LedgerPolicy {
    /// Refuse to start when the ledger is missing or not this database's.
    #[default]
    Enforce,
    /// Start anyway (`herald serve --accept-missing-ledger`), audited: a new ledger is begun
    /// from the database's own record of erasures.
    AcceptMissing,
    /// Merge this ledger copy into the ledger first (`herald erasures import FILE`), then
    /// check as `Enforce` does.
    Import(PathBuf),
}

/// What the guard found, for the rest of start-up.
#[derive(Debug, Clone, Default)]
pub struct LedgerReady {
    /// The backup this database was restored from, if this is its first start.
    pub restored_from: Option<String>,
}

fn refuse(reason: String) -> StartupError {
    StartupError::ErasureLedger(reason)
}

const HOW_TO_FIX: &str = "Put the newest copy of the erasure ledger at that path (from shared storage, \
another node or the lost machine), or merge one in with `herald erasures import FILE`. Only if \
you are sure no subject was erased after this database's copy was taken, start once with \
`herald serve --accept-missing-ledger` (audited).";

fn new_ledger_id() -> Result<String, StartupError> {
    let bytes = herald_crypto::random::bytes::<12>()?;
    Ok(format!("led_{}", data_encoding::HEXLOWER.encode(&bytes)))
}

/// Merges `copy` into the ledger: entries it lacks are appended (the copy's id is taken when
/// the ledger does not exist yet). Returns (entries in the copy, entries added).
fn import(ledger: &FileErasureLedger, copy: &PathBuf) -> Result<(usize, usize), StartupError> {
    let text = std::fs::read_to_string(copy).map_err(|e| {
        refuse(format!(
            "cannot read the ledger copy {}: {e}",
            copy.display()
        ))
    })?;
    let incoming = LedgerFile::parse(&text)
        .map_err(|e| refuse(format!("{} is not an erasure ledger: {e}", copy.display())))?;
    let current = ledger
        .read_file()
        .map_err(|e| refuse(format!("the erasure ledger cannot be read: {e}")))?;
    let mut merged = current.unwrap_or_else(|| LedgerFile {
        ledger_id: incoming.ledger_id.clone(),
        entries: Vec::new(),
    });
    if let (Some(ours), Some(theirs)) = (&merged.ledger_id, &incoming.ledger_id)
        && ours != theirs
    {
        return Err(refuse(format!(
            "{} belongs to another ledger ({theirs}, this one is {ours})",
            copy.display()
        )));
    }
    let known: std::collections::HashSet<_> = merged
        .entries
        .iter()
        .map(|e| e.subject_id.clone())
        .collect();
    let added: Vec<LedgerEntry> = incoming
        .entries
        .iter()
        .filter(|e| !known.contains(&e.subject_id))
        .cloned()
        .collect();
    let count = added.len();
    merged.entries.extend(added);
    if merged.ledger_id.is_none() {
        merged.ledger_id = incoming.ledger_id.clone();
    }
    ledger
        .replace(&merged)
        .map_err(|e| refuse(format!("the erasure ledger cannot be written: {e}")))?;
    Ok((incoming.entries.len(), count))
}

/// Checks (and on a first start creates) the ledger file; see the module documentation.
pub async fn prepare(
    database: &Database,
    store: &dyn Store,
    ledger: &FileErasureLedger,
    policy: &LedgerPolicy,
    audit: &Audit,
) -> Result<LedgerReady, StartupError> {
    let mut ready = LedgerReady::default();
    if let LedgerPolicy::Import(copy) = policy {
        let (entries, added) = import(ledger, copy)?;
        let event = AuditEvent::new(
            &Initiator::system(),
            Action::ErasureLedgerImported,
            Outcome::Success,
        )
        .target(Target::ErasureLedger)
        .details(
            Details::new()
                .with("entries", entries as u64)
                .with("added", added as u64),
        );
        audit.append(&event).await?;
    }
    let state = database.recovery_state().await?;
    let file = ledger.read_file().map_err(|e| {
        refuse(format!(
            "the erasure ledger ({}) cannot be read: {e}",
            ledger.describe()
        ))
    })?;
    let where_ = ledger.describe();
    let problem = match &file {
        None => {
            if let Some(backup) = &state.restored_from {
                Some(format!(
                    "this database was restored from backup {backup} and the erasure ledger ({where_}) is missing: subjects erased after that backup would come back."
                ))
            } else if let Some(id) = &state.ledger_id {
                Some(format!(
                    "the erasure ledger ({where_}) is missing; this database was paired with ledger {id}."
                ))
            } else {
                let erased = store.erased_subjects().await?.len();
                (erased > 0).then(|| {
                    format!("the erasure ledger ({where_}) is missing while the database records {erased} erasures.")
                })
            }
        }
        Some(found) => match (&state.ledger_id, &found.ledger_id) {
            (Some(ours), Some(theirs)) if ours != theirs => Some(format!(
                "the erasure ledger ({where_}) is ledger {theirs}, but this database is paired with {ours}: it belongs to another installation."
            )),
            _ => match state.restored_ledger_entries {
                Some(at_backup) if (found.entries.len() as u64) < at_backup => Some(format!(
                    "the erasure ledger ({where_}) lists {} erasures, fewer than the {at_backup} the restored backup already knew: it is an older copy.",
                    found.entries.len()
                )),
                _ => None,
            },
        },
    };
    if let Some(problem) = &problem {
        if *policy != LedgerPolicy::AcceptMissing {
            return Err(refuse(format!("{problem} {HOW_TO_FIX}")));
        }
        tracing::warn!(reason = %problem, "starting with --accept-missing-ledger");
        let event = AuditEvent::new(
            &Initiator::system(),
            Action::ErasureLedgerMissingAccepted,
            Outcome::Success,
        )
        .target(Target::ErasureLedger)
        .details(
            Details::new()
                .with(
                    "reason",
                    match &file {
                        None => "missing",
                        Some(_) => "mismatch",
                    },
                )
                .with_opt(
                    "restored_from",
                    state
                        .restored_from
                        .as_ref()
                        .map(|b| herald_domain::audit::Detail::Id(b.clone())),
                ),
        );
        audit.append(&event).await?;
    }
    // Name the ledger on a first start, or a legacy file without a header; an existing
    // named file is kept as it is (after an accepted mismatch the database follows it). The
    // reconciliation that follows copies the database's own erasures into it.
    let accepted = problem.is_some();
    let write = |id: &str, entries: Vec<LedgerEntry>| {
        ledger
            .replace(&LedgerFile {
                ledger_id: Some(id.to_owned()),
                entries,
            })
            .map_err(|e| refuse(format!("the erasure ledger cannot be written: {e}")))
    };
    let ledger_id = match file {
        Some(LedgerFile {
            ledger_id: Some(id),
            ..
        }) => id,
        Some(LedgerFile {
            ledger_id: None,
            entries,
        }) => {
            let id = state.ledger_id.clone().map_or_else(new_ledger_id, Ok)?;
            write(&id, entries)?;
            id
        }
        None => {
            let id = state.ledger_id.clone().map_or_else(new_ledger_id, Ok)?;
            write(&id, Vec::new())?;
            id
        }
    };
    database.pair_ledger(&ledger_id, accepted).await?;
    ready.restored_from = state.restored_from;
    Ok(ready)
}
