//! Scenario 5: how long a lease is without a holder when the holder goes away.
//!
//! - Graceful, lease_lock: a `LeaseClient` holds; another waits in `acquire()` (refused once,
//!   then asleep until the holder's expiry or a release notification). The holder calls
//!   `release()`; we time from `release()` returning (and from it being called) to the
//!   standby's `acquire()` returning a lease.
//! - Graceful, reference-style polling: the reference's holder releases with its own `UPDATE`;
//!   the standby runs the reference's BEGIN; upsert; COMMIT every refresh interval (±10% jitter,
//!   as the reference's `utils.WithJitter`). The release lands at a random phase of its polling.
//! - Crash: a `bench hold` child process holds the lease; a `LeaseClient` in this process waits
//!   in `acquire()`; the child is SIGKILLed at a random phase of its renewals; we time from the
//!   kill to the standby holding, against the lease duration.
//! - The graceful (notified) and crash failovers again with the portable edition
//!   ([`Edition::Portable`]), the clients told its schema.

use super::child::{spawn_holder, HoldArgs};
use super::sql::{self, expect, random_unit, Edition, Reference};
use super::stats::SmallSample;
use super::{ms, BenchError, Plan};
use lease_lock_client::{Lease, LeaseClient};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;
use uuid::Uuid;

/// Graceful failover settings: the client's defaults.
pub const GRACEFUL_LEASE: Duration = Duration::from_secs(10);
pub const GRACEFUL_REFRESH: Duration = Duration::from_secs(1);
/// Crash failover settings: a short lease so that repetitions fit in the run.
pub const CRASH_LEASE: Duration = Duration::from_secs(2);
pub const CRASH_REFRESH: Duration = Duration::from_millis(500);
/// Time for a standby to be refused once and go to sleep before the holder goes away.
pub(crate) const STANDBY_SETTLE: Duration = Duration::from_millis(300);

#[derive(Clone, Debug, Serialize)]
pub struct FailoverResult {
    pub graceful_lease_ms: f64,
    pub graceful_refresh_ms: f64,
    /// lease_lock, from `release()` returning to the standby holding.
    pub notified: SmallSample,
    /// lease_lock, from `release()` being called (includes the release's own round trip).
    pub notified_from_call: SmallSample,
    /// Reference-style polling standby, from the release returning.
    pub polling: SmallSample,
    pub crash_lease_ms: f64,
    pub crash_refresh_ms: f64,
    /// The expectation: lease duration plus one retry (refresh) interval.
    pub crash_bound_ms: f64,
    /// From SIGKILL of the holder process to the standby holding.
    pub crash: SmallSample,
    /// The same with the portable edition: from `release()` returning to the standby holding,
    /// and from SIGKILL of the holder process to the standby holding.
    pub portable_notified: SmallSample,
    pub portable_crash: SmallSample,
}

/// Runs scenario 5.
///
/// # Errors
/// A failed acquire or release, a holder child that did not start.
pub async fn run(conninfo: &str, exe: &Path, plan: &Plan) -> Result<FailoverResult, BenchError> {
    let (notified_from_return, notified_from_call) = notified(conninfo, Edition::C, plan.graceful_reps).await?;
    let polling = polling(conninfo, plan.graceful_reps).await?;
    let crash_times = crash(conninfo, Edition::C, exe, plan.crash_reps).await?;
    let (portable_notified, _) = notified(conninfo, Edition::Portable, plan.graceful_reps).await?;
    let portable_crash = crash(conninfo, Edition::Portable, exe, plan.crash_reps).await?;
    Ok(FailoverResult {
        graceful_lease_ms: ms(GRACEFUL_LEASE),
        graceful_refresh_ms: ms(GRACEFUL_REFRESH),
        notified: SmallSample::of(notified_from_return),
        notified_from_call: SmallSample::of(notified_from_call),
        polling: SmallSample::of(polling),
        crash_lease_ms: ms(CRASH_LEASE),
        crash_refresh_ms: ms(CRASH_REFRESH),
        crash_bound_ms: ms(CRASH_LEASE + CRASH_REFRESH),
        crash: SmallSample::of(crash_times),
        portable_notified: SmallSample::of(portable_notified),
        portable_crash: SmallSample::of(portable_crash),
    })
}

fn client(
    conninfo: &str,
    edition: Edition,
    lease_name: &str,
    lease: Duration,
    refresh: Duration,
) -> Result<LeaseClient, BenchError> {
    Ok(LeaseClient::builder(conninfo)
        .schema(edition.schema())
        .lease_name(lease_name)
        .lease_duration(lease)
        .refresh_interval(refresh)
        .build()?)
}

