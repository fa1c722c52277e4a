//! AWS adapters of the ports, one per port, plus the shared SDK set-up (retry, timeouts, an
//! API-call counter).

pub mod aws;
pub mod dynamodb_audit;
pub mod dynamodb_inventory;
pub mod kms;
pub mod notify;
pub mod secretsmanager;

pub use aws::{load_sdk_config, ApiCallCounter};
pub use dynamodb_audit::DynamoAudit;
pub use dynamodb_inventory::DynamoInventory;
pub use kms::{KmsCaSigner, KmsCustody};
pub use notify::AwsNotifier;
pub use secretsmanager::SecretsManager;

/// The rotation steps on AWS: Secrets Manager (`secrets`) and the CA signer on KMS, configured
/// from `config`.
pub fn rotator(
    config: &crate::config::Config,
    sdk: &aws_config::SdkConfig,
    secrets: std::sync::Arc<SecretsManager>,
    counter: Option<ApiCallCounter>,
) -> crate::steps::Rotator {
    crate::steps::Rotator::from_config(secrets, config)
        .with_signer(std::sync::Arc::new(KmsCaSigner::new(sdk, counter)))
}

/// Builds a [`crate::fleet::Fleet`] on AWS from configuration: Secrets Manager, the inventory
/// and audit tables, the KMS MAC key, SNS and EventBridge. Needs `config.fleet_configured()`.
pub fn wire_fleet(
    config: &crate::config::Config,
    sdk: &aws_config::SdkConfig,
    counter: Option<ApiCallCounter>,
    metrics: crate::metrics::Metrics,
) -> crate::error::Result<crate::fleet::Fleet> {
    use std::sync::Arc;
    let missing = |v: &str| crate::error::RotorError::Config(format!("{v} is not set"));
    let inventory_table = config
        .inventory_table
        .clone()
        .ok_or_else(|| missing("ROTOR_INVENTORY_TABLE"))?;
    let audit_table = config
        .audit_table
        .clone()
        .ok_or_else(|| missing("ROTOR_AUDIT_TABLE"))?;
    let key = config
        .audit_mac_key_id
        .clone()
        .ok_or_else(|| missing("ROTOR_AUDIT_MAC_KEY_ID"))?;
    let secrets = Arc::new(SecretsManager::new(sdk, counter.clone()));
    let custody: Arc<dyn crate::ports::Custody> =
        Arc::new(KmsCustody::new(sdk, key, counter.clone()));
    let rotator = rotator(config, sdk, secrets.clone(), counter.clone());
    Ok(crate::fleet::Fleet {
        secrets: secrets.clone(),
        inventory: Arc::new(DynamoInventory::new(sdk, inventory_table, counter.clone())),
        audit: Arc::new(DynamoAudit::new(sdk, audit_table, custody, counter.clone())),
        notifier: Arc::new(AwsNotifier::new(
            sdk,
            config.alert_topic_arn.clone(),
            config.event_bus.clone(),
            counter,
        )),
        rotator,
        metrics,
        settings: config.fleet.clone(),
    })
}
