//! The inventory port on DynamoDB. One item per identity (pk `id`). Two GSIs:
//! `due` — sparse, on (`due_shard`, `next_due_at`), holding only active identities, so the
//! planner reads due identities and nothing else; `by_secret` — on `secret_arn`, so a step
//! invoked by Secrets Manager finds its identity.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValue, ScalarAttributeType, Select,
};
use aws_sdk_dynamodb::Client;

use crate::adapters::secretsmanager::aws_error;
use crate::adapters::ApiCallCounter;
use crate::error::{Result, RotorError};
use crate::inventory::{Identity, Lease, Status, Tier, Window};
use crate::ports::inventory::{Inventory, LeaseOutcome, ReadStats, RotationResult};

/// Number of partitions of the due index; planning queries each.
pub const DUE_SHARDS: u32 = 4;
const DUE_INDEX: &str = "due";
const SECRET_INDEX: &str = "by_secret";

/// The inventory table.
#[derive(Debug, Clone)]
pub struct DynamoInventory {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn list(v: &[String]) -> AttributeValue {
    AttributeValue::L(v.iter().map(|x| s(x.clone())).collect())
}

fn shard(id: &str) -> String {
    let h = id.bytes().fold(2_166_136_261_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    (h % DUE_SHARDS).to_string()
}

fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|x| x.parse().ok())
}

fn get_list(item: &Item, k: &str) -> Vec<String> {
    item.get(k)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|x| x.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}

fn corrupt(id: &str, what: &str) -> RotorError {
    RotorError::InvalidPolicy(format!("inventory item {id}: {what}"))
}

/// An identity from its item.
pub fn from_item(item: &Item) -> Result<Identity> {
    let id = get_s(item, "id").ok_or_else(|| corrupt("?", "no id"))?;
    let lease = match (
        get_s(item, "lease_token"),
        get_s(item, "lease_holder"),
        get_n(item, "lease_expires_at"),
    ) {
        (Some(token), Some(holder), Some(expires_at)) => Some(Lease {
            token,
            holder,
            expires_at,
        }),
        _ => None,
    };
    let window = match (get_n(item, "window_start"), get_n(item, "window_end")) {
        (Some(a), Some(b)) => Some(Window {
            start_hour: a as u8,
            end_hour: b as u8,
        }),
        _ => None,
    };
    Ok(Identity {
        kind: get_s(item, "kind").unwrap_or_else(|| "generic".into()),
        secret: get_s(item, "secret_arn").ok_or_else(|| corrupt(&id, "no secret_arn"))?,
        owner: get_s(item, "owner").unwrap_or_default(),
        tier: Tier::parse(&get_s(item, "tier").unwrap_or_else(|| "standard".into()))?,
        interval_days: get_n(item, "interval_days").map(|d| d as u32),
        window,
        depends_on: get_list(item, "depends_on"),
        privileges: get_list(item, "privileges"),
        status: Status::parse(&get_s(item, "status").unwrap_or_else(|| "active".into()))?,
        created_at: get_n(item, "created_at").unwrap_or(0),
        last_rotated_at: get_n(item, "last_rotated_at"),
        next_due_at: get_n(item, "next_due_at").unwrap_or(0),
        failure_count: get_n(item, "failure_count").unwrap_or(0) as u32,
        last_error: get_s(item, "last_error"),
        lease,
        registration_hash: get_s(item, "registration_hash").unwrap_or_default(),
        audit_seq: get_n(item, "audit_seq").unwrap_or(0) as u64,
        id,
    })
}

