//! A leader-elected worker: run it twice against the same database and only one works at a time.
//!
//! ```text
//! cargo run -p lease_lock_client --example leader -- "host=/tmp/sock port=5432 dbname=app" [worker-name]
//! ```
//!
//! While leader, every 500 ms it appends a row to `ledger` in a transaction that first fences
//! with its token (`Fence::check`: `lease_fence`), so even a paused, deposed leader cannot write. It competes again
//! after losing the lease, and releases it on Ctrl-C or SIGTERM so a standby takes over at once.
//! Set `RUST_LOG=info` (the default) or `debug` to see the lease's life.

use lease_lock_client::{Fence, LeaseClient, LeaseInfo};
use std::time::Duration;
use tokio_postgres::NoTls;
use tracing::{info, warn};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let conninfo = args.next().ok_or("usage: leader <connection string> [worker name]")?;
    let worker = args.next().unwrap_or_else(|| format!("worker-{}", std::process::id()));

    // The application's own connection, for its own work (never the lease's connection).
    let (app, connection) = tokio_postgres::connect(&conninfo, NoTls).await?;
    tokio::spawn(connection);
    app.batch_execute(
        "CREATE TABLE IF NOT EXISTS ledger (token bigint, worker text, at timestamptz DEFAULT clock_timestamp())",
    )
    .await?;

    let lease = LeaseClient::builder(&conninfo)
        .lease_name("ledger-writer")
        .lease_duration(Duration::from_secs(3))
        .refresh_interval(Duration::from_millis(500))
        .build()?;
    info!(%worker, holder = %lease.holder_id(), "competing for the lease");

    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!(%worker, "shutting down");
    };
    let app = tokio::sync::Mutex::new(app);
    lease.run_elector(|info| write_while_leader(&app, &worker, info), shutdown).await?;
    Ok(())
}

/// The leader's work. Cancelled by the elector the moment the lease is lost.
async fn write_while_leader(app: &tokio::sync::Mutex<tokio_postgres::Client>, worker: &str, lease: LeaseInfo) {
    let fence = lease.fencing();
    info!(%worker, token = fence.fencing_token(), "leading");
    loop {
        match fenced_write(&mut *app.lock().await, worker, &fence).await {
            Ok(()) => info!(%worker, token = fence.fencing_token(), "wrote a ledger row"),
            Err(e) => warn!(%worker, token = fence.fencing_token(), error = %e, "fenced write refused"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One protected write. The fence makes the transaction fail (`Error::Fenced`, SQLSTATE LL001)
/// unless the token is still the current tenure, and holds off the next tenure until it
/// commits. Dropped unfinished (the elector cancels the work), the transaction rolls back.
async fn fenced_write(
    app: &mut tokio_postgres::Client,
    worker: &str,
    fence: &Fence,
) -> Result<(), Box<dyn std::error::Error>> {
    let tx = app.transaction().await?;
    fence.check(&tx).await?;
    tx.execute("INSERT INTO ledger (token, worker) VALUES ($1, $2)", &[&fence.fencing_token(), &worker]).await?;
    tx.commit().await?;
    Ok(())
}
