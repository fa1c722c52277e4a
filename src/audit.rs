//! The audit chain's pure logic, shared by every `AuditLog` implementation: the canonical
//! serialization and hash of a record, the head message that the custody key MACs, and
//! [`verify_chain`], which names the first place a stored chain was edited, deleted, reordered,
//! truncated or forged. No I/O here: adapters read records and the head, ask custody whether the
//! head's MAC verifies, and hand the three to [`verify_chain`].
//!
//! Record hash: hex SHA-256 over a domain tag followed by identity id, seq, previous hash and
//! every [`AuditEntry`] field in a fixed order, each string and list length-prefixed (u64
//! big-endian) and each `Option` marked present or absent, so no two different records share
//! a serialization. The first record's previous hash is [`GENESIS_HASH`] (64 zeros).
//!
//! Head message: a different domain tag, the identity id, the head's seq and its hash. Binding
//! the seq and the identity means a head MAC cannot be re-pointed to an older seq or copied to
//! another identity.
//!
//! What this cannot detect on its own: a rollback of the whole table to an earlier state
//! *including that state's head item and MAC* (a restored backup, or a head item saved before
//! the last append and written back after deleting the records since) is a valid history and
//! verifies. Catching it needs the latest head (or its seq) anchored outside the table, e.g. in
//! the inventory, a metric or an append-only store the table's writers cannot rewrite.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::ports::audit::{AuditEntry, AuditRecord, Tamper, Verification};

/// The previous hash of an identity's first record (seq 1): 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain tag of a record's canonical serialization (changing the format changes the tag).
const RECORD_DOMAIN: &[u8] = b"rotor/audit/record/v1";
/// Domain tag of the head message, distinct from the record tag.
const HEAD_DOMAIN: &[u8] = b"rotor/audit/head/v1";

/// An identity's audit head: the seq and hash of its last record, and the custody key's MAC
/// over [`head_message`] of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The last record's seq.
    pub seq: u64,
    /// The last record's hash (hex SHA-256).
    pub hash: String,
    /// HMAC-SHA-256 of [`head_message`]`(identity_id, seq, hash)` under the audit MAC key.
    pub mac: Vec<u8>,
}

impl Head {
    /// The bytes this head's MAC covers, for `identity_id`.
    pub fn message(&self, identity_id: &str) -> Vec<u8> {
        head_message(identity_id, self.seq, &self.hash)
    }
}

/// A length-prefixed, order-fixed byte encoding (unambiguous by construction).
struct Canon(Vec<u8>);

impl Canon {
    fn new(domain: &[u8]) -> Self {
        let mut c = Canon(Vec::with_capacity(256));
        c.bytes(domain);
        c
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u64).to_be_bytes());
        self.0.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn i64(&mut self, n: i64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn opt(&mut self, o: Option<&str>) {
        match o {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
        }
    }

    fn list(&mut self, items: &[String]) {
        self.u64(items.len() as u64);
        for s in items {
            self.str(s);
        }
    }
}

/// The canonical serialization a record's hash covers: identity id, seq, previous hash and
/// every entry field (at_ms, action, outcome, actor, token, versions, error_type, detail).
pub fn canonical_record(
    identity_id: &str,
    seq: u64,
    prev_hash: &str,
    entry: &AuditEntry,
) -> Vec<u8> {
    let mut c = Canon::new(RECORD_DOMAIN);
    c.str(identity_id);
    c.u64(seq);
    c.str(prev_hash);
    c.i64(entry.at_ms);
    c.str(&entry.action);
    c.str(&entry.outcome);
    c.str(&entry.actor);
    c.opt(entry.token.as_deref());
    c.list(&entry.versions);
    c.opt(entry.error_type.as_deref());
    c.opt(entry.detail.as_deref());
    c.0
}

/// Hex SHA-256 of [`canonical_record`].
pub fn record_hash(identity_id: &str, seq: u64, prev_hash: &str, entry: &AuditEntry) -> String {
    hex::encode(Sha256::digest(canonical_record(
        identity_id,
        seq,
        prev_hash,
        entry,
    )))
}

/// A new record at `seq` after a record whose hash is `prev_hash`, with its hash computed.
pub fn seal(identity_id: &str, seq: u64, prev_hash: &str, entry: AuditEntry) -> AuditRecord {
    let hash = record_hash(identity_id, seq, prev_hash, &entry);
    AuditRecord {
        identity_id: identity_id.to_string(),
        seq,
        entry,
        prev_hash: prev_hash.to_string(),
        hash,
    }
}

/// The bytes the head MAC covers: identity id, head seq and head hash, under their own domain
/// tag (a record serialization can never be mistaken for a head message).
pub fn head_message(identity_id: &str, seq: u64, hash: &str) -> Vec<u8> {
    let mut c = Canon::new(HEAD_DOMAIN);
    c.str(identity_id);
    c.u64(seq);
    c.str(hash);
    c.0
}

