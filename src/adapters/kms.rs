//! The custody ports on AWS KMS: the audit head's HMAC-SHA-256 with a `HMAC_256` /
//! `GENERATE_VERIFY_MAC` key whose material never leaves KMS (`GenerateMac`, `VerifyMac`), the
//! CA signer (`Sign` RAW / `GetPublicKey` on an `ECC_NIST_P256` key), and [`create_mac_key`] /
//! [`ensure_ca_key`] to make those keys (`rotor init`, `rotor ca init`, tests).

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    KeySpec, KeyUsageType, MacAlgorithmSpec, MessageType, SigningAlgorithmSpec,
};
use aws_sdk_kms::Client;

use crate::error::{Result, RotorError};
use crate::ports::custody::{CaSigner, Custody};

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

/// The CA signer on KMS: `Sign` (`ECDSA_SHA_256`, `MessageType RAW` — KMS hashes the message)
/// and `GetPublicKey` on an `ECC_NIST_P256` / `SIGN_VERIFY` key. Build once per process.
#[derive(Debug, Clone)]
pub struct KmsCaSigner {
    client: Client,
}

/// KMS limits `MessageType RAW` messages to 4096 bytes; a to-be-signed certificate is far
/// smaller, and a larger one is refused before the call.
const RAW_MESSAGE_LIMIT: usize = 4096;

impl KmsCaSigner {
    pub fn new(sdk: &aws_config::SdkConfig, counter: Option<ApiCallCounter>) -> Self {
        KmsCaSigner {
            client: client(sdk, counter),
        }
    }
}

#[async_trait]
impl CaSigner for KmsCaSigner {
    async fn public_key(&self, key_id: &str) -> Result<Vec<u8>> {
        let out = self
            .client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| aws_error("GetPublicKey", e))?;
        // moto answers with the older `CustomerMasterKeySpec` only; AWS sends both.
        #[allow(deprecated)]
        let p256 = out.key_spec() == Some(&KeySpec::EccNistP256)
            || out.customer_master_key_spec()
                == Some(&aws_sdk_kms::types::CustomerMasterKeySpec::EccNistP256);
        if out.key_usage() != Some(&KeyUsageType::SignVerify) || !p256 {
            return Err(RotorError::CaUnavailable(format!(
                "KMS key {key_id} is not an ECC_NIST_P256 SIGN_VERIFY key"
            )));
        }
        match out.public_key {
            Some(k) if !k.as_ref().is_empty() => Ok(k.into_inner()),
            _ => Err(RotorError::CaUnavailable(format!(
                "KMS key {key_id} has no public key"
            ))),
        }
    }

    async fn sign(&self, key_id: &str, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > RAW_MESSAGE_LIMIT {
            return Err(RotorError::Certificate(format!(
                "to-be-signed certificate is {} bytes; KMS signs at most {RAW_MESSAGE_LIMIT}",
                message.len()
            )));
        }
        let out = self
            .client
            .sign()
            .key_id(key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| aws_error("Sign", e))?;
        match out.signature {
            Some(s) if !s.as_ref().is_empty() => Ok(s.into_inner()),
            _ => Err(RotorError::Aws {
                operation: "Sign",
                code: "MissingSignature".into(),
                message: "Sign answered without a signature".into(),
                retryable: false,
            }),
        }
    }
}

/// The description [`ensure_ca_key`] gives a CA key it creates.
pub const CA_KEY_DESCRIPTION: &str = "Rotor CA signing key (private key never leaves KMS)";

/// The CA key: `key` if it names an existing key (id, ARN or alias), else — when `key` is an
/// alias — a new `ECC_NIST_P256` / `SIGN_VERIFY` key given that alias. Returns the key ARN and
/// whether it was created. An existing key of another spec or usage is `CaUnavailable`.
pub async fn ensure_ca_key(sdk: &aws_config::SdkConfig, key: &str) -> Result<(String, bool)> {
    let c = client(sdk, None);
    match c.describe_key().key_id(key).send().await {
        Ok(out) => {
            let m = out.key_metadata().ok_or_else(|| RotorError::Aws {
                operation: "DescribeKey",
                code: "MissingKeyMetadata".into(),
                message: "DescribeKey answered without metadata".into(),
                retryable: false,
            })?;
            if m.key_spec() != Some(&KeySpec::EccNistP256)
                || m.key_usage() != Some(&KeyUsageType::SignVerify)
            {
                return Err(RotorError::CaUnavailable(format!(
                    "KMS key {key} exists but is not an ECC_NIST_P256 SIGN_VERIFY key"
                )));
            }
            Ok((m.arn().unwrap_or(m.key_id()).to_string(), false))
        }
        Err(e) if code_of(&e) == Some("NotFoundException") && key.starts_with("alias/") => {
            let out = c
                .create_key()
                .key_spec(KeySpec::EccNistP256)
                .key_usage(KeyUsageType::SignVerify)
                .description(CA_KEY_DESCRIPTION)
                .tags(
                    aws_sdk_kms::types::Tag::builder()
                        .tag_key("rotor:role")
                        .tag_value("ca")
                        .build()
                        .map_err(|e| RotorError::Config(format!("KMS tag: {e}")))?,
                )
                .send()
                .await
                .map_err(|e| aws_error("CreateKey", e))?;
            let m = out.key_metadata().ok_or_else(|| RotorError::Aws {
                operation: "CreateKey",
                code: "MissingKeyMetadata".into(),
                message: "CreateKey answered without metadata".into(),
                retryable: false,
            })?;
            c.create_alias()
                .alias_name(key)
                .target_key_id(m.key_id())
                .send()
                .await
                .map_err(|e| aws_error("CreateAlias", e))?;
            Ok((m.arn().unwrap_or(m.key_id()).to_string(), true))
        }
        Err(e) => Err(aws_error("DescribeKey", e)),
    }
}
