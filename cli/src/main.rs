//! `lease-lock`: leader election for any program from the command line, on the lease_lock
//! PostgreSQL extension (or its portable edition) through the Rust client.
//!
//! - [`supervise`]: `run` (hold the lease while one command runs) and `elect` (run a command
//!   whenever this process leads), with the child in its own process group, stopped before the
//!   lease can be anyone else's;
//! - [`child`]: that child process, its guard, and the signals;
//! - [`serve`]: `--http`: `/leader` and `/metrics`;
//! - [`show`]: `status`, `watch`, `release`, `evict`;
//! - [`connect`]: where the database is (`--database-url`, `DATABASE_URL`, libpq's `PG*`).
//!
//! Exit statuses are in [`exit`] and README's "lease-lock" section.

mod child;
mod connect;
mod serve;
mod show;
mod supervise;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

/// Exit statuses of `lease-lock` itself (a command it ran exits with its own).
pub mod exit {
    /// Another holder has the lease (`--no-wait`), or it was not acquired within `--timeout`.
    pub const BUSY: u8 = 75;
    /// The lease was lost while the command ran; the command was stopped.
    pub const LOST: u8 = 76;
    /// The database could not be reached or a lease call failed.
    pub const UNAVAILABLE: u8 = 69;
    /// Settings that cannot work together (for example a kill grace that does not fit the
    /// lease), or a command that could not be started.
    pub const CONFIG: u8 = 78;
    /// Done as asked (`release` or `evict` found nothing to end: `NOT_HELD`).
    pub const OK: u8 = 0;
    /// `release` or `evict`: the lease was not held (by that holder).
    pub const NOT_HELD: u8 = 1;
}

const EXAMPLES: &str = "\
Examples:
  # cron: at most one node runs the job; others skip it (exit 75) instead of waiting
  lease-lock run --name nightly-report --no-wait --hold-at-least 5m -- /usr/local/bin/report
  # a singleton daemon with a readiness endpoint: 200 on /leader only while it holds the lease
  lease-lock elect --name billing --http 0.0.0.0:9090 -- /usr/local/bin/billing-worker
  # who leads, and every change as it happens
  lease-lock status --json
  lease-lock watch billing

Connection: --database-url, else $DATABASE_URL, else libpq's PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY. Exit statuses: the
command's own, 75 lease busy (--no-wait, --timeout), 76 lease lost (command stopped),
69 database unavailable, 78 bad settings, 2 bad arguments.";

/// Leader election for any program: run a command only while this process holds a PostgreSQL
/// lease (lease_lock), watch who leads, and more.
#[derive(Parser)]
#[command(name = "lease-lock", version, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    db: connect::DbArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Take the lease, run CMD while holding it, release when CMD exits.
    Run(supervise::RunArgs),
    /// Active/passive: run CMD whenever this process holds the lease; compete again after a loss.
    Elect(supervise::ElectArgs),
    /// Who holds NAME (or every lease): one line each, or JSON.
    Status(show::StatusArgs),
    /// Print every change of NAME's leader as it happens (one line, or one JSON object, each).
    Watch(show::WatchArgs),
    /// Release NAME on behalf of holder ID (for example after stopping the process that held it).
    Release(show::ReleaseArgs),
    /// End NAME's current tenure whoever holds it (needs the privilege to evict).
    Evict(show::EvictArgs),
    /// Internal: started by `run` and `elect` to kill CMD's process group if lease-lock dies.
    #[command(hide = true)]
    Guard(child::GuardArgs),
}

/// The lease settings `run` and `elect` share.
#[derive(Args, Clone, Debug)]
pub struct LeaseArgs {
    /// The lease's name.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// How long each renewal holds the lease on the database's clock.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Time between renewals (default: a fifth of the lease).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub refresh: Option<Duration>,
    /// Time to wait after SIGTERM before SIGKILL when CMD must stop. Must fit inside the time
    /// between losing trust in the lease and anyone else getting it (lease minus two thirds).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub kill_grace: Duration,
    /// Serve GET /leader (200 while this process holds the lease, else 503) and GET /metrics
    /// (Prometheus) on this address, e.g. 0.0.0.0:9090.
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
}

/// Logs to stderr through a writer thread that drops lines rather than wait: a full pipe on
/// stderr (a stalled log collector, a paused terminal) must never hold up the runtime thread,
/// which stops the command when the lease is lost. The guard must live as long as logging.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEASE_LOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("lease_lock_cli=info,lease_lock_client=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Guard(args) = &cli.command {
        // Before any runtime or thread: the guard only blocks on a pipe.
        return ExitCode::from(child::guard(args));
    }
    let _logging = init_tracing();
    // One thread: CMD is spawned from it, and PR_SET_PDEATHSIG follows the thread that forked
    // (a worker thread that exited would kill CMD).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lease-lock: cannot start: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => supervise::run(&cli.db, args).await,
            Command::Elect(args) => supervise::elect(&cli.db, args).await,
            Command::Status(args) => show::status(&cli.db, args).await,
            Command::Watch(args) => show::watch(&cli.db, args).await,
            Command::Release(args) => show::release(&cli.db, args).await,
            Command::Evict(args) => show::evict(&cli.db, args).await,
            Command::Guard(_) => unreachable!("handled above"),
        }
    });
    ExitCode::from(code)
}

/// Prints one line for a failed lease call and says what to do; the exit status.
pub fn fail(what: &str, e: &lease_lock_client::Error) -> u8 {
    use lease_lock_client::Error;
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause.push_str(": ");
        cause.push_str(&s.to_string());
        source = s.source();
    }
    // The SQLSTATE first: a missing schema or function surfaces while the connection is being
    // prepared, as a connect error.
    let code = e.code().map(|c| c.code());
    let hint = match e {
        _ if matches!(code, Some("42883" | "3F000" | "42P01")) => {
            "is lease_lock installed in this database (CREATE EXTENSION lease_lock), and is --schema right?"
        }
        _ if code == Some("42501") => "the role lacks a privilege: see README, Privileges",
        Error::Config(_) => "check the settings",
        Error::Connect(_) | Error::CallTimeout(_) => {
            "check --database-url (or DATABASE_URL / PG* variables) and that the server is up"
        }
        _ => "see the cause above",
    };
    eprintln!("lease-lock: {what}: {e}{cause} ({hint})");
    if matches!(e, Error::Config(_)) {
        exit::CONFIG
    } else {
        exit::UNAVAILABLE
    }
}
