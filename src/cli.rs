//! The `rotor` command line. It runs the same step code as the Lambda functions, in-process,
//! against whatever endpoint the SDK is given (`--endpoint-url` / `AWS_ENDPOINT_URL`, else AWS),
//! and prints version ids and staging labels — never secret values.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::adapters::{load_sdk_config, ApiCallCounter, SecretsManager};
use crate::config::Config;
use crate::error::{Result, RotorError};
use crate::event::{RotationEvent, SecretId, Step, Token};
use crate::fleet::{now, Fleet, ItemResult};
use crate::inventory::{Identity, Status};
use crate::localstack::LocalStack;
use crate::manifest::Manifest;
use crate::metrics::{Metrics, Sink};
use crate::ports::{SecretMeta, SecretStore};
use crate::steps::{Rotator, StepReport};

#[derive(Debug, Parser)]
#[command(name = "rotor", version, about = "Machine-identity rotation for AWS")]
pub struct Cli {
    /// AWS endpoint to use instead of AWS itself (moto's server locally).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the inventory and audit tables, the audit MAC key and the alert topic if missing.
    Init,
    /// Register (or update) the identities of a manifest file; idempotent.
    Register { manifest: std::path::PathBuf },
    /// List managed identities: id, kind, tier, owner, age, next due, status.
    Inventory,
    /// Plan and rotate every identity due now, in-process, with bounded concurrency.
    Run {
        #[arg(long, default_value_t = 50)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Rotate one managed identity now (a manual action), or a bare secret with --secret-id.
    Rotate {
        /// The identity's id.
        id: Option<String>,
        /// A secret outside the inventory: rotated, not recorded.
        #[arg(long, conflicts_with = "id")]
        secret_id: Option<String>,
    },
    /// Show an identity's audit log, or `audit verify [ID]` to check the hash chains and MACs.
    Audit {
        /// An identity id, or `verify`.
        what: String,
        /// With `verify`: one identity (default: all).
        id: Option<String>,
    },
    /// Overdue, failing, unmanaged and never-rotated identities.
    Report,
    /// Run one step for a token, as a rotation function would.
    Step {
        /// createSecret, setSecret, testSecret or finishSecret.
        step: String,
        #[arg(long)]
        secret_id: String,
        #[arg(long)]
        token: String,
    },
    /// Undo a half-done rotation: drop AWSPENDING from the token (AWSCURRENT is never touched).
    Rollback {
        #[arg(long)]
        secret_id: String,
        #[arg(long)]
        token: String,
    },
    /// Show a secret's versions and staging labels.
    Versions {
        #[arg(long)]
        secret_id: String,
    },
    /// The certificate authority whose key stays in KMS: `ca init`, `ca show`.
    Ca {
        #[command(subcommand)]
        action: CaCommand,
    },
    /// Start the local stack if none is running, seed demo secrets, rotate them, show versions.
    Demo,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create (or adopt) the CA's KMS key (ECC_NIST_P256, SIGN_VERIFY), sign a self-signed CA
    /// certificate through KMS and publish it in a secret. Idempotent: an existing, valid CA
    /// certificate for the same key is kept unless --renew.
    Init {
        /// KMS key id, ARN or alias (default: ROTOR_CA_KEY_ID, else alias/rotor-ca; an alias
        /// that does not exist yet gets a new key).
        #[arg(long)]
        key_id: Option<String>,
        /// Secret to publish the CA certificate in (default: ROTOR_CA_CERT_SECRET, else
        /// rotor/ca-certificate).
        #[arg(long)]
        secret: Option<String>,
        #[arg(long, default_value = "Rotor CA")]
        common_name: String,
        #[arg(long)]
        organization: Option<String>,
        /// Lifetime of the CA certificate.
        #[arg(long, default_value = "3650d")]
        validity: humantime::Duration,
        /// Issue a new CA certificate for the same key even if the current one is valid (the
        /// old one stays AWSPREVIOUS; certificates it signed keep verifying: same key, same
        /// subject).
        #[arg(long)]
        renew: bool,
        /// Also write the CA certificate (PEM) to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Show the published CA certificate (subject, validity, key); --out writes its PEM.
    Show {
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// Parses the arguments and runs the command; errors print as `error[Type]: message`.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init_cli();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error[{}]: {e}", e.error_type());
            ExitCode::FAILURE
        }
    }
}

struct Session {
    secrets: Arc<SecretsManager>,
    rotator: Rotator,
    calls: ApiCallCounter,
}

async fn session(endpoint: Option<&str>) -> Result<Session> {
    let config = Config::from_env()?;
    let sdk = load_sdk_config(endpoint).await;
    let calls = ApiCallCounter::default();
    let secrets = Arc::new(SecretsManager::new(&sdk, Some(calls.clone())));
    let rotator = crate::adapters::rotator(&config, &sdk, secrets.clone(), Some(calls.clone()));
    Ok(Session {
        secrets,
        rotator,
        calls,
    })
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    crate::inventory::configure_tier_days(Config::from_env()?.tier_days);
    let endpoint = cli.endpoint_url.as_deref();
    match cli.command {
        Command::Init => {
            init(endpoint).await?;
        }
        Command::Register { manifest } => {
            let f = fleet_session(endpoint).await?;
            let m = Manifest::load(&manifest)?;
            let r = f.register(&m, &actor(), now()).await?;
            println!(
                "registered {}: {} created, {} updated, {} unchanged",
                manifest.display(),
                r.created.len(),
                r.updated.len(),
                r.unchanged.len()
            );
            for (label, ids) in [("created", &r.created), ("updated", &r.updated)] {
                for id in ids {
                    println!("  {label}: {id}");
                }
            }
        }
        Command::Inventory => print_inventory(&fleet_session(endpoint).await?).await?,
        Command::Run { batch, concurrency } => {
            let f = fleet_session(endpoint).await?;
            run_due(&f, batch, concurrency).await?;
        }
        Command::Rotate { id: Some(id), .. } => {
            let f = fleet_session(endpoint).await?;
            let r = f.rotate_now(&id, &actor()).await?;
            print_result(&r);
            if !r.succeeded {
                return Err(RotorError::TestFailed {
                    secret: id,
                    reason: format!(
                        "rotation failed ({}) and was rolled back",
                        r.error_type.unwrap_or_default()
                    ),
                });
            }
        }
        Command::Rotate {
            id: None,
            secret_id: None,
        } => {
            return Err(RotorError::InvalidEvent(
                "rotate needs an identity id or --secret-id".into(),
            ))
        }
        Command::Audit { what, id } => {
            let f = fleet_session(endpoint).await?;
            if what == "verify" {
                verify(&f, id.as_deref()).await?;
            } else {
                print_audit(&f, &what).await?;
            }
        }
        Command::Report => print_report(&fleet_session(endpoint).await?).await?,
        Command::Rotate {
            id: None,
            secret_id: Some(secret_id),
        } => {
            let s = session(endpoint).await?;
            let id = SecretId::parse(&secret_id)?;
            let before = s.secrets.describe(&id).await?;
            s.calls.reset();
            let started = Instant::now();
            let reports = s.rotator.rotate(&id).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let after = s.secrets.describe(&id).await?;
            print_rotation(&before, &after, &reports, ms, Some(s.calls.total()));
        }
        Command::Step {
            step,
            secret_id,
            token,
        } => {
            let s = session(endpoint).await?;
            let event = RotationEvent {
                step: Step::parse(&step)?,
                secret_id: SecretId::parse(&secret_id)?,
                token: Token::parse(&token)?,
            };
            let r = s.rotator.run(&event).await?;
            println!("{} {}: {}", r.step, r.secret_arn, r.outcome.as_str());
        }
        Command::Rollback { secret_id, token } => {
            let s = session(endpoint).await?;
            let r = s
                .rotator
                .rollback(&SecretId::parse(&secret_id)?, &Token::parse(&token)?)
                .await?;
            println!("rollback {}: {}", r.secret_arn, r.outcome.as_str());
        }
        Command::Versions { secret_id } => {
            let s = session(endpoint).await?;
            let meta = s.secrets.describe(&SecretId::parse(&secret_id)?).await?;
            println!("{}", meta.arn);
            print_versions("  ", &meta);
        }
        Command::Ca { action } => match action {
            CaCommand::Init {
                key_id,
                secret,
                common_name,
                organization,
                validity,
                renew,
                out,
            } => {
                let spec = crate::ca::CaSpec {
                    common_name,
                    organization,
                    validity: validity.into(),
                };
                let opts = CaInit {
                    key_id,
                    secret,
                    renew,
                    out,
                };
                ca_init(endpoint, &spec, &opts).await?;
            }
            CaCommand::Show { secret, out } => ca_show(endpoint, secret, out).await?,
        },
        Command::Demo => demo(endpoint).await?,
    }
    Ok(())
}

fn print_versions(indent: &str, meta: &SecretMeta) {
    let mut rows: Vec<_> = meta
        .versions
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    rows.sort_by_key(|(_, s)| stage_rank(s));
    for (v, stages) in rows {
        println!("{indent}{v}  {}", stages.join(", "));
    }
}

fn stage_rank(stages: &[String]) -> u8 {
    if stages.iter().any(|s| s == "AWSCURRENT") {
        0
    } else if stages.iter().any(|s| s == "AWSPENDING") {
        1
    } else {
        2
    }
}

fn print_rotation(
    before: &SecretMeta,
    after: &SecretMeta,
    reports: &[StepReport],
    ms: f64,
    calls: Option<u64>,
) {
    println!("{}", after.arn);
    println!("  before:");
    print_versions("    ", before);
    println!("  after:");
    print_versions("    ", after);
    let steps: Vec<String> = reports
        .iter()
        .map(|r| format!("{} {}", r.step, r.outcome.as_str()))
        .collect();
    let calls = calls
        .map(|c| format!(", {c} API calls"))
        .unwrap_or_default();
    println!("  steps: {}  ({ms:.1} ms{calls})", steps.join(" → "));
}

/// A demo secret: name, initial value, tags. Values are throwaway; they are never printed.
type DemoSecret = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const DEMO_SECRETS: &[DemoSecret] = &[
    (
        "rotor-demo/partner-api-key",
        "initial-api-key-value",
        &[("rotor:managed", "true"), ("owner", "payments")],
    ),
    (
        "rotor-demo/orders-db",
        r#"{"engine":"postgres","host":"orders.internal","port":5432,"username":"orders_app","password":"initial-password","dbname":"orders"}"#,
        &[("rotor:managed", "true"), ("owner", "orders")],
    ),
    (
        "rotor-demo/webhook-signing",
        r#"{"url":"https://hooks.example.com/in","signing_key":"initial-signing-key","algorithm":"HMAC-SHA256"}"#,
        &[
            ("rotor:managed", "true"),
            ("rotor:fields", "signing_key"),
            ("rotor:length", "48"),
            ("rotor:require", "lower,upper,digit"),
        ],
    ),
    (
        DEMO_CERT_SECRET,
        r#"{"common_name":"payments-api","organization":"Example Corp","dns_names":["payments.internal","localhost"],"ip_addresses":["127.0.0.1"],"uris":["spiffe://example.org/ns/payments/sa/api"],"usages":["client","server"],"validity":"24h"}"#,
        &[("rotor:managed", "true"), ("rotor:kind", "x509")],
    ),
];

/// The demo's certificate identity (its profile above; the CA comes from `ca init`).
const DEMO_CERT_SECRET: &str = "rotor-demo/payments-mtls";

async fn demo(endpoint: Option<&str>) -> Result<()> {
    let stack = LocalStack::ensure(endpoint)?;
    println!(
        "Rotor demo: local stack at {} ({})\n",
        stack.endpoint(),
        if stack.started_here() {
            "moto's server, started for this demo"
        } else {
            "already running"
        }
    );
    let url = Some(stack.endpoint());
    let topic = init(url).await?;
    println!();
    ca_init(
        url,
        &crate::ca::CaSpec {
            common_name: "Rotor demo CA".into(),
            organization: Some("Rotor".into()),
            validity: std::time::Duration::from_secs(3650 * 86400),
        },
        &CaInit::default(),
    )
    .await?;
    println!();
    let s = session(url).await?;
    for (name, value, tags) in DEMO_SECRETS {
        seed(&s, name, value, tags).await?;
    }
    let manifest_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/manifest.json");
    let mut manifest = Manifest::load(&manifest_path)?;
    let pg = demo_postgres(&s).await?;
    if let Some(entry) = &pg {
        manifest.identities.push(entry.clone());
    }
    let mut config = Config::from_env()?.with_local_defaults();
    config.alert_topic_arn = Some(topic);
    let f = fleet_with(url, &config).await?;
    let r = f.register(&manifest, &actor(), now()).await?;
    println!(
        "$ rotor register demo/manifest.json\n{} created, {} updated, {} unchanged\n",
        r.created.len(),
        r.updated.len(),
        r.unchanged.len()
    );
    println!("$ rotor inventory");
    print_inventory(&f).await?;
    let before: Vec<(String, SecretMeta)> = {
        let mut v = Vec::new();
        for i in f.inventory.list().await? {
            v.push((
                i.id.clone(),
                s.secrets.describe(&SecretId::parse(&i.secret)?).await?,
            ));
        }
        v
    };
    println!("\n$ rotor run");
    run_due(&f, 50, 4).await?;
    println!("\nVersions before → after (ids and labels only; values are never printed):");
    for (id, meta) in before {
        let after = s.secrets.describe(&SecretId::parse(&meta.arn)?).await?;
        println!("{id}  ({})", after.name);
        println!("  before:");
        print_versions("    ", &meta);
        println!("  after:");
        print_versions("    ", &after);
    }
    println!("\n$ rotor inventory");
    print_inventory(&f).await?;
    if let Some(entry) = &pg {
        demo_pg_login(&s, entry).await?;
    }
    demo_certificate(&s, &f).await?;
    println!("\n$ rotor run   (again: nothing is due now)");
    run_due(&f, 50, 4).await?;
    let first = &manifest.identities[0].id;
    println!("\n$ rotor audit {first}");
    print_audit(&f, first).await?;
    println!("\n$ rotor audit verify");
    verify(&f, None).await?;
    println!("\nInspect with the AWS CLI, e.g.:");
    println!(
        "  aws --endpoint-url {} secretsmanager describe-secret --secret-id {}",
        stack.endpoint(),
        DEMO_SECRETS[0].0
    );
    if stack.started_here() {
        println!("(the demo's moto server stops now; set AWS_ENDPOINT_URL to a running one to keep state)");
    }
    Ok(())
}

/// With a PostgreSQL server named by `ROTOR_DEMO_PG_HOST` / `_PORT` / `_ADMIN_USER` /
/// `_ADMIN_PASSWORD` (`scripts/demo` starts one), creates the role `orders_app` and two secrets in
/// AWS's format — the master and the app's, alternating users — and returns the app's manifest
/// entry. Without one, the demo skips PostgreSQL.
async fn demo_postgres(s: &Session) -> Result<Option<crate::manifest::Entry>> {
    let var = |k: &str| {
        std::env::var(format!("ROTOR_DEMO_PG_{k}"))
            .ok()
            .filter(|v| !v.is_empty())
    };
    let (Some(host), Some(port), Some(admin), Some(admin_pw)) = (
        var("HOST"),
        var("PORT"),
        var("ADMIN_USER"),
        var("ADMIN_PASSWORD"),
    ) else {
        println!("(no ROTOR_DEMO_PG_* server: skipping the PostgreSQL identity; scripts/demo starts one)\n");
        return Ok(None);
    };
    let port: u16 = port
        .parse()
        .map_err(|_| RotorError::Config("ROTOR_DEMO_PG_PORT is not a port".into()))?;
    let db = |e: tokio_postgres::Error| RotorError::Database {
        kind: crate::error::DbFailure::Statement,
        context: "demo set-up".into(),
        message: e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string()),
    };
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host)
        .port(port)
        .user(&admin)
        .password(&admin_pw)
        .dbname("postgres");
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(db)?;
    tokio::spawn(conn);
    let initial =
        crate::kinds::generic::generate_value(&crate::policy::GeneratorPolicy::default())?;
    let verifier = postgres_protocol::password::scram_sha_256(initial.as_bytes());
    let exists = !client
        .query("SELECT 1 FROM pg_roles WHERE rolname = 'orders_app'", &[])
        .await
        .map_err(db)?
        .is_empty();
    if !exists {
        let row = client
            .query_one(
                "SELECT format('CREATE ROLE orders_app LOGIN PASSWORD %L', $1::text)",
                &[&verifier],
            )
            .await
            .map_err(db)?;
        let statement: String = row.get(0);
        client.batch_execute(&statement).await.map_err(db)?;
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS public.orders (id int); GRANT SELECT, INSERT ON public.orders TO orders_app")
            .await
            .map_err(db)?;
    }
    let tls = std::env::var("ROTOR_DB_CA_BUNDLE").is_ok();
    let secret = |user: &str, pw: &str, master: Option<&str>| {
        let mut v = serde_json::json!({"engine": "postgres", "host": host, "port": port, "username": user,
                                       "password": pw, "dbname": "postgres", "ssl": tls});
        if let Some(m) = master {
            v["masterarn"] = serde_json::json!(m);
        }
        v.to_string()
    };
    seed(
        s,
        "rotor-demo/pg-master",
        &secret(&admin, &admin_pw, None),
        &[("rotor:managed", "true")],
    )
    .await?;
    let master_arn = s
        .secrets
        .describe(&SecretId::parse("rotor-demo/pg-master")?)
        .await?
        .arn;
    if !exists {
        seed(
            s,
            "rotor-demo/orders-pg",
            &secret("orders_app", &initial, Some(&master_arn)),
            &[("rotor:managed", "true")],
        )
        .await?;
    }
    Ok(Some(crate::manifest::Entry {
        id: "orders/pg-app".into(),
        kind: "postgres".into(),
        secret: "rotor-demo/orders-pg".into(),
        owner: "orders".into(),
        tier: crate::inventory::Tier::Critical,
        interval_days: None,
        window: None,
        depends_on: vec!["orders-api".into()],
        privileges: vec!["orders-db:select,insert".into()],
        status: crate::inventory::Status::Active,
    }))
}

