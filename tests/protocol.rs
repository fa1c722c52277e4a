//! The rotation protocol end to end against moto's Secrets Manager over HTTP, through the real
//! SDK: both ways of starting a rotation, every step re-run, JSON carry-over, the character
//! policy, typed errors for bad input, rollback, and logs searched for secret values.

mod support;

use rotor::{RotationEvent, SecretId, Step, Token};
use serde_json::Value;
use support::*;

fn event(step: Step, id: &str, token: &Token) -> RotationEvent {
    RotationEvent {
        step,
        secret_id: SecretId::parse(id).unwrap(),
        token: token.clone(),
    }
}

/// Everything observable about a secret: staging labels and the value under each label.
async fn state(
    c: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> (Vec<(String, Vec<String>)>, Vec<Option<String>>) {
    let mut values = Vec::new();
    for stage in ["AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"] {
        values.push(value_at(c, id, stage).await);
    }
    (stages(c, id).await, values)
}

/// Runs every step of a rotation, each one four times (once, then three re-runs), asserting that
/// a re-run leaves exactly the state the first run left.
async fn rotate_with_reruns(c: &aws_sdk_secretsmanager::Client, arn: &str, token: &Token) {
    let r = rotator().await;
    for step in Step::ALL {
        r.run(&event(step, arn, token)).await.unwrap();
        let after = state(c, arn).await;
        for _ in 0..3 {
            r.run(&event(step, arn, token)).await.unwrap();
            assert_eq!(
                state(c, arn).await,
                after,
                "re-running {step} changed the secret"
            );
        }
    }
}

#[tokio::test]
async fn rotor_started_rotation_with_every_step_rerun() {
    let (logs, _g) = capture_logs();
    let c = client().await;
    let old = "plain-old-value-0123456789";
    let arn = create_secret(&c, &unique("text"), old, &[]).await;
    let v1 = version_with(&c, &arn, "AWSCURRENT").await.unwrap();
    let token = Token::generate().unwrap();

    rotate_with_reruns(&c, &arn, &token).await;

    let new = value_at(&c, &arn, "AWSCURRENT").await.unwrap();
    assert_ne!(new, old);
    rotor::policy::GeneratorPolicy::default()
        .conforms(&new)
        .unwrap();
    assert_eq!(value_at(&c, &arn, "AWSPREVIOUS").await.unwrap(), old);
    assert_eq!(
        stages(&c, &arn).await,
        {
            let mut v = vec![
                (token.to_string(), vec!["AWSCURRENT".to_string()]),
                (v1, vec!["AWSPREVIOUS".to_string()]),
            ];
            v.sort();
            v
        },
        "AWSPENDING must be gone and the old version AWSPREVIOUS"
    );
    logs.assert_absent(&[old, &new]);
    assert!(logs.text().contains("\"step\":\"finishSecret\""));
}

#[tokio::test]
async fn secrets_manager_started_rotation_with_every_step_rerun() {
    let (logs, _g) = capture_logs();
    let c = client().await;
    let name = unique("native");
    let old = r#"{"username":"svc","password":"native-old-password"}"#;
    let arn = create_secret(&c, &name, old, &[]).await;
    let token = Token::generate().unwrap();
    let lambda = stub_rotation_lambda(&name);
    // Exactly what a user runs; moto stages the token AWSPENDING with no value, as AWS does
    // before it invokes the rotation function's createSecret.
    aws_cli(&[
        "secretsmanager",
        "rotate-secret",
        "--secret-id",
        &arn,
        "--rotation-lambda-arn",
        &lambda,
        "--client-request-token",
        token.as_str(),
    ]);
    let staged = stages(&c, &arn).await;
    assert!(staged
        .iter()
        .any(|(v, s)| v == token.as_str() && s == &["AWSPENDING".to_string()]));
    assert_eq!(
        value_at(&c, &arn, "AWSPENDING").await,
        None,
        "RotateSecret staged a value"
    );

    rotate_with_reruns(&c, &arn, &token).await;

    let new = value_at(&c, &arn, "AWSCURRENT").await.unwrap();
    let v: Value = serde_json::from_str(&new).unwrap();
    assert_eq!(v["username"], "svc");
    assert_ne!(v["password"], "native-old-password");
    assert_eq!(
        version_with(&c, &arn, "AWSCURRENT").await.as_deref(),
        Some(token.as_str())
    );
    assert_eq!(version_with(&c, &arn, "AWSPENDING").await, None);
    logs.assert_absent(&["native-old-password", v["password"].as_str().unwrap()]);
}

/// A do-nothing Lambda for moto's RotateSecret to find, created with the AWS CLI.
fn stub_rotation_lambda(name: &str) -> String {
    let dir = std::env::temp_dir().join(unique("stub"));
    std::fs::create_dir_all(&dir).unwrap();
    let zip = dir.join("stub.zip");
    let ok = std::process::Command::new("python3")
        .args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1],'w'); z.writestr('index.py','def handler(e,c): return e'); z.close()"])
        .arg(&zip)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let fname = name.replace('/', "-");
    let aws = support::aws_cli;
    let role = aws(&[
        "iam",
        "create-role",
        "--role-name",
        &fname,
        "--query",
        "Role.Arn",
        "--assume-role-policy-document",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
    ]);
    let zip_arg = format!("fileb://{}", zip.display());
    let arn = aws(&[
        "lambda",
        "create-function",
        "--function-name",
        &fname,
        "--runtime",
        "python3.11",
        "--handler",
        "index.handler",
        "--role",
        &role,
        "--zip-file",
        &zip_arg,
        "--query",
        "FunctionArn",
    ]);
    let _ = std::fs::remove_dir_all(dir);
    arn
}

