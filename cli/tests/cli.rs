//! `lease-lock` as users run it: real processes, real signals, a throwaway PostgreSQL (the
//! shared test cluster). Children record when they start and while they run on the machine's
//! one realtime clock (`date +%s%N`), so the lifetimes of two holders' commands can be compared.

use lease_lock_tests::proxy::Proxy;
use lease_lock_tests::{init_tracing, shared_cluster, TestDb};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lease-lock");
/// Short leases: trust ends 2 s after the last confirmed renewal, the lease 1 s later.
const LEASE: &str = "3s";
const GRACE: &str = "300ms";

fn lease_lock(conninfo: &str) -> Command {
    let mut command = Command::new(BIN);
    command.env("DATABASE_URL", conninfo).env("LEASE_LOCK_LOG", "lease_lock_cli=info,lease_lock_client=warn");
    command.stdin(Stdio::null());
    command
}

/// A scratch directory for a test's logs, removed when the test ends.
fn dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ll-cli.").tempdir().expect("tempdir")
}

/// A shell command that appends `start <ns>` to `log`, then `alive <ns>` every 50 ms until
/// killed (ignoring SIGTERM if `stubborn`).
fn logging_child(log: &Path, stubborn: bool) -> Vec<String> {
    let trap = if stubborn { "trap '' TERM;" } else { "" };
    let script = format!(
        "{trap} echo \"start $(date +%s%N) $LEASE_LOCK_TOKEN\" >> {log}; \
         while true; do echo \"alive $(date +%s%N)\" >> {log}; sleep 0.05; done",
        log = log.display()
    );
    vec!["sh".into(), "-c".into(), script]
}

/// `(kind, nanoseconds, rest)` of every line of a child's log.
fn log_lines(log: &Path) -> Vec<(String, u128, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let kind = parts.next()?.to_string();
            let ns = parts.next()?.parse().ok()?;
            Some((kind, ns, parts.next().unwrap_or("").to_string()))
        })
        .collect()
}

fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos()
}

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(start.elapsed() < limit, "lease-lock did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, signal).expect("kill");
}

fn run_args(name: &str, extra: &[&str], cmd: Vec<String>) -> Vec<String> {
    let mut args: Vec<String> =
        ["run", "--name", name, "--lease", LEASE, "--kill-grace", GRACE].iter().map(|s| s.to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(cmd);
    args
}

/// The harness's proxy in front of the shared cluster (on a runtime of its own, returned to keep
/// it running), and a connection string for `db` through it.
fn proxied(db: &TestDb) -> (tokio::runtime::Runtime, Proxy, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], shared_cluster().port()));
    let proxy = runtime.block_on(Proxy::start(target)).unwrap();
    let via_proxy = format!("host=127.0.0.1 port={} user=postgres dbname={} connect_timeout=1", proxy.port(), db.name);
    (runtime, proxy, via_proxy)
}

fn held_token(db: &TestDb, name: &str) -> Option<i64> {
    let out =
        db.psql(&format!("SELECT fencing_token FROM lease_lock.lease_status WHERE lease_name = '{name}' AND held"));
    out.parse().ok()
}

/// Two `run --no-wait` at once: exactly one command runs; the other exits 75 at once.
#[test]
fn two_no_wait_runs_at_once_run_exactly_one_command() {
    init_tracing();
    let db = shared_cluster().fresh_database();
    let scratch = dir();
    let d = scratch.path();
    let ran = d.join("ran");
    let cmd = vec!["sh".into(), "-c".into(), format!("echo $$ >> {}; sleep 1.5", ran.display())];
    let mut a = lease_lock(&db.conninfo()).args(run_args("cron", &["--no-wait"], cmd.clone())).spawn().unwrap();
    let mut b = lease_lock(&db.conninfo()).args(run_args("cron", &["--no-wait"], cmd)).spawn().unwrap();
    let statuses = [wait_exit(&mut a, Duration::from_secs(20)), wait_exit(&mut b, Duration::from_secs(20))];
    let mut codes: Vec<i32> = statuses.iter().map(|s| s.code().expect("exited")).collect();
    codes.sort();
    assert_eq!(codes, [0, 75], "one ran its command (0), the other found the lease busy (75)");
    assert_eq!(std::fs::read_to_string(&ran).unwrap().lines().count(), 1, "exactly one command ran");
    assert_eq!(held_token(&db, "cron"), None, "released when the command exited");
}

