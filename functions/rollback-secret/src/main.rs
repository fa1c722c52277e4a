//! rollback-secret: the rotation state machine's Catch. Puts the target back to AWSCURRENT,
//! drops AWSPENDING, counts the failure and backs off (marking the identity `failing` after
//! `ROTOR_MAX_FAILURES`), releases the lease, audits and alerts (SNS and EventBridge).

use lambda_runtime::{service_fn, Error};
use rotor::{Handler, Served};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rotor::telemetry::init_lambda();
    let handler = Handler::from_env(Served::Rollback).await?;
    lambda_runtime::run(service_fn(|event| handler.handle(event))).await
}
