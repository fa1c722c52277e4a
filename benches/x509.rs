//! `cargo bench --bench x509`: the cost of issuing and testing one certificate against a local
//! moto server (KMS `Sign` with real ECDSA, Secrets Manager). Prints a Markdown report: the
//! createSecret step (key pair + to-be-signed certificate + one KMS round trip + put), the
//! testSecret step (path validation, names, key match, mTLS handshake on loopback), a whole
//! rotation, KMS and Secrets Manager calls per rotation by operation, and moto's own `Sign`
//! round trip. Figures go to BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use support::{median, pct};

use std::sync::Arc;
use std::time::{Duration, Instant};

use rotor::adapters::{ApiCallCounter, KmsCaSigner, SecretsManager};
use rotor::kinds::KindSettings;
use rotor::ports::CaSigner;
use rotor::{RotationEvent, Rotator, SecretId, Step, Token};

const RUNS: usize = 100;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    support::use_threaded_moto();
    let _ = support::endpoint();
    let sdk = support::sdk().await;
    let c = support::client().await;

    // The CA: a KMS key and its certificate.
    let alias = format!("alias/{}", support::unique("bench-ca"));
    let (key, _) = rotor::adapters::kms::ensure_ca_key(&sdk, &alias)
        .await
        .unwrap();
    let signer = KmsCaSigner::new(&sdk, None);
    let spec = rotor::ca::CaSpec {
        common_name: "Rotor bench CA".into(),
        organization: None,
        validity: Duration::from_secs(86400 * 30),
    };
    let pem = rotor::ca::self_signed(&signer, &key, &spec, rotor::fleet::now())
        .await
        .unwrap();
    let ca_secret = support::unique("bench-ca-cert");
    support::create_secret(&c, &ca_secret, &pem, &[]).await;

    let counter = ApiCallCounter::default();
    let rotator = Rotator::new(
        Arc::new(SecretsManager::new(&sdk, Some(counter.clone()))),
        Default::default(),
    )
    .with_settings(KindSettings {
        ca_key_id: key.clone(),
        ca_cert_secret: ca_secret,
        ..Default::default()
    })
    .with_signer(Arc::new(KmsCaSigner::new(&sdk, Some(counter.clone()))));
    let profile = r#"{"common_name":"bench","dns_names":["bench.internal"],"ip_addresses":["127.0.0.1"],"uris":["spiffe://example.org/bench"]}"#;
    let arn = support::create_secret(
        &c,
        &support::unique("bench-cert"),
        profile,
        &[("rotor:kind", "x509")],
    )
    .await;
    let id = SecretId::parse(&arn).unwrap();

    // moto's floor for one KMS Sign of a certificate-sized message.
    let tbs = vec![7u8; 400];
    let mut sign = Vec::new();
    for i in 0..(RUNS + 10) {
        let t = Instant::now();
        signer.sign(&key, &tbs).await.unwrap();
        if i >= 10 {
            sign.push(ms(t));
        }
    }

    for _ in 0..5 {
        rotator.rotate(&id).await.unwrap();
    }
    counter.reset();
    rotator.rotate(&id).await.unwrap();
    let calls = counter.snapshot();

    let (mut create, mut test, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let token = Token::generate().unwrap();
        let ev = |step| RotationEvent {
            step,
            secret_id: id.clone(),
            token: token.clone(),
        };
        let all = Instant::now();
        let t = Instant::now();
        rotator.run(&ev(Step::Create)).await.unwrap();
        create.push(ms(t));
        rotator.run(&ev(Step::Set)).await.unwrap();
        let t = Instant::now();
        rotator.run(&ev(Step::Test)).await.unwrap();
        test.push(ms(t));
        rotator.run(&ev(Step::Finish)).await.unwrap();
        whole.push(ms(all));
    }

    println!("## X.509 certificates (`cargo bench --bench x509`)\n");
    println!("moto 5 (threaded) on loopback, release build, P-256 leaf, CA key in moto's KMS; {RUNS} rotations after 5 warm-up.\n");
    println!("| measure | median ms | p90 ms |");
    println!("|---|---|---|");
    println!(
        "| createSecret (describe + read current and CA certificate, key pair, TBS, KMS Sign, put) | {:.2} | {:.2} |",
        median(&mut create),
        pct(&mut create, 0.9)
    );
    println!(
        "| testSecret (reads, webpki path validation, names, key match, mTLS handshake) | {:.2} | {:.2} |",
        median(&mut test),
        pct(&mut test, 0.9)
    );
    println!(
        "| whole rotation (4 steps) | {:.2} | {:.2} |",
        median(&mut whole),
        pct(&mut whole, 0.9)
    );
    println!(
        "| one KMS Sign round trip (moto's floor) | {:.2} | {:.2} |",
        median(&mut sign),
        pct(&mut sign, 0.9)
    );
    let total: u64 = calls.values().sum();
    println!("\nAPI calls per rotation: {total}");
    for (op, n) in &calls {
        println!("- {op}: {n}");
    }
}
