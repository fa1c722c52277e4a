//! The generic kind: a secret that *is* the credential (an API key, a shared token, a password
//! held by a system Rotor does not reach). The next value comes from the OS CSPRNG under the
//! [`GeneratorPolicy`]; in a JSON secret only the policy's fields change and every other field
//! carries over unchanged. There is no target, so setSecret has nothing to do, and testSecret
//! checks the pending value against the policy and the current value.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::error::{Result, RotorError};
use crate::policy::{GeneratorPolicy, ValueFormat};

use super::{invalid, json_object, Applied, CredentialKind, KindContext};

/// The generic-secret kind.
pub struct Generic;

/// A parsed secret value: a JSON object or plain text. Not `Debug`, so it cannot be logged.
enum Parsed {
    Json(Map<String, Value>),
    Text,
}

fn parse(ctx: &KindContext<'_>, which: &'static str, value: &str) -> Result<Parsed> {
    let as_json = || json_object(value);
    let parsed = match ctx.policy.format {
        ValueFormat::Text => Parsed::Text,
        ValueFormat::Json => Parsed::Json(as_json().map_err(|r| invalid(ctx, which, r))?),
        ValueFormat::Auto => as_json().map(Parsed::Json).unwrap_or(Parsed::Text),
    };
    if let Parsed::Json(m) = &parsed {
        for f in &ctx.policy.fields {
            match m.get(f) {
                Some(Value::String(_)) => {}
                Some(_) => return Err(invalid(ctx, which, format!("field {f:?} is not a string"))),
                None => {
                    return Err(invalid(
                        ctx,
                        which,
                        format!(
                        "field {f:?} is missing (set the rotor:fields tag to the fields to rotate)"
                    ),
                    ))
                }
            }
        }
    }
    Ok(parsed)
}

/// A uniformly random value under `policy`, from the OS CSPRNG: one character of each required
/// class, the rest from the union, then shuffled.
pub fn generate_value(policy: &GeneratorPolicy) -> Result<String> {
    let sets: Vec<Vec<char>> = policy.classes.iter().map(|c| policy.allowed(*c)).collect();
    let all: Vec<char> = sets.iter().flatten().copied().collect();
    let mut rng = OsRandom::default();
    let mut out: Vec<char> = Vec::with_capacity(policy.length);
    for set in &sets {
        out.push(set[rng.below(set.len())?]);
    }
    while out.len() < policy.length {
        out.push(all[rng.below(all.len())?]);
    }
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1)?;
        out.swap(i, j);
    }
    Ok(out.into_iter().collect())
}

/// Uniform integers from the OS CSPRNG, buffered, with rejection sampling (no modulo bias).
#[derive(Default)]
struct OsRandom {
    buf: Vec<u8>,
}

impl OsRandom {
    fn next_u32(&mut self) -> Result<u32> {
        if self.buf.len() < 4 {
            self.buf = vec![0u8; 1024];
            getrandom::fill(&mut self.buf).map_err(|e| {
                RotorError::Config(format!("OS random number generator failed: {e}"))
            })?;
        }
        let tail = self.buf.split_off(self.buf.len() - 4);
        Ok(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]))
    }

    fn below(&mut self, n: usize) -> Result<usize> {
        let n = n as u64;
        let limit = (1u64 << 32) - ((1u64 << 32) % n);
        loop {
            let x = u64::from(self.next_u32()?);
            if x < limit {
                return Ok((x % n) as usize);
            }
        }
    }
}

