//! The narrow interfaces the rotation steps are written against. Each port has one AWS adapter
//! (in `crate::adapters`) and an in-memory fake (in `memory`) for unit tests.

pub mod memory;
pub mod secrets;

pub use secrets::{PutOutcome, SecretMeta, SecretStore, AWSCURRENT, AWSPENDING, AWSPREVIOUS};