/// Verifies one identity's chain and names the first problem.
///
/// `records` are the identity's stored records (any order; they are checked in seq order),
/// `head` its stored head, and `mac_ok` whether custody verified the head's MAC over
/// [`Head::message`] (ignored when there is no head). Records are checked first, in seq order,
/// then the head:
///
/// - a seq missing from 1, 2, … → [`Tamper::Deleted`] naming it;
/// - a record whose content no longer hashes to its stored hash → [`Tamper::Edited`], unless the
///   content is intact under another seq (a record moved or swapped into this slot) →
///   [`Tamper::Reordered`];
/// - an intact record whose previous hash is not its predecessor's hash →
///   [`Tamper::Reordered`];
/// - records but no head → [`Tamper::MissingHead`];
/// - a head whose seq or hash is not the last record's → [`Tamper::HeadMismatch`];
/// - a head whose MAC does not verify → [`Tamper::BadMac`].
pub fn verify_chain(
    identity_id: &str,
    records: &[AuditRecord],
    head: Option<&Head>,
    mac_ok: bool,
) -> Verification {
    Verification {
        identity_id: identity_id.to_string(),
        records: records.len() as u64,
        tamper: first_problem(identity_id, records, head, mac_ok),
    }
}

fn first_problem(
    identity_id: &str,
    records: &[AuditRecord],
    head: Option<&Head>,
    mac_ok: bool,
) -> Option<Tamper> {
    let mut sorted: Vec<&AuditRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.seq);

    let mut expected: u64 = 1;
    let mut prev_hash = GENESIS_HASH;
    for r in &sorted {
        if r.seq > expected {
            return Some(Tamper::Deleted { seq: expected });
        }
        if r.seq < expected {
            // A duplicate seq (only possible in a hand-made list): not where it belongs.
            return Some(Tamper::Reordered { seq: r.seq });
        }
        let intact = r.identity_id == identity_id
            && record_hash(identity_id, r.seq, &r.prev_hash, &r.entry) == r.hash;
        if !intact {
            return Some(if moved_here(identity_id, r, &sorted) {
                Tamper::Reordered { seq: r.seq }
            } else {
                Tamper::Edited { seq: r.seq }
            });
        }
        if r.prev_hash != prev_hash {
            return Some(Tamper::Reordered { seq: r.seq });
        }
        prev_hash = &r.hash;
        expected = expected.saturating_add(1);
    }

    let (last_seq, last_hash) = sorted
        .last()
        .map(|r| (r.seq, r.hash.as_str()))
        .unwrap_or((0, GENESIS_HASH));
    match head {
        None if sorted.is_empty() => None,
        None => Some(Tamper::MissingHead),
        Some(h) if h.seq != last_seq || h.hash != last_hash => Some(Tamper::HeadMismatch {
            head_seq: h.seq,
            last_seq,
        }),
        Some(_) if !mac_ok => Some(Tamper::BadMac),
        Some(_) => None,
    }
}

