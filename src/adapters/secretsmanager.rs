//! The secrets port on AWS Secrets Manager.

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::Client;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Result, RotorError};
use crate::event::SecretId;
use crate::ports::secrets::{PutOutcome, SecretMeta, SecretStore, AWSPENDING};

use super::aws::ApiCallCounter;

/// Secrets Manager through the AWS SDK. Build once per process and share.
#[derive(Debug, Clone)]
pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    pub fn new(sdk: &aws_config::SdkConfig, counter: Option<ApiCallCounter>) -> Self {
        let mut b = aws_sdk_secretsmanager::config::Builder::from(sdk);
        if let Some(c) = counter {
            b = b.interceptor(c);
        }
        SecretsManager {
            client: Client::from_conf(b.build()),
        }
    }

    /// The underlying client (for the CLI's demo seeding).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Maps an SDK error to [`RotorError::Aws`] with the service's code and message; the request
/// that failed never carried a value the message could echo except `PutSecretValue`, whose
/// message is replaced by the code alone.
pub fn aws_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> RotorError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message, retryable) = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().unwrap_or("Unknown").to_string();
            let retryable = matches!(
                code.as_str(),
                "ThrottlingException"
                    | "Throttling"
                    | "TooManyRequestsException"
                    | "InternalServiceError"
                    | "InternalFailure"
                    | "ServiceUnavailable"
                    | "RequestLimitExceeded"
            );
            let msg = if operation == "PutSecretValue" {
                code.clone()
            } else {
                format!("{code}: {}", e.message().unwrap_or(""))
            };
            (code, msg, retryable)
        }
        SdkError::TimeoutError(_) => ("Timeout".into(), "request timed out".into(), true),
        SdkError::DispatchFailure(d) => (
            "DispatchFailure".into(),
            if d.is_timeout() {
                "connection timed out".into()
            } else if d.is_io() {
                "could not reach the endpoint (connection failed)".into()
            } else {
                "could not send the request".into()
            },
            true,
        ),
        SdkError::ResponseError(_) => ("ResponseError".into(), "unreadable response".into(), true),
        SdkError::ConstructionFailure(_) => (
            "ConstructionFailure".into(),
            "request could not be built".into(),
            false,
        ),
        _ => ("Unknown".into(), "unknown SDK error".into(), false),
    };
    RotorError::Aws {
        operation,
        code,
        message,
        retryable,
    }
}

fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

#[async_trait]
impl SecretStore for SecretsManager {
    async fn describe(&self, id: &SecretId) -> Result<SecretMeta> {
        let out = match self
            .client
            .describe_secret()
            .secret_id(id.as_str())
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => {
                return Err(RotorError::SecretNotFound(id.to_string()))
            }
            Err(e) => return Err(aws_error("DescribeSecret", e)),
        };
        if out.deleted_date().is_some() {
            return Err(RotorError::SecretNotFound(format!(
                "{id} (marked for deletion)"
            )));
        }
        Ok(SecretMeta {
            arn: out.arn().unwrap_or(id.as_str()).to_string(),
            name: out.name().unwrap_or_default().to_string(),
            versions: out
                .version_ids_to_stages()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            tags: out
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
        })
    }

    async fn get_value(
        &self,
        secret: &str,
        version_id: Option<&str>,
        stage: &str,
    ) -> Result<Option<SecretString>> {
        let out = match self
            .client
            .get_secret_value()
            .secret_id(secret)
            .set_version_id(version_id.map(str::to_string))
            .version_stage(stage)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(aws_error("GetSecretValue", e)),
        };
        match (out.secret_string, out.secret_binary) {
            (Some(s), _) => Ok(Some(SecretString::from(s))),
            (None, Some(_)) => Err(RotorError::InvalidSecretValue {
                secret: secret.to_string(),
                which: if stage == AWSPENDING {
                    "pending"
                } else {
                    "current"
                },
                reason: "binary secrets are not supported; store a string".into(),
            }),
            (None, None) => Ok(None),
        }
    }

    async fn put_pending(
        &self,
        secret: &str,
        version_id: &str,
        value: &SecretString,
    ) -> Result<PutOutcome> {
        match self
            .client
            .put_secret_value()
            .secret_id(secret)
            .client_request_token(version_id)
            .secret_string(value.expose_secret())
            .version_stages(AWSPENDING)
            .send()
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if code_of(&e) == Some("ResourceExistsException") => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(aws_error("PutSecretValue", e)),
        }
    }

    async fn update_stage(
        &self,
        secret: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<()> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret)
            .version_stage(stage)
            .set_move_to_version_id(move_to.map(str::to_string))
            .set_remove_from_version_id(remove_from.map(str::to_string))
            .send()
            .await
            .map_err(|e| aws_error("UpdateSecretVersionStage", e))?;
        Ok(())
    }
}
