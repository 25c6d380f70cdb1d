//! The hash chain, its canonical encoding, signed checkpoints and verification. Pure functions:
//! no storage, no clock, no I/O — the service feeds them.
//!
//! ```text
//! canonical(e) = JSON of the entry with its `seq`: object keys sorted by their bytes, no
//!                insignificant whitespace, integers only, ASCII only (what
//!                json.dumps(e, sort_keys=True, separators=(",", ":")) prints in Python)
//! h(0)         = 32 zero bytes
//! h(n)         = SHA-256(h(n-1) ‖ canonical(entry n))
//! checkpoint   = Ed25519 signature over "herald-audit-checkpoint/v1\n" ‖
//!                canonical({"head": hex h(seq), "key_id", "kind", "seq", "time"})
//! ```
//!
//! docs/audit.md describes the same for auditors; tools/verify_audit.py implements it
//! independently.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::SecondsFormat;
use data_encoding::{BASE64, HEXLOWER};
use herald_crypto::hash::sha256;
use herald_crypto::signing;
use serde_json::{Value, json};

use crate::clock::Timestamp;

pub const GENESIS: [u8; 32] = [0; 32];
const CHECKPOINT_DOMAIN: &[u8] = b"herald-audit-checkpoint/v1\n";

/// Writes `value` canonically (see the module documentation).
pub fn canonical(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// JSON string escaping as Python's `json.dumps` (with its default `ensure_ascii`) does it.
pub(crate) fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// h(n) from h(n-1) and canonical(entry n).
pub fn link(previous: &[u8; 32], canonical_entry: &[u8]) -> [u8; 32] {
    sha256(&[previous, canonical_entry])
}

/// The last sealed entry: where the chain continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainHead {
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: GENESIS,
    };
}

/// An entry written but not yet sealed: no sequence number, no hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// Insertion order (a database id); sequence numbers are assigned in this order.
    pub id: i64,
    pub recorded_at: Timestamp,
    /// `canonical(entry)` without `seq`.
    pub body: String,
}

/// A sealed entry: its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    pub seq: u64,
    pub hash: [u8; 32],
    pub recorded_at: Timestamp,
    /// `canonical(entry)`, `seq` included: exactly the bytes hashed.
    pub body: String,
}

impl SealedEntry {
    /// The entry as an export line object: the canonical fields plus `hash` (hex).
    pub fn export_json(&self) -> Value {
        let mut value: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("hash".into(), json!(HEXLOWER.encode(&self.hash)));
        }
        value
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a pending audit entry is not a JSON object")]
pub struct MalformedPending;

/// `canonical(entry)` with `seq` added, from `canonical(entry)` without it.
///
/// Fast path: keys are sorted and `seq` sorts between `request_id` and `target`, the last two
/// keys of every entry being `target` and `time`; so `"seq":N,` goes right before the last
/// `"target":`. Anything unexpected takes the slow path (parse and re-encode), and the unit
/// tests hold both paths to the same result.
fn with_seq(body: &str, seq: u64) -> Result<String, MalformedPending> {
    if let Some(at) = body.rfind(",\"target\":")
        && body.starts_with("{\"action\":")
        && body.contains(",\"request_id\":")
        && !body.contains("\"seq\":")
    {
        let mut out = String::with_capacity(body.len() + 28);
        out.push_str(&body[..at]);
        out.push_str(",\"seq\":");
        out.push_str(&seq.to_string());
        out.push_str(&body[at..]);
        return Ok(out);
    }
    reencode_with_seq(body, seq)
}

fn reencode_with_seq(body: &str, seq: u64) -> Result<String, MalformedPending> {
    let mut value: Value = serde_json::from_str(body).map_err(|_| MalformedPending)?;
    let Value::Object(map) = &mut value else {
        return Err(MalformedPending);
    };
    map.insert("seq".into(), json!(seq));
    Ok(canonical(&value))
}

/// Gives pending entries the next sequence numbers after `head` and chains them.
pub fn seal(
    head: ChainHead,
    pending: &[PendingEntry],
) -> Result<Vec<SealedEntry>, MalformedPending> {
    let mut previous = head.hash;
    let mut sealed = Vec::with_capacity(pending.len());
    for (offset, entry) in (1u64..).zip(pending) {
        let seq = head.seq + offset;
        let body = with_seq(&entry.body, seq)?;
        let hash = link(&previous, body.as_bytes());
        previous = hash;
        sealed.push(SealedEntry {
            seq,
            hash,
            recorded_at: entry.recorded_at,
            body,
        });
    }
    Ok(sealed)
}

/// The `seq` a canonical body carries, read without parsing the whole entry. Top-level keys are
/// sorted and no string in an entry can contain a quote, so the first `,"seq":` is the one.
pub fn body_seq(body: &str) -> Option<u64> {
    let start = body.find(",\"seq\":")? + 7;
    let digits = body[start..].bytes().take_while(u8::is_ascii_digit).count();
    body[start..start + digits].parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Made every N entries or T seconds.
    Periodic,
    /// Made when older entries were pruned: the chain now starts after it.
    Horizon,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Periodic => "periodic",
            CheckpointKind::Horizon => "horizon",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "periodic" => Some(CheckpointKind::Periodic),
            "horizon" => Some(CheckpointKind::Horizon),
            _ => None,
        }
    }
}

