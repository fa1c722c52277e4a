//! The PostgreSQL kind against a real PostgreSQL server (TLS verified against a test CA) and
//! moto's Secrets Manager: single-user and alternating-users rotation through every step (each
//! re-run), AWS's secret format kept, grants re-synchronised, hostile identifiers, TLS, timeouts,
//! each failure rolled back with AWSCURRENT still logging in, the real `rotate` binary, and
//! continuous logins during 50 rotations.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rotor::kinds::KindSettings;
use rotor::{RotationEvent, Rotator, SecretId, Step, Token};
use serde_json::{json, Value};
use support::postgres::{pg, unique_role};
use support::*;

fn settings(timeout_s: u64) -> KindSettings {
    KindSettings {
        ca_bundle: Some(pg().ca_pem_path.clone()),
        db_timeout: Duration::from_secs(timeout_s),
        ..Default::default()
    }
}

async fn pg_rotator(timeout_s: u64) -> Rotator {
    rotator().await.with_settings(settings(timeout_s))
}

/// SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn secret_json(user: &str, password: &str, extra: Value) -> String {
    let p = pg();
    let mut v = json!({
        "engine": "postgres",
        "host": p.host,
        "port": p.port,
        "username": user,
        "password": password,
        "dbname": "postgres",
        "ssl": true
    });
    for (k, x) in extra.as_object().unwrap() {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v.to_string()
}

fn create_role(name: &str, password: &str) {
    pg().psql(&format!(
        "CREATE ROLE {} LOGIN PASSWORD {}",
        ident(name),
        lit(password)
    ));
}

fn logs_in(user: &str, password: &str) -> bool {
    pg().try_psql_as(user, password, "postgres", "select 1")
        .is_ok()
}

async fn current(c: &aws_sdk_secretsmanager::Client, arn: &str) -> Value {
    serde_json::from_str(&value_at(c, arn, "AWSCURRENT").await.unwrap()).unwrap()
}

async fn rotate_with_reruns(r: &Rotator, c: &aws_sdk_secretsmanager::Client, arn: &str) {
    let token = Token::generate().unwrap();
    for step in Step::ALL {
        let ev = RotationEvent {
            step,
            secret_id: SecretId::parse(arn).unwrap(),
            token: token.clone(),
        };
        r.run(&ev).await.unwrap();
        let after = (
            stages(c, arn).await,
            value_at(c, arn, "AWSPENDING").await,
            value_at(c, arn, "AWSCURRENT").await,
        );
        for _ in 0..3 {
            r.run(&ev).await.unwrap();
            let again = (
                stages(c, arn).await,
                value_at(c, arn, "AWSPENDING").await,
                value_at(c, arn, "AWSCURRENT").await,
            );
            assert_eq!(again, after, "re-running {step} changed the secret");
        }
    }
}

#[tokio::test]
async fn single_user_rotation_keeps_aws_format_and_reruns_cleanly() {
    let (logs, _g) = capture_logs();
    let c = client().await;
    let role = unique_role("single");
    create_role(&role, "single-initial-pw");
    let value = secret_json(&role, "single-initial-pw", json!({}));
    let arn = create_secret(
        &c,
        &unique("pg-single"),
        &value,
        &[("rotor:kind", "postgres")],
    )
    .await;
    let r = pg_rotator(5).await;
    rotate_with_reruns(&r, &c, &arn).await;
    let now = current(&c, &arn).await;
    let new_pw = now["password"].as_str().unwrap().to_string();
    assert!(logs_in(&role, &new_pw));
    assert!(
        !logs_in(&role, "single-initial-pw"),
        "single user: the old password stops working"
    );
    // Still exactly AWS's format: same keys, only the password changed.
    let before: Value = serde_json::from_str(&value).unwrap();
    for (k, v) in before.as_object().unwrap() {
        if k != "password" {
            assert_eq!(&now[k], v, "{k} changed");
        }
    }
    assert_eq!(
        now.as_object().unwrap().len(),
        before.as_object().unwrap().len()
    );
    // The password reached the server as a SCRAM verifier.
    let stored = pg().psql(&format!(
        "select rolpassword from pg_authid where rolname = {}",
        lit(&role)
    ));
    assert!(stored.starts_with("SCRAM-SHA-256$"));
    logs.assert_absent(&["single-initial-pw", &new_pw]);
}

