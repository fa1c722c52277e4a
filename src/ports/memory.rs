//! In-memory fakes of the ports, with Secrets Manager's staging-label semantics, for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Result, RotorError};
use crate::event::SecretId;
use crate::ports::secrets::{PutOutcome, SecretMeta, SecretStore, AWSCURRENT, AWSPREVIOUS};

#[derive(Default)]
struct Entry {
    meta: SecretMeta,
    values: BTreeMap<String, String>,
}

/// A Secrets Manager stand-in holding secrets in memory.
#[derive(Default)]
pub struct MemorySecrets {
    secrets: Mutex<BTreeMap<String, Entry>>,
}

impl MemorySecrets {
    /// Creates a secret whose first version `v1` is AWSCURRENT.
    pub fn create(&self, name: &str, value: &str, tags: &[(&str, &str)]) {
        let mut e = Entry::default();
        e.meta.name = name.to_string();
        e.meta.arn = format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}");
        e.meta.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        e.meta
            .versions
            .insert("v1".into(), vec![AWSCURRENT.to_string()]);
        e.values.insert("v1".into(), value.to_string());
        self.lock().insert(name.to_string(), e);
    }

    /// Stages `version_id` AWSPENDING with no value, as `RotateSecret` does.
    pub fn stage_empty_pending(&self, name: &str, version_id: &str) {
        let mut g = self.lock();
        if let Some(e) = g.get_mut(name) {
            detach(&mut e.meta, crate::ports::AWSPENDING);
            e.meta
                .versions
                .insert(version_id.into(), vec![crate::ports::AWSPENDING.into()]);
        }
    }

    /// The plain value of a version (test helper).
    pub fn value_of(&self, name: &str, version_id: &str) -> Option<String> {
        self.lock().get(name)?.values.get(version_id).cloned()
    }

    /// A snapshot of the metadata (test helper).
    pub fn meta(&self, name: &str) -> Option<SecretMeta> {
        self.lock().get(name).map(|e| e.meta.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn detach(meta: &mut SecretMeta, stage: &str) {
    for s in meta.versions.values_mut() {
        s.retain(|x| x != stage);
    }
}

fn key(secret: &str) -> &str {
    secret.rsplit(':').next().unwrap_or(secret)
}

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn describe(&self, id: &SecretId) -> Result<SecretMeta> {
        self.lock()
            .get(key(id.as_str()))
            .map(|e| e.meta.clone())
            .ok_or_else(|| RotorError::SecretNotFound(id.to_string()))
    }

    async fn get_value(
        &self,
        secret: &str,
        version_id: Option<&str>,
        stage: &str,
    ) -> Result<Option<SecretString>> {
        let g = self.lock();
        let e = g
            .get(key(secret))
            .ok_or_else(|| RotorError::SecretNotFound(secret.to_string()))?;
        let v = match version_id {
            Some(v) if e.meta.has_stage(v, stage) => Some(v.to_string()),
            Some(_) => None,
            None => e.meta.version_with(stage).map(str::to_string),
        };
        Ok(v.and_then(|v| e.values.get(&v).cloned().map(SecretString::from)))
    }

    async fn put_pending(
        &self,
        secret: &str,
        version_id: &str,
        value: &SecretString,
    ) -> Result<PutOutcome> {
        let mut g = self.lock();
        let e = g
            .get_mut(key(secret))
            .ok_or_else(|| RotorError::SecretNotFound(secret.to_string()))?;
        if e.values.contains_key(version_id) {
            return Ok(PutOutcome::AlreadyExists);
        }
        detach(&mut e.meta, crate::ports::AWSPENDING);
        e.meta
            .versions
            .insert(version_id.into(), vec![crate::ports::AWSPENDING.into()]);
        e.values
            .insert(version_id.into(), value.expose_secret().to_string());
        Ok(PutOutcome::Created)
    }

    async fn update_stage(
        &self,
        secret: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<()> {
        let mut g = self.lock();
        let e = g
            .get_mut(key(secret))
            .ok_or_else(|| RotorError::SecretNotFound(secret.to_string()))?;
        if let Some(from) = remove_from {
            if let Some(s) = e.meta.versions.get_mut(from) {
                s.retain(|x| x != stage);
                if stage == AWSCURRENT {
                    detach(&mut e.meta, AWSPREVIOUS);
                    if let Some(s) = e.meta.versions.get_mut(from) {
                        s.push(AWSPREVIOUS.into());
                    }
                }
            }
        }
        if let Some(to) = move_to {
            detach(&mut e.meta, stage);
            e.meta
                .versions
                .entry(to.to_string())
                .or_default()
                .push(stage.to_string());
        }
        Ok(())
    }
}

pub use audit_fakes::{MemoryAudit, MemoryCustody};

/// In-memory custody and audit log (test-only), with the same semantics as `KmsCustody` and
/// `DynamoAudit`: hashing and verification come from `crate::audit`.
mod audit_fakes {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, MutexGuard};

    use async_trait::async_trait;
    use sha2::{Digest, Sha256};

    use crate::audit::{head_message, seal, verify_chain, Head, GENESIS_HASH};
    use crate::error::{Result, RotorError};
    use crate::ports::audit::{AuditEntry, AuditLog, AuditRecord, Verification};
    use crate::ports::custody::Custody;

    /// HMAC-SHA-256 (RFC 2104) built from `sha2`.
    pub(super) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
        const BLOCK: usize = 64;
        let mut k = [0u8; BLOCK];
        if key.len() > BLOCK {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(message)
            .finalize();
        let outer = Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize();
        let mut out = [0u8; 32];
        out.copy_from_slice(&outer);
        out
    }

    /// A custody stand-in for tests: HMAC-SHA-256 under a key held in memory. Not for
    /// production: the key lives in the process.
    pub struct MemoryCustody {
        key: Vec<u8>,
    }

    impl MemoryCustody {
        /// A custody with a random 32-byte key from the OS (a fixed test key if the OS
        /// generator fails: this is a test fake).
        pub fn new() -> Self {
            let mut key = vec![0u8; 32];
            if getrandom::fill(&mut key).is_err() {
                key = b"rotor-memory-custody-test-key".to_vec();
            }
            MemoryCustody { key }
        }

        /// A custody with a given key (two instances with one key verify each other's MACs).
        pub fn with_key(key: impl Into<Vec<u8>>) -> Self {
            MemoryCustody { key: key.into() }
        }
    }

    impl Default for MemoryCustody {
        fn default() -> Self {
            Self::new()
        }
    }

    #[async_trait]
    impl Custody for MemoryCustody {
        async fn mac(&self, message: &[u8]) -> Result<Vec<u8>> {
            Ok(hmac_sha256(&self.key, message).to_vec())
        }

        async fn verify_mac(&self, message: &[u8], mac: &[u8]) -> Result<bool> {
            let expected = hmac_sha256(&self.key, message);
            // Constant time over the expected length.
            Ok(mac.len() == expected.len()
                && mac
                    .iter()
                    .zip(expected.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0)
        }
    }

    #[derive(Default)]
    struct Chain {
        records: Vec<AuditRecord>,
        head: Option<Head>,
    }

    /// An audit log in memory with `DynamoAudit`'s semantics: compare-and-swap on the head
    /// (concurrent appends retry), the head's MAC checked before a chain is extended, and
    /// `verify` through `crate::audit::verify_chain`. `tamper` edits the stored chain.
    pub struct MemoryAudit {
        custody: Arc<dyn Custody>,
        chains: Mutex<BTreeMap<String, Chain>>,
    }

    impl MemoryAudit {
        /// An empty log whose heads are MAC'd by `custody`.
        pub fn new(custody: Arc<dyn Custody>) -> Self {
            MemoryAudit {
                custody,
                chains: Mutex::new(BTreeMap::new()),
            }
        }

        /// Hands the stored records (in seq order) and head of an identity to `f` to edit, as
        /// someone with write access to the table could (test helper).
        pub fn tamper(
            &self,
            identity_id: &str,
            f: impl FnOnce(&mut Vec<AuditRecord>, &mut Option<Head>),
        ) {
            let mut g = self.lock();
            let c = g.entry(identity_id.to_string()).or_default();
            f(&mut c.records, &mut c.head);
        }

        fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Chain>> {
            self.chains.lock().unwrap_or_else(|p| p.into_inner())
        }

        fn snapshot(&self, identity_id: &str) -> (Vec<AuditRecord>, Option<Head>) {
            let g = self.lock();
            match g.get(identity_id) {
                Some(c) => {
                    let mut r = c.records.clone();
                    r.sort_by_key(|r| r.seq);
                    (r, c.head.clone())
                }
                None => (Vec::new(), None),
            }
        }
    }

    impl Default for MemoryAudit {
        fn default() -> Self {
            Self::new(Arc::new(MemoryCustody::new()))
        }
    }

    fn tampered(identity_id: &str, problem: String) -> RotorError {
        RotorError::AuditTampered {
            identity: identity_id.to_string(),
            problem,
        }
    }

    #[async_trait]
    impl AuditLog for MemoryAudit {
        async fn append(&self, identity_id: &str, entry: AuditEntry) -> Result<AuditRecord> {
            for _ in 0..100 {
                let read = self.snapshot(identity_id).1;
                let (seq, prev_hash) = match &read {
                    None => (1, GENESIS_HASH.to_string()),
                    Some(h) => {
                        if !self
                            .custody
                            .verify_mac(&h.message(identity_id), &h.mac)
                            .await?
                        {
                            return Err(tampered(
                                identity_id,
                                "the head's MAC does not verify".into(),
                            ));
                        }
                        let next = h.seq.checked_add(1).ok_or_else(|| {
                            tampered(identity_id, "the head's seq is exhausted".into())
                        })?;
                        (next, h.hash.clone())
                    }
                };
                let record = seal(identity_id, seq, &prev_hash, entry.clone());
                let mac = self
                    .custody
                    .mac(&head_message(identity_id, seq, &record.hash))
                    .await?;
                let mut g = self.lock();
                let chain = g.entry(identity_id.to_string()).or_default();
                if chain.head != read {
                    continue; // a concurrent append moved the head: retry from the read
                }
                if chain.records.iter().any(|r| r.seq == seq) {
                    return Err(tampered(
                        identity_id,
                        format!("record {seq} already exists beyond the head"),
                    ));
                }
                chain.records.push(record.clone());
                chain.head = Some(Head {
                    seq,
                    hash: record.hash.clone(),
                    mac,
                });
                return Ok(record);
            }
            Err(RotorError::Aws {
                operation: "TransactWriteItems",
                code: "TransactionCanceledException".into(),
                message: "too many concurrent appends".into(),
                retryable: true,
            })
        }

        async fn records(&self, identity_id: &str) -> Result<Vec<AuditRecord>> {
            Ok(self.snapshot(identity_id).0)
        }

        async fn verify(&self, identity_id: &str) -> Result<Verification> {
            let (records, head) = self.snapshot(identity_id);
            let mac_ok = match &head {
                Some(h) => {
                    self.custody
                        .verify_mac(&h.message(identity_id), &h.mac)
                        .await?
                }
                None => false,
            };
            Ok(verify_chain(identity_id, &records, head.as_ref(), mac_ok))
        }

        async fn identities(&self) -> Result<Vec<String>> {
            Ok(self
                .lock()
                .iter()
                .filter(|(_, c)| c.head.is_some())
                .map(|(k, _)| k.clone())
                .collect())
        }
    }
}

/// A CA signer for unit tests: a P-256 key held in memory (the AWS adapter's key never leaves
/// KMS). Signs exactly as `KmsCaSigner` does: DER ECDSA over SHA-256 of the message.
pub struct MemoryCaSigner {
    key: rcgen::KeyPair,
    /// Sign calls made (tests count custody round trips).
    pub signs: std::sync::atomic::AtomicUsize,
}

impl MemoryCaSigner {
    /// A signer with a fresh P-256 key.
    pub fn new() -> crate::error::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| crate::error::RotorError::Config(format!("test CA key: {e}")))?;
        Ok(MemoryCaSigner {
            key,
            signs: Default::default(),
        })
    }
}

