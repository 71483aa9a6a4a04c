//! Scenario 2: 10,000 named leases renewed with `lease_lock.lease_refresh` over 1 to 16 connections, each
//! connection renewing its own share back to back, against the same number of connections doing
//! one-row `UPDATE`s of their own rows of a 10,000-row table (the durable-commit floor).
//!
//! WAL flushes are counted from `pg_stat_wal.wal_sync`: when more connections stop adding
//! throughput, that count shows whether commits are sharing flushes (group commit) or the
//! flush rate itself is the limit.

use super::sql::{self, expect};
use super::stats::{median, paired_ratio, Latencies, LatencySummary, RoundLatencies, Sample, Spread};
use super::{secs, BenchError, Plan};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tokio_postgres::{Client, Statement};
use tracing::info;
use uuid::Uuid;

pub const LEASES: usize = 10_000;
pub const CONNECTIONS: [usize; 5] = [1, 2, 4, 8, 16];
/// More connections adding less than this factor count as the plateau.
pub const PLATEAU_GAIN: f64 = 1.10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    LeaseRefresh,
    Update,
}

#[derive(Clone, Debug, Serialize)]
pub struct ManyRow {
    pub connections: usize,
    pub refresh_rate: Spread,
    pub refresh_latency: LatencySummary,
    pub update_rate: Spread,
    pub update_latency: LatencySummary,
    /// lease_lock.lease_refresh throughput over UPDATE throughput, per round.
    pub refresh_vs_update: Spread,
    /// WAL syncs per second (median of rounds), if `pg_stat_wal` could be read.
    pub refresh_wal_syncs_per_s: Option<f64>,
    pub update_wal_syncs_per_s: Option<f64>,
}

