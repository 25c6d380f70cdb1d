//! The manifest: what a backup holds, stated without personal data and signed with the audit
//! key, kept beside the encrypted payload (`<id>.manifest.json`) so that listings and checks
//! need no identity. The payload's SHA-256 binds the two.

use std::collections::BTreeMap;

use data_encoding::BASE64;
use herald_domain::audit::chain::canonical;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Prefixed to the canonical statement before signing: a manifest signature can never be
/// replayed as a checkpoint's or an erasure receipt's.
pub const SIGNATURE_DOMAIN: &[u8] = b"herald-backup-manifest-v1\0";
pub const MANIFEST_TYPE: &str = "herald.backup_manifest";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "type")]
    pub kind: String,
    pub format_version: u64,
    pub backup_id: String,
    pub created_at: String,
    pub herald_version: String,
    pub backend: String,
    pub schema_version: i64,
    pub payload: PayloadFacts,
    pub audit: AuditFacts,
    pub erasure_ledger: LedgerFacts,
    /// The root-key versions the snapshot's wrapped keys need: restore needs these keys.
    pub root_key_versions: Vec<u32>,
    pub encryption: EncryptionFacts,
    /// Rows per table.
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadFacts {
    pub file: String,
    pub bytes: u64,
    /// SHA-256 of the encrypted file, hex.
    pub sha256: String,
    /// SHA-256 of the decrypted JSON Lines, hex.
    pub plaintext_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFacts {
    /// The last sealed entry in the snapshot, and its chain hash (hex).
    pub head_seq: u64,
    pub head_hash: Option<String>,
    /// Entries written but not yet sealed when the snapshot was read (sealed after restore).
    pub pending: u64,
    pub first_recorded_at: Option<String>,
    pub last_recorded_at: Option<String>,
    pub last_checkpoint: Option<CheckpointFacts>,
    pub witness_checkpoints: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointFacts {
    pub seq: u64,
    pub kind: String,
    pub head: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerFacts {
    pub ledger_id: Option<String>,
    pub entries: u64,
    pub last_erased_at: Option<String>,
    /// SHA-256 of the ledger file as copied, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionFacts {
    /// `age` (the format), with these X25519 recipients, or a passphrase.
    pub format: String,
    pub recipients: Vec<String>,
    pub passphrase: bool,
}

/// The manifest file: the statement, and the audit key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    pub statement: Manifest,
    pub key_id: String,
    pub algorithm: String,
    pub signature: String,
}

impl SignedManifest {
    /// Whether `public_key` (Ed25519) signed this statement.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        let Ok(statement) = serde_json::to_value(&self.statement) else {
            return false;
        };
        let Ok(signature) = BASE64.decode(self.signature.as_bytes()) else {
            return false;
        };
        if self.algorithm != "Ed25519" {
            return false;
        }
        let mut message = SIGNATURE_DOMAIN.to_vec();
        message.extend_from_slice(canonical(&statement).as_bytes());
        herald_crypto::signing::verify(public_key, &message, &signature)
    }

    /// Parses the manifest file; unknown fields are refused (a manifest is never guessed at).
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: SignedManifest =
            serde_json::from_str(text).map_err(|e| format!("the manifest cannot be read: {e}"))?;
        if manifest.statement.kind != MANIFEST_TYPE {
            return Err("the file is not a Herald backup manifest".into());
        }
        Ok(manifest)
    }

    pub fn from_signed(value: Json) -> Result<Self, String> {
        serde_json::from_value(value).map_err(|e| format!("the manifest is malformed: {e}"))
    }
}