/// Sets up an alternating-users secret: a master secret (the server's admin), a group role and a
/// table the app role can read. Returns (arn, base role, table).
async fn alternating_setup(c: &aws_sdk_secretsmanager::Client, base: &str) -> (String, String) {
    let p = pg();
    let master = secret_json(&p.admin_user, &p.admin_password, json!({}));
    let master_arn = create_secret(c, &unique("pg-master"), &master, &[]).await;
    create_role(base, "multi-initial-pw");
    let group = unique_role("readers");
    let table = unique_role("t");
    pg().psql(&format!(
        "SELECT pg_advisory_xact_lock(7262010); CREATE ROLE {g}; CREATE TABLE public.{t} (x int); INSERT INTO public.{t} VALUES (42); \
         GRANT SELECT ON public.{t} TO {g}; GRANT {g} TO {b}; GRANT INSERT ON public.{t} TO {b}; \
         GRANT CONNECT ON DATABASE postgres TO {b}",
        g = ident(&group),
        t = ident(&table),
        b = ident(base)
    ));
    let value = secret_json(base, "multi-initial-pw", json!({ "masterarn": master_arn }));
    let arn = create_secret(
        c,
        &unique("pg-multi"),
        &value,
        &[("rotor:kind", "postgres")],
    )
    .await;
    (arn, table)
}

#[tokio::test]
async fn alternating_users_take_turns_and_grants_follow() {
    let (logs, _g) = capture_logs();
    let c = client().await;
    let base = unique_role("app");
    let (arn, table) = alternating_setup(&c, &base).await;
    let clone = format!("{base}_clone");
    let r = pg_rotator(5).await;

    rotate_with_reruns(&r, &c, &arn).await;
    let v1 = current(&c, &arn).await;
    assert_eq!(v1["username"], clone.as_str());
    let pw1 = v1["password"].as_str().unwrap().to_string();
    assert!(logs_in(&clone, &pw1));
    assert!(
        logs_in(&base, "multi-initial-pw"),
        "the previous role keeps working"
    );
    // The clone mirrors the base role: membership (SELECT via the group) and direct INSERT.
    let q = format!(
        "insert into public.{t} values (1); select count(*) from public.{t}",
        t = ident(&table)
    );
    assert_eq!(pg().try_psql_as(&clone, &pw1, "postgres", &q).unwrap(), "2");

    // Privileges drift: a grant made to the active role (the clone) after the rotation…
    pg().psql(&format!(
        "GRANT UPDATE ON public.{} TO {}",
        ident(&table),
        ident(&clone)
    ));
    rotate_with_reruns(&r, &c, &arn).await;
    let v2 = current(&c, &arn).await;
    assert_eq!(v2["username"], base.as_str());
    let pw2 = v2["password"].as_str().unwrap().to_string();
    assert!(logs_in(&base, &pw2));
    assert!(
        logs_in(&clone, &pw1),
        "the previous role keeps working until the next rotation"
    );
    // …is carried over to the role taking over.
    let upd = format!("update public.{} set x = 7 where x = 1", ident(&table));
    pg().try_psql_as(&base, &pw2, "postgres", &upd).unwrap();
    // And a privilege the active role no longer has is revoked from the other at the next turn.
    pg().psql(&format!(
        "REVOKE INSERT ON public.{} FROM {}",
        ident(&table),
        ident(&base)
    ));
    rotate_with_reruns(&r, &c, &arn).await;
    let v3 = current(&c, &arn).await;
    let pw3 = v3["password"].as_str().unwrap().to_string();
    let ins = format!("insert into public.{} values (3)", ident(&table));
    assert!(
        pg().try_psql_as(&clone, &pw3, "postgres", &ins).is_err(),
        "a revoked privilege was not revoked"
    );
    assert_eq!(v3["masterarn"], v1["masterarn"]);
    logs.assert_absent(&["multi-initial-pw", &pw1, &pw2, &pw3, &pg().admin_password]);
}

