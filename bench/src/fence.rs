//! Scenario 4: what `lease_lock.lease_fence` adds to a protected write. Both transactions are
//! pipelined on one connection (their statements sent together: one round trip): `BEGIN`, the
//! client's [`Fence::check`], the prepared `INSERT` of one row, `COMMIT`, against the same
//! without the fence, interleaved in rounds.

use super::sql::{self, expect, Edition, LeaseCalls};
use super::stats::{paired_ratio, run_for, LatencySummary, RoundLatencies, Spread};
use super::{secs, BenchError, Plan};
use lease_lock_client::Fence;
use serde::Serialize;
use tokio_postgres::{Client, Statement};
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
    let holder = LeaseCalls::connect(conninfo, Edition::C, Uuid::new_v4()).await?;
    expect(holder.acquire(LEASE_NAME).await?, "could not take the lease for fenced writes")?;
    let token: i64 = control
        .query_one("SELECT fencing_token FROM lease_lock.lease_status WHERE lease_name = $1", &[&LEASE_NAME])
        .await?
        .get(0);
    let fence = Fence::new(Edition::C.schema(), LEASE_NAME, token);
    let app = sql::connect(conninfo).await?;
    let insert = app.prepare("INSERT INTO fenced_writes (token, payload) VALUES ($1, 'x')").await?;
    let described = [
        "BEGIN; SELECT \"lease_lock\".lease_fence($1, $2); INSERT INTO fenced_writes (token, payload) VALUES ($1, 'x'); COMMIT",
        "BEGIN; INSERT INTO fenced_writes (token, payload) VALUES ($1, 'x'); COMMIT",
    ];

    let mut rates = [Vec::new(), Vec::new()];
    let mut latencies = [RoundLatencies::default(), RoundLatencies::default()];
    for round in 0..plan.fence_rounds {
        for k in 0..2 {
            let i = (round + k) % 2;
            let fenced = (i == 0).then_some(&fence);
            let sample =
                run_for(secs(plan.fence_period_s), 20, async || write(&app, fenced, &insert, token).await).await?;
            info!(round, fenced = i == 0, calls_per_s = sample.rate() as u64, "measured");
            rates[i].push(sample.rate());
            latencies[i].push(sample.latencies);
        }
    }
    let row = |i: usize, label| FenceRow {
        label,
        sql: described[i].to_string(),
        rate: Spread::of(rates[i].clone()),
        latency: latencies[i].summary(),
    };
    Ok(FenceResult {
        fenced: row(0, "with lease_lock.lease_fence"),
        unfenced: row(1, "without fence"),
        fenced_time_vs_unfenced: paired_ratio(&rates[1], &rates[0]),
    })
}

/// One write transaction, its statements pipelined: `BEGIN`, the fence if any, the insert,
/// `COMMIT`. A failed fence or insert fails the call (its `COMMIT` then rolls back).
async fn write(app: &Client, fence: Option<&Fence>, insert: &Statement, token: i64) -> Result<(), BenchError> {
    let fenced = async {
        match fence {
            Some(fence) => fence.check(app).await,
            None => Ok(()),
        }
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&token];
    let (begun, fenced, inserted, committed) =
        tokio::join!(app.batch_execute("BEGIN"), fenced, app.execute(insert, &params), app.batch_execute("COMMIT"));
    begun?;
    fenced?;
    inserted?;
    committed?;
    Ok(())
}