/// The item of an identity (`due_shard` only while active: the due index is sparse).
pub fn to_item(i: &Identity) -> Item {
    let mut m = Item::new();
    m.insert("id".into(), s(&i.id));
    m.insert("kind".into(), s(&i.kind));
    m.insert("secret_arn".into(), s(&i.secret));
    m.insert("owner".into(), s(&i.owner));
    m.insert("tier".into(), s(i.tier.as_str()));
    if let Some(d) = i.interval_days {
        m.insert("interval_days".into(), n(d));
    }
    if let Some(w) = i.window {
        m.insert("window_start".into(), n(w.start_hour));
        m.insert("window_end".into(), n(w.end_hour));
    }
    m.insert("depends_on".into(), list(&i.depends_on));
    m.insert("privileges".into(), list(&i.privileges));
    m.insert("status".into(), s(i.status.as_str()));
    if i.status == Status::Active {
        m.insert("due_shard".into(), s(shard(&i.id)));
    }
    m.insert("created_at".into(), n(i.created_at));
    if let Some(t) = i.last_rotated_at {
        m.insert("last_rotated_at".into(), n(t));
    }
    m.insert("next_due_at".into(), n(i.next_due_at));
    m.insert("failure_count".into(), n(i.failure_count));
    if let Some(e) = &i.last_error {
        m.insert("last_error".into(), s(e));
    }
    if let Some(l) = &i.lease {
        m.insert("lease_token".into(), s(&l.token));
        m.insert("lease_holder".into(), s(&l.holder));
        m.insert("lease_expires_at".into(), n(l.expires_at));
    }
    m.insert("registration_hash".into(), s(&i.registration_hash));
    if i.audit_seq > 0 {
        m.insert("audit_seq".into(), n(i.audit_seq));
    }
    m
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(
    e: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

impl DynamoInventory {
    pub fn new(
        sdk: &aws_config::SdkConfig,
        table: impl Into<String>,
        counter: Option<ApiCallCounter>,
    ) -> Self {
        let mut b = aws_sdk_dynamodb::config::Builder::from(sdk);
        if let Some(c) = counter {
            b = b.interceptor(c);
        }
        DynamoInventory {
            client: Client::from_conf(b.build()),
            table: table.into(),
        }
    }

    /// The underlying client (benchmarks seed through it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table and its indexes if missing (on-demand billing).
    pub async fn create_table(&self) -> Result<()> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
        };
        let gsi = |name: &str, keys: Vec<Result<KeySchemaElement, _>>| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .set_key_schema(Some(keys.into_iter().filter_map(|k| k.ok()).collect()))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
        };
        let build_err = |e: aws_sdk_dynamodb::error::BuildError| RotorError::Config(e.to_string());
        let res = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("id", ScalarAttributeType::S).map_err(build_err)?)
            .attribute_definitions(attr("due_shard", ScalarAttributeType::S).map_err(build_err)?)
            .attribute_definitions(attr("next_due_at", ScalarAttributeType::N).map_err(build_err)?)
            .attribute_definitions(attr("secret_arn", ScalarAttributeType::S).map_err(build_err)?)
            .key_schema(key("id", KeyType::Hash).map_err(build_err)?)
            .global_secondary_indexes(
                gsi(
                    DUE_INDEX,
                    vec![
                        key("due_shard", KeyType::Hash),
                        key("next_due_at", KeyType::Range),
                    ],
                )
                .map_err(build_err)?,
            )
            .global_secondary_indexes(
                gsi(SECRET_INDEX, vec![key("secret_arn", KeyType::Hash)]).map_err(build_err)?,
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(aws_error("CreateTable", e)),
        }
    }
}

