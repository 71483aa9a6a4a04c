//! The dedicated connection: connecting, reconnecting, the three lease calls, notifications.
//!
//! One [`Session`] serves every lease of a [`LeaseClient`](crate::LeaseClient) (and of the clients
//! made from it with `for_lease`): renewals of many leases go out together over one connection
//! (one `lease_refresh_many` for those due at once, see [`Session::renew`]). It is
//! never used for anything else. A call that times out aborts the connection (a stalled socket
//! would hold up every later call), and the next call reconnects. Opening a connection is bounded
//! like a call: a server that accepts TCP but never answers costs one call timeout, not forever.
//!
//! The lease functions are called schema-qualified ([`LeaseConfig::schema`]), so the
//! connection's `search_path` never decides which function runs.

use crate::config::{quote_identifier, LeaseConfig};
use crate::error::Error;
use bytes::BytesMut;
use futures_util::future::poll_fn;
use postgres_types::{IsNull, ToSql, Type};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, oneshot, watch, Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Connection, Statement};
use tracing::{debug, warn};
use uuid::Uuid;

/// The channel `lease_release` and `lease_evict` notify, with the lease name as payload.
///
/// A notification is only a hint: any role that can connect may `NOTIFY` this channel with any
/// payload, and the channel is the same whatever schema the extension is in. The client treats
/// one for its lease as "check again now": a waiter calls `lease_acquire` again (at most once
/// per quarter refresh interval), and only the answer of that call can grant the lease.
pub const RELEASE_CHANNEL: &str = lease_lock_contract::RELEASE_CHANNEL;

/// The channel every change of a lease's tenure is notified on (a new tenure, a release, an
/// eviction, a re-arm after a failover), with a JSON payload; renewals notify nothing.
/// [`LeaseClient::watch`](crate::LeaseClient::watch) listens on it. Like
/// [`RELEASE_CHANNEL`], a hint only: anyone may notify it.
pub const EVENTS_CHANNEL: &str = lease_lock_contract::EVENTS_CHANNEL;

/// A row of `lease_status`: who holds a lease, as the database says.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Leader {
    /// The lease.
    pub lease_name: String,
    /// The holder id of the current (or last) tenure: `None` when free, and when the reading
    /// role is not a member of the tenure's role (`lease_status` shows the id only to those).
    pub holder: Option<Uuid>,
    /// The role of the current (or last) tenure; `None` when free.
    pub holder_role: Option<String>,
    /// The token of the current (or last) tenure.
    pub fencing_token: i64,
    /// When the tenure ends (or ended) on the database's clock.
    pub expires_at: SystemTime,
    /// Whether it is held now (database clock).
    pub held: bool,
    /// How long until `expires_at` on the database's clock when read (zero if past).
    pub expires_in: Duration,
}

/// The two calls that answer with a grant; the value is the index of the call's prepared
/// statement (the third, release, follows them).
#[derive(Clone, Copy, PartialEq, Eq)]
enum GrantCall {
    Acquire = 0,
    Refresh = 1,
}

/// The statements of the lease calls, with the extension's schema in them.
#[derive(Debug)]
struct Sql {
    acquire: String,
    refresh: String,
    release: String,
    refresh_many: String,
    /// `lease_status` of the names `$1` (all names when NULL), with the seconds until each
    /// expiry on the database's clock (so a watcher needs no clock agreement).
    status: String,
    evict: String,
}

