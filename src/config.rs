//! Configuration, read once from the environment when a function or the CLI starts.

use crate::error::{Result, RotorError};
use crate::fleet::FleetSettings;
use crate::policy::GeneratorPolicy;

/// Everything Rotor reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Generator defaults (`ROTOR_PASSWORD_LENGTH`, `ROTOR_REQUIRE`, `ROTOR_EXCLUDE_CHARACTERS`,
    /// `ROTOR_FIELDS`, `ROTOR_FORMAT`); each secret's `rotor:*` tags override them.
    pub policy: GeneratorPolicy,
    /// `ROTOR_INVENTORY_TABLE`: the inventory table.
    pub inventory_table: Option<String>,
    /// `ROTOR_AUDIT_TABLE`: the audit log table.
    pub audit_table: Option<String>,
    /// `ROTOR_AUDIT_MAC_KEY_ID`: the KMS HMAC key (id, ARN or alias) that MACs audit heads.
    pub audit_mac_key_id: Option<String>,
    /// `ROTOR_ALERT_TOPIC_ARN`: SNS topic for failed-rotation alerts.
    pub alert_topic_arn: Option<String>,
    /// `ROTOR_EVENT_BUS`: EventBridge bus for `Rotation Failed` events (default `default`;
    /// `none` turns events off).
    pub event_bus: Option<String>,
    /// `ROTOR_MAX_FAILURES` (default 3) and `ROTOR_LEASE_SECONDS` (default 900).
    pub fleet: FleetSettings,
    /// `ROTOR_BATCH_SIZE`: identities one plan leases at most (default 50).
    pub batch_size: usize,
    /// `ROTOR_TIER_DAYS`: tier intervals in days (`critical=1,high=7,standard=30,low=90`).
    pub tier_days: [u32; 4],
    /// Kind settings: `ROTOR_DB_CA_BUNDLE`, `ROTOR_DB_TIMEOUT_SECONDS` (default 5),
    /// `ROTOR_CA_KEY_ID`, `ROTOR_CA_CERT_SECRET`, `ROTOR_CERT_VALIDITY` (default 24h).
    pub kinds: crate::kinds::KindSettings,
}

impl Config {
    /// Reads the process environment. An invalid value is a `ConfigError` naming the variable.
    pub fn from_env() -> Result<Config> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let policy = GeneratorPolicy::from_env(&lookup)
            .map_err(|e| RotorError::Config(format!("ROTOR_* generator settings: {e}")))?;
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let number = |k: &str, default: u64| -> Result<u64> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        RotorError::Config(format!("{k}={v:?} is not a positive whole number"))
                    }),
            }
        };
        let event_bus = match get("ROTOR_EVENT_BUS") {
            Some(b) if b == "none" => None,
            Some(b) => Some(b),
            None => Some("default".to_string()),
        };
        Ok(Config {
            policy,
            inventory_table: get("ROTOR_INVENTORY_TABLE"),
            audit_table: get("ROTOR_AUDIT_TABLE"),
            audit_mac_key_id: get("ROTOR_AUDIT_MAC_KEY_ID"),
            alert_topic_arn: get("ROTOR_ALERT_TOPIC_ARN"),
            event_bus,
            fleet: FleetSettings {
                max_failures: number("ROTOR_MAX_FAILURES", 3)? as u32,
                lease_seconds: number("ROTOR_LEASE_SECONDS", 900)? as i64,
            },
            batch_size: number("ROTOR_BATCH_SIZE", 50)? as usize,
            tier_days: crate::inventory::parse_tier_days(
                &get("ROTOR_TIER_DAYS").unwrap_or_default(),
            )
            .map_err(|e| RotorError::Config(format!("ROTOR_TIER_DAYS: {e}")))?,
            kinds: crate::kinds::KindSettings {
                ca_bundle: get("ROTOR_DB_CA_BUNDLE").map(std::path::PathBuf::from),
                db_timeout: std::time::Duration::from_secs(number("ROTOR_DB_TIMEOUT_SECONDS", 5)?),
                ca_key_id: get("ROTOR_CA_KEY_ID")
                    .unwrap_or_else(|| crate::ca::DEFAULT_CA_KEY.into()),
                ca_cert_secret: get("ROTOR_CA_CERT_SECRET")
                    .unwrap_or_else(|| crate::ca::DEFAULT_CA_CERT_SECRET.into()),
                cert_validity: match get("ROTOR_CERT_VALIDITY") {
                    None => std::time::Duration::from_secs(24 * 3600),
                    Some(v) => crate::kinds::x509::parse_validity(&v)
                        .map_err(|e| RotorError::Config(format!("ROTOR_CERT_VALIDITY: {e}")))?,
                },
            },
        })
    }

    /// The same configuration with the local-stack defaults filled in where unset (the CLI):
    /// tables `rotor-inventory` / `rotor-audit`, MAC key `alias/rotor-audit`.
    pub fn with_local_defaults(mut self) -> Config {
        self.inventory_table
            .get_or_insert_with(|| "rotor-inventory".into());
        self.audit_table.get_or_insert_with(|| "rotor-audit".into());
        self.audit_mac_key_id
            .get_or_insert_with(|| "alias/rotor-audit".into());
        self
    }

    /// Whether inventory, audit and the MAC key are all configured (fleet mode).
    pub fn fleet_configured(&self) -> bool {
        self.inventory_table.is_some()
            && self.audit_table.is_some()
            && self.audit_mac_key_id.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fleet_settings_and_rejects_bad_numbers() {
        let c = Config::from_lookup(|k| match k {
            "ROTOR_INVENTORY_TABLE" => Some("inv".into()),
            "ROTOR_MAX_FAILURES" => Some("5".into()),
            "ROTOR_EVENT_BUS" => Some("none".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.inventory_table.as_deref(), Some("inv"));
        assert_eq!(c.fleet.max_failures, 5);
        assert_eq!(c.event_bus, None);
        assert!(!c.fleet_configured());
        let err =
            Config::from_lookup(|k| (k == "ROTOR_BATCH_SIZE").then(|| "lots".into())).unwrap_err();
        assert_eq!(err.error_type(), "ConfigError");
        assert!(err.to_string().contains("ROTOR_BATCH_SIZE"));
        let c = Config::from_lookup(|k| (k == "ROTOR_TIER_DAYS").then(|| "high=3, low=180".into()))
            .unwrap();
        assert_eq!(c.tier_days, [1, 3, 30, 180]);
        for bad in ["high", "gold=3", "low=0", "low=x"] {
            let err =
                Config::from_lookup(|k| (k == "ROTOR_TIER_DAYS").then(|| bad.into())).unwrap_err();
            assert!(err.to_string().contains("ROTOR_TIER_DAYS"), "{bad}: {err}");
        }
    }
}
