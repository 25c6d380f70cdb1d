//! The witness: checkpoints copied outside the database, so that an attacker who controls the
//! database can still not rewrite or truncate the trail unnoticed.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use super::chain::Checkpoint;

pub trait Witness: Send + Sync + fmt::Debug {
    /// Appends a checkpoint durably (returns after it is on stable storage).
    fn append(&self, checkpoint: &Checkpoint) -> std::io::Result<()>;
    /// Every checkpoint witnessed, in order; a line that cannot be read is an `Err`.
    fn read_all(&self) -> std::io::Result<Vec<Result<Checkpoint, String>>>;
    fn describe(&self) -> String;
}

/// An append-only file of JSON lines, one signed checkpoint each, readable by anyone with the
/// public key (tools/verify_audit.py reads it too).
#[derive(Debug, Clone)]
pub struct FileWitness {
    path: PathBuf,
}

impl FileWitness {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl Witness for FileWitness {
    fn append(&self, checkpoint: &Checkpoint) -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&self.path)?;
        let mut line = checkpoint.to_json().to_string();
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_data()
    }

    fn read_all(&self) -> std::io::Result<Vec<Result<Checkpoint, String>>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .ok()
                    .and_then(|value| Checkpoint::from_json(&value))
                    .ok_or_else(|| format!("line {} is not a checkpoint", i + 1))
            })
            .collect())
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}
