//! AWS adapters of the ports, one per port, plus the shared SDK set-up (retry, timeouts, an
//! API-call counter).

pub mod aws;
pub mod secretsmanager;

pub use aws::{load_sdk_config, ApiCallCounter};
pub use secretsmanager::SecretsManager;
