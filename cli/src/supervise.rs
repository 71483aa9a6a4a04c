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
use lease_lock_client::{Error, Lease, LeaseClient, LossReason};
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
    if args.kill_grace + KILL_MARGIN > window {
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
/// is no longer ours, else SIGTERM and SIGKILL after the grace.
async fn stop_for_loss(cmd: &mut Cmd, reason: &LossReason, grace: Duration) {
    let grace = if matches!(reason, LossReason::NotHeld) { Duration::ZERO } else { grace };
    let first = if grace.is_zero() { Signal::KILL } else { Signal::TERM };
    cmd.stop(first, grace, std::future::pending()).await;
}

async fn release(lease: Lease) {
    if let Err(e) = lease.release().await {
        warn!(error = %e, "release failed; the lease expires on its own");
    }
}

/// `lease-lock run`.
pub async fn run(db: &DbArgs, args: RunArgs) -> u8 {
    let client = match client(db, &args.lease) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let shared = match endpoints(&args.lease).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lease-lock: cannot handle signals: {e}");
            return exit::CONFIG;
        }
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
    shared.acquired(&lease, waiting.elapsed(), client.config().renew_deadline());
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
                    _ = tokio::time::sleep_until((started + at_least).into()) => {}
                    _ = lease.lost() => {}
                    _ = signals.recv() => {}
                }
            }
            release(lease).await;
            exit_code(status)
        }
        reason = lease.lost() => {
            eprintln!("lease-lock: lease {name:?} lost ({reason}): stopping the command");
            stop_for_loss(&mut cmd, &reason, args.lease.kill_grace).await;
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
    let client = match client(db, &args.lease) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let shared = match endpoints(&args.lease).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lease-lock: cannot handle signals: {e}");
            return exit::CONFIG;
        }
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
        shared.acquired(&lease, waiting.elapsed(), client.config().renew_deadline());
        info!(lease = %name, token = lease.fencing_token(), "leading; starting the command");
        // Run the command (again) while leading.
        loop {
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
                        _ = tokio::time::sleep(args.restart_delay) => continue,
                        reason = lease.lost() => {
                            warn!(lease = %name, %reason, "lost the lease; competing again");
                            break;
                        }
                        _ = signals.recv() => {
                            release(lease).await;
                            return exit::OK;
                        }
                    }
                }
                reason = lease.lost() => {
                    warn!(lease = %name, %reason, "lost the lease: stopping the command, then competing again");
                    stop_for_loss(&mut cmd, &reason, args.lease.kill_grace).await;
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
