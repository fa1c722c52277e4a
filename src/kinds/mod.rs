//! Credential kinds. Each kind is one module implementing [`CredentialKind`]; [`KINDS`] is the
//! registry, so adding a kind touches its module and one line there. The steps know nothing of
//! any kind beyond this trait.

pub mod generic;
pub mod postgres;
pub mod x509;

use async_trait::async_trait;
use secrecy::SecretString;

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, RotorError};
use crate::policy::GeneratorPolicy;
use crate::ports::{CaSigner, SecretMeta, SecretStore};

/// The tag naming a secret's kind (default `generic`).
pub const KIND_TAG: &str = "rotor:kind";

/// Settings kinds share, read once from the environment.
#[derive(Debug, Clone)]
pub struct KindSettings {
    /// CA bundle (PEM) that database TLS is verified against (`ROTOR_DB_CA_BUNDLE`); default:
    /// the platform bundle.
    pub ca_bundle: Option<PathBuf>,
    /// Connect and statement timeout for targets (`ROTOR_DB_TIMEOUT_SECONDS`, default 5).
    pub db_timeout: Duration,
    /// The CA's KMS signing key: id, ARN or alias (`ROTOR_CA_KEY_ID`, default
    /// `alias/rotor-ca`).
    pub ca_key_id: String,
    /// The secret whose AWSCURRENT holds the CA certificate PEM (`ROTOR_CA_CERT_SECRET`,
    /// default `rotor/ca-certificate`), published by `rotor ca init`.
    pub ca_cert_secret: String,
    /// Certificate lifetime when the profile names none (`ROTOR_CERT_VALIDITY`, default 24h).
    pub cert_validity: Duration,
}

impl Default for KindSettings {
    fn default() -> Self {
        KindSettings {
            ca_bundle: None,
            db_timeout: Duration::from_secs(5),
            ca_key_id: crate::ca::DEFAULT_CA_KEY.into(),
            ca_cert_secret: crate::ca::DEFAULT_CA_CERT_SECRET.into(),
            cert_validity: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a kind sees of the secret being rotated. Holds no values.
pub struct KindContext<'a> {
    pub meta: &'a SecretMeta,
    /// The generator policy after the secret's tags were applied.
    pub policy: &'a GeneratorPolicy,
    /// Secrets Manager, for the versions a kind needs beyond current and pending (AWSPREVIOUS,
    /// a master secret).
    pub secrets: &'a dyn SecretStore,
    pub settings: &'a KindSettings,
    /// CA signing in custody (KMS), for kinds that issue certificates.
    pub signer: Option<&'a dyn CaSigner>,
}

/// `InvalidSecretValue` for the secret in `ctx`; `reason` never quotes the value.
pub(crate) fn invalid(
    ctx: &KindContext<'_>,
    which: &'static str,
    reason: impl Into<String>,
) -> RotorError {
    RotorError::InvalidSecretValue {
        secret: ctx.meta.arn.clone(),
        which,
        reason: reason.into(),
    }
}

/// A secret value as a JSON object. The error is a reason that names a position (serde_json's
/// syntax errors), never the content.
pub(crate) fn json_object(
    value: &str,
) -> std::result::Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("is JSON but not an object".into()),
        Err(e) => Err(format!(
            "is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )),
    }
}

/// What setSecret did at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The target was changed to accept the pending credential.
    Changed,
    /// The target already accepted it (a re-run).
    AlreadyAccepted,
    /// The kind has no target (the secret is the credential).
    NoTarget,
}

/// One kind of credential.
///
/// Contract: no method may put a secret value in an error, a log line or a panic message; every
/// method is safe to call again with the same arguments (steps are retried); `verify` is
/// read-only; `apply` keeps the current credential working wherever the kind's strategy allows.
#[async_trait]
pub trait CredentialKind: Send + Sync {
    /// The name used in the `rotor:kind` tag and in the inventory.
    fn name(&self) -> &'static str;

    /// Whether setSecret must reach a target (if not, it only checks the version).
    fn has_target(&self) -> bool;

    /// createSecret: the next credential, derived from the current secret value.
    async fn generate(&self, ctx: &KindContext<'_>, current: &SecretString)
        -> Result<SecretString>;

    /// setSecret: make the target accept `pending` (first checking whether it already does).
    async fn apply(
        &self,
        ctx: &KindContext<'_>,
        pending: &SecretString,
        current: &SecretString,
    ) -> Result<Applied>;

    /// testSecret: prove `pending` works; read-only.
    async fn verify(
        &self,
        ctx: &KindContext<'_>,
        pending: &SecretString,
        current: &SecretString,
    ) -> Result<()>;

    /// Whether credentials of this kind expire (finishSecret then asks [`Self::renew_by`]).
    fn expires(&self) -> bool {
        false
    }

    /// When `value` (the new AWSCURRENT) must be replaced by, in unix seconds: the inventory
    /// makes the identity due no later than this, whatever its interval.
    fn renew_by(&self, _value: &SecretString) -> Option<i64> {
        None
    }

    /// rollback: put the target back to `current` where `apply` changed it (`pending` is the
    /// value `apply` may have set, when one was created).
    async fn revert(
        &self,
        _ctx: &KindContext<'_>,
        _pending: Option<&SecretString>,
        _current: &SecretString,
    ) -> Result<()> {
        Ok(())
    }
}

/// Every kind Rotor knows. Add a kind here.
pub static KINDS: &[&dyn CredentialKind] = &[&generic::Generic, &postgres::Postgres, &x509::X509];

/// A secret's kind: its `rotor:kind` tag, else the kind the inventory registered (`known`), else
/// `generic`.
pub fn for_secret(meta: &SecretMeta, known: Option<&str>) -> Result<&'static dyn CredentialKind> {
    let name = meta
        .tags
        .get(KIND_TAG)
        .map(String::as_str)
        .or(known)
        .unwrap_or("generic");
    KINDS
        .iter()
        .copied()
        .find(|k| k.name() == name)
        .ok_or_else(|| RotorError::UnsupportedKind(name.chars().take(64).collect()))
}
