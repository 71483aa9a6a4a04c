//! Helpers the integration tests share for watching leases and waiting on conditions.

use lease_lock_client::{Lease, LeaseClient, LeaseClientBuilder, LeaseState};
use std::time::{Duration, Instant};

/// A client builder with the settings every short-lease test starts from: `lease_name`, a
/// `lease` renewed every `refresh`, reconnect back-off capped at 300 ms. Tests add their own
/// call timeout or renew deadline.
pub fn short_lease_client(conninfo: &str, lease_name: &str, lease: Duration, refresh: Duration) -> LeaseClientBuilder {
    LeaseClient::builder(conninfo)
        .lease_name(lease_name)
        .lease_duration(lease)
        .refresh_interval(refresh)
        .max_backoff(Duration::from_millis(300))
}

/// Every state `lease` goes through, with when it was seen, until its renewal task ends.
pub fn record_states(lease: &Lease) -> tokio::task::JoinHandle<Vec<(Instant, LeaseState)>> {
    let mut rx = lease.subscribe();
    tokio::spawn(async move {
        let mut seen = vec![(Instant::now(), rx.borrow().clone())];
        while rx.changed().await.is_ok() {
            seen.push((Instant::now(), rx.borrow().clone()));
        }
        seen
    })
}

/// Polls `check` every 20 ms until it holds; panics after `limit`, naming `what`. `check` may
/// query the database (`async || status(&db).await.held`).
pub async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] for code that runs off the runtime (`spawn_blocking`), polling every 50 ms.
pub fn wait_until_blocking(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
