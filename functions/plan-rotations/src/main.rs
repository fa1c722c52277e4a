//! plan-rotations: the first state of the rotation state machine. Reads the inventory's due
//! index, leases the due identities (at most `BatchSize`) and returns them as work items.

use lambda_runtime::{service_fn, Error};
use rotor::{Handler, Served};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rotor::telemetry::init_lambda();
    let handler = Handler::from_env(Served::Plan).await?;
    lambda_runtime::run(service_fn(|event| handler.handle(event))).await
}
