//! Logging: `tracing` as JSON lines, one per step (see `steps`). Lambda functions log to stdout
//! (CloudWatch Logs); the CLI logs to stderr so its stdout stays a report. The SDK's own logs are
//! kept at `warn` unless `RUST_LOG` says otherwise.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_secretsmanager=warn,hyper=warn,lambda_runtime=warn,tokio_postgres=warn,rustls=warn";

/// A JSON subscriber writing to `writer`: the format every Rotor process uses (tests capture
/// logs through this too).
pub fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

/// Installs JSON logging to stdout (Lambda). Safe to call twice.
pub fn init_lambda() {
    let _ = tracing::subscriber::set_global_default(json_subscriber(std::io::stdout));
}

/// Installs JSON logging to stderr (CLI). Safe to call twice.
pub fn init_cli() {
    let _ = tracing::subscriber::set_global_default(json_subscriber(std::io::stderr));
}
