//! Scenario 3: one holder renewing back to back (one renewal in flight, as fast as it can)
//! while 0, 10, 50 or 100 standbys poll the same lease every 100 ms, for lease_lock (holder:
//! `lease_lock.lease_refresh`; standbys: `lease_lock.lease_acquire`, which only reads a held lease) and for the
//! reference (holder and standbys: its BEGIN; upsert; COMMIT, whose failed attempts lock the
//! holder's row until they commit). Run over the Unix socket and over the delayed link, where a
//! standby's lock is held for at least a network round trip.
//!
//! Back to back rather than at a fixed rate: a paced holder's latency on a VM is dominated by
//! waking up from idle, which hides what the standbys do. The holder runs on its own OS thread
//! and runtime, as it would in its own process, so the standbys' client-side work (here, in
//! this process) does not delay its timing; what remains is what the standbys do to it in the
//! server (row locks, CPU).

use super::sql::{self, expect, Edition, LeaseCalls, Reference, BENCH_LEASE};
use super::stats::{run_for, LatencySummary, RoundLatencies, Sample};
use super::BenchError;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tracing::info;
use uuid::Uuid;

pub const STANDBY_COUNTS: [usize; 4] = [0, 10, 50, 100];
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time for every standby to have started polling before the holder is timed.
const STANDBY_SETTLE: Duration = Duration::from_millis(150);
/// Untimed renewals of the holder's fresh connection.
const HOLDER_WARMUP: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    LeaseLock,
    /// lease_lock's portable edition (schema `lease_portable`, see [`Edition`]).
    Portable,
    Reference,
}

