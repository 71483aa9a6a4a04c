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
//! point-in-time recovery) the server runs on a new timeline, and a row from an older one may
//! miss the last renewals the old primary acknowledged (asynchronous replication): its
//! `expires_at` can be earlier than what the holder was promised, and the holder still trusts
//! its lease until its own deadline. So a row from an older timeline whose tenure is not ended
//! counts as held: the holder may renew it (keeping its token), and the first other caller
//! re-arms it, giving the holder its full last lease duration again from now, before anyone can
//! take it. And tokens of new tenures on timeline `T` are at least `(T - 1) << 40`, above every
//! token an older timeline can have issued, so a tenure lost with the old primary can never
//! have its token handed out again.

use crate::error::{LeaseError, SqlState};
use crate::spi::{Row, SpiSession, Stmt};
use pgrx::pg_sys::{self, Datum, Oid, TimestampTz};

/// What `lease_acquire` and `lease_refresh` return.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    pub acquired: bool,
    pub fencing_token: Option<i64>,
    pub expires_at: Option<TimestampTz>,
}

impl Grant {
    /// The caller holds the lease: token and expiry of its tenure.
    fn held(row: Row) -> Grant {
        Grant { acquired: true, fencing_token: row.i64(1), expires_at: row.i64(2) }
    }

    /// The caller does not hold the lease: report the expiry recorded on the row (when the
    /// current holder's tenure ends), NULL when the lease was never taken.
    fn refused(state: Option<&LeaseRow>) -> Grant {
        Grant { acquired: false, fencing_token: None, expires_at: state.map(|s| s.expires_at) }
    }
}

/// A lease row as [`Stmt::Inspect`], [`Stmt::LockForTenure`] and [`Stmt::Rearm`] read it.
struct LeaseRow {
    holder: Option<[u8; 16]>,
    holder_role: Option<Oid>,
    expires_at: TimestampTz,
    renewed_at: TimestampTz,
    timeline: i32,
}

impl LeaseRow {
    fn read(row: Row) -> LeaseRow {
        LeaseRow {
            holder: row.uuid(2),
            holder_role: row.oid(3),
            expires_at: row.i64(4).expect("expires_at is NOT NULL"),
            renewed_at: row.i64(5).expect("renewed_at is NOT NULL"),
            timeline: row.i32(6).expect("timeline is NOT NULL"),
        }
    }

    fn is_held(&self, now: TimestampTz) -> bool {
        self.holder.is_some() && self.expires_at > now
    }

    /// A tenure written before a failover that nobody has ended or re-armed since.
    fn needs_rearm(&self, timeline: i32) -> bool {
        self.holder.is_some() && self.timeline != timeline
    }
}

/// One call of a lease function: the caller's identity and the moment of the call.
pub struct LeaseCall<'a> {
    pub spi: &'a SpiSession,
    /// The lease name, a `text` datum, validated.
    pub name: Datum,
    /// The lease name for messages.
    pub name_str: &'a str,
    /// The caller's `current_user`.
    pub role: Oid,
    /// `clock_timestamp()` at the start of the call.
    pub now: TimestampTz,
    /// The server's current WAL timeline.
    pub timeline: i32,
}

/// A holder id: the `uuid` datum to bind and its bytes to compare.
pub struct Holder {
    pub datum: Datum,
    pub bytes: [u8; 16],
}

