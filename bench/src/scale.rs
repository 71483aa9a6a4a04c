//! Scenario 7: the cost of a renewal when the lease table holds many names.
//!
//! One database per table size, each with its own holder connection. Each holder prepares its
//! plans (its first calls) while its table holds one analysed row, the worst case for plans
//! that follow the statistics; then the table is filled with `N - 1` more names (inserted
//! directly, with the row layout the functions write, since this measures renewals, not
//! creations), a checkpoint flushes them, and the holders renew one lease each, interleaved in
//! rounds like scenario 1. Autovacuum is off for these tables (see `run`). Goal (issue 12): the renewal time at 100,000 and 1,000,000 names
//! within 1.2x of the one-name table's.

use super::sql::{self, expect, Edition, LeaseCalls};
use super::stats::{paired_ratio, round_order, run_for, LatencySummary, RoundLatencies, Spread};
use super::{secs, BenchError, Plan};
use lease_lock_tests::TestCluster;
use serde::Serialize;
use tracing::info;
use uuid::Uuid;

const LEASE: &str = "scale";
const WARMUP_CALLS: u32 = 20;

/// One table size's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleRow {
    pub names: u64,
    /// Renewals per second: median of the rounds and range.
    pub rate: Spread,
    pub latency: LatencySummary,
    /// Time per renewal relative to the one-name table (per-round ratio).
    pub time_vs_one_name: Spread,
    /// The lease table with its indexes, in bytes per name.
    pub bytes_per_name: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScaleResult {
    pub rows: Vec<ScaleRow>,
}

/// Runs scenario 7 on `cluster`, one fresh database per size in `plan.scale_names`.
///
/// # Errors
/// A failed or unexpected call.
pub async fn run(cluster: &TestCluster, plan: &Plan) -> Result<ScaleResult, BenchError> {
    let mut databases = Vec::new();
    let mut holders = Vec::new();
    for &names in &plan.scale_names {
        let db = cluster.fresh_database();
        let control = sql::connect(&db.conninfo()).await?;
        // Autovacuum is off for this table during the scenario: its pass over the freshly
        // filled table would compete for the 2 cores while the renewals are timed (and its
        // ANALYZE would re-plan, hiding what the scenario shows). Set before the holder
        // prepares its plans: changing it later re-plans too.
        control
            .batch_execute("ALTER TABLE lease_lock.leases SET (autovacuum_enabled = false); ANALYZE lease_lock.leases")
            .await?;
        let holder = LeaseCalls::connect(&db.conninfo(), Edition::C, Uuid::new_v4()).await?;
        expect(holder.acquire(LEASE).await?, "the holder could not take the lease")?;
        for _ in 0..WARMUP_CALLS {
            expect(holder.refresh(LEASE).await?, "lease_lock.lease_refresh did not renew")?;
        }
        info!(names, "filling the lease table");
        control
            .execute(
                "INSERT INTO lease_lock.leases (lease_name, fencing_token, holder, holder_role, acquired_at, \
                   renewed_at, expires_at, timeline, max_duration_us) \
                 SELECT 'filler-' || g, 1, NULL, NULL, now(), now(), now(), 1, 10000000 \
                 FROM generate_series(1, $1::bigint - 1) g",
                &[&(names as i64)],
            )
            .await?;
        control.batch_execute("CHECKPOINT").await?;
        holders.push(holder);
        databases.push((db, control));
    }

    let n = holders.len();
    let mut rates = vec![Vec::new(); n];
    let mut latencies = vec![RoundLatencies::default(); n];
    for round in 0..plan.scale_rounds {
        for i in round_order(n, round) {
            let holder = &holders[i];
            let sample = run_for(secs(plan.scale_period_s), WARMUP_CALLS, async || {
                expect(holder.refresh(LEASE).await?, "lease_lock.lease_refresh did not renew")
            })
            .await?;
            info!(round, names = plan.scale_names[i], calls_per_s = sample.rate() as u64, "measured");
            rates[i].push(sample.rate());
            latencies[i].push(sample.latencies);
        }
    }

    let mut rows = Vec::new();
    for (i, (_, control)) in databases.iter().enumerate() {
        let names = plan.scale_names[i];
        let bytes: i64 = control.query_one("SELECT pg_total_relation_size('lease_lock.leases')", &[]).await?.get(0);
        rows.push(ScaleRow {
            names,
            rate: Spread::of(rates[i].clone()),
            latency: latencies[i].summary(),
            time_vs_one_name: paired_ratio(&rates[0], &rates[i]),
            bytes_per_name: bytes as f64 / names as f64,
        });
    }
    drop(holders);
    Ok(ScaleResult { rows })
}
