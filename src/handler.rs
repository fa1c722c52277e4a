//! The Lambda handler shared by every function binary. A binary says what it serves: one step
//! (the state machine's step functions), any step (`rotate`, for Secrets Manager's native
//! rotation), the plan (`plan-rotations`) or the rollback (`rollback-secret`). Events are parsed
//! at the edge; errors come back to Lambda as `errorType` / `errorMessage` through
//! `From<RotorError> for Diagnostic`.

use std::sync::Arc;

use lambda_runtime::LambdaEvent;
use serde_json::{json, Value};

use crate::adapters::SecretsManager;
use crate::config::Config;
use crate::error::{Result, RotorError};
use crate::event::{RotationEvent, SecretId, Step, Token};
use crate::fleet::{now, Fleet, WorkItem};
use crate::metrics::{Metrics, Sink};
use crate::steps::Rotator;

/// What a function binary serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// One step: an event without `Step` means this one, an event naming another is refused.
    Only(Step),
    /// Every step, dispatched on the event's `Step` (Secrets Manager's rotation function).
    AnyStep,
    /// Lease due identities and return them as work items (`plan-rotations`).
    Plan,
    /// Roll back a failed work item (`rollback-secret`, the state machine's Catch).
    Rollback,
}

/// A function's handler: configuration and clients built once, reused by every invocation.
#[derive(Clone)]
pub struct Handler {
    served: Served,
    rotator: Rotator,
    fleet: Option<Fleet>,
    batch_size: usize,
}

impl Handler {
    /// What each function's `main` calls: reads configuration from the environment once, loads
    /// the SDK configuration and builds the clients once. With `ROTOR_INVENTORY_TABLE`,
    /// `ROTOR_AUDIT_TABLE` and `ROTOR_AUDIT_MAC_KEY_ID` set, steps are audited and recorded in
    /// the inventory.
    pub async fn from_env(served: Served) -> Result<Self> {
        let config = Config::from_env()?;
        crate::inventory::configure_tier_days(config.tier_days);
        let sdk = crate::adapters::load_sdk_config(None).await;
        let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "rotor".into());
        let fleet = if config.fleet_configured() {
            Some(crate::adapters::wire_fleet(
                &config,
                &sdk,
                None,
                Metrics::new(Sink::Stdout, name),
            )?)
        } else {
            None
        };
        // One Secrets Manager client per process: the fleet's when there is one.
        let rotator = match &fleet {
            Some(f) => f.rotator.clone(),
            None => crate::adapters::rotator(
                &config,
                &sdk,
                Arc::new(SecretsManager::new(&sdk, None)),
                None,
            ),
        };
        let handler = Handler {
            served,
            rotator,
            fleet,
            batch_size: config.batch_size,
        };
        if matches!(served, Served::Plan | Served::Rollback) && handler.fleet.is_none() {
            return Err(RotorError::Config(
                "ROTOR_INVENTORY_TABLE, ROTOR_AUDIT_TABLE and ROTOR_AUDIT_MAC_KEY_ID are required"
                    .into(),
            ));
        }
        Ok(handler)
    }

    /// Builds a handler around existing parts (tests, CLI).
    pub fn with_parts(
        served: Served,
        rotator: Rotator,
        fleet: Option<Fleet>,
        batch_size: usize,
    ) -> Self {
        Handler {
            served,
            rotator,
            fleet,
            batch_size,
        }
    }

    /// Handles one invocation.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value> {
        let payload = &event.payload;
        let actor = payload
            .get("ExecutionId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let name = event
                    .context
                    .invoked_function_arn
                    .rsplit(':')
                    .next()
                    .unwrap_or("lambda");
                format!("lambda:{name}/{}", event.context.request_id)
            });
        match self.served {
            Served::Only(_) | Served::AnyStep => {
                let parsed = self.parse(payload)?;
                let identity = payload.get("IdentityId").and_then(Value::as_str);
                let report = match &self.fleet {
                    Some(f) => f.step(&parsed, identity, &actor).await?,
                    None => self.rotator.run(&parsed).await?,
                };
                Ok(json!(report))
            }
            Served::Plan => {
                let fleet = self.fleet()?;
                let batch = match payload.get("BatchSize") {
                    None | Some(Value::Null) => self.batch_size,
                    Some(v) => v
                        .as_u64()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            RotorError::InvalidEvent(
                                "BatchSize must be a whole number from 1 to 1000".into(),
                            )
                        })? as usize,
                };
                let plan = fleet.plan(&actor, batch, now()).await?;
                Ok(json!({"Items": plan.items, "Due": plan.due, "Overdue": plan.overdue}))
            }
            Served::Rollback => {
                let fleet = self.fleet()?;
                let item = parse_work_item(payload)?;
                let (error_type, message) = parse_failure(payload);
                let result = fleet.fail(&item, &error_type, &message, &actor).await?;
                Ok(json!(result))
            }
        }
    }

    fn fleet(&self) -> Result<&Fleet> {
        self.fleet.as_ref().ok_or_else(|| {
            RotorError::Config("this function needs the inventory and audit tables".into())
        })
    }

    /// Parses and checks an event against the steps this function serves.
    pub fn parse(&self, payload: &Value) -> Result<RotationEvent> {
        let default = match self.served {
            Served::Only(s) => Some(s),
            _ => None,
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

/// A work item from the state machine's state (PascalCase fields, as `plan-rotations` emits).
fn parse_work_item(payload: &Value) -> Result<WorkItem> {
    let field = |k: &str| -> Result<String> {
        payload
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| RotorError::InvalidEvent(format!("missing field {k}")))
    };
    let item = WorkItem {
        identity_id: field("IdentityId")?,
        secret_id: SecretId::parse(&field("SecretId")?)?.to_string(),
        client_request_token: Token::parse(&field("ClientRequestToken")?)?.to_string(),
        kind: payload
            .get("Kind")
            .and_then(Value::as_str)
            .unwrap_or("generic")
            .to_string(),
        resumed: false,
    };
    crate::inventory::validate_id(&item.identity_id)
        .map_err(|e| RotorError::InvalidEvent(e.to_string()))?;
    Ok(item)
}

/// The failure a Step Functions Catch recorded: `{"Error": {"Error": type, "Cause": json}}`.
fn parse_failure(payload: &Value) -> (String, String) {
    let err = payload.get("Error");
    let error_type = err
        .and_then(|e| e.get("Error"))
        .and_then(Value::as_str)
        .unwrap_or("Unknown")
        .chars()
        .take(128)
        .collect();
    let cause = err
        .and_then(|e| e.get("Cause"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|c| {
            c.get("errorMessage")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| cause.to_string());
    (error_type, message.chars().take(500).collect())
}
