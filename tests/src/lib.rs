//! Test harness for lease_lock, shared by the integration tests (`tests/`), the benchmark runner
//! (`bench/`) and the fault harness (`faults/`):
//! - [`cluster`]: throwaway PostgreSQL clusters and fresh databases;
//! - [`proxy`]: a loopback TCP proxy that delays, stalls or cuts links;
//! - [`pgbouncer`]: a PgBouncer in front of a cluster;
//! - [`replication`]: a primary with a streaming standby, for failover tests;
//! - [`leases`]: a short-lease client, recording a lease's states, waiting on conditions.

pub mod cluster;
pub mod leases;
pub mod pgbouncer;
pub mod proxy;
pub mod replication;
pub mod tls;

pub use cluster::{shared_cluster, TestCluster, TestDb};

/// Installs a `tracing` subscriber once (filter with `RUST_LOG`, default `warn`).
pub fn init_tracing() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}
