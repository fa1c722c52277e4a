//! The rotation event, parsed at the edge. Secrets Manager (and Rotor's state machine) send
//! `{"Step", "SecretId", "ClientRequestToken"}`; this module turns that JSON into a
//! [`RotationEvent`] of validated types before any step logic runs. Bad input is a typed
//! [`RotorError`], never a panic.

use std::fmt;

use serde_json::Value;

use crate::error::{Result, RotorError};

/// Largest event Rotor accepts (a rotation event is ~200 bytes; Lambda allows 6 MB).
pub const MAX_EVENT_BYTES: usize = 16 * 1024;

/// One step of Secrets Manager's rotation protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    /// All steps in the order a rotation runs them.
    pub const ALL: [Step; 4] = [Step::Create, Step::Set, Step::Test, Step::Finish];

    /// The protocol's name for the step (`createSecret`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }

    /// Parses the protocol's name; anything else is [`RotorError::UnknownStep`].
    pub fn parse(s: &str) -> Result<Step> {
        match s {
            "createSecret" => Ok(Step::Create),
            "setSecret" => Ok(Step::Set),
            "testSecret" => Ok(Step::Test),
            "finishSecret" => Ok(Step::Finish),
            other => Err(RotorError::UnknownStep(truncate(other, 64))),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret's name or ARN as Secrets Manager accepts it: 1 to 2048 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretId(String);

impl SecretId {
    pub fn parse(s: &str) -> Result<SecretId> {
        if s.is_empty() {
            return Err(RotorError::InvalidSecretId("empty".into()));
        }
        if s.len() > 2048 {
            return Err(RotorError::InvalidSecretId(format!(
                "{} bytes, more than 2048",
                s.len()
            )));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(RotorError::InvalidSecretId(
                "contains whitespace or control characters".into(),
            ));
        }
        Ok(SecretId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `ClientRequestToken`, which becomes the new version's id: 32 to 64 characters of
/// letters, digits, `-` and `_` (a UUID in practice).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    pub fn parse(s: &str) -> Result<Token> {
        let n = s.chars().count();
        if !(32..=64).contains(&n) {
            return Err(RotorError::InvalidToken(format!(
                "{n} characters, expected 32 to 64"
            )));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(RotorError::InvalidToken(
                "only letters, digits, '-' and '_' are allowed".into(),
            ));
        }
        Ok(Token(s.to_string()))
    }

    /// A fresh random UUID v4 from the OS CSPRNG, for rotations Rotor starts itself.
    pub fn generate() -> Result<Token> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)
            .map_err(|e| RotorError::Config(format!("OS random number generator failed: {e}")))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Ok(Token(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated rotation event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationEvent {
    pub step: Step,
    pub secret_id: SecretId,
    pub token: Token,
}

impl RotationEvent {
    /// Parses Secrets Manager's event shape. `default_step` is used when the event has no `Step`
    /// (a single-step function invoked by the state machine); `None` makes `Step` required.
    pub fn from_json(value: &Value, default_step: Option<Step>) -> Result<RotationEvent> {
        let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0);
        if size > MAX_EVENT_BYTES {
            return Err(RotorError::InvalidEvent(format!(
                "event is {size} bytes, more than {MAX_EVENT_BYTES}"
            )));
        }
        let obj = value.as_object().ok_or_else(|| {
            RotorError::InvalidEvent(format!(
                "expected a JSON object with Step, SecretId and ClientRequestToken, got {}",
                json_type(value)
            ))
        })?;
        let step = match (field(obj, "Step")?, default_step) {
            (Some(s), _) => Step::parse(s)?,
            (None, Some(step)) => step,
            (None, None) => return Err(missing("Step")),
        };
        let secret_id =
            SecretId::parse(field(obj, "SecretId")?.ok_or_else(|| missing("SecretId"))?)?;
        let token = Token::parse(
            field(obj, "ClientRequestToken")?.ok_or_else(|| missing("ClientRequestToken"))?,
        )?;
        Ok(RotationEvent {
            step,
            secret_id,
            token,
        })
    }
}

fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Result<Option<&'a str>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(RotorError::InvalidEvent(format!("field {name} is empty")))
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(RotorError::InvalidEvent(format!(
            "field {name} must be a string, got {}",
            json_type(other)
        ))),
    }
}

fn missing(name: &str) -> RotorError {
    RotorError::InvalidEvent(format!("missing field {name}"))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: &str = "0f5a4c1e-8d9b-4a7e-9c3d-2b1a0e9f8d7c";

    #[test]
    fn parses_a_secrets_manager_event() {
        let e = RotationEvent::from_json(
            &json!({"Step": "setSecret", "SecretId": "arn:aws:secretsmanager:us-east-1:1:secret:x", "ClientRequestToken": T}),
            None,
        )
        .unwrap();
        assert_eq!(e.step, Step::Set);
        assert_eq!(e.token.as_str(), T);
    }

    #[test]
    fn default_step_applies_only_when_absent() {
        let e = RotationEvent::from_json(
            &json!({"SecretId": "s", "ClientRequestToken": T}),
            Some(Step::Test),
        )
        .unwrap();
        assert_eq!(e.step, Step::Test);
        let err =
            RotationEvent::from_json(&json!({"SecretId": "s", "ClientRequestToken": T}), None)
                .unwrap_err();
        assert_eq!(err.error_type(), "InvalidEvent");
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        let cases = [
            (json!([]), "InvalidEvent"),
            (
                json!({"Step": "createSecret", "ClientRequestToken": T}),
                "InvalidEvent",
            ),
            (
                json!({"Step": "createSecret", "SecretId": "", "ClientRequestToken": T}),
                "InvalidEvent",
            ),
            (
                json!({"Step": 3, "SecretId": "s", "ClientRequestToken": T}),
                "InvalidEvent",
            ),
            (
                json!({"Step": "dropSecret", "SecretId": "s", "ClientRequestToken": T}),
                "UnknownStep",
            ),
            (
                json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": "short"}),
                "InvalidToken",
            ),
            (
                json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": "x".repeat(65)}),
                "InvalidToken",
            ),
            (
                json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": format!("{}'; drop", &T[..30])}),
                "InvalidToken",
            ),
            (
                json!({"Step": "createSecret", "SecretId": "a b", "ClientRequestToken": T}),
                "InvalidSecretId",
            ),
            (
                json!({"Step": "createSecret", "SecretId": "s".repeat(2049), "ClientRequestToken": T}),
                "InvalidSecretId",
            ),
            (
                json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": T, "pad": "x".repeat(MAX_EVENT_BYTES)}),
                "InvalidEvent",
            ),
        ];
        for (v, want) in cases {
            let err = RotationEvent::from_json(&v, None).unwrap_err();
            assert_eq!(err.error_type(), want, "{v}");
        }
    }

    #[test]
    fn generated_tokens_are_valid_distinct_uuids() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        Token::parse(a.as_str()).unwrap();
        assert_eq!(&a.as_str()[14..15], "4");
    }
}
