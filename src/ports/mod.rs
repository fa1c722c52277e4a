//! The narrow interfaces the rotation steps are written against. Each port has one AWS adapter
//! (in `crate::adapters`) and an in-memory fake (in `memory`) for unit tests.

pub mod audit;
pub mod custody;
pub mod inventory;
pub mod memory;
pub mod memory_inventory;
pub mod notify;
pub mod secrets;

pub use audit::{AuditEntry, AuditLog, AuditRecord, Tamper, Verification};
pub use custody::{CaSigner, Custody};
pub use inventory::{Inventory, LeaseOutcome, ReadStats, RotationResult};
pub use notify::{Alert, Notifier};
pub use secrets::{PutOutcome, SecretMeta, SecretStore, AWSCURRENT, AWSPENDING, AWSPREVIOUS};
