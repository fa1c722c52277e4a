//! The README's manual-invoke commands, run exactly as written, with the real AWS CLI, against
//! the real function binaries served by `cargo lambda watch` (its Lambda Invoke API on
//! loopback), talking to moto over HTTP.
//!
//! The test reads every `aws lambda invoke` line out of README.md's code blocks and runs it
//! with `bash -c` in a scratch directory holding a copy of `events/`, with `P=` (local function
//! names are the binary names; on AWS they are `rotor-<Stage>-<binary>`) and
//! `AWS_ENDPOINT_URL_LAMBDA` pointed at the local Invoke API, so README and test cannot drift:
//! a README command the test does not know, or one it expects and does not find, fails it.
//!
//! The walk-through: rotate the sample secret step by step (create, set, test, finish), send
//! the `rotate` function an event it must refuse, plan (only the identity that is still due
//! is leased), and roll back by hand (nothing pending: AWSCURRENT must not move). Each result
//! is checked in the output file, in the CLI's own output, in moto's Secrets Manager, in the
//! inventory, the audit log (verified) and the alert topic; the functions' output must not
//! contain any secret value. `cargo lambda watch` (and every process under it) is stopped
//! when the test ends, pass or fail.
//!
//! Needs `cargo lambda` (`pip install cargo-lambda`; `scripts/test` installs it) and the
//! workspace's `default-members` covering the function crates (`cargo lambda watch` runs
//! `cargo run --bin NAME`).

#[path = "support/invoke_proxy.rs"]
mod invoke_proxy;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use invoke_proxy::InvokeProxy;
use serde_json::Value;
use support::*;

/// The sample events' secret, identity and token (events/*.json).
const SECRET: &str = "rotor-demo/partner-api-key";
const IDENTITY: &str = "payments/partner-api-key";
const TOKEN: &str = "6b0d4a12-52f7-4c51-9c4e-3f1e2d8a7b90";

/// Every `aws lambda invoke` the README shows: (function binary, event file), in the order
/// this test runs them.
const INVOCATIONS: [(&str, &str); 7] = [
    ("create-secret", "create-secret.json"),
    ("set-secret", "set-secret.json"),
    ("test-secret", "test-secret.json"),
    ("finish-secret", "finish-secret.json"),
    ("rotate", "bad-unknown-step.json"),
    ("plan-rotations", "plan-rotations.json"),
    ("rollback-secret", "rollback-secret.json"),
];

/// The README's form of one invocation.
fn command(function: &str, event: &str) -> String {
    format!(
        "aws lambda invoke --function-name ${{P}}{function} --payload fileb://events/{event} out.json"
    )
}

/// Every line of README.md's code blocks that starts with `aws lambda invoke`, deduplicated.
fn readme_invocations() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = fs::read_to_string(&path).expect("read README.md");
    let mut in_block = false;
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block && t.starts_with("aws lambda invoke") && !out.iter().any(|l| l == t) {
            out.push(t.to_string());
        }
    }
    out
}