/// Logs in with the PostgreSQL identity's new AWSCURRENT credential (the demo's proof).
async fn demo_pg_login(s: &Session, entry: &crate::manifest::Entry) -> Result<()> {
    use secrecy::ExposeSecret;
    let id = SecretId::parse(&entry.secret)?;
    let meta = s.secrets.describe(&id).await?;
    let value = s
        .secrets
        .get_value(&meta.arn, None, crate::ports::AWSCURRENT)
        .await?
        .ok_or_else(|| RotorError::NoCurrentValue(meta.arn.clone()))?;
    let v: serde_json::Value = serde_json::from_str(value.expose_secret())
        .map_err(|_| RotorError::Config("demo secret is not JSON".into()))?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(v["host"].as_str().unwrap_or_default())
        .port(v["port"].as_u64().unwrap_or(5432) as u16)
        .user(v["username"].as_str().unwrap_or_default())
        .password(v["password"].as_str().unwrap_or_default())
        .dbname("postgres");
    let user = v["username"].as_str().unwrap_or_default().to_string();
    match cfg.connect(tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            let n: i64 = client
                .query_one("SELECT count(*) FROM public.orders", &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(-1);
            println!("\n{}: logged in to PostgreSQL as {user} with the new AWSCURRENT credential (orders rows: {n})", entry.id);
        }
        Err(_) => println!(
            "\n{}: login as {user} with the new AWSCURRENT credential FAILED",
            entry.id
        ),
    }
    Ok(())
}

