//! Scenario 4: what `lease_lock.lease_fence` adds to a protected write. Both transactions are sent as one
//! simple-query batch (one round trip): `BEGIN; SELECT lease_lock.lease_fence(token, name); INSERT one row;
//! COMMIT` against the same without the fence, interleaved in rounds on one connection.

use super::sql::{self, expect, LeaseCalls};
use super::stats::{paired_ratio, run_for, LatencySummary, RoundLatencies, Spread};
use super::{secs, BenchError, Plan};
use serde::Serialize;
use tokio_postgres::Client;
use tracing::info;
use uuid::Uuid;

const LEASE_NAME: &str = "fenced";

#[derive(Clone, Debug, Serialize)]
pub struct FenceRow {
    pub label: &'static str,
    pub sql: String,
    pub rate: Spread,
    pub latency: LatencySummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct FenceResult {
    pub fenced: FenceRow,
    pub unfenced: FenceRow,
    /// Time per fenced write over time per unfenced write, per round.
    pub fenced_time_vs_unfenced: Spread,
}

/// Runs scenario 4.
///
/// # Errors
/// A failed write (a refused fence included).
pub async fn run(conninfo: &str, control: &Client, plan: &Plan) -> Result<FenceResult, BenchError> {
    control
        .batch_execute(
            "CREATE TABLE fenced_writes (id bigserial PRIMARY KEY, token bigint NOT NULL, payload text NOT NULL)",
        )
        .await?;
    // Taken for an hour (sql::BENCH_LEASE): every fence of the run sees a live tenure.
    let holder = LeaseCalls::connect(conninfo, Uuid::new_v4()).await?;
    expect(holder.acquire(LEASE_NAME).await?, "could not take the lease for fenced writes")?;
    let token: i64 = control
        .query_one("SELECT fencing_token FROM lease_lock.lease_status WHERE lease_name = $1", &[&LEASE_NAME])
        .await?
        .get(0);
    let insert = format!("INSERT INTO fenced_writes (token, payload) VALUES ({token}, 'x')");
    let batches = [
        format!("BEGIN; SELECT lease_lock.lease_fence({token}, '{LEASE_NAME}'); {insert}; COMMIT;"),
        format!("BEGIN; {insert}; COMMIT;"),
    ];
    let app = sql::connect(conninfo).await?;

    let mut rates = [Vec::new(), Vec::new()];
    let mut latencies = [RoundLatencies::default(), RoundLatencies::default()];
    for round in 0..plan.fence_rounds {
        for k in 0..2 {
            let i = (round + k) % 2;
            let batch = &batches[i];
            let sample = run_for(secs(plan.fence_period_s), 20, async || {
                if let Err(e) = app.batch_execute(batch).await {
                    let _ = app.batch_execute("ROLLBACK").await;
                    return Err(e.into());
                }
                Ok(())
            })
            .await?;
            info!(round, fenced = i == 0, calls_per_s = sample.rate() as u64, "measured");
            rates[i].push(sample.rate());
            latencies[i].push(sample.latencies);
        }
    }
    let row = |i: usize, label| FenceRow {
        label,
        sql: batches[i].clone(),
        rate: Spread::of(rates[i].clone()),
        latency: latencies[i].summary(),
    };
    Ok(FenceResult {
        fenced: row(0, "with lease_lock.lease_fence"),
        unfenced: row(1, "without fence"),
        fenced_time_vs_unfenced: paired_ratio(&rates[1], &rates[0]),
    })
}
