//! The audit port: an append-only, tamper-evident log of everything Rotor does to an identity.
//! Each record carries the hash of the previous one; the head (last seq and hash) is MAC'd with
//! a key held by the custody port, so write access to the table alone cannot rewrite history.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What happened, as the caller reports it. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditEntry {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// `createSecret`, `setSecret`, `testSecret`, `finishSecret`, `rollback`, `register`,
    /// `update`, `lease`, `status`, …
    pub action: String,
    /// The step's outcome (`created`, `finished`, `failed`, `rolledBack`, `changed`, …).
    pub outcome: String,
    /// Who acted: the invoking principal, the state machine execution, or `cli:<user>`.
    pub actor: String,
    /// The rotation token, when the action belongs to a rotation.
    pub token: Option<String>,
    /// Secret version ids involved.
    pub versions: Vec<String>,
    /// The error's `errorType`, when the action failed.
    pub error_type: Option<String>,
    /// Short free text (e.g. which registration fields changed). Never a value.
    pub detail: Option<String>,
}

/// A stored audit record: the entry, its place in the chain and the chain hashes (hex SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub identity_id: String,
    pub seq: u64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// Where verification found the chain broken: the first bad record (by seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "camelCase")]
pub enum Tamper {
    /// The record's content no longer matches its hash.
    Edited { seq: u64 },
    /// A sequence number is missing (a record was deleted).
    Deleted { seq: u64 },
    /// The record is intact but does not follow the previous one (records were swapped).
    Reordered { seq: u64 },
    /// The newest records are gone, or the head was edited: the head names `head_seq`, the
    /// chain ends at `last_seq`.
    HeadMismatch { head_seq: u64, last_seq: u64 },
    /// The head's MAC does not verify under the audit key: the head was forged.
    BadMac,
    /// Records exist but there is no head.
    MissingHead,
    /// The inventory saw the log reach `anchored_seq`, but the log now ends at `head_seq`: its
    /// newest records were removed and an older head (with its own valid MAC) put back.
    Truncated { anchored_seq: u64, head_seq: u64 },
}

/// The result of verifying one identity's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub identity_id: String,
    pub records: u64,
    /// `None` when the chain, the head and its MAC all verify.
    pub tamper: Option<Tamper>,
}

/// The audit log.
///
/// Contract: `append` adds exactly one record with the next sequence number, atomically with
/// the head (a conditional write: concurrent appends retry, never overwrite); `records` returns
/// an identity's records in sequence order; `verify` recomputes every hash and the head's MAC
/// and names the first record that was edited, deleted or reordered.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn append(&self, identity_id: &str, entry: AuditEntry) -> Result<AuditRecord>;
    async fn records(&self, identity_id: &str) -> Result<Vec<AuditRecord>>;
    async fn verify(&self, identity_id: &str) -> Result<Verification>;
    /// Every identity that has an audit head.
    async fn identities(&self) -> Result<Vec<String>>;
}