/// A signed statement "the chain's entry `seq` has hash `head`", made at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub head: [u8; 32],
    pub time: Timestamp,
    pub key_id: String,
    pub kind: CheckpointKind,
    pub signature: [u8; signing::SIGNATURE_LEN],
}

impl Checkpoint {
    /// The exact bytes signed.
    pub fn signed_message(
        seq: u64,
        head: &[u8; 32],
        time: Timestamp,
        key_id: &str,
        kind: CheckpointKind,
    ) -> Vec<u8> {
        let statement = canonical(&json!({
            "head": HEXLOWER.encode(head),
            "key_id": key_id,
            "kind": kind.as_str(),
            "seq": seq,
            "time": time.to_rfc3339_opts(SecondsFormat::Millis, true),
        }));
        let mut message = CHECKPOINT_DOMAIN.to_vec();
        message.extend_from_slice(statement.as_bytes());
        message
    }

    pub fn sign(
        key: &signing::SigningKey,
        key_id: &str,
        kind: CheckpointKind,
        head: ChainHead,
        time: Timestamp,
    ) -> Self {
        let message = Self::signed_message(head.seq, &head.hash, time, key_id, kind);
        Self {
            seq: head.seq,
            head: head.hash,
            time,
            key_id: key_id.to_owned(),
            kind,
            signature: key.sign(&message),
        }
    }

    pub fn verify(&self, public_key: &[u8]) -> bool {
        let message =
            Self::signed_message(self.seq, &self.head, self.time, &self.key_id, self.kind);
        signing::verify(public_key, &message, &self.signature)
    }

