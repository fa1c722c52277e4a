//! The managed fleet against moto over HTTP: registration, due selection (windows, jitter),
//! leases under concurrent planners, expired-lease recovery, rollback with alerts read back
//! through SNS → SQS, the audit trail, and no secret value anywhere in the audit table.

mod support;

use rotor::fleet::now;
use rotor::inventory::Status;
use rotor::manifest::Manifest;
use support::*;

const ACTOR: &str = "test";

#[tokio::test]
async fn registration_is_idempotent_and_changes_are_audited() {
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let (text, ids) = seeded_manifest("reg", 3, "").await;
    let m = Manifest::parse(&text).unwrap();
    let r1 = f.register(&m, ACTOR, now()).await.unwrap();
    assert_eq!(r1.created.len(), 3);
    let snapshot = f.inventory.list().await.unwrap();
    let r2 = f.register(&m, ACTOR, now() + 60).await.unwrap();
    assert_eq!(
        (r2.created.len(), r2.updated.len(), r2.unchanged.len()),
        (0, 0, 3)
    );
    assert_eq!(
        f.inventory.list().await.unwrap(),
        snapshot,
        "re-registering changed the inventory"
    );
    for (id, arn, _) in &ids {
        assert_eq!(
            f.audit.records(id).await.unwrap().len(),
            1,
            "one register record"
        );
        let i = f.inventory.get(id).await.unwrap().unwrap();
        assert_eq!(&i.secret, arn);
        assert_eq!(i.status, Status::Active);
        assert!(i.last_rotated_at.is_none());
    }
    // Change one entry: it is updated and audited, the others are untouched.
    let changed = text.replacen(
        "\"owner\":\"team-0\",\"tier\":\"high\"",
        "\"owner\":\"team-new\",\"tier\":\"critical\"",
        1,
    );
    let r3 = f
        .register(&Manifest::parse(&changed).unwrap(), ACTOR, now())
        .await
        .unwrap();
    assert_eq!((r3.updated.len(), r3.unchanged.len()), (1, 2));
    let recs = f.audit.records(&ids[0].0).await.unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].entry.action, "update");
    assert_eq!(
        recs[1].entry.detail.as_deref(),
        Some("changed: owner, tier")
    );
    let i = f.inventory.get(&ids[0].0).await.unwrap().unwrap();
    assert_eq!(
        (i.owner.as_str(), i.tier.as_str()),
        ("team-new", "critical")
    );
}

#[tokio::test]
async fn due_selection_honours_windows_and_jitter() {
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let t = now();
    let hour = ((t.rem_euclid(86_400)) / 3600) as u8;
    let closed = ((hour + 12) % 24, (hour + 13) % 24);
    let (open_text, open_ids) = seeded_manifest("open", 12, "").await;
    let extra = format!(
        r#","window":{{"start_hour":{},"end_hour":{}}}"#,
        closed.0, closed.1
    );
    let (closed_text, closed_ids) = seeded_manifest("closed", 2, &extra).await;
    f.register(&Manifest::parse(&open_text).unwrap(), ACTOR, t)
        .await
        .unwrap();
    f.register(&Manifest::parse(&closed_text).unwrap(), ACTOR, t)
        .await
        .unwrap();

    // Registered together, due at different seconds (jitter), all due now.
    let mut due_times: Vec<i64> = Vec::new();
    for (id, _, _) in &open_ids {
        let i = f.inventory.get(id).await.unwrap().unwrap();
        assert!(i.next_due_at <= t && i.next_due_at > t - 300);
        due_times.push(i.next_due_at);
    }
    due_times.sort();
    due_times.dedup();
    assert!(
        due_times.len() >= 8,
        "jitter should spread due times: {due_times:?}"
    );
    // Windowed identities fall due when their window opens, not now.
    for (id, _, _) in &closed_ids {
        let i = f.inventory.get(id).await.unwrap().unwrap();
        assert!(
            i.next_due_at > t,
            "an identity outside its window is not due"
        );
        assert!(i.window.unwrap().contains(i.next_due_at));
    }
    let plan = f.plan("planner", 100, t).await.unwrap();
    let planned: std::collections::BTreeSet<_> =
        plan.items.iter().map(|w| w.identity_id.clone()).collect();
    for (id, _, _) in &open_ids {
        assert!(planned.contains(id));
    }
    for (id, _, _) in &closed_ids {
        assert!(!planned.contains(id), "{id} planned outside its window");
    }
    // Once the window opens, they are due.
    let later = f
        .inventory
        .get(&closed_ids[0].0)
        .await
        .unwrap()
        .unwrap()
        .next_due_at
        + 1;
    let plan = f.plan("planner", 100, later).await.unwrap();
    assert!(plan.items.iter().any(|w| w.identity_id == closed_ids[0].0));
    // A paused identity is never planned.
    let paused = open_text.replace(
        "\"tier\":\"high\"",
        "\"tier\":\"high\",\"status\":\"paused\"",
    );
    f.register(&Manifest::parse(&paused).unwrap(), ACTOR, t)
        .await
        .unwrap();
    assert!(f
        .plan("planner", 100, t + 10 * 86_400)
        .await
        .unwrap()
        .items
        .iter()
        .all(|w| !open_ids.iter().any(|o| o.0 == w.identity_id)));
}

