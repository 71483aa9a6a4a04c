//! The benchmark runner. See the `lease_lock_bench` library and docs/benchmarks.md.
//!
//! ```text
//! bench [--quick] [--out DIR]     run every scenario, write DIR/results/benchmarks.{json,md} and
//!                                 DIR/docs/benchmarks.{md,svg} (DIR: the repository)
//! bench hold --conninfo C --prefix P --leases N --lease-duration 10s --refresh-interval 1s
//!                                 (started by the runner) hold leases P-0..P-N-1 until killed
//! bench etcd-hold --endpoint URL --ttl 2s --refresh-interval 500ms
//!                                 (started by the runner) lead an etcd election until killed
//! ```
//!
//! `scripts/bench.sh` builds it in release mode and runs it. Progress goes to stderr
//! (`RUST_LOG` filters it); the summary of the goals to stdout.

use bench::{child, BenchError, Plan, RunnerContext};
use lease_lock_bench as bench;
use std::path::PathBuf;
use std::process::ExitCode;

/// The benchmark runner (see docs/benchmarks.md).
#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    hold: Option<Command>,
    /// About a minute, a smoke run: its figures are too short to quote.
    #[arg(long)]
    quick: bool,
    /// Where to write results/ and docs/ (default: the repository).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Started by the runner: hold leases until killed.
    Hold(child::HoldArgs),
    /// Started by the runner (scenario 9): lead an etcd election until killed.
    EtcdHold(bench::etcd::EtcdHoldArgs),
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let outcome = match cli.hold {
        Some(Command::Hold(args)) => hold(&args),
        Some(Command::EtcdHold(args)) => etcd_hold(&args),
        None => run(cli.quick, cli.out),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run(quick: bool, out: Option<PathBuf>) -> Result<(), BenchError> {
    init_tracing("lease_lock_bench=info,warn");
    let out = out.unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")));
    let plan = if quick { Plan::quick() } else { Plan::full() };
    let context = RunnerContext { exe: std::env::current_exe()?, repo: out.clone() };

    // One thread for the runner's connections and the proxy; scenario 3's holder gets its own
    // thread. The server uses the other core(s).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = runtime.block_on(bench::run(&plan, &context))?;
    let written = bench::write_outputs(&results, &out)?;

    println!("lease_lock benchmarks: {:.0} s{}", results.run_seconds, if plan.quick { " (quick run)" } else { "" });
    for goal in &results.goals {
        println!("  [{}] {}: {}", if goal.met { "met" } else { "not met" }, goal.goal, goal.measured);
    }
    for path in written {
        println!("  wrote {}", path.display());
    }
    Ok(())
}

/// The child of scenarios 5 and 6: hold the leases, say so, wait to be killed.
fn hold(hold: &child::HoldArgs) -> Result<(), BenchError> {
    init_tracing("warn");
    // tokio's default runtime, as an application holding leases would use.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let leases = child::hold_leases(hold).await?;
        println!("{}", child::HELD_LINE);
        // The handles renew in the background until the process is killed.
        std::future::pending::<()>().await;
        drop(leases);
        Ok(())
    })
}

/// The etcd leader child of scenario 9: lead, say so, wait to be killed.
fn etcd_hold(args: &bench::etcd::EtcdHoldArgs) -> Result<(), BenchError> {
    init_tracing("warn");
    tokio::runtime::Runtime::new()?.block_on(bench::etcd::hold(args))
}
