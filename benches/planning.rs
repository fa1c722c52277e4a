//! `cargo bench --bench planning`: what planning costs as the inventory grows. For inventories of
//! 1,000 / 10,000 / 100,000 identities of which 100 are due, measures the due-index query (time,
//! requests, items read) and one full plan (query + 100 leases + 100 audit records). Items read
//! must stay flat: the sparse due index holds only what is due. Figures go to BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use rotor::adapters::dynamodb_inventory::to_item;
use rotor::adapters::DynamoInventory;
use rotor::fleet::now;
use rotor::inventory::{Identity, Status, Tier};
use rotor::ports::Inventory;

const DUE: usize = 100;

fn identity(n: usize, due_at: i64) -> Identity {
    Identity {
        id: format!("bench/{n:06}"),
        kind: "generic".into(),
        secret: format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:bench/{n:06}-AbCdEf"),
        owner: "bench".into(),
        tier: Tier::Standard,
        interval_days: None,
        window: None,
        depends_on: vec![],
        privileges: vec![],
        status: Status::Active,
        created_at: 0,
        last_rotated_at: Some(0),
        next_due_at: due_at,
        failure_count: 0,
        last_error: None,
        lease: None,
        registration_hash: String::new(),
        audit_seq: 0,
    }
}

async fn seed(inv: &DynamoInventory, total: usize, t: i64) {
    let mut batch = Vec::with_capacity(25);
    for n in 0..total {
        // Every (total / DUE)-th identity is due; the rest are due within the next 30 days.
        let due_at = if n % (total / DUE) == 0 {
            t - 60 - n as i64 % 3000
        } else {
            t + 3600 + (n as i64 * 7919) % (30 * 86_400)
        };
        let put = PutRequest::builder()
            .set_item(Some(to_item(&identity(n, due_at))))
            .build()
            .unwrap();
        batch.push(WriteRequest::builder().put_request(put).build());
        if batch.len() == 25 || n + 1 == total {
            let mut pending = std::mem::take(&mut batch);
            while !pending.is_empty() {
                let out = inv
                    .client()
                    .batch_write_item()
                    .request_items(inv.table(), pending)
                    .send()
                    .await
                    .unwrap();
                pending = out
                    .unprocessed_items()
                    .and_then(|m| m.get(inv.table()))
                    .cloned()
                    .unwrap_or_default();
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    support::use_threaded_moto();
    let sdk = support::sdk().await;
    println!("## Planning cost by inventory size ({DUE} due)\n");
    println!("| identities | due query: median time (n=5) | requests | items read | full plan (query + {DUE} leases + {DUE} audit records) | leased |");
    println!("|---|---|---|---|---|---|");
    for total in [1_000usize, 10_000, 100_000] {
        let env = support::FleetEnv::new().await;
        let table = env.config.inventory_table.clone().unwrap();
        let inv = DynamoInventory::new(&sdk, &table, None);
        let t = now();
        let seeded = Instant::now();
        seed(&inv, total, t).await;
        let seed_s = seeded.elapsed().as_secs_f64();
        let mut times = Vec::new();
        let mut stats = Default::default();
        for _ in 0..5 {
            let q = Instant::now();
            let (found, s) = inv.due(t, 1000).await.unwrap();
            times.push(q.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(found.len(), DUE);
            stats = s;
        }
        times.sort_by(|a, b| a.total_cmp(b));
        // A full plan through the fleet: the identities' secrets do not exist, but planning
        // never reads secrets.
        let f = env.fleet().await;
        let p = Instant::now();
        let plan = f.plan("bench", DUE, t).await.unwrap();
        let plan_ms = p.elapsed().as_secs_f64() * 1000.0;
        println!(
            "| {total} | {:.1} ms | {} | {} | {:.0} ms | {} |",
            times[2],
            stats.requests,
            stats.items_read,
            plan_ms,
            plan.items.len()
        );
        eprintln!("(seeded {total} identities in {seed_s:.1} s)");
    }
}
