//! Scenario 1: one holder renewing one lease on one connection, side by side with what users
//! would use instead and with the two floors (a round trip, a durable commit).
//!
//! Every alternative has its own connection with its statements prepared. In each round every
//! alternative runs back to back calls for the same time, in an order that changes each round
//! ([`round_order`]).

use super::sql::{self, expect, Edition, LeaseCalls, Reference, BENCH_LEASE};
use super::stats::{paired_ratio, round_order, run_for, LatencySummary, RoundLatencies, Spread};
use super::{secs, BenchError, Plan};
use serde::Serialize;
use tokio_postgres::{Client, Statement};
use tracing::info;
use uuid::Uuid;

/// The advisory lock key.
const ADVISORY_KEY: i64 = 42;
/// Untimed calls before each timed period.
const WARMUP_CALLS: u32 = 20;

/// One way of doing "I still hold the lock" (or a floor to compare with).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Alternative {
    LeaseRefresh,
    LeaseAcquire,
    PortableRefresh,
    ReferenceTransaction,
    ReferenceUpsert,
    AdvisoryLock,
    SelectOne,
    UpdateOneRow,
}

pub const ALTERNATIVES: [Alternative; 8] = [
    Alternative::LeaseRefresh,
    Alternative::LeaseAcquire,
    Alternative::PortableRefresh,
    Alternative::ReferenceTransaction,
    Alternative::ReferenceUpsert,
    Alternative::AdvisoryLock,
    Alternative::SelectOne,
    Alternative::UpdateOneRow,
];

impl Alternative {
    /// Short name used in tables and the chart.
    pub fn label(self) -> &'static str {
        match self {
            Alternative::LeaseRefresh => "lease_lock.lease_refresh",
            Alternative::LeaseAcquire => "lease_lock.lease_acquire (holder renews)",
            Alternative::PortableRefresh => "portable edition lease_refresh",
            Alternative::ReferenceTransaction => "reference: BEGIN; upsert; COMMIT",
            Alternative::ReferenceUpsert => "reference upsert, autocommit",
            Alternative::AdvisoryLock => "pg_try_advisory_lock + pg_advisory_unlock",
            Alternative::SelectOne => "SELECT 1 (round-trip floor)",
            Alternative::UpdateOneRow => "one-row UPDATE (durable-commit floor)",
        }
    }

    /// What one call is and why it is in the table.
    pub fn explanation(self) -> &'static str {
        match self {
            Alternative::LeaseRefresh => {
                "The renewal the Rust client sends every refresh interval: one prepared \
                 `SELECT ... FROM lease_lock.lease_refresh($1, interval '1 hour', $2)`, one round trip, one \
                 HOT update of the lease row and one WAL flush at commit."
            }
            Alternative::LeaseAcquire => {
                "`lease_lock.lease_acquire` called by the current holder, which renews (same token): what \
                 a SQL-only client that always calls acquire pays."
            }
            Alternative::PortableRefresh => {
                "The same renewal with the portable edition (SQL and PL/pgSQL, `SECURITY DEFINER`, \
                 installed by its psql script into schema `lease_portable` of the same database): \
                 what a managed PostgreSQL without C extensions pays per renewal."
            }
            Alternative::ReferenceTransaction => {
                "The reference implementation's renewal: `BEGIN`, its `INSERT ... ON CONFLICT \
                 ((client_id IS NOT NULL)) DO UPDATE ... WHERE`, `COMMIT`: three round trips, one \
                 WAL flush. Its table, index and session settings are the reference's."
            }
            Alternative::ReferenceUpsert => {
                "The same upsert as one autocommit statement: what the reference would cost \
                 with the transaction's extra round trips removed."
            }
            Alternative::AdvisoryLock => {
                "Session advisory lock taken and given back (two prepared calls, two round \
                 trips, no WAL): what users reach for first; no fencing token, lost silently \
                 with the connection, does not survive a pooler."
            }
            Alternative::SelectOne => "A prepared `SELECT 1`: one round trip and nothing else, the floor of any call.",
            Alternative::UpdateOneRow => {
                "`UPDATE floor_small SET v = v + 1 WHERE id = 1` in autocommit: one round trip, \
                 one HOT update, one WAL flush: the floor of any durable renewal. Goal: \
                 lease_lock.lease_refresh within 1.15x of it."
            }
        }
    }
}

/// One alternative's figures.
#[derive(Clone, Debug, Serialize)]
pub struct SingleRow {
    pub alternative: Alternative,
    pub label: &'static str,
    /// Calls per second: median of the rounds and range.
    pub rate: Spread,
    /// Percentiles: median of the rounds'.
    pub latency: LatencySummary,
    /// Time per call relative to the one-row UPDATE (per-round `update rate / this rate`).
    pub time_vs_update: Spread,
    /// Throughput relative to the reference's three-round-trip transaction.
    pub throughput_vs_reference: Spread,
}

#[derive(Clone, Debug, Serialize)]
pub struct SingleResult {
    pub link: String,
    pub rows: Vec<SingleRow>,
}

impl SingleResult {
    pub fn row(&self, alternative: Alternative) -> &SingleRow {
        // Every alternative has a row: `run` makes one for each of ALTERNATIVES.
        self.rows.iter().find(|r| r.alternative == alternative).expect("a row per alternative")
    }
}

/// One alternative's connection and prepared statements (also scenario 9's PostgreSQL side).
pub(crate) enum Caller {
    Lease { calls: LeaseCalls, lease_name: String, renew_with_acquire: bool },
    Reference { reference: Reference, transaction: bool },
    Advisory { client: Client, lock: Statement, unlock: Statement },
    Plain { client: Client, statement: Statement, update: bool },
}

