//! The fault harness: competing client processes, a seeded fault injector, and a checker of the
//! history they leave (in the spirit of Jepsen, on one machine).
//!
//! Each client process (`faults worker`) reaches PostgreSQL through two loopback proxies of its
//! own, one for its lease connection and one for its application connection, so that faults can
//! hit one link or both. The injector picks a fault every 250-650 ms (the current leader is the
//! target 70% of the time) and heals it after its duration:
//!
//! | fault | what |
//! |---|---|
//! | `kill` | SIGKILL the process; a new process takes its slot 200 ms later |
//! | `pause` | SIGSTOP for 1.5-2.5 lease durations, then SIGCONT (the classic GC pause) |
//! | `pause-write` | the leader stops itself (asked by SIGUSR1) between deciding to write and its fenced write; SIGCONT after 1.5-2.5 lease durations: the write is stale and the fence must refuse it |
//! | `terminate` | `pg_terminate_backend` of its lease connection |
//! | `stall` | its lease link forwards nothing for 0.5-2.5 lease durations (half-open) |
//! | `cut` | both its links are closed |
//! | `delay` | its lease link gains 50-300 ms each way for 1-3 s |
//! | `restart-fast`, `restart-immediate` | PostgreSQL is stopped and started (at most every 8 s) |
//! | `lock` | `LOCK TABLE lease_lock.leases IN EXCLUSIVE MODE` for 0.5-2 lease durations (a slow server) |
//!
//! The negative control (`--reference`) uses only stalls, pauses and kills, mostly stalls of the
//! leader's lease link: the faults under which the reference's behaviour splits the brain.

pub mod checker;
pub mod worker;

use checker::{FaultRecord, HistoryRow, ProcessLog, Report};
use lease_lock_tests::cluster::TestCluster;
use lease_lock_tests::proxy::Proxy;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::sleep;
use worker::LEASE_DURATION;

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process on this host.
pub fn mono_ns() -> i128 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Whether process `pid` is stopped (state `T` in `/proc/<pid>/stat`, after the name's `)`).
fn is_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')))
        .unwrap_or(false)
}

