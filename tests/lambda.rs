//! Every function binary run as Lambda runs it: a real process polling a Lambda Runtime API
//! emulator on loopback, talking to moto's Secrets Manager over HTTP. Covers the four step
//! functions, the `rotate` dispatcher, error responses, and that a process keeps serving after
//! bad input. All process output is searched for secret values.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::runtime_api::{FunctionProcess, Invocation, RuntimeApi};
use support::*;

async fn start(binary: &str) -> (RuntimeApi, FunctionProcess) {
    start_with(binary, &function_env()).await
}

fn ok(inv: Invocation) -> Value {
    match inv {
        Invocation::Ok(v) => v,
        Invocation::Err {
            error_type,
            error_message,
        } => panic!("{error_type}: {error_message}"),
    }
}

fn err(inv: Invocation) -> (String, String) {
    match inv {
        Invocation::Err {
            error_type,
            error_message,
        } => (error_type, error_message),
        Invocation::Ok(v) => panic!("expected an error, got {v}"),
    }
}

#[tokio::test]
async fn four_step_functions_rotate_a_secret_and_rerun_cleanly() {
    let c = client().await;
    let old = r#"{"username":"lambda","password":"lambda-step-old-pw"}"#;
    let arn = create_secret(&c, &unique("steps"), old, &[]).await;
    let token = rotor::Token::generate().unwrap();
    let mut procs = Vec::new();
    for (binary, file, outcome) in [
        ("create-secret", "create-secret.json", "created"),
        ("set-secret", "set-secret.json", "noTarget"),
        ("test-secret", "test-secret.json", "tested"),
        ("finish-secret", "finish-secret.json", "finished"),
    ] {
        let (api, p) = start(binary).await;
        let event = sample_event(file, Some(&arn), Some(token.as_str()));
        let first = ok(api.invoke(event.clone()).await);
        assert_eq!(first["outcome"], outcome, "{binary}: {first}");
        assert_eq!(first["secretArn"], arn.as_str());
        // Lambda and Secrets Manager retry: the same event again leaves the same state.
        let state = stages(&c, &arn).await;
        let again = ok(api.invoke(event).await);
        assert!(again["outcome"].is_string());
        assert_eq!(
            stages(&c, &arn).await,
            state,
            "re-running {binary} changed the secret"
        );
        // The state machine may omit Step: a single-step function runs its own.
        let no_step = json!({"SecretId": arn, "ClientRequestToken": token.as_str()});
        ok(api.invoke(no_step).await);
        procs.push((api, p));
    }
    assert_eq!(
        version_with(&c, &arn, "AWSCURRENT").await.as_deref(),
        Some(token.as_str())
    );
    assert_eq!(version_with(&c, &arn, "AWSPENDING").await, None);
    let new: Value =
        serde_json::from_str(&value_at(&c, &arn, "AWSCURRENT").await.unwrap()).unwrap();
    let new_pw = new["password"].as_str().unwrap().to_string();
    for (api, p) in procs {
        assert!(p.wait_for_log("\"step\":", Duration::from_secs(5)).await);
        let logs = p.logs();
        assert!(
            !logs.contains("lambda-step-old-pw") && !logs.contains(&new_pw),
            "secret value in the logs"
        );
        for field in ["\"secret_arn\"", "\"token\"", "\"outcome\"", "\"ms\""] {
            assert!(logs.contains(field), "log line lacks {field}");
        }
        p.stop().await;
        drop(api);
    }
}

#[tokio::test]
async fn a_step_function_refuses_other_steps() {
    let (api, p) = start("test-secret").await;
    let (t, m) = err(api
        .invoke(sample_event("finish-secret.json", None, None))
        .await);
    assert_eq!(t, "StepNotServed");
    assert!(m.contains("testSecret only"), "{m}");
    p.stop().await;
}

