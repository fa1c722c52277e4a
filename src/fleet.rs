//! The fleet: rotation of *managed identities*, on top of the bare steps. Registration from a
//! manifest, planning (due index → leases → work items), executing a work item (the four steps,
//! each audited), recording success, and failure handling (rollback, back-off, `failing`, alert).
//! The CLI's `run` and the Lambda functions (`plan-rotations`, the step functions,
//! `rollback-secret`) all go through here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Result, RotorError};
use crate::event::{RotationEvent, SecretId, Step, Token};
use crate::inventory::{self, Identity, Lease, Status, Tier};
use crate::manifest::{Entry, Manifest};
use crate::metrics::Metrics;
use crate::ports::{
    Alert, AuditEntry, AuditLog, Inventory, LeaseOutcome, Notifier, ReadStats, RotationResult,
    SecretStore,
};
use crate::steps::{Outcome, Rotator, StepReport};

/// Now, in unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a failed step leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OnFailure {
    /// Roll back ([`Fleet::fail`]: target reverted, AWSPENDING dropped, failure counted,
    /// back-off, alert) — the state machine's `Catch` → rollback-secret.
    Rollback,
}

/// The flow of one rotation: the steps in the order [`Fleet::execute`] runs them and what a
/// failure at each leads to. The state machine (`infra/statemachine/rotation.asl.json`)
/// describes the same flow for the cloud; `tests/infra.rs` checks that the two agree.
pub const FLOW: [(Step, OnFailure); 4] = [
    (Step::Create, OnFailure::Rollback),
    (Step::Set, OnFailure::Rollback),
    (Step::Test, OnFailure::Rollback),
    (Step::Finish, OnFailure::Rollback),
];

/// Fleet settings (from the environment; see `Config`).
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Consecutive failures after which an identity is marked `failing`.
    pub max_failures: u32,
    /// How long a lease lasts (seconds): longer than a rotation can take.
    pub lease_seconds: i64,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            max_failures: 3,
            lease_seconds: 900,
        }
    }
}

/// One leased identity to rotate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WorkItem {
    pub identity_id: String,
    pub secret_id: String,
    pub client_request_token: String,
    pub kind: String,
    /// True when this item takes over an expired lease (its rotation is resumed).
    pub resumed: bool,
}

/// What a plan produced.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub items: Vec<WorkItem>,
    /// Due identities found (before leasing).
    pub due: usize,
    /// Due for more than an hour.
    pub overdue: usize,
    pub requests: u64,
    pub items_read: u64,
}

/// The end of one work item.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    pub identity_id: String,
    pub token: String,
    pub succeeded: bool,
    pub steps: Vec<String>,
    pub error_type: Option<String>,
    pub status: String,
    pub next_due_at: i64,
    pub ms: f64,
}

/// What a registration did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Registration {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// The ports the fleet works through.
#[derive(Clone)]
pub struct Fleet {
    pub secrets: Arc<dyn SecretStore>,
    pub inventory: Arc<dyn Inventory>,
    pub audit: Arc<dyn AuditLog>,
    pub notifier: Arc<dyn Notifier>,
    pub rotator: Rotator,
    pub metrics: Metrics,
    pub settings: FleetSettings,
}

impl Fleet {
    // ---- registration -------------------------------------------------------------------

