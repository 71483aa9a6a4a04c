//! The fault harness. See the `lease_lock_faults` library for what it does.
//!
//! ```text
//! faults [--seconds 60] [--seed N] [--clients 4] [--min-faults N] [--min-refusals N] [--reference] [--expect-violations] [--keep]
//! faults worker ...      (started by the harness: one client process)
//! ```
//!
//! Prints a summary (faults by kind, violations by kind, recovery times, the seed) and exits 1
//! on any safety violation. `--reference` runs clients that behave like the reference
//! implementation (negative control); with `--expect-violations` the exit status is inverted:
//! 1 if the checker found nothing. `--seconds` sets the length: about 60 in CI, as long as you
//! like for a soak. `--min-faults N` fails the run if fewer than N faults were injected.

use clap::{Parser, Subcommand};
use faults::{worker, RunConfig};
use lease_lock_faults as faults;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Fault injection against lease_lock clients; prints a summary and exits 1 on a safety violation")]
struct Cli {
    #[command(subcommand)]
    worker: Option<Command>,
    /// How long to inject faults, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The fault schedule's seed (default: from the clock; printed, to reproduce a run).
    #[arg(long)]
    seed: Option<u64>,
    /// Client processes.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Fail the run if fewer faults were injected.
    #[arg(long, default_value_t = 0)]
    min_faults: usize,
    /// Fail the run if lease_fence refused fewer stale writes (LL001): the fence was not
    /// exercised.
    #[arg(long, default_value_t = 0)]
    min_refusals: usize,
    /// Clients that behave like the reference implementation (negative control).
    #[arg(long)]
    reference: bool,
    /// Invert the exit status: fail if the checker found nothing.
    #[arg(long)]
    expect_violations: bool,
    /// Keep the workers' logs.
    #[arg(long)]
    keep: bool,
}

#[derive(Subcommand)]
enum Command {
    /// One client process (started by the harness).
    Worker {
        #[arg(long)]
        client: String,
        #[arg(long)]
        lease_conninfo: String,
        #[arg(long)]
        app_conninfo: String,
        #[arg(long)]
        log: String,
        #[arg(long)]
        reference: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if let Some(Command::Worker { client, lease_conninfo, app_conninfo, log, reference }) = cli.worker {
        runtime.block_on(worker::run(worker::WorkerArgs { client, lease_conninfo, app_conninfo, log, reference }));
        return ExitCode::SUCCESS;
    }

    let seed = cli.seed.unwrap_or(faults::mono_ns() as u64 % 1_000_000);
    let (reference, expect_violations) = (cli.reference, cli.expect_violations);
    let work_dir = std::env::temp_dir().join(format!("lease-faults-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir).expect("work dir");
    let config = RunConfig { seconds: cli.seconds, seed, clients: cli.clients, reference, work_dir: work_dir.clone() };
    let (seconds, clients) = (config.seconds, config.clients);
    let (report, by_kind) = runtime.block_on(faults::run(config));
    if cli.keep {
        println!("worker logs kept in {}", work_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&work_dir);
    }

    let injected: usize = by_kind.iter().map(|(_, n)| n).sum();
    let kind = if reference { "reference-behaving clients (negative control)" } else { "lease_lock_client" };
    println!("## Fault run: {seconds} s, {clients} {kind}, seed {seed}\n");
    println!("| fault | injected |\n|---|---|");
    for (kind, n) in &by_kind {
        println!("| {kind} | {n} |");
    }
    println!("| **total** | **{injected}** |\n");
    println!("| check | violations |\n|---|---|");
    println!("| fenced writes committed out of token order | {} |", report.fenced_write_order);
    println!("| tenures with two holders or a token going back | {} |", report.tenure_violations);
    println!("| two clients believing they lead at once (no pause involved) | {} |", report.belief_overlaps);
    println!("| acknowledged writes missing | {} |", report.lost_writes);
    println!("| (not a violation) overlaps explained by a paused process | {} |\n", report.paused_overlaps);
    let mut recovery: Vec<f64> = report.recovery_ns.iter().map(|n| *n as f64 / 1e6).collect();
    recovery.sort_by(f64::total_cmp);
    let pct = |p: f64| recovery.get(((recovery.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    let lease_ms = worker::LEASE_DURATION.as_millis() as f64;
    println!(
        "Tenures: {}. Writes acknowledged: {}, refused by lease_lock.lease_fence (LL001): {}.",
        report.tenures, report.acked_writes, report.refused_writes
    );
    println!(
        "Recovery after a fault ends with no other fault active, until some client holds the lease \
         ({} samples): p50 {:.0} ms, max {:.0} ms ({:.2} and {:.2} lease durations of {lease_ms:.0} ms).",
        recovery.len(),
        pct(0.5),
        pct(1.0),
        pct(0.5) / lease_ms,
        pct(1.0) / lease_ms
    );
    let slowest: Vec<String> = report
        .slowest_recoveries
        .iter()
        .map(|(r, kind, _)| format!("{:.0} ms after a {kind}", *r as f64 / 1e6))
        .collect();
    println!("Slowest recoveries: {}.", slowest.join(", "));
    for d in report.details.iter().take(10) {
        println!("- {d}");
    }
    let violations = report.safety_violations();
    println!("\nsafety violations: {violations} (reproduce with --seed {seed})");
    let min_faults = cli.min_faults;
    if injected < min_faults {
        println!("only {injected} faults injected, fewer than --min-faults {min_faults}");
        return ExitCode::FAILURE;
    }
    if report.refused_writes < cli.min_refusals {
        println!(
            "only {} stale writes refused by lease_fence, fewer than --min-refusals {}",
            report.refused_writes, cli.min_refusals
        );
        return ExitCode::FAILURE;
    }
    let failed = if expect_violations { violations == 0 } else { violations > 0 };
    if expect_violations {
        println!(
            "negative control {}",
            if failed { "FAILED: nothing caught" } else { "ok: the split brain was caught" }
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