/// Whether `r`'s content is an intact record of this identity written at another seq (it was
/// moved or swapped into its slot). Candidates are the seqs present and their neighbours, so
/// the search is bounded by what is stored, never by a forged number.
fn moved_here(identity_id: &str, r: &AuditRecord, all: &[&AuditRecord]) -> bool {
    if r.identity_id != identity_id {
        return false;
    }
    let candidates: BTreeSet<u64> = all
        .iter()
        .flat_map(|x| [x.seq.saturating_sub(1), x.seq, x.seq.saturating_add(1)])
        .filter(|&s| s != 0 && s != r.seq)
        .collect();
    candidates
        .into_iter()
        .any(|s| record_hash(identity_id, s, &r.prev_hash, &r.entry) == r.hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "identity-1";

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            at_ms: 1_700_000_000_000 + i as i64,
            action: if i % 2 == 0 {
                "createSecret".into()
            } else {
                "finishSecret".into()
            },
            outcome: "created".into(),
            actor: "cli:alice".into(),
            token: Some(format!("token-{i}")),
            versions: vec![format!("v{i}"), format!("v{}", i + 1)],
            error_type: None,
            detail: if i % 3 == 0 {
                Some("fields changed: password".into())
            } else {
                None
            },
        }
    }

    /// A chain of `n` records and its head (MAC left empty: `mac_ok` stands for custody).
    fn chain(n: u64) -> (Vec<AuditRecord>, Head) {
        let mut records = Vec::new();
        let mut prev = GENESIS_HASH.to_string();
        for seq in 1..=n {
            let r = seal(ID, seq, &prev, entry(seq));
            prev = r.hash.clone();
            records.push(r);
        }
        let head = Head {
            seq: n,
            hash: prev,
            mac: Vec::new(),
        };
        (records, head)
    }

    fn problem(records: &[AuditRecord], head: Option<&Head>, mac_ok: bool) -> Option<Tamper> {
        verify_chain(ID, records, head, mac_ok).tamper
    }

    #[test]
    fn audit_intact_chain_verifies() {
        let (records, head) = chain(20);
        let v = verify_chain(ID, &records, Some(&head), true);
        assert_eq!(v.records, 20);
        assert_eq!(v.identity_id, ID);
        assert_eq!(v.tamper, None);
    }

    #[test]
    fn audit_empty_log_without_head_verifies() {
        assert_eq!(problem(&[], None, false), None);
    }

    #[test]
    fn audit_genesis_and_hash_shape() {
        let (records, _) = chain(2);
        assert_eq!(GENESIS_HASH.len(), 64);
        assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        assert_eq!(records[1].prev_hash, records[0].hash);
        for r in &records {
            assert_eq!(r.hash.len(), 64);
            assert!(r.hash.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn audit_hash_is_pinned() {
        // Changing the serialization breaks every stored chain: bump the domain tag instead.
        // (Cross-checked against an independent Python implementation of the format.)
        let e = AuditEntry {
            at_ms: 1,
            action: "createSecret".into(),
            outcome: "created".into(),
            actor: "cli:alice".into(),
            token: Some("t".into()),
            versions: vec!["v1".into()],
            error_type: None,
            detail: None,
        };
        assert_eq!(
            record_hash("id", 1, GENESIS_HASH, &e),
            "00656e95a7d614794dfce89d8039b5d055353a0b7cba84667bca28e048406680"
        );
    }

    #[test]
    fn audit_hash_covers_every_field() {
        let base = entry(3);
        let h = record_hash(ID, 3, GENESIS_HASH, &base);
        let mut variants: Vec<String> = vec![
            record_hash("identity-2", 3, GENESIS_HASH, &base),
            record_hash(ID, 4, GENESIS_HASH, &base),
            record_hash(ID, 3, &"1".repeat(64), &base),
        ];
        let edits: Vec<fn(&mut AuditEntry)> = vec![
            |e| e.at_ms += 1,
            |e| e.action.push('x'),
            |e| e.outcome.push('x'),
            |e| e.actor.push('x'),
            |e| e.token = None,
            |e| e.token = Some(String::new()),
            |e| {
                e.versions.pop();
            },
            |e| e.versions.push(String::new()),
            |e| e.error_type = Some(String::new()),
            |e| e.detail = None,
        ];
        for edit in edits {
            let mut e = base.clone();
            edit(&mut e);
            variants.push(record_hash(ID, 3, GENESIS_HASH, &e));
        }
        let distinct: BTreeSet<&String> = variants.iter().chain([&h]).collect();
        assert_eq!(distinct.len(), variants.len() + 1);
    }

    #[test]
    fn audit_serialization_is_unambiguous() {
        let a = AuditEntry {
            action: "ab".into(),
            outcome: "c".into(),
            ..Default::default()
        };
        let b = AuditEntry {
            action: "a".into(),
            outcome: "bc".into(),
            ..Default::default()
        };
        assert_ne!(
            record_hash(ID, 1, GENESIS_HASH, &a),
            record_hash(ID, 1, GENESIS_HASH, &b)
        );
        let c = AuditEntry {
            versions: vec!["a,b".into()],
            ..Default::default()
        };
        let d = AuditEntry {
            versions: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert_ne!(
            record_hash(ID, 1, GENESIS_HASH, &c),
            record_hash(ID, 1, GENESIS_HASH, &d)
        );
        let e = AuditEntry {
            token: Some("x".into()),
            ..Default::default()
        };
        let f = AuditEntry {
            detail: Some("x".into()),
            ..Default::default()
        };
        assert_ne!(
            record_hash(ID, 1, GENESIS_HASH, &e),
            record_hash(ID, 1, GENESIS_HASH, &f)
        );
    }

    #[test]
    fn audit_head_message_binds_identity_seq_and_hash() {
        let h = "a".repeat(64);
        let m = head_message(ID, 5, &h);
        assert_ne!(m, head_message("identity-2", 5, &h));
        assert_ne!(m, head_message(ID, 4, &h));
        assert_ne!(m, head_message(ID, 5, &"b".repeat(64)));
        assert_ne!(m, canonical_record(ID, 5, &h, &AuditEntry::default()));
        let head = Head {
            seq: 5,
            hash: h.clone(),
            mac: vec![1],
        };
        assert_eq!(head.message(ID), m);
    }

    #[test]
    fn audit_edited_record_is_named() {
        let (mut records, head) = chain(20);
        records[4].entry.outcome = "failed".into();
        assert_eq!(
            problem(&records, Some(&head), true),
            Some(Tamper::Edited { seq: 5 })
        );
    }

    #[test]
    fn audit_edited_prev_hash_or_hash_is_an_edit() {
        let (records, head) = chain(10);
        let mut a = records.clone();
        a[5].prev_hash = "f".repeat(64);
        assert_eq!(
            problem(&a, Some(&head), true),
            Some(Tamper::Edited { seq: 6 })
        );
        let mut b = records;
        b[5].hash = "f".repeat(64);
        assert_eq!(
            problem(&b, Some(&head), true),
            Some(Tamper::Edited { seq: 6 })
        );
    }

    #[test]
    fn audit_record_of_another_identity_is_an_edit() {
        let (mut records, head) = chain(5);
        records[1].identity_id = "identity-2".into();
        assert_eq!(
            problem(&records, Some(&head), true),
            Some(Tamper::Edited { seq: 2 })
        );
    }

    #[test]
    fn audit_deleted_record_is_named() {
        let (mut records, head) = chain(20);
        records.remove(6);
        assert_eq!(
            problem(&records, Some(&head), true),
            Some(Tamper::Deleted { seq: 7 })
        );
        let (mut first, head) = chain(3);
        first.remove(0);
        assert_eq!(
            problem(&first, Some(&head), true),
            Some(Tamper::Deleted { seq: 1 })
        );
    }

    #[test]
    fn audit_swapped_contents_keys_kept_is_a_reorder() {
        // What a swap of two items' non-key attributes (or of their sort keys) looks like.
        let (mut records, head) = chain(10);
        let (r3, r4) = (records[2].clone(), records[3].clone());
        records[2].entry = r4.entry;
        records[2].prev_hash = r4.prev_hash;
        records[2].hash = r4.hash;
        records[3].entry = r3.entry;
        records[3].prev_hash = r3.prev_hash;
        records[3].hash = r3.hash;
        assert_eq!(
            problem(&records, Some(&head), true),
            Some(Tamper::Reordered { seq: 3 })
        );
    }

    #[test]
    fn audit_swapped_and_rehashed_is_a_reorder() {
        // Swapped, then each re-sealed under its new seq: intact records, broken links.
        let (records, head) = chain(10);
        let mut swapped = records.clone();
        swapped[2] = seal(ID, 3, &records[3].prev_hash, records[3].entry.clone());
        swapped[3] = seal(ID, 4, &records[2].prev_hash, records[2].entry.clone());
        assert_eq!(
            problem(&swapped, Some(&head), true),
            Some(Tamper::Reordered { seq: 3 })
        );
    }

    #[test]
    fn audit_input_order_does_not_matter() {
        let (mut records, head) = chain(6);
        records.reverse();
        assert_eq!(problem(&records, Some(&head), true), None);
    }

    #[test]
    fn audit_first_problem_wins() {
        let (mut records, _) = chain(20);
        records[4].entry.actor = "mallory".into();
        records.remove(6);
        records.pop();
        assert_eq!(
            problem(&records, None, false),
            Some(Tamper::Edited { seq: 5 })
        );
    }

    #[test]
    fn audit_truncated_tail_is_a_head_mismatch() {
        let (mut records, head) = chain(20);
        records.pop();
        assert_eq!(
            problem(&records, Some(&head), true),
            Some(Tamper::HeadMismatch {
                head_seq: 20,
                last_seq: 19
            })
        );
    }

    #[test]
    fn audit_head_without_records_is_a_head_mismatch() {
        let (_, head) = chain(3);
        assert_eq!(
            problem(&[], Some(&head), true),
            Some(Tamper::HeadMismatch {
                head_seq: 3,
                last_seq: 0
            })
        );
    }

    #[test]
    fn audit_head_rolled_back_without_its_mac_is_bad_mac() {
        // The last record deleted and the head re-pointed at the new last record: seq and hash
        // agree with the chain, but the MAC (over seq 20's message) does not cover them.
        let (mut records, mut head) = chain(20);
        records.pop();
        head.seq = 19;
        head.hash = records[18].hash.clone();
        assert_eq!(problem(&records, Some(&head), false), Some(Tamper::BadMac));
    }

    #[test]
    fn audit_bad_mac_is_named() {
        let (records, head) = chain(4);
        assert_eq!(problem(&records, Some(&head), false), Some(Tamper::BadMac));
    }

    #[test]
    fn audit_missing_head_is_named() {
        let (records, _) = chain(4);
        assert_eq!(problem(&records, None, true), Some(Tamper::MissingHead));
    }

    #[test]
    fn audit_tamper_serializes_with_problem_tag() {
        let v = serde_json::to_value(Tamper::Edited { seq: 5 }).unwrap_or_default();
        assert_eq!(v, serde_json::json!({"problem": "edited", "seq": 5}));
    }
}