/// `later - earlier` in milliseconds, negative if `later` came first.
pub(crate) fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => ms(d),
        None => -ms(earlier - later),
    }
}

/// A standby waiting in `acquire()`, reporting when it got the lease.
fn wait_in_acquire(standby: LeaseClient) -> tokio::task::JoinHandle<Result<(Lease, Instant), BenchError>> {
    tokio::spawn(async move {
        let lease = standby.acquire().await?;
        Ok((lease, Instant::now()))
    })
}

/// Two clients take turns: one holds and releases, the other waits and takes over.
pub(crate) async fn notified(
    conninfo: &str,
    edition: Edition,
    reps: usize,
) -> Result<(Vec<f64>, Vec<f64>), BenchError> {
    // A name per edition: both send the same notification channel, in one database.
    let name = format!("graceful-{}", edition.schema());
    let clients = [
        client(conninfo, edition, &name, GRACEFUL_LEASE, GRACEFUL_REFRESH)?,
        client(conninfo, edition, &name, GRACEFUL_LEASE, GRACEFUL_REFRESH)?,
    ];
    let mut holder = clients[0].acquire().await?;
    let (mut from_return, mut from_call) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let waiting = wait_in_acquire(clients[(rep + 1) % 2].clone());
        tokio::time::sleep(STANDBY_SETTLE).await;
        let called = Instant::now();
        expect(holder.release().await?, "the holder's release found no lease to release")?;
        let returned = Instant::now();
        let (lease, held_at) = waiting.await??;
        from_return.push(signed_ms(held_at, returned));
        from_call.push(signed_ms(held_at, called));
        info!(rep, ms = signed_ms(held_at, returned), "notified standby took over");
        holder = lease;
    }
    holder.release().await?;
    Ok((from_return, from_call))
}

/// The reference's way: release by expiring the row, standby polling every refresh interval.
async fn polling(conninfo: &str, reps: usize) -> Result<Vec<f64>, BenchError> {
    let control = sql::connect(conninfo).await?;
    sql::reset_reference(&control).await?;
    let clients = [
        Arc::new(Reference::connect(conninfo, Uuid::new_v4(), GRACEFUL_LEASE).await?),
        Arc::new(Reference::connect(conninfo, Uuid::new_v4(), GRACEFUL_LEASE).await?),
    ];
    expect(clients[0].get_lease().await?, "the reference holder could not take its lease")?;
    let mut times = Vec::new();
    for rep in 0..reps {
        let (holder, standby) = (&clients[rep % 2], clients[(rep + 1) % 2].clone());
        let waiting = tokio::spawn(async move {
            loop {
                if standby.get_lease().await? {
                    return Ok::<_, BenchError>(Instant::now());
                }
                // utils.WithJitter: the interval ±10%.
                let jitter = 0.9 + 0.2 * random_unit();
                tokio::time::sleep(GRACEFUL_REFRESH.mul_f64(jitter)).await;
            }
        });
        // Release at a random phase of the standby's polling.
        tokio::time::sleep(STANDBY_SETTLE + GRACEFUL_REFRESH.mul_f64(random_unit())).await;
        holder.release().await?;
        let returned = Instant::now();
        let held_at = waiting.await??;
        times.push(signed_ms(held_at, returned));
        info!(rep, ms = signed_ms(held_at, returned), "polling standby took over");
    }
    Ok(times)
}

/// A holder process is killed; a waiting standby takes over when the lease expires.
pub(crate) async fn crash(conninfo: &str, edition: Edition, exe: &Path, reps: usize) -> Result<Vec<f64>, BenchError> {
    let args = HoldArgs {
        conninfo: conninfo.to_string(),
        prefix: format!("crash-{}", edition.schema()),
        leases: 1,
        lease_duration: CRASH_LEASE,
        refresh_interval: CRASH_REFRESH,
        schema: edition.schema().into(),
    };
    let standby = client(conninfo, edition, &args.lease_name(0), CRASH_LEASE, CRASH_REFRESH)?;
    let mut times = Vec::new();
    for rep in 0..reps {
        let mut child = spawn_holder(exe, &args).await?;
        let waiting = wait_in_acquire(standby.clone());
        // Kill at a random phase of the holder's renewals.
        tokio::time::sleep(STANDBY_SETTLE + CRASH_REFRESH.mul_f64(random_unit())).await;
        let killed = Instant::now();
        child.start_kill()?;
        let (lease, held_at) = waiting.await??;
        times.push(signed_ms(held_at, killed));
        info!(rep, ms = signed_ms(held_at, killed), "standby took over from a killed holder");
        let _ = child.wait().await;
        // Free at once, so the next repetition's child takes it without waiting.
        lease.release().await?;
    }
    Ok(times)
}