#[async_trait]
impl Inventory for DynamoInventory {
    async fn get(&self, id: &str) -> Result<Option<Identity>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error("GetItem", e))?;
        out.item().map(from_item).transpose()
    }

    async fn find_by_secret(&self, secret_arn: &str) -> Result<Option<Identity>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(SECRET_INDEX)
            .key_condition_expression("secret_arn = :a")
            .expression_attribute_values(":a", s(secret_arn))
            .limit(1)
            .send()
            .await
            .map_err(|e| aws_error("Query", e))?;
        out.items().first().map(from_item).transpose()
    }

    async fn put_new(&self, identity: &Identity) -> Result<bool> {
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(identity)))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(aws_error("PutItem", e)),
        }
    }

    async fn update_registration(&self, i: &Identity) -> Result<()> {
        let item = to_item(i);
        let fields = [
            "kind",
            "secret_arn",
            "owner",
            "tier",
            "interval_days",
            "window_start",
            "window_end",
            "depends_on",
            "privileges",
            "status",
            "next_due_at",
            "registration_hash",
            "due_shard",
        ];
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(&i.id))
            .condition_expression("attribute_exists(id)");
        for (k, f) in fields.iter().enumerate() {
            req = req.expression_attribute_names(format!("#f{k}"), *f);
            match item.get(*f) {
                Some(v) => {
                    set.push(format!("#f{k} = :v{k}"));
                    req = req.expression_attribute_values(format!(":v{k}"), v.clone());
                }
                None => remove.push(format!("#f{k}")),
            }
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        req.update_expression(expr)
            .send()
            .await
            .map_err(|e| aws_error("UpdateItem", e))?;
        Ok(())
    }

    async fn due(&self, now: i64, limit: usize) -> Result<(Vec<Identity>, ReadStats)> {
        let mut stats = ReadStats::default();
        let mut found = Vec::new();
        for sh in 0..DUE_SHARDS {
            let mut start: Option<Item> = None;
            let mut taken = 0usize;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(DUE_INDEX)
                    .key_condition_expression("due_shard = :s AND next_due_at <= :now")
                    .expression_attribute_values(":s", s(sh.to_string()))
                    .expression_attribute_values(":now", n(now))
                    .limit((limit - taken).clamp(1, 1000) as i32)
                    .select(Select::AllAttributes)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| aws_error("Query", e))?;
                stats.requests += 1;
                stats.items_read += out.scanned_count().max(out.count()) as u64;
                for item in out.items() {
                    found.push(from_item(item)?);
                    taken += 1;
                }
                match out.last_evaluated_key() {
                    Some(k) if taken < limit => start = Some(k.clone()),
                    _ => break,
                }
            }
        }
        found.sort_by_key(|i| (i.next_due_at, i.id.clone()));
        found.truncate(limit);
        Ok((found, stats))
    }

    async fn take_lease(&self, id: &str, lease: &Lease, now: i64) -> Result<LeaseOutcome> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression(
                "SET lease_token = :t, lease_holder = :h, lease_expires_at = :e, next_due_at = :e",
            )
            .condition_expression(
                "#st = :active AND next_due_at <= :now AND \
                 (attribute_not_exists(lease_token) OR (lease_expires_at < :now AND lease_token = :t))",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":t", s(&lease.token))
            .expression_attribute_values(":h", s(&lease.holder))
            .expression_attribute_values(":e", n(lease.expires_at))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":active", s("active"))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => match out.attributes() {
                Some(item) => Ok(LeaseOutcome::Taken(Box::new(from_item(item)?))),
                None => Err(corrupt(id, "lease update returned no item")),
            },
            Err(e) if is_condition_failed(&e) => Ok(LeaseOutcome::Busy),
            Err(e) => Err(aws_error("UpdateItem", e)),
        }
    }

    async fn finish_lease(&self, id: &str, token: &str, r: &RotationResult) -> Result<bool> {
        let mut set = vec!["next_due_at = :due", "failure_count = :fc", "#st = :status"];
        let mut remove = vec!["lease_token", "lease_holder", "lease_expires_at"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":due", n(r.next_due_at))
            .expression_attribute_values(":fc", n(r.failure_count))
            .expression_attribute_values(":status", s(r.status.as_str()))
            .expression_attribute_values(":t", s(token));
        if let Some(t) = r.last_rotated_at {
            set.push("last_rotated_at = :lr");
            req = req.expression_attribute_values(":lr", n(t));
        }
        match &r.last_error {
            Some(e) => {
                set.push("last_error = :le");
                req = req.expression_attribute_values(":le", s(e));
            }
            None => remove.push("last_error"),
        }
        if r.status == Status::Active {
            set.push("due_shard = :sh");
            req = req.expression_attribute_values(":sh", s(shard(id)));
        } else {
            remove.push("due_shard");
        }
        let expr = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        match req
            .update_expression(expr)
            .condition_expression(
                "attribute_exists(id) AND (attribute_not_exists(lease_token) OR lease_token = :t)",
            )
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(aws_error("UpdateItem", e)),
        }
    }

    async fn anchor_audit(&self, id: &str, seq: u64) -> Result<()> {
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET audit_seq = :s")
            .condition_expression(
                "attribute_exists(id) AND (attribute_not_exists(audit_seq) OR audit_seq < :s)",
            )
            .expression_attribute_values(":s", n(seq))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(aws_error("UpdateItem", e)),
        }
    }

    async fn list(&self) -> Result<Vec<Identity>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| aws_error("Scan", e))?;
            for item in page.items() {
                out.push(from_item(item)?);
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
