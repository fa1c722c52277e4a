//! The X.509 kind against moto's KMS (real ECDSA signatures over HTTP) and Secrets Manager:
//! `rotor ca init` through the binary, certificates validated with the CA public key from
//! `GetPublicKey`, every step re-run, bad certificates (wrong SAN, expired, signed by another
//! key, mismatched private key) rejected by testSecret and rolled back, renewal at two thirds of
//! the lifetime, rotation through the real function binaries, and no private key in any log
//! line or audit record.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rotor::adapters::{ApiCallCounter, KmsCaSigner, SecretsManager};
use rotor::ca::{self, CaCertificate};
use rotor::kinds::KindSettings;
use rotor::{RotationEvent, Rotator, SecretId, Step, Token};
use serde_json::{json, Value};
use support::runtime_api::{FunctionProcess, Invocation, RuntimeApi};
use support::*;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A CA of this test's own: a fresh KMS key under a unique alias, its certificate in a unique
/// secret.
struct TestCa {
    key_arn: String,
    secret: String,
    cert: CaCertificate,
}

impl TestCa {
    async fn new() -> TestCa {
        Self::named("Rotor test CA").await
    }

    async fn named(cn: &str) -> TestCa {
        let sdk = sdk().await;
        let alias = format!("alias/{}", unique("ca"));
        let (key_arn, created) = rotor::adapters::kms::ensure_ca_key(&sdk, &alias)
            .await
            .unwrap();
        assert!(created);
        let spec = ca::CaSpec {
            common_name: cn.into(),
            organization: Some("Rotor".into()),
            validity: Duration::from_secs(30 * 86400),
        };
        let signer = KmsCaSigner::new(&sdk, None);
        let pem = ca::self_signed(&signer, &key_arn, &spec, rotor::fleet::now())
            .await
            .unwrap();
        let secret = unique("ca-cert");
        create_secret(&client().await, &secret, &pem, &[]).await;
        TestCa {
            key_arn,
            secret,
            cert: CaCertificate::from_pem(&pem).unwrap(),
        }
    }

    fn settings(&self) -> KindSettings {
        KindSettings {
            ca_key_id: self.key_arn.clone(),
            ca_cert_secret: self.secret.clone(),
            ..Default::default()
        }
    }

    async fn rotator(&self, counter: Option<ApiCallCounter>) -> Rotator {
        let sdk = sdk().await;
        let sm = Arc::new(SecretsManager::new(&sdk, counter.clone()));
        Rotator::new(sm, Default::default())
            .with_settings(self.settings())
            .with_signer(Arc::new(KmsCaSigner::new(&sdk, counter)))
    }

    /// A certificate for `params` with a fresh key, signed by this CA through KMS; returns
    /// (certificate PEM, PKCS#8 key PEM).
    async fn issue(&self, params: &CertificateParams) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let signer = KmsCaSigner::new(&sdk().await, None);
        let der = ca::issue(&signer, &self.key_arn, &self.cert, params, &key)
            .await
            .unwrap();
        (ca::pem_certificate(&der), key.serialize_pem())
    }
}

const DNS: &str = "payments.internal";
const URI: &str = "spiffe://example.org/ns/payments/sa/api";

fn profile() -> Value {
    json!({
        "common_name": "payments-api",
        "dns_names": [DNS],
        "ip_addresses": ["127.0.0.1"],
        "uris": [URI],
        "validity": "24h",
        "team": "payments"
    })
}

/// Certificate parameters as the profile above asks for, valid from `nb` to `na`.
fn params(dns: &str, nb: i64, na: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "payments-api");
    p.subject_alt_names = vec![
        SanType::DnsName(dns.try_into().unwrap()),
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
        SanType::URI(URI.try_into().unwrap()),
    ];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(
        &ca::random_serial().unwrap(),
    ));
    p.not_before = ca::to_datetime(nb).unwrap();
    p.not_after = ca::to_datetime(na).unwrap();
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p
}

fn event(step: Step, id: &str, token: &Token) -> RotationEvent {
    RotationEvent {
        step,
        secret_id: SecretId::parse(id).unwrap(),
        token: token.clone(),
    }
}

fn json_at(v: &str) -> Value {
    serde_json::from_str(v).unwrap()
}

/// The base64 body of a PEM block (what would leak if a key were logged in any form).
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// A certificate's (not_before, not_after) in unix seconds.
fn validity(cert_pem: &str) -> (i64, i64) {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let (_, x) = X509Certificate::from_der(&der).unwrap();
    (
        x.validity().not_before.timestamp(),
        x.validity().not_after.timestamp(),
    )
}

