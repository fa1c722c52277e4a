//! The registration manifest: a JSON file in the user's repo listing the identities Rotor
//! manages. Parsed and validated here before anything is written.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, RotorError};
use crate::inventory::{validate_id, Status, Tier, Window};

/// One identity as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    #[serde(default = "generic")]
    pub kind: String,
    /// Secret name or ARN.
    pub secret: String,
    pub owner: String,
    #[serde(default)]
    pub tier: Tier,
    #[serde(default)]
    pub interval_days: Option<u32>,
    #[serde(default)]
    pub window: Option<Window>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub privileges: Vec<String>,
    #[serde(default)]
    pub status: Status,
}

fn generic() -> String {
    "generic".into()
}

/// A whole manifest: `{"identities": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub identities: Vec<Entry>,
}

impl Entry {
    /// Hash of everything the manifest says about this identity: equal hashes mean "unchanged".
    pub fn registration_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    }

    fn validate(&self) -> Result<()> {
        validate_id(&self.id)?;
        let bad = |what: String| RotorError::InvalidPolicy(format!("identity {}: {what}", self.id));
        if self.secret.is_empty() || self.secret.len() > 2048 {
            return Err(bad("secret must be a secret name or ARN".into()));
        }
        if self.owner.trim().is_empty() {
            return Err(bad("owner is required".into()));
        }
        if let Some(d) = self.interval_days {
            if !(1..=3650).contains(&d) {
                return Err(bad(format!("interval_days {d} must be 1–3650")));
            }
        }
        if let Some(w) = self.window {
            w.validate()?;
        }
        if self.status == Status::Failing {
            return Err(bad(
                "status failing is set by Rotor, not by a manifest".into()
            ));
        }
        if !crate::kinds::KINDS.iter().any(|k| k.name() == self.kind) {
            return Err(RotorError::UnsupportedKind(self.kind.clone()));
        }
        Ok(())
    }
}

impl Manifest {
    /// Parses and validates a manifest (unique ids, known kinds and tiers, sane windows).
    pub fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| RotorError::InvalidPolicy(format!("manifest: {e}")))?;
        let mut seen = BTreeSet::new();
        for e in &m.identities {
            e.validate()?;
            if !seen.insert(e.id.as_str()) {
                return Err(RotorError::InvalidPolicy(format!(
                    "manifest: identity {} is listed twice",
                    e.id
                )));
            }
        }
        Ok(m)
    }

    /// Reads and parses a manifest file.
    pub fn load(path: &std::path::Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RotorError::io(format!("reading manifest {}", path.display()), e))?;
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_rejects_bad_entries() {
        let m = Manifest::parse(r#"{"identities":[{"id":"a","secret":"s","owner":"o"}]}"#).unwrap();
        assert_eq!(m.identities[0].tier, Tier::Standard);
        assert_eq!(m.identities[0].kind, "generic");
        for bad in [
            r#"{"identities":[{"id":"a","secret":"s","owner":"o"},{"id":"a","secret":"t","owner":"o"}]}"#,
            r#"{"identities":[{"id":"a b","secret":"s","owner":"o"}]}"#,
            r#"{"identities":[{"id":"a","secret":"s","owner":"o","tier":"extreme"}]}"#,
            r#"{"identities":[{"id":"a","secret":"s","owner":"o","window":{"start_hour":3,"end_hour":3}}]}"#,
            r#"{"identities":[{"id":"a","secret":"s","owner":"o","kind":"quantum"}]}"#,
            r#"{"identities":[{"id":"a","secret":"s","owner":"o","colour":"red"}]}"#,
            r#"{"identities":[{"id":"a","secret":"s","owner":""}]}"#,
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_changes_with_any_field() {
        let m = Manifest::parse(r#"{"identities":[{"id":"a","secret":"s","owner":"o"}]}"#).unwrap();
        let mut e = m.identities[0].clone();
        let h = e.registration_hash();
        assert_eq!(h, m.identities[0].registration_hash());
        e.tier = Tier::High;
        assert_ne!(h, e.registration_hash());
    }
}
