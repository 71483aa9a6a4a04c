//! A primary and a streaming-replication standby, both throwaway, for failover tests.
//!
//! The standby replicates through a [`Proxy`] (a loopback TCP link the test can stall) from a
//! physical replication slot, as `cluster_name = standby1`. With [`Replication::Sync`] the
//! primary lists it in `synchronous_standby_names`, so a commit (a lease renewal) is
//! acknowledged only once the standby has flushed it. The standby gets no
//! `synchronous_standby_names` of its own: once promoted, nothing would confirm its commits.

use crate::cluster::{pg_command, run, TestCluster};
use crate::leases::wait_until_blocking as wait_until;
use crate::proxy::Proxy;
use std::time::Duration;

/// How the primary waits for the standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// `synchronous_standby_names = standby1`, `synchronous_commit = on`.
    Sync,
    /// No synchronous standby: commits are acknowledged before the standby has them.
    Async,
}

/// A primary, a standby replicating from it, and the database `db` with `lease_lock` on both.
pub struct ReplicaSet {
    pub primary: TestCluster,
    pub standby: TestCluster,
    /// The replication link; stall it to make the standby fall behind.
    pub link: Proxy,
    pub db: String,
}

const DB: &str = "failover";

impl ReplicaSet {
    pub async fn start(mode: Replication) -> ReplicaSet {
        // Synchronous replication is switched on only once the standby streams: before that,
        // every commit on the primary (CREATE DATABASE included) would wait for it for ever.
        let primary = tokio::task::spawn_blocking(|| {
            let primary = TestCluster::start(&["wal_level=replica", "max_wal_senders=5", "max_replication_slots=5"]);
            primary.psql("postgres", &format!("CREATE DATABASE {DB}"));
            primary.install_edition(DB);
            primary.psql("postgres", "SELECT pg_create_physical_replication_slot('standby1')");
            primary
        })
        .await
        .expect("primary");
        // The link runs on this runtime; the blocking steps below must not hold its threads.
        let link =
            Proxy::start(format!("127.0.0.1:{}", primary.port()).parse().unwrap()).await.expect("replication proxy");
        let source = format!("host=127.0.0.1 port={} user=postgres", link.port());
        let (primary, standby) = tokio::task::spawn_blocking(move || {
            let standby = TestCluster::create();
            let mut backup = pg_command("pg_basebackup");
            backup.args(["-D", standby.data_dir().to_str().unwrap(), "-d", &source]);
            // A fast checkpoint: a spread one paces the fresh database's dirty pages over minutes.
            backup.args(["-X", "stream", "-S", "standby1", "-R", "--no-sync", "--checkpoint=fast"]);
            run(backup, "pg_basebackup");
            standby.start_server(&["cluster_name=standby1", "hot_standby=on"]);
            if mode == Replication::Sync {
                primary.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = 'standby1'");
                primary.psql("postgres", "SELECT pg_reload_conf()");
            }
            let wanted = if mode == Replication::Sync { "sync" } else { "async" };
            wait_until(&format!("the standby to stream ({wanted})"), Duration::from_secs(20), || {
                primary.psql(
                    "postgres",
                    "SELECT state || '/' || sync_state FROM pg_stat_replication WHERE application_name = 'standby1'",
                ) == format!("streaming/{wanted}")
            });
            (primary, standby)
        })
        .await
        .expect("standby");
        ReplicaSet { primary, standby, link, db: DB.into() }
    }

    /// A multi-host connection string that follows whichever server accepts writes.
    pub fn conninfo(&self, application_name: &str) -> String {
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname={} target_session_attrs=read-write \
             connect_timeout=2 application_name={application_name}",
            self.primary.port(),
            self.standby.port(),
            self.db
        )
    }

    /// Blocks until `check` holds, polling; panics after `limit`. Call it off the runtime
    /// (`spawn_blocking`).
    pub fn wait_for(&self, what: &str, limit: Duration, check: impl FnMut() -> bool) {
        wait_until(what, limit, check);
    }

    /// Waits until the standby has replayed everything the primary has written so far.
    pub fn wait_for_replay(&self) {
        let lsn = self.primary.psql("postgres", "SELECT pg_current_wal_lsn()");
        self.wait_for("the standby to catch up", Duration::from_secs(10), || {
            self.standby.psql("postgres", &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'")) == "t"
        });
    }
}