    /// The witness-file and export form.
    pub fn to_json(&self) -> Value {
        json!({
            "head": HEXLOWER.encode(&self.head),
            "key_id": self.key_id,
            "kind": self.kind.as_str(),
            "seq": self.seq,
            "signature": BASE64.encode(&self.signature),
            "time": self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
    }

    pub fn from_json(value: &Value) -> Option<Self> {
        let head: [u8; 32] = HEXLOWER
            .decode(value["head"].as_str()?.as_bytes())
            .ok()?
            .try_into()
            .ok()?;
        let signature: [u8; signing::SIGNATURE_LEN] = BASE64
            .decode(value["signature"].as_str()?.as_bytes())
            .ok()?
            .try_into()
            .ok()?;
        let time = chrono::DateTime::parse_from_rfc3339(value["time"].as_str()?)
            .ok()?
            .with_timezone(&chrono::Utc);
        Some(Self {
            seq: value["seq"].as_u64()?,
            head,
            time,
            key_id: value["key_id"].as_str()?.to_owned(),
            kind: CheckpointKind::parse(value["kind"].as_str()?)?,
            signature,
        })
    }
}

/// What verification can find wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// An entry's content does not match its hash or a signed checkpoint.
    Modified,
    /// An entry is missing from the middle of the chain.
    Deleted,
    /// An entry sits at another position than the one it was sealed at.
    Reordered,
    /// Entries at the end are missing: a signed checkpoint covers more than is there.
    Truncated,
    /// A checkpoint's signature does not verify (or its key is unknown).
    BadSignature,
    /// The external witness disagrees with the database (or is missing).
    WitnessMismatch,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Modified => "modified",
            Problem::Deleted => "deleted",
            Problem::Reordered => "reordered",
            Problem::Truncated => "truncated",
            Problem::BadSignature => "bad_signature",
            Problem::WitnessMismatch => "witness_mismatch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The first sequence number concerned.
    pub seq: u64,
    pub problem: Problem,
    pub explanation: String,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    /// Entries checked (after the horizon).
    pub entries: u64,
    /// The last entry checked.
    pub head: ChainHead,
    /// The latest checkpoint that matched the chain, if any.
    pub checkpoint: Option<u64>,
    pub first_bad: Option<Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Database,
    Witness,
}

/// Verifies a chain fed entry by entry, in the order of their stored sequence numbers.
pub struct ChainVerifier {
    previous: [u8; 32],
    expected: u64,
    entries: u64,
    /// Signed heads to compare the chain against, by sequence number.
    heads: BTreeMap<u64, Vec<([u8; 32], Source)>>,
    /// Highest sequence a valid signature vouches for.
    vouched_up_to: u64,
    last_matched_checkpoint: Option<u64>,
    findings: Vec<Finding>,
    chain_broken: bool,
}

impl ChainVerifier {
    /// `start`: where the chain begins (genesis, or the latest horizon checkpoint).
    /// `checkpoints`: those in the database; `witness`: those in the external witness (an
    /// unreadable witness line is passed as `Err`); `keys`: public keys by key id.
    pub fn new(
        start: ChainHead,
        checkpoints: &[Checkpoint],
        witness: &[Result<Checkpoint, String>],
        keys: &HashMap<String, Vec<u8>>,
    ) -> Self {
        let mut verifier = Self {
            previous: start.hash,
            expected: start.seq + 1,
            entries: 0,
            heads: BTreeMap::new(),
            vouched_up_to: start.seq,
            last_matched_checkpoint: None,
            findings: Vec::new(),
            chain_broken: false,
        };
        let signed = |c: &Checkpoint| keys.get(&c.key_id).is_some_and(|k| c.verify(k));
        for checkpoint in checkpoints {
            if !signed(checkpoint) {
                verifier.find(
                    checkpoint.seq,
                    Problem::BadSignature,
                    format!(
                        "checkpoint {} does not carry a valid signature",
                        checkpoint.seq
                    ),
                );
                continue;
            }
            verifier.vouched_up_to = verifier.vouched_up_to.max(checkpoint.seq);
            if checkpoint.seq > start.seq {
                verifier
                    .heads
                    .entry(checkpoint.seq)
                    .or_default()
                    .push((checkpoint.head, Source::Database));
            }
        }
        if witness.is_empty() && !checkpoints.is_empty() {
            let first = checkpoints.iter().map(|c| c.seq).min().unwrap_or(0);
            verifier.find(
                first,
                Problem::WitnessMismatch,
                "the witness is missing or empty while the database holds checkpoints".into(),
            );
        }
        for line in witness {
            let checkpoint = match line {
                Ok(checkpoint) => checkpoint,
                Err(reason) => {
                    verifier.find(
                        0,
                        Problem::WitnessMismatch,
                        format!("unreadable witness line: {reason}"),
                    );
                    continue;
                }
            };
            if !signed(checkpoint) {
                verifier.find(
                    checkpoint.seq,
                    Problem::BadSignature,
                    format!(
                        "witness checkpoint {} does not carry a valid signature",
                        checkpoint.seq
                    ),
                );
                continue;
            }
            verifier.vouched_up_to = verifier.vouched_up_to.max(checkpoint.seq);
            if !checkpoints.contains(checkpoint) {
                verifier.find(
                    checkpoint.seq,
                    Problem::WitnessMismatch,
                    format!(
                        "witness checkpoint {} is not in the database",
                        checkpoint.seq
                    ),
                );
            }
            if checkpoint.seq > start.seq {
                verifier
                    .heads
                    .entry(checkpoint.seq)
                    .or_default()
                    .push((checkpoint.head, Source::Witness));
            }
        }
        verifier
    }

