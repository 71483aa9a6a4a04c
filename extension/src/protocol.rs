//! The lease protocol: what each SQL function does to the lease row, statement by statement.
//!
//! One row per lease name in `leases`. A tenure is one holder's unbroken hold; each new tenure
//! increments the row's `fencing_token`, and the row is never deleted, so tokens only grow.
//! `(lease_name, fencing_token)` is UNIQUE, which makes `fencing_token` a key column: a
//! transaction that ran `lease_fence` holds `FOR KEY SHARE` on the row, which blocks the key
//! change of a new tenure but not the holder's renewals and release (they change no key column).
//!
//! Locking rules, so that standbys never slow the holder:
//! - a caller that does not hold the lease only reads the row (no lock) unless the row is free,
//!   and then locks it with `SKIP LOCKED`, so it never waits on the holder or on fenced writers;
//! - the holder's renewal is one `UPDATE` whose `WHERE` names the holder, so it touches nothing
//!   when the caller is not the holder.
//!
//! Failover. Each row records the WAL timeline it was last written on. After a promotion (or a
//! point-in-time recovery) at time `P` the server runs on a new timeline `T`, and with
//! asynchronous replication the rows may miss whatever the old primary did last: renewals (the
//! row's `expires_at` is earlier than what the holder was promised), a release and the next
//! holder's whole tenure, or the first tenure of a new name. Whoever acted on those lost writes
//! may still trust a lease until its own deadline, at most `P + D` where `D` is the lease duration
//! it was granted. So, on timeline `T`:
//! - a row written on another timeline, and a name with no row at all when `T > 1`, starts no
//!   new tenure before `P + D`, where `D` is the longest duration ever granted for the name
//!   (recorded on the row, `max_duration_us`) or the caller's, if longer. The assumption,
//!   documented in the README: no lost tenure of a name was granted a longer duration than every
//!   tenure of it the new primary knows of, or than the caller asks for;
//! - only `lease_refresh` continues a tenure from another timeline, because only a holder that
//!   still believes it holds it calls it (`lease_acquire` says the caller does not know, and may
//!   come from a holder that released the lease on the lost timeline), and only if the row's
//!   replicated expiry is after `P`: a tenure that had run out before the promotion, as far as
//!   the new primary knows, may have been followed by another holder's lost tenure, so its
//!   holder (which should have stopped refreshing) waits out the hold like everyone else. Its
//!   holder's `lease_release` ends it but keeps the hold until `P + D`;
//! - none of this writes anything: a caller that is refused leaves no row lock behind, so it
//!   never delays the holder's renewal;
//! - new tenures on timeline `T` get tokens of at least `(T - 1) << 40`, above every token an
//!   older timeline can have issued, so a token lost with the old primary is never reused.
//!
//! `P` is the modification time of the timeline's history file (`pg_wal/<T>.history`, written
//! at promotion; a later copy only makes the hold longer); without one (timeline 1, or rows
//! restored from another cluster) it is the server's start time.

use crate::error::{LeaseError, SqlState};
use crate::guard::{SubTransaction, MAX_LEASE_NAMES};
use crate::spi::{self, Event, FenceRow, LeaseRow, Snapshot, SpiSession, Stmt, Tenure};
use pgrx::pg_sys::{self, Datum, Oid, TimestampTz};
use std::cell::Cell;

/// What `lease_acquire` and `lease_refresh` return.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    pub acquired: bool,
    pub fencing_token: Option<i64>,
    pub expires_at: Option<TimestampTz>,
}

impl Grant {
    /// The caller holds the lease: token and expiry of its tenure.
    fn held(tenure: Tenure) -> Grant {
        Grant { acquired: true, fencing_token: Some(tenure.fencing_token), expires_at: Some(tenure.expires_at) }
    }

    /// The caller does not hold the lease: report when to try again (when the current tenure
    /// or the failover hold ends), NULL when the lease was never taken.
    fn refused(until: Option<TimestampTz>) -> Grant {
        Grant { acquired: false, fencing_token: None, expires_at: until }
    }
}

/// One call of a lease function: the caller's identity and the moment of the call.
pub struct LeaseCall<'a> {
    pub spi: &'a SpiSession,
    pub name: LeaseName<'a>,
    /// The caller's `current_user`.
    pub role: Oid,
    /// `clock_timestamp()` at the start of the call.
    pub now: TimestampTz,
    /// The server's current WAL timeline.
    pub timeline: i32,
}

