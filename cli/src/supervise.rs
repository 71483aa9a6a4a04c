//! `run` and `elect`: a command that runs only while this process holds the lease.
//!
//! The timing that keeps two commands from ever running at once: the client trusts a tenure
//! until `renew_deadline` (two thirds of the lease) after the send of the last renewal the
//! database confirmed, and the database gives the lease to nobody else before the lease
//! duration after that renewal ran (later than its send). When trust ends, the command's
//! process group gets SIGTERM, then SIGKILL after `--kill-grace`; so the command is gone before
//! anyone else can hold the lease as long as `kill_grace + KILL_MARGIN <= lease - renew_deadline`,
//! which is checked before anything starts. When the database says the lease is no longer ours
//! (expired, evicted), someone else may hold it already: SIGKILL at once.

use crate::child::{exit_code, Cmd};
use crate::connect::DbArgs;
use crate::serve::{self, Shared};
use crate::{exit, fail, LeaseArgs};
use clap::Args;
use lease_lock_client::{Error, Lease, LeaseClient, LeaseState, LossReason};
use rustix::process::Signal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// Time allowed for the kernel to deliver SIGKILL and the group to die, and for timers firing
/// late on a busy machine, on top of the grace.
const KILL_MARGIN: Duration = Duration::from_millis(500);

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    lease: LeaseArgs,
    /// Wait for the lease if another holder has it (the default).
    #[arg(long, overrides_with = "no_wait")]
    wait: bool,
    /// Exit at once with status 75 if another holder has the lease (the cron case).
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this long (status 75).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Keep the lease until this long after CMD started even if it exits sooner, so that other
    /// nodes whose schedule fires a little later skip this run instead of repeating it.
    #[arg(long, value_parser = humantime::parse_duration)]
    hold_at_least: Option<Duration>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

/// When `elect` starts the command again after it exits on its own while still leader.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Never: release and exit with the command's status.
    Never,
    /// After a non-zero exit or a signal; a zero exit releases and exits 0.
    OnFailure,
    /// After every exit.
    Always,
}

#[derive(Args, Debug)]
pub struct ElectArgs {
    #[command(flatten)]
    lease: LeaseArgs,
    /// Start the command again when it exits on its own while this process leads.
    #[arg(long, value_enum, default_value = "on-failure")]
    restart: Restart,
    /// Pause before such a restart.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    restart_delay: Duration,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

/// A signal lease-lock was asked to stop with (SIGTERM or SIGINT).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next SIGTERM or SIGINT, as the signal to pass on.
    ///
    /// # Cancel safety
    /// Cancel-safe (tokio's signal streams).
    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::TERM,
            _ = self.int.recv() => Signal::INT,
        }
    }
}

/// A client for the lease, its settings checked against the grace.
fn client(db: &DbArgs, args: &LeaseArgs) -> Result<LeaseClient, u8> {
    let refresh = args.refresh.unwrap_or(args.lease / 5);
    let client = db
        .builder(&args.name)
        .lease_duration(args.lease)
        .refresh_interval(refresh)
        .build()
        .map_err(|e| fail("invalid settings", &e))?;
    let window = args.lease.saturating_sub(client.config().renew_deadline());
    if args.kill_grace.checked_add(KILL_MARGIN).is_none_or(|needed| needed > window) {
        eprintln!(
            "lease-lock: --kill-grace {} does not fit: the command must be gone within {} of losing trust in \
             the lease (lease {} minus the renew deadline {}), and {} of that is kept for delivering SIGKILL; \
             use a shorter --kill-grace or a longer --lease",
            humantime::format_duration(args.kill_grace),
            humantime::format_duration(window),
            humantime::format_duration(args.lease),
            humantime::format_duration(client.config().renew_deadline()),
            humantime::format_duration(KILL_MARGIN),
        );
        return Err(exit::CONFIG);
    }
    Ok(client)
}

/// Starts `--http` if asked.
async fn endpoints(args: &LeaseArgs) -> Result<Arc<Shared>, u8> {
    let shared = Shared::new(&args.name);
    if let Some(addr) = args.http {
        if let Err(e) = serve::start(addr, shared.clone()).await {
            eprintln!("lease-lock: cannot serve --http {addr}: {e} (is the port free?)");
            return Err(exit::CONFIG);
        }
    }
    Ok(shared)
}

/// How waiting for the lease ended.
enum Wait {
    Held(Lease),
    /// `--no-wait` found it held, or `--timeout` passed.
    Busy,
    Signal(Signal),
    Failed(u8),
}

