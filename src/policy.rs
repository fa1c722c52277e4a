//! Rotation policy: how the next credential of a generic secret is generated. Defaults come from
//! the function's configuration (environment, read once at start), and each secret may override
//! them with `rotor:*` tags. Risk tiers and schedules join this module with the inventory.

use std::collections::BTreeMap;

use crate::error::{Result, RotorError};

/// Characters AWS's rotation templates exclude by default.
pub const DEFAULT_EXCLUDE: &str = ":/@\"'\\";
/// Default generated length.
pub const DEFAULT_LENGTH: usize = 32;
/// Longest value Rotor generates for one field.
pub const MAX_LENGTH: usize = 4096;

/// A class of characters a generated value draws from; every class in a policy is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CharClass {
    Lower,
    Upper,
    Digit,
    Symbol,
}

impl CharClass {
    pub fn chars(self) -> &'static str {
        match self {
            CharClass::Lower => "abcdefghijklmnopqrstuvwxyz",
            CharClass::Upper => "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            CharClass::Digit => "0123456789",
            CharClass::Symbol => "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        }
    }

    fn parse(s: &str) -> Result<CharClass> {
        match s.trim() {
            "lower" => Ok(CharClass::Lower),
            "upper" => Ok(CharClass::Upper),
            "digit" => Ok(CharClass::Digit),
            "symbol" => Ok(CharClass::Symbol),
            other => Err(RotorError::InvalidPolicy(format!(
                "unknown character class {other:?} (use lower, upper, digit, symbol)"
            ))),
        }
    }
}

/// How a secret's value is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// A JSON object if the current value is one, otherwise plain text.
    Auto,
    /// Must be a JSON object; only the named fields change.
    Json,
    /// The whole value is the credential.
    Text,
}

/// What to generate for a generic secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorPolicy {
    pub length: usize,
    pub classes: Vec<CharClass>,
    pub exclude: String,
    pub fields: Vec<String>,
    pub format: ValueFormat,
}

impl Default for GeneratorPolicy {
    fn default() -> Self {
        GeneratorPolicy {
            length: DEFAULT_LENGTH,
            classes: vec![
                CharClass::Lower,
                CharClass::Upper,
                CharClass::Digit,
                CharClass::Symbol,
            ],
            exclude: DEFAULT_EXCLUDE.to_string(),
            fields: vec!["password".to_string()],
            format: ValueFormat::Auto,
        }
    }
}

/// Tag and environment names of each setting: (tag, env var).
const LENGTH: (&str, &str) = ("rotor:length", "ROTOR_PASSWORD_LENGTH");
const REQUIRE: (&str, &str) = ("rotor:require", "ROTOR_REQUIRE");
const EXCLUDE: (&str, &str) = ("rotor:exclude", "ROTOR_EXCLUDE_CHARACTERS");
const FIELDS: (&str, &str) = ("rotor:fields", "ROTOR_FIELDS");
const FORMAT: (&str, &str) = ("rotor:format", "ROTOR_FORMAT");

