//! In-memory fakes of the ports, with Secrets Manager's staging-label semantics, for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Result, RotorError};
use crate::event::SecretId;
use crate::ports::secrets::{PutOutcome, SecretMeta, SecretStore, AWSCURRENT, AWSPREVIOUS};

#[derive(Default)]
struct Entry {
    meta: SecretMeta,
    values: BTreeMap<String, String>,
}

/// A Secrets Manager stand-in holding secrets in memory.
#[derive(Default)]
pub struct MemorySecrets {
    secrets: Mutex<BTreeMap<String, Entry>>,
}

impl MemorySecrets {
    /// Creates a secret whose first version `v1` is AWSCURRENT.
    pub fn create(&self, name: &str, value: &str, tags: &[(&str, &str)]) {
        let mut e = Entry::default();
        e.meta.name = name.to_string();
        e.meta.arn = format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}");
        e.meta.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        e.meta
            .versions
            .insert("v1".into(), vec![AWSCURRENT.to_string()]);
        e.values.insert("v1".into(), value.to_string());
        self.lock().insert(name.to_string(), e);
    }

    /// Stages `version_id` AWSPENDING with no value, as `RotateSecret` does.
    pub fn stage_empty_pending(&self, name: &str, version_id: &str) {
        let mut g = self.lock();
        if let Some(e) = g.get_mut(name) {
            detach(&mut e.meta, crate::ports::AWSPENDING);
            e.meta
                .versions
                .insert(version_id.into(), vec![crate::ports::AWSPENDING.into()]);
        }
    }

    /// The plain value of a version (test helper).
    pub fn value_of(&self, name: &str, version_id: &str) -> Option<String> {
        self.lock().get(name)?.values.get(version_id).cloned()
    }

    /// A snapshot of the metadata (test helper).
    pub fn meta(&self, name: &str) -> Option<SecretMeta> {
        self.lock().get(name).map(|e| e.meta.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn detach(meta: &mut SecretMeta, stage: &str) {
    for s in meta.versions.values_mut() {
        s.retain(|x| x != stage);
    }
}

fn key(secret: &str) -> &str {
    secret.rsplit(':').next().unwrap_or(secret)
}

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn describe(&self, id: &SecretId) -> Result<SecretMeta> {
        self.lock()
            .get(key(id.as_str()))
            .map(|e| e.meta.clone())
            .ok_or_else(|| RotorError::SecretNotFound(id.to_string()))
    }

    async fn get_value(
        &self,
        secret: &str,
        version_id: Option<&str>,
        stage: &str,
    ) -> Result<Option<SecretString>> {
        let g = self.lock();
        let e = g
            .get(key(secret))
            .ok_or_else(|| RotorError::SecretNotFound(secret.to_string()))?;
        let v = match version_id {
            Some(v) if e.meta.has_stage(v, stage) => Some(v.to_string()),
            Some(_) => None,
            None => e.meta.version_with(stage).map(str::to_string),
        };
        Ok(v.and_then(|v| e.values.get(&v).cloned().map(SecretString::from)))
    }

    async fn put_pending(
        &self,
        secret: &str,
        version_id: &str,
        value: &SecretString,
    ) -> Result<PutOutcome> {
        let mut g = self.lock();
        let e = g
            .get_mut(key(secret))
            .ok_or_else(|| RotorError::SecretNotFound(secret.to_string()))?;
        if e.values.contains_key(version_id) {
            return Ok(PutOutcome::AlreadyExists);
        }
        detach(&mut e.meta, crate::ports::AWSPENDING);
        e.meta
            .versions
            .insert(version_id.into(), vec![crate::ports::AWSPENDING.into()]);
        e.values
            .insert(version_id.into(), value.expose_secret().to_string());
        Ok(PutOutcome::Created)
    }

    async fn update_stage(
        &self,
        secret: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<()> {
        let mut g = self.lock();
        let e = g
            .get_mut(key(secret))
            .ok_or_else(|| RotorError::SecretNotFound(secret.to_string()))?;
        if let Some(from) = remove_from {
            if let Some(s) = e.meta.versions.get_mut(from) {
                s.retain(|x| x != stage);
                if stage == AWSCURRENT {
                    detach(&mut e.meta, AWSPREVIOUS);
                    if let Some(s) = e.meta.versions.get_mut(from) {
                        s.push(AWSPREVIOUS.into());
                    }
                }
            }
        }
        if let Some(to) = move_to {
            detach(&mut e.meta, stage);
            e.meta
                .versions
                .entry(to.to_string())
                .or_default()
                .push(stage.to_string());
        }
        Ok(())
    }
}