impl Sql {
    fn new(schema: &str) -> Sql {
        // The schema is an identifier, not a value: it cannot be a bound parameter, so it is
        // quoted (`quote_identifier`) into the text. Every value is a bound parameter.
        let s = quote_identifier(schema);
        Sql {
            // The fourth column reads the lease row as of the statement's snapshot, which is
            // taken before `lease_acquire` runs (a volatile function's writes are invisible to
            // the statement that calls it): the token of a tenure that was already held under
            // this holder id. If `lease_acquire` answers with that same token, it renewed that
            // tenure rather than starting one (a new tenure always gets a higher token).
            acquire: format!(
                "SELECT a.acquired, a.fencing_token, a.expires_at, \
                 (SELECT s.fencing_token FROM {s}.lease_status s \
                  WHERE s.lease_name = $3 AND s.holder = $1) \
                 FROM {s}.lease_acquire($1, $2, $3) a"
            ),
            refresh: format!("SELECT acquired, fencing_token, expires_at FROM {s}.lease_refresh($1, $2, $3)"),
            // The release commits with `synchronous_commit = off`: `set_config(..., true)` lasts
            // until the end of the transaction, here the statement's own (the client never
            // calls inside a transaction block), and one statement is one request, so no other
            // call on the connection can fall into that transaction. It need not wait for a
            // WAL flush or a synchronous standby: losing a release in a crash or failover only
            // keeps the lease held until it expires, as if it never arrived, and every new
            // tenure commits durably after it in the WAL (so none survives without it). That
            // saves a handover one flush, and a synchronous standby's round trip.
            release: format!(
                "SELECT {s}.lease_release($1, $2), pg_catalog.set_config('synchronous_commit', 'off', true)"
            ),
            refresh_many: format!(
                "SELECT lease_name, acquired, fencing_token, expires_at FROM {s}.lease_refresh_many($1, $2, $3)"
            ),
            status: format!(
                "SELECT lease_name, holder, holder_role::text, fencing_token, expires_at, held, \
                 extract(epoch FROM expires_at - clock_timestamp())::float8 \
                 FROM {s}.lease_status WHERE $1::text IS NULL OR lease_name = $1 ORDER BY lease_name"
            ),
            evict: format!("SELECT {s}.lease_evict($1)"),
        }
    }
}

/// What `lease_acquire` and `lease_refresh` answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grant {
    pub acquired: bool,
    pub fencing_token: Option<i64>,
    pub expires_at: Option<SystemTime>,
    /// `lease_acquire` renewed a tenure already held under the caller's holder id before the
    /// call, instead of starting one. Always `false` for `lease_refresh`.
    pub continued: bool,
}

/// A [`Duration`] sent as a PostgreSQL `interval` (microseconds, no days or months).
#[derive(Debug)]
struct PgInterval(Duration);

impl ToSql for PgInterval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let micros = i64::try_from(self.0.as_micros())?;
        out.extend_from_slice(&micros.to_be_bytes()); // time
        out.extend_from_slice(&0i32.to_be_bytes()); // days
        out.extend_from_slice(&0i32.to_be_bytes()); // months
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    postgres_types::to_sql_checked!();
}

/// How the connection is opened: plain or TLS.
#[derive(Clone)]
pub(crate) enum Tls {
    None,
    #[cfg(feature = "tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// One open connection and its prepared statements.
pub(crate) struct DbConn {
    client: Client,
    sql: Arc<Sql>,
    statements: Option<[Statement; 3]>,
    closed: watch::Receiver<bool>,
    driver: JoinHandle<()>,
    discarded: AtomicBool,
}

impl Drop for DbConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl DbConn {
    /// Resolves when the connection has ended (the first sign of trouble for a holder).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only watches a flag.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        // An error means the driver is gone, which is also "closed".
        let _ = closed.wait_for(|c| *c).await;
    }

    fn is_usable(&self) -> bool {
        !*self.closed.borrow() && !self.discarded.load(Ordering::Relaxed) && !self.client.is_closed()
    }

    async fn grant(
        &self,
        call: GrantCall,
        holder: Uuid,
        duration: Duration,
        name: &str,
    ) -> Result<Grant, tokio_postgres::Error> {
        let interval = PgInterval(duration);
        let row = match &self.statements {
            Some(statements) => self.client.query_one(&statements[call as usize], &[&holder, &interval, &name]).await?,
            None => {
                let sql = match call {
                    GrantCall::Acquire => &self.sql.acquire,
                    GrantCall::Refresh => &self.sql.refresh,
                };
                let params: [(&(dyn ToSql + Sync), Type); 3] =
                    [(&holder, Type::UUID), (&interval, Type::INTERVAL), (&name, Type::TEXT)];
                let rows = self.client.query_typed(sql, &params).await?;
                rows.into_iter().next().expect("lease functions return one row")
            }
        };
        let (acquired, fencing_token): (bool, Option<i64>) = (row.get(0), row.get(1));
        let continued = call == GrantCall::Acquire
            && acquired
            && fencing_token.is_some()
            && row.get::<_, Option<i64>>(3) == fencing_token;
        Ok(Grant { acquired, fencing_token, expires_at: row.get(2), continued })
    }