impl LeaseCall<'_> {
    /// Parameters of [`Stmt::Take`] and [`Stmt::Create`]; [`Stmt::Renew`] takes the first six.
    fn tenure_args(&self, holder: &Holder, expires_at: TimestampTz) -> [Datum; 7] {
        // New tenures on timeline T start at (T - 1) << 40: see the module docs.
        let token_floor = i64::from(self.timeline - 1) << 40;
        [
            self.name,
            holder.datum,
            Datum::from(self.role),
            Datum::from(self.now),
            Datum::from(expires_at),
            Datum::from(self.timeline),
            Datum::from(token_floor),
        ]
    }

    fn inspect(&self) -> Option<LeaseRow> {
        self.spi.run(Stmt::Inspect, &[self.name]).map(LeaseRow::read)
    }

    /// Gives the holder of a row from an older timeline its last lease duration again from now,
    /// and returns the row as it then is.
    fn rearm(&self, state: LeaseRow) -> Option<LeaseRow> {
        let duration = state.expires_at - state.renewed_at;
        let expires_at = state.expires_at.max(self.now + duration);
        let args = [self.name, Datum::from(self.now), Datum::from(expires_at), Datum::from(self.timeline)];
        match self.spi.run(Stmt::Rearm, &args) {
            Some(row) => Some(LeaseRow::read(row)),
            None => self.inspect(), // re-armed or taken meanwhile by another caller
        }
    }

    /// `lease_acquire`: renew the caller's tenure, or start a new one if the lease is free.
    pub fn acquire(&self, holder: &Holder, expires_at: TimestampTz) -> Result<Grant, LeaseError> {
        let args = self.tenure_args(holder, expires_at);
        if let Some(row) = self.spi.run(Stmt::Renew, &args[..6]) {
            return Ok(Grant::held(row));
        }
        let Some(mut state) = self.inspect() else {
            // Never taken. ON CONFLICT DO NOTHING: a concurrent first acquire wins, we report it.
            return Ok(match self.spi.run(Stmt::Create, &args) {
                Some(row) => Grant::held(row),
                None => Grant::refused(self.inspect().as_ref()),
            });
        };
        if state.needs_rearm(self.timeline) {
            match self.rearm(state) {
                Some(rearmed) => state = rearmed,
                None => return Ok(Grant::refused(None)),
            }
        }
        if state.is_held(self.now) {
            self.refuse_other_role(holder, &state)?;
            return Ok(Grant::refused(Some(&state)));
        }
        // Free, expired or released. Lock it without waiting: a lock held by someone else means
        // a fenced transaction of the last tenure is still open (no new tenure may start before
        // it ends) or another caller is taking the lease right now.
        let Some(locked) = self.spi.run(Stmt::LockForTenure, &[self.name]).map(LeaseRow::read)
        else {
            return Ok(Grant::refused(Some(&state)));
        };
        if locked.is_held(self.now) || locked.needs_rearm(self.timeline) {
            // Taken (or written on another timeline) between our read and our lock.
            self.refuse_other_role(holder, &locked)?;
            return Ok(Grant::refused(Some(&locked)));
        }
        let row = self.spi.run(Stmt::Take, &args).expect("the lease row is locked by this call");
        Ok(Grant::held(row))
    }

    /// `lease_refresh`: extend the caller's unexpired tenure; never start a new one.
    pub fn refresh(&self, holder: &Holder, expires_at: TimestampTz) -> Result<Grant, LeaseError> {
        if let Some(row) = self.spi.run(Stmt::Renew, &self.tenure_args(holder, expires_at)[..6]) {
            return Ok(Grant::held(row));
        }
        let state = self.inspect();
        if let Some(state) = &state {
            self.refuse_other_role(holder, state)?;
        }
        Ok(Grant::refused(state.as_ref()))
    }

    /// `lease_release`: end the caller's unexpired tenure and wake waiters.
    pub fn release(&self, holder: &Holder) -> Result<bool, LeaseError> {
        let args = [
            self.name,
            holder.datum,
            Datum::from(self.role),
            Datum::from(self.now),
            Datum::from(self.timeline),
        ];
        if self.spi.run(Stmt::Release, &args).is_some() {
            self.spi.run(Stmt::Notify, &[self.name]);
            return Ok(true);
        }
        if let Some(state) = self.inspect() {
            self.refuse_other_role(holder, &state)?;
        }
        Ok(false)
    }

    /// `lease_evict`: end whoever's unexpired tenure and wake waiters.
    pub fn evict(&self) -> bool {
        let args = [self.name, Datum::from(self.now), Datum::from(self.timeline)];
        let evicted = self.spi.run(Stmt::Evict, &args).is_some();
        if evicted {
            self.spi.run(Stmt::Notify, &[self.name]);
        }
        evicted
    }

    /// `lease_fence`: succeed only for the current, unexpired tenure, and keep a new tenure from
    /// starting until the caller's transaction ends (the row lock is the caller's transaction's).
    pub fn fence(&self, token: i64) -> Result<(), LeaseError> {
        let reject = |detail: String| {
            LeaseError::new(
                SqlState::FENCE_REJECTED,
                format!("fencing token {token} is not the current tenure of lease \"{}\"", self.name_str),
            )
            .detail(detail)
            .hint("Stop acting as the holder: acquire the lease again to get a new token.")
        };
        let Some(row) = self.spi.run(Stmt::Fence, &[self.name]) else {
            return Err(reject(match self.inspect() {
                None => "The lease has never been taken.".into(),
                Some(_) => "A new tenure of the lease is being taken.".into(),
            }));
        };
        let current = row.i64(1).expect("fencing_token is NOT NULL");
        let released = row.uuid(2).is_none();
        let expires_at = row.i64(3).expect("expires_at is NOT NULL");
        if current != token {
            return Err(reject(format!("The current tenure has token {current}.")));
        }
        if released {
            return Err(reject("The tenure was released.".into()));
        }
        // Measured after the row lock, so a lock wait cannot let an expired tenure pass.
        if expires_at <= unsafe { pg_sys::GetCurrentTimestamp() } {
            return Err(reject("The tenure has expired.".into()));
        }
        Ok(())
    }

    /// A holder id is bound to the role that took the tenure: another role that presents it (it is
    /// visible in `lease_status`) gets an error instead of touching the lease.
    fn refuse_other_role(&self, holder: &Holder, state: &LeaseRow) -> Result<(), LeaseError> {
        if (state.is_held(self.now) || state.needs_rearm(self.timeline))
            && state.holder == Some(holder.bytes)
            && state.holder_role != Some(self.role)
        {
            return Err(LeaseError::new(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!("lease \"{}\" is held by this holder id under another role", self.name_str),
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
    unsafe {
        let name = pg_sys::GetUserNameFromId(role, true);
        if name.is_null() {
            format!("with OID {}", role.to_u32())
        } else {
            std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}
