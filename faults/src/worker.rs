//! A competing client process of the fault harness.
//!
//! It runs an elector for the lease `f`; while it leads, it repeatedly does the protected work:
//! a transaction that fences with its token and appends `(client, token, seq)` to `history`.
//! It logs what it believed and did, with CLOCK_MONOTONIC timestamps (shared by every process
//! on the host), one event per line: `<mono_ns> <event> <fields...>`:
//!
//! - `start <holder-uuid>`
//! - `held <token> <valid_until_ns>`: the lease is trusted until `valid_until_ns` (each renewal)
//! - `lost <token>` / `released <token>`: belief ends (at this line's time, or `valid_until`)
//! - `begin <token> <seq>`, `ack <token> <seq>`, `fail <token> <seq> <sqlstate-or-error>`
//!
//! Between deciding to write (the lease is held) and the fenced write, a worker does a little
//! work (0-40 ms, as a leader computing what to write would). When the harness asks for it with
//! SIGUSR1 (the `pause-write` fault), the worker stops itself (SIGSTOP) right there, after the
//! decision, and the harness continues it after more than a lease duration: the write then
//! arrives from a holder whose tenure has ended, and only the fence can refuse it.
//!
//! `--reference` behaves like the reference implementation instead: it keeps believing it leads
//! while renewals fail (only an answer of "not held" ends its belief) and writes without
//! fencing. The harness runs it as a negative control: it must be caught.

use super::mono_ns;
use lease_lock_client::{Error, Fence, LeaseClient, LeaseInfo, LeaseState};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// When the harness last asked (SIGUSR1) for a stop before the next write, CLOCK_MONOTONIC ns;
/// 0 when no request is pending.
static PAUSE_REQUESTED_AT: AtomicI64 = AtomicI64::new(0);
/// A request older than this is dropped: the harness has given up on it by then.
const PAUSE_REQUEST_TTL_NS: i64 = 300_000_000;

/// Listens for the harness's SIGUSR1 (see the module docs). Registered before the worker logs
/// its start: SIGUSR1's default action would end the process.
fn listen_for_pause_requests() {
    let mut usr1 =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).expect("SIGUSR1 handler");
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            PAUSE_REQUESTED_AT.store(mono_ns() as i64, Ordering::SeqCst);
        }
    });
}

/// Stops this process (SIGSTOP) if the harness asked for it recently; the harness continues it.
fn pause_if_requested() {
    let asked = PAUSE_REQUESTED_AT.swap(0, Ordering::SeqCst);
    if asked != 0 && (mono_ns() as i64) - asked < PAUSE_REQUEST_TTL_NS {
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
    }
}

/// The lease the clients compete for.
pub const LEASE_NAME: &str = "f";
pub const LEASE_DURATION: Duration = Duration::from_millis(1000);
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// One line of a worker's log: what the worker believed or did, and when (CLOCK_MONOTONIC ns,
/// the same clock in every process on the machine).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub t: i64,
    pub event: Event,
}

/// What a worker logs; the checker reads these back.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The worker started with this holder id.
    Start { holder: String },
    /// The elector returned (it should not).
    Error { message: String },
    /// The worker trusts tenure `token` until `valid_until` (CLOCK_MONOTONIC ns).
    Held { token: i64, valid_until: i64 },
    /// The worker stopped trusting tenure `token`.
    Lost { token: i64 },
    /// The worker released tenure `token`.
    Released { token: i64 },
    /// A write under `token` began.
    Begin { token: i64, seq: u64 },
    /// That write committed.
    Ack { token: i64, seq: u64 },
    /// That write failed.
    Fail { token: i64, seq: u64, error: String },
}

/// Appends events to the worker's log, flushed per line (the process may be SIGKILLed).
#[derive(Clone)]
pub struct EventLog(Arc<Mutex<BufWriter<File>>>);

impl EventLog {
    pub fn create(path: &str) -> EventLog {
        let file = File::options().create(true).append(true).open(path).expect("open event log");
        EventLog(Arc::new(Mutex::new(BufWriter::new(file))))
    }

    /// Appends `event`, stamped with CLOCK_MONOTONIC, as one JSON line.
    pub fn event(&self, event: Event) {
        let line = LogLine { t: mono_ns() as i64, event };
        let mut out = self.0.lock().unwrap();
        if let Ok(json) = serde_json::to_string(&line) {
            let _ = writeln!(out, "{json}");
        }
        let _ = out.flush();
    }
}

/// Settings of one worker process, from the command line.
pub struct WorkerArgs {
    pub client: String,
    pub lease_conninfo: String,
    pub app_conninfo: String,
    pub log: String,
    pub reference: bool,
}