#[async_trait]
impl CredentialKind for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn has_target(&self) -> bool {
        false
    }

    async fn generate(
        &self,
        ctx: &KindContext<'_>,
        current: &SecretString,
    ) -> Result<SecretString> {
        match parse(ctx, "current", current.expose_secret())? {
            Parsed::Text => Ok(SecretString::from(generate_value(ctx.policy)?)),
            Parsed::Json(mut m) => {
                for f in &ctx.policy.fields {
                    m.insert(f.clone(), Value::String(generate_value(ctx.policy)?));
                }
                serde_json::to_string(&m)
                    .map(SecretString::from)
                    .map_err(|_| invalid(ctx, "pending", "could not be serialised"))
            }
        }
    }

    async fn apply(
        &self,
        _ctx: &KindContext<'_>,
        _pending: &SecretString,
        _current: &SecretString,
    ) -> Result<Applied> {
        Ok(Applied::NoTarget)
    }

    async fn verify(
        &self,
        ctx: &KindContext<'_>,
        pending: &SecretString,
        current: &SecretString,
    ) -> Result<()> {
        let fail = |reason: String| RotorError::TestFailed {
            secret: ctx.meta.arn.clone(),
            reason,
        };
        let cur = parse(ctx, "current", current.expose_secret())?;
        let pen = parse(ctx, "pending", pending.expose_secret())?;
        match (cur, pen) {
            (Parsed::Text, Parsed::Text) => {
                ctx.policy
                    .conforms(pending.expose_secret())
                    .map_err(&fail)?;
                if pending.expose_secret() == current.expose_secret() {
                    return Err(fail("pending value equals the current value".into()));
                }
            }
            (Parsed::Json(c), Parsed::Json(p)) => {
                for f in &ctx.policy.fields {
                    let (Some(Value::String(pv)), Some(cv)) = (p.get(f), c.get(f)) else {
                        return Err(fail(format!("field {f:?} is missing")));
                    };
                    ctx.policy
                        .conforms(pv)
                        .map_err(|r| fail(format!("field {f:?}: {r}")))?;
                    if Some(pv.as_str()) == cv.as_str() {
                        return Err(fail(format!("field {f:?} did not change")));
                    }
                }
                let others = |m: &Map<String, Value>| -> Vec<(String, Value)> {
                    m.iter()
                        .filter(|(k, _)| !ctx.policy.fields.contains(k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                };
                if others(&c) != others(&p) {
                    return Err(fail("fields outside the policy changed".into()));
                }
            }
            _ => return Err(fail("pending and current values differ in format".into())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CharClass;
    use crate::ports::SecretMeta;

    static SECRETS: std::sync::LazyLock<crate::ports::memory::MemorySecrets> =
        std::sync::LazyLock::new(Default::default);
    static SETTINGS: std::sync::LazyLock<crate::kinds::KindSettings> =
        std::sync::LazyLock::new(Default::default);

    fn ctx<'a>(meta: &'a SecretMeta, policy: &'a GeneratorPolicy) -> KindContext<'a> {
        KindContext {
            meta,
            policy,
            secrets: &*SECRETS,
            settings: &SETTINGS,
            signer: None,
        }
    }

    #[test]
    fn generated_values_follow_the_policy() {
        let p = GeneratorPolicy::default();
        for _ in 0..200 {
            let v = generate_value(&p).unwrap();
            p.conforms(&v).unwrap();
            assert!(!v.chars().any(|c| p.exclude.contains(c)));
        }
        let digits = GeneratorPolicy {
            length: 12,
            classes: vec![CharClass::Digit],
            ..Default::default()
        };
        let v = generate_value(&digits).unwrap();
        assert!(v.chars().all(|c| c.is_ascii_digit()) && v.len() == 12);
    }

    #[test]
    fn every_allowed_character_appears() {
        let p = GeneratorPolicy::default();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            seen.extend(generate_value(&p).unwrap().chars());
        }
        let allowed: usize = p.classes.iter().map(|c| p.allowed(*c).len()).sum();
        assert_eq!(seen.len(), allowed);
    }

    #[tokio::test]
    async fn json_rotates_only_named_fields() {
        let meta = SecretMeta::default();
        let p = GeneratorPolicy::default();
        let cur = SecretString::from(
            r#"{"username":"app","password":"old","port":5432,"nested":{"a":[1,2]}}"#.to_string(),
        );
        let next = Generic.generate(&ctx(&meta, &p), &cur).await.unwrap();
        let v: Value = serde_json::from_str(next.expose_secret()).unwrap();
        assert_eq!(v["username"], "app");
        assert_eq!(v["port"], 5432);
        assert_eq!(v["nested"]["a"][1], 2);
        assert_ne!(v["password"], "old");
        Generic.verify(&ctx(&meta, &p), &next, &cur).await.unwrap();
    }

    #[tokio::test]
    async fn verify_catches_bad_pending_values() {
        let meta = SecretMeta::default();
        let p = GeneratorPolicy::default();
        let cur = SecretString::from(r#"{"user":"a","password":"x"}"#.to_string());
        for bad in [
            r#"{"user":"a","password":"short"}"#,
            r#"{"user":"b","password":"Abcdefgh1!Abcdefgh1!Abcdefgh1!ab"}"#,
            r#"{"user":"a"}"#,
            "not json",
        ] {
            let err = Generic
                .verify(&ctx(&meta, &p), &SecretString::from(bad.to_string()), &cur)
                .await
                .unwrap_err();
            assert!(
                matches!(err.error_type(), "TestFailed" | "InvalidSecretValue"),
                "{bad}"
            );
            assert!(!err.to_string().contains("Abcdefgh1"));
        }
    }

    #[tokio::test]
    async fn malformed_json_errors_do_not_quote_the_value() {
        let meta = SecretMeta::default();
        let p = GeneratorPolicy {
            format: ValueFormat::Json,
            ..Default::default()
        };
        let cur = SecretString::from(r#"{"password": "hunter2-very-secret""#.to_string());
        let err = Generic.generate(&ctx(&meta, &p), &cur).await.err().unwrap();
        assert_eq!(err.error_type(), "InvalidSecretValue");
        assert!(!err.to_string().contains("hunter2"));
    }
}