    fn find(&mut self, seq: u64, problem: Problem, explanation: String) {
        self.findings.push(Finding {
            seq,
            problem,
            explanation,
        });
    }

    /// Whether more entries are worth feeding (after a break in the chain they are not).
    pub fn wants_more(&self) -> bool {
        !self.chain_broken
    }

    /// Checks the next stored entry: its stored sequence number, hash and canonical body.
    pub fn push(&mut self, seq: u64, stored_hash: &[u8], body: &str) {
        if self.chain_broken {
            return;
        }
        if seq != self.expected {
            let (problem, explanation) = if seq > self.expected {
                (
                    Problem::Deleted,
                    format!("entries {} to {} are missing", self.expected, seq - 1),
                )
            } else {
                (
                    Problem::Reordered,
                    format!("entry {seq} appears again after {}", self.expected - 1),
                )
            };
            self.find(self.expected.min(seq), problem, explanation);
            self.chain_broken = true;
            return;
        }
        if body_seq(body) != Some(seq) {
            self.find(
                seq,
                Problem::Reordered,
                format!("the entry at position {seq} was sealed at another position"),
            );
            self.chain_broken = true;
            return;
        }
        let computed = link(&self.previous, body.as_bytes());
        if computed[..] != stored_hash[..] {
            self.find(
                seq,
                Problem::Modified,
                format!("entry {seq} does not match its hash"),
            );
            self.chain_broken = true;
            return;
        }
        if let Some(heads) = self.heads.remove(&seq) {
            for (head, source) in heads {
                if head != computed {
                    let since = self.last_matched_checkpoint.map_or(1, |c| c + 1);
                    let (problem, explanation) = match source {
                        Source::Database => (
                            Problem::Modified,
                            format!(
                                "the chain between entries {since} and {seq} was rewritten: it no longer matches signed checkpoint {seq}"
                            ),
                        ),
                        Source::Witness => (
                            Problem::WitnessMismatch,
                            format!("the chain does not match the witness checkpoint {seq}"),
                        ),
                    };
                    self.find(since.min(seq), problem, explanation);
                    self.chain_broken = true;
                    return;
                }
            }
            self.last_matched_checkpoint = Some(seq);
        }
        self.previous = computed;
        self.expected += 1;
        self.entries += 1;
    }