/// `cli:<user>`: the actor the audit log records for CLI actions.
fn actor() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    format!("cli:{}", user.unwrap_or_else(|| "local".into()))
}

async fn fleet_session(endpoint: Option<&str>) -> Result<Fleet> {
    fleet_with(endpoint, &Config::from_env()?.with_local_defaults()).await
}

async fn fleet_with(endpoint: Option<&str>, config: &Config) -> Result<Fleet> {
    let sdk = load_sdk_config(endpoint).await;
    let sink = match std::env::var("ROTOR_METRICS").as_deref() {
        Ok("stderr") => Sink::Stderr,
        _ => Sink::Off,
    };
    crate::adapters::wire_fleet(config, &sdk, None, Metrics::new(sink, "cli"))
}

/// The audit MAC key named by `key` (an id, ARN or `alias/…`); an alias that does not exist yet
/// gets a new HMAC key.
async fn ensure_mac_key(sdk: &aws_config::SdkConfig, key: &str) -> Result<String> {
    let kms = aws_sdk_kms::Client::new(sdk);
    match kms.describe_key().key_id(key).send().await {
        Ok(_) => return Ok(key.to_string()),
        Err(e)
            if !(key.starts_with("alias/")
                && e.as_service_error()
                    .is_some_and(|se| se.is_not_found_exception())) =>
        {
            return Err(crate::adapters::secretsmanager::aws_error("DescribeKey", e));
        }
        Err(_) => {}
    }
    let id = crate::adapters::kms::create_mac_key(sdk).await?;
    kms.create_alias()
        .alias_name(key)
        .target_key_id(&id)
        .send()
        .await
        .map_err(|e| crate::adapters::secretsmanager::aws_error("CreateAlias", e))?;
    Ok(key.to_string())
}