#[tokio::test]
async fn json_fields_carry_over_unchanged() {
    let (logs, _g) = capture_logs();
    let c = client().await;
    let old = r#"{"engine":"postgres","host":"db.internal","port":5432,"username":"app","password":"json-old-pw","dbname":"orders","ssl":true,"extra":{"replicas":["r1","r2"],"weight":0.25,"note":"ünïcødé ✓"},"api_key":"json-old-key"}"#;
    let arn = create_secret(
        &c,
        &unique("json"),
        old,
        &[("rotor:fields", "password,api_key")],
    )
    .await;
    rotator()
        .await
        .rotate(&SecretId::parse(&arn).unwrap())
        .await
        .unwrap();
    let new: Value =
        serde_json::from_str(&value_at(&c, &arn, "AWSCURRENT").await.unwrap()).unwrap();
    let before: Value = serde_json::from_str(old).unwrap();
    for (k, v) in before.as_object().unwrap() {
        if k == "password" || k == "api_key" {
            assert_ne!(&new[k], v, "{k} must change");
            rotor::policy::GeneratorPolicy::default()
                .conforms(new[k].as_str().unwrap())
                .unwrap();
        } else {
            assert_eq!(&new[k], v, "{k} must carry over unchanged");
        }
    }
    assert_eq!(
        new.as_object().unwrap().len(),
        before.as_object().unwrap().len()
    );
    assert_ne!(
        new["password"], new["api_key"],
        "each field gets its own value"
    );
    logs.assert_absent(&[
        "json-old-pw",
        "json-old-key",
        new["password"].as_str().unwrap(),
        new["api_key"].as_str().unwrap(),
    ]);
}

#[tokio::test]
async fn character_policy_from_tags() {
    let c = client().await;
    let arn = create_secret(
        &c,
        &unique("policy"),
        "0000000000",
        &[
            ("rotor:length", "20"),
            ("rotor:require", "digit,upper"),
            ("rotor:exclude", "0O1I"),
        ],
    )
    .await;
    let r = rotator().await;
    for _ in 0..5 {
        r.rotate(&SecretId::parse(&arn).unwrap()).await.unwrap();
        let v = value_at(&c, &arn, "AWSCURRENT").await.unwrap();
        assert_eq!(v.len(), 20);
        assert!(
            v.chars()
                .all(|ch| ch.is_ascii_digit() || ch.is_ascii_uppercase()),
            "{v}"
        );
        assert!(
            v.chars().any(|ch| ch.is_ascii_digit()) && v.chars().any(|ch| ch.is_ascii_uppercase())
        );
        assert!(!v.contains(['0', 'O', '1', 'I']), "{v}");
    }
}

