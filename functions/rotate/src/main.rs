//! rotate: the function Secrets Manager's native rotation invokes; dispatches every step (createSecret, setSecret, testSecret, finishSecret) to the same step code.

use lambda_runtime::{service_fn, Error};
use rotor::{Handler, Served};

#[tokio::main]
async fn main() -> Result<(), Error> {
    rotor::telemetry::init_lambda();
    let handler = Handler::from_env(Served::AnyStep).await?;
    lambda_runtime::run(service_fn(|event| handler.handle(event))).await
}
