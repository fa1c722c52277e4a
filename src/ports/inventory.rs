//! The inventory port: the identities Rotor manages, the due index the planner reads, and the
//! lease that keeps one identity from being rotated twice at once.

use async_trait::async_trait;

use crate::error::Result;
use crate::inventory::{Identity, Lease};

/// What a due query read, for cost accounting (items the store examined, not just returned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub requests: u64,
    pub items_read: u64,
}

/// Outcome of a lease attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Taken: the identity as it now stands (with the lease).
    Taken(Box<Identity>),
    /// Someone else holds a live lease, or the identity is no longer due or active.
    Busy,
}

/// The inventory.
///
/// Contract: `put_new` never overwrites; `take_lease` is a single conditional write that
/// succeeds for at most one caller while a lease is live, and moves `next_due_at` to the lease's
/// expiry so that an abandoned lease makes the identity due again; `finish_lease` only acts
/// while the caller's token still holds the lease; `due` reads only due identities (its cost
/// grows with the number due, not the inventory's size).
#[async_trait]
pub trait Inventory: Send + Sync {
    async fn get(&self, id: &str) -> Result<Option<Identity>>;
    /// The identity whose secret has this ARN, if any.
    async fn find_by_secret(&self, secret_arn: &str) -> Result<Option<Identity>>;
    /// Inserts a new identity; `Ok(false)` if the id exists.
    async fn put_new(&self, identity: &Identity) -> Result<bool>;
    /// Replaces the registration fields of an existing identity (kind, secret, owner, tier,
    /// overrides, depends_on, privileges, status, next_due_at, registration_hash), leaving
    /// rotation state and lease alone.
    async fn update_registration(&self, identity: &Identity) -> Result<()>;
    /// Active identities with `next_due_at <= now`, soonest first, at most `limit`.
    async fn due(&self, now: i64, limit: usize) -> Result<(Vec<Identity>, ReadStats)>;
    /// Takes the lease if the identity is active and due and no live lease is held (an expired
    /// one whose token equals `lease.token` is taken over: that resumes its rotation).
    async fn take_lease(&self, id: &str, lease: &Lease, now: i64) -> Result<LeaseOutcome>;
    /// Ends a rotation: applies `update` and drops the lease, if `token` still holds it (or no
    /// lease is held). `Ok(false)` if another token holds the lease.
    async fn finish_lease(&self, id: &str, token: &str, update: &RotationResult) -> Result<bool>;
    /// Every identity (for reports; a scan).
    async fn list(&self) -> Result<Vec<Identity>>;
    /// Raises the identity's audit anchor to `seq` (never lowers it). A missing identity is a
    /// no-op.
    async fn anchor_audit(&self, id: &str, seq: u64) -> Result<()>;
}

/// What a finished or failed rotation writes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationResult {
    pub last_rotated_at: Option<i64>,
    pub next_due_at: i64,
    pub failure_count: u32,
    pub last_error: Option<String>,
    pub status: crate::inventory::Status,
}
