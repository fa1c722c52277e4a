//! The custody port on AWS KMS: the audit head's HMAC-SHA-256 with a `HMAC_256` /
//! `GENERATE_VERIFY_MAC` key whose material never leaves KMS (`GenerateMac`, `VerifyMac`), and
//! [`create_mac_key`] to make that key (`rotor init`, tests).

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MacAlgorithmSpec};
use aws_sdk_kms::Client;

use crate::error::{Result, RotorError};
use crate::ports::custody::Custody;

use super::aws::ApiCallCounter;
use super::secretsmanager::aws_error;

/// The description [`create_mac_key`] gives the audit MAC key.
pub const MAC_KEY_DESCRIPTION: &str = "Rotor audit MAC key";

/// Length of an HMAC-SHA-256 tag. Any other length is a wrong MAC, answered without a call.
const HMAC_SHA256_LEN: usize = 32;

/// KMS through the AWS SDK, holding the id (or ARN or alias) of the audit MAC key. Build once
/// per process and share.
#[derive(Debug, Clone)]
pub struct KmsCustody {
    client: Client,
    mac_key_id: String,
}

impl KmsCustody {
    /// A KMS client from the shared SDK configuration, counting calls with `counter` if given.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        mac_key_id: impl Into<String>,
        counter: Option<ApiCallCounter>,
    ) -> Self {
        KmsCustody {
            client: client(sdk, counter),
            mac_key_id: mac_key_id.into(),
        }
    }

    /// The audit MAC key this custody uses.
    pub fn mac_key_id(&self) -> &str {
        &self.mac_key_id
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn client(sdk: &aws_config::SdkConfig, counter: Option<ApiCallCounter>) -> Client {
    let mut b = aws_sdk_kms::config::Builder::from(sdk);
    if let Some(c) = counter {
        b = b.interceptor(c);
    }
    Client::from_conf(b.build())
}

/// Creates a KMS `HMAC_256` key for `GENERATE_VERIFY_MAC` described as
/// [`MAC_KEY_DESCRIPTION`] and returns its key id.
pub async fn create_mac_key(sdk: &aws_config::SdkConfig) -> Result<String> {
    let out = client(sdk, None)
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .description(MAC_KEY_DESCRIPTION)
        .send()
        .await
        .map_err(|e| aws_error("CreateKey", e))?;
    match out.key_metadata() {
        Some(m) if !m.key_id().is_empty() => Ok(m.key_id().to_string()),
        _ => Err(RotorError::Aws {
            operation: "CreateKey",
            code: "MissingKeyMetadata".into(),
            message: "CreateKey answered without a key id".into(),
            retryable: false,
        }),
    }
}

fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

#[async_trait]
impl Custody for KmsCustody {
    async fn mac(&self, message: &[u8]) -> Result<Vec<u8>> {
        let out = self
            .client
            .generate_mac()
            .key_id(&self.mac_key_id)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(message))
            .send()
            .await
            .map_err(|e| aws_error("GenerateMac", e))?;
        match out.mac {
            Some(mac) if !mac.as_ref().is_empty() => Ok(mac.into_inner()),
            _ => Err(RotorError::Aws {
                operation: "GenerateMac",
                code: "MissingMac".into(),
                message: "GenerateMac answered without a MAC".into(),
                retryable: false,
            }),
        }
    }

    async fn verify_mac(&self, message: &[u8], mac: &[u8]) -> Result<bool> {
        if mac.len() != HMAC_SHA256_LEN {
            return Ok(false);
        }
        match self
            .client
            .verify_mac()
            .key_id(&self.mac_key_id)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(message))
            .mac(Blob::new(mac))
            .send()
            .await
        {
            Ok(out) => Ok(out.mac_valid()),
            // AWS answers a wrong MAC with this error rather than `MacValid: false`.
            Err(e) if code_of(&e) == Some("KMSInvalidMacException") => Ok(false),
            Err(e) => Err(aws_error("VerifyMac", e)),
        }
    }
}