/// The command's status is passed on, the environment names the tenure, and `--hold-at-least`
/// keeps the lease after a quick command.
#[test]
fn run_passes_on_the_status_and_holds_at_least() {
    init_tracing();
    let db = shared_cluster().fresh_database();
    let scratch = dir();
    let d = scratch.path();
    let env = d.join("env");
    let cmd = vec![
        "sh".into(),
        "-c".into(),
        format!("echo \"$LEASE_LOCK_NAME $LEASE_LOCK_TOKEN $LEASE_LOCK_HOLDER\" > {}; exit 3", env.display()),
    ];
    let started = Instant::now();
    let status =
        lease_lock(&db.conninfo()).args(run_args("job", &["--hold-at-least", "1500ms"], cmd)).status().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(started.elapsed() >= Duration::from_millis(1500), "held for at least 1.5 s");
    let seen = std::fs::read_to_string(&env).unwrap();
    let fields: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(fields[..2], ["job", "1"], "{seen}");
    assert!(uuid::Uuid::parse_str(fields[2]).is_ok(), "{seen}");
    assert_eq!(held_token(&db, "job"), None, "released after the hold");
    // Bad settings are refused before anything runs.
    let out = lease_lock(&db.conninfo())
        .args(["run", "--name", "job", "--lease", "3s", "--kill-grace", "5s", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kill-grace"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A holder whose link to the database stalls: its command (which ignores SIGTERM) is killed
/// before the other side's command starts; their lifetimes never overlap.
#[test]
fn a_stalled_holders_command_is_gone_before_the_next_holders_starts() {
    init_tracing();
    let db = shared_cluster().fresh_database();
    let (_runtime, proxy, via_proxy) = proxied(&db);
    let scratch = dir();
    let d = scratch.path();
    let (log_a, log_b) = (d.join("a"), d.join("b"));
    let mut a = lease_lock(&via_proxy).args(run_args("stall", &[], logging_child(&log_a, true))).spawn().unwrap();
    wait_for("A's command to start", Duration::from_secs(15), || log_lines(&log_a).len() > 2);
    let mut b = lease_lock(&db.conninfo()).args(run_args("stall", &[], logging_child(&log_b, false))).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    proxy.set_stalled(true);
    let a_status = wait_exit(&mut a, Duration::from_secs(15));
    assert_eq!(a_status.code(), Some(76), "A exits with 'lease lost'");
    wait_for("B's command to start", Duration::from_secs(15), || log_lines(&log_b).iter().any(|l| l.0 == "start"));
    let a_last = log_lines(&log_a).iter().map(|l| l.1).max().unwrap();
    let b_start = log_lines(&log_b).iter().find(|l| l.0 == "start").map(|l| l.1).unwrap();
    assert!(a_last < b_start, "A's command ran until {a_last}, B's started at {b_start}: overlap");
    eprintln!("A's command last seen {} ms before B's started", (b_start - a_last) / 1_000_000);
    signal(&b, rustix::process::Signal::TERM);
    let b_status = wait_exit(&mut b, Duration::from_secs(10));
    assert_eq!(b_status.code(), Some(143), "B's command ended by the forwarded SIGTERM");
}

/// SIGKILL of lease-lock: its command (and the command's own children) are gone at once, long
/// before another holder can acquire.
#[test]
fn sigkill_of_lease_lock_takes_its_command_with_it() {
    init_tracing();
    let db = shared_cluster().fresh_database();
    let scratch = dir();
    let d = scratch.path();
    let (log_a, log_b, grandchild) = (d.join("a"), d.join("b"), d.join("grandchild"));
    // The command starts a grandchild of its own that also logs.
    let mut cmd = logging_child(&log_a, true);
    cmd[2] =
        format!("(trap '' TERM; while true; do date +%s%N >> {}; sleep 0.05; done) & {}", grandchild.display(), cmd[2]);
    let mut a = lease_lock(&db.conninfo()).args(run_args("killed", &[], cmd)).spawn().unwrap();
    wait_for("A's command to start", Duration::from_secs(15), || log_lines(&log_a).len() > 2);
    let mut b = lease_lock(&db.conninfo()).args(run_args("killed", &[], logging_child(&log_b, false))).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&a, rustix::process::Signal::KILL);
    let killed = now_ns();
    let _ = a.wait();
    wait_for("B's command to start", Duration::from_secs(15), || log_lines(&log_b).iter().any(|l| l.0 == "start"));
    let b_start = log_lines(&log_b).iter().find(|l| l.0 == "start").map(|l| l.1).unwrap();
    let a_last = log_lines(&log_a).iter().map(|l| l.1).max().unwrap();
    let g_last: u128 =
        std::fs::read_to_string(&grandchild).unwrap().lines().filter_map(|l| l.parse().ok()).max().unwrap();
    assert!(a_last < b_start && g_last < b_start, "A's command or its child outlived A's tenure");
    assert!(
        a_last.max(g_last) < killed + 500_000_000,
        "A's command and its child went on {} ms after lease-lock was killed",
        (a_last.max(g_last) - killed) / 1_000_000
    );
    signal(&b, rustix::process::Signal::TERM);
    wait_exit(&mut b, Duration::from_secs(10));
}

/// `elect`: after an eviction it stops the command, competes again, wins (nobody else
/// competes) and starts the command again with the new tenure's token.
#[test]
fn elect_starts_the_command_again_after_regaining_the_lease() {
    init_tracing();
    let db = shared_cluster().fresh_database();
    let scratch = dir();
    let d = scratch.path();
    let log = d.join("log");
    let mut args: Vec<String> =
        ["elect", "--name", "el", "--lease", LEASE, "--kill-grace", GRACE].iter().map(|s| s.to_string()).collect();
    args.push("--".into());
    args.extend(logging_child(&log, false));
    let mut e = lease_lock(&db.conninfo()).args(&args).spawn().unwrap();
    let starts = || log_lines(&log).into_iter().filter(|l| l.0 == "start").map(|l| l.2).collect::<Vec<_>>();
    wait_for("the first start", Duration::from_secs(15), || starts().len() == 1);
    let evicted = lease_lock(&db.conninfo()).args(["evict", "el"]).status().unwrap();
    assert_eq!(evicted.code(), Some(0));
    wait_for("the command to start again", Duration::from_secs(15), || starts().len() == 2);
    assert_eq!(starts(), ["1", "2"], "started again with the new tenure's token");
    signal(&e, rustix::process::Signal::TERM);
    assert_eq!(wait_exit(&mut e, Duration::from_secs(10)).code(), Some(0));
    assert_eq!(held_token(&db, "el"), None, "released on SIGTERM");
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The metric lines (`name{labels} value`) of an OpenMetrics/Prometheus text body: every other
/// line must be a comment or the end marker.
fn parse_metrics(body: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if line.starts_with('#') {
            assert!(
                line == "# EOF"
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT "),
                "{line}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        samples.push((name.to_string(), value));
    }
    samples
}

/// `/leader` answers 200 only while the lease is held and flips within a refresh interval of
/// another holder taking it over; `/metrics` parses and counts the tenure and the loss.
#[test]
fn leader_endpoint_follows_the_lease_and_metrics_parse() {
    init_tracing();
    let db = shared_cluster().fresh_database();
    let port = lease_lock_tests::cluster::free_port();
    let scratch = dir();
    let d = scratch.path();
    let mut args: Vec<String> =
        ["elect", "--name", "web", "--lease", LEASE, "--kill-grace", GRACE, "--refresh", "200ms"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--http".to_string(), format!("127.0.0.1:{port}"), "--".to_string()]);
    args.extend(logging_child(&d.join("log"), false));
    let mut e = lease_lock(&db.conninfo()).args(&args).spawn().unwrap();
    wait_for("/leader to answer 200", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && http_get(port, "/leader").0 == 200
    });
    std::thread::sleep(Duration::from_millis(700));
    let samples = parse_metrics(&http_get(port, "/metrics").1);
    let value =
        |samples: &[(String, f64)], name: &str| samples.iter().find(|(n, _)| n.starts_with(name)).map(|(_, v)| *v);
    assert_eq!(value(&samples, "lease_lock_held{"), Some(1.0), "{samples:?}");
    assert_eq!(value(&samples, "lease_lock_acquisitions_total{"), Some(1.0));
    assert_eq!(value(&samples, "lease_lock_fencing_token{"), Some(1.0));
    assert!(value(&samples, "lease_lock_renewals_total{").unwrap_or(0.0) >= 2.0, "renewals counted: {samples:?}");
    assert!(samples.iter().any(|(n, _)| n.starts_with("lease_lock_renewal_latency_seconds_bucket{")));
    // An administrator ends the tenure and another holder takes the lease, in one transaction.
    let taken_at = Instant::now();
    db.psql(
        "SELECT lease_lock.lease_evict('web'); \
         SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', '1 hour', 'web')",
    );
    wait_for("/leader to answer 503", Duration::from_secs(5), || http_get(port, "/leader").0 == 503);
    let flipped = taken_at.elapsed();
    // One refresh interval (200 ms) for the refused renewal, plus slack for the test's polling
    // and a busy machine's scheduling.
    assert!(flipped < Duration::from_millis(200 + 500), "/leader flipped {flipped:?} after the takeover");
    let samples = parse_metrics(&http_get(port, "/metrics").1);
    assert_eq!(value(&samples, "lease_lock_held{"), Some(0.0), "{samples:?}");
    assert_eq!(value(&samples, "lease_lock_losses_total{"), Some(1.0), "{samples:?}");
    signal(&e, rustix::process::Signal::TERM);
    assert_eq!(wait_exit(&mut e, Duration::from_secs(10)).code(), Some(0));
}

/// `watch` prints every change in order, and after its connection is cut it reads again and
/// prints what changed meanwhile.
#[test]
fn watch_prints_every_change_in_order_across_a_reconnect() {
    init_tracing();
    let db = shared_cluster().fresh_database();
    let (_runtime, proxy, via_proxy) = proxied(&db);
    let mut w = lease_lock(&via_proxy).args(["watch", "wt", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = w.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).expect("one JSON object per line"));
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(10)).expect("a line from watch");
    assert_eq!(next()["held"], false, "first: the state at the start (never used)");
    let sql = |s: &str| db.psql(s);
    sql("SELECT lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', '1 hour', 'wt')");
    let first = next();
    assert_eq!((first["held"].as_bool(), first["fencing_token"].as_i64()), (Some(true), Some(1)), "{first}");
    sql("SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000a', 'wt')");
    let released = next();
    assert_eq!((released["held"].as_bool(), released["fencing_token"].as_i64()), (Some(false), Some(1)), "{released}");
    // Cut the watcher off; while it is away, another tenure begins.
    proxy.set_refusing(true);
    proxy.cut();
    sql("SELECT lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', '1 hour', 'wt')");
    std::thread::sleep(Duration::from_millis(500));
    proxy.set_refusing(false);
    let after = next();
    assert_eq!((after["held"].as_bool(), after["fencing_token"].as_i64()), (Some(true), Some(2)), "{after}");
    let _ = w.kill();
    let _ = w.wait();
}

/// Without `--database-url` or `DATABASE_URL`, libpq's variables say where the database is;
/// `status` prints JSON; `release --holder` ends that holder's tenure, and says when there was
/// nothing to end.
#[test]
fn status_and_release_through_libpq_variables() {
    init_tracing();
    let db = shared_cluster().fresh_database();
    const H: &str = "00000000-0000-0000-0000-0000000000c1";
    db.psql(&format!("SELECT lease_lock.lease_acquire('{H}', '1 hour', 'pgvars')"));
    let lease_lock_env = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("DATABASE_URL")
            .env("PGHOST", shared_cluster().socket_dir())
            .env("PGPORT", shared_cluster().port().to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", &db.name)
            .output()
            .unwrap()
    };
    let out = lease_lock_env(&["status", "pgvars", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!((row["held"].as_bool(), row["holder"].as_str()), (Some(true), Some(H)), "{row}");
    let out = lease_lock_env(&["release", "--holder", H, "pgvars"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lease_lock_env(&["release", "--holder", H, "pgvars"]).status.code(), Some(1), "nothing left to end");
    assert_eq!(lease_lock_env(&["status", "pgvars"]).status.code(), Some(1), "not held");
    // A database without lease_lock: one line saying what to do, status 69.
    let out = Command::new(BIN)
        .args(["status", "--schema", "no_such_schema"])
        .env("DATABASE_URL", db.conninfo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--schema"), "{err}");
}