pub async fn run(args: WorkerArgs) {
    listen_for_pause_requests();
    let log = EventLog::create(&args.log);
    if args.reference {
        reference_worker(&args, &log).await;
    } else {
        lease_worker(&args, &log).await;
    }
}

async fn lease_worker(args: &WorkerArgs, log: &EventLog) {
    let client = LeaseClient::builder(&args.lease_conninfo)
        .lease_name(LEASE_NAME)
        .lease_duration(LEASE_DURATION)
        .refresh_interval(REFRESH_INTERVAL)
        .call_timeout(Duration::from_millis(300))
        .max_backoff(Duration::from_millis(500))
        .build()
        .expect("valid config");
    log.event(Event::Start { holder: client.holder_id().to_string() });
    let app = Arc::new(AppConnection::new(&args.app_conninfo));
    let result = client.run_elector(|info| lead(info, &app, &args.client, log), std::future::pending()).await;
    log.event(Event::Error { message: format!("{result:?}") });
}

/// Logs each state change of the tenure, then does fenced writes until cancelled by the elector.
async fn lead(info: LeaseInfo, app: &Arc<AppConnection>, client: &str, log: &EventLog) {
    let token = info.fencing_token();
    let mut states = info.subscribe();
    let watcher_log = log.clone();
    let watcher = tokio::spawn(async move {
        loop {
            let state = states.borrow_and_update().clone();
            match state {
                LeaseState::Held { valid_until, .. } => {
                    // Signed: a deadline already past when this is logged (the process was
                    // stopped in between) stays in the past, rather than moving to now.
                    let now = std::time::Instant::now();
                    let until = match valid_until.checked_duration_since(now) {
                        Some(ahead) => mono_ns() + ahead.as_nanos() as i128,
                        None => mono_ns() - (now - valid_until).as_nanos() as i128,
                    };
                    watcher_log.event(Event::Held { token, valid_until: until as i64 });
                }
                LeaseState::Lost(_) => return watcher_log.event(Event::Lost { token }),
                LeaseState::Released => return watcher_log.event(Event::Released { token }),
                _ => {}
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    });
    // Cancelled (dropped) by the elector on loss; the guard ends the watcher with it.
    let _stop_watcher = AbortOnDrop(watcher);
    let fence = info.fencing();
    write_loop(token, app, client, log, Some(&fence), || info.is_held()).await;
}

/// Writes every 20 ms while `believes`: fenced with `fence`, or (the negative control) not.
///
/// Each write runs in a task of its own once decided, as a write handed to another task does:
/// the elector cancels this loop the moment the lease is lost, but not a write already on its
/// way, which only the fence can stop.
async fn write_loop(
    token: i64,
    app: &Arc<AppConnection>,
    client: &str,
    log: &EventLog,
    fence: Option<&Fence>,
    believes: impl Fn() -> bool,
) {
    let mut seq = 0u64;
    loop {
        if believes() {
            seq += 1;
            let (app, client, log, fence) = (app.clone(), client.to_string(), log.clone(), fence.cloned());
            let write = tokio::spawn(async move {
                // Decided: the work before the write, where a pause makes the write stale.
                pause_if_requested();
                tokio::time::sleep(Duration::from_millis(seq % 5 * 10)).await;
                log.event(Event::Begin { token, seq });
                match app.write(&client, token, seq, fence.as_ref()).await {
                    Ok(()) => log.event(Event::Ack { token, seq }),
                    Err(e) => log.event(Event::Fail { token, seq, error: e.to_string() }),
                }
            });
            let _ = write.await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The application's own connection, reopened when it breaks.
struct AppConnection {
    conninfo: String,
    client: tokio::sync::Mutex<Option<AppClient>>,
}

/// An open application connection and its insert, prepared once.
struct AppClient {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
}

impl AppConnection {
    fn new(conninfo: &str) -> AppConnection {
        AppConnection { conninfo: conninfo.to_string(), client: tokio::sync::Mutex::new(None) }
    }

    async fn open(&self) -> Result<AppClient, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.conninfo, NoTls).await?;
        tokio::spawn(connection);
        let insert = client.prepare("INSERT INTO history (client, token, seq) VALUES ($1, $2, $3)").await?;
        Ok(AppClient { client, insert })
    }

    /// One protected write: a transaction that fences first (the client's [`Fence`]), or, for
    /// the negative control, the insert alone. `Err` carries the SQLSTATE or a short reason.
    async fn write(&self, client: &str, token: i64, seq: u64, fence: Option<&Fence>) -> Result<(), String> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            let opened = tokio::time::timeout(Duration::from_millis(500), self.open())
                .await
                .map_err(|_| "connect-timeout".to_string())?
                .map_err(|e| format!("connect:{}", sqlstate(&e)))?;
            *slot = Some(opened);
        }
        let c = slot.as_mut().expect("opened above");
        let seq = i64::try_from(seq).expect("sequence numbers fit in bigint");
        let write = async {
            match fence {
                Some(fence) => {
                    let tx = c.client.transaction().await.map_err(|e| sqlstate(&e))?;
                    fence.check(&tx).await.map_err(|e| match e {
                        Error::Fenced { .. } => lease_lock_contract::sqlstate::FENCE_REJECTED.to_string(),
                        other => other.code().map_or("io", |c| c.code()).to_string(),
                    })?;
                    tx.execute(&c.insert, &[&client, &token, &seq]).await.map_err(|e| sqlstate(&e))?;
                    tx.commit().await.map_err(|e| sqlstate(&e))
                }
                None => {
                    c.client.execute(&c.insert, &[&client, &token, &seq]).await.map(|_| ()).map_err(|e| sqlstate(&e))
                }
            }
        };
        match tokio::time::timeout(Duration::from_millis(500), write).await {
            Ok(result) => result,
            Err(_) => {
                // Unknown outcome; drop the connection (a stalled link) and reconnect next time.
                *slot = None;
                Err("timeout".into())
            }
        }
    }
}

/// A database error's SQLSTATE, or `io` for a connection that broke.
fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map_or("io", |c| c.code()).to_string()
}