/// A scratch directory under the system temp dir (never in the project tree: `cargo lambda
/// watch` watches that), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(unique("rotor-invoke"));
        fs::create_dir_all(dir.join("events")).unwrap();
        let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
        for e in fs::read_dir(events).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), dir.join("events").join(e.file_name())).unwrap();
        }
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Child processes of every process, from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for c in children.get(&p).cloned().unwrap_or_default() {
            out.push(c);
            queue.push(c);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn signal(sig: &str, target: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `cargo lambda watch` on a free loopback port, in its own process group, its output (and
/// the functions') in a log file outside the project tree.
struct Watch {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Watch {
    fn start(dir: &Path, env_file: &Path) -> Watch {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let log = dir.join("watch.log");
        let out = fs::File::create(&log).unwrap();
        let mut cmd = std::process::Command::new("cargo");
        support::plain_cargo_env(&mut cmd);
        let child = cmd
            .args([
                "lambda",
                "watch",
                "--ignore-changes",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .arg("--env-file")
            .arg(env_file)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("run `cargo lambda watch` (pip install cargo-lambda)");
        let mut w = Watch { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!("cargo lambda watch exited ({status}): {}", w.logs());
            }
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen on {port}: {}",
                w.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        w
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Watch {
    /// Stops cargo lambda watch and every process under it (cargo run, the function binaries),
    /// found before the first signal, so that none survives a failed test.
    fn drop(&mut self) {
        if std::thread::panicking() {
            // cargo's and cargo-lambda's own lines (the functions' JSON lines were searched).
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().filter(|l| !l.starts_with('{')).collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- cargo lambda watch (last lines) ---\n{tail}");
        }
        let root = self.child.id();
        let tree = descendants(root);
        signal("-TERM", &format!("-{root}"));
        for p in &tree {
            signal("-TERM", &p.to_string());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && (self.child.try_wait().ok().flatten().is_none() || tree.iter().any(|p| alive(*p)))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal("-KILL", &format!("-{root}"));
        for p in tree.iter().filter(|p| alive(**p)) {
            signal("-KILL", &p.to_string());
        }
        let _ = self.child.wait();
    }
}

/// What one CLI run gave: exit success, its stdout as JSON, stderr, and out.json.
struct Cli {
    ok: bool,
    stdout: Value,
    stderr: String,
    out: Value,
}

/// Runs one README line with bash, as a user would on the local stack.
async fn run_readme_line(line: &str, dir: &Path, lambda_url: &str) -> Cli {
    let out_file = dir.join("out.json");
    let _ = fs::remove_file(&out_file);
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("P", "")
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ENDPOINT_URL_LAMBDA", lambda_url)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_OUTPUT", "json")
        // A function error must come back once, not be retried (Lambda does not retry a
        // synchronous invoke; neither may the CLI hide a 5xx by retrying it).
        .env("AWS_MAX_ATTEMPTS", "1")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("`{line}` did not finish within 180 s"))
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Cli {
        ok: out.status.success(),
        stdout: serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        out: fs::read_to_string(&out_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null),
    }
}

/// A successful invocation's output file.
fn succeeded(cli: &Cli, line: &str) -> Value {
    assert!(
        cli.ok,
        "`{line}` failed: {} {} (out.json: {})",
        cli.stderr, cli.stdout, cli.out
    );
    assert_eq!(cli.stdout["StatusCode"], 200, "`{line}`: {}", cli.stdout);
    assert!(
        cli.stdout.get("FunctionError").is_none(),
        "`{line}`: function error {}",
        cli.out
    );
    cli.out.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_invoke_commands_run_against_cargo_lambda_watch() {
    let started = Instant::now();

    // The README's commands, exactly, and nothing the test does not check.
    let lines = readme_invocations();
    for (f, e) in INVOCATIONS {
        let want = command(f, e);
        assert!(lines.contains(&want), "README.md lacks `{want}`");
    }
    for l in &lines {
        assert!(
            INVOCATIONS.iter().any(|(f, e)| command(f, e) == *l),
            "README.md shows `{l}`, which tests/invoke.rs does not run"
        );
    }

    // Build first: a compile error fails here rather than as an invoke timeout, and
    // `cargo lambda watch`'s `cargo run` then finds every binary fresh (same profile, same
    // target dir, same features).
    support::binary("rotate");

    // Fleet resources (the deployed stack's tables, MAC key and topic), and the sample secret.
    let env = FleetEnv::new().await;
    let fleet = env.fleet().await;
    let c = client().await;
    let _ = c
        .delete_secret()
        .secret_id(SECRET)
        .force_delete_without_recovery(true)
        .send()
        .await;
    let old_value = format!("invoke-old-{}", unique("value"));
    let arn = create_secret(&c, SECRET, &old_value, &[("owner", "payments")]).await;
    let old_version = version_with(&c, &arn, "AWSCURRENT").await.unwrap();
    // A second identity, still due when plan-rotations runs.
    let other_id = format!("{}/api-key", unique("invoke"));
    let other_value = format!("invoke-other-{}", unique("value"));
    let other_arn = create_secret(&c, &unique("rotor-invoke/other"), &other_value, &[]).await;
    let manifest = format!(
        r#"{{"identities":[
            {{"id":"{IDENTITY}","secret":"{arn}","owner":"payments"}},
            {{"id":"{other_id}","secret":"{other_arn}","owner":"platform"}}]}}"#
    );
    fleet
        .register(
            &rotor::manifest::Manifest::parse(&manifest).unwrap(),
            "test",
            rotor::fleet::now(),
        )
        .await
        .unwrap();

    // cargo lambda watch, the functions' environment as the template gives it (fleet mode).
    let dir = Scratch::new();
    let env_file = dir.0.join("functions.env");
    let vars: Vec<String> = env
        .function_env()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    fs::write(&env_file, vars.join("\n") + "\n").unwrap();
    let setup_done = started.elapsed();
    let watch = Watch::start(&dir.0, &env_file);
    // cargo lambda watch runs `cargo run --bin NAME` on a function's first invocation: start
    // each function once with an event it refuses (no state changes), waiting as long as a
    // build takes, so that the README's commands below meet running functions (the CLI gives
    // up after 60 s).
    let upstream = format!("127.0.0.1:{}", watch.port);
    let warm = Instant::now();
    let mut functions: Vec<&str> = INVOCATIONS.iter().map(|(f, _)| *f).collect();
    functions.dedup();
    for f in functions {
        let path = format!("/2015-03-31/functions/{f}/invocations");
        // Refused by every function: no SecretId / Step / IdentityId, and BatchSize out of range.
        let call = invoke_proxy::send(&upstream, "POST", &path, &[], br#"{"BatchSize":0}"#);
        let (status, _, body) = tokio::time::timeout(Duration::from_secs(900), call)
            .await
            .unwrap_or_else(|_| panic!("{f} did not start within 900 s"))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(
            (status, body["errorType"].as_str()),
            (500, Some("InvalidEvent")),
            "{f} did not start and refuse the warm-up event: {body}"
        );
    }
    let warm = warm.elapsed();
    let proxy = InvokeProxy::start(upstream).await;
    let lambda = proxy.url();
    let mut timings = Vec::new();
    let run = |f: &'static str, e: &'static str| {
        let line = command(f, e);
        let dir = dir.0.clone();
        let lambda = lambda.clone();
        async move {
            let t = Instant::now();
            let cli = run_readme_line(&line, &dir, &lambda).await;
            (line, cli, t.elapsed())
        }
    };

    // 1–4: the four steps by hand.
    for (i, (f, e)) in INVOCATIONS[..4].iter().enumerate() {
        let (line, cli, took) = run(f, e).await;
        timings.push((*f, took));
        let out = succeeded(&cli, &line);
        let want = ["created", "noTarget", "tested", "finished"][i];
        assert_eq!(out["outcome"], want, "`{line}`: {out}");
        assert_eq!(out["secretArn"], arn.as_str(), "`{line}`: {out}");
        assert_eq!(out["token"], TOKEN, "`{line}`: {out}");
        if i == 0 {
            let pending = version_with(&c, &arn, "AWSPENDING").await;
            assert_eq!(pending.as_deref(), Some(TOKEN));
            assert_eq!(
                version_with(&c, &arn, "AWSCURRENT").await.as_deref(),
                Some(old_version.as_str()),
                "createSecret moved AWSCURRENT"
            );
        }
    }
    let after_finish = stages(&c, &arn).await;
    let mut want = vec![
        (TOKEN.to_string(), vec!["AWSCURRENT".to_string()]),
        (old_version.clone(), vec!["AWSPREVIOUS".to_string()]),
    ];
    want.sort();
    assert_eq!(after_finish, want, "stages after finishSecret");
    let new_value = value_at(&c, &arn, "AWSCURRENT").await.unwrap();
    assert_ne!(new_value, old_value);
    assert_eq!(
        value_at(&c, &arn, "AWSPREVIOUS").await.as_deref(),
        Some(old_value.as_str())
    );
    let partner = fleet.inventory.get(IDENTITY).await.unwrap().unwrap();
    assert!(
        partner.last_rotated_at.is_some(),
        "finishSecret did not record the rotation"
    );

    // 5: an event the rotate function must refuse: Lambda's error shape, FunctionError set,
    // invoked once (no retry), nothing changed.
    let (f, e) = INVOCATIONS[4];
    let (line, cli, took) = run(f, e).await;
    timings.push((f, took));
    assert!(cli.ok, "`{line}`: {}", cli.stderr);
    assert_eq!(cli.stdout["StatusCode"], 200, "{}", cli.stdout);
    assert_eq!(cli.stdout["FunctionError"], "Unhandled", "{}", cli.stdout);
    assert_eq!(cli.out["errorType"], "UnknownStep", "{}", cli.out);
    let message = cli.out["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("deleteSecret"), "{message}");
    assert_eq!(
        proxy.translated(),
        1,
        "the bad event was invoked more than once"
    );
    assert_eq!(stages(&c, &arn).await, after_finish);

    // 6: plan-rotations leases what is due: the other identity, not the one just rotated.
    let (f, e) = INVOCATIONS[5];
    let (line, cli, took) = run(f, e).await;
    timings.push((f, took));
    let plan = succeeded(&cli, &line);
    let items = plan["Items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{plan}");
    assert_eq!(items[0]["IdentityId"], other_id.as_str(), "{plan}");
    assert_eq!(items[0]["SecretId"], other_arn.as_str(), "{plan}");
    assert_eq!(plan["Due"], 1, "{plan}");
    let leased = fleet.inventory.get(&other_id).await.unwrap().unwrap();
    assert_eq!(
        leased.lease.as_ref().map(|l| l.token.as_str()),
        items[0]["ClientRequestToken"].as_str(),
        "the work item's token is not the lease's"
    );

    // 7: a rollback by hand of a token that is already AWSCURRENT: nothing to roll back,
    // AWSCURRENT stays, the failure is counted, audited and alerted.
    let (f, e) = INVOCATIONS[6];
    let (line, cli, took) = run(f, e).await;
    timings.push((f, took));
    let rolled = succeeded(&cli, &line);
    assert_eq!(rolled["succeeded"], false, "{rolled}");
    assert_eq!(rolled["errorType"], "TestFailed", "{rolled}");
    assert_eq!(
        stages(&c, &arn).await,
        after_finish,
        "rollback moved a stage"
    );
    assert_eq!(
        value_at(&c, &arn, "AWSCURRENT").await.as_deref(),
        Some(new_value.as_str())
    );
    let partner = fleet.inventory.get(IDENTITY).await.unwrap().unwrap();
    assert_eq!(partner.failure_count, 1);
    let alerts = env.alerts();
    assert!(
        alerts
            .iter()
            .any(|a| a["errorType"] == "TestFailed" && a["identityId"] == IDENTITY),
        "{alerts:?}"
    );

    // The audit log: every invocation recorded, and the chain and head MAC verify.
    let actions: Vec<String> = audit_actions(&fleet, IDENTITY).await;
    assert_eq!(
        actions,
        [
            "register",
            "createSecret",
            "setSecret",
            "testSecret",
            "finishSecret",
            "rollback"
        ]
    );
    let verified = fleet.verify(IDENTITY).await.unwrap();
    assert!(verified.tamper.is_none(), "{:?}", verified.tamper);

    // The functions' output (through cargo lambda watch): step lines, and no value.
    let logs = watch.logs();
    for needle in [
        "\"step\":\"finishSecret\"",
        "\"outcome\":\"finished\"",
        "UnknownStep",
    ] {
        assert!(logs.contains(needle), "no {needle} in the functions' logs");
    }
    for v in [&old_value, &new_value, &other_value] {
        assert!(
            !logs.contains(v.as_str()),
            "a secret value reached the logs"
        );
    }
    drop(proxy);
    drop(watch);
    let report: Vec<String> = timings
        .iter()
        .map(|(f, t)| format!("{f} {:.0} ms", t.as_secs_f64() * 1000.0))
        .collect();
    eprintln!(
        "invoke: setup {:.1} s, functions started {:.1} s, total {:.1} s; per command: {}",
        setup_done.as_secs_f64(),
        warm.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report.join(", ")
    );
}

/// Cold start of each packaged function: `target/lambda/<bin>/bootstrap.zip` (from
/// `cargo lambda build --release --output-format zip`, see `scripts/package`) unzipped, then
/// spawned n times through the Runtime API emulator of `tests/support/runtime_api.rs`, timing
/// spawn → first `GET /invocation/next` (as `benches/rotation.rs` does for `rotate`). Ignored
/// by default (it needs the zips); `scripts/package` runs it and prints a Markdown table.
#[tokio::test]
#[ignore = "needs the zips from `cargo lambda build --release --output-format zip` (scripts/package)"]
async fn packaged_functions_cold_start() {
    use support::runtime_api::{FunctionProcess, RuntimeApi};
    const RUNS: usize = 20;
    let lambda_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lambda");
    let mut functions: Vec<String> = fs::read_dir(&lambda_dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/package)", lambda_dir.display()))
        .flatten()
        .filter(|e| e.path().join("bootstrap.zip").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "rotor") // the CLI, not a function
        .collect();
    functions.sort();
    assert!(
        !functions.is_empty(),
        "no bootstrap.zip under {}",
        lambda_dir.display()
    );
    // The deployed functions' environment (fleet mode: plan-rotations and rollback-secret
    // refuse to start without it), at the template's log level.
    let fleet = FleetEnv::new().await;
    let env: Vec<(&str, String)> = fleet
        .function_env()
        .into_iter()
        .filter(|(k, _)| *k != "RUST_LOG")
        .chain([("RUST_LOG", "info".to_string())])
        .collect();
    let scratch = Scratch::new();
    println!("| function | zip | bootstrap | cold start: spawn → first poll (n={RUNS}) |");
    println!("|---|---|---|---|");
    for f in &functions {
        let zip = lambda_dir.join(f).join("bootstrap.zip");
        let dir = scratch.0.join(f);
        fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("unzip")
            .args(["-q", "-o"])
            .arg(&zip)
            .arg("-d")
            .arg(&dir)
            .status()
            .expect("run unzip");
        assert!(status.success(), "unzip {}", zip.display());
        let bootstrap = dir.join("bootstrap");
        let mut ready = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let api = RuntimeApi::start().await;
            let spawned = Instant::now();
            let p = FunctionProcess::spawn(&bootstrap, f, &api, &env);
            let at = api.wait_ready(Duration::from_secs(20)).await;
            let at = at.unwrap_or_else(|| panic!("{f} never polled: {}", p.logs()));
            ready.push(at.duration_since(spawned).as_secs_f64() * 1000.0);
            p.stop().await;
        }
        ready.sort_by(|a, b| a.total_cmp(b));
        let mib = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1_048_576.0;
        println!(
            "| `{f}` | {:.1} MiB | {:.1} MiB | median {:.2} ms, max {:.2} ms |",
            mib(&zip),
            mib(&bootstrap),
            ready[RUNS / 2],
            ready[RUNS - 1]
        );
    }
}