/// Creates what the fleet needs on the current endpoint if missing; returns the topic ARN.
async fn init(endpoint: Option<&str>) -> Result<String> {
    let config = Config::from_env()?.with_local_defaults();
    let sdk = load_sdk_config(endpoint).await;
    let inv_table = config.inventory_table.clone().unwrap_or_default();
    let audit_table = config.audit_table.clone().unwrap_or_default();
    let key = config.audit_mac_key_id.clone().unwrap_or_default();
    crate::adapters::DynamoInventory::new(&sdk, &inv_table, None)
        .create_table()
        .await?;
    let key_id = ensure_mac_key(&sdk, &key).await?;
    let custody = std::sync::Arc::new(crate::adapters::KmsCustody::new(&sdk, key_id.clone(), None));
    crate::adapters::DynamoAudit::new(&sdk, &audit_table, custody, None)
        .create_table()
        .await?;
    let topic = crate::adapters::AwsNotifier::new(&sdk, None, None, None)
        .create_topic("rotor-alerts")
        .await?;
    println!("$ rotor init   (tables, audit MAC key and alert topic; created where missing)");
    println!("export ROTOR_INVENTORY_TABLE={inv_table}");
    println!("export ROTOR_AUDIT_TABLE={audit_table}");
    println!("export ROTOR_AUDIT_MAC_KEY_ID={key}");
    println!("export ROTOR_ALERT_TOPIC_ARN={topic}");
    Ok(topic)
}

