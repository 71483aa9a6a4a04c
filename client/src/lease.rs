//! A held lease: its handle, its state, and the task that renews it.
//!
//! The renewal task sends `lease_refresh` every refresh interval. The lease stays trusted until
//! `renew_deadline` after the *send* time of the last renewal the database confirmed (measured
//! on the local monotonic clock). The database computed that renewal's expiry as its own clock
//! at execution plus the lease duration, and execution comes after sending, so the local
//! deadline passes at least `lease_duration - renew_deadline` before anyone else can be given
//! the lease. Failed or slow renewals are retried, reconnecting as needed, until the deadline;
//! then the handle reports [`LeaseState::Lost`]. Nothing here exits or panics the process.
//!
//! The deadline is kept on two clocks. Timers run on CLOCK_MONOTONIC (tokio's), which stops
//! while the machine is suspended, though the server's lease keeps running; so the deadline is
//! also kept on CLOCK_BOOTTIME, which counts suspended time, and `is_held` checks both. After a
//! resume, `is_held` is false at once; the renewal task, waking on its next timer (within a
//! refresh interval), then reports the loss.

use crate::backoff::Backoff;
use crate::claims::{Claims, HandleClaim};
use crate::config::LeaseConfig;
use crate::error::Error;
use crate::fence::{fence_sql, Fence};
use crate::session::{Grant, Session};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant as TokioInstant};
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

/// CLOCK_BOOTTIME in nanoseconds: like CLOCK_MONOTONIC, but it keeps counting while the machine
/// is suspended, as the lease on the server does.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn boottime_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Elsewhere there is no portable clock that counts suspended time: this one is monotonic since
/// the first call, like the `Instant` deadline it backs up, so it adds no protection across a
/// suspend there (fencing still refuses a stale holder's writes).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn boottime_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Where a lease stands, as its renewal task sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseState {
    /// Held: act as the holder until `valid_until`, writing with `fencing_token`.
    Held {
        /// The tenure's fencing token, for [`lease_fence`](crate#fencing).
        fencing_token: i64,
        /// The expiry the database recorded at the last confirmed renewal (database clock).
        expires_at: SystemTime,
        /// The local deadline: the last confirmed renewal's send time plus the renew deadline.
        valid_until: Instant,
    },
    /// No longer held, or no longer known to be: stop acting as the holder.
    Lost(LossReason),
    /// Released by this process.
    Released,
}

impl LeaseState {
    /// Whether the lease is held now: `Held` and the local deadline not yet passed on the
    /// monotonic clock. Prefer [`Lease::is_held`], which also counts suspended time.
    pub fn is_held(&self) -> bool {
        // tokio's clock: the same as the system's monotonic clock, except in tests that pause it.
        matches!(self, LeaseState::Held { valid_until, .. } if TokioInstant::now().into_std() < *valid_until)
    }
}

/// Why a lease was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The database answered that the lease is no longer ours: it expired (and may have been
    /// taken by another holder) or an administrator evicted it.
    NotHeld,
    /// No renewal was confirmed within the renew deadline. `last_error` is the last failure seen.
    RenewDeadline {
        /// The last error of a renewal attempt, if one failed (rather than hung).
        last_error: Option<String>,
    },
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossReason::NotHeld => write!(f, "the database reports the lease is no longer held"),
            LossReason::RenewDeadline { last_error: Some(e) } => {
                write!(f, "no renewal confirmed within the renew deadline (last error: {e})")
            }
            LossReason::RenewDeadline { last_error: None } => {
                write!(f, "no renewal confirmed within the renew deadline")
            }
        }
    }
}

enum Command {
    Release(oneshot::Sender<Result<bool, Error>>),
}

/// A cloneable view of a held lease for the code that acts as holder: token, state, loss.
#[derive(Clone, Debug)]
pub struct LeaseInfo {
    lease_name: Arc<str>,
    fencing_token: i64,
    state: watch::Receiver<LeaseState>,
    /// The local deadline on CLOCK_BOOTTIME, in nanoseconds (see the module docs).
    boot_deadline: Arc<AtomicU64>,
    fence: Fence,
}

