//! Shared test support: the local stack (moto's server over HTTP, from `ROTOR_TEST_AWS_ENDPOINT`
//! or started once per test binary), SDK clients, secret fixtures, log capture, and the paths of
//! the real binaries.
#![allow(dead_code)]

pub mod postgres;
pub mod runtime_api;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use aws_sdk_secretsmanager::types::Tag;
use aws_sdk_secretsmanager::Client;
use rotor::localstack::LocalStack;

static STACK: OnceLock<(String, Option<LocalStack>)> = OnceLock::new();
static THREADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Benchmarks measure against moto as it ships (a thread per request); call before `endpoint`.
pub fn use_threaded_moto() {
    THREADED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The moto endpoint for this test binary: `ROTOR_TEST_AWS_ENDPOINT` if set (CI and
/// `scripts/test` start one), else a moto server started now and stopped when the binary exits.
/// Tests use moto serialised (one request at a time): moto does not lock its models, so two
/// concurrent conditional writes can both pass, which DynamoDB never allows.
pub fn endpoint() -> String {
    STACK
        .get_or_init(|| {
            let (url, stack) = match std::env::var("ROTOR_TEST_AWS_ENDPOINT") {
                Ok(url) if !url.is_empty() => (url, None),
                _ => {
                    let mode = if THREADED.load(std::sync::atomic::Ordering::SeqCst) {
                        rotor::localstack::Moto::Threaded
                    } else {
                        rotor::localstack::Moto::Serial
                    };
                    let s = LocalStack::start_with(mode).expect("start moto's server");
                    (s.endpoint().to_string(), Some(s))
                }
            };
            // Lambda functions in moto must not need Docker (RotateSecret looks its Lambda up).
            moto_post(
                &url,
                "/moto-api/config",
                r#"{"lambda":{"use_docker":false}}"#,
            );
            (url, stack)
        })
        .0
        .clone()
}

/// POSTs a JSON body to moto's own API (plain HTTP/1.0 over loopback).
pub fn moto_post(url: &str, path: &str, body: &str) -> String {
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).expect("connect to moto");
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write to moto");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read from moto");
    assert!(
        out.starts_with("HTTP/1.") && (out.contains(" 200 ") || out.contains(" 201 ")),
        "moto answered {out}"
    );
    out
}

/// SDK configuration pointed at the local stack.
pub async fn sdk() -> aws_config::SdkConfig {
    rotor::adapters::load_sdk_config(Some(&endpoint())).await
}

/// A raw Secrets Manager client (for fixtures and for reading state independently of Rotor).
pub async fn client() -> Client {
    Client::new(&sdk().await)
}

/// A rotator wired to Secrets Manager on the local stack, with default policy.
pub async fn rotator() -> rotor::Rotator {
    let secrets = std::sync::Arc::new(rotor::adapters::SecretsManager::new(&sdk().await, None));
    rotor::Rotator::new(secrets, rotor::policy::GeneratorPolicy::default())
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", rotor::Token::generate().unwrap().as_str())
}

/// Creates a secret and returns its ARN.
pub async fn create_secret(c: &Client, name: &str, value: &str, tags: &[(&str, &str)]) -> String {
    let tags: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
        .collect();
    c.create_secret()
        .name(name)
        .secret_string(value)
        .set_tags(Some(tags))
        .send()
        .await
        .expect("create secret")
        .arn()
        .unwrap()
        .to_string()
}

/// `VersionIdsToStages`, sorted, with empty stage lists dropped.
pub async fn stages(c: &Client, id: &str) -> Vec<(String, Vec<String>)> {
    let d = c.describe_secret().secret_id(id).send().await.unwrap();
    let mut v: Vec<(String, Vec<String>)> = d
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(k, mut s)| {
            s.sort();
            (k, s)
        })
        .collect();
    v.sort();
    v
}

/// The value under a stage (always by stage: moto's default version can be wrong).
pub async fn value_at(c: &Client, id: &str, stage: &str) -> Option<String> {
    c.get_secret_value()
        .secret_id(id)
        .version_stage(stage)
        .send()
        .await
        .ok()
        .and_then(|o| o.secret_string)
}

/// The version id carrying `stage`.
pub async fn version_with(c: &Client, id: &str, stage: &str) -> Option<String> {
    stages(c, id)
        .await
        .into_iter()
        .find(|(_, s)| s.iter().any(|x| x == stage))
        .map(|(v, _)| v)
}