    /// Registers a manifest idempotently: new entries are created, changed entries updated
    /// (rotation state kept), unchanged entries not touched. Every write is audited.
    pub async fn register(
        &self,
        manifest: &Manifest,
        actor: &str,
        now: i64,
    ) -> Result<Registration> {
        let mut out = Registration::default();
        for entry in &manifest.identities {
            let hash = entry.registration_hash();
            let existing = self.inventory.get(&entry.id).await?;
            match existing {
                Some(cur) if cur.registration_hash == hash => out.unchanged.push(entry.id.clone()),
                Some(cur) => {
                    let next = self.updated_identity(&cur, entry, &hash).await?;
                    self.inventory.update_registration(&next).await?;
                    let changed = changed_fields(&cur, &next);
                    self.audit(
                        &next.id,
                        "update",
                        "changed",
                        actor,
                        None,
                        None,
                        Some(changed),
                    )
                    .await?;
                    out.updated.push(entry.id.clone());
                }
                None => {
                    let identity = self.new_identity(entry, &hash, now).await?;
                    if self.inventory.put_new(&identity).await? {
                        let detail = format!(
                            "kind={} tier={} owner={} status={}",
                            identity.kind,
                            identity.tier.as_str(),
                            identity.owner,
                            identity.status.as_str()
                        );
                        self.audit(
                            &identity.id,
                            "register",
                            "created",
                            actor,
                            None,
                            None,
                            Some(detail),
                        )
                        .await?;
                        out.created.push(entry.id.clone());
                    } else {
                        out.unchanged.push(entry.id.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    async fn resolve_arn(&self, secret: &str) -> Result<String> {
        Ok(self.secrets.describe(&SecretId::parse(secret)?).await?.arn)
    }

    async fn new_identity(&self, e: &Entry, hash: &str, now: i64) -> Result<Identity> {
        let mut i = Identity {
            id: e.id.clone(),
            kind: e.kind.clone(),
            secret: self.resolve_arn(&e.secret).await?,
            owner: e.owner.clone(),
            tier: e.tier,
            interval_days: e.interval_days,
            window: e.window,
            depends_on: e.depends_on.clone(),
            privileges: e.privileges.clone(),
            status: e.status,
            created_at: now,
            last_rotated_at: None,
            next_due_at: 0,
            failure_count: 0,
            last_error: None,
            lease: None,
            registration_hash: hash.to_string(),
            audit_seq: 0,
        };
        i.next_due_at = inventory::first_due(&i, now);
        Ok(i)
    }

    async fn updated_identity(&self, cur: &Identity, e: &Entry, hash: &str) -> Result<Identity> {
        let mut next = cur.clone();
        if e.secret != cur.secret {
            next.secret = self.resolve_arn(&e.secret).await?;
        }
        next.kind = e.kind.clone();
        next.owner = e.owner.clone();
        next.tier = e.tier;
        next.interval_days = e.interval_days;
        next.window = e.window;
        next.depends_on = e.depends_on.clone();
        next.privileges = e.privileges.clone();
        next.status = e.status;
        next.registration_hash = hash.to_string();
        let schedule_changed = (cur.tier, cur.interval_days, cur.window)
            != (next.tier, next.interval_days, next.window);
        if schedule_changed {
            if let Some(t) = next.last_rotated_at {
                next.next_due_at = inventory::next_due(&next, t);
            }
        }
        Ok(next)
    }

    /// Registers a secret Rotor is rotating but does not know yet, from its tags
    /// (`rotor:kind`, `rotor:tier`, `owner`). Id: `rotor:id` tag, else the secret's name.
    async fn auto_register(&self, secret_arn: &str, actor: &str, now: i64) -> Result<Identity> {
        let meta = self.secrets.describe(&SecretId::parse(secret_arn)?).await?;
        let tag = |k: &str| meta.tags.get(k).cloned();
        let id = tag("rotor:id").unwrap_or_else(|| meta.name.clone());
        let entry = Entry {
            id,
            kind: tag("rotor:kind").unwrap_or_else(|| "generic".into()),
            secret: meta.arn.clone(),
            owner: tag("owner").unwrap_or_else(|| "unassigned".into()),
            tier: tag("rotor:tier")
                .map(|t| Tier::parse(&t))
                .transpose()?
                .unwrap_or_default(),
            interval_days: None,
            window: None,
            depends_on: vec![],
            privileges: vec![],
            status: Status::Active,
        };
        inventory::validate_id(&entry.id)?;
        let identity = self
            .new_identity(&entry, &entry.registration_hash(), now)
            .await?;
        if self.inventory.put_new(&identity).await? {
            self.audit(
                &identity.id,
                "register",
                "created",
                actor,
                None,
                None,
                Some("registered on first rotation".into()),
            )
            .await?;
            return Ok(identity);
        }
        self.inventory
            .get(&identity.id)
            .await?
            .ok_or_else(|| RotorError::InvalidPolicy(format!("identity {} vanished", identity.id)))
    }

    // ---- planning -----------------------------------------------------------------------

    /// Leases up to `batch` due identities for `holder` and returns them as work items. An
    /// identity whose lease expired is taken over with its old token, so its rotation resumes.
    pub async fn plan(&self, holder: &str, batch: usize, now: i64) -> Result<Plan> {
        let (due, stats): (Vec<Identity>, ReadStats) = self.inventory.due(now, batch).await?;
        let overdue = due.iter().filter(|i| i.next_due_at < now - 3600).count();
        let mut items = Vec::new();
        for identity in &due {
            if !identity.is_due(now) {
                continue; // outside its window
            }
            let (token, resumed) = match &identity.lease {
                Some(l) if l.expires_at < now => (l.token.clone(), true),
                Some(_) => continue,
                None => (Token::generate()?.to_string(), false),
            };
            let lease = Lease {
                token: token.clone(),
                holder: holder.to_string(),
                expires_at: now + self.settings.lease_seconds,
            };
            if let LeaseOutcome::Taken(taken) =
                self.inventory.take_lease(&identity.id, &lease, now).await?
            {
                self.audit(
                    &taken.id,
                    "lease",
                    if resumed { "resumed" } else { "taken" },
                    holder,
                    Some(&token),
                    None,
                    None,
                )
                .await?;
                items.push(WorkItem {
                    identity_id: taken.id.clone(),
                    secret_id: taken.secret.clone(),
                    client_request_token: token,
                    kind: taken.kind.clone(),
                    resumed,
                });
            }
        }
        self.metrics.plan(items.len(), overdue);
        Ok(Plan {
            items,
            due: due.len(),
            overdue,
            requests: stats.requests,
            items_read: stats.items_read,
        })
    }

    // ---- steps ----------------------------------------------------------------------------

    /// Runs one step for an identity and audits it (success or failure). `identity` is the
    /// state machine's hint; without it the identity is found by secret ARN, and registered
    /// if Rotor has never seen the secret. finishSecret also records the rotation's success.
    pub async fn step(
        &self,
        event: &RotationEvent,
        identity: Option<&str>,
        actor: &str,
    ) -> Result<StepReport> {
        // The inventory's kind applies to secrets without a `rotor:kind` tag.
        let known = match identity {
            Some(id) => self.inventory.get(id).await?,
            None if event.secret_id.as_str().starts_with("arn:") => {
                self.inventory
                    .find_by_secret(event.secret_id.as_str())
                    .await?
            }
            None => None,
        };
        let started = Instant::now();
        let result = self
            .rotator
            .run_as(event, known.as_ref().map(|i| i.kind.as_str()))
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.step(event.step.as_str(), ms, result.is_ok());
        let arn = match &result {
            Ok(r) => Some(r.secret_arn.clone()),
            Err(RotorError::SecretNotFound(_)) => None,
            Err(_) => self
                .secrets
                .describe(&event.secret_id)
                .await
                .ok()
                .map(|m| m.arn),
        };
        let ident = match (known, &arn) {
            (Some(i), _) => Some(i),
            (None, _) if identity.is_some() => None,
            (None, Some(arn)) => match self.inventory.find_by_secret(arn).await? {
                Some(i) => Some(i),
                None => Some(self.auto_register(arn, actor, now()).await?),
            },
            (None, None) => None,
        };
        let Some(ident) = ident else {
            return result; // nothing to audit against: the secret does not exist
        };
        let (outcome, error_type) = match &result {
            Ok(r) => (r.outcome.as_str(), None),
            Err(e) => ("failed", Some(e.error_type().to_string())),
        };
        self.audit(
            &ident.id,
            event.step.as_str(),
            outcome,
            actor,
            Some(event.token.as_str()),
            error_type,
            None,
        )
        .await?;
        if let (Ok(r), Step::Finish) = (&result, event.step) {
            if matches!(r.outcome, Outcome::Finished | Outcome::AlreadyCurrent) {
                self.record_success(&ident, event.token.as_str(), r.renew_by)
                    .await?;
            }
        }
        result
    }

    /// Records a finished rotation: due again after the identity's interval, or by `renew_by`
    /// (a certificate at two thirds of its lifetime) if that is sooner.
    async fn record_success(
        &self,
        ident: &Identity,
        token: &str,
        renew_by: Option<i64>,
    ) -> Result<()> {
        let at = now();
        let regular = inventory::next_due(ident, at);
        let update = RotationResult {
            last_rotated_at: Some(at),
            next_due_at: renew_by.map_or(regular, |r| r.min(regular)),
            failure_count: 0,
            last_error: None,
            status: if ident.status == Status::Failing {
                Status::Active
            } else {
                ident.status
            },
        };
        if !self
            .inventory
            .finish_lease(&ident.id, token, &update)
            .await?
        {
            tracing::warn!(identity = %ident.id, token, "another rotation holds the lease; success not recorded");
        }
        self.metrics.rotation(true, false);
        Ok(())
    }

    // ---- execution ------------------------------------------------------------------------

    /// Rotates one leased identity in-process: the four steps in order (each audited); on any
    /// failure, [`Fleet::fail`].
    pub async fn execute(&self, item: &WorkItem, actor: &str) -> Result<ItemResult> {
        let started = Instant::now();
        let secret_id = SecretId::parse(&item.secret_id)?;
        let token = Token::parse(&item.client_request_token)?;
        let mut steps = Vec::new();
        for (step, on_failure) in FLOW {
            let event = RotationEvent {
                step,
                secret_id: secret_id.clone(),
                token: token.clone(),
            };
            match self.step(&event, Some(&item.identity_id), actor).await {
                Ok(r) => steps.push(format!("{} {}", r.step, r.outcome.as_str())),
                Err(e) => {
                    steps.push(format!("{step} failed"));
                    let OnFailure::Rollback = on_failure;
                    let failed = self
                        .fail(item, e.error_type(), &e.to_string(), actor)
                        .await?;
                    return Ok(ItemResult {
                        steps,
                        ms: started.elapsed().as_secs_f64() * 1000.0,
                        ..failed
                    });
                }
            }
        }
        let ident = self.inventory.get(&item.identity_id).await?;
        Ok(ItemResult {
            identity_id: item.identity_id.clone(),
            token: item.client_request_token.clone(),
            succeeded: true,
            steps,
            error_type: None,
            status: ident
                .as_ref()
                .map(|i| i.status.as_str())
                .unwrap_or("unknown")
                .into(),
            next_due_at: ident.map(|i| i.next_due_at).unwrap_or(0),
            ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// A rotation failed after its lease: roll the secret back (AWSCURRENT untouched, AWSPENDING
    /// dropped, the target reverted), count the failure, back off, mark `failing` after
    /// `max_failures`, release the lease, audit, alert.
    pub async fn fail(
        &self,
        item: &WorkItem,
        error_type: &str,
        message: &str,
        actor: &str,
    ) -> Result<ItemResult> {
        let secret_id = SecretId::parse(&item.secret_id)?;
        let token = Token::parse(&item.client_request_token)?;
        let rollback = self
            .rotator
            .rollback_as(&secret_id, &token, Some(item.kind.as_str()))
            .await;
        let rolled_back = matches!(&rollback, Ok(r) if r.outcome == Outcome::RolledBack);
        let ident = self
            .inventory
            .get(&item.identity_id)
            .await?
            .ok_or_else(|| {
                RotorError::InvalidPolicy(format!(
                    "identity {} is not registered",
                    item.identity_id
                ))
            })?;
        let failures = ident.failure_count + 1;
        let status = if failures >= self.settings.max_failures {
            Status::Failing
        } else {
            ident.status
        };
        let at = now();
        let update = RotationResult {
            last_rotated_at: None,
            next_due_at: inventory::backoff_due(&ident, at, failures),
            failure_count: failures,
            last_error: Some(format!(
                "{error_type}: {}",
                message.chars().take(500).collect::<String>()
            )),
            status,
        };
        self.inventory
            .finish_lease(&ident.id, token.as_str(), &update)
            .await?;
        let outcome = match &rollback {
            Ok(r) => r.outcome.as_str().to_string(),
            Err(e) => format!("rollbackFailed:{}", e.error_type()),
        };
        self.audit(
            &ident.id,
            "rollback",
            &outcome,
            actor,
            Some(token.as_str()),
            Some(error_type.to_string()),
            Some(format!(
                "failure {failures} of {}; status {}",
                self.settings.max_failures,
                status.as_str()
            )),
        )
        .await?;
        self.metrics.rotation(false, rolled_back);
        let alert = Alert {
            identity_id: ident.id.clone(),
            secret_arn: ident.secret.clone(),
            token: token.to_string(),
            owner: ident.owner.clone(),
            tier: ident.tier.as_str().into(),
            error_type: error_type.into(),
            error_message: message.chars().take(500).collect(),
            failure_count: failures,
            status: status.as_str().into(),
            next_due_at: update.next_due_at,
        };
        if let Err(e) = self.notifier.alert(&alert).await {
            tracing::error!(error_type = e.error_type(), error = %e, identity = %ident.id, "alert not delivered");
        }
        rollback?;
        Ok(ItemResult {
            identity_id: ident.id,
            token: token.to_string(),
            succeeded: false,
            steps: vec![],
            error_type: Some(error_type.into()),
            status: status.as_str().into(),
            next_due_at: update.next_due_at,
            ms: 0.0,
        })
    }

    /// Plans and rotates everything due now, `concurrency` identities at a time: the same work
    /// the state machine does in the cloud.
    pub async fn run(
        &self,
        holder: &str,
        batch: usize,
        concurrency: usize,
        now: i64,
    ) -> Result<(Plan, Vec<ItemResult>)> {
        let plan = self.plan(holder, batch, now).await?;
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for item in plan.items.clone() {
            let fleet = self.clone();
            let sem = sem.clone();
            let actor = holder.to_string();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                fleet.execute(&item, &actor).await
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(r) => results.push(r?),
                Err(e) => return Err(RotorError::Config(format!("rotation task failed: {e}"))),
            }
        }
        results.sort_by(|a, b| a.identity_id.cmp(&b.identity_id));
        Ok((plan, results))
    }

    /// Rotates one identity now, whether or not it is due (a manual action, audited as such).
    pub async fn rotate_now(&self, id: &str, actor: &str) -> Result<ItemResult> {
        let ident =
            self.inventory.get(id).await?.ok_or_else(|| {
                RotorError::InvalidPolicy(format!("identity {id} is not registered"))
            })?;
        if ident.lease.as_ref().is_some_and(|l| l.expires_at >= now()) {
            return Err(RotorError::InvalidPolicy(format!(
                "identity {id} is being rotated (leased)"
            )));
        }
        let token = ident
            .lease
            .as_ref()
            .map(|l| l.token.clone())
            .unwrap_or(Token::generate()?.to_string());
        self.audit(id, "manual", "rotate", actor, Some(&token), None, None)
            .await?;
        let item = WorkItem {
            identity_id: ident.id.clone(),
            secret_id: ident.secret.clone(),
            client_request_token: token,
            kind: ident.kind.clone(),
            resumed: false,
        };
        self.execute(&item, actor).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        id: &str,
        action: &str,
        outcome: &str,
        actor: &str,
        token: Option<&str>,
        error_type: Option<String>,
        detail: Option<String>,
    ) -> Result<()> {
        let record = self
            .audit
            .append(
                id,
                AuditEntry {
                    at_ms: now_ms(),
                    action: action.into(),
                    outcome: outcome.into(),
                    actor: actor.into(),
                    token: token.map(str::to_string),
                    versions: token.map(|t| vec![t.to_string()]).unwrap_or_default(),
                    error_type,
                    detail,
                },
            )
            .await?;
        self.inventory.anchor_audit(id, record.seq).await
    }

    /// Verifies an identity's audit log: the chain and the head's MAC (the audit port), and the
    /// head against the inventory's anchor, which catches a log rolled back to an older head.
    pub async fn verify(&self, id: &str) -> Result<crate::ports::Verification> {
        let mut v = self.audit.verify(id).await?;
        if v.tamper.is_none() {
            if let Some(ident) = self.inventory.get(id).await? {
                if ident.audit_seq > v.records {
                    v.tamper = Some(crate::ports::Tamper::Truncated {
                        anchored_seq: ident.audit_seq,
                        head_seq: v.records,
                    });
                }
            }
        }
        Ok(v)
    }
}

fn changed_fields(a: &Identity, b: &Identity) -> String {
    let mut c: BTreeMap<&str, bool> = BTreeMap::new();
    c.insert("kind", a.kind != b.kind);
    c.insert("secret", a.secret != b.secret);
    c.insert("owner", a.owner != b.owner);
    c.insert("tier", a.tier != b.tier);
    c.insert("interval_days", a.interval_days != b.interval_days);
    c.insert("window", a.window != b.window);
    c.insert("depends_on", a.depends_on != b.depends_on);
    c.insert("privileges", a.privileges != b.privileges);
    c.insert("status", a.status != b.status);
    let names: Vec<&str> = c.into_iter().filter(|(_, v)| *v).map(|(k, _)| k).collect();
    format!("changed: {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Sink;
    use crate::policy::GeneratorPolicy;
    use crate::ports::memory::{MemoryAudit, MemoryCustody, MemorySecrets};
    use crate::ports::memory_inventory::{MemoryInventory, MemoryNotifier};

    struct Parts {
        fleet: Fleet,
        secrets: Arc<MemorySecrets>,
        notes: Arc<MemoryNotifier>,
    }

    fn fleet(names: &[&str]) -> Parts {
        let secrets = Arc::new(MemorySecrets::default());
        for n in names {
            secrets.create(n, &format!("{{\"password\":\"initial-{n}\"}}"), &[]);
        }
        let notes = Arc::new(MemoryNotifier::default());
        let fleet = Fleet {
            secrets: secrets.clone(),
            inventory: Arc::new(MemoryInventory::default()),
            audit: Arc::new(MemoryAudit::new(Arc::new(MemoryCustody::default()))),
            notifier: notes.clone(),
            rotator: Rotator::new(secrets.clone(), GeneratorPolicy::default()),
            metrics: Metrics::new(Sink::Off, "test"),
            settings: FleetSettings::default(),
        };
        Parts {
            fleet,
            secrets,
            notes,
        }
    }

    fn manifest(names: &[&str]) -> Manifest {
        let entries: Vec<String> = names
            .iter()
            .map(|n| format!(r#"{{"id":"{n}","secret":"{n}","owner":"o"}}"#))
            .collect();
        Manifest::parse(&format!(r#"{{"identities":[{}]}}"#, entries.join(","))).unwrap()
    }

    #[tokio::test]
    async fn run_rotates_each_due_identity_once_then_nothing_is_due() {
        let p = fleet(&["a", "b", "c"]);
        let t = now();
        p.fleet
            .register(&manifest(&["a", "b", "c"]), "t", t)
            .await
            .unwrap();
        let (plan, results) = p.fleet.run("h", 10, 2, t).await.unwrap();
        assert_eq!(plan.items.len(), 3);
        assert!(results.iter().all(|r| r.succeeded));
        assert!(p.fleet.plan("h", 10, t).await.unwrap().items.is_empty());
        for n in ["a", "b", "c"] {
            let meta = p.secrets.meta(n).unwrap();
            assert_eq!(meta.versions.len(), 2);
            assert!(p.fleet.audit.verify(n).await.unwrap().tamper.is_none());
        }
    }

    #[tokio::test]
    async fn failures_back_off_then_mark_failing_and_alert() {
        let p = fleet(&["x"]);
        let mut t = now();
        p.fleet.register(&manifest(&["x"]), "t", t).await.unwrap();
        for n in 1..=3u32 {
            let plan = p.fleet.plan("h", 10, t).await.unwrap();
            let item = &plan.items[0];
            let r = p.fleet.fail(item, "TestFailed", "boom", "h").await.unwrap();
            assert_eq!(r.status, if n < 3 { "active" } else { "failing" });
            let i = p.fleet.inventory.get("x").await.unwrap().unwrap();
            assert_eq!(i.failure_count, n);
            t = i.next_due_at + 1;
        }
        assert_eq!(p.notes.sent.lock().unwrap().len(), 3);
        assert!(p
            .fleet
            .plan("h", 10, t + 365 * 86_400)
            .await
            .unwrap()
            .items
            .is_empty());
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_its_token() {
        let p = fleet(&["r"]);
        let t = now();
        p.fleet.register(&manifest(&["r"]), "t", t).await.unwrap();
        let first = p.fleet.plan("a", 10, t).await.unwrap().items[0].clone();
        assert!(p
            .fleet
            .plan("b", 10, t + 10)
            .await
            .unwrap()
            .items
            .is_empty());
        let again = p.fleet.plan("b", 10, t + 901).await.unwrap().items[0].clone();
        assert!(again.resumed);
        assert_eq!(again.client_request_token, first.client_request_token);
    }
}
