//! The Lambda handler shared by every function binary. A binary names the step it serves (or
//! `AnyStep` for `rotate`, which Secrets Manager's native rotation calls for all four); the
//! handler parses the event at the edge and runs the step. Errors come back to Lambda as
//! `errorType` / `errorMessage` through `From<RotorError> for Diagnostic`.

use std::sync::Arc;

use lambda_runtime::LambdaEvent;
use serde_json::Value;

use crate::adapters::SecretsManager;
use crate::config::Config;
use crate::error::{Result, RotorError};
use crate::event::{RotationEvent, Step};
use crate::steps::{Rotator, StepReport};

/// Which steps a function binary accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// One step: an event without `Step` means this one, an event naming another is refused.
    Only(Step),
    /// Every step, dispatched on the event's `Step` (Secrets Manager's rotation function).
    AnyStep,
}

/// A function's handler: configuration and clients built once, reused by every invocation.
#[derive(Clone)]
pub struct Handler {
    served: Served,
    rotator: Rotator,
}

impl Handler {
    /// Builds the handler from configuration and a loaded SDK configuration.
    pub fn new(served: Served, config: &Config, sdk: &aws_config::SdkConfig) -> Self {
        let secrets = Arc::new(SecretsManager::new(sdk, None));
        Handler {
            served,
            rotator: Rotator::new(secrets, config.policy.clone()),
        }
    }

    /// What each function's `main` calls: reads configuration from the environment once, loads
    /// the SDK configuration and builds the clients once.
    pub async fn from_env(served: Served) -> Result<Self> {
        let config = Config::from_env()?;
        let sdk = crate::adapters::load_sdk_config(None).await;
        Ok(Self::new(served, &config, &sdk))
    }

    /// Builds the handler around an existing rotator (tests, CLI).
    pub fn with_rotator(served: Served, rotator: Rotator) -> Self {
        Handler { served, rotator }
    }

    /// Handles one invocation.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<StepReport> {
        let parsed = self.parse(&event.payload)?;
        self.rotator.run(&parsed).await
    }

    /// Parses and checks an event against the steps this function serves.
    pub fn parse(&self, payload: &Value) -> Result<RotationEvent> {
        let default = match self.served {
            Served::Only(s) => Some(s),
            Served::AnyStep => None,
        };
        let event = RotationEvent::from_json(payload, default).inspect_err(|e| {
            tracing::warn!(error_type = e.error_type(), error = %e, "rejected event");
        })?;
        if let Served::Only(expected) = self.served {
            if event.step != expected {
                let e = RotorError::StepNotServed {
                    expected: expected.as_str(),
                    got: event.step.as_str(),
                };
                tracing::warn!(error_type = e.error_type(), error = %e, "rejected event");
                return Err(e);
            }
        }
        Ok(event)
    }
}
