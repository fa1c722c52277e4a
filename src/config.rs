//! Configuration, read once from the environment when a function or the CLI starts.

use crate::error::Result;
use crate::policy::GeneratorPolicy;

/// Everything Rotor reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Generator defaults (`ROTOR_PASSWORD_LENGTH`, `ROTOR_REQUIRE`, `ROTOR_EXCLUDE_CHARACTERS`,
    /// `ROTOR_FIELDS`, `ROTOR_FORMAT`); each secret's `rotor:*` tags override them.
    pub policy: GeneratorPolicy,
}

impl Config {
    /// Reads the process environment. An invalid value is a `ConfigError` naming the variable.
    pub fn from_env() -> Result<Config> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let policy = GeneratorPolicy::from_env(&lookup).map_err(|e| {
            crate::error::RotorError::Config(format!("ROTOR_* generator settings: {e}"))
        })?;
        Ok(Config { policy })
    }
}
