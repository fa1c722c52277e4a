//! In-memory fakes of the inventory and notify ports, with the same lease semantics as the
//! DynamoDB adapter, for unit tests of the fleet.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Result;
use crate::inventory::{Identity, Lease, Status};
use crate::ports::inventory::{Inventory, LeaseOutcome, ReadStats, RotationResult};
use crate::ports::notify::{Alert, Notifier};

/// An inventory held in memory.
#[derive(Default)]
pub struct MemoryInventory {
    items: Mutex<BTreeMap<String, Identity>>,
}

impl MemoryInventory {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Identity>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Inventory for MemoryInventory {
    async fn get(&self, id: &str) -> Result<Option<Identity>> {
        Ok(self.lock().get(id).cloned())
    }

    async fn find_by_secret(&self, secret_arn: &str) -> Result<Option<Identity>> {
        Ok(self
            .lock()
            .values()
            .find(|i| i.secret == secret_arn)
            .cloned())
    }

    async fn put_new(&self, identity: &Identity) -> Result<bool> {
        let mut g = self.lock();
        if g.contains_key(&identity.id) {
            return Ok(false);
        }
        g.insert(identity.id.clone(), identity.clone());
        Ok(true)
    }

    async fn update_registration(&self, i: &Identity) -> Result<()> {
        if let Some(cur) = self.lock().get_mut(&i.id) {
            let (lease, last, failures, err) = (
                cur.lease.clone(),
                cur.last_rotated_at,
                cur.failure_count,
                cur.last_error.clone(),
            );
            *cur = i.clone();
            cur.lease = lease;
            cur.last_rotated_at = last;
            cur.failure_count = failures;
            cur.last_error = err;
        }
        Ok(())
    }

    async fn due(&self, now: i64, limit: usize) -> Result<(Vec<Identity>, ReadStats)> {
        let mut due: Vec<Identity> = self
            .lock()
            .values()
            .filter(|i| i.status == Status::Active && i.next_due_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|i| (i.next_due_at, i.id.clone()));
        due.truncate(limit);
        let stats = ReadStats {
            requests: 1,
            items_read: due.len() as u64,
        };
        Ok((due, stats))
    }

    async fn take_lease(&self, id: &str, lease: &Lease, now: i64) -> Result<LeaseOutcome> {
        let mut g = self.lock();
        let Some(i) = g.get_mut(id) else {
            return Ok(LeaseOutcome::Busy);
        };
        let free = match &i.lease {
            None => true,
            Some(l) => l.expires_at < now && l.token == lease.token,
        };
        if i.status != Status::Active || i.next_due_at > now || !free {
            return Ok(LeaseOutcome::Busy);
        }
        i.lease = Some(lease.clone());
        i.next_due_at = lease.expires_at;
        Ok(LeaseOutcome::Taken(Box::new(i.clone())))
    }

    async fn finish_lease(&self, id: &str, token: &str, r: &RotationResult) -> Result<bool> {
        let mut g = self.lock();
        let Some(i) = g.get_mut(id) else {
            return Ok(false);
        };
        if i.lease.as_ref().is_some_and(|l| l.token != token) {
            return Ok(false);
        }
        i.lease = None;
        if r.last_rotated_at.is_some() {
            i.last_rotated_at = r.last_rotated_at;
        }
        i.next_due_at = r.next_due_at;
        i.failure_count = r.failure_count;
        i.last_error = r.last_error.clone();
        i.status = r.status;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<Identity>> {
        Ok(self.lock().values().cloned().collect())
    }

    async fn anchor_audit(&self, id: &str, seq: u64) -> Result<()> {
        if let Some(i) = self.lock().get_mut(id) {
            i.audit_seq = i.audit_seq.max(seq);
        }
        Ok(())
    }
}

/// A notifier that keeps what it was sent.
#[derive(Default)]
pub struct MemoryNotifier {
    pub sent: Mutex<Vec<Alert>>,
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn alert(&self, alert: &Alert) -> Result<()> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(alert.clone());
        Ok(())
    }
}
