//! The `rotor` command line. It runs the same step code as the Lambda functions, in-process,
//! against whatever endpoint the SDK is given (`--endpoint-url` / `AWS_ENDPOINT_URL`, else AWS),
//! and prints version ids and staging labels — never secret values.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::adapters::{load_sdk_config, ApiCallCounter, SecretsManager};
use crate::config::Config;
use crate::error::Result;
use crate::event::{RotationEvent, SecretId, Step, Token};
use crate::localstack::LocalStack;
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
    /// Rotate one secret now: createSecret, setSecret, testSecret, finishSecret, in-process.
    Rotate {
        #[arg(long)]
        secret_id: String,
    },
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
    /// Start the local stack if none is running, seed demo secrets, rotate them, show versions.
    Demo,
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
    let rotator = Rotator::new(secrets.clone(), config.policy);
    Ok(Session {
        secrets,
        rotator,
        calls,
    })
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    let endpoint = cli.endpoint_url.as_deref();
    match cli.command {
        Command::Rotate { secret_id } => {
            let s = session(endpoint).await?;
            let id = SecretId::parse(&secret_id)?;
            let before = s.secrets.describe(&id).await?;
            let started = Instant::now();
            let reports = s.rotator.rotate(&id).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let after = s.secrets.describe(&id).await?;
            print_rotation(&before, &after, &reports, ms, None);
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
];

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
    let s = session(Some(stack.endpoint())).await?;
    for (name, value, tags) in DEMO_SECRETS {
        seed(&s, name, value, tags).await?;
    }
    for (name, _, _) in DEMO_SECRETS {
        let id = SecretId::parse(name)?;
        let before = s.secrets.describe(&id).await?;
        s.calls.reset();
        let started = Instant::now();
        let reports = s.rotator.rotate(&id).await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let calls = s.calls.total();
        let after = s.secrets.describe(&id).await?;
        print_rotation(&before, &after, &reports, ms, Some(calls));
        println!();
    }
    println!("Inspect with the AWS CLI, e.g.:");
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