    pub async fn acquire(&self, holder: Uuid, duration: Duration, name: &str) -> Result<Grant, tokio_postgres::Error> {
        self.grant(GrantCall::Acquire, holder, duration, name).await
    }

    pub async fn refresh(&self, holder: Uuid, duration: Duration, name: &str) -> Result<Grant, tokio_postgres::Error> {
        self.grant(GrantCall::Refresh, holder, duration, name).await
    }

    /// `lease_refresh_many` of `names`: each name with its grant, in order. Sent with its parameter
    /// types (no prepare): it runs once per refresh interval, and works behind a pooler.
    pub async fn refresh_many(
        &self,
        holder: Uuid,
        duration: Duration,
        names: &[String],
    ) -> Result<Vec<(String, Grant)>, tokio_postgres::Error> {
        let interval = PgInterval(duration);
        let params: [(&(dyn ToSql + Sync), Type); 3] =
            [(&holder, Type::UUID), (&interval, Type::INTERVAL), (&names, Type::TEXT_ARRAY)];
        let rows = self.client.query_typed(&self.sql.refresh_many, &params).await?;
        Ok(rows
            .iter()
            .map(|row| {
                let grant =
                    Grant { acquired: row.get(1), fencing_token: row.get(2), expires_at: row.get(3), continued: false };
                (row.get(0), grant)
            })
            .collect())
    }

    /// `lease_status` of `name`, or of every lease when `None`.
    pub async fn status(&self, name: Option<&str>) -> Result<Vec<Leader>, tokio_postgres::Error> {
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&name, Type::TEXT)];
        let rows = self.client.query_typed(&self.sql.status, &params).await?;
        Ok(rows
            .iter()
            .map(|row| Leader {
                lease_name: row.get(0),
                holder: row.get(1),
                holder_role: row.get(2),
                fencing_token: row.get(3),
                expires_at: row.get(4),
                held: row.get(5),
                expires_in: Duration::try_from_secs_f64(row.get::<_, f64>(6)).unwrap_or(Duration::ZERO),
            })
            .collect())
    }

    pub async fn evict(&self, name: &str) -> Result<bool, tokio_postgres::Error> {
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&name, Type::TEXT)];
        let rows = self.client.query_typed(&self.sql.evict, &params).await?;
        Ok(rows.first().is_some_and(|row| row.get(0)))
    }

    /// `LISTEN` for the events channel as well (see [`Session::watch_events`]).
    pub async fn listen_events(&self) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(&format!("LISTEN {EVENTS_CHANNEL}")).await
    }

    /// `lease_release`; see [`Sql::new`] for why it does not wait for a WAL flush.
    pub async fn release(&self, holder: Uuid, name: &str) -> Result<bool, tokio_postgres::Error> {
        let row = match &self.statements {
            Some(statements) => self.client.query_one(&statements[2], &[&holder, &name]).await?,
            None => {
                let params: [(&(dyn ToSql + Sync), Type); 2] = [(&holder, Type::UUID), (&name, Type::TEXT)];
                let rows = self.client.query_typed(&self.sql.release, &params).await?;
                rows.into_iter().next().expect("lease_release returns one row")
            }
        };
        Ok(row.get(0))
    }
}

/// Renewals waiting to go out together in one `lease_refresh_many` (see [`Session::renew`]).
#[derive(Default)]
struct Renewals {
    pending: Vec<PendingRenewal>,
    /// A task is sending a batch; when it is done, the next one takes what is pending.
    sending: bool,
}

struct PendingRenewal {
    name: String,
    reply: oneshot::Sender<BatchAnswer>,
}

/// What a batch says to each lease in it.
enum BatchAnswer {
    Grant(Grant),
    Failed(String),
    /// The batch as a whole failed with an error of the database (a function the installed
    /// version lacks, or an error one lease's refresh raises): renew this lease on its own.
    Alone,
}

/// Sets `sending` for as long as it lives; dropped (done, or cancelled), it clears it and wakes
/// the waiting renewals, one of which sends what is pending next.
struct SendingGuard<'a>(&'a Session);