#[tokio::test]
async fn rotate_function_reports_bad_input_and_keeps_serving() {
    let c = client().await;
    let old = "rotate-fn-old-value";
    let arn = create_secret(&c, &unique("rotatefn"), old, &[]).await;
    let (api, p) = start("rotate").await;
    let token = rotor::Token::generate().unwrap();
    let t = token.as_str();
    let cases = vec![
        (
            sample_event("bad-unknown-step.json", Some(&arn), Some(t)),
            "UnknownStep",
            "deleteSecret",
        ),
        (
            sample_event("bad-token.json", Some(&arn), None),
            "InvalidToken",
            "ClientRequestToken",
        ),
        (
            json!({"Step": "createSecret", "SecretId": arn, "ClientRequestToken": "a".repeat(65)}),
            "InvalidToken",
            "64",
        ),
        (
            json!({"Step": "createSecret", "ClientRequestToken": t}),
            "InvalidEvent",
            "missing field SecretId",
        ),
        (
            json!({"Step": "createSecret", "SecretId": "", "ClientRequestToken": t}),
            "InvalidEvent",
            "SecretId is empty",
        ),
        (
            json!({"SecretId": arn, "ClientRequestToken": t}),
            "InvalidEvent",
            "missing field Step",
        ),
        (json!("createSecret"), "InvalidEvent", "JSON object"),
        (json!(null), "InvalidEvent", "JSON object"),
        (
            json!({"Step": ["createSecret"], "SecretId": arn, "ClientRequestToken": t}),
            "InvalidEvent",
            "Step must be a string",
        ),
        (
            sample_event("create-secret.json", Some(&unique("nope")), Some(t)),
            "SecretNotFound",
            "not found",
        ),
        (
            sample_event("set-secret.json", Some(&arn), Some(t)),
            "TokenNotAVersion",
            "not a version",
        ),
    ];
    for (event, want_type, want_msg) in cases {
        let (ty, msg) = err(api.invoke(event.clone()).await);
        assert_eq!(ty, want_type, "{event}: {msg}");
        assert!(
            msg.contains(want_msg),
            "{want_type}: {msg:?} should mention {want_msg:?}"
        );
    }
    // The same process then rotates the secret through all four steps.
    for file in [
        "create-secret.json",
        "set-secret.json",
        "test-secret.json",
        "finish-secret.json",
    ] {
        ok(api.invoke(sample_event(file, Some(&arn), Some(t))).await);
    }
    assert_eq!(
        version_with(&c, &arn, "AWSCURRENT").await.as_deref(),
        Some(t)
    );
    let new = value_at(&c, &arn, "AWSCURRENT").await.unwrap();
    assert_ne!(new, old);
    assert!(p.wait_for_log("finishSecret", Duration::from_secs(5)).await);
    let logs = p.logs();
    assert!(
        !logs.contains(old) && !logs.contains(&new),
        "secret value in the logs"
    );
    assert!(!logs.contains("panicked"), "the function panicked");
    p.stop().await;
}

