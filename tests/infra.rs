//! The infrastructure as code: the state machine describes the same flow as the CLI's
//! in-process run (`rotor::fleet::FLOW`), and the SAM template, translated to CloudFormation,
//! deploys on the local stack (moto) with the properties it declares.
//!
//! Both read `infra/translate.py`'s translation (python3 + samtranslator, as `infra/check.sh`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rotor::fleet::{OnFailure, FLOW};
use serde_json::Value;

fn infra() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra")
}

/// `infra/translate.py` with `args`: the template as plain CloudFormation.
fn translate(args: &[&str]) -> Value {
    let out = Command::new(std::env::var("ROTOR_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(infra().join("translate.py"))
        .args(args)
        .output()
        .expect("run python3 infra/translate.py");
    assert!(
        out.status.success(),
        "translate.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("translate.py prints JSON")
}

/// The state machine resource of a translated template: (logical id, resource).
fn state_machine(cfn: &Value) -> (String, Value) {
    let machines: Vec<_> = cfn["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::StepFunctions::StateMachine")
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    assert_eq!(machines.len(), 1, "one state machine");
    machines.into_iter().next().unwrap()
}

/// The ASL file with its `${Name}` placeholders substituted the way Step Functions applies the
/// template's DefinitionSubstitutions: a function ARN (`Fn::GetAtt [Id, Arn]`) becomes
/// `fn:Id`, a parameter (`Ref`) its default value.
fn definition(cfn: &Value) -> Value {
    let (_, sm) = state_machine(cfn);
    let subs = sm["Properties"]["DefinitionSubstitutions"]
        .as_object()
        .expect("DefinitionSubstitutions");
    let text = std::fs::read_to_string(infra().join("statemachine/rotation.asl.json")).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("closing brace") + i;
        let name = &rest[i + 2..end];
        let value = subs
            .get(name)
            .unwrap_or_else(|| panic!("no DefinitionSubstitutions entry for ${{{name}}}"));
        if let Some(id) = value["Fn::GetAtt"][0].as_str() {
            assert_eq!(value["Fn::GetAtt"][1], "Arn", "{name}");
            out.push_str(&format!("fn:{id}"));
        } else if let Some(param) = value["Ref"].as_str() {
            let default = &cfn["Parameters"][param]["Default"];
            out.push_str(&match default {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            });
        } else {
            panic!("unexpected substitution {name}: {value}");
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).expect("the substituted definition is JSON")
}

/// The binary (functions/<name>) a Task invokes: its FunctionName `fn:Id` → the function
/// resource's `Metadata.BuildProperties.Binary`.
fn task_binary(cfn: &Value, state: &Value) -> String {
    assert_eq!(state["Type"], "Task", "{state}");
    assert_eq!(state["Resource"], "arn:aws:states:::lambda:invoke");
    let name = state["Parameters"]["FunctionName"]
        .as_str()
        .expect("FunctionName");
    let id = name
        .strip_prefix("fn:")
        .expect("a function of the template");
    let res = &cfn["Resources"][id];
    assert_eq!(res["Type"], "AWS::Lambda::Function", "{id}");
    res["Metadata"]["BuildProperties"]["Binary"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} has no Binary"))
        .to_string()
}

/// `createSecret` → `create-secret` (the binary that serves the step).
fn binary_of(step: rotor::Step) -> String {
    let mut s = String::new();
    for c in step.as_str().chars() {
        if c.is_ascii_uppercase() {
            s.push('-');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// Follows `Next` from `start` to the state that ends; returns the names in order.
fn chain(states: &Value, start: &str) -> Vec<String> {
    let mut names = vec![start.to_string()];
    let mut cur = start.to_string();
    while states[&cur]["End"] != Value::Bool(true) {
        let next = states[&cur]["Next"]
            .as_str()
            .unwrap_or_else(|| panic!("{cur} neither ends nor has Next"))
            .to_string();
        assert!(!names.contains(&next), "cycle at {next}");
        assert!(states.get(&next).is_some(), "{cur} → missing state {next}");
        names.push(next.clone());
        cur = next;
    }
    names
}

#[test]
fn state_machine_runs_the_same_flow_as_the_cli() {
    let cfn = translate(&[]);
    let asl = definition(&cfn);
    let states = &asl["States"];

    // plan-rotations first; its Items feed the Map.
    let start = asl["StartAt"].as_str().unwrap();
    assert_eq!(task_binary(&cfn, &states[start]), "plan-rotations");
    assert_eq!(
        states[start]["ResultSelector"]["Items.$"], "$.Payload.Items",
        "the plan's Items become the state's Items"
    );
    let map_name = states[start]["Next"].as_str().expect("plan → Map");
    let map = &states[map_name];
    assert_eq!(map["Type"], "Map");
    assert_eq!(map["ItemsPath"], "$.Items");
    let concurrency = cfn["Parameters"]["MapConcurrency"]["Default"].as_u64();
    assert!(concurrency.is_some_and(|n| n > 0));
    assert_eq!(map["MaxConcurrency"].as_u64(), concurrency, "bounded Map");
    for field in ["IdentityId", "SecretId", "ClientRequestToken", "Kind"] {
        assert_eq!(
            map["ItemSelector"][format!("{field}.$")],
            format!("$$.Map.Item.Value.{field}"),
            "each item carries the work item's {field}"
        );
    }

    // The iterator: the steps of FLOW, in order, each a task of its own function.
    let processor = if map.get("ItemProcessor").is_some() {
        &map["ItemProcessor"]
    } else {
        &map["Iterator"]
    };
    let inner = &processor["States"];
    let order = chain(inner, processor["StartAt"].as_str().unwrap());
    let asl_steps: Vec<(String, String)> = order
        .iter()
        .map(|n| {
            let s = &inner[n];
            let step = s["Parameters"]["Payload"]["Step"]
                .as_str()
                .unwrap_or_else(|| panic!("{n} has no Payload.Step"))
                .to_string();
            (step, task_binary(&cfn, s))
        })
        .collect();
    let flow_steps: Vec<(String, String)> = FLOW
        .iter()
        .map(|(step, _)| (step.as_str().to_string(), binary_of(*step)))
        .collect();
    assert_eq!(
        asl_steps, flow_steps,
        "the state machine's steps (payload Step, function) differ from rotor::fleet::FLOW"
    );

    // Each step: the work item's fields, retry with back-off and jitter on transient errors,
    // and a Catch → rollback exactly where FLOW rolls back.
    for (name, (step, on_failure)) in order.iter().zip(FLOW) {
        let s = &inner[name];
        let payload = &s["Parameters"]["Payload"];
        for (k, v) in [
            ("SecretId.$", "$.SecretId"),
            ("ClientRequestToken.$", "$.ClientRequestToken"),
            ("IdentityId.$", "$.IdentityId"),
            ("ExecutionId.$", "$$.Execution.Id"),
        ] {
            assert_eq!(payload[k], v, "{name}: Payload.{k}");
        }
        let path = s["ResultPath"].as_str().unwrap_or("$");
        assert!(
            path.starts_with("$.") && path.len() > 2,
            "{name}: ResultPath {path} must keep the work item"
        );
        let retry = s["Retry"].as_array().expect("Retry");
        let retried: BTreeSet<&str> = retry
            .iter()
            .flat_map(|r| r["ErrorEquals"].as_array().unwrap())
            .filter_map(Value::as_str)
            .collect();
        for e in [
            "Lambda.TooManyRequestsException",
            "Lambda.ServiceException",
            "AwsTransient",
        ] {
            assert!(retried.contains(e), "{name} does not retry {e}");
        }
        assert!(
            !retried.contains("States.ALL") && !retried.contains("TestFailed"),
            "{name} must not retry permanent failures"
        );
        for r in retry {
            assert_eq!(r["JitterStrategy"], "FULL", "{name}: jitter");
            assert!(
                r["BackoffRate"].as_f64().unwrap_or(1.0) > 1.0,
                "{name}: back-off"
            );
        }
        let catches: Vec<&Value> = s["Catch"]
            .as_array()
            .map(|c| c.iter().collect())
            .unwrap_or_default();
        match on_failure {
            OnFailure::Rollback => {
                let c = catches
                    .iter()
                    .find(|c| c["ErrorEquals"] == serde_json::json!(["States.ALL"]))
                    .unwrap_or_else(|| panic!("{step}: no Catch of States.ALL → rollback"));
                assert_eq!(
                    c["ResultPath"], "$.Error",
                    "{step}: the failure for rollback"
                );
                let target = c["Next"].as_str().unwrap();
                assert_eq!(task_binary(&cfn, &inner[target]), "rollback-secret");
                let rp = &inner[target]["Parameters"]["Payload"];
                for k in [
                    "IdentityId",
                    "SecretId",
                    "ClientRequestToken",
                    "Kind",
                    "Error",
                ] {
                    assert_eq!(rp[format!("{k}.$")], format!("$.{k}"), "rollback input {k}");
                }
                // After the rollback the item ends without failing the Map.
                for n in chain(inner, target) {
                    assert_ne!(inner[&n]["Type"], "Fail", "{n} would fail the whole Map");
                }
            }
        }
    }
    // No other task in the iterator than the steps and the rollback.
    let binaries: BTreeSet<String> = inner
        .as_object()
        .unwrap()
        .values()
        .filter(|s| s["Type"] == "Task")
        .map(|s| task_binary(&cfn, s))
        .collect();
    let mut expect: BTreeSet<String> = FLOW.iter().map(|(s, _)| binary_of(*s)).collect();
    expect.insert("rollback-secret".into());
    assert_eq!(binaries, expect);
}

/// Resource types moto's CloudFormation cannot create; they are dropped from the deployed copy
/// and checked in the translated template instead (`check_dropped`). The dashboard goes with
/// them (it lists the alarms).
const UNSUPPORTED_BY_MOTO: [&str; 2] = ["AWS::Scheduler::Schedule", "AWS::CloudWatch::Alarm"];

fn cli_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let out = support::aws_cli(&a);
    if out.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("aws {args:?}: {e}: {out}"))
    }
}

/// An inline policy document as GetRolePolicy returns it: an object, JSON text, or (moto's
/// CloudFormation stores the template's object with `str()`) a Python literal of it.
fn policy_document(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| {
            let json = s
                .replace('\'', "\"")
                .replace(": True", ": true")
                .replace(": False", ": false");
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("policy document {s}: {e}"))
        }),
        v => v.clone(),
    }
}