impl LeaseInfo {
    /// The lease's name.
    pub fn lease_name(&self) -> &str {
        &self.lease_name
    }

    /// The fencing token of this tenure: pass it to `lease_fence` in every protected write
    /// ([`LeaseInfo::fence`] does).
    pub fn fencing_token(&self) -> i64 {
        self.fencing_token
    }

    /// Fences a write: calls `lease_fence` with this tenure's token on `client`, the
    /// transaction that then writes protected data. See [`Fence::check`].
    ///
    /// # Errors
    /// [`Error::Fenced`] when the tenure is over (stop acting as the holder), [`Error::Fence`]
    /// otherwise. See [`Fence::check`].
    ///
    /// # Cancel safety
    /// As [`Fence::check`]: the statement's outcome is unknown; roll the transaction back.
    pub async fn fence<C: tokio_postgres::GenericClient + Sync>(&self, client: &C) -> Result<(), Error> {
        self.fence.check(client).await
    }

    /// This tenure's [`Fence`], to hand to the tasks that write.
    pub fn fencing(&self) -> Fence {
        self.fence.clone()
    }

    /// Whether the lease is still held: `Held`, and its local deadline not passed on either the
    /// monotonic clock or the one that counts suspended time.
    pub fn is_held(&self) -> bool {
        self.state.borrow().is_held() && boottime_ns() < self.boot_deadline.load(Ordering::Acquire)
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Resolves when the lease is lost, with the reason; never resolves while it is held.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only watches the state, so it can sit in a `select!` loop.
    pub async fn lost(&self) -> LossReason {
        let mut state = self.state.clone();
        loop {
            // Copy out of the borrow: it must not live across an await.
            let current = state.borrow_and_update().clone();
            let valid_until = match current {
                LeaseState::Lost(reason) => return reason,
                // Released on purpose: that is not a loss.
                LeaseState::Released => return std::future::pending().await,
                LeaseState::Held { valid_until, .. } => valid_until,
            };
            // The local deadline can pass before the renewal task says so (it may be starved):
            // it counts on its own.
            tokio::select! {
                biased;
                changed = state.changed() => {
                    if changed.is_err() && matches!(*state.borrow(), LeaseState::Held { .. }) {
                        // The task is gone while holding (runtime shutting down): nobody renews.
                        return LossReason::RenewDeadline { last_error: None };
                    }
                }
                _ = sleep_until(valid_until.into()) => {
                    return LossReason::RenewDeadline { last_error: None };
                }
            }
        }
    }
}

/// A held lease. Renewed in the background until released, dropped or lost.
///
/// Dropping it stops the renewals and releases the lease in the background, best effort: the
/// release is sent after the drop returns, and if it cannot be (connection down, runtime
/// shutting down) the lease simply expires after the lease duration. Use
/// [`release`](Lease::release) to know that standbys can take over at once.
#[derive(Debug)]
pub struct Lease {
    info: LeaseInfo,
    holder_id: Uuid,
    commands: mpsc::Sender<Command>,
    _claim: HandleClaim,
}

impl Lease {
    /// The lease's name.
    pub fn lease_name(&self) -> &str {
        self.info.lease_name()
    }

    /// The holder id this process holds it with.
    pub fn holder_id(&self) -> Uuid {
        self.holder_id
    }

    /// The fencing token of this tenure.
    pub fn fencing_token(&self) -> i64 {
        self.info.fencing_token
    }

    /// Fences a write: calls `lease_fence` with this tenure's token on `client`, the
    /// transaction that then writes protected data. See [`Fence::check`].
    ///
    /// ```no_run
    /// # async fn write(lease: &lease_lock_client::Lease, app: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let tx = app.transaction().await?;
    /// lease.fence(&tx).await?; // Error::Fenced: the tenure is over, stop writing
    /// tx.execute("INSERT INTO ledger (token) VALUES ($1)", &[&lease.fencing_token()]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Fenced`] when the tenure is over (stop acting as the holder), [`Error::Fence`]
    /// otherwise. See [`Fence::check`].
    ///
    /// # Cancel safety
    /// As [`Fence::check`]: the statement's outcome is unknown; roll the transaction back.
    pub async fn fence<C: tokio_postgres::GenericClient + Sync>(&self, client: &C) -> Result<(), Error> {
        self.info.fence(client).await
    }