/// A validated lease name (1 to 255 bytes): the `text` datum to bind and the name for messages.
#[derive(Clone, Copy)]
pub struct LeaseName<'a> {
    pub datum: Datum,
    pub text: &'a str,
}

/// A holder id: the `uuid` datum to bind and its bytes to compare.
pub struct Holder {
    pub datum: Datum,
    pub bytes: [u8; 16],
}

thread_local! {
    // The start of the current timeline, per backend: (timeline, start).
    static TIMELINE_START: Cell<Option<(i32, TimestampTz)>> = const { Cell::new(None) };
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// When `timeline` began on this server: see the module docs.
fn timeline_start(timeline: i32) -> TimestampTz {
    if let Some((t, start)) = TIMELINE_START.get() {
        if t == timeline {
            return start;
        }
    }
    // SAFETY: DataDir is set for the life of the backend; PgStartTime is set at postmaster start.
    let (data_dir, started) =
        unsafe { (std::ffi::CStr::from_ptr(pg_sys::DataDir).to_string_lossy().into_owned(), pg_sys::PgStartTime) };
    let history = format!("{data_dir}/pg_wal/{timeline:08X}.history");
    let start = std::fs::metadata(history)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_micros()).ok())
        .map_or(started, |micros| micros - PG_EPOCH_UNIX_MICROS);
    TIMELINE_START.set(Some((timeline, start)));
    start
}