/// The KMS public key of the CA, straight from `GetPublicKey` through the AWS CLI.
fn kms_public_key(key: &str) -> Vec<u8> {
    let b64 = aws_cli(&[
        "kms",
        "get-public-key",
        "--key-id",
        key,
        "--query",
        "PublicKey",
    ]);
    aws_smithy_types::base64::decode(b64).unwrap()
}

/// Checks a certificate's signature with the CA's public key from KMS `GetPublicKey`, and the
/// path to the CA certificate with webpki.
fn assert_issued_by(ca: &TestCa, cert_pem: &str) {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let (_, x) = X509Certificate::from_der(&der).unwrap();
    let spki_der = kms_public_key(&ca.key_arn);
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki_der).unwrap();
    x.verify_signature(Some(&spki))
        .expect("certificate signature verifies with the KMS public key");
    let ca_der = rustls_pki_types::CertificateDer::from(ca.cert.der.clone());
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
    let ee = webpki::EndEntityCert::try_from(&der).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        rustls_pki_types::UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .expect("path to the CA validates");
}

#[tokio::test]
async fn ca_init_through_the_binary_creates_keeps_renews_and_publishes() {
    let alias = format!("alias/{}", unique("cli-ca"));
    let secret = unique("cli-ca-cert");
    let dir = std::env::temp_dir().join(unique("ca-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("ca.pem");
    let rotor_cli = |args: &[&str]| {
        let o = std::process::Command::new(binary("rotor"))
            .args(["--endpoint-url", &endpoint()])
            .args(args)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let init = [
        "ca",
        "init",
        "--key-id",
        &alias,
        "--secret",
        &secret,
        "--common-name",
        "Rotor CLI CA",
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, text) = rotor_cli(&init);
    assert!(ok, "{text}");
    assert!(
        text.contains("(created)") && text.contains("new: CA certificate"),
        "{text}"
    );
    // The key is an asymmetric P-256 signing key in KMS.
    assert_eq!(
        aws_cli(&[
            "kms",
            "describe-key",
            "--key-id",
            &alias,
            "--query",
            "KeyMetadata.[KeyUsage,KeyManager]"
        ]),
        "SIGN_VERIFY\tCUSTOMER"
    );
    // Published: the secret and the file hold the same PEM, which verifies with GetPublicKey.
    let published = aws_cli(&[
        "secretsmanager",
        "get-secret-value",
        "--secret-id",
        &secret,
        "--query",
        "SecretString",
    ]);
    let file = std::fs::read_to_string(&out).unwrap();
    assert_eq!(published.trim(), file.trim());
    let ca = CaCertificate::from_pem(&file).unwrap();
    assert!(ca.subject.contains("Rotor CLI CA"));
    assert!(ca.matches_key(&kms_public_key(&alias)));
    let (_, x) = X509Certificate::from_der(&ca.der).unwrap();
    let spki_der = kms_public_key(&alias);
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki_der).unwrap();
    x.verify_signature(Some(&spki)).unwrap();
    assert!(x.is_ca());

    // Again: adopted and kept (idempotent).
    let (ok, text) = rotor_cli(&init);
    assert!(ok, "{text}");
    assert!(
        text.contains("kept") && !text.contains("(created)"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), file);

    // --renew: a new certificate for the same key; the old one stays AWSPREVIOUS.
    let mut renew = init.to_vec();
    renew.push("--renew");
    let (ok, text) = rotor_cli(&renew);
    assert!(ok, "{text}");
    assert!(text.contains("renewed"), "{text}");
    let c = client().await;
    let previous = value_at(&c, &secret, "AWSPREVIOUS").await.unwrap();
    assert_eq!(previous.trim(), file.trim());
    let renewed =
        CaCertificate::from_pem(&value_at(&c, &secret, "AWSCURRENT").await.unwrap()).unwrap();
    assert_ne!(renewed.der, ca.der);
    assert!(renewed.matches_key(&kms_public_key(&alias)));

    // `ca show` reads it back; a symmetric key is refused as a CA key.
    let (ok, text) = rotor_cli(&["ca", "show", "--secret", &secret]);
    assert!(ok && text.contains("Rotor CLI CA"), "{text}");
    let sym = aws_cli(&["kms", "create-key", "--query", "KeyMetadata.KeyId"]);
    let (ok, text) = rotor_cli(&["ca", "init", "--key-id", &sym, "--secret", &unique("x")]);
    assert!(!ok && text.contains("error[CaUnavailable]"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_certificate_rotates_through_every_step_and_reruns_cleanly() {
    let (logs, _guard) = capture_logs();
    let ca = TestCa::new().await;
    let c = client().await;
    let arn = create_secret(
        &c,
        &unique("cert"),
        &profile().to_string(),
        &[("rotor:kind", "x509")],
    )
    .await;
    let counter = ApiCallCounter::default();
    let r = ca.rotator(Some(counter.clone())).await;
    let mut keys = Vec::new();
    let mut serials = Vec::new();
    for round in 0..2 {
        let token = Token::generate().unwrap();
        for step in Step::ALL {
            let first = r.run(&event(step, &arn, &token)).await.unwrap();
            let state = (
                stages(&c, &arn).await,
                value_at(&c, &arn, "AWSPENDING").await,
            );
            for _ in 0..2 {
                r.run(&event(step, &arn, &token)).await.unwrap();
                assert_eq!(
                    (
                        stages(&c, &arn).await,
                        value_at(&c, &arn, "AWSPENDING").await
                    ),
                    state,
                    "re-running {step} changed the secret"
                );
            }
            if step == Step::Finish {
                assert!(
                    first.renew_by.is_some(),
                    "finishSecret reports the renewal time"
                );
            }
        }
        assert_eq!(
            version_with(&c, &arn, "AWSCURRENT").await.as_deref(),
            Some(token.as_str())
        );
        assert_eq!(version_with(&c, &arn, "AWSPENDING").await, None);
        let v = json_at(&value_at(&c, &arn, "AWSCURRENT").await.unwrap());
        assert_eq!(v["team"], "payments", "profile and other fields carry over");
        assert_eq!(v["dns_names"], json!([DNS]));
        let cert = v["certificate"].as_str().unwrap();
        assert_issued_by(&ca, cert);
        assert!(v["chain"].as_str().unwrap().starts_with(cert));
        assert!(v["chain"]
            .as_str()
            .unwrap()
            .ends_with(ca.cert.pem().as_str()));
        assert!(v["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        let (nb, na) = validity(cert);
        let lifetime = na - nb;
        assert_eq!(
            lifetime,
            24 * 3600 + ca::BACKDATE_SECS,
            "24 h, backdated 5 min"
        );
        keys.push(v["private_key"].as_str().unwrap().to_string());
        serials.push(v["serial"].as_str().unwrap().to_string());
        if round == 1 {
            // The previous certificate stays available as AWSPREVIOUS for the overlap.
            let prev = json_at(&value_at(&c, &arn, "AWSPREVIOUS").await.unwrap());
            assert_eq!(prev["serial"].as_str().unwrap(), serials[0]);
        }
    }
    assert_ne!(keys[0], keys[1], "a key is never reused");
    assert_ne!(serials[0], serials[1]);
    // KMS round trips: one Sign per certificate, never GetPublicKey on the rotation path.
    let calls = counter.snapshot();
    assert_eq!(calls.get("KMS.Sign").copied(), Some(2), "{calls:?}");
    assert_eq!(calls.get("KMS.GetPublicKey"), None, "{calls:?}");
    let bodies: Vec<String> = keys.iter().map(|k| pem_body(k)).collect();
    logs.assert_absent(&bodies.iter().map(String::as_str).collect::<Vec<_>>());
    logs.assert_absent(&keys.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A pending version holding `value` under a new token (as a createSecret would leave it).
async fn stage_pending(c: &aws_sdk_secretsmanager::Client, arn: &str, value: &Value) -> Token {
    let token = Token::generate().unwrap();
    c.put_secret_value()
        .secret_id(arn)
        .client_request_token(token.as_str())
        .secret_string(value.to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    token
}

#[tokio::test]
async fn test_secret_rejects_bad_certificates_and_rollback_keeps_the_current_one() {
    let (logs, _guard) = capture_logs();
    let ca = TestCa::new().await;
    let c = client().await;
    let arn = create_secret(
        &c,
        &unique("bad-cert"),
        &profile().to_string(),
        &[("rotor:kind", "x509")],
    )
    .await;
    let r = ca.rotator(None).await;
    r.rotate(&SecretId::parse(&arn).unwrap()).await.unwrap();
    let current = value_at(&c, &arn, "AWSCURRENT").await.unwrap();
    let current_id = version_with(&c, &arn, "AWSCURRENT").await;
    let now = rotor::fleet::now();

    let chain = |cert: &str| format!("{cert}{}", ca.cert.pem());
    let with = |cert: &str, key: &str| {
        let mut v = profile();
        v["certificate"] = cert.into();
        v["private_key"] = key.into();
        v["chain"] = chain(cert).into();
        v
    };
    // A good certificate, the baseline every forgery differs from by one thing.
    let (good, good_key) = ca.issue(&params(DNS, now - 60, now + 3600)).await;
    let (wrong_san, wrong_san_key) = ca
        .issue(&params("evil.internal", now - 60, now + 3600))
        .await;
    let (expired, expired_key) = ca.issue(&params(DNS, now - 2 * 86400, now - 86400)).await;
    // Another KMS key with a CA certificate of the same name: same issuer DN, other key.
    let other = TestCa::named("Rotor test CA").await;
    let (foreign, foreign_key) = other.issue(&params(DNS, now - 60, now + 3600)).await;
    let stranger_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let mut foreign_value = with(&foreign, &foreign_key);
    foreign_value["chain"] = format!("{foreign}{}", ca.cert.pem()).into();

    let cases = [
        (
            "wrong SAN",
            with(&wrong_san, &wrong_san_key),
            "evil.internal",
        ),
        ("expired", with(&expired, &expired_key), "Expired"),
        ("signed by another key", foreign_value, "path validation"),
        (
            "mismatched private key",
            with(&good, &stranger_key),
            "does not belong",
        ),
    ];
    // The baseline passes, so each rejection below is down to its one difference.
    let token = stage_pending(&c, &arn, &with(&good, &good_key)).await;
    r.run(&event(Step::Test, &arn, &token)).await.unwrap();
    r.rollback(&SecretId::parse(&arn).unwrap(), &token)
        .await
        .unwrap();

    for (name, value, needle) in cases {
        let token = stage_pending(&c, &arn, &value).await;
        let err = r
            .run(&event(Step::Test, &arn, &token))
            .await
            .expect_err(name);
        assert_eq!(err.error_type(), "CertificateRejected", "{name}: {err}");
        assert!(err.to_string().contains(needle), "{name}: {err}");
        let rb = r
            .rollback(&SecretId::parse(&arn).unwrap(), &token)
            .await
            .unwrap();
        assert_eq!(rb.outcome, rotor::Outcome::RolledBack, "{name}");
        assert_eq!(version_with(&c, &arn, "AWSPENDING").await, None, "{name}");
        assert_eq!(version_with(&c, &arn, "AWSCURRENT").await, current_id);
        assert_eq!(value_at(&c, &arn, "AWSCURRENT").await.unwrap(), current);
    }
    // A pending value missing its key is a typed error too, never a panic.
    let mut no_key = with(&good, &good_key);
    no_key.as_object_mut().unwrap().remove("private_key");
    let token = stage_pending(&c, &arn, &no_key).await;
    let err = r.run(&event(Step::Test, &arn, &token)).await.unwrap_err();
    assert_eq!(err.error_type(), "InvalidSecretValue", "{err}");
    let keys = [
        good_key,
        wrong_san_key,
        expired_key,
        foreign_key,
        stranger_key,
        json_at(&current)["private_key"].as_str().unwrap().into(),
    ];
    let bodies: Vec<String> = keys.iter().map(|k| pem_body(k)).collect();
    logs.assert_absent(&bodies.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_certificate_identity_renews_at_two_thirds_of_its_lifetime_whatever_its_interval() {
    let env = FleetEnv::new().await;
    let ca = TestCa::new().await;
    let c = client().await;
    let mut p = profile();
    p["validity"] = "3h".into();
    let name = unique("fleet-cert");
    let arn = create_secret(&c, &name, &p.to_string(), &[("rotor:kind", "x509")]).await;
    let mut config = env.config.clone();
    config.kinds = ca.settings();
    let fleet = rotor::adapters::wire_fleet(
        &config,
        &sdk().await,
        None,
        rotor::metrics::Metrics::new(rotor::metrics::Sink::Off, "test"),
    )
    .unwrap();
    let id = format!("{name}/id");
    let manifest: rotor::manifest::Manifest = serde_json::from_value(json!({"identities": [
        {"id": id, "kind": "x509", "secret": arn, "owner": "payments", "tier": "low",
         "interval_days": 90}
    ]}))
    .unwrap();
    let t0 = rotor::fleet::now();
    fleet.register(&manifest, "test", t0).await.unwrap();
    let (_, results) = fleet.run("test", 10, 2, t0 + 600).await.unwrap();
    let mine: Vec<_> = results.iter().filter(|r| r.identity_id == id).collect();
    assert_eq!(mine.len(), 1);
    assert!(mine[0].succeeded, "{:?}", mine[0]);
    let v = json_at(&value_at(&c, &arn, "AWSCURRENT").await.unwrap());
    let (nb, na) = validity(v["certificate"].as_str().unwrap());
    let renew = rotor::kinds::x509::renew_at(nb, na);
    let ident = fleet.inventory.get(&id).await.unwrap().unwrap();
    assert_eq!(
        ident.next_due_at, renew,
        "due at two thirds, not after 90 days"
    );
    assert!(renew < na && renew - nb == (na - nb) * 2 / 3);
    // Not due a minute before; due a minute after.
    let before = fleet.plan("test", 100, renew - 60).await.unwrap();
    assert!(before.items.iter().all(|i| i.identity_id != id));
    let after = fleet.plan("test", 100, renew + 60).await.unwrap();
    assert!(after.items.iter().any(|i| i.identity_id == id));
    // The audit log holds no private key.
    let key = v["private_key"].as_str().unwrap();
    let table = config.audit_table.clone().unwrap();
    let scan = scan_table(&table);
    assert!(scan.contains(&id), "audit records for the identity exist");
    assert!(!scan.contains(&pem_body(key)) && !scan.contains("PRIVATE KEY"));
}

async fn start(binary: &str, env: &[(&'static str, String)]) -> (RuntimeApi, FunctionProcess) {
    let api = RuntimeApi::start().await;
    let p = FunctionProcess::spawn(&support::binary(binary), binary, &api, env);
    (api, p)
}

#[tokio::test]
async fn certificates_rotate_through_the_real_function_binaries() {
    let ca = TestCa::new().await;
    let c = client().await;
    let arn = create_secret(
        &c,
        &unique("bin-cert"),
        &profile().to_string(),
        &[("rotor:kind", "x509")],
    )
    .await;
    let mut env = function_env();
    env.push(("ROTOR_CA_KEY_ID", ca.key_arn.clone()));
    env.push(("ROTOR_CA_CERT_SECRET", ca.secret.clone()));
    let token = Token::generate().unwrap();
    let mut procs = Vec::new();
    for (binary, file, outcome) in [
        ("create-secret", "create-secret.json", "created"),
        ("set-secret", "set-secret.json", "noTarget"),
        ("test-secret", "test-secret.json", "tested"),
        ("finish-secret", "finish-secret.json", "finished"),
    ] {
        let (api, p) = start(binary, &env).await;
        let e = sample_event(file, Some(&arn), Some(token.as_str()));
        match api.invoke(e).await {
            Invocation::Ok(v) => assert_eq!(v["outcome"], outcome, "{binary}: {v}"),
            Invocation::Err {
                error_type,
                error_message,
            } => panic!("{binary}: {error_type}: {error_message}"),
        }
        procs.push((api, p));
    }
    let v = json_at(&value_at(&c, &arn, "AWSCURRENT").await.unwrap());
    assert_issued_by(&ca, v["certificate"].as_str().unwrap());
    // The rotate dispatcher: a second rotation, and a broken CA setting as a typed error.
    let (api, p) = start("rotate", &env).await;
    let t2 = Token::generate().unwrap();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let e = json!({"Step": step, "SecretId": arn, "ClientRequestToken": t2.as_str()});
        assert!(matches!(api.invoke(e).await, Invocation::Ok(_)), "{step}");
    }
    let v2 = json_at(&value_at(&c, &arn, "AWSCURRENT").await.unwrap());
    assert_ne!(v2["serial"], v["serial"]);
    procs.push((api, p));
    let mut broken = env.clone();
    broken.retain(|(k, _)| *k != "ROTOR_CA_CERT_SECRET");
    broken.push(("ROTOR_CA_CERT_SECRET", unique("no-such-ca")));
    let (api, p) = start("create-secret", &broken).await;
    let e = sample_event(
        "create-secret.json",
        Some(&arn),
        Some(Token::generate().unwrap().as_str()),
    );
    match api.invoke(e).await {
        Invocation::Err {
            error_type,
            error_message,
        } => {
            assert_eq!(error_type, "CaUnavailable");
            assert!(error_message.contains("rotor ca init"), "{error_message}");
        }
        Invocation::Ok(v) => panic!("expected CaUnavailable, got {v}"),
    }
    assert_eq!(
        version_with(&c, &arn, "AWSCURRENT").await,
        Some(t2.to_string())
    );
    procs.push((api, p));
    let keys = [
        v["private_key"].as_str().unwrap().to_string(),
        v2["private_key"].as_str().unwrap().to_string(),
    ];
    for (api, p) in procs {
        let logs = p.logs();
        for k in &keys {
            assert!(
                !logs.contains(&pem_body(k)) && !logs.contains("PRIVATE KEY"),
                "private key in the logs"
            );
        }
        p.stop().await;
        drop(api);
    }
}