    pub fn finish(mut self) -> Report {
        let last = self.expected - 1;
        if !self.chain_broken && self.vouched_up_to > last {
            self.find(
                last + 1,
                Problem::Truncated,
                format!(
                    "a signed checkpoint covers entry {} but the chain ends at {last}",
                    self.vouched_up_to
                ),
            );
        }
        self.findings.sort_by_key(|f| f.seq);
        let first_bad = self.findings.into_iter().next();
        Report {
            ok: first_bad.is_none(),
            entries: self.entries,
            head: ChainHead {
                seq: last,
                hash: self.previous,
            },
            checkpoint: self.last_matched_checkpoint,
            first_bad,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn time(i: i64) -> Timestamp {
        chrono::Utc
            .timestamp_millis_opt(1_900_000_000_000 + i)
            .unwrap()
    }

    fn pending(n: usize) -> Vec<PendingEntry> {
        (0..n)
            .map(|i| PendingEntry {
                id: i as i64 + 1,
                recorded_at: time(i as i64),
                body: canonical(&json!({
                    "action": "api.request",
                    "actor": {"type": "system"},
                    "details": {"status": 200, "route": "/v1/x"},
                    "outcome": "success",
                    "request_id": null,
                    "target": null,
                    "time": time(i as i64).to_rfc3339_opts(SecondsFormat::Millis, true),
                })),
            })
            .collect()
    }

    struct Fixture {
        entries: Vec<SealedEntry>,
        checkpoints: Vec<Checkpoint>,
        keys: HashMap<String, Vec<u8>>,
        key: signing::SigningKey,
    }

    fn fixture(n: usize, checkpoint_every: usize) -> Fixture {
        let entries = seal(ChainHead::GENESIS, &pending(n)).unwrap();
        let (key, _) = signing::SigningKey::generate().unwrap();
        let checkpoints = entries
            .iter()
            .filter(|e| (e.seq as usize).is_multiple_of(checkpoint_every))
            .map(|e| {
                Checkpoint::sign(
                    &key,
                    "k1",
                    CheckpointKind::Periodic,
                    ChainHead {
                        seq: e.seq,
                        hash: e.hash,
                    },
                    time(0),
                )
            })
            .collect();
        let keys = HashMap::from([("k1".to_owned(), key.public_key().to_vec())]);
        Fixture {
            entries,
            checkpoints,
            keys,
            key,
        }
    }

    fn verify(
        f: &Fixture,
        entries: &[SealedEntry],
        db: &[Checkpoint],
        witness: &[Checkpoint],
    ) -> Report {
        let witness: Vec<Result<Checkpoint, String>> = witness.iter().cloned().map(Ok).collect();
        let mut verifier = ChainVerifier::new(ChainHead::GENESIS, db, &witness, &f.keys);
        for e in entries {
            verifier.push(e.seq, &e.hash, &e.body);
        }
        verifier.finish()
    }

    fn finding(report: &Report) -> (u64, Problem) {
        let f = report.first_bad.as_ref().expect("a finding");
        (f.seq, f.problem)
    }

    #[test]
    fn canonical_sorts_keys_and_escapes_like_python() {
        let value = json!({"b": 1, "a": {"d": [true, null], "c": "x\"y\\z\n\u{e9}"}});
        assert_eq!(
            canonical(&value),
            r#"{"a":{"c":"x\"y\\z\n\u00e9","d":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn the_fast_seq_insertion_equals_re_encoding() {
        for entry in pending(3) {
            assert_eq!(
                with_seq(&entry.body, 77).unwrap(),
                reencode_with_seq(&entry.body, 77).unwrap()
            );
        }
        let with_target = canonical(&json!({
            "action": "x.y", "actor": {"type": "integration", "integration_id": "int_a", "key_id": "key_b"},
            "details": {"scopes": ["a", "b"], "target": "not the top-level one"},
            "outcome": "success", "request_id": "req_0123456789abcdef",
            "target": {"type": "subject", "id": "sub_c"}, "time": "2030-01-01T00:00:00.000Z",
        }));
        assert_eq!(
            with_seq(&with_target, 5).unwrap(),
            reencode_with_seq(&with_target, 5).unwrap()
        );
        // Odd input takes the slow path and still comes out canonical.
        let odd = r#"{"b":1,"a":2}"#;
        assert_eq!(with_seq(odd, 1).unwrap(), r#"{"a":2,"b":1,"seq":1}"#);
        assert!(with_seq("[1]", 1).is_err());
    }

    #[test]
    fn sealing_numbers_and_chains() {
        let entries = seal(ChainHead::GENESIS, &pending(3)).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(entries[0].hash, link(&GENESIS, entries[0].body.as_bytes()));
        assert_eq!(
            entries[2].hash,
            link(&entries[1].hash, entries[2].body.as_bytes())
        );
        assert_eq!(body_seq(&entries[1].body), Some(2));
        // Continuing from a head.
        let more = seal(
            ChainHead {
                seq: 3,
                hash: entries[2].hash,
            },
            &pending(1),
        )
        .unwrap();
        assert_eq!(more[0].seq, 4);
        assert_eq!(
            more[0].hash,
            link(&entries[2].hash, more[0].body.as_bytes())
        );
    }

    #[test]
    fn an_intact_chain_verifies() {
        let f = fixture(20, 5);
        let report = verify(&f, &f.entries, &f.checkpoints, &f.checkpoints);
        assert!(report.ok, "{report:?}");
        assert_eq!(report.entries, 20);
        assert_eq!(report.head.seq, 20);
        assert_eq!(report.checkpoint, Some(20));
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let f = fixture(20, 5);
        // Modified content.
        let mut modified = f.entries.clone();
        modified[6].body = modified[6].body.replace("200", "201");
        assert_eq!(
            finding(&verify(&f, &modified, &f.checkpoints, &f.checkpoints)),
            (7, Problem::Modified)
        );
        // Deleted from the middle.
        let mut deleted = f.entries.clone();
        deleted.remove(8);
        assert_eq!(
            finding(&verify(&f, &deleted, &f.checkpoints, &f.checkpoints)),
            (9, Problem::Deleted)
        );
        // Reordered: two entries swap their stored positions.
        let mut reordered = f.entries.clone();
        let (a, b) = (reordered[10].clone(), reordered[11].clone());
        reordered[10] = SealedEntry { seq: 11, ..b };
        reordered[11] = SealedEntry { seq: 12, ..a };
        assert_eq!(
            finding(&verify(&f, &reordered, &f.checkpoints, &f.checkpoints)),
            (11, Problem::Reordered)
        );
        // Truncated: the last entries and their checkpoint are gone from the database, but the
        // witness remembers.
        let truncated = &f.entries[..17];
        let db: Vec<_> = f
            .checkpoints
            .iter()
            .filter(|c| c.seq <= 17)
            .cloned()
            .collect();
        assert_eq!(
            finding(&verify(&f, truncated, &db, &f.checkpoints)),
            (18, Problem::Truncated)
        );
        assert_eq!(
            finding(&verify(&f, truncated, &f.checkpoints, &f.checkpoints)),
            (18, Problem::Truncated)
        );
        // A checkpoint with a forged signature.
        let mut forged = f.checkpoints.clone();
        forged[1].signature[0] ^= 1;
        assert_eq!(
            finding(&verify(&f, &f.entries, &forged, &f.checkpoints)),
            (10, Problem::BadSignature)
        );
        // The chain rewritten consistently (every hash recomputed): signed heads catch it.
        let mut rewritten_pending = pending(20);
        rewritten_pending[12].body = rewritten_pending[12].body.replace("200", "500");
        let rewritten = seal(ChainHead::GENESIS, &rewritten_pending).unwrap();
        let report = verify(&f, &rewritten, &f.checkpoints, &f.checkpoints);
        assert_eq!(finding(&report), (11, Problem::Modified));
        // Rewritten and the database checkpoints replaced: the witness catches it.
        let report = verify(&f, &rewritten, &[], &f.checkpoints);
        assert_eq!(report.first_bad.unwrap().problem, Problem::WitnessMismatch);
        // A missing witness is itself a finding.
        let report = verify(&f, &f.entries, &f.checkpoints, &[]);
        assert_eq!(finding(&report), (5, Problem::WitnessMismatch));
    }

    #[test]
    fn checkpoints_round_trip_through_json() {
        let f = fixture(5, 5);
        let json = f.checkpoints[0].to_json();
        let back = Checkpoint::from_json(&json).unwrap();
        assert_eq!(back, f.checkpoints[0]);
        assert!(back.verify(f.key.public_key()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any single-byte change to any sealed entry — its body, its stored hash, or its
        /// stored sequence number — is detected.
        #[test]
        fn any_single_byte_change_is_detected(entry in 0usize..12, position in any::<proptest::sample::Index>(),
                                               delta in 1u8..=255, part in 0u8..3) {
            let f = fixture(12, 4);
            let mut tampered = f.entries.clone();
            let target = &mut tampered[entry];
            match part {
                0 => {
                    let mut bytes = target.body.clone().into_bytes();
                    let i = position.index(bytes.len());
                    bytes[i] = bytes[i].wrapping_add(delta);
                    target.body = String::from_utf8_lossy(&bytes).into_owned();
                }
                1 => {
                    let i = position.index(32);
                    target.hash[i] = target.hash[i].wrapping_add(delta);
                }
                _ => {
                    let i = position.index(8);
                    let mut seq = target.seq.to_be_bytes();
                    seq[i] = seq[i].wrapping_add(delta);
                    target.seq = u64::from_be_bytes(seq);
                }
            }
            let report = verify(&f, &tampered, &f.checkpoints, &f.checkpoints);
            prop_assert!(!report.ok);
        }
    }
}