    /// This tenure's [`Fence`], to hand to the tasks that write.
    pub fn fencing(&self) -> Fence {
        self.info.fencing()
    }

    /// The expiry the database recorded at the last confirmed renewal, while held.
    pub fn expires_at(&self) -> Option<SystemTime> {
        match &*self.info.state.borrow() {
            LeaseState::Held { expires_at, .. } => Some(*expires_at),
            _ => None,
        }
    }

    /// The local instant until which the lease may be trusted without a further renewal.
    pub fn valid_until(&self) -> Option<Instant> {
        match &*self.info.state.borrow() {
            LeaseState::Held { valid_until, .. } => Some(*valid_until),
            _ => None,
        }
    }

    /// Whether the lease is held now.
    pub fn is_held(&self) -> bool {
        self.info.is_held()
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.info.state()
    }

    /// A receiver of every state change (`Held` on each renewal, then `Lost` or `Released`).
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.info.subscribe()
    }

    /// A cloneable view for the code that acts as holder.
    pub fn info(&self) -> LeaseInfo {
        self.info.clone()
    }

    /// Resolves when the lease is lost. See [`LeaseInfo::lost`].
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn lost(&self) -> LossReason {
        self.info.lost().await
    }

    /// Runs `work` while the lease is held: returns its output if it finishes first, or drops
    /// (cancels) it and returns the reason as soon as the lease is lost. The lease stays held
    /// after `work` finishes; release it or drop it.
    ///
    /// # Cancel safety
    /// Cancelling this cancels `work`; the lease itself is unaffected.
    pub async fn run_while_held<F: Future>(&self, work: F) -> Result<F::Output, LossReason> {
        tokio::select! {
            biased;
            reason = self.lost() => Err(reason),
            output = work => Ok(output),
        }
    }

    /// Stops renewing and releases the lease now, so that a waiting standby (woken by the
    /// release notification) takes over at once. Returns `false` if it was no longer held.
    ///
    /// The release does not wait for a WAL flush or a synchronous standby (its transaction
    /// commits with `synchronous_commit = off`), which saves a handover one flush. A crash soon
    /// after can lose it: the tenure is then back until it expires, as if the release had never
    /// arrived. Meanwhile watchers see it held again, and `lease_fence` with its token passes
    /// again; stop acting as the holder at release as always. No new tenure can survive a crash
    /// without the release it followed (it commits durably, after the release in the WAL). If
    /// this client acquires the lease again and the server answers with the released tenure,
    /// the client releases it again and starts a new one with a new token.
    ///
    /// Ends within about twice the call timeout, whatever the server does: at most one call
    /// timeout to get a connection (opening one included, or waiting for another task's open)
    /// and one for the `lease_release` call.
    ///
    /// # Errors
    /// [`Error::Release`] or [`Error::CallTimeout`] if the release could not be confirmed, and
    /// [`Error::Connect`] if no connection could be opened; the lease then expires after at
    /// most the lease duration.
    ///
    /// # Cancel safety
    /// Cancel-safe in effect: once called, the release runs to completion in the renewal task
    /// even if this future is dropped.
    pub async fn release(self) -> Result<bool, Error> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Release(reply)).await.is_err() {
            return Ok(false); // the task ended: the lease was already lost
        }
        answer.await.unwrap_or(Ok(false))
    }
}