/// Sends `signal` to a worker process (a worker that is already gone is not an error).
fn signal(pid: i32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// The fault schedule's seeded generator: the same seed gives the same schedule. ChaCha8, whose
/// output `rand_chacha` keeps stable across versions (`StdRng` promises no such thing), so a
/// seed printed by a run reproduces it later.
pub struct Rng(rand_chacha::ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }

    /// Uniform in `[lo, hi)` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        rand::Rng::gen_range(&mut self.0, lo..hi)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// Settings of one harness run.
pub struct RunConfig {
    pub seconds: u64,
    pub seed: u64,
    pub clients: usize,
    /// Run reference-behaving clients (the negative control).
    pub reference: bool,
    pub work_dir: std::path::PathBuf,
}

struct Slot {
    base: String,
    generation: u32,
    child: Option<Child>,
    lease_proxy: Proxy,
    app_proxy: Proxy,
}

impl Slot {
    fn process_name(&self) -> String {
        format!("{}.{}", self.base, self.generation)
    }
}

struct Harness {
    cluster: TestCluster,
    db: String,
    slots: Mutex<Vec<Slot>>,
    faults: Mutex<Vec<FaultRecord>>,
    killed: Mutex<Vec<(String, i128)>>,
    restart_lock: tokio::sync::Mutex<()>,
    config: RunConfig,
}

impl Harness {
    fn spawn_worker(&self, slot: &mut Slot) {
        let name = slot.process_name();
        let conninfo = |port: u16, role: &str| {
            format!(
                "host=127.0.0.1 port={port} user=postgres dbname={} application_name={name}-{role} connect_timeout=2",
                self.db
            )
        };
        let mut command = Command::new(std::env::current_exe().expect("own path"));
        command.args(["worker", "--client", &name]);
        command.args(["--lease-conninfo", &conninfo(slot.lease_proxy.port(), "lease")]);
        command.args(["--app-conninfo", &conninfo(slot.app_proxy.port(), "app")]);
        command.args(["--log", self.log_path(&name).to_str().unwrap()]);
        if self.config.reference {
            command.arg("--reference");
        }
        command.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()));
        let stderr = std::fs::File::create(self.config.work_dir.join(format!("{name}.stderr"))).expect("stderr file");
        command.stdout(Stdio::null()).stderr(stderr);
        slot.child = Some(command.spawn().expect("spawn worker"));
    }

    fn log_path(&self, process: &str) -> std::path::PathBuf {
        self.config.work_dir.join(format!("{process}.log"))
    }

    /// A connection of the harness's own to the server: direct, never faulted. `None` while the
    /// server is down (a restart fault).
    async fn connect(&self) -> Option<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.cluster.conninfo(&self.db), tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(connection);
        Some(client)
    }

    /// The slot whose process holds the lease now, per `lease_lock.lease_status` and the workers' logs.
    async fn leader_slot(&self) -> Option<usize> {
        let holder: uuid::Uuid = self
            .connect()
            .await?
            .query_opt(
                "SELECT holder FROM lease_lock.lease_status WHERE lease_name = $1 AND held",
                &[&worker::LEASE_NAME],
            )
            .await
            .ok()??
            .get(0);
        let holder = holder.to_string();
        let slots = self.slots.lock().unwrap();
        slots.iter().position(|s| {
            std::fs::read_to_string(self.log_path(&s.process_name()))
                .map(|log| {
                    log.lines().any(|l| {
                        matches!(serde_json::from_str::<worker::LogLine>(l),
                            Ok(worker::LogLine { event: worker::Event::Start { holder: h }, .. }) if h == holder)
                    })
                })
                .unwrap_or(false)
        })
    }

    /// Whether the process in `slot` is stopped now.
    fn is_stopped(&self, slot: usize) -> bool {
        let slots = self.slots.lock().unwrap();
        slots[slot].child.as_ref().is_some_and(|c| is_stopped(c.id() as i32))
    }

    fn record(&self, kind: Fault, target: String, start: i128) {
        self.faults.lock().unwrap().push(FaultRecord { kind, target, start, end: mono_ns() });
    }

    /// Injects one fault and heals it; returns when healed.
    async fn inject(self: Arc<Self>, kind: Fault, slot: usize, rng_values: [u64; 2]) {
        let lease_ms = LEASE_DURATION.as_millis() as u64;
        let span = |lo: u64, hi: u64| Duration::from_millis(lo + rng_values[0] % (hi - lo).max(1));
        let start = mono_ns();
        let (target, pid, lease_proxy, app_proxy) = {
            let slots = self.slots.lock().unwrap();
            let s = &slots[slot];
            (s.process_name(), s.child.as_ref().map(|c| c.id() as i32), s.lease_proxy.clone(), s.app_proxy.clone())
        };
        match kind {
            Fault::Kill => {
                if let Some(pid) = pid {
                    signal(pid, rustix::process::Signal::KILL);
                }
                self.killed.lock().unwrap().push((target.clone(), mono_ns()));
                self.record(kind, target, start);
                sleep(Duration::from_millis(200)).await;
                let mut slots = self.slots.lock().unwrap();
                let s = &mut slots[slot];
                if let Some(mut child) = s.child.take() {
                    let _ = child.wait();
                }
                s.generation += 1;
                self.spawn_worker(s);
                return;
            }
            Fault::Pause => {
                let Some(pid) = pid else { return };
                signal(pid, rustix::process::Signal::STOP);
                sleep(span(lease_ms * 3 / 2, lease_ms * 5 / 2)).await;
                signal(pid, rustix::process::Signal::CONT);
            }
            Fault::PauseWrite => {
                let Some(pid) = pid else { return };
                if is_stopped(pid) {
                    return; // stopped by another fault: this one would not be the stop seen
                }
                // The worker stops itself at its next decision to write (within a write cycle)
                // if the request is fresh (see worker.rs); a process that is not writing never
                // does, and then nothing was injected.
                signal(pid, rustix::process::Signal::USR1);
                let asked = tokio::time::Instant::now();
                while !is_stopped(pid) {
                    if asked.elapsed() > Duration::from_millis(600) {
                        signal(pid, rustix::process::Signal::CONT); // in case it stopped just now
                        return;
                    }
                    sleep(Duration::from_millis(5)).await;
                }
                sleep(span(lease_ms * 3 / 2, lease_ms * 5 / 2)).await;
                signal(pid, rustix::process::Signal::CONT);
            }
            Fault::Terminate => {
                if let Some(c) = self.connect().await {
                    let name = format!("{target}-lease");
                    let _ = c
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                            &[&name],
                        )
                        .await;
                }
            }
            Fault::Stall => {
                lease_proxy.set_stalled(true);
                sleep(span(lease_ms / 2, lease_ms * 5 / 2)).await;
                lease_proxy.set_stalled(false);
            }
            Fault::Cut => {
                lease_proxy.cut();
                app_proxy.cut();
            }
            Fault::Delay => {
                lease_proxy.set_delay(Duration::from_millis(50 + rng_values[1] % 250));
                sleep(span(1000, 3000)).await;
                lease_proxy.set_delay(Duration::ZERO);
            }
            Fault::RestartFast | Fault::RestartImmediate => {
                let _guard = self.restart_lock.lock().await;
                let mode = if kind == Fault::RestartFast { "fast" } else { "immediate" };
                let harness = self.clone();
                let settings = cluster_settings();
                tokio::task::spawn_blocking(move || harness.cluster.restart(mode, &settings)).await.expect("restart");
                self.record(kind, "server".into(), start);
                sleep(Duration::from_secs(8)).await; // keep restarts apart
                return;
            }
            Fault::Lock => {
                let hold = span(lease_ms / 2, lease_ms * 2);
                if let Some(mut c) = self.connect().await {
                    if let Ok(tx) = c.transaction().await {
                        if tx.batch_execute("LOCK TABLE lease_lock.leases IN EXCLUSIVE MODE").await.is_ok() {
                            let _ = tx.execute("SELECT pg_sleep($1)", &[&hold.as_secs_f64()]).await;
                            let _ = tx.commit().await;
                        }
                    }
                }
                self.record(kind, "server".into(), start);
                return;
            }
        }
        self.record(kind, target, start);
    }
}

