//! The erasure ledger outside the database: one line per erased subject (its pseudonymous id
//! and when), appended durably after each erasure. A database restored from a backup taken
//! before an erasure would bring the subject's wrapped key back; at start-up Herald re-applies
//! every erasure this file lists before it serves anything, so a restore can never resurrect
//! an erased subject (compliance RESTORE-ERASURE). Kept next to the audit witness (or on
//! shared storage), outside the database; each backup carries a copy.
//!
//! The first line names the ledger (`{"herald_erasure_ledger": 1, "ledger_id": "…"}`) and the
//! database records that id: a ledger file that has gone missing, or one that belongs to
//! another installation, is then noticed at start-up instead of silently rebuilt from a
//! database that may be older than the newest erasure.

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

/// A ledger file as read: its id (absent in files written before ids existed) and entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerFile {
    pub ledger_id: Option<String>,
    pub entries: Vec<LedgerEntry>,
}

impl LedgerFile {
    /// The file's text: the header line (when there is an id), then one line per entry.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        if let Some(id) = &self.ledger_id {
            text.push_str(&json!({"herald_erasure_ledger": 1, "ledger_id": id}).to_string());
            text.push('\n');
        }
        for entry in &self.entries {
            text.push_str(&entry_line(entry));
        }
        text
    }

    /// Parses a ledger file's text. A line that cannot be read is an error: an erasure that
    /// cannot be re-applied must stop start-up, not be skipped.
    pub fn parse(text: &str) -> std::io::Result<Self> {
        let mut file = LedgerFile::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|_| invalid(i + 1))?;
            if i == 0 && value.get("herald_erasure_ledger").is_some() {
                let id = value["ledger_id"]
                    .as_str()
                    .filter(|id| !id.is_empty() && id.len() <= 64)
                    .ok_or_else(|| invalid(1))?;
                file.ledger_id = Some(id.to_owned());
                continue;
            }
            let subject_id = value["subject_id"]
                .as_str()
                .and_then(|s| SubjectId::parse(s).ok())
                .ok_or_else(|| invalid(i + 1))?;
            let erased_at = value["erased_at"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| invalid(i + 1))?;
            file.entries.push(LedgerEntry {
                subject_id,
                erased_at,
            });
        }
        Ok(file)
    }
}

fn entry_line(entry: &LedgerEntry) -> String {
    let mut line = json!({
        "subject_id": entry.subject_id.as_str(),
        "erased_at": entry.erased_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    })
    .to_string();
    line.push('\n');
    line
}

pub trait ErasureLedger: Send + Sync + fmt::Debug {
    /// Appends entries durably (returns after they are on stable storage).
    fn append(&self, entries: &[LedgerEntry]) -> std::io::Result<()>;
    /// Every entry, in order. A line that cannot be read is an error: an erasure that cannot
    /// be re-applied must stop start-up, not be skipped.
    fn read_all(&self) -> std::io::Result<Vec<LedgerEntry>> {
        Ok(self.read_file()?.unwrap_or_default().entries)
    }
    /// The whole file, or `None` when it does not exist.
    fn read_file(&self) -> std::io::Result<Option<LedgerFile>>;
    /// Replaces the file's contents atomically (a crash leaves the old or the new file).
    fn replace(&self, file: &LedgerFile) -> std::io::Result<()>;
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
        let text: String = entries.iter().map(entry_line).collect();
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }

    fn read_file(&self) -> std::io::Result<Option<LedgerFile>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => LedgerFile::parse(&text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn replace(&self, file: &LedgerFile) -> std::io::Result<()> {
        write_atomically(&self.path, file.to_text().as_bytes())
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// Writes `bytes` to a temporary file beside `path` (0600), syncs it, renames it over `path`
/// and syncs the directory: readers see the old file or the new one, never a half.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
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

    #[test]
    fn the_header_names_the_ledger_and_replace_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileErasureLedger::new(dir.path().join("erasure-ledger.jsonl"));
        assert_eq!(ledger.read_file().unwrap(), None);
        let entry = LedgerEntry {
            subject_id: SubjectId::generate().unwrap(),
            erased_at: DateTime::parse_from_rfc3339("2030-01-31T10:00:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        ledger
            .replace(&LedgerFile {
                ledger_id: Some("led_test".into()),
                entries: vec![],
            })
            .unwrap();
        ledger.append(std::slice::from_ref(&entry)).unwrap();
        let file = ledger.read_file().unwrap().unwrap();
        assert_eq!(file.ledger_id.as_deref(), Some("led_test"));
        assert_eq!(file.entries, vec![entry.clone()]);
        assert_eq!(ledger.read_all().unwrap(), vec![entry]);
        // A header anywhere but the first line is not an entry.
        let text = format!("{}{}", "{\"subject_id\": \"x\"}\n", file.to_text());
        assert!(LedgerFile::parse(&text).is_err());
        // A legacy file (no header) reads with no id.
        let legacy = LedgerFile::parse(
            &file
                .to_text()
                .lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .unwrap();
        assert_eq!(legacy.ledger_id, None);
        assert_eq!(legacy.entries.len(), 1);
    }
}
