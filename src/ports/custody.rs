//! The custody ports: operations with keys that never leave the key service (KMS) — the audit
//! head's MAC ([`Custody`]) and CA signing ([`CaSigner`]).

use async_trait::async_trait;

use crate::error::Result;

/// Keys held in custody.
///
/// Contract: key material is never returned; `mac` is deterministic for a key and message;
/// `verify_mac` answers `Ok(false)` for a wrong MAC and `Err` only when the service fails.
#[async_trait]
pub trait Custody: Send + Sync {
    /// HMAC-SHA-256 of `message` under the audit MAC key.
    async fn mac(&self, message: &[u8]) -> Result<Vec<u8>>;
    /// Whether `mac` is the audit MAC key's HMAC-SHA-256 of `message`.
    async fn verify_mac(&self, message: &[u8], mac: &[u8]) -> Result<bool>;
}

/// Certificate-authority signing keys held in custody (KMS `ECC_NIST_P256` / `SIGN_VERIFY`).
///
/// Contract: the private key is never returned, exported or cached; `sign` returns a DER
/// ECDSA-with-SHA-256 signature over `message` itself (the key service hashes it: KMS
/// `MessageType RAW`), so `message` is the whole to-be-signed structure; `public_key` returns
/// the key's DER SubjectPublicKeyInfo. Errors name the key and the service's error code only.
#[async_trait]
pub trait CaSigner: Send + Sync {
    /// The DER SubjectPublicKeyInfo of `key_id`.
    async fn public_key(&self, key_id: &str) -> Result<Vec<u8>>;
    /// An ECDSA P-256 / SHA-256 signature (DER) of `message` by `key_id`.
    async fn sign(&self, key_id: &str, message: &[u8]) -> Result<Vec<u8>>;
}
