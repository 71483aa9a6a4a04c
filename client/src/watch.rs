//! Watching who holds a lease: [`LeaseClient::watch`](crate::LeaseClient::watch).
//!
//! A task reads `lease_status` for the lease and sends the reading whenever the holder, the
//! token or whether it is held changed, then sleeps until one of: a notification on the
//! session's connection (at most one reading per quarter refresh interval, 250 ms at most,
//! however many arrive) (a new tenure, a release, an eviction or a re-arm anywhere in the
//! database: `lease_lock_events`), the lease's expiry on the database's clock (an expiry sends
//! no notification), the connection closing, or a resync every ten refresh intervals. A
//! notification is only a reason to read again, never believed: anyone may send one. After a
//! reconnect it reads again at once, since notifications sent while disconnected are lost.

use crate::backoff::Backoff;
use crate::error::Error;
use crate::session::{Leader, Session};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use uuid::Uuid;

/// Readings queued for a slow consumer before the watcher waits for it.
const QUEUE: usize = 64;
/// Longest sleep between two readings without any sign of a change, in refresh intervals.
const RESYNC_INTERVALS: u32 = 10;

/// The leaders of one lease, as they change. Dropping it stops the watching task.
#[derive(Debug)]
pub struct LeaderWatch {
    readings: mpsc::Receiver<Result<Leader, Arc<Error>>>,
    task: JoinHandle<()>,
}

impl Drop for LeaderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What makes a reading a change for a watcher: who, which tenure, held or not. A renewal
/// (a later `expires_at`) is not a change.
fn identity(l: &Leader) -> (Option<Uuid>, Option<&str>, i64, bool) {
    (l.holder, l.holder_role.as_deref(), l.fencing_token, l.held)
}

impl LeaderWatch {
    pub(crate) fn start(session: Arc<Session>, lease_name: Arc<str>) -> LeaderWatch {
        let (tx, readings) = mpsc::channel(QUEUE);
        let task = tokio::spawn(watch(session, lease_name, tx));
        LeaderWatch { readings, task }
    }

    /// The next change: the first call returns the state at the start (`Ok(None)` while the
    /// lease name has never been used, then again only when a row appears). An `Err` is a
    /// failed attempt to read; the watcher keeps trying (with back-off) and reads again after
    /// reconnecting. `None` when the task has ended (it does not end while this is alive).
    ///
    /// # Cancel safety
    /// Cancel-safe: a reading not yet returned stays queued for the next call.
    pub async fn next(&mut self) -> Option<Result<Option<Leader>, Arc<Error>>> {
        match self.readings.recv().await? {
            Ok(leader) if leader.lease_name.is_empty() => Some(Ok(None)),
            Ok(leader) => Some(Ok(Some(leader))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// An empty lease name stands for "no row yet" in the queue (real names are never empty).
fn no_row() -> Leader {
    Leader {
        lease_name: String::new(),
        holder: None,
        holder_role: None,
        fencing_token: 0,
        expires_at: std::time::UNIX_EPOCH,
        held: false,
        expires_in: Duration::ZERO,
    }
}

async fn watch(session: Arc<Session>, lease_name: Arc<str>, tx: mpsc::Sender<Result<Leader, Arc<Error>>>) {
    let listen = session.config().listen();
    if listen {
        session.watch_events();
    }
    let refresh = session.config().refresh_interval();
    // A flood of notifications (anyone may send them) makes at most one reading per this.
    let min_wait = (refresh / 4).min(Duration::from_millis(250));
    let mut backoff = Backoff::new(refresh.min(Duration::from_millis(100)), session.config().max_backoff());
    let mut last: Option<Leader> = None;
    loop {
        // Subscribe before reading, so that a change between the reading and the wait wakes it.
        let mut hints = session.subscribe_releases();
        let read_at = tokio::time::Instant::now();
        // The connection the reading ran on is the one whose end means "read again".
        let reading = session.query_on(
            async |conn| {
                if listen {
                    conn.listen_events().await?;
                }
                conn.status(Some(&lease_name)).await
            },
            Error::Status,
        );
        let (conn, leader) = match reading.await {
            Ok((conn, rows)) => (conn, rows.into_iter().next().unwrap_or_else(no_row)),
            Err(e) => {
                warn!(lease = %lease_name, error = %e, "watch: reading lease_status failed; retrying");
                if tx.send(Err(Arc::new(e))).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        backoff.reset();
        let changed = last.as_ref().is_none_or(|l| identity(l) != identity(&leader));
        let wait = if leader.held { leader.expires_in + Duration::from_millis(1) } else { refresh * RESYNC_INTERVALS };
        if changed {
            debug!(lease = %lease_name, held = leader.held, token = leader.fencing_token, "watch: leader changed");
            if tx.send(Ok(leader.clone())).await.is_err() {
                return;
            }
        }
        last = Some(leader);
        tokio::select! {
            _ = tokio::time::sleep(wait.min(refresh * RESYNC_INTERVALS)) => {}
            _ = hints.recv() => {
                // Any notification on the two channels: read again (also after a lag), but not
                // sooner than min_wait after the last reading.
                tokio::time::sleep_until(read_at + min_wait).await;
                while !matches!(hints.try_recv(), Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)) {}
            }
            _ = conn.closed() => debug!(lease = %lease_name, "watch: connection closed; reading again after reconnecting"),
            _ = tx.closed() => return,
        }
    }
}