/// The calls the renewal task makes. [`Session`] makes them on the database; the tests below
/// drive the task with a scripted fake under tokio's paused clock, so that deadlines, losses,
/// retries and releases are checked to the tick without a server.
pub(crate) trait RenewCalls: Send + Sync + 'static {
    fn config(&self) -> &LeaseConfig;

    /// Resolves when the connection a renewal would use now is closed; never resolves when none
    /// is open. Must not open one: that could outlast the deadline, which must fire on time.
    fn connection_closed(&self) -> impl Future<Output = ()> + Send;

    /// One `lease_refresh`, connecting first if needed, given up at `deadline`.
    fn refresh(
        &self,
        holder: Uuid,
        name: &str,
        deadline: TokioInstant,
    ) -> impl Future<Output = Result<Grant, String>> + Send;

    /// One `lease_release`, connecting first if needed.
    fn release(&self, holder: Uuid, name: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// When to renew next after a renewal sent at `sent_at` (at most one refresh interval
    /// later). [`Session`] aligns the leases of a connection so their renewals go out together.
    fn next_refresh(&self, sent_at: TokioInstant) -> TokioInstant {
        sent_at + self.config().refresh_interval()
    }

    /// Now on CLOCK_BOOTTIME, in nanoseconds ([`boottime_ns`]).
    fn boot_ns(&self) -> u64 {
        boottime_ns()
    }
}

impl RenewCalls for Session {
    fn config(&self) -> &LeaseConfig {
        Session::config(self)
    }

    async fn connection_closed(&self) {
        match self.current() {
            Some(conn) => conn.closed().await,
            None => std::future::pending().await,
        }
    }

    async fn refresh(&self, holder: Uuid, name: &str, deadline: TokioInstant) -> Result<Grant, String> {
        // Every lease of a session has the session's holder id.
        debug_assert_eq!(holder, self.holder_id());
        self.renew(name, deadline).await
    }

    fn next_refresh(&self, sent_at: TokioInstant) -> TokioInstant {
        Session::next_refresh(self, sent_at)
    }

    async fn release(&self, holder: Uuid, name: &str) -> Result<bool, Error> {
        self.query(async |conn| conn.release(holder, name).await, Error::Release).await
    }
}

/// Everything the renewal task needs.
pub(crate) struct Tenure<S = Session> {
    pub session: Arc<S>,
    pub lease_name: Arc<str>,
    pub holder_id: Uuid,
    pub fencing_token: i64,
    pub expires_at: SystemTime,
    /// Send time of the `lease_acquire` call that started (or renewed) this tenure.
    pub confirmed_at: TokioInstant,
    /// The same moment on CLOCK_BOOTTIME ([`boottime_ns`]).
    pub confirmed_boot_ns: u64,
}

impl Lease {
    /// Starts renewing a tenure just acquired and returns its handle.
    pub(crate) fn start<S: RenewCalls>(tenure: Tenure<S>, claim: HandleClaim) -> Lease {
        let deadline = tenure.session.config().renew_deadline();
        let (state_tx, state) = watch::channel(LeaseState::Held {
            fencing_token: tenure.fencing_token,
            expires_at: tenure.expires_at,
            valid_until: (tenure.confirmed_at + deadline).into_std(),
        });
        let (commands, command_rx) = mpsc::channel(1);
        let boot_deadline = Arc::new(AtomicU64::new(tenure.confirmed_boot_ns + deadline.as_nanos() as u64));
        let info = LeaseInfo {
            lease_name: tenure.lease_name.clone(),
            fencing_token: tenure.fencing_token,
            state,
            boot_deadline: boot_deadline.clone(),
            fence: Fence::of(
                &fence_sql(tenure.session.config().schema()),
                tenure.lease_name.clone(),
                tenure.fencing_token,
            ),
        };
        let span = tracing::info_span!(
            "lease",
            lease = %tenure.lease_name,
            holder = %tenure.holder_id,
            token = tenure.fencing_token
        );
        let holder_id = tenure.holder_id;
        // The task may send a release after the handle is gone: it keeps the name claimed.
        let claims = claim.claims().clone();
        let task_claim = claims.claim_task(&tenure.lease_name);
        tokio::spawn(
            async move {
                renew(tenure, &claims, state_tx, boot_deadline, command_rx).await;
                drop(task_claim);
            }
            .instrument(span),
        );
        Lease { info, holder_id, commands, _claim: claim }
    }
}