#[tokio::test]
async fn two_planners_rotate_each_identity_exactly_once() {
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let (text, ids) = seeded_manifest("race", 12, "").await;
    f.register(&Manifest::parse(&text).unwrap(), ACTOR, now())
        .await
        .unwrap();
    let g = env.fleet().await;
    let t = now();
    let (a, b) = tokio::join!(f.run("planner-a", 100, 3, t), g.run("planner-b", 100, 3, t));
    let (a, b) = (a.unwrap().1, b.unwrap().1);
    assert_eq!(
        a.len() + b.len(),
        ids.len(),
        "every due identity leased exactly once"
    );
    assert!(a.iter().chain(&b).all(|r| r.succeeded));
    let c = client().await;
    for (id, arn, initial) in &ids {
        let finishes = f
            .audit
            .records(id)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.entry.action == "finishSecret")
            .count();
        assert_eq!(finishes, 1, "{id} rotated {finishes} times");
        assert_eq!(
            stages(&c, arn).await.len(),
            2,
            "one rotation: AWSCURRENT + AWSPREVIOUS"
        );
        assert_ne!(&value_at(&c, arn, "AWSCURRENT").await.unwrap(), initial);
        let i = f.inventory.get(id).await.unwrap().unwrap();
        assert!(
            i.lease.is_none()
                && i.last_rotated_at.is_some()
                && i.next_due_at > t + 6 * 86_400 - 6 * 3600
        );
    }
    assert_eq!(
        f.plan("planner-c", 100, now()).await.unwrap().items.len(),
        0,
        "nothing is due after the run"
    );
}

#[tokio::test]
async fn an_expired_lease_is_recovered_and_its_rotation_resumed() {
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let (text, ids) = seeded_manifest("lease", 1, "").await;
    f.register(&Manifest::parse(&text).unwrap(), ACTOR, now())
        .await
        .unwrap();
    let (id, arn, _) = &ids[0];
    let t = now();
    let plan = f.plan("doomed", 10, t).await.unwrap();
    let item = plan.items[0].clone();
    // The planner's rotation dies after createSecret: AWSPENDING dangles, the lease stays.
    let ev = rotor::RotationEvent {
        step: rotor::Step::Create,
        secret_id: rotor::SecretId::parse(arn).unwrap(),
        token: rotor::Token::parse(&item.client_request_token).unwrap(),
    };
    f.step(&ev, Some(id), "doomed").await.unwrap();
    let c = client().await;
    assert_eq!(
        version_with(&c, arn, "AWSPENDING").await.as_deref(),
        Some(item.client_request_token.as_str())
    );
    // While the lease is live nobody else takes it.
    assert!(f.plan("other", 10, t + 60).await.unwrap().items.is_empty());
    // After it expires the next plan takes it over with the same token and finishes the job.
    let later = t + f.settings.lease_seconds + 1;
    let plan = f.plan("rescuer", 10, later).await.unwrap();
    assert_eq!(plan.items.len(), 1);
    assert!(plan.items[0].resumed);
    assert_eq!(
        plan.items[0].client_request_token,
        item.client_request_token
    );
    let r = f.execute(&plan.items[0], "rescuer").await.unwrap();
    assert!(r.succeeded, "{r:?}");
    assert_eq!(
        version_with(&c, arn, "AWSCURRENT").await.as_deref(),
        Some(item.client_request_token.as_str())
    );
    assert_eq!(
        version_with(&c, arn, "AWSPENDING").await,
        None,
        "no dangling AWSPENDING"
    );
    let recs = f.audit.records(id).await.unwrap();
    assert!(recs
        .iter()
        .any(|r| r.entry.action == "lease" && r.entry.outcome == "resumed"));
    assert!(f.inventory.get(id).await.unwrap().unwrap().lease.is_none());
}

