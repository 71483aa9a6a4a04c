//! Scenario 8: many leases, one round trip. One holder holds 10,000 leases; on one connection it
//! renews them with one `lease_refresh` call per lease (back to back), or with one
//! `lease_refresh_many` call for all 10,000 (back to back), for each edition. Renewals per
//! second are leases renewed per second; a batch call's time says whether one connection keeps
//! 10,000 leases renewed every second.

use super::sql::{self, expect, Edition};
use super::stats::{paired_ratio, round_order, run_for, LatencySummary, RoundLatencies, Spread};
use super::{secs, BenchError, Plan};
use serde::Serialize;
use tokio_postgres::{Client, Statement};
use tracing::info;
use uuid::Uuid;

/// The leases one holder renews.
pub const LEASES: usize = 10_000;

/// One way of renewing the holder's leases on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    PerLease,
    Batch,
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchRow {
    pub edition: Edition,
    pub way: Way,
    /// Leases renewed per second (median of the rounds and range).
    pub renewals: Spread,
    /// Latency of one call (one lease, or all of them).
    pub call_latency: LatencySummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchResult {
    pub leases: usize,
    pub rows: Vec<BatchRow>,
    /// Per edition: batch renewals per second over per-lease renewals per second, per round.
    pub batch_vs_per_lease: Vec<(Edition, Spread)>,
}

impl BatchResult {
    pub fn row(&self, edition: Edition, way: Way) -> Option<&BatchRow> {
        self.rows.iter().find(|r| r.edition == edition && r.way == way)
    }
}

/// One edition's connection, its two statements, and the holder's lease names (also scenario
/// 9's batch).
pub(crate) struct Renewer {
    edition: Edition,
    client: Client,
    one: Statement,
    many: Statement,
    names: Vec<String>,
    holder: Uuid,
}

impl Renewer {
    /// Takes the leases `{prefix}1` to `{prefix}10000` for a new holder and prepares the calls.
    pub(crate) async fn open(conninfo: &str, edition: Edition, prefix: &str) -> Result<Renewer, BenchError> {
        let client = sql::connect(conninfo).await?;
        let holder = Uuid::new_v4();
        let taken: i64 =
            client.query_one(edition.acquire_series_sql(), &[&holder, &(LEASES as i32), &prefix]).await?.get(0);
        expect(taken == LEASES as i64, "not every one of the 10,000 leases could be taken")?;
        let one = client.prepare(edition.refresh_sql()).await?;
        let many = client.prepare(edition.refresh_many_sql()).await?;
        let names = (1..=LEASES).map(|i| format!("{prefix}{i}")).collect();
        Ok(Renewer { edition, client, one, many, names, holder })
    }

    /// One call: the next lease's `lease_refresh`, or `lease_refresh_many` of all. A lease not
    /// renewed is an error.
    pub(crate) async fn call(&self, way: Way, next: &mut usize) -> Result<(), BenchError> {
        match way {
            Way::PerLease => {
                let name = &self.names[*next % self.names.len()];
                *next += 1;
                let renewed: bool = self.client.query_one(&self.one, &[&self.holder, name]).await?.get(0);
                expect(renewed, "lease_refresh did not renew")
            }
            Way::Batch => {
                let row = self.client.query_one(&self.many, &[&self.holder, &self.names]).await?;
                let renewed: i64 = row.get(0);
                expect(renewed == self.names.len() as i64, "lease_refresh_many did not renew every lease")
            }
        }
    }
}

/// Runs scenario 8.
///
/// # Errors
/// A failed call, or a lease not renewed.
pub async fn run(conninfo: &str, plan: &Plan) -> Result<BatchResult, BenchError> {
    let mut renewers = Vec::new();
    for edition in [Edition::C, Edition::Portable] {
        renewers.push(Renewer::open(conninfo, edition, &format!("batch-{}-", edition.schema())).await?);
    }
    let alternatives: Vec<(usize, Way)> =
        (0..renewers.len()).flat_map(|r| [(r, Way::PerLease), (r, Way::Batch)]).collect();
    let n = alternatives.len();
    let mut rates = vec![Vec::new(); n];
    let mut latencies = vec![RoundLatencies::default(); n];
    let mut next = 0usize;
    for round in 0..plan.batch_rounds {
        for i in round_order(n, round) {
            let (r, way) = alternatives[i];
            let renewer = &renewers[r];
            // Untimed calls first (plans, caches); a batch call takes a while, so only one.
            let warmup = if way == Way::Batch { 1 } else { 20 };
            let sample =
                run_for(secs(plan.batch_period_s), warmup, async || renewer.call(way, &mut next).await).await?;
            let per_call = if way == Way::Batch { LEASES as f64 } else { 1.0 };
            let rate = sample.rate() * per_call;
            info!(round, edition = ?renewer.edition, ?way, renewals_per_s = rate as u64, "measured");
            rates[i].push(rate);
            latencies[i].push(sample.latencies);
        }
    }
    let mut rows = Vec::new();
    let mut batch_vs_per_lease = Vec::new();
    for (i, &(r, way)) in alternatives.iter().enumerate() {
        rows.push(BatchRow {
            edition: renewers[r].edition,
            way,
            renewals: Spread::of(rates[i].clone()),
            call_latency: latencies[i].summary(),
        });
        if way == Way::Batch {
            batch_vs_per_lease.push((renewers[r].edition, paired_ratio(&rates[i], &rates[i - 1])));
        }
    }
    Ok(BatchResult { leases: LEASES, rows, batch_vs_per_lease })
}
