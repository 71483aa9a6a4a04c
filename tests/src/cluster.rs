//! Throwaway PostgreSQL clusters and fresh databases for tests, of the major [`pg_bin`] names.
//!
//! A cluster lives in a temporary directory, listens on a free port (Unix socket in that
//! directory and 127.0.0.1) with trust authentication, runs as the `postgres` OS user when we are
//! root (PostgreSQL refuses root), and is stopped and removed on drop. The machine's own
//! clusters are never touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The binaries of the PostgreSQL major under test: `$PG_BIN` when set (`scripts/test.sh` sets it
/// for every major, see `scripts/lib/pg.sh`), else Debian's for `$PG_MAJOR` (default 15).
pub fn pg_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var("PG_BIN") {
        Ok(bin) if !bin.is_empty() => bin,
        _ => format!("/usr/lib/postgresql/{}/bin", pg_major()),
    })
}

/// Which edition of lease_lock the tests install: `$LEASE_LOCK_EDITION`, `c` (default) or
/// `portable` (`scripts/test.sh` sets it from `EDITION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edition {
    /// The C extension: `CREATE EXTENSION lease_lock`.
    C,
    /// The SQL and PL/pgSQL edition: `portable/dist/lease_lock_portable.sql`.
    Portable,
}

impl Edition {
    pub fn current() -> Edition {
        match std::env::var("LEASE_LOCK_EDITION").as_deref() {
            Ok("portable") => Edition::Portable,
            _ => Edition::C,
        }
    }
}