async fn run_due(f: &Fleet, batch: usize, concurrency: usize) -> Result<()> {
    let (plan, results) = f.run(&actor(), batch, concurrency, now()).await?;
    println!(
        "planned: {} due, {} leased ({} DynamoDB requests, {} items read)",
        plan.due,
        plan.items.len(),
        plan.requests,
        plan.items_read
    );
    for r in &results {
        print_result(r);
    }
    let failed = results.iter().filter(|r| !r.succeeded).count();
    println!(
        "rotated {} of {}, {failed} failed and rolled back",
        results.len() - failed,
        results.len()
    );
    Ok(())
}

fn print_result(r: &ItemResult) {
    println!(
        "  {:<28} {}  {}  ({:.1} ms; next due {}; {})",
        r.identity_id,
        if r.succeeded { "ok    " } else { "FAILED" },
        r.steps.join(" → "),
        r.ms,
        relative(r.next_due_at - now()),
        r.status
    );
}

/// "in 29d 23h", "3h ago".
fn relative(secs: i64) -> String {
    let a = secs.unsigned_abs();
    let text = if a >= 86_400 {
        format!("{}d {}h", a / 86_400, (a % 86_400) / 3600)
    } else if a >= 3600 {
        format!("{}h {}m", a / 3600, (a % 3600) / 60)
    } else if a >= 60 {
        format!("{}m", a / 60)
    } else {
        format!("{a}s")
    };
    if secs >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

async fn print_inventory(f: &Fleet) -> Result<()> {
    let t = now();
    println!(
        "{:<28} {:<8} {:<9} {:<10} {:<12} {:<14} status",
        "id", "kind", "tier", "owner", "age", "next due"
    );
    for i in f.inventory.list().await? {
        let age = i
            .last_rotated_at
            .map(|r| {
                relative(r - t)
                    .trim_start_matches("in ")
                    .trim_end_matches(" ago")
                    .to_string()
            })
            .unwrap_or_else(|| "never".into());
        let due = if i.status == Status::Active {
            relative(i.next_due_at - t)
        } else {
            "-".into()
        };
        println!(
            "{:<28} {:<8} {:<9} {:<10} {:<12} {:<14} {}",
            i.id,
            i.kind,
            i.tier.as_str(),
            i.owner,
            age,
            due,
            i.status.as_str()
        );
    }
    Ok(())
}

async fn print_audit(f: &Fleet, id: &str) -> Result<()> {
    let records = f.audit.records(id).await?;
    if records.is_empty() {
        return Err(RotorError::InvalidPolicy(format!(
            "no audit records for identity {id}"
        )));
    }
    for r in records {
        let at =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.entry.at_ms.max(0) as u64);
        println!(
            "{:>4}  {}  {:<13} {:<18} {}{}{}",
            r.seq,
            humantime::format_rfc3339_seconds(at),
            r.entry.action,
            r.entry.outcome,
            r.entry.actor,
            r.entry
                .token
                .map(|t| format!("  token {t}"))
                .unwrap_or_default(),
            r.entry
                .error_type
                .map(|e| format!("  error {e}"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

async fn verify(f: &Fleet, id: Option<&str>) -> Result<()> {
    let ids = match id {
        Some(id) => vec![id.to_string()],
        None => f.audit.identities().await?,
    };
    let mut bad = Vec::new();
    for id in ids {
        let v = f.verify(&id).await?;
        match &v.tamper {
            None => println!(
                "ok        {id} ({} records, chain and head MAC verified)",
                v.records
            ),
            Some(t) => {
                println!(
                    "TAMPERED  {id}: {}",
                    serde_json::to_string(t).unwrap_or_default()
                );
                bad.push((id, t.clone()));
            }
        }
    }
    match bad.into_iter().next() {
        None => Ok(()),
        Some((identity, t)) => Err(RotorError::AuditTampered {
            identity,
            problem: serde_json::to_string(&t).unwrap_or_default(),
        }),
    }
}

async fn print_report(f: &Fleet) -> Result<()> {
    let t = now();
    let all = f.inventory.list().await?;
    type Pred<'a> = Box<dyn Fn(&Identity) -> bool + 'a>;
    let sections: [(&str, Pred<'_>); 4] = [
        (
            "overdue (due more than an hour ago)",
            Box::new(move |i: &Identity| i.status == Status::Active && i.next_due_at < t - 3600),
        ),
        (
            "failing",
            Box::new(|i: &Identity| i.status == Status::Failing),
        ),
        (
            "unmanaged",
            Box::new(|i: &Identity| i.status == Status::Unmanaged),
        ),
        (
            "never rotated",
            Box::new(|i: &Identity| i.last_rotated_at.is_none() && i.status != Status::Retired),
        ),
    ];
    for (title, pred) in sections {
        let hits: Vec<&Identity> = all.iter().filter(|i| pred(i)).collect();
        println!("{title}: {}", hits.len());
        for i in hits {
            println!(
                "  {:<28} owner {:<10} tier {:<9} next due {}{}",
                i.id,
                i.owner,
                i.tier.as_str(),
                relative(i.next_due_at - t),
                i.last_error
                    .as_ref()
                    .map(|e| format!("  last error {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

async fn seed(s: &Session, name: &str, value: &str, tags: &[(&str, &str)]) -> Result<()> {
    use aws_sdk_secretsmanager::types::Tag;
    let tags: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
        .collect();
    match s
        .secrets
        .client()
        .create_secret()
        .name(name)
        .secret_string(value)
        .set_tags(Some(tags))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_exists_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(crate::adapters::secretsmanager::aws_error(
            "CreateSecret",
            e,
        )),
    }
}

/// Options of `rotor ca init` beyond the certificate's contents.
#[derive(Debug, Default)]
struct CaInit {
    key_id: Option<String>,
    secret: Option<String>,
    renew: bool,
    out: Option<std::path::PathBuf>,
}

/// `rotor ca init`: the CA key in KMS and its certificate, published. Returns the certificate.
async fn ca_init(
    endpoint: Option<&str>,
    spec: &crate::ca::CaSpec,
    opts: &CaInit,
) -> Result<crate::ca::CaCertificate> {
    use crate::ca::CaCertificate;
    use crate::ports::CaSigner;
    let config = Config::from_env()?;
    let key = opts
        .key_id
        .clone()
        .unwrap_or_else(|| config.kinds.ca_key_id.clone());
    let secret = opts
        .secret
        .clone()
        .unwrap_or_else(|| config.kinds.ca_cert_secret.clone());
    let sdk = load_sdk_config(endpoint).await;
    let (key_arn, created) = crate::adapters::kms::ensure_ca_key(&sdk, &key).await?;
    let signer = crate::adapters::KmsCaSigner::new(&sdk, None);
    let spki = signer.public_key(&key_arn).await?;
    let secrets = SecretsManager::new(&sdk, None);
    let existing = match secrets
        .get_value(&secret, None, crate::ports::AWSCURRENT)
        .await
    {
        Ok(Some(v)) => Some(v),
        Ok(None) | Err(RotorError::SecretNotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let at = now();
    let existing = match existing {
        None => None,
        Some(pem) => {
            use secrecy::ExposeSecret;
            let ca = CaCertificate::from_pem(pem.expose_secret())?;
            if !ca.matches_key(&spki) {
                return Err(RotorError::CaUnavailable(format!(
                    "secret {secret} holds a CA certificate for another key than {key_arn}; \
                     name that key with --key-id, or publish elsewhere with --secret"
                )));
            }
            Some(ca)
        }
    };
    let ca = match existing {
        Some(ca) if !opts.renew && ca.check_valid_at(at + 86400).is_ok() => {
            println!(
                "$ rotor ca init   (kept: the published CA certificate is valid for this key)"
            );
            ca
        }
        prior => {
            let pem = crate::ca::self_signed(&signer, &key_arn, spec, at).await?;
            let ca = CaCertificate::from_pem(&pem)?;
            publish_ca(&secrets, &secret, &key_arn, &pem, prior.is_some()).await?;
            println!(
                "$ rotor ca init   ({} CA certificate signed through KMS)",
                if prior.is_some() { "renewed:" } else { "new:" }
            );
            ca
        }
    };
    println!(
        "CA key     {key_arn}{}",
        if created { "   (created)" } else { "" }
    );
    print_ca(&ca, &secret);
    if let Some(path) = &opts.out {
        std::fs::write(path, ca.pem()).map_err(|e| RotorError::io(path.display(), e))?;
        println!("wrote {}", path.display());
    }
    println!("export ROTOR_CA_KEY_ID={key_arn}");
    println!("export ROTOR_CA_CERT_SECRET={secret}");
    Ok(ca)
}

fn print_ca(ca: &crate::ca::CaCertificate, secret: &str) {
    println!("subject    {}", ca.subject);
    println!(
        "valid      {} .. {}",
        crate::ca::rfc3339(ca.not_before),
        crate::ca::rfc3339(ca.not_after)
    );
    println!("published  secret {secret} (AWSCURRENT, PEM)");
}

/// Publishes the CA certificate PEM: a new secret, or a new AWSCURRENT version of it.
async fn publish_ca(
    secrets: &SecretsManager,
    secret: &str,
    key_arn: &str,
    pem: &str,
    exists: bool,
) -> Result<()> {
    use aws_sdk_secretsmanager::types::Tag;
    let c = secrets.client();
    if exists {
        c.put_secret_value()
            .secret_id(secret)
            .secret_string(pem)
            .send()
            .await
            .map_err(|e| crate::adapters::secretsmanager::aws_error("PutSecretValue", e))?;
        return Ok(());
    }
    c.create_secret()
        .name(secret)
        .description("Rotor CA certificate (public; the key stays in KMS)")
        .secret_string(pem)
        .tags(
            Tag::builder()
                .key("rotor:role")
                .value("ca-certificate")
                .build(),
        )
        .tags(Tag::builder().key("rotor:ca-key").value(key_arn).build())
        .send()
        .await
        .map_err(|e| crate::adapters::secretsmanager::aws_error("CreateSecret", e))?;
    Ok(())
}

/// `rotor ca show`.
async fn ca_show(
    endpoint: Option<&str>,
    secret: Option<String>,
    out: Option<std::path::PathBuf>,
) -> Result<()> {
    use secrecy::ExposeSecret;
    let config = Config::from_env()?;
    let secret = secret.unwrap_or(config.kinds.ca_cert_secret);
    let sdk = load_sdk_config(endpoint).await;
    let pem = SecretsManager::new(&sdk, None)
        .get_value(&secret, None, crate::ports::AWSCURRENT)
        .await?
        .ok_or_else(|| RotorError::CaUnavailable(format!("secret {secret} has no value")))?;
    let ca = crate::ca::CaCertificate::from_pem(pem.expose_secret())?;
    print_ca(&ca, &secret);
    if let Some(path) = out {
        std::fs::write(&path, ca.pem()).map_err(|e| RotorError::io(path.display(), e))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The demo's certificate: what the first rotation issued, then a second rotation (a new key
/// and serial; the first certificate stays AWSPREVIOUS for the overlap).
async fn demo_certificate(s: &Session, f: &Fleet) -> Result<()> {
    let id = "payments/mtls-cert";
    println!(
        "\nThe certificate identity {id} (issued by the CA in KMS, tested with an mTLS handshake):"
    );
    print_certificate(s, crate::ports::AWSCURRENT).await?;
    println!("\n$ rotor rotate {id}");
    let r = f.rotate_now(id, &actor()).await?;
    print_result(&r);
    print_certificate(s, crate::ports::AWSCURRENT).await?;
    print_certificate(s, crate::ports::AWSPREVIOUS).await?;
    Ok(())
}

/// Serial, validity and names of the demo certificate at `stage` (never the private key).
async fn print_certificate(s: &Session, stage: &str) -> Result<()> {
    use secrecy::ExposeSecret;
    let Some(v) = s.secrets.get_value(DEMO_CERT_SECRET, None, stage).await? else {
        return Ok(());
    };
    let v: serde_json::Value = serde_json::from_str(v.expose_secret()).unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    println!(
        "  {stage:<10} serial {}  valid {} .. {}  issuer {}",
        text("serial"),
        text("not_before"),
        text("not_after"),
        text("issuer")
    );
    Ok(())
}