#[tokio::test]
async fn default_policy_excludes_the_aws_template_characters() {
    let c = client().await;
    let arn = create_secret(&c, &unique("defaults"), "seed-value", &[]).await;
    let r = rotator().await;
    for _ in 0..5 {
        r.rotate(&SecretId::parse(&arn).unwrap()).await.unwrap();
        let v = value_at(&c, &arn, "AWSCURRENT").await.unwrap();
        assert_eq!(v.chars().count(), 32);
        assert!(
            !v.contains([':', '/', '@', '"', '\'', '\\']),
            "excluded character in a generated value"
        );
        for class in [
            char::is_ascii_lowercase,
            char::is_ascii_uppercase,
            char::is_ascii_digit,
            char::is_ascii_punctuation,
        ] {
            assert!(v.chars().any(|ch| class(&ch)));
        }
    }
}

/// Runs one step and returns its error type, asserting AWSCURRENT kept its version and value.
async fn expect_error(step: Step, id: &str, token: &Token, want: &str) -> rotor::RotorError {
    let c = client().await;
    let before = if id.starts_with("arn:") {
        Some(state(&c, id).await)
    } else {
        None
    };
    let err = rotator()
        .await
        .run(&event(step, id, token))
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), want, "{err}");
    if let Some(before) = before {
        let after = state(&c, id).await;
        assert_eq!(
            before
                .0
                .iter()
                .find(|(_, s)| s.contains(&"AWSCURRENT".to_string())),
            after
                .0
                .iter()
                .find(|(_, s)| s.contains(&"AWSCURRENT".to_string()))
        );
        assert_eq!(before.1[0], after.1[0], "AWSCURRENT's value changed");
    }
    err
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_current_survives() {
    let (logs, _g) = capture_logs();
    let c = client().await;
    let token = Token::generate().unwrap();

    // Unknown secret.
    expect_error(Step::Create, &unique("missing"), &token, "SecretNotFound").await;

    // A token that is not a version, for every step but createSecret.
    let arn = create_secret(&c, &unique("bad"), "bad-input-current-value", &[]).await;
    for step in [Step::Set, Step::Test, Step::Finish] {
        expect_error(step, &arn, &token, "TokenNotAVersion").await;
    }

    // A version that is neither pending nor current (AWSPREVIOUS after a rotation).
    let old_version = version_with(&c, &arn, "AWSCURRENT").await.unwrap();
    rotator()
        .await
        .rotate(&SecretId::parse(&arn).unwrap())
        .await
        .unwrap();
    let previous = Token::parse(&old_version).unwrap();
    for step in Step::ALL {
        expect_error(step, &arn, &previous, "VersionNotPending").await;
    }

    // setSecret / testSecret before createSecret stored a value (RotateSecret staged it empty).
    let empty = Token::generate().unwrap();
    rotor_stage_empty_pending(&c, &arn, &empty).await;
    expect_error(Step::Test, &arn, &empty, "NoPendingValue").await;

    // A current value that is not the JSON its policy expects.
    let not_json = create_secret(
        &c,
        &unique("notjson"),
        "{\"password\": \"cut-off-secret",
        &[("rotor:format", "json")],
    )
    .await;
    let e = expect_error(Step::Create, &not_json, &token, "InvalidSecretValue").await;
    assert!(e.to_string().contains("not valid JSON"));
    let no_field = create_secret(
        &c,
        &unique("nofield"),
        r#"{"user":"u","secret":"no-field-secret"}"#,
        &[],
    )
    .await;
    let e = expect_error(Step::Create, &no_field, &token, "InvalidSecretValue").await;
    assert!(e.to_string().contains("\"password\" is missing"));
    let number = create_secret(&c, &unique("number"), r#"{"password":73910248}"#, &[]).await;
    expect_error(Step::Create, &number, &token, "InvalidSecretValue").await;

    // Unknown kind, impossible policy.
    let kind = create_secret(&c, &unique("kind"), "x-value", &[("rotor:kind", "quantum")]).await;
    expect_error(Step::Create, &kind, &token, "UnsupportedKind").await;
    let pol = create_secret(&c, &unique("pol"), "x-value", &[("rotor:length", "-3")]).await;
    expect_error(Step::Create, &pol, &token, "InvalidPolicy").await;

    // None of those left a pending version behind.
    for id in [&not_json, &no_field, &number, &kind, &pol] {
        assert_eq!(version_with(&c, id, "AWSPENDING").await, None);
    }
    logs.assert_absent(&[
        "bad-input-current-value",
        "cut-off-secret",
        "no-field-secret",
        "73910248",
    ]);
}

/// Stages `token` AWSPENDING with no value the way RotateSecret does, without a Lambda: a
/// value-less version cannot be made through the public API, so use moto's own RotateSecret
/// with a stub Lambda.
async fn rotor_stage_empty_pending(c: &aws_sdk_secretsmanager::Client, arn: &str, token: &Token) {
    let lambda = stub_rotation_lambda(&unique("empty"));
    c.rotate_secret()
        .secret_id(arn)
        .rotation_lambda_arn(lambda)
        .client_request_token(token.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(value_at(c, arn, "AWSPENDING").await, None);
}

#[tokio::test]
async fn failed_test_step_rolls_back_and_current_keeps_working() {
    let (logs, _g) = capture_logs();
    let c = client().await;
    let current = r#"{"username":"app","password":"rollback-current-pw"}"#;
    let arn = create_secret(&c, &unique("rollback"), current, &[]).await;
    let current_version = version_with(&c, &arn, "AWSCURRENT").await.unwrap();
    // Someone (or a bug) stored a pending value that breaks the policy.
    let token = Token::generate().unwrap();
    c.put_secret_value()
        .secret_id(&arn)
        .client_request_token(token.as_str())
        .secret_string(r#"{"username":"app","password":"tampered-pending-pw"}"#)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let r = rotator().await;
    r.run(&event(Step::Create, &arn, &token)).await.unwrap();
    let err = r.run(&event(Step::Test, &arn, &token)).await.unwrap_err();
    assert_eq!(err.error_type(), "TestFailed");
    let out = r
        .rollback(&SecretId::parse(&arn).unwrap(), &token)
        .await
        .unwrap();
    assert_eq!(out.outcome, rotor::Outcome::RolledBack);
    assert_eq!(
        version_with(&c, &arn, "AWSCURRENT").await,
        Some(current_version)
    );
    assert_eq!(
        value_at(&c, &arn, "AWSCURRENT").await.as_deref(),
        Some(current)
    );
    assert_eq!(version_with(&c, &arn, "AWSPENDING").await, None);
    // Rollback is idempotent too.
    let again = r
        .rollback(&SecretId::parse(&arn).unwrap(), &token)
        .await
        .unwrap();
    assert_eq!(again.outcome, rotor::Outcome::NothingToRollBack);
    logs.assert_absent(&["rollback-current-pw", "tampered-pending-pw"]);
}

#[tokio::test]
async fn rotor_cli_rotates_and_reports_errors() {
    let c = client().await;
    let old = "cli-old-value-42";
    let arn = create_secret(&c, &unique("cli"), old, &[]).await;
    let out = std::process::Command::new(support::binary("rotor"))
        .args(["rotate", "--secret-id", &arn, "--endpoint-url", &endpoint()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let new = value_at(&c, &arn, "AWSCURRENT").await.unwrap();
    assert_ne!(new, old);
    assert!(
        stdout.contains("AWSPREVIOUS") && stdout.contains("finishSecret finished"),
        "{stdout}"
    );
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(old) && !text.contains(&new),
            "a secret value was printed"
        );
    }
    let bad = std::process::Command::new(support::binary("rotor"))
        .args([
            "step",
            "dropSecret",
            "--secret-id",
            &arn,
            "--token",
            Token::generate().unwrap().as_str(),
        ])
        .args(["--endpoint-url", &endpoint()])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error[UnknownStep]"));
}
