//! The benchmark runner (`src/main.rs`, started by `scripts/bench.sh`): lease_lock side by
//! side with what users would use instead, measured in one run against one throwaway PostgreSQL
//! 15 with default durability (fsync and synchronous_commit on).
//!
//! Scenarios, one module each:
//! 1. [`single`]: one holder renewing one lease on one connection, against the reference's
//!    three-round-trip transaction, its upsert alone, advisory locks, `SELECT 1` (the round-trip
//!    floor) and a one-row `UPDATE` (the durable-commit floor); over the Unix socket and over a
//!    loopback TCP link that adds 0.5 ms each way ([`link`]).
//! 2. [`many`]: 10,000 leases renewed over 1 to 16 connections, against plain `UPDATE`s.
//! 3. [`contention`]: a holder's renewal latency while 0 to 100 standbys poll its lease, over
//!    the socket and over the delayed link.
//! 4. [`fence`]: a write transaction with and without `lease_lock.lease_fence`.
//! 5. [`failover`]: release-to-standby and kill-to-standby times through the Rust client.
//! 6. [`cost`]: CPU and memory of a process holding 1, 100 and 1,000 leases.
//! 7. [`scale`]: one renewal's cost with 1, 100,000 and 1,000,000 lease names in the table.
//! 8. [`batch`]: 10,000 leases of one holder renewed on one connection, one call per lease
//!    against one `lease_refresh_many` call for all, for each edition.
//! 9. [`etcd`]: side by side with etcd on the same machine: renewal against its lease keepalive,
//!    graceful handover and crash failover against its election, 10,000 leases against one
//!    keepalive of a lease with 10,000 keys; over loopback TCP and over the delayed link.
//!
//! Alternatives of a scenario run interleaved in rounds (the order changing each round), so that
//! noise from other work on the machine hits all of them alike. Per-round figures are reported
//! as the median of the rounds with their range; latency percentiles as the median of the
//! rounds' percentiles, each from an HDR histogram of every call of the round. [`report`]
//! writes the Markdown and the JSON, [`chart`] the SVG.

pub mod batch;
pub mod chart;
pub mod child;
pub mod contention;
pub mod cost;
pub mod etcd;
pub mod failover;
pub mod fence;
pub mod link;
pub mod machine;
pub mod many;
pub mod report;
pub mod scale;
pub mod single;
pub mod sql;
pub mod stats;

use anyhow::Context;
use lease_lock_tests::TestCluster;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::info;

/// What went wrong in a benchmark (a failed call, an unexpected answer, a child that died),
/// with its chain of causes: `anyhow`, which the runner prints with `{:#}`.
pub type BenchError = anyhow::Error;

/// How long each scenario runs. `full` keeps the whole run under about 6 minutes on 2 cores;
/// `quick` is a ~1 minute smoke run whose figures are too short to quote.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub quick: bool,
    /// Scenario 1: rounds, and seconds per alternative per round (per link).
    pub single_rounds: usize,
    pub single_period_s: f64,
    /// Scenario 2: rounds, and seconds per connection count and kind per round.
    pub many_rounds: usize,
    pub many_period_s: f64,
    /// Scenario 3: rounds, and seconds of holder renewals per standby count and system, over
    /// the socket and over the delayed link.
    pub contention_rounds: usize,
    pub contention_period_s: f64,
    pub contention_delayed_rounds: usize,
    pub contention_delayed_period_s: f64,
    /// Scenario 4: rounds, and seconds per transaction kind per round.
    pub fence_rounds: usize,
    pub fence_period_s: f64,
    /// Scenario 5: repetitions of each graceful failover (notified and polling), and of the
    /// killed-holder failover.
    pub graceful_reps: usize,
    pub crash_reps: usize,
    /// Scenario 6: seconds over which the client's CPU time is measured.
    pub cost_window_s: f64,
    /// Scenario 7: table sizes (the first is the baseline, 1), rounds, seconds per size per round.
    pub scale_names: Vec<u64>,
    pub scale_rounds: usize,
    pub scale_period_s: f64,
    /// Scenario 8: rounds, and seconds per edition and way per round.
    pub batch_rounds: usize,
    pub batch_period_s: f64,
}

impl Plan {
    /// Many short rounds rather than a few long ones: a burst of other work on the machine then
    /// spoils one round of every alternative instead of all of one alternative's time.
    pub fn full() -> Plan {
        Plan {
            quick: false,
            single_rounds: 7,
            single_period_s: 1.0,
            many_rounds: 3,
            many_period_s: 1.5,
            contention_rounds: 3,
            contention_period_s: 2.0,
            contention_delayed_rounds: 2,
            contention_delayed_period_s: 1.5,
            fence_rounds: 5,
            fence_period_s: 1.0,
            graceful_reps: 15,
            crash_reps: 10,
            cost_window_s: 10.0,
            scale_names: vec![1, 100_000, 1_000_000],
            scale_rounds: 5,
            scale_period_s: 1.0,
            batch_rounds: 3,
            batch_period_s: 2.0,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            single_rounds: 2,
            single_period_s: 0.3,
            many_rounds: 1,
            many_period_s: 0.4,
            contention_rounds: 1,
            contention_period_s: 0.6,
            contention_delayed_rounds: 1,
            contention_delayed_period_s: 0.4,
            fence_rounds: 2,
            fence_period_s: 0.3,
            graceful_reps: 5,
            crash_reps: 3,
            cost_window_s: 3.0,
            scale_names: vec![1, 10_000, 100_000],
            scale_rounds: 2,
            scale_period_s: 0.3,
            batch_rounds: 1,
            batch_period_s: 1.0,
        }
    }
}

pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Everything one run measured; serialized as `results/benchmarks.json`.
#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: machine::Machine,
    pub plan: Plan,
    pub single_socket: single::SingleResult,
    pub single_delayed: single::SingleResult,
    pub many: many::ManyResult,
    pub contention: contention::ContentionResult,
    pub contention_delayed: contention::ContentionResult,
    pub fence: fence::FenceResult,
    pub failover: failover::FailoverResult,
    pub cost: cost::CostResult,
    pub scale: scale::ScaleResult,
    pub batch: batch::BatchResult,
    pub etcd: etcd::EtcdResult,
    pub goals: Vec<report::Goal>,
    pub run_seconds: f64,
}

/// Where the runner finds itself (for the `hold` child processes) and what it describes.
#[derive(Clone, Debug)]
pub struct RunnerContext {
    /// This executable: scenarios 5 and 6 start it as `bench hold ...`.
    pub exe: PathBuf,
    /// The repository, for the commit shown with the results.
    pub repo: PathBuf,
}

const SOCKET_LINK: &str = "Unix socket";
const DELAYED_LINK: &str = "loopback TCP, +0.5 ms each way";

/// The delay the link adds in each direction for the "remote database" of scenarios 1 and 3.
pub const LINK_DELAY_EACH_WAY: Duration = Duration::from_micros(500);

/// Starts a throwaway cluster and runs every scenario in order.
///
/// # Errors
/// The first failed scenario (a failed call, an unexpected answer, a child that did not hold).
pub async fn run(plan: &Plan, context: &RunnerContext) -> Result<Results, BenchError> {
    let started = Instant::now();
    // Default server settings: durability as shipped (fsync, synchronous_commit, full pages).
    // Connections for scenario 3: 100 standbys for each of the three systems, open at once.
    let cluster = TestCluster::start(&["max_connections=400"]);
    let db = cluster.fresh_database();
    let socket = db.conninfo();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], cluster.port()));
    let link = link::DelayLink::start(target, LINK_DELAY_EACH_WAY)?;
    let delayed = format!("host=127.0.0.1 port={} user=postgres dbname={}", link.port(), db.name);
    let tcp = format!("host=127.0.0.1 port={} user=postgres dbname={}", cluster.port(), db.name);

    let control = sql::connect(&socket).await?;
    let machine = machine::describe(&control, &context.repo).await?;
    info!(cpu = %machine.cpu_model, cores = machine.cores, postgres = %machine.postgres_version, "machine");
    sql::create_schema(&control, &socket).await?;
    // The portable edition next to the C extension, as a managed service's user installs it.
    cluster.install_portable(&db.name, sql::Edition::Portable.schema());

    info!("scenario 1: one holder, one lease, Unix socket");
    let single_socket = single::run(&socket, SOCKET_LINK, "single-socket", plan).await?;
    info!("scenario 1: one holder, one lease, TCP + 0.5 ms each way");
    let single_delayed = single::run(&delayed, DELAYED_LINK, "single-delayed", plan).await?;
    info!("scenario 2: 10,000 leases over 1-16 connections");
    let many = many::run(&socket, &control, plan).await?;
    info!("scenario 3: one holder, 0-100 polling standbys, Unix socket");
    let contention = contention::run(
        &socket,
        SOCKET_LINK,
        "contended-socket",
        plan.contention_rounds,
        secs(plan.contention_period_s),
    )
    .await?;
    info!("scenario 3: one holder, 0-100 polling standbys, TCP + 0.5 ms each way");
    let contention_delayed = contention::run(
        &delayed,
        DELAYED_LINK,
        "contended-delayed",
        plan.contention_delayed_rounds,
        secs(plan.contention_delayed_period_s),
    )
    .await?;
    info!("scenario 4: fenced writes");
    let fence = fence::run(&socket, &control, plan).await?;
    info!("scenario 5: failover through the Rust client");
    let failover = failover::run(&socket, &context.exe, plan).await?;
    info!("scenario 6: client CPU and memory");
    let cost = cost::run(&socket, &context.exe, plan).await?;
    info!("scenario 7: renewal cost by the number of lease names");
    let scale = scale::run(&cluster, plan).await?;
    info!("scenario 8: 10,000 leases renewed per lease and in one batch call");
    let batch = batch::run(&socket, plan).await?;
    info!("scenario 9: side by side with etcd");
    let etcd = etcd::run(etcd::Targets { tcp: &tcp, delayed: &delayed }, &context.exe, plan).await?;

    let mut results = Results {
        machine,
        plan: plan.clone(),
        single_socket,
        single_delayed,
        many,
        contention,
        contention_delayed,
        fence,
        failover,
        cost,
        scale,
        batch,
        etcd,
        goals: Vec::new(),
        run_seconds: 0.0,
    };
    results.goals = report::goals(&results);
    drop(control);
    drop(link);
    drop(db);
    drop(cluster);
    results.run_seconds = started.elapsed().as_secs_f64();
    Ok(results)
}

/// Writes `results/benchmarks.{json,md}`, `docs/benchmarks.md` and `docs/benchmarks.svg` under
/// `out`.
///
/// # Errors
/// A file that could not be written.
pub fn write_outputs(results: &Results, out: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(out.join("results"))?;
    std::fs::create_dir_all(out.join("docs"))?;
    let json = serde_json::to_string_pretty(results).context("serializing results")?;
    let files = [
        (out.join("results/benchmarks.json"), json + "\n"),
        (out.join("results/benchmarks.md"), report::results_markdown(results)),
        (out.join("docs/benchmarks.md"), report::docs_markdown(results)),
        (out.join("docs/benchmarks.svg"), chart::svg(results)),
    ];
    let mut written = Vec::new();
    for (path, text) in files {
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}
