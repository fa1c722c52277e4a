//! The audit port on DynamoDB: one table, partition key `identity_id` (S), sort key `seq` (N).
//!
//! - Records are the items with `seq` ≥ 1: `prev_hash` (S), `hash` (S), `at_ms` (N), `action`,
//!   `outcome`, `actor` (S), `versions` (L of S, possibly empty) and `token`, `error_type`,
//!   `detail` (S, absent when `None`): one attribute per field, readable in the console.
//! - The head is the item with `seq` = 0: `head_seq` (N), `head_hash` (S), `head_mac` (B, the
//!   custody key's HMAC-SHA-256 of [`crate::audit::head_message`]).
//!
//! An append is one `TransactWriteItems`: the head, conditional on still being the head that
//! was read (or on not existing for the first record), and the record, conditional on
//! `attribute_not_exists(seq)`. Concurrent appends cancel each other's transactions and retry
//! from the read, so none overwrites another. Before extending a chain, `append` checks the
//! head's MAC: otherwise a forged head would be laundered by the next genuine MAC.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, TableStatus, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;

use crate::audit::{head_message, seal, verify_chain, Head, GENESIS_HASH};
use crate::error::{Result, RotorError};
use crate::ports::audit::{AuditEntry, AuditLog, AuditRecord, Verification};
use crate::ports::custody::Custody;

use super::aws::ApiCallCounter;
use super::secretsmanager::aws_error;

/// Partition key: the identity the record belongs to.
pub const ATTR_IDENTITY: &str = "identity_id";
/// Sort key: the record's seq (≥ 1), or 0 for the head.
pub const ATTR_SEQ: &str = "seq";
/// The head item's seq.
pub const HEAD_ITEM_SEQ: u64 = 0;

const ATTR_PREV_HASH: &str = "prev_hash";
const ATTR_HASH: &str = "hash";
const ATTR_AT_MS: &str = "at_ms";
const ATTR_ACTION: &str = "action";
const ATTR_OUTCOME: &str = "outcome";
const ATTR_ACTOR: &str = "actor";
const ATTR_TOKEN: &str = "token";
const ATTR_VERSIONS: &str = "versions";
const ATTR_ERROR_TYPE: &str = "error_type";
const ATTR_DETAIL: &str = "detail";
const ATTR_HEAD_SEQ: &str = "head_seq";
const ATTR_HEAD_HASH: &str = "head_hash";
const ATTR_HEAD_MAC: &str = "head_mac";

/// Attempts of one append under contention (each re-reads the head).
const APPEND_ATTEMPTS: u32 = 10;
/// Reads of head and records in `verify` while a concurrent append moves the head.
const VERIFY_READS: u32 = 3;

type Item = HashMap<String, AttributeValue>;

/// The audit log in a DynamoDB table, with the head MAC'd by a custody key. Build once per
/// process and share.
#[derive(Clone)]
pub struct DynamoAudit {
    client: Client,
    table: String,
    custody: Arc<dyn Custody>,
}

impl std::fmt::Debug for DynamoAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoAudit")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// Why one append transaction did not commit.
enum WriteFailure {
    /// Another append moved the head first (or DynamoDB saw a conflicting transaction): retry.
    Contended(RotorError),
    /// The head was as read but the record's seq is already taken: a record beyond the head.
    RecordExists,
    /// Anything else.
    Failed(RotorError),
}

