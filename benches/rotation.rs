//! `cargo bench --bench rotation`: Rotor's rotation cost against a local moto server.
//! Prints a Markdown report: warm rotation time (median of 200, in-process through the real
//! SDK), API calls per rotation by operation, moto's own per-call floor, and for the `rotate`
//! function binary run as Lambda runs it: cold start (spawn → first poll of the Runtime API),
//! first rotation, and peak RSS. Figures go to BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use support::{median, pct};

use std::time::{Duration, Instant};

use rotor::adapters::{ApiCallCounter, SecretsManager};
use rotor::policy::GeneratorPolicy;
use rotor::{Rotator, SecretId};
use support::runtime_api::{FunctionProcess, Invocation, RuntimeApi};

const WARM_RUNS: usize = 200;
const COLD_RUNS: usize = 20;

/// CPU time (user + system) this process has used, in ms.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks * 10.0 // USER_HZ is 100 on Linux
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    support::use_threaded_moto();
    let endpoint = support::endpoint();
    let sdk = support::sdk().await;
    let counter = ApiCallCounter::default();
    let sm = std::sync::Arc::new(SecretsManager::new(&sdk, Some(counter.clone())));
    let rotator = Rotator::new(sm.clone(), GeneratorPolicy::default());
    let c = support::client().await;
    let arn = support::create_secret(
        &c,
        &support::unique("bench"),
        r#"{"username":"bench","password":"initial-bench-password"}"#,
        &[],
    )
    .await;
    let id = SecretId::parse(&arn).unwrap();

    // moto's floor: one DescribeSecret round trip.
    let mut describe = Vec::new();
    for i in 0..(WARM_RUNS + 20) {
        let t = Instant::now();
        c.describe_secret().secret_id(&arn).send().await.unwrap();
        if i >= 20 {
            describe.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }

    // Warm rotations.
    for _ in 0..10 {
        rotator.rotate(&id).await.unwrap();
    }
    counter.reset();
    rotator.rotate(&id).await.unwrap();
    let calls = counter.snapshot();
    let mut warm = Vec::with_capacity(WARM_RUNS);
    let cpu0 = cpu_ms();
    for _ in 0..WARM_RUNS {
        let t = Instant::now();
        rotator.rotate(&id).await.unwrap();
        warm.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu_per = (cpu_ms() - cpu0) / WARM_RUNS as f64;

    // Cold start of the real `rotate` binary as Lambda runs it.
    let binary = support::binary("rotate");
    let env = support::function_env();
    let env: Vec<(&str, String)> = env
        .iter()
        .filter(|(k, _)| *k != "RUST_LOG")
        .map(|(k, v)| (*k, v.clone()))
        .chain([("RUST_LOG", "info".to_string())])
        .collect();
    let (mut ready, mut first, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..COLD_RUNS {
        let api = RuntimeApi::start().await;
        let spawned = Instant::now();
        let p = FunctionProcess::spawn(&binary, "rotate", &api, &env);
        let at = api
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("function ready");
        ready.push(at.duration_since(spawned).as_secs_f64() * 1000.0);
        let token = rotor::Token::generate().unwrap();
        let t = Instant::now();
        for file in [
            "create-secret.json",
            "set-secret.json",
            "test-secret.json",
            "finish-secret.json",
        ] {
            let ev = support::sample_event(file, Some(&arn), Some(token.as_str()));
            match api.invoke(ev).await {
                Invocation::Ok(_) => {}
                Invocation::Err {
                    error_type,
                    error_message,
                } => panic!("{error_type}: {error_message}"),
            }
        }
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        rss.push(p.peak_rss_kb().unwrap_or(0) as f64 / 1024.0);
        p.stop().await;
    }
    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0) as f64 / 1_048_576.0;

    println!("## Generic secret rotation against moto ({endpoint})\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| warm full rotation, in-process (n={WARM_RUNS}) | median {:.2} ms, p90 {:.2} ms, min {:.2} ms |",
        median(&mut warm),
        pct(&mut warm, 0.9),
        pct(&mut warm, 0.0)
    );
    println!("| client CPU per warm rotation | {cpu_per:.2} ms |");
    println!(
        "| moto floor: one DescribeSecret round trip (n={WARM_RUNS}) | median {:.2} ms |",
        median(&mut describe)
    );
    let total: u64 = calls.values().sum();
    let by_op: Vec<String> = calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "| API calls per rotation | {total} ({}) |",
        by_op.join(", ")
    );
    println!(
        "| `rotate` binary cold start: spawn → first Runtime API poll (n={COLD_RUNS}) | median {:.2} ms, max {:.2} ms |",
        median(&mut ready),
        pct(&mut ready, 1.0)
    );
    println!(
        "| `rotate` binary first rotation after cold start (4 invocations) | median {:.2} ms, max {:.2} ms |",
        median(&mut first),
        pct(&mut first, 1.0)
    );
    println!(
        "| `rotate` binary peak RSS after one rotation (VmHWM) | median {:.1} MB, max {:.1} MB |",
        median(&mut rss),
        pct(&mut rss, 1.0)
    );
    println!("| `rotate` binary size (release, stripped) | {size:.1} MB |");
}
