//! [`LeaseClient`]: waits for a lease, takes it, and competes again after losing it.

use crate::backoff::{jitter_up, Backoff};
use crate::claims::{Claims, TaskClaim};
use crate::config::{validate_lease_name, LeaseConfig};
use crate::error::Error;
use crate::lease::{Lease, LeaseInfo, Tenure};
use crate::session::{CallError, DbConn, Grant, Leader, Session, Tls};
use crate::watch::LeaderWatch;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

/// Takes and holds leases of one holder id over one dedicated connection.
///
/// Cheap to clone; clones and [`for_lease`](LeaseClient::for_lease) clients share the holder id
/// and the connection. The connection is opened on first use and reopened when lost.
///
/// Every operation ends within a bound that does not depend on the server answering: opening
/// the connection (TCP, TLS, startup, LISTEN, prepares) counts as one call and takes at most the
/// call timeout, like each lease call.
#[derive(Clone, Debug)]
pub struct LeaseClient {
    shared: Arc<Shared>,
    lease_name: Arc<str>,
}

struct Shared {
    session: Arc<Session>,
    holder_id: Uuid,
    claims: Arc<Claims>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("holder_id", &self.holder_id).finish_non_exhaustive()
    }
}

/// Builds a [`LeaseClient`]; every setting has a default (see [`LeaseConfig`]).
#[derive(Debug)]
#[must_use]
pub struct LeaseClientBuilder {
    pg: Result<tokio_postgres::Config, Error>,
    tls_params: crate::conninfo::TlsParams,
    config: LeaseConfig,
    #[cfg(feature = "tls")]
    tls: Option<rustls::ClientConfig>,
}

impl LeaseClient {
    /// A builder for a connection string (`key=value` or `postgresql://` URL). A string that
    /// does not parse is reported by [`LeaseClientBuilder::build`].
    ///
    /// libpq's TLS parameters are accepted in both forms: `sslmode` (`disable`, `allow`,
    /// `prefer`, `require`, `verify-ca`, `verify-full`), `sslrootcert`, `sslcert` and `sslkey`
    /// (TLS needs the `tls` feature). They mean what they mean to libpq; see [`crate#tls`].
    pub fn builder(conninfo: &str) -> LeaseClientBuilder {
        match crate::conninfo::split(conninfo) {
            Ok((rest, tls)) => {
                let pg = rest.parse::<tokio_postgres::Config>().map_err(|e| Error::Config(config_message(&e)));
                LeaseClientBuilder { tls_params: tls, ..LeaseClientBuilder::with_pg(pg) }
            }
            Err(e) => LeaseClientBuilder::with_pg(Err(e)),
        }
    }

    /// A builder for a [`tokio_postgres::Config`] (TLS: its `ssl_mode` and
    /// `LeaseClientBuilder::tls` with the `tls` feature).
    pub fn builder_from_config(pg: tokio_postgres::Config) -> LeaseClientBuilder {
        LeaseClientBuilder::with_pg(Ok(pg))
    }

    /// A client for the lease `lease_name` that shares this client's holder id and connection.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or overlong name.
    pub fn for_lease(&self, lease_name: &str) -> Result<LeaseClient, Error> {
        validate_lease_name(lease_name)?;
        Ok(LeaseClient { shared: self.shared.clone(), lease_name: lease_name.into() })
    }

    /// This client's holder id.
    pub fn holder_id(&self) -> Uuid {
        self.shared.holder_id
    }

    /// The lease this client takes.
    pub fn lease_name(&self) -> &str {
        &self.lease_name
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        self.shared.session.config()
    }