/// Every action an inline policy of `role` allows.
fn role_actions(role: &str) -> BTreeSet<String> {
    let names = cli_json(&["iam", "list-role-policies", "--role-name", role]);
    let mut actions = BTreeSet::new();
    for p in names["PolicyNames"].as_array().unwrap() {
        let doc = cli_json(&[
            "iam",
            "get-role-policy",
            "--role-name",
            role,
            "--policy-name",
            p.as_str().unwrap(),
        ]);
        let doc = policy_document(&doc["PolicyDocument"]);
        for st in doc["Statement"].as_array().unwrap() {
            match &st["Action"] {
                Value::String(a) => {
                    actions.insert(a.clone());
                }
                Value::Array(v) => actions.extend(v.iter().map(|a| a.as_str().unwrap().into())),
                _ => {}
            }
        }
    }
    actions
}

#[test]
fn template_deploys_on_the_local_stack() {
    let started = Instant::now();
    let endpoint = support::endpoint(); // also turns off Docker for moto's Lambda
    let run = support::unique("r");
    let stage = format!("t{}", &run[run.len() - 8..]).to_lowercase();
    let stack = format!("rotor-infra-{stage}");
    let bucket = format!("rotor-infra-{stage}");
    let dir = std::env::temp_dir().join(&stack);
    std::fs::create_dir_all(&dir).unwrap();

    // The functions' code: any zip will do (moto does not run it without Docker).
    let zip = dir.join("rotor.zip");
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').writestr('bootstrap', '#!/bin/sh\\n')",
        ])
        .arg(&zip)
        .status()
        .unwrap();
    assert!(status.success());
    support::aws_cli(&["s3api", "create-bucket", "--bucket", &bucket]);
    support::aws_cli(&[
        "s3",
        "cp",
        zip.to_str().unwrap(),
        &format!("s3://{bucket}/rotor.zip"),
    ]);

    let code_uri = format!("s3://{bucket}/rotor.zip");
    let full = translate(&["--code-uri", &code_uri, "--inline-definition"]);
    let mut args = vec!["--code-uri", &code_uri, "--inline-definition"];
    for t in UNSUPPORTED_BY_MOTO {
        args.extend(["--drop", t]);
    }
    let mut cfn = translate(&args);
    // The aliases are fixed names (one stage per account); other tests on this moto may have
    // created alias/rotor-audit, so this copy gets aliases of its own.
    for r in cfn["Resources"].as_object_mut().unwrap().values_mut() {
        if r["Type"] == "AWS::KMS::Alias" {
            let name = r["Properties"]["AliasName"].as_str().unwrap().to_string();
            r["Properties"]["AliasName"] = format!("{name}-{stage}").into();
        }
    }
    let body = dir.join("template.json");
    std::fs::write(&body, serde_json::to_string(&cfn).unwrap()).unwrap();

    // moto's CloudFormation creates functions in its Docker Lambda backend, which the Lambda
    // API stops reading once `use_docker` is false (as `support::endpoint` sets it): read them
    // with the Docker backend selected, and select the other again when done (or on a panic).
    let _docker = LambdaBackendForCloudFormation::select(&endpoint);
    support::aws_cli(&[
        "cloudformation",
        "create-stack",
        "--stack-name",
        &stack,
        "--template-body",
        &format!("file://{}", body.display()),
        "--parameters",
        &format!("ParameterKey=Stage,ParameterValue={stage}"),
        "--capabilities",
        "CAPABILITY_IAM",
        "CAPABILITY_NAMED_IAM",
    ]);
    let mut status = String::new();
    for _ in 0..120 {
        status = support::aws_cli(&[
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            &stack,
            "--query",
            "Stacks[0].StackStatus",
        ]);
        if !status.ends_with("IN_PROGRESS") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(status, "CREATE_COMPLETE", "stack {stack} on {endpoint}");

    let resources = cli_json(&[
        "cloudformation",
        "describe-stack-resources",
        "--stack-name",
        &stack,
    ]);
    let physical: BTreeMap<String, String> = resources["StackResources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["LogicalResourceId"].as_str().unwrap().to_string(),
                r["PhysicalResourceId"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let id = |logical: &str| -> String {
        physical
            .get(logical)
            .unwrap_or_else(|| panic!("{logical} was not created"))
            .clone()
    };
    let declared = &cfn["Resources"];

    // KMS: the secrets CMK rotates; every key's policy is the declared one, with the role
    // ARNs resolved; the aliases point at the keys.
    // (Not DescribeKey: moto's CloudFormation stores KeyPolicy as an object, and DescribeKey
    // then fails with a 500 while it validates the policy; ListKeys carries the ARN.)
    let keys = cli_json(&["kms", "list-keys"]);
    let key_arn = |logical: &str| -> String {
        let key_id = id(logical);
        keys["Keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["KeyId"] == key_id.as_str())
            .unwrap_or_else(|| panic!("{logical} ({key_id}) is not a key"))["KeyArn"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let rotor_key = key_arn("RotorKey");
    for (logical, rotates) in [
        ("RotorKey", true),
        ("AuditMacKey", false),
        ("CaSigningKey", false),
    ] {
        let st = cli_json(&["kms", "get-key-rotation-status", "--key-id", &id(logical)]);
        assert_eq!(
            st["KeyRotationEnabled"].as_bool(),
            Some(rotates),
            "{logical} rotation"
        );
    }
    // moto's CloudFormation creates every key as SYMMETRIC_DEFAULT (it ignores KeySpec and
    // KeyUsage), so the CA and MAC key specs are checked in the template.
    let props = |logical: &str| &declared[logical]["Properties"];
    assert_eq!(props("CaSigningKey")["KeySpec"], "ECC_NIST_P256");
    assert_eq!(props("CaSigningKey")["KeyUsage"], "SIGN_VERIFY");
    assert_eq!(props("AuditMacKey")["KeySpec"], "HMAC_256");
    assert_eq!(props("AuditMacKey")["KeyUsage"], "GENERATE_VERIFY_MAC");
    let all_roles = cli_json(&["iam", "list-roles"]);
    let role_arn = |logical: &str| -> String {
        let name = id(logical);
        all_roles["Roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["RoleName"] == name.as_str())
            .unwrap_or_else(|| panic!("{logical} ({name}) is not a role"))["Arn"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ca_policy = cli_json(&[
        "kms",
        "get-key-policy",
        "--key-id",
        &id("CaSigningKey"),
        "--policy-name",
        "default",
    ]);
    let ca_policy = match &ca_policy["Policy"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(), // moto's CloudFormation keeps the object
    };
    let signers = ca_policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "RotorIssuersSign")
        .expect("CA key policy lets the issuers sign");
    assert_eq!(
        signers["Action"],
        serde_json::json!(["kms:Sign", "kms:GetPublicKey"])
    );
    let issuers: BTreeSet<String> = signers["Condition"]["ArnEquals"]["aws:PrincipalArn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        issuers,
        BTreeSet::from([role_arn("CreateSecretRole"), role_arn("RotateRole")])
    );
    let aliases = cli_json(&["kms", "list-aliases"]);
    for (alias, key) in [
        ("alias/rotor", "RotorKey"),
        ("alias/rotor-audit", "AuditMacKey"),
        ("alias/rotor-ca", "CaSigningKey"),
    ] {
        let name = format!("{alias}-{stage}");
        let a = aliases["Aliases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["AliasName"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(a["TargetKeyId"].as_str().unwrap(), id(key), "{name}");
    }

    // DynamoDB: keys, the due and by_secret GSIs, SSE with the CMK.
    let inventory = cli_json(&[
        "dynamodb",
        "describe-table",
        "--table-name",
        &id("InventoryTable"),
    ])["Table"]
        .clone();
    assert_eq!(
        inventory["KeySchema"],
        serde_json::json!([{"AttributeName": "id", "KeyType": "HASH"}])
    );
    let gsis: BTreeMap<String, Value> = inventory["GlobalSecondaryIndexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["IndexName"].as_str().unwrap().to_string(),
                g["KeySchema"].clone(),
            )
        })
        .collect();
    assert_eq!(
        gsis["due"],
        serde_json::json!([{"AttributeName": "due_shard", "KeyType": "HASH"},
                           {"AttributeName": "next_due_at", "KeyType": "RANGE"}])
    );
    assert_eq!(
        gsis["by_secret"],
        serde_json::json!([{"AttributeName": "secret_arn", "KeyType": "HASH"}])
    );
    let audit = cli_json(&[
        "dynamodb",
        "describe-table",
        "--table-name",
        &id("AuditTable"),
    ])["Table"]
        .clone();
    assert_eq!(
        audit["KeySchema"],
        serde_json::json!([{"AttributeName": "identity_id", "KeyType": "HASH"},
                           {"AttributeName": "seq", "KeyType": "RANGE"}])
    );
    for (logical, t) in [("InventoryTable", &inventory), ("AuditTable", &audit)] {
        assert_eq!(t["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST");
        // moto's CloudFormation applies neither SSESpecification (it passes CloudFormation's
        // `SSEEnabled` where its model reads the API's `Enabled`, so DescribeTable shows no
        // SSEDescription) nor PointInTimeRecoverySpecification: both are checked as declared.
        let sse = &props(logical)["SSESpecification"];
        assert_eq!(sse["SSEEnabled"], true, "{logical}");
        assert_eq!(sse["SSEType"], "KMS", "{logical}");
        assert_eq!(
            sse["KMSMasterKeyId"],
            serde_json::json!({"Fn::GetAtt": ["RotorKey", "Arn"]}),
            "{logical} is encrypted with the Rotor CMK"
        );
        assert_eq!(
            props(logical)["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
            true
        );
    }

    // SNS: the alert topic is encrypted with the CMK.
    let topic = cli_json(&[
        "sns",
        "get-topic-attributes",
        "--topic-arn",
        &id("AlertTopic"),
    ]);
    assert_eq!(
        topic["Attributes"]["KmsMasterKeyId"].as_str(),
        Some(rotor_key.as_str())
    );

    // Functions: runtime, architecture, handler; one role each; least privilege per step.
    let functions = [
        ("CreateSecret", "create-secret"),
        ("SetSecret", "set-secret"),
        ("TestSecret", "test-secret"),
        ("FinishSecret", "finish-secret"),
        ("Rotate", "rotate"),
        ("PlanRotations", "plan-rotations"),
        ("RollbackSecret", "rollback-secret"),
    ];
    let deployed_functions = cli_json(&["lambda", "list-functions"]);
    let mut roles = BTreeSet::new();
    let mut function_arns = BTreeMap::new();
    for (logical, binary) in functions {
        let name = format!("rotor-{stage}-{binary}");
        let f = deployed_functions["Functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["FunctionName"] == name.as_str())
            .unwrap_or_else(|| panic!("function {name} was not created"));
        assert_eq!(f["Runtime"], "provided.al2023", "{binary}");
        assert_eq!(f["Handler"], "bootstrap", "{binary}");
        // moto's CloudFormation drops Architectures: declared (Globals) instead.
        assert_eq!(
            declared[format!("{logical}Function")]["Properties"]["Architectures"],
            serde_json::json!(["arm64"]),
            "{binary}"
        );
        assert_eq!(
            f["Role"].as_str().unwrap(),
            role_arn(&format!("{logical}Role")),
            "{binary} runs with its own role"
        );
        assert!(roles.insert(f["Role"].as_str().unwrap().to_string()));
        let env = &f["Environment"]["Variables"];
        assert_eq!(
            env["ROTOR_INVENTORY_TABLE"].as_str(),
            Some(id("InventoryTable").as_str())
        );
        let signs = matches!(binary, "create-secret" | "rotate");
        assert_eq!(
            env["ROTOR_CA_KEY_ID"].as_str().is_some(),
            signs,
            "{binary}: ROTOR_CA_KEY_ID"
        );
        if signs {
            assert_eq!(
                env["ROTOR_CA_KEY_ID"].as_str(),
                Some(key_arn("CaSigningKey").as_str())
            );
        }
        assert_eq!(
            env["ROTOR_CA_CERT_SECRET"].as_str(),
            matches!(binary, "create-secret" | "test-secret" | "rotate")
                .then_some("rotor/ca-certificate"),
            "{binary}: ROTOR_CA_CERT_SECRET"
        );
        function_arns.insert(logical, f["FunctionArn"].as_str().unwrap().to_string());
    }
    let writes = [
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ];
    let test = role_actions(&id("TestSecretRole"));
    assert!(test.contains("secretsmanager:GetSecretValue"));
    assert!(
        writes.iter().all(|w| !test.contains(*w)),
        "test-secret can write secrets: {test:?}"
    );
    let create = role_actions(&id("CreateSecretRole"));
    assert!(create.contains("secretsmanager:PutSecretValue"));
    assert!(!create
        .iter()
        .any(|a| a.starts_with("rds-db:") || a.starts_with("ec2:")));
    assert!(declared["CreateSecretFunction"]["Properties"]
        .get("VpcConfig")
        .is_none_or(|v| v.get("Fn::If").is_none()));
    let finish = role_actions(&id("FinishSecretRole"));
    assert!(finish.contains("secretsmanager:UpdateSecretVersionStage"));
    assert!(finish.contains("dynamodb:UpdateItem"));
    assert!(!finish.contains("secretsmanager:GetSecretValue"));
    let rollback = role_actions(&id("RollbackSecretRole"));
    assert!(rollback.contains("secretsmanager:UpdateSecretVersionStage"));
    assert!(rollback.contains("sns:Publish"));
    let plan = role_actions(&id("PlanRotationsRole"));
    assert!(!plan.iter().any(|a| a.starts_with("secretsmanager:")));
    for role in [&test, &create, &finish, &rollback, &plan] {
        assert!(!role.iter().any(|a| a == "*" || a.ends_with(":*")));
    }

    // Secrets Manager may invoke rotate, from this account only.
    let policy = cli_json(&[
        "lambda",
        "get-policy",
        "--function-name",
        &function_arns["Rotate"],
    ]);
    let policy: Value = serde_json::from_str(policy["Policy"].as_str().unwrap()).unwrap();
    let grant = &policy["Statement"][0];
    assert_eq!(
        grant["Principal"]["Service"],
        "secretsmanager.amazonaws.com"
    );
    assert_eq!(grant["Action"], "lambda:InvokeFunction");
    assert!(grant["Condition"]["StringEquals"]["AWS:SourceAccount"].is_string());

    // The state machine: the Map over the plan's items, the steps invoking the deployed
    // functions, and a role that may invoke exactly those.
    let sm = cli_json(&[
        "stepfunctions",
        "describe-state-machine",
        "--state-machine-arn",
        &id("RotationStateMachine"),
    ]);
    assert_eq!(sm["name"], format!("rotor-{stage}-rotation"));
    assert_eq!(
        sm["roleArn"].as_str().unwrap(),
        role_arn("StateMachineRole")
    );
    let def: Value = serde_json::from_str(sm["definition"].as_str().unwrap()).unwrap();
    assert_eq!(
        def["States"][def["StartAt"].as_str().unwrap()]["Parameters"]["FunctionName"]
            .as_str()
            .unwrap(),
        function_arns["PlanRotations"]
    );
    let map = &def["States"]["RotateEach"];
    assert_eq!(map["Type"], "Map");
    assert_eq!(
        map["MaxConcurrency"],
        cfn["Parameters"]["MapConcurrency"]["Default"]
    );
    for (state, logical) in [
        ("CreateSecret", "CreateSecret"),
        ("SetSecret", "SetSecret"),
        ("TestSecret", "TestSecret"),
        ("FinishSecret", "FinishSecret"),
        ("RollbackSecret", "RollbackSecret"),
    ] {
        assert_eq!(
            map["ItemProcessor"]["States"][state]["Parameters"]["FunctionName"]
                .as_str()
                .unwrap(),
            function_arns[logical],
            "{state}"
        );
    }
    assert_eq!(
        map["ItemProcessor"]["States"]["CreateSecret"]["Parameters"]["Payload"]["ExecutionId.$"],
        "$$.Execution.Id",
        "the definition reached Step Functions intact"
    );
    let sm_role = id("StateMachineRole");
    let doc = cli_json(&[
        "iam",
        "get-role-policy",
        "--role-name",
        &sm_role,
        "--policy-name",
        "rotation-state-machine",
    ]);
    let doc = policy_document(&doc["PolicyDocument"]);
    let invoke = doc["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == serde_json::json!(["lambda:InvokeFunction"]))
        .expect("an InvokeFunction statement");
    let invokable: BTreeSet<String> = invoke["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = function_arns
        .iter()
        .filter(|(k, _)| **k != "Rotate")
        .flat_map(|(_, arn)| [arn.clone(), format!("{arn}:*")])
        .collect();
    assert_eq!(
        invokable, expected,
        "the state machine invokes exactly its functions"
    );

    check_dropped(&full);
    let _ = support::aws_cli(&["cloudformation", "delete-stack", "--stack-name", &stack]);
    let _ = std::fs::remove_dir_all(&dir);
    let took = started.elapsed();
    eprintln!("deployed and checked stack {stack} in {took:.1?}");
    assert!(took.as_secs() < 120, "took {took:?}");
}

/// Selects moto's Docker Lambda backend (where its CloudFormation puts functions) while alive.
/// Nothing is invoked, so no Docker engine is needed.
struct LambdaBackendForCloudFormation(String);

impl LambdaBackendForCloudFormation {
    fn select(endpoint: &str) -> Self {
        support::moto_post(
            endpoint,
            "/moto-api/config",
            r#"{"lambda":{"use_docker":true}}"#,
        );
        LambdaBackendForCloudFormation(endpoint.to_string())
    }
}

impl Drop for LambdaBackendForCloudFormation {
    fn drop(&mut self) {
        support::moto_post(
            &self.0,
            "/moto-api/config",
            r#"{"lambda":{"use_docker":false}}"#,
        );
    }
}

/// What moto cannot create, checked in the translated template.
fn check_dropped(cfn: &Value) {
    let r = &cfn["Resources"];
    let schedule = &r["RotationSchedule"];
    assert_eq!(schedule["Type"], "AWS::Scheduler::Schedule");
    let p = &schedule["Properties"];
    assert_eq!(
        p["ScheduleExpression"],
        serde_json::json!({"Ref": "ScheduleExpression"})
    );
    assert_eq!(
        cfn["Parameters"]["ScheduleExpression"]["Default"],
        "rate(1 hour)"
    );
    assert_eq!(
        p["Target"]["Arn"],
        serde_json::json!({"Ref": "RotationStateMachine"})
    );
    assert_eq!(
        p["Target"]["RoleArn"],
        serde_json::json!({"Fn::GetAtt": ["SchedulerRole", "Arn"]})
    );
    let start = &r["SchedulerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0];
    assert_eq!(
        start["Action"],
        serde_json::json!(["states:StartExecution"])
    );
    assert_eq!(
        start["Resource"],
        serde_json::json!({"Ref": "RotationStateMachine"})
    );

    // Alarms on the metrics the functions publish (namespace and names of src/metrics.rs).
    let alarms: BTreeMap<&str, &Value> = r
        .as_object()
        .unwrap()
        .values()
        .filter(|v| v["Type"] == "AWS::CloudWatch::Alarm")
        .map(|v| {
            (
                v["Properties"]["MetricName"].as_str().unwrap(),
                &v["Properties"],
            )
        })
        .collect();
    for (metric, function) in [
        ("RotationsFailed", "rollback-secret"),
        ("OverdueIdentities", "plan-rotations"),
    ] {
        let a = alarms
            .get(metric)
            .unwrap_or_else(|| panic!("no alarm on {metric}"));
        assert_eq!(a["Namespace"], rotor::metrics::NAMESPACE);
        assert_eq!(a["Dimensions"][0]["Name"], "Function");
        assert_eq!(
            a["Dimensions"][0]["Value"],
            serde_json::json!({"Fn::Sub": format!("rotor-${{Stage}}-{function}")})
        );
        assert_eq!(
            a["AlarmActions"],
            serde_json::json!([{"Ref": "AlertTopic"}])
        );
    }
}
