//! The custody port: operations with keys that never leave the key service (KMS). Today the
//! audit head's MAC; CA signing joins it with the certificate kinds.

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