impl Caller {
    pub(crate) async fn open(
        alternative: Alternative,
        conninfo: &str,
        holder: Uuid,
        lease_name: &str,
    ) -> Result<Caller, BenchError> {
        Ok(match alternative {
            Alternative::LeaseRefresh | Alternative::LeaseAcquire => Caller::Lease {
                calls: LeaseCalls::connect(conninfo, Edition::C, holder).await?,
                lease_name: lease_name.to_string(),
                renew_with_acquire: alternative == Alternative::LeaseAcquire,
            },
            Alternative::PortableRefresh => Caller::Lease {
                calls: LeaseCalls::connect(conninfo, Edition::Portable, holder).await?,
                lease_name: lease_name.to_string(),
                renew_with_acquire: false,
            },
            Alternative::ReferenceTransaction | Alternative::ReferenceUpsert => Caller::Reference {
                reference: Reference::connect(conninfo, holder, BENCH_LEASE).await?,
                transaction: alternative == Alternative::ReferenceTransaction,
            },
            Alternative::AdvisoryLock => {
                let client = sql::connect(conninfo).await?;
                let lock = client.prepare("SELECT pg_try_advisory_lock($1)").await?;
                let unlock = client.prepare("SELECT pg_advisory_unlock($1)").await?;
                Caller::Advisory { client, lock, unlock }
            }
            Alternative::SelectOne | Alternative::UpdateOneRow => {
                let client = sql::connect(conninfo).await?;
                let update = alternative == Alternative::UpdateOneRow;
                let text = if update { "UPDATE floor_small SET v = v + 1 WHERE id = 1" } else { "SELECT 1" };
                let statement = client.prepare(text).await?;
                Caller::Plain { client, statement, update }
            }
        })
    }

    /// One call, checked: a renewal that did not renew is an error, not a fast call.
    pub(crate) async fn call(&self) -> Result<(), BenchError> {
        match self {
            Caller::Lease { calls, lease_name, renew_with_acquire: false } => {
                expect(calls.refresh(lease_name).await?, "lease_refresh did not renew")
            }
            Caller::Lease { calls, lease_name, renew_with_acquire: true } => {
                expect(calls.acquire(lease_name).await?, "lease_lock.lease_acquire by the holder did not renew")
            }
            Caller::Reference { reference, transaction: true } => {
                expect(reference.get_lease().await?, "the reference's transaction did not renew")
            }
            Caller::Reference { reference, transaction: false } => {
                expect(reference.upsert_autocommit().await?, "the reference's upsert did not renew")
            }
            Caller::Advisory { client, lock, unlock } => {
                let locked: bool = client.query_one(lock, &[&ADVISORY_KEY]).await?.get(0);
                let unlocked: bool = client.query_one(unlock, &[&ADVISORY_KEY]).await?.get(0);
                expect(locked && unlocked, "advisory lock not taken or not given back")
            }
            Caller::Plain { client, statement, update: false } => {
                client.query_one(statement, &[]).await?;
                Ok(())
            }
            Caller::Plain { client, statement, update: true } => {
                expect(client.execute(statement, &[]).await? == 1, "the floor UPDATE changed no row")
            }
        }
    }
}

/// Runs scenario 1 over `conninfo` (the socket or the delayed link), described as `link`,
/// renewing the lease `lease_name` (a new one for each link: its holder is new too).
///
/// # Errors
/// A failed or unexpected call.
pub async fn run(conninfo: &str, link: &str, lease_name: &str, plan: &Plan) -> Result<SingleResult, BenchError> {
    let holder = Uuid::new_v4();
    let control = sql::connect(conninfo).await?;
    sql::reset_reference(&control).await?;
    let mut callers = Vec::new();
    for alternative in ALTERNATIVES {
        callers.push(Caller::open(alternative, conninfo, holder, lease_name).await?);
    }
    // Take the lease for the holder in every system, so every timed call is a renewal.
    for edition in [Edition::C, Edition::Portable] {
        let lease = LeaseCalls::connect(conninfo, edition, holder).await?;
        expect(lease.acquire(lease_name).await?, "the holder could not take the lease")?;
    }
    let reference = Reference::connect(conninfo, holder, BENCH_LEASE).await?;
    expect(reference.get_lease().await?, "the reference holder could not take its lease")?;

    let n = ALTERNATIVES.len();
    let mut rates = vec![Vec::new(); n];
    let mut latencies = vec![RoundLatencies::default(); n];
    for round in 0..plan.single_rounds {
        for i in round_order(n, round) {
            let caller = &callers[i];
            let sample = run_for(secs(plan.single_period_s), WARMUP_CALLS, async || caller.call().await).await?;
            info!(link, round, alternative = ALTERNATIVES[i].label(), calls_per_s = sample.rate() as u64, "measured");
            rates[i].push(sample.rate());
            latencies[i].push(sample.latencies);
        }
    }

    let index = |a: Alternative| ALTERNATIVES.iter().position(|x| *x == a).unwrap_or(0);
    let update = &rates[index(Alternative::UpdateOneRow)];
    let reference3 = &rates[index(Alternative::ReferenceTransaction)];
    let rows = ALTERNATIVES
        .iter()
        .enumerate()
        .map(|(i, &alternative)| SingleRow {
            alternative,
            label: alternative.label(),
            rate: Spread::of(rates[i].clone()),
            latency: latencies[i].summary(),
            time_vs_update: paired_ratio(update, &rates[i]),
            throughput_vs_reference: paired_ratio(&rates[i], reference3),
        })
        .collect();
    Ok(SingleResult { link: link.to_string(), rows })
}