#[tokio::test]
async fn hostile_role_names_are_quoted_not_spliced() {
    let c = client().await;
    let r = pg_rotator(5).await;
    for (n, hostile) in ["we\"ird';drop role x;--", "ünï cødé ✓ role", "a;b\\c$$d"]
        .iter()
        .enumerate()
    {
        let name = format!("{hostile}{}", unique_role("h"));
        let name: String = name.chars().take(40).collect();
        create_role(&name, "hostile-initial-pw");
        let arn = create_secret(
            &c,
            &unique("pg-hostile"),
            &secret_json(&name, "hostile-initial-pw", json!({})),
            &[("rotor:kind", "postgres")],
        )
        .await;
        r.rotate(&SecretId::parse(&arn).unwrap())
            .await
            .unwrap_or_else(|e| panic!("case {n}: {e}"));
        let pw = current(&c, &arn).await["password"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(logs_in(&name, &pw), "case {n}");
        // Alternating users with the same hostile base name.
        let base = format!("{}m", name.chars().take(30).collect::<String>());
        let (multi, _) = alternating_setup(&c, &base).await;
        r.rotate(&SecretId::parse(&multi).unwrap())
            .await
            .unwrap_or_else(|e| panic!("case {n} multi: {e}"));
        let v = current(&c, &multi).await;
        assert_eq!(v["username"], format!("{base}_clone"));
        assert!(logs_in(
            &format!("{base}_clone"),
            v["password"].as_str().unwrap()
        ));
    }
    // Identifier limits: a 64-byte username, and a base name whose _clone would pass 63 bytes.
    let long = "x".repeat(64);
    let arn = create_secret(
        &c,
        &unique("pg-long"),
        &secret_json(&long, "pw", json!({})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    let e = r.rotate(&SecretId::parse(&arn).unwrap()).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidSecretValue");
    let base58 = "y".repeat(58);
    let arn = create_secret(
        &c,
        &unique("pg-58"),
        &secret_json(
            &base58,
            "pw",
            json!({"masterarn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:m"}),
        ),
        &[("rotor:kind", "postgres")],
    )
    .await;
    let e = r.rotate(&SecretId::parse(&arn).unwrap()).await.unwrap_err();
    assert_eq!(e.error_type(), "InvalidSecretValue");
    assert!(e.to_string().contains("63-byte"));
}

/// Rotates and expects `error_type`; AWSCURRENT must keep its version and value, no AWSPENDING
/// may remain, and (when given) the current credential must still log in.
async fn expect_rolled_back(r: &Rotator, arn: &str, error_type: &str, still: Option<(&str, &str)>) {
    let c = client().await;
    let version = version_with(&c, arn, "AWSCURRENT").await;
    let value = value_at(&c, arn, "AWSCURRENT").await;
    let e = r.rotate(&SecretId::parse(arn).unwrap()).await.unwrap_err();
    assert_eq!(e.error_type(), error_type, "{e}");
    assert_eq!(version_with(&c, arn, "AWSCURRENT").await, version);
    assert_eq!(value_at(&c, arn, "AWSCURRENT").await, value);
    assert_eq!(
        version_with(&c, arn, "AWSPENDING").await,
        None,
        "rollback left AWSPENDING"
    );
    if let Some((u, p)) = still {
        assert!(
            logs_in(u, p),
            "AWSCURRENT no longer logs in after {error_type}"
        );
    }
}

#[tokio::test]
async fn failures_are_clear_errors_rolled_back_with_current_still_working() {
    let c = client().await;
    let r = pg_rotator(1).await;

    // TLS required but the CA does not match: a clear error, no plain-text fallback.
    let role = unique_role("tls");
    create_role(&role, "tls-initial-pw");
    let arn = create_secret(
        &c,
        &unique("pg-tls"),
        &secret_json(&role, "tls-initial-pw", json!({})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    let wrong_ca = rotor::kinds::KindSettings {
        ca_bundle: Some("/etc/ssl/certs/ca-certificates.crt".into()),
        db_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let strict = rotator().await.with_settings(wrong_ca.clone());
    expect_rolled_back(
        &strict,
        &arn,
        "DatabaseTlsFailed",
        Some((&role, "tls-initial-pw")),
    )
    .await;
    // ssl absent: AWS's templates fall back to plain text, and so does Rotor (with a warning).
    let lax = create_secret(
        &c,
        &unique("pg-lax"),
        &secret_json(&role, "tls-initial-pw", json!({"ssl": null})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    rotator()
        .await
        .with_settings(wrong_ca)
        .rotate(&SecretId::parse(&lax).unwrap())
        .await
        .unwrap();
    // ssl false: plain text on purpose.
    let role2 = unique_role("plain");
    create_role(&role2, "plain-initial-pw");
    let plain = create_secret(
        &c,
        &unique("pg-plain"),
        &secret_json(&role2, "plain-initial-pw", json!({"ssl": false})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    r.rotate(&SecretId::parse(&plain).unwrap()).await.unwrap();

    // Unreachable host (nothing listens) and a black hole (accepts, never answers).
    let dead_port = rotor::localstack::free_port().unwrap();
    let role3 = unique_role("dead");
    let dead = create_secret(
        &c,
        &unique("pg-dead"),
        &secret_json(&role3, "dead-pw", json!({"port": dead_port})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    expect_rolled_back(&r, &dead, "DatabaseUnreachable", None).await;
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming().take(8) {
            held.push(s);
        }
    });
    let bh = create_secret(
        &c,
        &unique("pg-hole"),
        &secret_json(&role3, "dead-pw", json!({"port": hole_port})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    let started = std::time::Instant::now();
    expect_rolled_back(&r, &bh, "DatabaseUnreachable", None).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a black-holed database must time out, took {:?}",
        started.elapsed()
    );

    // A dropped role: neither current nor previous logs in.
    let gone = unique_role("gone");
    create_role(&gone, "gone-pw");
    let arn = create_secret(
        &c,
        &unique("pg-gone"),
        &secret_json(&gone, "gone-pw", json!({})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    pg().psql(&format!("DROP ROLE {}", ident(&gone)));
    expect_rolled_back(&r, &arn, "DatabaseAuthFailed", None).await;

    // Wrong master credentials (alternating users).
    let base = unique_role("wm");
    let (multi, _) = alternating_setup(&c, &base).await;
    let v: Value =
        serde_json::from_str(&value_at(&c, &multi, "AWSCURRENT").await.unwrap()).unwrap();
    let master_arn = v["masterarn"].as_str().unwrap();
    c.put_secret_value()
        .secret_id(master_arn)
        .secret_string(secret_json(
            &pg().admin_user,
            "not-the-master-pw",
            json!({}),
        ))
        .send()
        .await
        .unwrap();
    expect_rolled_back(
        &r,
        &multi,
        "DatabaseAuthFailed",
        Some((&base, "multi-initial-pw")),
    )
    .await;

    // Insufficient privilege: a "master" that may not create roles.
    let weak = unique_role("weak");
    create_role(&weak, "weak-pw");
    c.put_secret_value()
        .secret_id(master_arn)
        .secret_string(secret_json(&weak, "weak-pw", json!({})))
        .send()
        .await
        .unwrap();
    expect_rolled_back(
        &r,
        &multi,
        "DatabaseError",
        Some((&base, "multi-initial-pw")),
    )
    .await;

    // A failing test after setSecret changed the password: rollback puts it back.
    let role4 = unique_role("revert");
    create_role(&role4, "revert-initial-pw");
    let arn = create_secret(
        &c,
        &unique("pg-revert"),
        &secret_json(&role4, "revert-initial-pw", json!({})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    let token = Token::generate().unwrap();
    let ev = |step| RotationEvent {
        step,
        secret_id: SecretId::parse(&arn).unwrap(),
        token: token.clone(),
    };
    r.run(&ev(Step::Create)).await.unwrap();
    r.run(&ev(Step::Set)).await.unwrap();
    assert!(!logs_in(&role4, "revert-initial-pw"));
    r.rollback(&SecretId::parse(&arn).unwrap(), &token)
        .await
        .unwrap();
    assert!(
        logs_in(&role4, "revert-initial-pw"),
        "rollback restored the current password"
    );
    assert_eq!(version_with(&c, &arn, "AWSPENDING").await, None);
}

#[tokio::test]
async fn the_rotate_binary_rotates_both_strategies() {
    use support::runtime_api::{FunctionProcess, Invocation, RuntimeApi};
    let c = client().await;
    let role = unique_role("bin");
    create_role(&role, "bin-initial-pw");
    let single = create_secret(
        &c,
        &unique("pg-bin"),
        &secret_json(&role, "bin-initial-pw", json!({})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    let base = unique_role("binmulti");
    let (multi, _) = alternating_setup(&c, &base).await;
    let api = RuntimeApi::start().await;
    let mut env = function_env();
    env.push(("ROTOR_DB_CA_BUNDLE", pg().ca_pem_path.display().to_string()));
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let p = FunctionProcess::spawn(&support::binary("rotate"), "rotate", &api, &env);
    assert!(api.wait_ready(Duration::from_secs(20)).await.is_some());
    for arn in [&single, &multi] {
        let token = Token::generate().unwrap();
        for file in [
            "create-secret.json",
            "set-secret.json",
            "test-secret.json",
            "finish-secret.json",
        ] {
            match api
                .invoke(sample_event(file, Some(arn), Some(token.as_str())))
                .await
            {
                Invocation::Ok(_) => {}
                Invocation::Err {
                    error_type,
                    error_message,
                } => panic!("{file}: {error_type}: {error_message}"),
            }
        }
    }
    let pw = current(&c, &single).await["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(logs_in(&role, &pw));
    let v = current(&c, &multi).await;
    assert_eq!(v["username"], format!("{base}_clone"));
    let mpw = v["password"].as_str().unwrap().to_string();
    assert!(logs_in(&format!("{base}_clone"), &mpw));
    assert!(logs_in(&base, "multi-initial-pw"));
    assert!(p.wait_for_log("finishSecret", Duration::from_secs(5)).await);
    let logs = p.logs();
    for v in [
        pw.as_str(),
        mpw.as_str(),
        "bin-initial-pw",
        "multi-initial-pw",
        pg().admin_password.as_str(),
    ] {
        assert!(
            !logs.contains(v),
            "a secret value is in the function's logs"
        );
    }
    p.stop().await;
}

/// Clients log in continuously, each using AWSCURRENT from Secrets Manager and refreshing it once
/// on an authentication failure (as AWS's caching clients do). Returns (logins, failed logins).
pub async fn logins_during_rotations(arn: &str, rotations: usize, clients: usize) -> (u64, u64) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (stop, ok, failed, arn) = (stop.clone(), ok.clone(), failed.clone(), arn.to_string());
        tasks.push(tokio::spawn(async move {
            let c = client().await;
            let mut cached: Value =
                serde_json::from_str(&value_at(&c, &arn, "AWSCURRENT").await.unwrap()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if support::postgres::app_login(&cached).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                cached =
                    serde_json::from_str(&value_at(&c, &arn, "AWSCURRENT").await.unwrap()).unwrap();
                if support::postgres::app_login(&cached).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let r = pg_rotator(5).await;
    for _ in 0..rotations {
        r.rotate(&SecretId::parse(arn).unwrap()).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_rotate_50_times_with_zero_failed_logins() {
    let c = client().await;
    let base = unique_role("zd");
    let (arn, _) = alternating_setup(&c, &base).await;
    let (ok, failed) = logins_during_rotations(&arn, 50, 4).await;
    assert!(ok > 100, "clients barely logged in ({ok})");
    assert_eq!(
        failed, 0,
        "alternating users must never fail a login ({ok} ok)"
    );
}

#[tokio::test]
async fn single_user_falls_back_to_the_previous_password() {
    let c = client().await;
    let role = unique_role("prev");
    create_role(&role, "prev-p0");
    let arn = create_secret(
        &c,
        &unique("pg-prev"),
        &secret_json(&role, "prev-p0", json!({})),
        &[("rotor:kind", "postgres")],
    )
    .await;
    let r = pg_rotator(5).await;
    r.rotate(&SecretId::parse(&arn).unwrap()).await.unwrap();
    // The database goes back to the previous password (a restore, a manual reset…): the
    // current credential no longer logs in, the previous one does.
    pg().psql(&format!("ALTER ROLE {} PASSWORD 'prev-p0'", ident(&role)));
    let p1 = current(&c, &arn).await["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!logs_in(&role, &p1));
    r.rotate(&SecretId::parse(&arn).unwrap()).await.unwrap();
    let p2 = current(&c, &arn).await["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        logs_in(&role, &p2),
        "rotation recovered through the previous password"
    );
}