impl ManyRow {
    /// Renewals committed per WAL flush: above 1 when commits share flushes.
    pub fn refresh_commits_per_sync(&self) -> Option<f64> {
        self.refresh_wal_syncs_per_s.filter(|s| *s > 0.0).map(|s| self.refresh_rate.median / s)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ManyResult {
    pub leases: usize,
    pub rows: Vec<ManyRow>,
    /// Fewest connections from which no larger count adds 10% or more (None: still growing).
    pub refresh_plateau_connections: Option<usize>,
    pub update_plateau_connections: Option<usize>,
}

struct Worker {
    client: Client,
    refresh: Statement,
    update: Statement,
    force_stats: Statement,
}

/// Runs scenario 2.
///
/// # Errors
/// A failed call, or a renewal that did not renew.
pub async fn run(conninfo: &str, control: &Client, plan: &Plan) -> Result<ManyResult, BenchError> {
    let holder = Uuid::new_v4();
    let taken: i64 =
        control.query_one(sql::Edition::C.acquire_series_sql(), &[&holder, &(LEASES as i32), &"many-"]).await?.get(0);
    expect(taken == LEASES as i64, "not every one of the 10,000 leases could be taken")?;
    let names: Arc<Vec<String>> = Arc::new((1..=LEASES).map(|i| format!("many-{i}")).collect());

    let max = CONNECTIONS[CONNECTIONS.len() - 1];
    let mut workers = Vec::new();
    for _ in 0..max {
        let client = sql::connect(conninfo).await?;
        let refresh = client.prepare(sql::Edition::C.refresh_sql()).await?;
        let update = client.prepare("UPDATE floor_many SET v = v + 1 WHERE id = $1").await?;
        let force_stats = client.prepare("SELECT pg_stat_force_next_flush()").await?;
        workers.push(Arc::new(Worker { client, refresh, update, force_stats }));
    }
    // Warm every connection once (catalog caches, plans), untimed.
    for (w, worker) in workers.iter().enumerate() {
        renew_or_update(worker, Kind::LeaseRefresh, holder, &names[w], w as i32 + 1).await?;
    }

    let wal_stats_readable = control.query_one("SELECT wal_sync FROM pg_stat_wal", &[]).await.is_ok();
    let levels = CONNECTIONS.len();
    let mut rates = vec![[Vec::new(), Vec::new()]; levels];
    let mut syncs = vec![[Vec::new(), Vec::new()]; levels];
    let mut latencies = vec![[RoundLatencies::default(), RoundLatencies::default()]; levels];
    for round in 0..plan.many_rounds {
        for (level, &c) in CONNECTIONS.iter().enumerate() {
            for k in 0..2 {
                let kind = if (round + level + k) % 2 == 0 { Kind::LeaseRefresh } else { Kind::Update };
                let slot = kind as usize; // 0: lease_lock.lease_refresh, 1: UPDATE (declaration order)
                let before = wal_syncs(control, &workers[..c], wal_stats_readable).await?;
                let sample = measure(&workers[..c], kind, holder, &names, secs(plan.many_period_s)).await?;
                let after = wal_syncs(control, &workers[..c], wal_stats_readable).await?;
                if let (Some(b), Some(a)) = (before, after) {
                    syncs[level][slot].push((a - b) as f64 / sample.elapsed.as_secs_f64());
                }
                info!(round, connections = c, ?kind, calls_per_s = sample.rate() as u64, "measured");
                rates[level][slot].push(sample.rate());
                latencies[level][slot].push(sample.latencies);
            }
        }
    }

    let rows: Vec<ManyRow> = CONNECTIONS
        .iter()
        .enumerate()
        .map(|(level, &connections)| {
            let [refresh, update] = &rates[level];
            let syncs_of = |slot: usize| (!syncs[level][slot].is_empty()).then(|| median(&syncs[level][slot]));
            ManyRow {
                connections,
                refresh_rate: Spread::of(refresh.clone()),
                refresh_latency: latencies[level][0].summary(),
                update_rate: Spread::of(update.clone()),
                update_latency: latencies[level][1].summary(),
                refresh_vs_update: paired_ratio(refresh, update),
                refresh_wal_syncs_per_s: syncs_of(0),
                update_wal_syncs_per_s: syncs_of(1),
            }
        })
        .collect();
    // The fewest connections from which no larger count adds PLATEAU_GAIN or more.
    let plateau = |rate: fn(&ManyRow) -> f64| {
        (0..rows.len().saturating_sub(1))
            .find(|&i| rows[i + 1..].iter().all(|later| rate(later) < rate(&rows[i]) * PLATEAU_GAIN))
            .map(|i| rows[i].connections)
    };
    Ok(ManyResult {
        leases: LEASES,
        refresh_plateau_connections: plateau(|r| r.refresh_rate.median),
        update_plateau_connections: plateau(|r| r.update_rate.median),
        rows,
    })
}

/// One call: renew lease `name`, or update row `id`.
async fn renew_or_update(worker: &Worker, kind: Kind, holder: Uuid, name: &str, id: i32) -> Result<(), BenchError> {
    match kind {
        Kind::LeaseRefresh => {
            let renewed: bool = worker.client.query_one(&worker.refresh, &[&holder, &name]).await?.get(0);
            expect(renewed, "lease_lock.lease_refresh of one of the 10,000 leases did not renew")
        }
        Kind::Update => {
            expect(worker.client.execute(&worker.update, &[&id]).await? == 1, "the floor UPDATE changed no row")
        }
    }
}

/// All `workers` call back to back for `period`, worker `w` of `c` cycling through leases (or
/// rows) `w+1, w+1+c, ...`; they start together.
async fn measure(
    workers: &[Arc<Worker>],
    kind: Kind,
    holder: Uuid,
    names: &Arc<Vec<String>>,
    period: Duration,
) -> Result<Sample, BenchError> {
    let c = workers.len();
    let start = Arc::new(Barrier::new(c + 1));
    let mut tasks = Vec::new();
    for (w, worker) in workers.iter().enumerate() {
        let (worker, names, start) = (worker.clone(), names.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let share: Vec<usize> = (w..names.len()).step_by(c).collect();
            let mut latencies = Latencies::new();
            let mut calls = 0u64;
            start.wait().await;
            let begun = Instant::now();
            for &i in share.iter().cycle() {
                let sent = Instant::now();
                if sent - begun >= period {
                    break;
                }
                renew_or_update(&worker, kind, holder, &names[i], i as i32 + 1).await?;
                latencies.record(sent.elapsed());
                calls += 1;
            }
            Ok::<_, BenchError>((calls, latencies))
        }));
    }
    start.wait().await;
    let begun = Instant::now();
    let mut sample = Sample::default();
    for task in tasks {
        let (calls, latencies) = task.await??;
        sample.calls += calls;
        sample.latencies.merge(&latencies);
    }
    sample.elapsed = begun.elapsed();
    Ok(sample)
}

/// `pg_stat_wal.wal_sync` after making every worker's backend publish its pending counters
/// (backends publish them at most once a second otherwise).
async fn wal_syncs(control: &Client, workers: &[Arc<Worker>], readable: bool) -> Result<Option<i64>, BenchError> {
    if !readable {
        return Ok(None);
    }
    for worker in workers {
        // Sets a flag; the counters are published when the backend next goes idle, before it
        // answers this call.
        worker.client.query_one(&worker.force_stats, &[]).await?;
    }
    Ok(Some(control.query_one("SELECT wal_sync FROM pg_stat_wal", &[]).await?.get(0)))
}