impl LeaseCall<'_> {
    /// Parameters of the tenure statements (see `spi.rs`).
    fn tenure_args(&self, holder: &Holder, duration_us: i64) -> [Datum; 9] {
        // New tenures on timeline T start at (T - 1) << 40: see the module docs.
        let token_floor = i64::from(self.timeline - 1) << 40;
        [
            self.name.datum,
            holder.datum,
            Datum::from(self.role),
            Datum::from(self.now),
            Datum::from(self.now + duration_us),
            Datum::from(self.timeline),
            Datum::from(duration_us),
            Datum::from(token_floor),
            Datum::from(timeline_start(self.timeline)),
        ]
    }

    fn inspect(&self, snapshot: Snapshot) -> Result<Option<LeaseRow>, LeaseError> {
        self.spi.run_with(Stmt::Inspect, &[self.name.datum], snapshot)?.as_ref().map(LeaseRow::read).transpose()
    }

    /// When a new tenure may start, if not now: while the row's tenure is held, or during the
    /// failover hold of a row from another timeline (or of a name without a row, after a
    /// promotion). See the module docs.
    fn busy_until(&self, state: Option<&LeaseRow>, duration_us: i64) -> Option<TimestampTz> {
        let until = match state {
            Some(s) if s.timeline == self.timeline => s.holder.map(|_| s.expires_at),
            Some(s) => Some(s.expires_at.max(timeline_start(self.timeline) + s.max_duration_us.max(duration_us))),
            None if self.timeline > 1 => Some(timeline_start(self.timeline) + duration_us),
            None => None,
        };
        until.filter(|&until| until > self.now)
    }

    /// `lease_acquire`: renew the caller's tenure, or start a new one if the lease is free.
    pub fn acquire(&self, holder: &Holder, duration_us: i64) -> Result<Grant, LeaseError> {
        let args = self.tenure_args(holder, duration_us);
        if let Some(row) = self.spi.run(Stmt::RenewHeld, &args)? {
            return Ok(Grant::held(Tenure::read(&row)?));
        }
        let state = self.inspect(Snapshot::Transaction)?;
        if let Some(until) = self.busy_until(state.as_ref(), duration_us) {
            if let Some(state) = &state {
                self.refuse_other_role(holder, state)?;
            }
            return Ok(Grant::refused(Some(until)));
        }
        let Some(state) = state else {
            return self.create(&args);
        };
        // Free, expired or released. Lock it without waiting: a lock held by someone else means
        // a fenced transaction of the last tenure is still open (no new tenure may start before
        // it ends) or another caller is taking the lease right now. In a subtransaction, so that
        // the lock goes away again if the row turns out taken after all (between our read and our
        // lock): a refused caller keeps no lock. Only new tenures pay for it, never renewals.
        let taking = SubTransaction::begin();
        let Some(row) = self.spi.run(Stmt::LockForTenure, &[self.name.datum])? else {
            return Ok(Grant::refused(Some(state.expires_at)));
        };
        let locked = LeaseRow::read(&row)?;
        if let Some(until) = self.busy_until(Some(&locked), duration_us) {
            // Taken between our read and our lock: give the lock back. The row first: rolling
            // the subtransaction back frees the result tables made inside it.
            drop(row);
            drop(taking);
            self.refuse_other_role(holder, &locked)?;
            return Ok(Grant::refused(Some(until)));
        }
        let row = self
            .spi
            .run(Stmt::Take, &args)?
            .ok_or_else(|| LeaseError::new(SqlState::DATA_CORRUPTED, "lease_lock: the locked lease row vanished"))?;
        let tenure = Tenure::read(&row)?;
        drop(row);
        self.event(Event::Acquired, tenure.fencing_token)?;
        taking.commit();
        Ok(Grant::held(tenure))
    }

    /// Tells watchers (`lease_lock_contract::EVENTS_CHANNEL`, at commit) that the tenure
    /// changed. Never on a renewal: those keep their one statement.
    fn event(&self, event: Event, token: i64) -> Result<(), LeaseError> {
        let args = [self.name.datum, Datum::from(token), Datum::from(self.role)];
        let args = if event == Event::Evicted { &args[..2] } else { &args[..] };
        self.spi.run(Stmt::Event(event), args)?;
        Ok(())
    }

    fn count(&self, stmt: Stmt) -> Result<i64, LeaseError> {
        Ok(self.spi.run(stmt, &[])?.as_ref().map(spi::count).transpose()?.unwrap_or(0))
    }

    /// The first tenure of a lease name; the name counts against `lease_lock.max_lease_names`.
    fn create(&self, args: &[Datum]) -> Result<Grant, LeaseError> {
        let Some(row) = self.spi.run(Stmt::Create, args)? else {
            // A concurrent first acquire of the same name won: report its tenure.
            let state = self.inspect(Snapshot::Transaction)?;
            return Ok(Grant::refused(state.map(|s| s.expires_at)));
        };
        let tenure = Tenure::read(&row)?;
        drop(row);
        self.event(Event::Acquired, tenure.fencing_token)?;
        let limit = i64::from(MAX_LEASE_NAMES.get());
        if limit > 0 && self.count(Stmt::CountNames)? >= limit / 2 {
            // Near the bound (as far as the statistics say, which lag by seconds and can count
            // twice what an ANALYZE already saw): count exactly before refusing anyone. Far from
            // it a new name costs no count at all.
            let names = self.count(Stmt::CountNamesExactly)?;
            if names > limit {
                // Raising aborts the caller's transaction, and with it this row.
                return Err(LeaseError::new(
                    SqlState::CONFIGURATION_LIMIT_EXCEEDED,
                    format!(
                        "too many lease names: lease \"{}\" would be name {names} of at most {limit}",
                        self.name.text
                    ),
                )
                .hint("Reuse lease names, or ask an administrator to raise lease_lock.max_lease_names."));
            }
        }
        Ok(Grant::held(tenure))
    }

    /// `lease_refresh`: extend the caller's tenure; never start a new one.
    ///
    /// The unexpired tenure of this timeline first, the statement `lease_acquire` renews with:
    /// the one statement of every renewal. Only when it finds nothing, the tenure written on an
    /// earlier timeline, whose renewal here re-arms it (and tells watchers).
    pub fn refresh(&self, holder: &Holder, duration_us: i64) -> Result<Grant, LeaseError> {
        let args = self.tenure_args(holder, duration_us);
        if let Some(row) = self.spi.run(Stmt::RenewHeld, &args)? {
            return Ok(Grant::held(Tenure::read(&row)?));
        }
        if let Some(row) = self.spi.run(Stmt::Renew, &args)? {
            let tenure = Tenure::read(&row)?;
            drop(row);
            self.event(Event::Rearmed, tenure.fencing_token)?;
            return Ok(Grant::held(tenure));
        }
        let Some(state) = self.inspect(Snapshot::Transaction)? else {
            return Ok(Grant::refused(None));
        };
        self.refuse_other_role(holder, &state)?;
        Ok(Grant::refused(Some(self.busy_until(Some(&state), duration_us).unwrap_or(state.expires_at))))
    }

    /// `lease_release`: end the caller's tenure and wake waiters.
    pub fn release(&self, holder: &Holder) -> Result<bool, LeaseError> {
        let args =
            [self.name.datum, holder.datum, Datum::from(self.role), Datum::from(self.now), Datum::from(self.timeline)];
        if let Some(row) = self.spi.run(Stmt::Release, &args)? {
            let token = spi::ended_token(&row)?;
            drop(row);
            self.spi.run(Stmt::Notify, &[self.name.datum])?;
            self.event(Event::Released, token)?;
            return Ok(true);
        }
        if let Some(state) = self.inspect(Snapshot::Transaction)? {
            self.refuse_other_role(holder, &state)?;
        }
        Ok(false)
    }

    /// `lease_evict`: end whoever's tenure and wake waiters.
    pub fn evict(&self) -> Result<bool, LeaseError> {
        let args = [self.name.datum, Datum::from(self.now), Datum::from(self.timeline)];
        let Some(row) = self.spi.run(Stmt::Evict, &args)? else {
            return Ok(false);
        };
        let token = spi::ended_token(&row)?;
        drop(row);
        self.spi.run(Stmt::Notify, &[self.name.datum])?;
        self.event(Event::Evicted, token)?;
        Ok(true)
    }

    /// `lease_fence`: succeed only for the current, unexpired tenure, called by its role, and
    /// keep a new tenure from starting until the caller's transaction ends (the row lock is the
    /// caller's transaction's).
    ///
    /// The row is read with the latest snapshot, not the transaction's, so that a REPEATABLE
    /// READ or SERIALIZABLE transaction whose snapshot predates a release or a new tenure is
    /// judged by what is current (LL001), not by what it remembers. Every refusal is an ERROR,
    /// which aborts the (sub)transaction and so drops the row lock this statement may have
    /// taken: only a successful fence holds a lease row.
    pub fn fence(&self, token: i64) -> Result<(), LeaseError> {
        let reject = |detail: String| {
            LeaseError::new(
                SqlState::FENCE_REJECTED,
                format!("fencing token {token} is not the current tenure of lease \"{}\"", self.name.text),
            )
            .detail(detail)
            .hint("Stop acting as the holder: acquire the lease again to get a new token.")
        };
        let Some(row) = self.spi.run_with(Stmt::Fence, &[self.name.datum], Snapshot::Latest)? else {
            return Err(reject(match self.inspect(Snapshot::Latest)? {
                None => "The lease has never been taken.".into(),
                Some(_) => "A new tenure of the lease is being taken.".into(),
            }));
        };
        let current = FenceRow::read(&row)?;
        if current.fencing_token != token {
            return Err(reject(format!("The current tenure has token {}.", current.fencing_token)));
        }
        if current.holder.is_none() {
            return Err(reject("The tenure was released.".into()));
        }
        // Only the role that holds the tenure (or a member of it) may hold off the next one:
        // anyone else could keep a lease from ever changing hands.
        let role = current.holder_role.unwrap_or(pg_sys::InvalidOid);
        // SAFETY: a catalog check on two role OIDs.
        if !unsafe { pg_sys::has_privs_of_role(self.role, role) } {
            return Err(LeaseError::new(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!("lease \"{}\" is held by another role", self.name.text),
            )
            .detail(format!(
                "The tenure was taken by role {}; only it, or a role that has its privileges, may fence with its token.",
                role_name(current.holder_role)
            )));
        }
        // Measured after the row lock, so a lock wait cannot let an expired tenure pass.
        // SAFETY: reads the system clock.
        if current.expires_at <= unsafe { pg_sys::GetCurrentTimestamp() } {
            return Err(reject("The tenure has expired.".into()));
        }
        Ok(())
    }

    /// A holder id is bound to the role that took the tenure: another role that presents it
    /// (from a log, a configuration file; `lease_status` shows it only to its own role) gets an
    /// error instead of touching the lease.
    fn refuse_other_role(&self, holder: &Holder, state: &LeaseRow) -> Result<(), LeaseError> {
        let live = state.expires_at > self.now || state.timeline != self.timeline;
        if live && state.holder == Some(holder.bytes) && state.holder_role != Some(self.role) {
            return Err(LeaseError::new(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!("lease \"{}\" is held by this holder id under another role", self.name.text),
            )
            .detail(format!(
                "The tenure was taken by role {}; a holder id only acts for the role that took it.",
                role_name(state.holder_role)
            )));
        }
        Ok(())
    }
}

fn role_name(role: Option<Oid>) -> String {
    let Some(role) = role else { return "(none)".into() };
    // SAFETY: a catalog lookup; `true` returns NULL for a dropped role instead of raising.
    unsafe {
        let name = pg_sys::GetUserNameFromId(role, true);
        if name.is_null() {
            format!("with OID {}", role.to_u32())
        } else {
            std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}