#[tokio::test]
async fn a_failing_test_step_is_rolled_back_alerted_and_backs_off() {
    let (logs, _g) = capture_logs();
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let (text, ids) = seeded_manifest("fail", 1, "").await;
    f.register(&Manifest::parse(&text).unwrap(), ACTOR, now())
        .await
        .unwrap();
    let (id, arn, initial) = &ids[0];
    let c = client().await;
    let current_version = version_with(&c, arn, "AWSCURRENT").await.unwrap();
    let mut t = now();
    for attempt in 1..=3u32 {
        let plan = f.plan("planner", 10, t).await.unwrap();
        assert_eq!(
            plan.items.len(),
            1,
            "attempt {attempt}: identity should be due"
        );
        let item = &plan.items[0];
        // A pending value that breaks the policy makes testSecret fail.
        c.put_secret_value()
            .secret_id(arn)
            .client_request_token(&item.client_request_token)
            .secret_string(r#"{"username":"u0","password":"tampered-pending-value"}"#)
            .version_stages("AWSPENDING")
            .send()
            .await
            .unwrap();
        let before = now();
        let r = f.execute(item, "planner").await.unwrap();
        assert!(!r.succeeded);
        assert_eq!(r.error_type.as_deref(), Some("TestFailed"));
        // AWSCURRENT untouched, AWSPENDING gone.
        assert_eq!(
            version_with(&c, arn, "AWSCURRENT").await.as_deref(),
            Some(current_version.as_str())
        );
        assert_eq!(
            value_at(&c, arn, "AWSCURRENT").await.as_deref(),
            Some(initial.as_str())
        );
        assert_eq!(version_with(&c, arn, "AWSPENDING").await, None);
        let i = f.inventory.get(id).await.unwrap().unwrap();
        assert_eq!(i.failure_count, attempt);
        assert!(i.lease.is_none());
        assert!(i.last_error.as_deref().unwrap().starts_with("TestFailed"));
        let expected = if attempt < 3 {
            Status::Active
        } else {
            Status::Failing
        };
        assert_eq!(i.status, expected);
        assert!(
            i.next_due_at >= before + (300 << (attempt - 1)),
            "backed off 5 min, doubling"
        );
        t = i.next_due_at + 1;
    }
    // Failing identities are out of the due index.
    assert!(f
        .plan("planner", 10, t + 100 * 86_400)
        .await
        .unwrap()
        .items
        .is_empty());
    let mut alerts = Vec::new();
    for _ in 0..5 {
        alerts.extend(env.alerts());
        if alerts.len() >= 3 {
            break;
        }
    }
    assert_eq!(alerts.len(), 3, "one alert per failure: {alerts:?}");
    for a in &alerts {
        assert_eq!(a["identityId"], id.as_str());
        assert_eq!(a["errorType"], "TestFailed");
        let text = a.to_string();
        assert!(!text.contains("tampered-pending-value") && !text.contains(initial.as_str()));
    }
    assert!(alerts.iter().any(|a| a["status"] == "failing"));
    let rollbacks = f
        .audit
        .records(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == "rollback")
        .count();
    assert_eq!(rollbacks, 3);
    logs.assert_absent(&["tampered-pending-value", initial]);
}

#[tokio::test]
async fn audit_table_holds_no_secret_values_and_verifies() {
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let (text, ids) = seeded_manifest("noval", 2, "").await;
    f.register(&Manifest::parse(&text).unwrap(), ACTOR, now())
        .await
        .unwrap();
    f.run("planner", 10, 2, now()).await.unwrap();
    let c = client().await;
    let mut values: Vec<String> = Vec::new();
    for (_, arn, initial) in &ids {
        values.push(initial.clone());
        values.push(value_at(&c, arn, "AWSCURRENT").await.unwrap());
    }
    let table = env.config.audit_table.clone().unwrap();
    let dump = scan_table(&table);
    assert!(
        dump.contains("finishSecret"),
        "the scan saw the audit records"
    );
    for v in &values {
        let pw: serde_json::Value = serde_json::from_str(v).unwrap();
        assert!(
            !dump.contains(pw["password"].as_str().unwrap()),
            "a secret value is in the audit table"
        );
    }
    for (id, _, _) in &ids {
        let v = f.audit.verify(id).await.unwrap();
        assert_eq!(v.tamper, None);
        assert_eq!(v.records, 6, "register, lease and the four steps: {v:?}");
    }
}

#[tokio::test]
async fn a_secret_rotated_before_registration_is_registered_on_its_first_rotation() {
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let c = client().await;
    let name = unique("unregistered");
    let arn = create_secret(
        &c,
        &name,
        "first-rotation-value",
        &[("owner", "search"), ("rotor:tier", "low")],
    )
    .await;
    let token = rotor::Token::generate().unwrap();
    for step in rotor::Step::ALL {
        let ev = rotor::RotationEvent {
            step,
            secret_id: rotor::SecretId::parse(&arn).unwrap(),
            token: token.clone(),
        };
        f.step(&ev, None, "secretsmanager").await.unwrap();
    }
    let i = f
        .inventory
        .find_by_secret(&arn)
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(i.id, name);
    assert_eq!((i.owner.as_str(), i.tier.as_str()), ("search", "low"));
    assert!(i.last_rotated_at.is_some());
    let actions: Vec<String> = audit_actions(&f, &name).await;
    assert_eq!(
        actions,
        [
            "register",
            "createSecret",
            "setSecret",
            "testSecret",
            "finishSecret"
        ]
    );
}

#[tokio::test]
async fn rotor_audit_verify_names_an_edited_record() {
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let (text, ids) = seeded_manifest("cliverify", 1, "").await;
    f.register(&Manifest::parse(&text).unwrap(), ACTOR, now())
        .await
        .unwrap();
    f.run("planner", 10, 1, now()).await.unwrap();
    let id = &ids[0].0;
    let run = || {
        std::process::Command::new(support::binary("rotor"))
            .args(["audit", "verify", id, "--endpoint-url", &endpoint()])
            .env(
                "ROTOR_INVENTORY_TABLE",
                env.config.inventory_table.clone().unwrap(),
            )
            .env("ROTOR_AUDIT_TABLE", env.config.audit_table.clone().unwrap())
            .env(
                "ROTOR_AUDIT_MAC_KEY_ID",
                env.config.audit_mac_key_id.clone().unwrap(),
            )
            .output()
            .unwrap()
    };
    let ok = run();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("6 records, chain and head MAC verified"));
    // Someone with write access to the table rewrites record 3's outcome.
    let table = env.config.audit_table.clone().unwrap();
    let key = format!(r#"{{"identity_id":{{"S":"{id}"}},"seq":{{"N":"3"}}}}"#);
    aws_cli(&[
        "dynamodb",
        "update-item",
        "--table-name",
        &table,
        "--key",
        &key,
        "--update-expression",
        "SET outcome = :o",
        "--expression-attribute-values",
        r#"{":o":{"S":"skipped"}}"#,
    ]);
    let bad = run();
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(
        stdout.contains("TAMPERED") && stdout.contains("\"seq\":3"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error[AuditTampered]"));
}

#[tokio::test]
async fn the_rotor_cli_registers_lists_runs_rotates_and_reports() {
    let env = FleetEnv::new().await;
    let (text, ids) = seeded_manifest("cli", 2, "").await;
    let dir = std::env::temp_dir().join(unique("manifest"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("manifest.json");
    std::fs::write(&manifest, &text).unwrap();
    let rotor = |args: &[&str]| {
        let out = std::process::Command::new(support::binary("rotor"))
            .args(args)
            .args(["--endpoint-url", &endpoint()])
            .env(
                "ROTOR_INVENTORY_TABLE",
                env.config.inventory_table.clone().unwrap(),
            )
            .env("ROTOR_AUDIT_TABLE", env.config.audit_table.clone().unwrap())
            .env(
                "ROTOR_AUDIT_MAC_KEY_ID",
                env.config.audit_mac_key_id.clone().unwrap(),
            )
            .env("ROTOR_EVENT_BUS", "none")
            .env("USER", "alice")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "rotor {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let m = manifest.to_str().unwrap();
    assert!(rotor(&["register", m]).contains("2 created, 0 updated, 0 unchanged"));
    assert!(rotor(&["register", m]).contains("0 created, 0 updated, 2 unchanged"));
    let inv = rotor(&["inventory"]);
    for (id, _, _) in &ids {
        let line = inv
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed: {inv}"));
        assert!(
            line.contains("generic")
                && line.contains("high")
                && line.contains("never")
                && line.contains("active"),
            "{line}"
        );
    }
    let report = rotor(&["report"]);
    assert!(report.contains("never rotated: 2"), "{report}");
    let run = rotor(&["run", "--concurrency", "2"]);
    assert!(run.contains("rotated 2 of 2, 0 failed"), "{run}");
    assert!(rotor(&["run"]).contains("rotated 0 of 0"));
    assert!(rotor(&["report"]).contains("never rotated: 0"));
    let one = rotor(&["rotate", &ids[0].0]);
    assert!(one.contains("finishSecret finished"), "{one}");
    let audit = rotor(&["audit", &ids[0].0]);
    for action in [
        "register",
        "lease",
        "createSecret",
        "finishSecret",
        "manual",
    ] {
        assert!(audit.contains(action), "{action} missing from {audit}");
    }
    assert!(audit.contains("cli:alice"));
    assert!(
        rotor(&["audit", "verify"])
            .lines()
            .filter(|l| l.starts_with("ok"))
            .count()
            >= 2
    );
    let c = client().await;
    for (_, arn, initial) in &ids {
        let now = value_at(&c, arn, "AWSCURRENT").await.unwrap();
        assert_ne!(&now, initial);
        let pw: serde_json::Value = serde_json::from_str(&now).unwrap();
        assert!(!audit.contains(pw["password"].as_str().unwrap()));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_log_rolled_back_to_an_older_head_is_caught_by_the_inventory_anchor() {
    let env = FleetEnv::new().await;
    let f = env.fleet().await;
    let (text, ids) = seeded_manifest("anchor", 1, "").await;
    f.register(&Manifest::parse(&text).unwrap(), ACTOR, now())
        .await
        .unwrap();
    f.run("planner", 10, 1, now()).await.unwrap();
    let id = &ids[0].0;
    let table = env.config.audit_table.clone().unwrap();
    // Someone with write access to the audit table saves the head (seq 6, with its valid MAC)…
    let ddb = aws_sdk_dynamodb::Client::new(&sdk().await);
    let k = |seq: u64| {
        std::collections::HashMap::from([
            (
                "identity_id".to_string(),
                aws_sdk_dynamodb::types::AttributeValue::S(id.clone()),
            ),
            (
                "seq".to_string(),
                aws_sdk_dynamodb::types::AttributeValue::N(seq.to_string()),
            ),
        ])
    };
    let saved = ddb
        .get_item()
        .table_name(&table)
        .set_key(Some(k(0)))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    f.rotate_now(id, ACTOR).await.unwrap();
    let head = f.audit.verify(id).await.unwrap().records;
    assert!(head > 6);
    // …then deletes everything after it and puts the old head back.
    for seq in 7..=head {
        ddb.delete_item()
            .table_name(&table)
            .set_key(Some(k(seq)))
            .send()
            .await
            .unwrap();
    }
    ddb.put_item()
        .table_name(&table)
        .set_item(Some(saved))
        .send()
        .await
        .unwrap();
    // The audit table alone cannot tell (a valid older history)…
    assert_eq!(f.audit.verify(id).await.unwrap().tamper, None);
    // …the inventory's anchor can.
    let v = f.verify(id).await.unwrap();
    assert_eq!(
        v.tamper,
        Some(rotor::ports::Tamper::Truncated {
            anchored_seq: head,
            head_seq: 6
        })
    );
}