#[async_trait]
impl crate::ports::CaSigner for MemoryCaSigner {
    async fn public_key(&self, _key_id: &str) -> crate::error::Result<Vec<u8>> {
        use rcgen::PublicKeyData;
        Ok(self.key.subject_public_key_info())
    }

    async fn sign(&self, _key_id: &str, message: &[u8]) -> crate::error::Result<Vec<u8>> {
        use rcgen::SigningKey;
        self.signs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.key
            .sign(message)
            .map_err(|e| crate::error::RotorError::Config(format!("test CA sign: {e}")))
    }
}

#[cfg(test)]
mod audit_tests {
    use std::sync::Arc;

    use super::audit_fakes::hmac_sha256;
    use super::{MemoryAudit, MemoryCustody};
    use crate::audit::Head;
    use crate::ports::audit::{AuditEntry, AuditLog, Tamper};
    use crate::ports::custody::Custody;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at_ms: 1,
            action: action.into(),
            outcome: "ok".into(),
            actor: "test".into(),
            ..Default::default()
        }
    }

    #[test]
    fn audit_hmac_matches_rfc4231() {
        // RFC 4231 test cases 1 and 6 (a key longer than the block).
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[tokio::test]
    async fn audit_memory_custody_verifies_only_its_macs() {
        let c = MemoryCustody::new();
        let mac = c.mac(b"m").await.unwrap();
        assert!(c.verify_mac(b"m", &mac).await.unwrap());
        assert!(!c.verify_mac(b"n", &mac).await.unwrap());
        assert!(!c.verify_mac(b"m", &mac[..31]).await.unwrap());
        assert!(!MemoryCustody::new().verify_mac(b"m", &mac).await.unwrap());
        let same = MemoryCustody::with_key(b"k".to_vec());
        let mac = same.mac(b"m").await.unwrap();
        assert!(MemoryCustody::with_key(b"k".to_vec())
            .verify_mac(b"m", &mac)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn audit_memory_log_appends_and_verifies() {
        let log = MemoryAudit::default();
        for i in 0..5 {
            let r = log.append("a", entry(&format!("step{i}"))).await.unwrap();
            assert_eq!(r.seq, i + 1);
        }
        log.append("b", entry("x")).await.unwrap();
        let records = log.records("a").await.unwrap();
        assert_eq!(records.len(), 5);
        assert_eq!(records[2].entry, entry("step2"));
        let v = log.verify("a").await.unwrap();
        assert_eq!((v.records, v.tamper), (5, None));
        assert_eq!(log.identities().await.unwrap(), vec!["a", "b"]);
        assert_eq!(log.verify("none").await.unwrap().tamper, None);
    }

    #[tokio::test]
    async fn audit_memory_concurrent_appends_chain() {
        let log = Arc::new(MemoryAudit::default());
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append("c", entry(&format!("t{i}"))).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let seqs: Vec<u64> = log
            .records("c")
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(log.verify("c").await.unwrap().tamper, None);
    }

    #[tokio::test]
    async fn audit_memory_log_names_tampering() {
        let log = MemoryAudit::default();
        for i in 0..6 {
            log.append("a", entry(&format!("s{i}"))).await.unwrap();
        }
        log.tamper("a", |r, _| r[2].entry.outcome = "failed".into());
        assert_eq!(
            log.verify("a").await.unwrap().tamper,
            Some(Tamper::Edited { seq: 3 })
        );
        log.tamper("a", |r, _| {
            r[2].entry.outcome = "ok".into();
            r.remove(4);
        });
        assert_eq!(
            log.verify("a").await.unwrap().tamper,
            Some(Tamper::Deleted { seq: 5 })
        );
    }

    #[tokio::test]
    async fn audit_memory_forged_head_blocks_appends() {
        let log = MemoryAudit::default();
        for i in 0..3 {
            log.append("a", entry(&format!("s{i}"))).await.unwrap();
        }
        // Truncate and re-point the head without the key: verify names it, append refuses to
        // launder it under a fresh MAC.
        log.tamper("a", |r, h| {
            r.pop();
            let last = r[1].hash.clone();
            if let Some(Head { seq, hash, .. }) = h.as_mut() {
                *seq = 2;
                *hash = last;
            }
        });
        assert_eq!(log.verify("a").await.unwrap().tamper, Some(Tamper::BadMac));
        let err = log.append("a", entry("next")).await.unwrap_err();
        assert_eq!(err.error_type(), "AuditTampered");
    }
}
