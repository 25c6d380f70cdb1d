//! The erasure ledger outside the database: one line per erased subject (its pseudonymous id
//! and when), appended durably after each erasure. A database restored from a backup taken
//! before an erasure would bring the subject's wrapped key back; at start-up Herald re-applies
//! every erasure this file lists before it serves anything, so a restore can never resurrect
//! an erased subject (compliance RESTORE-ERASURE). Kept next to the audit witness, outside
//! the database and its backups.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::clock::Timestamp;
use crate::ids::SubjectId;

/// One erasure as the ledger file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub subject_id: SubjectId,
    pub erased_at: Timestamp,
}

pub trait ErasureLedger: Send + Sync + fmt::Debug {
    /// Appends entries durably (returns after they are on stable storage).
    fn append(&self, entries: &[LedgerEntry]) -> std::io::Result<()>;
    /// Every entry, in order. A line that cannot be read is an error: an erasure that cannot
    /// be re-applied must stop start-up, not be skipped.
    fn read_all(&self) -> std::io::Result<Vec<LedgerEntry>>;
    fn describe(&self) -> String;
}

/// An append-only file of JSON lines `{"subject_id": "sub_…", "erased_at": "…"}`.
#[derive(Debug, Clone)]
pub struct FileErasureLedger {
    path: PathBuf,
}

impl FileErasureLedger {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

fn invalid(line: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("line {line} of the erasure ledger is not an entry"),
    )
}

impl ErasureLedger for FileErasureLedger {
    fn append(&self, entries: &[LedgerEntry]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&self.path)?;
        let mut text = String::new();
        for entry in entries {
            text.push_str(
                &json!({
                    "subject_id": entry.subject_id.as_str(),
                    "erased_at": entry.erased_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                })
                .to_string(),
            );
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }

    fn read_all(&self) -> std::io::Result<Vec<LedgerEntry>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|_| invalid(i + 1))?;
                let subject_id = value["subject_id"]
                    .as_str()
                    .and_then(|s| SubjectId::parse(s).ok())
                    .ok_or_else(|| invalid(i + 1))?;
                let erased_at = value["erased_at"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .ok_or_else(|| invalid(i + 1))?;
                Ok(LedgerEntry {
                    subject_id,
                    erased_at,
                })
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_damaged_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileErasureLedger::new(dir.path().join("erasure-ledger.jsonl"));
        assert!(ledger.read_all().unwrap().is_empty(), "no file: no entries");
        let entry = LedgerEntry {
            subject_id: SubjectId::generate().unwrap(),
            erased_at: DateTime::parse_from_rfc3339("2030-01-31T10:00:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        ledger.append(std::slice::from_ref(&entry)).unwrap();
        ledger.append(&[]).unwrap();
        assert_eq!(ledger.read_all().unwrap(), vec![entry]);
        std::fs::write(
            dir.path().join("erasure-ledger.jsonl"),
            "{\"subject_id\": \"nope\"}\n",
        )
        .unwrap();
        assert!(ledger.read_all().is_err());
    }
}