async fn take(client: &LeaseClient, no_wait: bool, timeout: Option<Duration>, signals: &mut Signals) -> Wait {
    let attempt = async {
        if no_wait {
            return client.try_acquire().await.map(|l| l.map_or(Wait::Busy, Wait::Held));
        }
        match timeout {
            Some(t) => match client.acquire_timeout(t).await {
                Err(Error::AcquireTimeout(_)) => Ok(Wait::Busy),
                other => other.map(Wait::Held),
            },
            None => client.acquire().await.map(Wait::Held),
        }
    };
    tokio::select! {
        outcome = attempt => outcome.unwrap_or_else(|e| Wait::Failed(fail("could not acquire the lease", &e))),
        s = signals.recv() => Wait::Signal(s),
    }
}

/// The environment CMD gets.
fn env(lease: &Lease) -> [(&'static str, String); 3] {
    [
        ("LEASE_LOCK_NAME", lease.lease_name().to_string()),
        ("LEASE_LOCK_TOKEN", lease.fencing_token().to_string()),
        ("LEASE_LOCK_HOLDER", lease.holder_id().to_string()),
    ]
}

fn start(argv: &[String], lease: &Lease) -> Result<Cmd, u8> {
    Cmd::spawn(argv, &env(lease)).map_err(|e| {
        eprintln!("lease-lock: cannot start {:?}: {e}", argv[0]);
        exit::CONFIG
    })
}

/// Stops the command because the lease was lost for `reason`: at once if the database says it
/// is no longer ours, else SIGTERM and SIGKILL after the grace, cut short to what is left of
/// the lease on CLOCK_BOOTTIME (after a suspend, nothing may be left).
async fn stop_for_loss(cmd: &mut Cmd, reason: &LossReason, trust: &Trust, grace: Duration) {
    let grace = if matches!(reason, LossReason::NotHeld) { Duration::ZERO } else { grace.min(trust.left()) };
    let first = if grace.is_zero() { Signal::KILL } else { Signal::TERM };
    cmd.stop(first, grace, std::future::pending()).await;
}

/// When the database could give the lease to someone else at the earliest, on CLOCK_BOOTTIME
/// (which, unlike the monotonic clock, counts time the machine spent suspended, as the
/// database's clock does): the send time of the last confirmed renewal plus the lease duration,
/// minus [`KILL_MARGIN`]. Kept up to date by the one task that follows the tenure's states,
/// which also feeds the endpoints' metrics.
struct Trust {
    until_boot_ns: Arc<std::sync::atomic::AtomicU64>,
}

fn boottime_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Trust {
    /// A tenure began after `waited`: count it, and follow its states until it ends. Each
    /// confirmed renewal's send time is `valid_until - renew_deadline` (the client's deadline
    /// rule): it moves the trust window and gives the renewal's latency.
    fn follow(
        lease: &Lease,
        shared: &Arc<Shared>,
        waited: Duration,
        lease_duration: Duration,
        renew_deadline: Duration,
    ) -> Trust {
        use std::sync::atomic::Ordering;
        shared.acquired(lease, waited);
        let until_boot_ns = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let window = lease_duration.saturating_sub(KILL_MARGIN);
        // How long ago the renewal behind `valid_until` was sent (`valid_until` is its send time
        // plus the renew deadline), from durations only: an `Instant` before the clock's start
        // cannot be made, and no fallback may make the send look later than it was.
        let sent_ago = move |valid_until: Instant| {
            let now = Instant::now();
            match valid_until.checked_duration_since(now) {
                Some(left) => renew_deadline.saturating_sub(left),
                None => renew_deadline + now.duration_since(valid_until),
            }
        };
        let trust_from = {
            let until = until_boot_ns.clone();
            move |sent_ago: Duration| {
                // The send time, as an offset back from now, on CLOCK_BOOTTIME.
                let sent_boot = boottime_ns().saturating_sub(sent_ago.as_nanos() as u64);
                until.store(sent_boot.saturating_add(window.as_nanos() as u64), Ordering::Release);
            }
        };
        let mut states = lease.subscribe();
        // The state now (marked seen, so that only later renewals are counted).
        if let LeaseState::Held { valid_until, .. } = *states.borrow_and_update() {
            trust_from(sent_ago(valid_until));
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            while states.changed().await.is_ok() {
                let state = states.borrow_and_update().clone();
                match state {
                    LeaseState::Held { valid_until, .. } => {
                        let ago = sent_ago(valid_until);
                        trust_from(ago);
                        shared.renewed(ago);
                    }
                    LeaseState::Lost(_) => return shared.lost(),
                    _ => return,
                }
            }
        });
        Trust { until_boot_ns }
    }

    /// What is left before the lease may be someone else's (zero when past).
    fn left(&self) -> Duration {
        let until = self.until_boot_ns.load(std::sync::atomic::Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(boottime_ns()))
    }
}

async fn release(lease: Lease) {
    if let Err(e) = lease.release().await {
        warn!(error = %e, "release failed; the lease expires on its own");
    }
}

