//! `cargo bench --bench postgres`: PostgreSQL rotation against a real server and moto.
//! For single-user and alternating-users secrets: warm rotation time (median), API calls per
//! rotation by operation, and zero downtime measured — clients log in continuously with
//! AWSCURRENT from Secrets Manager (refreshing once on an authentication failure, as AWS's
//! caching clients do) while the identity is rotated 50 times. Figures go to BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use support::median;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rotor::adapters::{ApiCallCounter, SecretsManager};
use rotor::kinds::KindSettings;
use rotor::policy::GeneratorPolicy;
use rotor::{RotationEvent, Rotator, SecretId, Step, Token};
use serde_json::{json, Value};
use support::postgres::{pg, unique_role};

const ROTATIONS: usize = 50;
const CLIENTS: usize = 4;
const WARM: usize = 50;

fn secret(user: &str, password: &str, masterarn: Option<&str>) -> String {
    let p = pg();
    let mut v = json!({"engine": "postgres", "host": p.host, "port": p.port, "username": user,
                       "password": password, "dbname": "postgres", "ssl": true});
    if let Some(m) = masterarn {
        v["masterarn"] = json!(m);
    }
    v.to_string()
}

struct Downtime {
    logins: u64,
    failed: u64,
    /// Per rotation: from setSecret's end to finishSecret's end (the single-user window in which
    /// the database has the new password and AWSCURRENT still the old one).
    windows_ms: Vec<f64>,
}

async fn downtime(r: &Rotator, arn: &str) -> Downtime {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, ok, failed, arn) = (stop.clone(), ok.clone(), failed.clone(), arn.to_string());
        tasks.push(tokio::spawn(async move {
            let c = support::client().await;
            let fetch = || async {
                serde_json::from_str::<Value>(
                    &support::value_at(&c, &arn, "AWSCURRENT")
                        .await
                        .unwrap_or_default(),
                )
                .unwrap_or(Value::Null)
            };
            let mut cached = fetch().await;
            while !stop.load(Ordering::Relaxed) {
                if support::postgres::app_login(&cached).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                cached = fetch().await;
                if support::postgres::app_login(&cached).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut windows_ms = Vec::new();
    for _ in 0..ROTATIONS {
        let token = Token::generate().unwrap();
        let mut set_done = Instant::now();
        for step in Step::ALL {
            let ev = RotationEvent {
                step,
                secret_id: SecretId::parse(arn).unwrap(),
                token: token.clone(),
            };
            r.run(&ev).await.unwrap();
            if step == Step::Set {
                set_done = Instant::now();
            }
        }
        windows_ms.push(set_done.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Downtime {
        logins: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        windows_ms,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    support::use_threaded_moto();
    let p = pg();
    let sdk = support::sdk().await;
    let counter = ApiCallCounter::default();
    let sm = Arc::new(SecretsManager::new(&sdk, Some(counter.clone())));
    let r = Rotator::new(sm, GeneratorPolicy::default()).with_settings(KindSettings {
        ca_bundle: Some(p.ca_pem_path.clone()),
        db_timeout: Duration::from_secs(5),
        ..Default::default()
    });
    let c = support::client().await;
    let tags = [("rotor:kind", "postgres")];

    let single = unique_role("bench_single");
    p.psql(&format!(
        "CREATE ROLE {single} LOGIN PASSWORD 'bench-initial'"
    ));
    let single_arn = support::create_secret(
        &c,
        &support::unique("bench-pg-single"),
        &secret(&single, "bench-initial", None),
        &tags,
    )
    .await;
    let master_arn = support::create_secret(
        &c,
        &support::unique("bench-pg-master"),
        &secret(&p.admin_user, &p.admin_password, None),
        &[],
    )
    .await;
    let base = unique_role("bench_multi");
    p.psql(&format!("CREATE ROLE {base} LOGIN PASSWORD 'bench-initial'; GRANT CONNECT ON DATABASE postgres TO {base}"));
    let multi_arn = support::create_secret(
        &c,
        &support::unique("bench-pg-multi"),
        &secret(&base, "bench-initial", Some(&master_arn)),
        &tags,
    )
    .await;

    println!(
        "## PostgreSQL rotation (real PostgreSQL 15 over verified TLS, moto's Secrets Manager)\n"
    );
    println!("| strategy | warm rotation, median (n={WARM}) | API calls per rotation | logins during {ROTATIONS} rotations ({CLIENTS} clients) | failed logins | window set→finish, median |");
    println!("|---|---|---|---|---|---|");
    for (name, arn) in [
        ("single user", &single_arn),
        ("alternating users", &multi_arn),
    ] {
        let id = SecretId::parse(arn).unwrap();
        for _ in 0..3 {
            r.rotate(&id).await.unwrap();
        }
        counter.reset();
        r.rotate(&id).await.unwrap();
        let calls = counter.snapshot();
        let mut warm = Vec::new();
        for _ in 0..WARM {
            let t = Instant::now();
            r.rotate(&id).await.unwrap();
            warm.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let mut d = downtime(&r, arn).await;
        let total: u64 = calls.values().sum();
        let ops: Vec<String> = calls
            .iter()
            .map(|(k, v)| format!("{} {v}", k.trim_start_matches("Secrets Manager.")))
            .collect();
        println!(
            "| {name} | {:.1} ms | {total} ({}) | {} | {} | {:.1} ms |",
            median(&mut warm),
            ops.join(", "),
            d.logins,
            d.failed,
            median(&mut d.windows_ms)
        );
    }
}