/// Captured log output, in the JSON format every Rotor process uses.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Panics if any of `values` appears in the logs (or if the logs are empty: a capture that
    /// caught nothing proves nothing).
    pub fn assert_absent(&self, values: &[&str]) {
        let text = self.text();
        assert!(!text.is_empty(), "no logs were captured");
        for v in values {
            assert!(!v.is_empty());
            if let Some(i) = text.find(v) {
                panic!(
                    "secret value {v:?} leaked into the logs: …{}…",
                    &text[i.saturating_sub(100)..(i + 400).min(text.len())]
                );
            }
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Captures this thread's logs (use with a current-thread runtime, `#[tokio::test]`'s default),
/// with every level on, SDK included.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(logs.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}

static BUILT: Mutex<bool> = Mutex::new(false);

/// The path of a workspace binary (a function or `rotor`), built with this test's profile if it
/// is missing or older than the sources.
pub fn binary(name: &str) -> PathBuf {
    let rotor = PathBuf::from(env!("CARGO_BIN_EXE_rotor"));
    let dir = rotor.parent().unwrap().to_path_buf();
    let path = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !*built {
        let release = dir.ends_with("release");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        plain_cargo_env(&mut cmd);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        *built = true;
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A sample event from `events/` (the same files the README and `cargo lambda invoke` use),
/// pointed at `secret` and `token` when given.
pub fn sample_event(file: &str, secret: Option<&str>, token: Option<&str>) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    if let Some(s) = secret {
        v["SecretId"] = s.into();
    }
    if let Some(t) = token {
        v["ClientRequestToken"] = t.into();
    }
    v
}

/// The environment a function gets on the local stack: endpoint, region, dummy credentials,
/// and every log level on (so the log search covers the SDK's own logs too).
pub fn function_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("RUST_LOG", "trace".into()),
    ]
}

/// Fleet resources with names no other test uses: inventory and audit tables, an HMAC key, an
/// alert topic, and an SQS queue subscribed to the topic (to read alerts back).
pub struct FleetEnv {
    pub config: rotor::Config,
    pub topic_arn: String,
    pub queue_url: String,
}

impl FleetEnv {
    pub async fn new() -> FleetEnv {
        let sdk = sdk().await;
        let inv = unique("inv");
        let aud = unique("aud");
        rotor::adapters::DynamoInventory::new(&sdk, &inv, None)
            .create_table()
            .await
            .unwrap();
        let key = rotor::adapters::kms::create_mac_key(&sdk).await.unwrap();
        let custody =
            std::sync::Arc::new(rotor::adapters::KmsCustody::new(&sdk, key.clone(), None));
        rotor::adapters::DynamoAudit::new(&sdk, &aud, custody, None)
            .create_table()
            .await
            .unwrap();
        let topic_arn = rotor::adapters::AwsNotifier::new(&sdk, None, None, None)
            .create_topic(&unique("alerts"))
            .await
            .unwrap();
        let sqs = |args: &[&str]| aws_cli(args);
        let queue_url = sqs(&[
            "sqs",
            "create-queue",
            "--queue-name",
            &unique("q"),
            "--query",
            "QueueUrl",
        ]);
        let queue_arn = sqs(&[
            "sqs",
            "get-queue-attributes",
            "--queue-url",
            &queue_url,
            "--attribute-names",
            "QueueArn",
            "--query",
            "Attributes.QueueArn",
        ]);
        sqs(&[
            "sns",
            "subscribe",
            "--topic-arn",
            &topic_arn,
            "--protocol",
            "sqs",
            "--notification-endpoint",
            &queue_arn,
        ]);
        let config = rotor::Config::from_lookup(|k| match k {
            "ROTOR_INVENTORY_TABLE" => Some(inv.clone()),
            "ROTOR_AUDIT_TABLE" => Some(aud.clone()),
            "ROTOR_AUDIT_MAC_KEY_ID" => Some(key.clone()),
            "ROTOR_ALERT_TOPIC_ARN" => Some(topic_arn.clone()),
            "ROTOR_EVENT_BUS" => Some("none".into()),
            _ => None,
        })
        .unwrap();
        FleetEnv {
            config,
            topic_arn,
            queue_url,
        }
    }