pub const SYSTEMS: [System; 3] = [System::LeaseLock, System::Portable, System::Reference];

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::LeaseLock => "lease_lock",
            System::Portable => "lease_lock, portable edition",
            System::Reference => "reference",
        }
    }

    /// The lease_lock edition the system calls; `None` for the reference.
    fn edition(self) -> Option<Edition> {
        match self {
            System::LeaseLock => Some(Edition::C),
            System::Portable => Some(Edition::Portable),
            System::Reference => None,
        }
    }

    /// A connection of this system's client (holder or standby) with its calls prepared.
    async fn connect(self, conninfo: &str, id: Uuid) -> Result<Standby, BenchError> {
        Ok(match self.edition() {
            Some(edition) => Standby::Lease(LeaseCalls::connect(conninfo, edition, id).await?),
            None => Standby::Reference(Reference::connect(conninfo, id, BENCH_LEASE).await?),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ContentionRow {
    pub system: System,
    pub standbys: usize,
    /// The holder's renewal latency (percentiles: median of the rounds').
    pub holder: LatencySummary,
    pub p50_vs_none: f64,
    pub p99_vs_none: f64,
    /// Standby polls completed per second (all standbys).
    pub standby_polls_per_s: f64,
    /// Standby polls that failed (for example the reference's lock timeout).
    pub standby_errors: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ContentionResult {
    pub link: String,
    pub poll_interval_ms: f64,
    pub rows: Vec<ContentionRow>,
}

impl ContentionResult {
    pub fn row(&self, system: System, standbys: usize) -> Option<&ContentionRow> {
        self.rows.iter().find(|r| r.system == system && r.standbys == standbys)
    }
}

/// A standby's connection: it polls and is refused.
enum Standby {
    Lease(LeaseCalls),
    Reference(Reference),
}

impl Standby {
    /// One poll; true if it (wrongly) got the lease.
    async fn poll(&self, lease_name: &str) -> Result<bool, BenchError> {
        match self {
            Standby::Lease(calls) => calls.acquire(lease_name).await,
            Standby::Reference(reference) => reference.get_lease().await,
        }
    }
}

#[derive(Default)]
struct PollCounts {
    polls: AtomicU64,
    errors: AtomicU64,
    taken: AtomicU64,
}

/// Runs scenario 3 over `conninfo` (described as `link`) on the lease `lease_name`.
///
/// # Errors
/// A failed holder renewal, or a standby that took the lease from a live holder.
pub async fn run(
    conninfo: &str,
    link: &str,
    lease_name: &str,
    rounds: usize,
    period: Duration,
) -> Result<ContentionResult, BenchError> {
    let control = sql::connect(conninfo).await?;
    sql::reset_reference(&control).await?;
    let holder_id = Uuid::new_v4();
    let most = STANDBY_COUNTS[STANDBY_COUNTS.len() - 1];
    let systems = SYSTEMS;
    let mut standby_sets = Vec::new();
    for system in systems {
        let taken = match system.connect(conninfo, holder_id).await? {
            Standby::Lease(calls) => calls.acquire(lease_name).await?,
            Standby::Reference(reference) => reference.get_lease().await?,
        };
        expect(taken, "the holder could not take the contended lease")?;
        standby_sets.push(open_standbys(conninfo, system, most).await?);
    }
    let lease_name: Arc<str> = lease_name.into();

    let mut latencies = vec![RoundLatencies::default(); systems.len() * STANDBY_COUNTS.len()];
    let mut polls = vec![(0u64, 0u64, Duration::ZERO); latencies.len()];
    for round in 0..rounds {
        for (level, &n) in STANDBY_COUNTS.iter().enumerate() {
            for k in 0..systems.len() {
                let s = (round + level + k) % systems.len();
                let system = systems[s];
                let standbys = &standby_sets[s];
                let (sample, counts, polled_for) =
                    with_standbys(&standbys[..n], conninfo, system, holder_id, &lease_name, period).await?;
                let taken = counts.taken.load(Ordering::Relaxed);
                expect(taken == 0, "a standby took the lease from a live holder")?;
                let slot = s * STANDBY_COUNTS.len() + level;
                info!(
                    link,
                    round,
                    standbys = n,
                    system = system.label(),
                    p99_ms = sample.latencies.summary().p99_ms,
                    "measured"
                );
                latencies[slot].push(sample.latencies);
                polls[slot].0 += counts.polls.load(Ordering::Relaxed);
                polls[slot].1 += counts.errors.load(Ordering::Relaxed);
                polls[slot].2 += polled_for;
            }
        }
    }

    let mut rows = Vec::new();
    for (s, &system) in systems.iter().enumerate() {
        let none = latencies[s * STANDBY_COUNTS.len()].summary();
        for (level, &standbys) in STANDBY_COUNTS.iter().enumerate() {
            let slot = s * STANDBY_COUNTS.len() + level;
            let holder = latencies[slot].summary();
            let (n_polls, errors, polled_for) = polls[slot];
            rows.push(ContentionRow {
                system,
                standbys,
                holder,
                p50_vs_none: holder.p50_ms / none.p50_ms,
                p99_vs_none: holder.p99_ms / none.p99_ms,
                standby_polls_per_s: if polled_for.is_zero() { 0.0 } else { n_polls as f64 / polled_for.as_secs_f64() },
                standby_errors: errors,
            });
        }
    }
    Ok(ContentionResult { link: link.to_string(), poll_interval_ms: super::ms(POLL_INTERVAL), rows })
}

async fn open_standbys(conninfo: &str, system: System, n: usize) -> Result<Vec<Arc<Standby>>, BenchError> {
    let mut opening = JoinSet::new();
    for _ in 0..n {
        let conninfo = conninfo.to_string();
        opening.spawn(async move { Ok::<_, BenchError>(Arc::new(system.connect(&conninfo, Uuid::new_v4()).await?)) });
    }
    let mut standbys = Vec::new();
    while let Some(opened) = opening.join_next().await {
        standbys.push(opened??);
    }
    Ok(standbys)
}

/// Starts `standbys` polling (phases spread evenly over the poll interval), times the holder for
/// `period`, stops the standbys.
async fn with_standbys(
    standbys: &[Arc<Standby>],
    conninfo: &str,
    system: System,
    holder_id: Uuid,
    lease_name: &Arc<str>,
    period: Duration,
) -> Result<(Sample, Arc<PollCounts>, Duration), BenchError> {
    let counts = Arc::new(PollCounts::default());
    let (stop, stopped) = watch::channel(false);
    let mut polling = JoinSet::new();
    let n = standbys.len().max(1) as u32;
    for (i, standby) in standbys.iter().enumerate() {
        let (standby, counts, mut stopped) = (standby.clone(), counts.clone(), stopped.clone());
        let lease_name = lease_name.clone();
        let phase = POLL_INTERVAL * i as u32 / n;
        polling.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, POLL_INTERVAL);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tick.tick() => {}
                }
                match standby.poll(&lease_name).await {
                    Ok(false) => counts.polls.fetch_add(1, Ordering::Relaxed),
                    Ok(true) => counts.taken.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(error = %e, "standby poll failed");
                        counts.errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
    let polling_since = Instant::now();
    tokio::time::sleep(STANDBY_SETTLE).await;
    let holder = time_holder(conninfo.to_string(), system, holder_id, lease_name.to_string(), period).await;
    let _ = stop.send(true);
    while polling.join_next().await.is_some() {}
    let polled_for = if standbys.is_empty() { Duration::ZERO } else { polling_since.elapsed() };
    Ok((holder?, counts, polled_for))
}

/// The holder, on its own thread and runtime: renews back to back for `period`, timing each
/// renewal.
async fn time_holder(
    conninfo: String,
    system: System,
    holder_id: Uuid,
    lease_name: String,
    period: Duration,
) -> Result<Sample, BenchError> {
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let holder = system.connect(&conninfo, holder_id).await?;
            // The holder renews with lease_refresh; the reference's holder with its transaction.
            run_for(period, HOLDER_WARMUP, async || match &holder {
                Standby::Lease(calls) => {
                    expect(calls.refresh(&lease_name).await?, "the holder's lease_refresh did not renew")
                }
                Standby::Reference(reference) => {
                    expect(reference.get_lease().await?, "the reference holder's renewal did not renew")
                }
            })
            .await
        })
    });
    tokio::task::spawn_blocking(move || {
        thread.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the holder thread panicked")))
    })
    .await?
}
