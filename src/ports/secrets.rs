//! The secrets port: the five Secrets Manager operations the rotation protocol needs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::error::Result;
use crate::event::SecretId;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// What `DescribeSecret` tells about a secret: never its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretMeta {
    pub arn: String,
    pub name: String,
    /// Version id → staging labels (`VersionIdsToStages`).
    pub versions: BTreeMap<String, Vec<String>>,
    pub tags: BTreeMap<String, String>,
}

impl SecretMeta {
    /// The staging labels of one version, `None` when it is not a version of this secret.
    pub fn stages(&self, version_id: &str) -> Option<&[String]> {
        self.versions.get(version_id).map(Vec::as_slice)
    }

    /// Whether `version_id` carries `stage`.
    pub fn has_stage(&self, version_id: &str, stage: &str) -> bool {
        self.stages(version_id)
            .is_some_and(|s| s.iter().any(|x| x == stage))
    }

    /// The version that carries `stage`, if any.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, s)| s.iter().any(|x| x == stage))
            .map(|(v, _)| v.as_str())
    }
}

/// Result of putting a pending value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The version already had a value (a concurrent or retried createSecret got there first).
    AlreadyExists,
}

/// Secrets Manager, as the rotation steps use it.
///
/// Contract: every method addresses versions explicitly (by id and/or stage, never "the default
/// version"); values are only ever returned as `SecretString`; errors carry no secret values.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Metadata and `VersionIdsToStages`. An unknown or deleted secret is `SecretNotFound`.
    async fn describe(&self, id: &SecretId) -> Result<SecretMeta>;

    /// The string value of a version selected by id and/or stage. `Ok(None)` when that version
    /// exists without a value or does not exist; a binary-only secret is `InvalidSecretValue`.
    async fn get_value(
        &self,
        secret: &str,
        version_id: Option<&str>,
        stage: &str,
    ) -> Result<Option<SecretString>>;

    /// `PutSecretValue(ClientRequestToken = version_id, VersionStages = [AWSPENDING])`.
    /// Never touches AWSCURRENT. A version that already holds a value is `AlreadyExists`.
    async fn put_pending(
        &self,
        secret: &str,
        version_id: &str,
        value: &SecretString,
    ) -> Result<PutOutcome>;

    /// `UpdateSecretVersionStage`: attach `stage` to `move_to` and/or detach it from
    /// `remove_from`. Moving AWSCURRENT makes the old current version AWSPREVIOUS.
    async fn update_stage(
        &self,
        secret: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<()>;
}