impl GeneratorPolicy {
    /// The defaults, overridden by `ROTOR_*` variables found through `lookup` (the function's
    /// environment).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::default().overridden(false, |i| {
            lookup([LENGTH, REQUIRE, EXCLUDE, FIELDS, FORMAT][i].1)
        })
    }

    /// This policy overridden by a secret's `rotor:*` tags. A `rotor:fields` tag also makes the
    /// secret's format JSON (unless `rotor:format` says otherwise): naming fields of a value that
    /// is not a JSON object is an error, not a silent whole-value rotation.
    pub fn with_tags(&self, tags: &BTreeMap<String, String>) -> Result<Self> {
        self.overridden(true, |i| {
            tags.get([LENGTH, REQUIRE, EXCLUDE, FIELDS, FORMAT][i].0)
                .cloned()
        })
    }

    fn overridden(
        &self,
        fields_imply_json: bool,
        get: impl Fn(usize) -> Option<String>,
    ) -> Result<Self> {
        let mut p = self.clone();
        if let Some(v) = get(0) {
            p.length = v.trim().parse().map_err(|_| {
                RotorError::InvalidPolicy(format!("length {v:?} is not a whole number"))
            })?;
        }
        if let Some(v) = get(1) {
            let mut classes = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(CharClass::parse)
                .collect::<Result<Vec<_>>>()?;
            classes.sort();
            classes.dedup();
            p.classes = classes;
        }
        if let Some(v) = get(2) {
            p.exclude = v;
        }
        if let Some(v) = get(3) {
            p.fields = v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if fields_imply_json && p.format == ValueFormat::Auto {
                p.format = ValueFormat::Json;
            }
        }
        if let Some(v) = get(4) {
            p.format = match v.trim() {
                "auto" => ValueFormat::Auto,
                "json" => ValueFormat::Json,
                "text" => ValueFormat::Text,
                other => {
                    return Err(RotorError::InvalidPolicy(format!(
                        "format {other:?} is not auto, json or text"
                    )))
                }
            };
        }
        p.validate()?;
        Ok(p)
    }

    /// Checks that values can be generated under this policy.
    pub fn validate(&self) -> Result<()> {
        if self.classes.is_empty() {
            return Err(RotorError::InvalidPolicy(
                "at least one character class is required".into(),
            ));
        }
        for c in &self.classes {
            if c.chars().chars().all(|ch| self.exclude.contains(ch)) {
                return Err(RotorError::InvalidPolicy(format!(
                    "every character of class {c:?} is excluded"
                )));
            }
        }
        if self.length < self.classes.len().max(8) || self.length > MAX_LENGTH {
            return Err(RotorError::InvalidPolicy(format!(
                "length {} must be between {} and {MAX_LENGTH}",
                self.length,
                self.classes.len().max(8)
            )));
        }
        if self.fields.is_empty() && self.format != ValueFormat::Text {
            return Err(RotorError::InvalidPolicy(
                "a JSON secret needs at least one field to rotate".into(),
            ));
        }
        Ok(())
    }

    /// The characters of `class` that are not excluded.
    pub fn allowed(&self, class: CharClass) -> Vec<char> {
        class
            .chars()
            .chars()
            .filter(|c| !self.exclude.contains(*c))
            .collect()
    }

    /// Whether `value` could have been generated under this policy: its length, only allowed
    /// characters, at least one of each class.
    pub fn conforms(&self, value: &str) -> std::result::Result<(), String> {
        let n = value.chars().count();
        if n != self.length {
            return Err(format!("length {n}, policy says {}", self.length));
        }
        let sets: Vec<Vec<char>> = self.classes.iter().map(|c| self.allowed(*c)).collect();
        if value
            .chars()
            .any(|ch| !sets.iter().any(|s| s.contains(&ch)))
        {
            return Err("contains a character outside the policy's classes".into());
        }
        for (c, set) in self.classes.iter().zip(&sets) {
            if !value.chars().any(|ch| set.contains(&ch)) {
                return Err(format!("has no character of class {c:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tags_override_env_which_override_defaults() {
        let env =
            GeneratorPolicy::from_env(|k| (k == "ROTOR_PASSWORD_LENGTH").then(|| "40".into()))
                .unwrap();
        assert_eq!(env.length, 40);
        let p = env
            .with_tags(&tags(&[
                ("rotor:length", "16"),
                ("rotor:require", "digit,upper"),
            ]))
            .unwrap();
        assert_eq!(p.length, 16);
        assert_eq!(p.classes, vec![CharClass::Upper, CharClass::Digit]);
        assert_eq!(p.exclude, DEFAULT_EXCLUDE);
    }

    #[test]
    fn fields_from_the_environment_keep_auto_format() {
        let p = GeneratorPolicy::from_env(|k| (k == "ROTOR_FIELDS").then(|| "password".into()))
            .unwrap();
        assert_eq!(p.format, ValueFormat::Auto);
    }

    #[test]
    fn fields_tag_implies_json() {
        let p = GeneratorPolicy::default()
            .with_tags(&tags(&[("rotor:fields", "api_key, token")]))
            .unwrap();
        assert_eq!(p.fields, vec!["api_key", "token"]);
        assert_eq!(p.format, ValueFormat::Json);
    }

    #[test]
    fn rejects_impossible_policies() {
        for t in [
            vec![("rotor:length", "abc")],
            vec![("rotor:length", "4")],
            vec![("rotor:length", "5000")],
            vec![("rotor:require", "lower,emoji")],
            vec![("rotor:require", "")],
            vec![("rotor:require", "digit"), ("rotor:exclude", "0123456789")],
            vec![("rotor:format", "yaml")],
        ] {
            let err = GeneratorPolicy::default().with_tags(&tags(&t)).unwrap_err();
            assert_eq!(err.error_type(), "InvalidPolicy", "{t:?}");
        }
    }

    #[test]
    fn conformance() {
        let p = GeneratorPolicy {
            length: 8,
            classes: vec![CharClass::Lower, CharClass::Digit],
            ..Default::default()
        };
        assert!(p.conforms("abcdefg1").is_ok());
        assert!(p.conforms("abcdefgh").is_err());
        assert!(p.conforms("abcdefgA").is_err());
        assert!(p.conforms("abc1").is_err());
    }
}