impl<'a> SendingGuard<'a> {
    fn try_start(session: &'a Session) -> Option<SendingGuard<'a>> {
        let mut renewals = session.renewals.lock().expect("renewals lock");
        if renewals.sending || renewals.pending.is_empty() {
            return None;
        }
        renewals.sending = true;
        Some(SendingGuard(session))
    }
}

impl Drop for SendingGuard<'_> {
    fn drop(&mut self) {
        self.0.renewals.lock().expect("renewals lock").sending = false;
        self.0.renewals_done.notify_waiters();
    }
}

/// The dedicated connection of a client, reopened on demand.
pub(crate) struct Session {
    pg: tokio_postgres::Config,
    tls: Tls,
    config: LeaseConfig,
    sql: Arc<Sql>,
    current: Mutex<Option<Arc<DbConn>>>,
    releases: broadcast::Sender<String>,
    /// The `application_name` to look for in other sessions on the first open (see
    /// [`Session::warn_if_holder_id_in_use`]), until that check has run.
    duplicate_check: std::sync::Mutex<Option<String>>,
    /// The holder id of every lease of this session (`for_lease` shares it).
    holder: Uuid,
    renewals: std::sync::Mutex<Renewals>,
    renewals_done: Notify,
    /// The server has no `lease_refresh_many` (an older version): renew one by one.
    no_batch: AtomicBool,
    /// A watcher uses this session: every connection also LISTENs on [`EVENTS_CHANNEL`].
    watching: AtomicBool,
    /// The origin of the renewal schedule ([`Session::next_refresh`]).
    epoch: tokio::time::Instant,
}

