//! Rotor's error type: every failure a step can meet, each with a stable `errorType` that the
//! Lambda error response, the logs and (later) the audit log carry. No variant ever holds a
//! secret value: messages name fields, stages, versions and AWS error codes, never contents.

use std::fmt;

/// Every way a rotation step can fail.
#[derive(Debug, thiserror::Error)]
pub enum RotorError {
    /// The invocation event is not a rotation event (missing, empty or mistyped field).
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// `Step` is not one of createSecret, setSecret, testSecret, finishSecret.
    #[error("unknown step {0:?}: expected createSecret, setSecret, testSecret or finishSecret")]
    UnknownStep(String),
    /// This function serves one step only and was sent another (least privilege).
    #[error("this function runs {expected} only, not {got}")]
    StepNotServed {
        expected: &'static str,
        got: &'static str,
    },
    /// `ClientRequestToken` is malformed or oversized.
    #[error("invalid ClientRequestToken: {0}")]
    InvalidToken(String),
    /// `SecretId` is malformed or oversized.
    #[error("invalid SecretId: {0}")]
    InvalidSecretId(String),
    /// The secret does not exist (or is deleted).
    #[error("secret {0} not found")]
    SecretNotFound(String),
    /// The token is not a version of the secret.
    #[error("secret {secret}: version {token} is not a version of this secret")]
    TokenNotAVersion { secret: String, token: String },
    /// The token's version is neither AWSPENDING nor AWSCURRENT.
    #[error(
        "secret {secret}: version {token} is not set as AWSPENDING for rotation (stages: {stages})"
    )]
    VersionNotPending {
        secret: String,
        token: String,
        stages: String,
    },
    /// The secret has no AWSCURRENT value to rotate from.
    #[error("secret {0} has no AWSCURRENT value")]
    NoCurrentValue(String),
    /// The pending version has no value (testSecret/setSecret before createSecret).
    #[error("secret {secret}: version {token} has no AWSPENDING value")]
    NoPendingValue { secret: String, token: String },
    /// A secret value does not have the shape its policy expects. The reason never quotes it.
    #[error("secret {secret}: {which} value is invalid: {reason}")]
    InvalidSecretValue {
        secret: String,
        which: &'static str,
        reason: String,
    },
    /// A rotation policy (tags or function configuration) is invalid.
    #[error("invalid rotation policy: {0}")]
    InvalidPolicy(String),
    /// The secret names a credential kind Rotor does not know.
    #[error("unsupported credential kind {0:?}")]
    UnsupportedKind(String),
    /// The pending credential failed its test against the target.
    #[error("secret {secret}: pending credential failed its test: {reason}")]
    TestFailed { secret: String, reason: String },
    /// A certificate could not be built or signed (the CA key, the profile, the signature).
    #[error("certificate: {0}")]
    Certificate(String),
    /// The CA is not usable: its certificate is missing, not a CA, expired, or its key is not
    /// an ECC_NIST_P256 signing key. `rotor ca init` sets it up.
    #[error("CA unavailable: {0}")]
    CaUnavailable(String),
    /// testSecret rejected a pending certificate (chain, names, usage, validity, key, or the
    /// mTLS handshake). The reason names the check, never the key.
    #[error("secret {secret}: pending certificate rejected: {reason}")]
    CertificateRejected { secret: String, reason: String },
    /// An AWS call failed.
    #[error("{operation} failed: {message}")]
    Aws {
        operation: &'static str,
        code: String,
        message: String,
        retryable: bool,
    },
    /// Configuration read at start-up is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A local I/O failure (CLI, local stack).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An identity's audit log failed a check Rotor makes before extending it (its head's MAC
    /// does not verify, or a record already sits beyond the head): Rotor refuses to chain new
    /// records onto history it cannot vouch for. Run `verify` to name the problem.
    #[error("audit log of {identity} is tampered: {problem}")]
    AuditTampered { identity: String, problem: String },
    /// A database target failed: unreachable, timed out, refused the credential, TLS, or a
    /// statement failed. The message names the host, role and step, never a password.
    #[error("database {context}: {message}")]
    Database {
        kind: DbFailure,
        context: String,
        message: String,
    },
}

/// What kind of database failure (each a stable `errorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// Could not connect, or it timed out.
    Unreachable,
    /// The server refused the credential.
    AuthFailed,
    /// TLS was required and could not be established or verified.
    Tls,
    /// A statement failed (privilege, missing role, …).
    Statement,
}

impl RotorError {
    /// The stable `errorType` of the Lambda error response (and of logs and metrics).
    pub fn error_type(&self) -> &'static str {
        match self {
            RotorError::InvalidEvent(_) => "InvalidEvent",
            RotorError::UnknownStep(_) => "UnknownStep",
            RotorError::StepNotServed { .. } => "StepNotServed",
            RotorError::InvalidToken(_) => "InvalidToken",
            RotorError::InvalidSecretId(_) => "InvalidSecretId",
            RotorError::SecretNotFound(_) => "SecretNotFound",
            RotorError::TokenNotAVersion { .. } => "TokenNotAVersion",
            RotorError::VersionNotPending { .. } => "VersionNotPending",
            RotorError::NoCurrentValue(_) => "NoCurrentValue",
            RotorError::NoPendingValue { .. } => "NoPendingValue",
            RotorError::InvalidSecretValue { .. } => "InvalidSecretValue",
            RotorError::InvalidPolicy(_) => "InvalidPolicy",
            RotorError::UnsupportedKind(_) => "UnsupportedKind",
            RotorError::TestFailed { .. } => "TestFailed",
            RotorError::Certificate(_) => "CertificateError",
            RotorError::CaUnavailable(_) => "CaUnavailable",
            RotorError::CertificateRejected { .. } => "CertificateRejected",
            RotorError::Aws {
                retryable: true, ..
            } => "AwsTransient",
            RotorError::Aws { .. } => "AwsError",
            RotorError::Config(_) => "ConfigError",
            RotorError::Io { .. } => "IoError",
            RotorError::AuditTampered { .. } => "AuditTampered",
            RotorError::Database { kind, .. } => match kind {
                DbFailure::Unreachable => "DatabaseUnreachable",
                DbFailure::AuthFailed => "DatabaseAuthFailed",
                DbFailure::Tls => "DatabaseTlsFailed",
                DbFailure::Statement => "DatabaseError",
            },
        }
    }

    /// Whether retrying the same step later may succeed (throttling, network, 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RotorError::Aws {
                retryable: true,
                ..
            }
        )
    }

    pub(crate) fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        RotorError::Io {
            context: context.to_string(),
            source,
        }
    }
}

impl From<RotorError> for lambda_runtime::Diagnostic {
    fn from(err: RotorError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: err.error_type().to_string(),
            error_message: err.to_string(),
        }
    }
}

/// Shorthand for results whose error is [`RotorError`].
pub type Result<T, E = RotorError> = std::result::Result<T, E>;