impl DynamoAudit {
    /// A DynamoDB client from the shared SDK configuration (counting calls with `counter` if
    /// given) on `table`, MAC'ing heads with `custody`.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        table: impl Into<String>,
        custody: Arc<dyn Custody>,
        counter: Option<ApiCallCounter>,
    ) -> Self {
        let mut b = aws_sdk_dynamodb::config::Builder::from(sdk);
        if let Some(c) = counter {
            b = b.interceptor(c);
        }
        DynamoAudit {
            client: Client::from_conf(b.build()),
            table: table.into(),
            custody,
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the table (on-demand capacity) unless it exists, then waits until it is ACTIVE.
    pub async fn create_table(&self) -> Result<()> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => {
                let created = self
                    .client
                    .create_table()
                    .table_name(&self.table)
                    .billing_mode(BillingMode::PayPerRequest)
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(ATTR_IDENTITY)
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .map_err(build_error("CreateTable"))?,
                    )
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(ATTR_SEQ)
                            .attribute_type(ScalarAttributeType::N)
                            .build()
                            .map_err(build_error("CreateTable"))?,
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(ATTR_IDENTITY)
                            .key_type(KeyType::Hash)
                            .build()
                            .map_err(build_error("CreateTable"))?,
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(ATTR_SEQ)
                            .key_type(KeyType::Range)
                            .build()
                            .map_err(build_error("CreateTable"))?,
                    )
                    .send()
                    .await;
                match created {
                    Ok(_) => {}
                    // Created concurrently by someone else: wait for it like for ours.
                    Err(e) if code_of(&e) == Some("ResourceInUseException") => {}
                    Err(e) => return Err(aws_error("CreateTable", e)),
                }
            }
            Err(e) => return Err(aws_error("DescribeTable", e)),
        }
        self.wait_active().await
    }

    async fn wait_active(&self) -> Result<()> {
        for _ in 0..240 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| aws_error("DescribeTable", e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(RotorError::Aws {
            operation: "DescribeTable",
            code: "TableNotActive".into(),
            message: format!(
                "table {} did not become ACTIVE within 2 minutes",
                self.table
            ),
            retryable: true,
        })
    }

    /// The identity's head item (consistent read), if any.
    async fn read_head(&self, identity_id: &str) -> Result<Option<Head>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(ATTR_IDENTITY, s(identity_id))
            .key(ATTR_SEQ, n(HEAD_ITEM_SEQ))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error("GetItem", e))?;
        Ok(out.item().map(parse_head))
    }

    /// Writes `record` and `new_head` in one transaction, conditional on the head still being
    /// `old_head` (or absent) and the record's seq being free.
    async fn write(
        &self,
        record: &AuditRecord,
        old_head: Option<&Head>,
        new_head: &Head,
    ) -> std::result::Result<(), WriteFailure> {
        let head_put = {
            let b = Put::builder()
                .table_name(&self.table)
                .set_item(Some(head_item(&record.identity_id, new_head)));
            match old_head {
                None => b
                    .condition_expression("attribute_not_exists(#id)")
                    .expression_attribute_names("#id", ATTR_IDENTITY),
                Some(h) => b
                    .condition_expression("#hs = :hs AND #hh = :hh AND #hm = :hm")
                    .expression_attribute_names("#hs", ATTR_HEAD_SEQ)
                    .expression_attribute_names("#hh", ATTR_HEAD_HASH)
                    .expression_attribute_names("#hm", ATTR_HEAD_MAC)
                    .expression_attribute_values(":hs", n(h.seq))
                    .expression_attribute_values(":hh", s(&h.hash))
                    .expression_attribute_values(
                        ":hm",
                        AttributeValue::B(Blob::new(h.mac.clone())),
                    ),
            }
            .build()
            .map_err(|e| WriteFailure::Failed(build_error("TransactWriteItems")(e)))?
        };
        let record_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record_item(record)))
            .condition_expression("attribute_not_exists(#seq)")
            .expression_attribute_names("#seq", ATTR_SEQ)
            .build()
            .map_err(|e| WriteFailure::Failed(build_error("TransactWriteItems")(e)))?;
        // The head first: its reason is reported first, whatever the service evaluates.
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(head_put).build())
            .transact_items(TransactWriteItem::builder().put(record_put).build())
            .send()
            .await;
        let err = match sent {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let reasons: Option<Vec<String>> = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => Some(
                c.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_string())
                    .collect(),
            ),
            _ => None,
        };
        let retryable_conflict = code_of(&err) == Some("TransactionConflictException");
        let mapped = aws_error("TransactWriteItems", err);
        match reasons {
            Some(codes) => {
                let head = codes.first().map(String::as_str).unwrap_or("None");
                let rec = codes.get(1).map(String::as_str).unwrap_or("None");
                let contended =
                    |c: &str| c == "ConditionalCheckFailed" || c == "TransactionConflict";
                if codes.is_empty() || contended(head) || rec == "TransactionConflict" {
                    Err(WriteFailure::Contended(mapped))
                } else if rec == "ConditionalCheckFailed" {
                    Err(WriteFailure::RecordExists)
                } else {
                    Err(WriteFailure::Failed(mapped))
                }
            }
            None if retryable_conflict => Err(WriteFailure::Contended(mapped)),
            None => Err(WriteFailure::Failed(mapped)),
        }
    }

    /// Whether `head`'s MAC verifies for `identity_id` (no call for an empty MAC).
    async fn mac_ok(&self, identity_id: &str, head: &Head) -> Result<bool> {
        if head.mac.is_empty() {
            return Ok(false);
        }
        self.custody
            .verify_mac(&head.message(identity_id), &head.mac)
            .await
    }
}