/// The PostgreSQL major under test: `$PG_MAJOR`, default 15.
pub fn pg_major() -> u32 {
    std::env::var("PG_MAJOR").ok().and_then(|m| m.parse().ok()).unwrap_or(15)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A command run as the cluster's OS user.
pub fn pg_command(program: &str) -> Command {
    let path = if program.contains('/') { program.to_string() } else { format!("{}/{program}", pg_bin()) };
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

/// Runs `command`, panicking with its output if it fails.
pub fn run(mut command: Command, what: &str) {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A throwaway cluster, stopped and removed on drop.
#[derive(Debug)]
pub struct TestCluster {
    dir: PathBuf,
    port: u16,
    owned: bool,
}

impl TestCluster {
    /// Starts a new cluster with default settings plus `settings` (`name=value`).
    pub fn start(settings: &[&str]) -> TestCluster {
        let cluster = TestCluster::create();
        let mut initdb = pg_command("initdb");
        initdb.args(["-D", cluster.data_dir().to_str().unwrap(), "-U", "postgres", "--auth=trust"]);
        initdb.args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]);
        run(initdb, "initdb");
        cluster.start_server(settings);
        cluster
    }

    /// A directory and a port for a cluster whose data directory is made some other way (for
    /// example by `pg_basebackup` into [`data_dir`](TestCluster::data_dir)); start it with
    /// [`start_server`](TestCluster::start_server).
    pub fn create() -> TestCluster {
        TestCluster { dir: tempdir(), port: free_port(), owned: true }
    }

    /// Attaches to a running cluster (socket dir and port), e.g. one `scripts/test.sh` started.
    /// It is not stopped on drop.
    pub fn attach(socket_dir: &str, port: u16) -> TestCluster {
        TestCluster { dir: PathBuf::from(socket_dir), port, owned: false }
    }

    /// Starts the server on its data directory with `settings` (`name=value`).
    pub fn start_server(&self, settings: &[&str]) {
        let mut options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300", self.port, self.dir.display());
        for s in settings {
            options.push_str(&format!(" -c {s}"));
        }
        let mut start = pg_command("pg_ctl");
        start.args(["-D", self.data_dir().to_str().unwrap(), "-l", self.log_file().to_str().unwrap()]);
        start.args(["-w", "-o", &options, "start"]);
        run(start, "pg_ctl start");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The Unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `key=value` connection string over the Unix socket.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!("host={} port={} user=postgres dbname={dbname}", self.dir.display(), self.port)
    }

    /// `key=value` connection string over TCP on 127.0.0.1.
    pub fn tcp_conninfo(&self, dbname: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={dbname}", self.port)
    }

    /// Stops the server (`fast` or `immediate`) and starts it again on the same port.
    pub fn restart(&self, mode: &str, settings: &[&str]) {
        self.stop_server(mode);
        self.start_server(settings);
    }

    pub fn stop_server(&self, mode: &str) {
        let mut stop = pg_command("pg_ctl");
        stop.args(["-D", self.data_dir().to_str().unwrap(), "-m", mode, "-w", "stop"]);
        run(stop, "pg_ctl stop");
    }

    /// Promotes a standby to primary and waits until it is.
    pub fn promote(&self) {
        let mut promote = pg_command("pg_ctl");
        promote.args(["-D", self.data_dir().to_str().unwrap(), "-w", "promote"]);
        run(promote, "pg_ctl promote");
    }

    /// Runs SQL with psql (autocommit), returning unaligned, tuples-only output.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        let output = Command::new(format!("{}/psql", pg_bin()))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.conninfo(dbname), "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// A tokio-postgres connection to `dbname` over the Unix socket (its driver spawned on the
    /// current runtime).
    pub async fn connect(&self, dbname: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.conninfo(dbname), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// A connection to `dbname` that has run `LISTEN channel`, and the payloads of the
    /// notifications it receives on that channel, in order. The receiver ends with the
    /// connection.
    pub async fn listen(
        &self,
        dbname: &str,
        channel: &str,
    ) -> (tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (client, mut connection) =
            tokio_postgres::connect(&self.conninfo(dbname), tokio_postgres::NoTls).await.expect("connect");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let wanted = channel.to_string();
        tokio::spawn(async move {
            while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    if n.channel() == wanted && tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        // The channel is an identifier the test chose, not a value from outside.
        client.batch_execute(&format!("LISTEN {channel}")).await.expect("LISTEN");
        (client, rx)
    }

    /// Runs one parameterised statement on its own connection and returns the rows, typed by
    /// the caller (`row.get::<_, T>(i)`), so tests never parse text output.
    pub async fn query(
        &self,
        dbname: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        let client = self.connect(dbname).await;
        client.query(sql, params).await.unwrap_or_else(|e| match e.as_db_error() {
            Some(db) => panic!("{sql}: {} {}", db.code().code(), db.message()),
            None => panic!("{sql}: {e}"),
        })
    }

    /// A new database with lease_lock installed (the [`Edition`] under test), dropped when the
    /// guard is.
    pub fn fresh_database(&self) -> TestDb<'_> {
        let db = self.empty_database();
        self.install_edition(&db.name);
        db
    }

    /// Installs lease_lock into `dbname` as [`Edition::current`] says: `CREATE EXTENSION` as the
    /// superuser, or the portable edition's psql script run by `lease_owner`, a role without
    /// superuser rights that owns the schema (as on a managed service).
    pub fn install_edition(&self, dbname: &str) {
        match Edition::current() {
            Edition::C => {
                self.psql(dbname, "CREATE EXTENSION lease_lock");
            }
            Edition::Portable => self.install_portable(dbname, "lease_lock"),
        }
    }

    /// Installs the portable edition's psql script into `schema` of `dbname` as `lease_owner`, a
    /// role without superuser rights that owns the schema (as on a managed service). Next to the
    /// C extension too: the benchmark runner compares the two in one database.
    pub fn install_portable(&self, dbname: &str, schema: &str) {
        // Tests share clusters and run in parallel: the role may be created meanwhile.
        self.psql(
            dbname,
            "DO $$BEGIN CREATE ROLE lease_owner; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END$$",
        );
        assert!(schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "a plain identifier: {schema:?}");
        self.psql(dbname, &format!("CREATE SCHEMA {schema} AUTHORIZATION lease_owner"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../portable/dist/lease_lock_portable.sql");
        let output = Command::new(format!("{}/psql", pg_bin()))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                &format!("schema={schema}"),
                "-d",
                &self.conninfo(dbname),
            ])
            .args(["-c", "SET ROLE lease_owner", "-f", script])
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "installing the portable edition: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A new database without the extension, dropped when the guard is.
    pub fn empty_database(&self) -> TestDb<'_> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("ll_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        TestDb { cluster: self, name }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.owned {
            let mut stop = pg_command("pg_ctl");
            stop.args(["-D", self.data_dir().to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
            let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A database of a [`TestCluster`], dropped (`WITH (FORCE)`) with the guard, even when the test
/// panicked.
#[derive(Debug)]
pub struct TestDb<'c> {
    pub cluster: &'c TestCluster,
    pub name: String,
}

impl TestDb<'_> {
    /// Connection string over the Unix socket.
    pub fn conninfo(&self) -> String {
        self.cluster.conninfo(&self.name)
    }

    /// Connection string over TCP.
    pub fn tcp_conninfo(&self) -> String {
        self.cluster.tcp_conninfo(&self.name)
    }

    /// Runs SQL with psql; see [`TestCluster::psql`].
    pub fn psql(&self, sql: &str) -> String {
        self.cluster.psql(&self.name, sql)
    }

    /// A tokio-postgres connection (its driver spawned on the current runtime).
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.cluster.connect(&self.name).await
    }

    /// Runs one parameterised statement; see [`TestCluster::query`].
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        self.cluster.query(&self.name, sql, params).await
    }
}

impl Drop for TestDb<'_> {
    fn drop(&mut self) {
        let _ = Command::new(format!("{}/psql", pg_bin()))
            .args(["-X", "-q", "-d", &self.cluster.conninfo("postgres")])
            .args(["-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A temporary directory the cluster's OS user owns, with a short path (socket paths are limited
/// to about 100 bytes).
pub fn tempdir() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    // Kept: the cluster (or the test) removes it, after stopping the server that runs in it.
    let dir = tempfile::Builder::new().prefix("llt.").tempdir_in("/tmp").expect("temporary directory").keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown to the postgres user");
    }
    dir
}

/// The `postgres` OS user's uid and gid (`id`, rather than getpwnam through FFI).
/// Makes `path` the cluster's OS user's (postgres when we are root), as files the server reads
/// must be.
pub fn give_to_cluster_user(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to the postgres user");
    }
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("id runs");
        assert!(out.status.success(), "no postgres OS user");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a numeric id")
    };
    (id("-u"), id("-g"))
}

/// The cluster shared by the tests of one test binary: the one named by `LEASE_LOCK_TEST_HOST`
/// and `LEASE_LOCK_TEST_PORT` (as `scripts/test.sh` passes), or a new one stopped at exit.
pub fn shared_cluster() -> &'static TestCluster {
    static SHARED: OnceLock<TestCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        if let (Ok(host), Ok(port)) = (std::env::var("LEASE_LOCK_TEST_HOST"), std::env::var("LEASE_LOCK_TEST_PORT")) {
            return TestCluster::attach(&host, port.parse().expect("LEASE_LOCK_TEST_PORT"));
        }
        extern "C" fn stop_shared() {
            if let Some(cluster) = SHARED.get() {
                let mut stop = pg_command("pg_ctl");
                stop.args(["-D", cluster.data_dir().to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
                let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
                let _ = std::fs::remove_dir_all(&cluster.dir);
            }
        }
        // Statics are not dropped at exit; the test harness exits through exit(3).
        // SAFETY: registers a plain `extern "C" fn()` that touches only Rust statics and std.
        unsafe { libc::atexit(stop_shared) };
        TestCluster::start(&[])
    })
}