/// The reference implementation's behaviour, for the negative control: renewal errors are only
/// logged, belief ends only when the database answers "not held", writes are not fenced.
async fn reference_worker(args: &WorkerArgs, log: &EventLog) {
    let holder = Uuid::new_v4();
    log.event(Event::Start { holder: holder.to_string() });
    let app = AppConnection::new(&args.app_conninfo);
    let duration = format!("{} milliseconds", LEASE_DURATION.as_millis());
    let mut conn: Option<tokio_postgres::Client> = None;
    let mut believed: Option<i64> = None;
    let acquire_sql = "SELECT acquired, fencing_token FROM lease_lock.lease_acquire($1, ($2::text)::interval, $3)";
    // The writing task of the current belief; dropping it stops the writes.
    let mut _writer: Option<AbortOnDrop> = None;
    let app = Arc::new(app);
    loop {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = match tokio::time::timeout(
                Duration::from_millis(500),
                tokio_postgres::connect(&args.lease_conninfo, NoTls),
            )
            .await
            {
                Ok(Ok((c, connection))) => {
                    tokio::spawn(connection);
                    Some(c)
                }
                _ => None,
            };
        }
        let answer = match &conn {
            Some(c) => {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&holder, &duration, &LEASE_NAME];
                let call = c.query_one(acquire_sql, &params);
                match tokio::time::timeout(Duration::from_millis(300), call).await {
                    Ok(Ok(row)) => Some((row.get::<_, bool>(0), row.get::<_, Option<i64>>(1))),
                    Ok(Err(_)) => None,
                    Err(_) => {
                        conn = None;
                        None
                    }
                }
            }
            None => None,
        };
        match (answer, believed) {
            (Some((true, Some(token))), None) => {
                believed = Some(token);
                // It never learns a deadline: it believes "for ever" until told otherwise.
                log.event(Event::Held { token, valid_until: i64::MAX });
                let (app, log, client) = (app.clone(), log.clone(), args.client.clone());
                _writer = Some(AbortOnDrop(tokio::spawn(async move {
                    write_loop(token, &app, &client, &log, None, || true).await
                })));
            }
            (Some((true, Some(token))), Some(old)) if token != old => {
                // Its old tenure expired and it took a new one without noticing in between.
                log.event(Event::Lost { token: old });
                log.event(Event::Held { token, valid_until: i64::MAX });
                believed = Some(token);
                let (app, log, client) = (app.clone(), log.clone(), args.client.clone());
                _writer = Some(AbortOnDrop(tokio::spawn(async move {
                    write_loop(token, &app, &client, &log, None, || true).await
                })));
            }
            (Some((false, _)), Some(token)) => {
                log.event(Event::Lost { token });
                believed = None;
                _writer = None;
            }
            // Errors and timeouts are "merely logged": belief continues.
            _ => {}
        }
        tokio::time::sleep(REFRESH_INTERVAL).await;
    }
}
