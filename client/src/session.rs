//! The dedicated connection: connecting, reconnecting, the three lease calls, notifications.
//!
//! One [`Session`] serves every lease of a [`LeaseClient`](crate::LeaseClient) (and of the clients
//! made from it with `for_lease`): renewals of many leases pipeline over one connection. It is
//! never used for anything else. A call that times out aborts the connection (a stalled socket
//! would hold up every later call), and the next call reconnects.

use crate::config::LeaseConfig;
use crate::error::Error;
use bytes::BytesMut;
use futures_util::future::poll_fn;
use postgres_types::{IsNull, ToSql, Type};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, watch, Mutex};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Connection, Statement};
use tracing::{debug, warn};
use uuid::Uuid;

/// The channel `lease_release` and `lease_evict` notify, with the lease name as payload.
pub const RELEASE_CHANNEL: &str = "lease_lock_released";

const ACQUIRE_SQL: &str = "SELECT acquired, fencing_token, expires_at FROM lease_acquire($1, $2, $3)";
const REFRESH_SQL: &str = "SELECT acquired, fencing_token, expires_at FROM lease_refresh($1, $2, $3)";
const RELEASE_SQL: &str = "SELECT lease_release($1, $2)";

/// What `lease_acquire` and `lease_refresh` answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grant {
    pub acquired: bool,
    pub fencing_token: Option<i64>,
    pub expires_at: Option<SystemTime>,
}

/// A [`Duration`] sent as a PostgreSQL `interval` (microseconds, no days or months).
#[derive(Debug)]
struct PgInterval(Duration);

impl ToSql for PgInterval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
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
        which: usize,
        sql: &str,
        holder: Uuid,
        duration: Duration,
        name: &str,
    ) -> Result<Grant, tokio_postgres::Error> {
        let interval = PgInterval(duration);
        let row = match &self.statements {
            Some(statements) => {
                self.client.query_one(&statements[which], &[&holder, &interval, &name]).await?
            }
            None => {
                let params: [(&(dyn ToSql + Sync), Type); 3] =
                    [(&holder, Type::UUID), (&interval, Type::INTERVAL), (&name, Type::TEXT)];
                let rows = self.client.query_typed(sql, &params).await?;
                rows.into_iter().next().expect("lease functions return one row")
            }
        };
        Ok(Grant { acquired: row.get(0), fencing_token: row.get(1), expires_at: row.get(2) })
    }

    pub async fn acquire(
        &self,
        holder: Uuid,
        duration: Duration,
        name: &str,
    ) -> Result<Grant, tokio_postgres::Error> {
        self.grant(0, ACQUIRE_SQL, holder, duration, name).await
    }

    pub async fn refresh(
        &self,
        holder: Uuid,
        duration: Duration,
        name: &str,
    ) -> Result<Grant, tokio_postgres::Error> {
        self.grant(1, REFRESH_SQL, holder, duration, name).await
    }

    pub async fn release(&self, holder: Uuid, name: &str) -> Result<bool, tokio_postgres::Error> {
        let row = match &self.statements {
            Some(statements) => self.client.query_one(&statements[2], &[&holder, &name]).await?,
            None => {
                let params: [(&(dyn ToSql + Sync), Type); 2] =
                    [(&holder, Type::UUID), (&name, Type::TEXT)];
                let rows = self.client.query_typed(RELEASE_SQL, &params).await?;
                rows.into_iter().next().expect("lease_release returns one row")
            }
        };
        Ok(row.get(0))
    }
}

/// The dedicated connection of a client, reopened on demand.
pub(crate) struct Session {
    pg: tokio_postgres::Config,
    tls: Tls,
    config: LeaseConfig,
    current: Mutex<Option<Arc<DbConn>>>,
    releases: broadcast::Sender<String>,
}

impl Session {
    pub fn new(mut pg: tokio_postgres::Config, tls: Tls, config: LeaseConfig) -> Session {
        if pg.get_application_name().is_none() {
            pg.application_name("lease_lock");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.call_timeout());
        }
        let (releases, _) = broadcast::channel(256);
        Session { pg, tls, config, current: Mutex::new(None), releases }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Names of released leases, from the notifications of every connection this session opens.
    pub fn subscribe_releases(&self) -> broadcast::Receiver<String> {
        self.releases.subscribe()
    }

    /// The open connection, or a new one. One attempt: the caller decides about back-off.
    ///
    /// # Cancel safety
    /// Cancel-safe: a connection being opened when cancelled is dropped, nothing is stored.
    pub async fn conn(&self) -> Result<Arc<DbConn>, Error> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref().filter(|c| c.is_usable()) {
            return Ok(conn.clone());
        }
        *current = None;
        let conn = Arc::new(self.open().await?);
        *current = Some(conn.clone());
        Ok(conn)
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

    async fn open(&self) -> Result<DbConn, Error> {
        let started = Instant::now();
        let (closed_tx, closed) = watch::channel(false);
        let (client, driver) = match &self.tls {
            Tls::None => {
                let (client, connection) =
                    self.pg.connect(tokio_postgres::NoTls).await.map_err(Error::Connect)?;
                (client, spawn_driver(connection, self.releases.clone(), closed_tx))
            }
            #[cfg(feature = "tls")]
            Tls::Rustls(tls) => {
                let (client, connection) = self.pg.connect(tls.clone()).await.map_err(Error::Connect)?;
                (client, spawn_driver(connection, self.releases.clone(), closed_tx))
            }
        };
        let mut conn = DbConn { client, statements: None, closed, driver, discarded: AtomicBool::new(false) };
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
            }
            if !batch.is_empty() {
                conn.client.batch_execute(&batch).await?;
            }
            if self.config.session_settings() {
                // Named prepared statements need a session of our own; behind a transaction
                // pooler (session_settings off) each call is parsed with its types instead.
                let (a, r, l) = tokio::try_join!(
                    conn.client.prepare_typed(ACQUIRE_SQL, &[Type::UUID, Type::INTERVAL, Type::TEXT]),
                    conn.client.prepare_typed(REFRESH_SQL, &[Type::UUID, Type::INTERVAL, Type::TEXT]),
                    conn.client.prepare_typed(RELEASE_SQL, &[Type::UUID, Type::TEXT]),
                )?;
                conn.statements = Some([a, r, l]);
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        match tokio::time::timeout(self.config.call_timeout(), setup).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Err(_) => return Err(Error::CallTimeout(self.config.call_timeout())),
        }
        debug!(elapsed_ms = started.elapsed().as_millis() as u64, "connected");
        Ok(conn)
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

/// Drives a connection: forwards release notifications, then flags the end.
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
                    if n.channel() == RELEASE_CHANNEL {
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