async fn start_with(binary: &str, env: &[(&'static str, String)]) -> (RuntimeApi, FunctionProcess) {
    let api = RuntimeApi::start().await;
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let p = FunctionProcess::spawn(&support::binary(binary), binary, &api, &env);
    assert!(
        api.wait_ready(Duration::from_secs(20)).await.is_some(),
        "{binary} never polled for an event: {}",
        p.logs()
    );
    (api, p)
}

/// The state machine's flow through the real binaries: plan-rotations leases, the four step
/// functions rotate (each audited), a second rotation's test fails and rollback-secret undoes it.
#[tokio::test]
async fn plan_steps_and_rollback_functions_work_the_fleet() {
    let env = FleetEnv::new().await;
    let fenv = env.function_env();
    let f = env.fleet().await;
    let (text, ids) = seeded_manifest("sfn", 2, "").await;
    f.register(
        &rotor::manifest::Manifest::parse(&text).unwrap(),
        "test",
        rotor::fleet::now(),
    )
    .await
    .unwrap();
    let (plan_api, plan_p) = start_with("plan-rotations", &fenv).await;
    let plan = ok(plan_api
        .invoke(sample_event("plan-rotations.json", None, None))
        .await);
    let items = plan["Items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{plan}");
    let (bad_type, _) = err(plan_api.invoke(json!({"BatchSize": "ten"})).await);
    assert_eq!(bad_type, "InvalidEvent");

    let mut fns = Vec::new();
    for b in [
        "create-secret",
        "set-secret",
        "test-secret",
        "finish-secret",
        "rollback-secret",
    ] {
        fns.push(start_with(b, &fenv).await);
    }
    // First work item: the happy path, the state passed as the state machine passes it.
    let first = items[0].clone();
    for (api, _) in &fns[..4] {
        let out = ok(api.invoke(first.clone()).await);
        assert!(out["outcome"].is_string());
    }
    let id0 = first["IdentityId"].as_str().unwrap();
    let i0 = f.inventory.get(id0).await.unwrap().unwrap();
    assert!(i0.last_rotated_at.is_some() && i0.lease.is_none());
    let actions: Vec<String> = audit_actions(&f, id0).await;
    assert_eq!(
        actions,
        [
            "register",
            "lease",
            "createSecret",
            "setSecret",
            "testSecret",
            "finishSecret"
        ]
    );

    // Second: testSecret fails (a tampered pending value); the Catch calls rollback-secret.
    let second = items[1].clone();
    let arn = second["SecretId"].as_str().unwrap();
    let token = second["ClientRequestToken"].as_str().unwrap();
    ok(fns[0].0.invoke(second.clone()).await);
    let c = client().await;
    c.put_secret_value()
        .secret_id(arn)
        .client_request_token(token)
        .secret_string(r#"{"username":"u1","password":"sfn-tampered-value"}"#)
        .version_stages("AWSPENDING")
        .send()
        .await
        .ok();
    let (error_type, error_message) = err(fns[2].0.invoke(second.clone()).await);
    assert_eq!(error_type, "TestFailed");
    // The state as the Catch hands it over: the work item plus the error (events/ sample shape).
    let mut state = sample_event("rollback-secret.json", Some(arn), Some(token));
    state["IdentityId"] = second["IdentityId"].clone();
    state["Error"] = json!({"Error": error_type, "Cause": json!({"errorType": error_type, "errorMessage": error_message}).to_string()});
    let rolled = ok(fns[4].0.invoke(state).await);
    assert_eq!(rolled["succeeded"], false);
    assert_eq!(rolled["errorType"], "TestFailed");
    assert_eq!(version_with(&c, arn, "AWSPENDING").await, None);
    let initial = &ids.iter().find(|(_, a, _)| a == arn).unwrap().2;
    assert_eq!(
        value_at(&c, arn, "AWSCURRENT").await.as_deref(),
        Some(initial.as_str())
    );
    let alerts = env.alerts();
    assert!(
        alerts.iter().any(|a| a["errorType"] == "TestFailed"),
        "{alerts:?}"
    );
    // rollback-secret refuses a state without a work item.
    let (t, m) = err(fns[4].0.invoke(json!({"Error": {"Error": "X"}})).await);
    assert_eq!(
        (t.as_str(), m.contains("IdentityId")),
        ("InvalidEvent", true)
    );

    // Metrics: EMF lines in the functions' stdout; no value in any log.
    assert!(
        plan_p
            .wait_for_log("OverdueIdentities", Duration::from_secs(5))
            .await
    );
    assert!(
        fns[4]
            .1
            .wait_for_log("RotationsRolledBack", Duration::from_secs(5))
            .await
    );
    assert!(
        fns[0]
            .1
            .wait_for_log("\"StepDuration\"", Duration::from_secs(5))
            .await
    );
    let new0 = value_at(&c, first["SecretId"].as_str().unwrap(), "AWSCURRENT")
        .await
        .unwrap();
    for (_, p) in fns.iter().chain(std::iter::once(&(plan_api, plan_p))) {
        let logs = p.logs();
        assert!(
            !logs.contains("sfn-tampered-value")
                && !logs.contains(&new0)
                && !logs.contains(initial.as_str())
        );
    }
}