    /// A fleet wired to these resources on the local stack.
    pub async fn fleet(&self) -> rotor::fleet::Fleet {
        rotor::adapters::wire_fleet(
            &self.config,
            &sdk().await,
            None,
            rotor::metrics::Metrics::new(rotor::metrics::Sink::Off, "test"),
        )
        .unwrap()
    }

    /// Environment variables for a function binary using these resources.
    pub fn function_env(&self) -> Vec<(&'static str, String)> {
        let mut env = function_env();
        env.push((
            "ROTOR_INVENTORY_TABLE",
            self.config.inventory_table.clone().unwrap(),
        ));
        env.push((
            "ROTOR_AUDIT_TABLE",
            self.config.audit_table.clone().unwrap(),
        ));
        env.push((
            "ROTOR_AUDIT_MAC_KEY_ID",
            self.config.audit_mac_key_id.clone().unwrap(),
        ));
        env.push(("ROTOR_ALERT_TOPIC_ARN", self.topic_arn.clone()));
        env.push(("ROTOR_EVENT_BUS", "none".into()));
        env
    }

    /// Alert bodies delivered to the subscribed queue (SNS envelopes unwrapped).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let out = aws_cli(&[
            "sqs",
            "receive-message",
            "--queue-url",
            &self.queue_url,
            "--max-number-of-messages",
            "10",
            "--wait-time-seconds",
            "1",
            "--output",
            "json",
        ]);
        let v: serde_json::Value =
            serde_json::from_str(if out.is_empty() { "{}" } else { &out }).unwrap();
        v["Messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let envelope: serde_json::Value = serde_json::from_str(m["Body"].as_str()?).ok()?;
                serde_json::from_str(envelope["Message"].as_str()?).ok()
            })
            .collect()
    }
}

/// Runs the real AWS CLI against the local stack; returns trimmed stdout (text output unless
/// the args say otherwise).
pub fn aws_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("aws")
        .args([
            "--endpoint-url",
            &endpoint(),
            "--region",
            "us-east-1",
            "--output",
            "text",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("run the AWS CLI");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A manifest (JSON text) for `n` identities over freshly created secrets; returns the manifest
/// and each identity's (id, secret ARN, initial value).
pub async fn seeded_manifest(
    prefix: &str,
    n: usize,
    extra: &str,
) -> (String, Vec<(String, String, String)>) {
    let c = client().await;
    let mut entries = Vec::new();
    let mut ids = Vec::new();
    for k in 0..n {
        let id = format!("{}/{k}", unique(prefix));
        let value = format!(
            "{{\"username\":\"u{k}\",\"password\":\"initial-{}\"}}",
            unique("pw")
        );
        let arn = create_secret(&c, &id, &value, &[]).await;
        entries.push(format!(
            r#"{{"id":"{id}","secret":"{arn}","owner":"team-{k}","tier":"high"{extra}}}"#
        ));
        ids.push((id, arn, value));
    }
    (format!(r#"{{"identities":[{}]}}"#, entries.join(",")), ids)
}

/// Removes the variables `cargo test` sets for a test process (`CARGO_PKG_*`,
/// `CARGO_MANIFEST_*`, `CARGO_BIN_EXE_*`, …) from a nested cargo command, so that it builds
/// exactly what `cargo build` from a shell builds: with them, build scripts that watch the
/// environment see a change and the workspace is rebuilt (~1.5 min) each time the two meet.
pub fn plain_cargo_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let keep = matches!(k.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
            || k.starts_with("CARGO_BUILD_")
            || k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_REGISTRIES_")
            || k.starts_with("CARGO_NET_");
        if (k.starts_with("CARGO_") && !keep) || k == "OUT_DIR" {
            cmd.env_remove(k.as_ref());
        }
    }
}

/// The actions of an identity's audit records, in order.
pub async fn audit_actions(fleet: &rotor::fleet::Fleet, id: &str) -> Vec<String> {
    fleet
        .audit
        .records(id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect()
}

/// A raw scan of a DynamoDB table as the AWS CLI prints it (JSON), to search stored items.
pub fn scan_table(table: &str) -> String {
    aws_cli(&[
        "dynamodb",
        "scan",
        "--table-name",
        table,
        "--output",
        "json",
    ])
}

/// The median of `v` (sorts it). Benchmarks.
pub fn median(v: &mut [f64]) -> f64 {
    pct(v, 0.5)
}

/// The `p` quantile of `v` (nearest rank; sorts it). Benchmarks.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