/// The renewal task. Ends when the lease is lost, released, or its handle dropped.
async fn renew<S: RenewCalls>(
    t: Tenure<S>,
    claims: &Claims,
    state: watch::Sender<LeaseState>,
    boot_deadline: Arc<AtomicU64>,
    mut commands: mpsc::Receiver<Command>,
) {
    let config = t.session.config().clone();
    let mut confirmed_at = t.confirmed_at;
    // After a suspend the monotonic timers below fire late; this catches up at each wake.
    let suspended_past_deadline = || t.session.boot_ns() >= boot_deadline.load(Ordering::Acquire);
    let mut next_refresh = t.session.next_refresh(confirmed_at);
    let mut retry = Backoff::new(config.refresh_interval() / 8, config.refresh_interval());
    let mut last_error: Option<String> = None;
    info!("lease held");

    loop {
        let deadline = confirmed_at + config.renew_deadline();
        tokio::select! {
            biased;
            command = commands.recv() => return finish(&t, claims, &state, command).await,
            _ = sleep_until(deadline) => return lose(&state, LossReason::RenewDeadline { last_error }),
            _ = sleep_until(next_refresh) => {}
            _ = t.session.connection_closed() => debug!("connection closed: renewing now"),
        }
        if suspended_past_deadline() {
            return lose(&state, LossReason::RenewDeadline { last_error });
        }

        let sent_at = TokioInstant::now();
        let sent_boot = t.session.boot_ns();
        let outcome = tokio::select! {
            biased;
            command = commands.recv() => return finish(&t, claims, &state, command).await,
            _ = sleep_until(deadline) => return lose(&state, LossReason::RenewDeadline { last_error }),
            outcome = t.session.refresh(t.holder_id, &t.lease_name, deadline) => outcome,
        };
        if suspended_past_deadline() {
            return lose(&state, LossReason::RenewDeadline { last_error });
        }
        match outcome {
            Ok(Grant { acquired: true, fencing_token: Some(token), expires_at: Some(expires_at), .. })
                if token == t.fencing_token =>
            {
                confirmed_at = sent_at;
                boot_deadline.store(sent_boot + config.renew_deadline().as_nanos() as u64, Ordering::Release);
                next_refresh = t.session.next_refresh(sent_at);
                retry.reset();
                last_error = None;
                state.send_replace(LeaseState::Held {
                    fencing_token: token,
                    expires_at,
                    valid_until: (sent_at + config.renew_deadline()).into_std(),
                });
                debug!("renewed");
            }
            Ok(grant) => {
                if grant.acquired {
                    // Renewed, but another tenure than ours: after ours ended, a process with
                    // the same holder id started a new one.
                    warn!(
                        other_token = grant.fencing_token,
                        "the lease is held under this holder id with another token: another \
                         process uses the same holder id (holder ids must be unique per process)"
                    );
                }
                // Not ours now, whatever it is: nothing of ours left to release.
                claims.tenure_ended(&t.lease_name);
                return lose(&state, LossReason::NotHeld);
            }
            Err(e) => {
                warn!(error = %e, "renewal failed; retrying until the renew deadline");
                last_error = Some(e);
                next_refresh = TokioInstant::now() + retry.next();
            }
        }
    }
}

fn lose(state: &watch::Sender<LeaseState>, reason: LossReason) {
    // Tell the holder first: writing the log line can block (a full pipe on stderr).
    state.send_replace(LeaseState::Lost(reason.clone()));
    warn!(%reason, "lease lost");
}

/// Handles a release request, or the handle being dropped (`None`): release, then report.
async fn finish<S: RenewCalls>(
    t: &Tenure<S>,
    claims: &Claims,
    state: &watch::Sender<LeaseState>,
    command: Option<Command>,
) {
    let result = t.session.release(t.holder_id, &t.lease_name).await;
    match &result {
        Ok(released) => {
            info!(released, "lease released");
            claims.release_answered(&t.lease_name, *released, t.session.config().lease_duration());
        }
        Err(e) => debug!(error = %e, "release failed"),
    }
    state.send_replace(LeaseState::Released);
    match command {
        Some(Command::Release(reply)) => {
            let _ = reply.send(result);
        }
        None => match result {
            Ok(_) => debug!("released after the handle was dropped"),
            Err(e) => debug!(error = %e, "release after drop failed; the lease will expire"),
        },
    }
}

#[cfg(test)]
mod tests;