    /// Who holds this client's lease now, as `lease_status` says (`None` for a name never
    /// used). One call on the client's connection.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::Status`] or [`Error::CallTimeout`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn leader(&self) -> Result<Option<Leader>, Error> {
        let name = self.lease_name.clone();
        let rows = self.shared.session.query(async |conn| conn.status(Some(&name)).await, Error::Status).await?;
        Ok(rows.into_iter().next())
    }

    /// Every lease of the database, by name, as `lease_status` says. One call.
    ///
    /// # Errors
    /// As [`LeaseClient::leader`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn leaders(&self) -> Result<Vec<Leader>, Error> {
        self.shared.session.query(async |conn| conn.status(None).await, Error::Status).await
    }

    /// Watches who holds this client's lease: every change of holder, tenure or held-ness,
    /// starting with the current state, as it happens (client-go's `OnNewLeader`, etcd's
    /// `Observe`). It listens for the extension's `lease_lock_events` on the client's
    /// connection and reads `lease_status` on each notification (a hint only: anyone may
    /// send one), at the lease's expiry (which sends none), and after every reconnect
    /// (notifications sent while disconnected are lost). Needs
    /// [`listen`](LeaseClientBuilder::listen) (the default); without it, it reads at each
    /// expiry and every ten refresh intervals.
    ///
    /// The watcher runs in a task until the returned [`LeaderWatch`] is dropped.
    pub fn watch(&self) -> LeaderWatch {
        LeaderWatch::start(self.shared.session.clone(), self.lease_name.clone())
    }

    /// Releases this client's lease as its holder id without a [`Lease`] handle: for an
    /// administrator or a script that knows the holder id of a tenure (set with
    /// [`holder_id`](LeaseClientBuilder::holder_id)) and must end it, for example after the
    /// process that held it was stopped. `false` if that id did not hold the unexpired lease.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::Release`] (42501: the holder id belongs to another role's
    /// tenure) or [`Error::CallTimeout`].
    ///
    /// # Cancel safety
    /// The outcome is unknown if cancelled after the call was sent.
    pub async fn release_as_holder(&self) -> Result<bool, Error> {
        let (holder, name) = (self.shared.holder_id, self.lease_name.clone());
        self.shared.session.query(async |conn| conn.release(holder, &name).await, Error::Release).await
    }

    /// `lease_evict`: ends the current tenure of this client's lease whoever holds it (needs
    /// the privilege to evict, an administrator's). `false` if it was not held.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::Evict`] (42501 without the privilege) or
    /// [`Error::CallTimeout`].
    ///
    /// # Cancel safety
    /// The outcome is unknown if cancelled after the call was sent.
    pub async fn evict(&self) -> Result<bool, Error> {
        let name = self.lease_name.clone();
        self.shared.session.query(async |conn| conn.evict(&name).await, Error::Evict).await
    }

    /// One attempt: the lease if it was free (or already ours), `None` if someone else holds it.
    ///
    /// Ends within about twice the call timeout (one to get a connection, one for the call),
    /// plus, if an earlier handle of this lease from this client is still releasing, that
    /// release (bounded the same way).
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::Acquire`] or [`Error::CallTimeout`] for this one attempt
    /// (a server that accepts connections but never answers is a `CallTimeout`),
    /// [`Error::InUse`] if this client already holds or is acquiring this lease, and
    /// [`Error::DuplicateHolderId`] if the database renewed a tenure held under this client's
    /// holder id that this client never started: another process uses the same holder id. The
    /// lease is then not reported held, and not released either (that would end the other
    /// process's tenure).
    ///
    /// # Cancel safety
    /// Cancel-safe: if cancelled after the call was sent, a background release undoes a tenure
    /// the call may have started (sent on the same connection, so it runs after the acquire).
    pub async fn try_acquire(&self) -> Result<Option<Lease>, Error> {
        let claim = self.shared.claims.claim_handle(&self.lease_name).await?;
        match self.attempt().await? {
            Attempt::Held(tenure) => Ok(Some(Lease::start(tenure, claim))),
            Attempt::Refused(_) => Ok(None),
            Attempt::Duplicate { fencing_token } => {
                Err(Error::DuplicateHolderId { lease_name: self.lease_name.to_string(), fencing_token })
            }
        }
    }

    /// Waits until the lease is held and returns it.
    ///
    /// While another holder has it, sleeps until its reported expiry (plus jitter) or until a
    /// release notification for this lease arrives, whichever is first. Connection failures
    /// and timeouts are retried with capped exponential back-off and jitter; only errors that
    /// retrying cannot fix are returned.
    ///
    /// A release notification is only a hint to check again: anyone who can connect may send
    /// one ([`RELEASE_CHANNEL`](crate::RELEASE_CHANNEL)). It makes the waiter call
    /// `lease_acquire` again (at most once per quarter refresh interval, so a flood of them
    /// costs the server little), and only that call's answer grants the lease.
    ///
    /// If the database renews a tenure held under this client's holder id that this client
    /// never started (see [`Error::DuplicateHolderId`]), `acquire` logs a warning and waits as
    /// if another holder had the lease, for one lease duration or a release: the other process
    /// may be a crashed predecessor with the same id, whose tenure then expires.
    ///
    /// # Errors
    /// [`Error::Acquire`] or [`Error::Connect`] for a permanent failure (extension or schema
    /// missing, permission denied, authentication), [`Error::InUse`] as for `try_acquire`.
    ///
    /// # Cancel safety
    /// Cancel-safe: no lease is left behind (see [`try_acquire`](LeaseClient::try_acquire)).
    /// Wrap it in `tokio::time::timeout` or use [`acquire_timeout`](LeaseClient::acquire_timeout).
    pub async fn acquire(&self) -> Result<Lease, Error> {
        let claim = self.shared.claims.claim_handle(&self.lease_name).await?;
        let config = self.config();
        let mut backoff = Backoff::new(Duration::from_millis(50), config.max_backoff());
        // Subscribe before the first attempt so a release right after it is not missed.
        let mut releases = self.shared.session.subscribe_releases();
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            let wait = match self.attempt().await {
                Ok(Attempt::Held(tenure)) => {
                    info!(lease = %self.lease_name, attempts, token = tenure.fencing_token, "acquired");
                    return Ok(Lease::start(tenure, claim));
                }
                Ok(Attempt::Refused(expires_at)) => {
                    backoff.reset();
                    self.wait_for_expiry(expires_at)
                }
                Ok(Attempt::Duplicate { fencing_token }) => {
                    backoff.reset();
                    warn!(
                        lease = %self.lease_name,
                        holder = %self.holder_id(),
                        fencing_token,
                        "the lease is held under this client's holder id by a tenure this client \
                         never started: another process uses the same holder id (holder ids must \
                         be unique per process); waiting as for another holder"
                    );
                    // The call just renewed that tenure: it runs until one lease duration after
                    // the server executed the call, which was before we got its answer. Waiting
                    // that long on our own clock is past its expiry whatever the clock skew.
                    jitter_up(config.lease_duration())
                }
                Err(e) if e.is_transient() => {
                    let wait = backoff.next();
                    warn!(lease = %self.lease_name, error = %e, retry_in_ms = wait.as_millis() as u64, "acquire failed; retrying");
                    wait
                }
                Err(e) => return Err(e.into_acquire_error()),
            };
            if attempts.is_power_of_two() {
                debug!(lease = %self.lease_name, attempts, wait_ms = wait.as_millis() as u64, "lease held by another holder; waiting");
            }
            self.sleep_or_wake(wait, &mut releases).await;
        }
    }

    /// [`acquire`](LeaseClient::acquire) that gives up after `timeout`.
    ///
    /// # Errors
    /// [`Error::AcquireTimeout`] when the time is up, or what `acquire` returns.
    ///
    /// # Cancel safety
    /// Cancel-safe, as `acquire`.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Lease, Error> {
        tokio::time::timeout(timeout, self.acquire()).await.map_err(|_| Error::AcquireTimeout(timeout))?
    }

    /// The elector loop: competes for the lease, runs `work` while holding it, and competes
    /// again whenever the lease is lost, until `shutdown` resolves or `work` finishes.
    ///
    /// `work` is called anew for each tenure with a [`LeaseInfo`] (fencing token, state); its
    /// future is dropped (cancelled) the moment the lease is lost. On shutdown, or when `work`
    /// returns, the lease is released.
    ///
    /// After `shutdown` resolves it returns within the bound of [`Lease::release`] (about twice
    /// the call timeout), even when the server no longer answers; while competing, at once.
    ///
    /// # Errors
    /// Permanent errors of [`acquire`](LeaseClient::acquire); a failed release at the end.
    ///
    /// # Cancel safety
    /// Cancelling it drops the current lease, which releases it in the background.
    pub async fn run_elector<F, Fut>(&self, mut work: F, shutdown: impl Future<Output = ()>) -> Result<(), Error>
    where
        F: FnMut(LeaseInfo) -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let span = tracing::info_span!("elector", lease = %self.lease_name, holder = %self.holder_id());
        async move {
            loop {
                let lease = tokio::select! {
                    biased;
                    _ = &mut shutdown => return Ok(()),
                    lease = self.acquire() => lease?,
                };
                info!(token = lease.fencing_token(), "leading");
                let outcome = tokio::select! {
                    biased;
                    _ = &mut shutdown => None,
                    outcome = lease.run_while_held(work(lease.info())) => Some(outcome),
                };
                match outcome {
                    None | Some(Ok(())) => {
                        lease.release().await?;
                        return Ok(());
                    }
                    Some(Err(reason)) => {
                        warn!(%reason, "leadership lost; competing again");
                        drop(lease);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One `lease_acquire` call (two when the first continued a tenure whose release the
    /// server lost).
    async fn attempt(&self) -> Result<Attempt, AttemptError> {
        let session = &self.shared.session;
        let claims = &self.shared.claims;
        let mut lost_release_undone = false;
        loop {
            let conn = session.conn().await.map_err(AttemptError::Connect)?;
            let (sent_at, sent_boot) = (tokio::time::Instant::now(), crate::lease::boottime_ns());
            // Armed while the call is in flight: if this future is dropped then, the acquire may
            // still run on the server, and a release queued behind it on the same connection
            // undoes it.
            let undo = UndoOnDrop {
                session: session.clone(),
                conn: Some(conn.clone()),
                claims: claims.clone(),
                claim: Some(claims.claim_task(&self.lease_name)),
                holder: self.holder_id(),
                name: self.lease_name.clone(),
            };
            let call = conn.acquire(self.holder_id(), self.config().lease_duration(), &self.lease_name);
            let grant = session.call(&conn, None, call).await;
            undo.disarm();
            let grant = match grant {
                Ok(grant) => grant,
                Err(e) => {
                    if e.answer_lost() {
                        // The call may have run and started a tenure whose token we never saw.
                        claims.tenure_unknown(&self.lease_name);
                    }
                    return Err(AttemptError::Call(e));
                }
            };
            match grant {
                Grant { acquired: true, fencing_token: Some(token), expires_at: Some(expires_at), continued } => {
                    if continued && !lost_release_undone && claims.is_lost_release(&self.lease_name, token) {
                        // We released this tenure, and the server lost the release (it crashed before
                        // the release reached disk) and gave it back. Release it again and start a new
                        // tenure, so that no write of the released one passes the fence in the new one.
                        warn!(lease = %self.lease_name, token, "the server lost our release of this tenure; releasing it again");
                        let released = session
                            .call(&conn, None, conn.release(self.holder_id(), &self.lease_name))
                            .await
                            .map_err(AttemptError::Call)?;
                        // The tenure now lives a lease duration from this acquire: remember it
                        // that long.
                        claims.release_answered(&self.lease_name, released, self.config().lease_duration());
                        lost_release_undone = true;
                        continue;
                    }
                    if continued && !claims.is_own_tenure(&self.lease_name, token) {
                        // A renewal of a tenure this client never started (or has seen end): some
                        // other process presents our holder id. Not ours to use, nor to release.
                        return Ok(Attempt::Duplicate { fencing_token: token });
                    }
                    claims.tenure_started(&self.lease_name, token);
                    return Ok(Attempt::Held(Tenure {
                        session: session.clone(),
                        lease_name: self.lease_name.clone(),
                        holder_id: self.holder_id(),
                        fencing_token: token,
                        expires_at,
                        confirmed_at: sent_at,
                        confirmed_boot_ns: sent_boot,
                    }));
                }
                grant => {
                    if !grant.acquired {
                        // Refused: no tenure of ours under this id on the server now.
                        claims.tenure_ended(&self.lease_name);
                    }
                    return Ok(Attempt::Refused(grant.expires_at));
                }
            }
        }
    }

    /// The shortest pause between two attempts of a waiter.
    fn min_wait(&self) -> Duration {
        (self.config().refresh_interval() / 4).max(Duration::from_millis(10))
    }

    /// How long to sleep after a refusal: until the holder's expiry on the database clock,
    /// estimated with ours (skew only moves when we retry, never safety), at least a short
    /// pause, plus jitter; at most one lease duration when a release notification can wake us
    /// earlier, and one refresh interval when it cannot (LISTEN off), so that a release is seen
    /// within about one refresh interval.
    fn wait_for_expiry(&self, expires_at: Option<SystemTime>) -> Duration {
        let config = self.config();
        let floor = self.min_wait();
        let cap = if config.listen() { config.lease_duration() } else { config.refresh_interval() };
        let until_expiry = expires_at.and_then(|e| e.duration_since(SystemTime::now()).ok()).unwrap_or(Duration::ZERO);
        jitter_up(until_expiry.clamp(floor, cap.max(floor)))
    }

    /// Sleeps for `wait`, or less if this lease is released (notification) or the connection
    /// drops (reconnect and listen again at once).
    ///
    /// A notification only ends the sleep, so that the caller asks the database again: it is a
    /// hint, never a grant (anyone may send one). Woken by one, the waiter still pauses at least
    /// [`min_wait`](Self::min_wait) after its last attempt, so a flood of notifications cannot
    /// make it call the database more often than that.
    async fn sleep_or_wake(&self, wait: Duration, releases: &mut broadcast::Receiver<String>) {
        let not_before = tokio::time::Instant::now() + self.min_wait().min(wait);
        let conn = self.shared.session.current();
        let closed = async {
            match &conn {
                Some(c) => c.closed().await,
                None => std::future::pending().await,
            }
        };
        let released = async {
            loop {
                match releases.recv().await {
                    Ok(name) if *name == *self.lease_name => break,
                    Ok(_) => continue,
                    // Missed some: one of them may have been ours.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
            tokio::time::sleep_until(not_before).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = released => debug!(lease = %self.lease_name, "woken by release notification"),
            _ = closed => debug!("connection closed while waiting"),
        }
    }
}

enum Attempt {
    Held(Tenure),
    /// Held by someone else (or busy); the expiry the database reported.
    Refused(Option<SystemTime>),
    /// The call renewed a tenure held under our holder id that this client did not start:
    /// another process uses the same id (see [`Error::DuplicateHolderId`]).
    Duplicate {
        fencing_token: i64,
    },
}

enum AttemptError {
    Connect(Error),
    Call(CallError),
}

impl AttemptError {
    fn is_transient(&self) -> bool {
        match self {
            AttemptError::Connect(Error::Connect(e)) => crate::error::is_transient(e),
            AttemptError::Connect(_) => true,
            AttemptError::Call(e) => e.is_transient(),
        }
    }

    fn into_acquire_error(self) -> Error {
        match self {
            AttemptError::Connect(e) => e,
            AttemptError::Call(CallError::Db(e)) => Error::Acquire(e),
            AttemptError::Call(CallError::Timeout(d)) => Error::CallTimeout(d),
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Connect(Error::Connect(e)) => write!(f, "connect: {e}"),
            AttemptError::Connect(e) => write!(f, "{e}"),
            AttemptError::Call(e) => write!(f, "{e}"),
        }
    }
}

impl From<AttemptError> for Error {
    fn from(e: AttemptError) -> Error {
        e.into_acquire_error()
    }
}

/// Releases the lease in the background if dropped while armed (see `attempt`). Its task claim
/// keeps a new acquire of the name from being sent before that release, which is bounded by the
/// call timeout so that it cannot hold up that acquire for long.
struct UndoOnDrop {
    session: Arc<Session>,
    conn: Option<Arc<DbConn>>,
    claims: Arc<Claims>,
    claim: Option<TaskClaim>,
    holder: Uuid,
    name: Arc<str>,
}

impl UndoOnDrop {
    fn disarm(mut self) {
        self.conn = None;
        self.claim = None;
    }
}

impl Drop for UndoOnDrop {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Whether the call ran, and what it started, is unknown until the release answers.
        self.claims.tenure_unknown(&self.name);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (holder, name, claim) = (self.holder, self.name.clone(), self.claim.take());
        let (session, claims) = (self.session.clone(), self.claims.clone());
        runtime.spawn(async move {
            let _claim = claim;
            match session.call(&conn, None, conn.release(holder, &name)).await {
                Ok(released) => {
                    claims.release_answered(&name, released, session.config().lease_duration());
                    debug!(lease = %name, released, "cancelled acquire undone");
                }
                Err(e) => debug!(lease = %name, error = %e, "could not undo a cancelled acquire; it will expire"),
            }
        });
    }
}

impl LeaseClientBuilder {
    fn with_pg(pg: Result<tokio_postgres::Config, Error>) -> Self {
        LeaseClientBuilder {
            pg,
            tls_params: crate::conninfo::TlsParams::default(),
            config: LeaseConfig::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Replaces every lease setting at once (for settings loaded with serde).
    pub fn config(mut self, config: LeaseConfig) -> Self {
        self.config = config;
        self
    }

    /// The lease to take. Default `default`.
    pub fn lease_name(mut self, name: impl Into<String>) -> Self {
        self.config = self.config.with_lease_name(name);
        self
    }

    /// A stable holder id. Default: a fresh random v4 UUID for each [`build`](Self::build).
    ///
    /// **It must be unique per process.** The database knows a holder only by this id: two
    /// processes that present the same one are the same holder to it, and both hold the lease
    /// at once with the same fencing token, which then fences nothing. Never set it from a
    /// configuration file that replicas share; derive it from something unique to the process
    /// (or leave the default).
    ///
    /// Where the client can tell, it says so:
    /// - an acquire that renews a tenure under this id that this client never started is not
    ///   reported as held: [`try_acquire`](LeaseClient::try_acquire) returns
    ///   [`Error::DuplicateHolderId`], [`acquire`](LeaseClient::acquire) warns and waits;
    /// - unless the connection string sets `application_name`, the connection is named
    ///   `lease_lock <fingerprint of the holder id>` (never the id: other roles see it), and on
    ///   its first connection a client with a configured id
    ///   warns (`tracing`) if another session of the database has that name. A warning, not an
    ///   error: it may be the lingering session of a crashed predecessor.
    ///
    /// Neither catches every case (two processes that never overlap on a lease, or that set
    /// their own `application_name`): uniqueness is the caller's job.
    pub fn holder_id(mut self, id: Uuid) -> Self {
        self.config = self.config.with_holder_id(id);
        self
    }

    /// The schema of the extension's functions and view. Default `lease_lock`, where the
    /// extension installs them. The exact name (case-sensitive, no quotes): the client quotes it
    /// as an identifier and calls every function qualified with it, so `search_path` plays no
    /// part.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.config = self.config.with_schema(schema);
        self
    }

    /// How long each acquire or renewal holds the lease. Default 10 s.
    pub fn lease_duration(mut self, d: Duration) -> Self {
        self.config = self.config.with_lease_duration(d);
        self
    }

    /// Time between renewals, at most half the lease. Default 1 s.
    pub fn refresh_interval(mut self, d: Duration) -> Self {
        self.config = self.config.with_refresh_interval(d);
        self
    }

    /// How long the holder trusts the lease after sending the last confirmed renewal.
    /// Default: two thirds of the lease duration.
    pub fn renew_deadline(mut self, d: Duration) -> Self {
        self.config = self.config.with_renew_deadline(d);
        self
    }

    /// Longest wait for one database call. Default 2 s (or the renew deadline if shorter).
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.config = self.config.with_call_timeout(d);
        self
    }

    /// Cap of the reconnect back-off. Default 5 s.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.config = self.config.with_max_backoff(d);
        self
    }

    /// Session-level timeouts and prepared statements on the dedicated connection. Default on;
    /// turn off behind a transaction pooler such as PgBouncer in transaction mode.
    pub fn session_settings(mut self, on: bool) -> Self {
        self.config = self.config.with_session_settings(on);
        self
    }

    /// LISTEN for releases to wake waiters at once. Default on; off behind a transaction pooler.
    pub fn listen(mut self, on: bool) -> Self {
        self.config = self.config.with_listen(on);
        self
    }

    /// Connects over TLS with this rustls configuration.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: rustls::ClientConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Checks the settings and makes the client. Does not connect yet.
    ///
    /// Each call draws a fresh random holder id unless one is configured.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid setting or connection string.
    pub fn build(self) -> Result<LeaseClient, Error> {
        let mut pg = self.pg?;
        self.config.validate()?;
        let params = self.tls_params;
        if params.mode.is_some() {
            pg.ssl_mode(params.tokio_postgres_mode());
        }
        let tls = Tls::None;
        #[cfg(feature = "tls")]
        let tls = match self.tls {
            // A configuration given to the builder wins over the string's files.
            Some(c) => Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(c)),
            None if !params.is_empty() => match crate::conninfo::rustls_config(&params)? {
                Some(c) => Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(c)),
                None => tls,
            },
            None => tls,
        };
        #[cfg(not(feature = "tls"))]
        if params.rootcert.is_some()
            || params.cert.is_some()
            || matches!(
                params.mode(),
                crate::conninfo::SslMode::Require
                    | crate::conninfo::SslMode::VerifyCa
                    | crate::conninfo::SslMode::VerifyFull
            )
        {
            return Err(Error::Config("connection string: TLS needs the client's `tls` feature".into()));
        }
        let configured = self.config.holder_id().is_some();
        let holder_id = self.config.holder_id().unwrap_or_else(Uuid::new_v4);
        let lease_name: Arc<str> = self.config.lease_name().into();
        let session = Arc::new(Session::new(pg, tls, self.config, holder_id, configured));
        Ok(LeaseClient { shared: Arc::new(Shared { session, holder_id, claims: Arc::default() }), lease_name })
    }
}

/// tokio-postgres's error for a connection string that does not parse, with its cause (its
/// `Display` alone says only "invalid connection string").
fn config_message(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(cause) => format!("connection string: {e}: {cause}"),
        None => format!("connection string: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_build_draws_its_own_holder_id() {
        let config = LeaseConfig::default();
        let ids: Vec<Uuid> = (0..3)
            .map(|_| LeaseClient::builder("host=/tmp").config(config.clone()).build().unwrap().holder_id())
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 4), "{ids:?}");
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");
        // The configuration itself stays without one: serializing it cannot pin an id.
        let client = LeaseClient::builder("host=/tmp").build().unwrap();
        assert_eq!(client.config().holder_id(), None);
        // Clones and clients for other leases are the same holder on the same connection.
        assert_eq!(client.clone().holder_id(), client.holder_id());
        assert_eq!(client.for_lease("other").unwrap().holder_id(), client.holder_id());
        // A configured id is used as given.
        let id = Uuid::new_v4();
        assert_eq!(LeaseClient::builder("host=/tmp").holder_id(id).build().unwrap().holder_id(), id);
    }

    #[test]
    fn bad_schema_is_a_config_error() {
        for bad in ["", "a\0b"] {
            let result = LeaseClient::builder("host=/tmp").schema(bad).build();
            assert!(matches!(result, Err(Error::Config(ref m)) if m.contains("schema")), "{result:?}");
        }
    }
}