#[async_trait]
impl AuditLog for DynamoAudit {
    async fn append(&self, identity_id: &str, entry: AuditEntry) -> Result<AuditRecord> {
        let mut last_err = None;
        for attempt in 0..APPEND_ATTEMPTS {
            let head = self.read_head(identity_id).await?;
            let (seq, prev_hash) = match &head {
                None => (1, GENESIS_HASH.to_string()),
                Some(h) => {
                    if !self.mac_ok(identity_id, h).await? {
                        return Err(tampered(identity_id, "the head's MAC does not verify"));
                    }
                    let next = h
                        .seq
                        .checked_add(1)
                        .ok_or_else(|| tampered(identity_id, "the head's seq is exhausted"))?;
                    (next, h.hash.clone())
                }
            };
            let record = seal(identity_id, seq, &prev_hash, entry.clone());
            let mac = self
                .custody
                .mac(&head_message(identity_id, seq, &record.hash))
                .await?;
            let new_head = Head {
                seq,
                hash: record.hash.clone(),
                mac,
            };
            match self.write(&record, head.as_ref(), &new_head).await {
                Ok(()) => return Ok(record),
                Err(WriteFailure::Contended(e)) => {
                    last_err = Some(e);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(WriteFailure::RecordExists) => {
                    return Err(tampered(
                        identity_id,
                        &format!("record {seq} already exists beyond the head"),
                    ))
                }
                Err(WriteFailure::Failed(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| RotorError::Aws {
            operation: "TransactWriteItems",
            code: "TransactionCanceledException".into(),
            message: "too many concurrent appends".into(),
            retryable: true,
        }))
    }

    async fn records(&self, identity_id: &str) -> Result<Vec<AuditRecord>> {
        let mut records = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#id = :id AND #seq > :zero")
                .expression_attribute_names("#id", ATTR_IDENTITY)
                .expression_attribute_names("#seq", ATTR_SEQ)
                .expression_attribute_values(":id", s(identity_id))
                .expression_attribute_values(":zero", n(HEAD_ITEM_SEQ))
                .scan_index_forward(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| aws_error("Query", e))?;
            records.extend(out.items().iter().map(|i| parse_record(identity_id, i)));
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(records)
    }

    async fn verify(&self, identity_id: &str) -> Result<Verification> {
        let mut read = 1;
        loop {
            // Head first: an append landing between the two reads shows as a record beyond
            // the head, and the reads are repeated.
            let head = self.read_head(identity_id).await?;
            let records = self.records(identity_id).await?;
            let settled = match &head {
                Some(h) => records.last().map(|r| r.seq) == Some(h.seq),
                None => records.is_empty(),
            };
            if !settled && read < VERIFY_READS {
                read += 1;
                tokio::time::sleep(backoff(read)).await;
                continue;
            }
            let mac_ok = match &head {
                Some(h) => self.mac_ok(identity_id, h).await?,
                None => false,
            };
            return Ok(verify_chain(identity_id, &records, head.as_ref(), mac_ok));
        }
    }

    async fn identities(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("#seq = :zero")
                .projection_expression("#id")
                .expression_attribute_names("#id", ATTR_IDENTITY)
                .expression_attribute_names("#seq", ATTR_SEQ)
                .expression_attribute_values(":zero", n(HEAD_ITEM_SEQ))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| aws_error("Scan", e))?;
            ids.extend(
                out.items()
                    .iter()
                    .filter_map(|i| str_attr(i, ATTR_IDENTITY).map(str::to_string)),
            );
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

fn tampered(identity_id: &str, problem: &str) -> RotorError {
    RotorError::AuditTampered {
        identity: identity_id.to_string(),
        problem: problem.to_string(),
    }
}

fn build_error(operation: &'static str) -> impl Fn(BuildError) -> RotorError {
    move |e| RotorError::Aws {
        operation,
        code: "ConstructionFailure".into(),
        message: format!("request could not be built: {e}"),
        retryable: false,
    }
}

fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

/// Exponential backoff with jitter: 10 ms doubling per attempt, capped at 320 ms, each sleep
/// drawn from the upper half of the window so that contenders spread out.
fn backoff(attempt: u32) -> Duration {
    let cap = 10u64 << attempt.min(5);
    let half = cap / 2;
    let jitter = getrandom::u64().map(|r| r % (half + 1)).unwrap_or(half);
    Duration::from_millis(half + jitter)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn opt_s(item: &mut Item, name: &str, v: Option<&str>) {
    if let Some(v) = v {
        item.insert(name.to_string(), s(v));
    }
}

/// A record as a DynamoDB item: one attribute per field, `None` fields absent.
fn record_item(r: &AuditRecord) -> Item {
    let e = &r.entry;
    let mut item: Item = HashMap::from([
        (ATTR_IDENTITY.to_string(), s(&r.identity_id)),
        (ATTR_SEQ.to_string(), n(r.seq)),
        (ATTR_PREV_HASH.to_string(), s(&r.prev_hash)),
        (ATTR_HASH.to_string(), s(&r.hash)),
        (
            ATTR_AT_MS.to_string(),
            AttributeValue::N(e.at_ms.to_string()),
        ),
        (ATTR_ACTION.to_string(), s(&e.action)),
        (ATTR_OUTCOME.to_string(), s(&e.outcome)),
        (ATTR_ACTOR.to_string(), s(&e.actor)),
        (
            ATTR_VERSIONS.to_string(),
            AttributeValue::L(e.versions.iter().map(|v| s(v)).collect()),
        ),
    ]);
    opt_s(&mut item, ATTR_TOKEN, e.token.as_deref());
    opt_s(&mut item, ATTR_ERROR_TYPE, e.error_type.as_deref());
    opt_s(&mut item, ATTR_DETAIL, e.detail.as_deref());
    item
}

/// The head as a DynamoDB item (seq 0).
fn head_item(identity_id: &str, h: &Head) -> Item {
    HashMap::from([
        (ATTR_IDENTITY.to_string(), s(identity_id)),
        (ATTR_SEQ.to_string(), n(HEAD_ITEM_SEQ)),
        (ATTR_HEAD_SEQ.to_string(), n(h.seq)),
        (ATTR_HEAD_HASH.to_string(), s(&h.hash)),
        (
            ATTR_HEAD_MAC.to_string(),
            AttributeValue::B(Blob::new(h.mac.clone())),
        ),
    ])
}

fn str_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

fn num_attr<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// An optional string: `Ok(None)` when absent, `Err` when present with another type.
fn opt_str_attr(item: &Item, name: &str) -> std::result::Result<Option<String>, ()> {
    match item.get(name) {
        None | Some(AttributeValue::Null(true)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
        Some(_) => Err(()),
    }
}

/// Reads a record item. Never fails: a record whose item was mangled (an attribute Rotor
/// writes missing or of another type, a seq that is not a whole number) is returned with what
/// could be read and an empty hash, which no content hashes to, so `verify` reports it (an
/// unreadable seq sorts last). Attributes Rotor does not write are ignored.
fn parse_record(identity_id: &str, item: &Item) -> AuditRecord {
    let mut intact = true;
    let mut req_s = |name: &str| match str_attr(item, name) {
        Some(v) => v.to_string(),
        None => {
            intact = false;
            String::new()
        }
    };
    let prev_hash = req_s(ATTR_PREV_HASH);
    let hash = req_s(ATTR_HASH);
    let action = req_s(ATTR_ACTION);
    let outcome = req_s(ATTR_OUTCOME);
    let actor = req_s(ATTR_ACTOR);
    let id = req_s(ATTR_IDENTITY);
    let seq = num_attr::<u64>(item, ATTR_SEQ);
    let at_ms = num_attr::<i64>(item, ATTR_AT_MS);
    let versions: Option<Vec<String>> = match item.get(ATTR_VERSIONS) {
        Some(AttributeValue::L(l)) => l
            .iter()
            .map(|v| match v {
                AttributeValue::S(v) => Some(v.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    let token = opt_str_attr(item, ATTR_TOKEN);
    let error_type = opt_str_attr(item, ATTR_ERROR_TYPE);
    let detail = opt_str_attr(item, ATTR_DETAIL);
    intact = intact
        && seq.is_some()
        && at_ms.is_some()
        && versions.is_some()
        && token.is_ok()
        && error_type.is_ok()
        && detail.is_ok();
    AuditRecord {
        identity_id: if id.is_empty() {
            identity_id.to_string()
        } else {
            id
        },
        seq: seq.unwrap_or(u64::MAX),
        entry: AuditEntry {
            at_ms: at_ms.unwrap_or_default(),
            action,
            outcome,
            actor,
            token: token.unwrap_or_default(),
            versions: versions.unwrap_or_default(),
            error_type: error_type.unwrap_or_default(),
            detail: detail.unwrap_or_default(),
        },
        prev_hash,
        hash: if intact { hash } else { String::new() },
    }
}

/// Reads a head item. A mangled head reads as seq 0, empty hash or empty MAC, which verify as
/// a head mismatch or a bad MAC.
fn parse_head(item: &Item) -> Head {
    Head {
        seq: num_attr(item, ATTR_HEAD_SEQ).unwrap_or(0),
        hash: str_attr(item, ATTR_HEAD_HASH).unwrap_or("").to_string(),
        mac: match item.get(ATTR_HEAD_MAC) {
            Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
            _ => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        seal(
            "id-1",
            3,
            GENESIS_HASH,
            AuditEntry {
                at_ms: -5,
                action: "createSecret".into(),
                outcome: "created".into(),
                actor: "cli:alice".into(),
                token: Some("t".into()),
                versions: vec![],
                error_type: None,
                detail: Some(String::new()),
            },
        )
    }

    #[test]
    fn audit_item_round_trips() {
        let r = record();
        let item = record_item(&r);
        assert!(!item.contains_key(ATTR_ERROR_TYPE));
        assert_eq!(parse_record("id-1", &item), r);
    }

    #[test]
    fn audit_mangled_item_loses_its_hash() {
        let r = record();
        for (name, v) in [
            (ATTR_HASH, None),
            (ATTR_AT_MS, Some(s("5"))),
            (ATTR_VERSIONS, Some(AttributeValue::L(vec![n(1)]))),
            (ATTR_TOKEN, Some(n(1))),
            (ATTR_SEQ, Some(AttributeValue::N("1.5".into()))),
        ] {
            let mut item = record_item(&r);
            match v {
                Some(v) => item.insert(name.to_string(), v),
                None => item.remove(name),
            };
            assert_eq!(parse_record("id-1", &item).hash, "", "{name}");
        }
        let mut extra = record_item(&r);
        extra.insert("note".into(), s("x"));
        assert_eq!(parse_record("id-1", &extra), r);
    }

    #[test]
    fn audit_head_round_trips() {
        let h = Head {
            seq: 7,
            hash: "ab".repeat(32),
            mac: vec![1, 2, 3],
        };
        assert_eq!(parse_head(&head_item("id-1", &h)), h);
        assert_eq!(
            parse_head(&HashMap::new()),
            Head {
                seq: 0,
                hash: String::new(),
                mac: Vec::new()
            }
        );
    }

    #[test]
    fn audit_backoff_is_bounded() {
        for a in 0..20 {
            let d = backoff(a);
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(320));
        }
    }
}
