//! set-secret: the setSecret step of the rotation protocol as a Lambda function. It refuses events for any other step, so its role needs only what this step does.

use lambda_runtime::{service_fn, Error};
use rotor::{Handler, Served, Step};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rotor::telemetry::init_lambda();
    let handler = Handler::from_env(Served::Only(Step::Set)).await?;
    lambda_runtime::run(service_fn(|event| handler.handle(event))).await
}