/// What `run` and `elect` set up before competing: the client (its settings checked), the
/// endpoints, the signal handlers.
async fn prepare(db: &DbArgs, args: &LeaseArgs) -> Result<(LeaseClient, Arc<Shared>, Signals), u8> {
    let client = client(db, args)?;
    let shared = endpoints(args).await?;
    let signals = Signals::install().map_err(|e| {
        eprintln!("lease-lock: cannot handle signals: {e}");
        exit::CONFIG
    })?;
    Ok((client, shared, signals))
}

/// `lease-lock run`.
pub async fn run(db: &DbArgs, args: RunArgs) -> u8 {
    let (client, shared, mut signals) = match prepare(db, &args.lease).await {
        Ok(parts) => parts,
        Err(code) => return code,
    };
    let name = &args.lease.name;
    let waiting = Instant::now();
    let lease = match take(&client, args.no_wait, args.timeout, &mut signals).await {
        Wait::Held(lease) => lease,
        Wait::Busy => {
            eprintln!("lease-lock: lease {name:?} is held by another holder: not running the command");
            return exit::BUSY;
        }
        Wait::Signal(s) => return 128 + s.as_raw() as u8,
        Wait::Failed(code) => return code,
    };
    let trust = Trust::follow(&lease, &shared, waiting.elapsed(), args.lease.lease, client.config().renew_deadline());
    info!(lease = %name, token = lease.fencing_token(), "holding the lease; starting the command");
    let mut cmd = match start(&args.cmd, &lease) {
        Ok(cmd) => cmd,
        Err(code) => {
            release(lease).await;
            return code;
        }
    };
    let started = Instant::now();
    tokio::select! {
        status = cmd.wait() => {
            cmd.finish().await;
            if let Some(at_least) = args.hold_at_least {
                // Keep the lease (renewing) until then, unless it is lost or we are told to stop.
                tokio::select! {
                    _ = tokio::time::sleep(at_least.saturating_sub(started.elapsed())) => {}
                    _ = lease.lost() => {}
                    _ = signals.recv() => {}
                }
            }
            release(lease).await;
            exit_code(status)
        }
        reason = lease.lost() => {
            stop_for_loss(&mut cmd, &reason, &trust, args.lease.kill_grace).await;
            warn!(lease = %name, %reason, "lease lost: the command was stopped");
            exit::LOST
        }
        s = signals.recv() => {
            info!(signal = ?s, "stopping the command");
            let status = cmd.stop(s, args.lease.kill_grace, async { lease.lost().await; }).await;
            release(lease).await;
            exit_code(status)
        }
    }
}

/// `lease-lock elect`.
pub async fn elect(db: &DbArgs, args: ElectArgs) -> u8 {
    let (client, shared, mut signals) = match prepare(db, &args.lease).await {
        Ok(parts) => parts,
        Err(code) => return code,
    };
    let name = &args.lease.name;
    loop {
        let waiting = Instant::now();
        let lease = match take(&client, false, None, &mut signals).await {
            Wait::Held(lease) => lease,
            Wait::Signal(_) => return exit::OK,
            Wait::Failed(code) => return code,
            Wait::Busy => continue,
        };
        let trust =
            Trust::follow(&lease, &shared, waiting.elapsed(), args.lease.lease, client.config().renew_deadline());
        info!(lease = %name, token = lease.fencing_token(), "leading; starting the command");
        // Run the command (again) while leading, never once the lease is no longer trusted.
        loop {
            if !lease.is_held() {
                warn!(lease = %name, "the lease is no longer held: competing again");
                break;
            }
            let mut cmd = match start(&args.cmd, &lease) {
                Ok(cmd) => cmd,
                Err(code) => {
                    release(lease).await;
                    return code;
                }
            };
            tokio::select! {
                status = cmd.wait() => {
                    cmd.finish().await;
                    let restart = match args.restart {
                        Restart::Never => false,
                        Restart::OnFailure => !status.success(),
                        Restart::Always => true,
                    };
                    if !restart {
                        release(lease).await;
                        return exit_code(status);
                    }
                    warn!(%status, delay = ?args.restart_delay, "the command exited; starting it again");
                    tokio::select! {
                        biased;
                        reason = lease.lost() => {
                            warn!(lease = %name, %reason, "lost the lease; competing again");
                            break;
                        }
                        _ = signals.recv() => {
                            release(lease).await;
                            return exit::OK;
                        }
                        _ = tokio::time::sleep(args.restart_delay) => continue,
                    }
                }
                reason = lease.lost() => {
                    stop_for_loss(&mut cmd, &reason, &trust, args.lease.kill_grace).await;
                    warn!(lease = %name, %reason, "lost the lease: the command was stopped; competing again");
                    break;
                }
                s = signals.recv() => {
                    info!(signal = ?s, "stopping the command");
                    cmd.stop(s, args.lease.kill_grace, async { lease.lost().await; }).await;
                    release(lease).await;
                    return exit::OK;
                }
            }
        }
    }
}