fn cluster_settings() -> Vec<&'static str> {
    vec!["track_commit_timestamp=on"]
}

/// The faults the injector knows (the module docs say what each does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Pause,
    PauseWrite,
    Terminate,
    Stall,
    Cut,
    Delay,
    Lock,
    RestartFast,
    RestartImmediate,
}

impl Fault {
    /// The name in reports and in `faults.txt`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::PauseWrite => "pause-write",
            Fault::Terminate => "terminate",
            Fault::Stall => "stall",
            Fault::Cut => "cut",
            Fault::Delay => "delay",
            Fault::Lock => "lock",
            Fault::RestartFast => "restart-fast",
            Fault::RestartImmediate => "restart-immediate",
        }
    }
}

impl Fault {
    /// Whether the target process was stopped (SIGSTOP): an overlap of beliefs during it is
    /// what fencing is for, not a violation.
    pub fn stops_the_process(self) -> bool {
        matches!(self, Fault::Pause | Fault::PauseWrite)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Fault kinds and their weights.
const FAULTS: &[(Fault, u64)] = &[
    (Fault::Kill, 12),
    (Fault::Pause, 12),
    (Fault::PauseWrite, 14),
    (Fault::Terminate, 14),
    (Fault::Stall, 16),
    (Fault::Cut, 12),
    (Fault::Delay, 10),
    (Fault::Lock, 10),
    (Fault::RestartFast, 3),
    (Fault::RestartImmediate, 3),
];

/// The negative control's mix: aimed at the reference's weakness (a holder whose renewals fail
/// keeps acting), so that every run shows the split brain it allows.
const FAULTS_NEGATIVE: &[(Fault, u64)] = &[(Fault::Stall, 70), (Fault::Pause, 15), (Fault::Kill, 15)];

fn pick_fault(rng: &mut Rng, mix: &[(Fault, u64)]) -> Fault {
    let total: u64 = mix.iter().map(|(_, w)| w).sum();
    let mut x = rng.range(0, total);
    for (kind, weight) in mix {
        if x < *weight {
            return *kind;
        }
        x -= weight;
    }
    FAULTS[0].0
}

/// Runs the harness and returns the checker's report plus the faults injected by kind.
pub async fn run(config: RunConfig) -> (Report, Vec<(Fault, usize)>) {
    let settings = cluster_settings();
    let cluster = TestCluster::start(&settings);
    let db = "faults".to_string();
    cluster.psql("postgres", "CREATE DATABASE faults");
    cluster.install_edition(&db);
    cluster.psql(&db, "CREATE TABLE history (id bigserial PRIMARY KEY, client text, token bigint, seq bigint)");
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", cluster.port()).parse().unwrap();

    let mut slots = Vec::new();
    for i in 0..config.clients {
        slots.push(Slot {
            base: format!("c{i}"),
            generation: 0,
            child: None,
            lease_proxy: Proxy::start(target).await.expect("proxy"),
            app_proxy: Proxy::start(target).await.expect("proxy"),
        });
    }
    let mut rng = Rng::new(config.seed);
    let duration = Duration::from_secs(config.seconds);
    let harness = Arc::new(Harness {
        cluster,
        db,
        slots: Mutex::new(Vec::new()),
        faults: Mutex::new(Vec::new()),
        killed: Mutex::new(Vec::new()),
        restart_lock: tokio::sync::Mutex::new(()),
        config,
    });
    for slot in &mut slots {
        harness.spawn_worker(slot);
    }
    *harness.slots.lock().unwrap() = slots;

    // Let a leader emerge, then inject until the time is up.
    sleep(LEASE_DURATION).await;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        sleep(rng.millis(250, 650)).await;
        let kind = pick_fault(&mut rng, if harness.config.reference { FAULTS_NEGATIVE } else { FAULTS });
        if matches!(kind, Fault::RestartFast | Fault::RestartImmediate) && harness.restart_lock.try_lock().is_err() {
            continue;
        }
        let leader = harness.leader_slot().await;
        let slot = match leader {
            // Only a leader writes: a pause before its write needs one.
            _ if kind == Fault::PauseWrite => match leader {
                Some(leader) => leader,
                None => continue,
            },
            // A stopped leader (a pause) is left alone: faults on it would mostly do nothing,
            // and a cut link would keep a stale write from reaching the fence.
            Some(leader) if rng.chance(70) && !harness.is_stopped(leader) => leader,
            _ => rng.range(0, harness.config.clients as u64) as usize,
        };
        let values = [rng.next_u64(), rng.next_u64()];
        tasks.push(tokio::spawn(harness.clone().inject(kind, slot, values)));
    }
    for task in tasks {
        let _ = task.await;
    }
    // Quiet period: every fault healed, the lease must come back.
    sleep(LEASE_DURATION * 3).await;
    let run_end = mono_ns();
    {
        let mut slots = harness.slots.lock().unwrap();
        for s in slots.iter_mut() {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    // Collect: logs, the table in commit order, the faults.
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(&harness.config.work_dir).expect("work dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let mut log = ProcessLog::parse(&name, &std::fs::read_to_string(&path).unwrap_or_default());
            log.killed_at = harness.killed.lock().unwrap().iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
            logs.push(log);
        }
    }
    let history: Vec<HistoryRow> = harness
        .cluster
        .query(&harness.db, "SELECT client, token, seq FROM history ORDER BY pg_xact_commit_timestamp(xmin), id", &[])
        .await
        .iter()
        .map(|r| HistoryRow { client: r.get(0), token: r.get(1), seq: r.get::<_, i64>(2) as u64 })
        .collect();
    let faults = harness.faults.lock().unwrap().clone();
    let fault_lines: Vec<String> =
        faults.iter().map(|f| format!("{} {} {} {}", f.start, f.end, f.kind, f.target)).collect();
    let _ = std::fs::write(harness.config.work_dir.join("faults.txt"), fault_lines.join("\n"));
    let report = checker::check(&logs, &history, &faults, run_end, harness.config.reference);
    let mut by_kind: Vec<(Fault, usize)> =
        FAULTS.iter().map(|(k, _)| (*k, faults.iter().filter(|f| f.kind == *k).count())).collect();
    by_kind.retain(|(_, n)| *n > 0);
    (report, by_kind)
}