impl Session {
    /// `holder_configured`: the holder id came from the configuration (a random one cannot be
    /// shared by accident).
    pub fn new(
        mut pg: tokio_postgres::Config,
        tls: Tls,
        config: LeaseConfig,
        holder: Uuid,
        holder_configured: bool,
    ) -> Session {
        let mut duplicate_check = None;
        if pg.get_application_name().is_none() {
            // Names the connection after a fingerprint of the holder id, never the id itself:
            // pg_stat_activity shows application_name to every role, and a role that learned a
            // holder id could take a free lease under it (the rightful holder would then get
            // 42501). The fingerprint still lets the first open see another process with the
            // same id.
            let name = format!("lease_lock {}", holder_fingerprint(holder));
            pg.application_name(&name);
            duplicate_check = holder_configured.then_some(name);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.call_timeout());
        }
        let (releases, _) = broadcast::channel(256);
        let sql = Arc::new(Sql::new(config.schema()));
        Session {
            pg,
            tls,
            config,
            sql,
            current: Mutex::new(None),
            releases,
            duplicate_check: std::sync::Mutex::new(duplicate_check),
            holder,
            renewals: std::sync::Mutex::new(Renewals::default()),
            renewals_done: Notify::new(),
            no_batch: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            epoch: tokio::time::Instant::now(),
        }
    }

    /// When to renew a lease whose last renewal (or acquire) was sent at `sent_at`: the first
    /// point after it on a grid of refresh intervals from this session's start. Never later
    /// than `sent_at` plus one interval, and every lease of the session lands on the same
    /// points, so their renewals go out together ([`Session::renew`]).
    pub fn next_refresh(&self, sent_at: tokio::time::Instant) -> tokio::time::Instant {
        aligned_after(self.epoch, self.config.refresh_interval(), sent_at)
    }

    /// Renews lease `name`, together with every other renewal of this session due at the same
    /// time: one `lease_refresh_many` for all of them (one round trip, one WAL flush), or the
    /// single `lease_refresh` when only one is due. Any waiting renewal may send the batch, so
    /// that none depends on another lease's task staying alive.
    ///
    /// # Cancel safety
    /// Cancelling it while it sends a batch fails that batch's other renewals (they retry);
    /// the lease itself is not affected.
    pub async fn renew(&self, name: &str, deadline: tokio::time::Instant) -> Result<Grant, String> {
        if self.no_batch.load(Ordering::Relaxed) {
            return self.renew_one(name, deadline).await;
        }
        let (reply, mut answer) = oneshot::channel();
        self.renewals.lock().expect("renewals lock").pending.push(PendingRenewal { name: name.to_string(), reply });
        loop {
            let done = self.renewals_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if let Some(sending) = SendingGuard::try_start(self) {
                // Let the other renewals due at this instant (woken by the same timer tick)
                // join the batch.
                tokio::task::yield_now().await;
                let batch = std::mem::take(&mut self.renewals.lock().expect("renewals lock").pending);
                self.send_batch(batch).await;
                // Done sending: renewals queued meanwhile are sent by one of their own tasks
                // (woken by the guard), while this one returns its own answer.
                drop(sending);
                match answer.try_recv() {
                    Ok(answer) => return self.answered(answer, name, deadline).await,
                    Err(oneshot::error::TryRecvError::Closed) => return Err("the renewal batch was cancelled".into()),
                    Err(oneshot::error::TryRecvError::Empty) => continue,
                }
            }
            tokio::select! {
                answer = &mut answer => return match answer {
                    Ok(answer) => self.answered(answer, name, deadline).await,
                    Err(_) => Err("the renewal batch was cancelled".into()),
                },
                _ = done => {}
            }
        }
    }

    async fn answered(&self, answer: BatchAnswer, name: &str, deadline: tokio::time::Instant) -> Result<Grant, String> {
        match answer {
            BatchAnswer::Grant(grant) => Ok(grant),
            BatchAnswer::Failed(e) => Err(e),
            BatchAnswer::Alone => self.renew_one(name, deadline).await,
        }
    }

    /// One `lease_refresh`, connecting first if needed, given up at `deadline`.
    async fn renew_one(&self, name: &str, deadline: tokio::time::Instant) -> Result<Grant, String> {
        let conn = self.conn().await.map_err(|e| e.to_string())?;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let call = conn.refresh(self.holder, self.config.lease_duration(), name);
        self.call(&conn, Some(remaining), call).await.map_err(|e| e.to_string())
    }

    /// Sends one batch of renewals and answers each.
    async fn send_batch(&self, mut batch: Vec<PendingRenewal>) {
        // Renewals whose lease task has gone (released, dropped, lost) need no answer.
        batch.retain(|p| !p.reply.is_closed());
        if batch.len() <= 1 {
            for p in batch {
                let _ = p.reply.send(BatchAnswer::Alone);
            }
            return;
        }
        let names: Vec<String> = batch.iter().map(|p| p.name.clone()).collect();
        let outcome = match self.conn().await {
            Ok(conn) => {
                let call = conn.refresh_many(self.holder, self.config.lease_duration(), &names);
                self.call(&conn, None, call).await
            }
            Err(e) => {
                let e = e.to_string();
                for p in batch {
                    let _ = p.reply.send(BatchAnswer::Failed(e.clone()));
                }
                return;
            }
        };
        match outcome {
            Ok(grants) if grants.len() == batch.len() && grants.iter().zip(&batch).all(|((n, _), p)| *n == p.name) => {
                debug!(leases = batch.len(), "renewed in one batch");
                for (p, (_, grant)) in batch.into_iter().zip(grants) {
                    let _ = p.reply.send(BatchAnswer::Grant(grant));
                }
            }
            Ok(grants) => {
                warn!(
                    asked = batch.len(),
                    answered = grants.len(),
                    "lease_refresh_many answered other rows than asked"
                );
                for p in batch {
                    let _ = p.reply.send(BatchAnswer::Alone);
                }
            }
            Err(CallError::Db(e)) if e.code().is_some() => {
                use tokio_postgres::error::SqlState;
                // Missing (an older version), or not granted to this role (an upgrade does not
                // grant new functions): it will not work next time either.
                if e.code() == Some(&SqlState::UNDEFINED_FUNCTION)
                    || e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
                {
                    debug!(error = %e, "lease_refresh_many cannot be called: renewing one lease per call");
                    self.no_batch.store(true, Ordering::Relaxed);
                } else {
                    debug!(error = %e, "lease_refresh_many failed: renewing one lease per call this time");
                }
                for p in batch {
                    let _ = p.reply.send(BatchAnswer::Alone);
                }
            }
            // The connection broke or the call timed out: every renewal retries.
            Err(e) => {
                let e = e.to_string();
                for p in batch {
                    let _ = p.reply.send(BatchAnswer::Failed(e.clone()));
                }
            }
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Makes every connection of this session LISTEN on [`EVENTS_CHANNEL`] too, from the
    /// next one opened (the caller LISTENs on the current one).
    pub fn watch_events(&self) {
        self.watching.store(true, Ordering::Relaxed);
    }

    /// One call on the session's connection (opened if needed), bounded by the call timeout;
    /// `error` wraps a database error in the variant that names the call.
    pub async fn query<T>(
        &self,
        call: impl AsyncFnOnce(&DbConn) -> Result<T, tokio_postgres::Error>,
        error: fn(tokio_postgres::Error) -> Error,
    ) -> Result<T, Error> {
        self.query_on(call, error).await.map(|(_, value)| value)
    }

    /// [`query`](Self::query), also returning the connection the call ran on (a watcher
    /// reads again when that one closes).
    pub async fn query_on<T>(
        &self,
        call: impl AsyncFnOnce(&DbConn) -> Result<T, tokio_postgres::Error>,
        error: fn(tokio_postgres::Error) -> Error,
    ) -> Result<(Arc<DbConn>, T), Error> {
        let conn = self.conn().await?;
        match self.call(&conn, None, call(&conn)).await {
            Ok(value) => Ok((conn, value)),
            Err(CallError::Db(e)) => Err(error(e)),
            Err(CallError::Timeout(d)) => Err(Error::CallTimeout(d)),
        }
    }

    /// The holder id of this session's leases.
    pub fn holder_id(&self) -> Uuid {
        self.holder
    }

    /// Names of released leases, from the notifications of every connection this session opens.
    pub fn subscribe_releases(&self) -> broadcast::Receiver<String> {
        self.releases.subscribe()
    }

    /// The open connection, or a new one. One attempt: the caller decides about back-off.
    ///
    /// Takes at most the call timeout, waiting for another task's open included: the whole
    /// open (TCP connect, TLS, startup exchange, session settings, LISTEN, prepares) counts as
    /// one call. tokio-postgres's `connect_timeout` covers only the TCP connect, so without this
    /// a server that accepts connections but never answers (a hung postmaster, a proxy with no
    /// backend) would hold every operation forever.
    ///
    /// # Errors
    /// [`Error::CallTimeout`] when that time is up; [`Error::Connect`] when opening failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: a connection being opened when cancelled (or timed out) is dropped, its
    /// driver aborted and its socket closed; nothing is stored.
    pub async fn conn(&self) -> Result<Arc<DbConn>, Error> {
        let limit = self.config.call_timeout();
        let get = async {
            let mut current = self.current.lock().await;
            if let Some(conn) = current.as_ref().filter(|c| c.is_usable()) {
                return Ok(conn.clone());
            }
            *current = None;
            let conn = Arc::new(self.open().await?);
            *current = Some(conn.clone());
            Ok(conn)
        };
        tokio::time::timeout(limit, get).await.map_err(|_| Error::CallTimeout(limit))?
    }

    /// The open connection, if there is one and nobody is opening one right now. Never waits.
    pub fn current(&self) -> Option<Arc<DbConn>> {
        let current = self.current.try_lock().ok()?;
        current.as_ref().filter(|c| c.is_usable()).cloned()
    }

    /// Aborts `conn` so no later call waits behind whatever is stuck on it.
    pub fn discard(&self, conn: &DbConn) {
        conn.discarded.store(true, Ordering::Relaxed);
        conn.driver.abort();
    }

    /// Runs one call on `conn` with the call timeout (or `limit`, if shorter), discarding the
    /// connection when it times out or turns out closed.
    ///
    /// # Cancel safety
    /// Cancelling it cancels the wait, not the call: a request already sent still runs on the
    /// server, in order with later requests on the same connection.
    pub async fn call<T>(
        &self,
        conn: &DbConn,
        limit: Option<Duration>,
        call: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, CallError> {
        let timeout = limit.map_or(self.config.call_timeout(), |l| l.min(self.config.call_timeout()));
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_closed() || e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) {
                    // Closed, or we reached a read-only server (a standby, or an old primary
                    // after failover): not connected as far as leases go.
                    self.discard(conn);
                }
                Err(CallError::Db(e))
            }
            Err(_) => {
                self.discard(conn);
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// Opens and prepares a connection. No time limit of its own: [`Session::conn`] bounds it.
    async fn open(&self) -> Result<DbConn, Error> {
        let started = Instant::now();
        let (closed_tx, closed) = watch::channel(false);
        let (client, driver) = match &self.tls {
            Tls::None => {
                let (client, connection) = self.pg.connect(tokio_postgres::NoTls).await.map_err(Error::Connect)?;
                (client, spawn_driver(connection, self.releases.clone(), closed_tx))
            }
            #[cfg(feature = "tls")]
            Tls::Rustls(tls) => {
                let (client, connection) = self.pg.connect(tls.clone()).await.map_err(Error::Connect)?;
                (client, spawn_driver(connection, self.releases.clone(), closed_tx))
            }
        };
        let mut conn = DbConn {
            client,
            sql: self.sql.clone(),
            statements: None,
            closed,
            driver,
            discarded: AtomicBool::new(false),
        };
        let setup = async {
            let mut batch = String::new();
            if self.config.session_settings() {
                // Safety timeouts for this connection only: nothing else runs on it. The server
                // gives up on a lock before the client gives up on the call, so a lock conflict
                // comes back as an error (55P03) on a connection that stays usable.
                let call = self.config.call_timeout().as_millis().max(2);
                batch.push_str(&format!(
                    "SET statement_timeout = {call}; SET lock_timeout = {}; \
                     SET idle_in_transaction_session_timeout = {};",
                    call / 2,
                    self.config.lease_duration().as_millis().max(1)
                ));
            }
            if self.config.listen() {
                batch.push_str(&format!("LISTEN {RELEASE_CHANNEL};"));
                if self.watching.load(Ordering::Relaxed) {
                    batch.push_str(&format!("LISTEN {EVENTS_CHANNEL};"));
                }
            }
            if !batch.is_empty() {
                conn.client.batch_execute(&batch).await?;
            }
            if self.config.session_settings() {
                // Named prepared statements need a session of our own; behind a transaction
                // pooler (session_settings off) each call is parsed with its types instead.
                let sql = &self.sql;
                let (a, r, l) = tokio::try_join!(
                    conn.client.prepare_typed(&sql.acquire, &[Type::UUID, Type::INTERVAL, Type::TEXT]),
                    conn.client.prepare_typed(&sql.refresh, &[Type::UUID, Type::INTERVAL, Type::TEXT]),
                    conn.client.prepare_typed(&sql.release, &[Type::UUID, Type::TEXT]),
                )?;
                conn.statements = Some([a, r, l]);
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        setup.await.map_err(Error::Connect)?;
        self.warn_if_holder_id_in_use(&conn.client).await;
        debug!(elapsed_ms = started.elapsed().as_millis() as u64, "connected");
        Ok(conn)
    }

    /// On the first open with a configured holder id, warns if another session of this
    /// database carries the same `application_name` (a fingerprint of the holder id).
    ///
    /// Why this check: `pg_stat_activity` shows every session's `application_name` to every
    /// role, so one query, once per client, sees a second process with our id before either
    /// touches a lease, even when they never compete for the same lease at the same moment. It
    /// is only a warning because it can be wrong both ways: the backend of a crashed
    /// predecessor lingers until the server notices its socket is gone (a false alarm, and the
    /// reason to check only the first open: after a reconnect our own old backend may linger),
    /// and a process that sets its own `application_name`, or connects through a pooler or to
    /// another database, is not seen. The certain signal is an acquire that renews a tenure
    /// this client never started: that is [`Error::DuplicateHolderId`].
    async fn warn_if_holder_id_in_use(&self, client: &Client) {
        let Some(name) = self.duplicate_check.lock().expect("duplicate check lock").clone() else {
            return;
        };
        let sql = "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                   WHERE application_name = $1 AND pid <> pg_catalog.pg_backend_pid() \
                   AND datname = pg_catalog.current_database()";
        match client.query_typed(sql, &[(&name, Type::TEXT)]).await {
            Ok(rows) => {
                let others: i64 = rows.first().map_or(0, |r| r.get(0));
                if others > 0 {
                    warn!(
                        application_name = %name,
                        sessions = others,
                        "another session uses this client's holder id: holder ids must be unique \
                         per process, or both processes hold the lease at once (ignore this if \
                         it is the lingering session of a crashed predecessor)"
                    );
                }
            }
            // Not worth failing the connection for: the acquire check still stands.
            Err(e) => debug!(error = %e, "could not look for other sessions with this holder id"),
        }
        *self.duplicate_check.lock().expect("duplicate check lock") = None;
    }
}

/// Why one call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    Db(tokio_postgres::Error),
    Timeout(Duration),
}

impl CallError {
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Db(e) => crate::error::is_transient(e),
            CallError::Timeout(_) => true,
        }
    }

    /// Whether the call may have run on the server though we have no answer: it timed out or
    /// the connection broke. (A database error means the statement failed and was rolled back.)
    pub fn answer_lost(&self) -> bool {
        match self {
            CallError::Db(e) => e.code().is_none(),
            CallError::Timeout(_) => true,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Db(e) => match e.as_db_error() {
                Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
                None => write!(f, "{e}"),
            },
            CallError::Timeout(t) => write!(f, "no answer within {t:?}"),
        }
    }
}

/// Drives a connection: forwards release and event notifications, then flags the end.
///
/// Notifications are forwarded as hints only (see [`RELEASE_CHANNEL`]): they wake waiters to
/// call `lease_acquire` again and watchers to read `lease_status` again, and nothing else reads
/// them.
fn spawn_driver<S, T>(
    mut connection: Connection<S, T>,
    releases: broadcast::Sender<String>,
    closed: watch::Sender<bool>,
) -> JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let ended = poll_fn(|cx| loop {
            match connection.poll_message(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => {
                    // A release's payload is the lease name, which wakes its waiters; an event's is a
                    // JSON object, which matches no lease name and only wakes watchers.
                    if n.channel() == RELEASE_CHANNEL || n.channel() == EVENTS_CHANNEL {
                        // No receivers is fine: nobody is waiting.
                        let _ = releases.send(n.payload().to_owned());
                    }
                }
                Poll::Ready(Some(Ok(_notice))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
        match ended {
            Ok(()) => debug!("connection closed"),
            Err(e) => warn!(error = %e, "connection lost"),
        }
        let _ = closed.send(true);
    })
}

/// A 64-bit FNV-1a fingerprint of a holder id, in hex: the same in every process and Rust
/// version (unlike `DefaultHasher`), and with 122 random bits in a v4 id, no way back to the id.
fn holder_fingerprint(holder: Uuid) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in holder.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::holder_fingerprint;
    use uuid::Uuid;

    #[test]
    fn the_application_name_fingerprint_is_stable_and_hides_the_holder_id() {
        let id = Uuid::parse_str("6f1c2a9e-0000-4000-8000-00000000abcd").unwrap();
        let fingerprint = holder_fingerprint(id);
        // Fixed, so that processes built with any Rust version agree on it.
        assert_eq!(fingerprint, holder_fingerprint(id));
        assert_eq!(fingerprint.len(), 16);
        assert!(!fingerprint.contains("6f1c2a9e") && !fingerprint.contains("abcd"), "{fingerprint}");
        assert_ne!(fingerprint, holder_fingerprint(Uuid::new_v4()));
    }
}

/// The first point after `t` of the grid `epoch + k * interval`.
fn aligned_after(epoch: tokio::time::Instant, interval: Duration, t: tokio::time::Instant) -> tokio::time::Instant {
    let interval_ns = interval.as_nanos().max(1);
    let steps = t.saturating_duration_since(epoch).as_nanos() / interval_ns + 1;
    let offset = u64::try_from(steps.saturating_mul(interval_ns)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

#[cfg(test)]
mod schedule_tests {
    use super::aligned_after;
    use std::time::Duration;

    #[test]
    fn renewals_land_on_the_grid_never_later_than_one_interval() {
        let epoch = tokio::time::Instant::now();
        let i = Duration::from_millis(1000);
        for (after_ms, expect_ms) in [(0, 1000), (1, 1000), (999, 1000), (1000, 2000), (1500, 2000), (4321, 5000)] {
            let t = epoch + Duration::from_millis(after_ms);
            let next = aligned_after(epoch, i, t);
            assert_eq!(next, epoch + Duration::from_millis(expect_ms), "after {after_ms} ms");
            assert!(next > t && next <= t + i);
        }
    }
}
