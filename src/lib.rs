//! Rotor: machine-identity rotation for AWS. This crate holds everything but the thin Lambda
//! binaries in `functions/`: the rotation event (`event`), the steps (`steps`), credential kinds
//! (`kinds`), policy (`policy`), ports and their AWS adapters (`ports`, `adapters`), the Lambda
//! handler (`handler`), configuration, logging, the local stack and the CLI.

pub mod adapters;
pub mod audit;
pub mod ca;
pub mod cli;
pub mod config;
pub mod error;
pub mod event;
pub mod fleet;
pub mod handler;
pub mod inventory;
pub mod kinds;
pub mod localstack;
pub mod manifest;
pub mod metrics;
pub mod policy;
pub mod ports;
pub mod steps;
pub mod telemetry;

pub use config::Config;
pub use error::{Result, RotorError};
pub use event::{RotationEvent, SecretId, Step, Token};
pub use handler::{Handler, Served};
pub use steps::{Outcome, Rotator, StepReport};
