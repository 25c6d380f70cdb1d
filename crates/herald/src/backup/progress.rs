//! Progress of long work, for a person at a terminal (a bar), a log (plain lines) or nobody.

/// Reported by backup, verify, restore and drill as they go.
pub trait Progress: Send + Sync {
    /// A new phase ("snapshot", "decrypt and load", "verify audit chain"), with the number of
    /// rows it will go through when known.
    fn phase(&self, name: &str, total: Option<u64>);
    /// `n` more rows done.
    fn advance(&self, n: u64);
    fn finish(&self);
}

/// Reports nothing (scheduled work, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
