//! The notify port: alerts that a person must see (a rotation failed and was rolled back).

use async_trait::async_trait;
use serde::Serialize;

use crate::error::Result;

/// A failed rotation, as published to the alert topic and the event bus. Holds no values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub identity_id: String,
    pub secret_arn: String,
    pub token: String,
    pub owner: String,
    pub tier: String,
    pub error_type: String,
    pub error_message: String,
    pub failure_count: u32,
    pub status: String,
    pub next_due_at: i64,
}

/// Where alerts go.
///
/// Contract: `alert` delivers to every configured channel and fails only if all fail.
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn alert(&self, alert: &Alert) -> Result<()>;
}
