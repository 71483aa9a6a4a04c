//! The lease table's queries, prepared once per backend and kept for reuse, and their typed rows.
//!
//! What the query texts may resolve by name, and why that is safe (see `docs/security.md`):
//! - the table is `lease_lock.leases`, in the schema the control
//!   file pins, which `CREATE EXTENSION` refuses unless a superuser owns it and which
//!   [`SpiSession::connect`] checks again after any schema or role change. PostgreSQL re-analyses a cached plan's
//!   text when the plan is invalidated, so a name is looked up again then: only a superuser can
//!   rename or replace anything in that schema;
//! - operators and functions are spelled `OPERATOR(pg_catalog.x)` / `pg_catalog.f`, so a
//!   caller's `search_path` cannot change them.
//!
//! Each statement lists the types of its parameters and of its result columns next to its text;
//! every result row is checked against them before a value is read (a superuser who alters the
//! table gets an error, never a misread datum).

use crate::error::{LeaseError, SqlState};
use pgrx::pg_sys::{self, Datum, Oid};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

/// The statements the lease functions run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stmt {
    /// `lease_acquire` by the holder: extend its own unexpired tenure of this timeline.
    /// [`TenureArgs`] -> [`Tenure`].
    RenewHeld,
    /// `lease_refresh` once [`Stmt::RenewHeld`] found nothing: extend the caller's own tenure
    /// untouched since a failover (a row written on another timeline: its holder may still
    /// believe it holds it), which re-arms it on this timeline. [`TenureArgs`] -> [`Tenure`].
    Renew,
    /// Read the lease row without locking it. `$1 name` -> [`LeaseRow`].
    Inspect,
    /// Lock the row for a new tenure unless someone else has it locked (a fenced transaction of
    /// the last tenure holds `FOR KEY SHARE`). `$1 name` -> [`LeaseRow`].
    LockForTenure,
    /// Start a new tenure on a row locked by [`Stmt::LockForTenure`]. [`TenureArgs`] ->
    /// [`Tenure`].
    Take,
    /// Create the row of a lease name never used before. [`TenureArgs`] -> [`Tenure`]; no row
    /// when another caller created it first.
    Create,
    /// How many lease names there are, roughly (see its SQL). -> `count`.
    CountNames,
    /// How many lease names this transaction sees: an index-only scan of all of them. -> `count`.
    CountNamesExactly,
    /// End the caller's own tenure. `$1 name, $2 holder, $3 role, $4 now, $5 timeline` ->
    /// `fencing_token`.
    Release,
    /// End whoever's tenure (administrators). `$1 name, $2 now, $3 timeline` -> `fencing_token`.
    Evict,
    /// Lock the row so no new tenure can start before this transaction ends.
    /// `$1 name` -> `(fencing_token, holder, holder_role, expires_at)`.
    Fence,
    /// Wake waiters. `$1 name`.
    Notify,
    /// Tell watchers the holder changed (see `lease_lock_contract::EVENTS_CHANNEL`).
    /// `$1 name, $2 fencing_token, $3 role` (no `$3` for an eviction, whose role is gone).
    Event(Event),
}

/// What [`Stmt::Event`] tells watchers: the payload's `event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    Acquired,
    Released,
    Evicted,
    Rearmed,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Acquired => events::ACQUIRED,
            Event::Released => events::RELEASED,
            Event::Evicted => events::EVICTED,
            Event::Rearmed => events::REARMED,
        }
    }
}

use lease_lock_contract::{events, EVENTS_CHANNEL, RELEASE_CHANNEL};

const TEXT: Oid = pg_sys::TEXTOID;
const UUID: Oid = pg_sys::UUIDOID;
const ROLE: Oid = pg_sys::REGROLEOID;
const TSTZ: Oid = pg_sys::TIMESTAMPTZOID;
const INT4: Oid = pg_sys::INT4OID;
const INT8: Oid = pg_sys::INT8OID;
const VOID: Oid = pg_sys::VOIDOID;

/// Parameters of [`Stmt::RenewHeld`], [`Stmt::Renew`], [`Stmt::Take`] and [`Stmt::Create`]:
/// `$1 name, $2 holder, $3 role, $4 now, $5 expires_at, $6 timeline, $7 duration (µs),
/// $8 token floor, $9 start of the current timeline`.
const TENURE_ARGS: &[Oid] = &[TEXT, UUID, ROLE, TSTZ, TSTZ, INT4, INT8, INT8, TSTZ];
/// Result of the tenure statements: `fencing_token, expires_at`.
const TENURE_COLS: &[Oid] = &[INT8, TSTZ];
/// Result of [`Stmt::Inspect`] and [`Stmt::LockForTenure`].
const LEASE_ROW_COLS: &[Oid] = &[INT8, UUID, ROLE, TSTZ, INT4, INT8];
const LEASE_ROW: &str = "fencing_token, holder, holder_role, expires_at, timeline, max_duration_us";

impl Stmt {
    fn arg_types(self) -> &'static [Oid] {
        match self {
            Stmt::RenewHeld | Stmt::Renew | Stmt::Take | Stmt::Create => TENURE_ARGS,
            Stmt::CountNames | Stmt::CountNamesExactly => &[],
            Stmt::Release => &[TEXT, UUID, ROLE, TSTZ, INT4],
            Stmt::Evict => &[TEXT, TSTZ, INT4],
            Stmt::Inspect | Stmt::LockForTenure | Stmt::Fence | Stmt::Notify => &[TEXT],
            Stmt::Event(Event::Evicted) => &[TEXT, INT8],
            Stmt::Event(_) => &[TEXT, INT8, ROLE],
        }
    }

    /// The types of the result columns, checked on every row.
    fn column_types(self) -> &'static [Oid] {
        match self {
            Stmt::RenewHeld | Stmt::Renew | Stmt::Take | Stmt::Create => TENURE_COLS,
            Stmt::CountNames | Stmt::CountNamesExactly => &[INT8],
            Stmt::Inspect | Stmt::LockForTenure => LEASE_ROW_COLS,
            Stmt::Release | Stmt::Evict => &[INT8],
            Stmt::Fence => &[INT8, UUID, ROLE, TSTZ],
            Stmt::Notify | Stmt::Event(_) => &[VOID],
        }
    }

    fn sql(self) -> String {
        const T: &str = "lease_lock.leases";
        // `=`, `<>`, `>` and `+` spelled as OPERATOR(pg_catalog.x): see the module docs.
        const NAME_IS: &str = "lease_name OPERATOR(pg_catalog.=) $1";
        const MINE: &str = "holder OPERATOR(pg_catalog.=) $2 AND holder_role OPERATOR(pg_catalog.=) $3";
        const LONGEST: &str = "max_duration_us = GREATEST(max_duration_us, $7)";
        match self {
            Stmt::RenewHeld => format!(
                "UPDATE {T} SET renewed_at = $4, expires_at = $5, {LONGEST} \
                 WHERE {NAME_IS} AND {MINE} \
                 AND expires_at OPERATOR(pg_catalog.>) $4 AND timeline OPERATOR(pg_catalog.=) $6 \
                 RETURNING fencing_token, expires_at"
            ),
            Stmt::Renew => format!(
                "UPDATE {T} SET renewed_at = $4, expires_at = $5, timeline = $6, {LONGEST} \
                 WHERE {NAME_IS} AND {MINE} \
                 AND (expires_at OPERATOR(pg_catalog.>) $4 \
                      OR (timeline OPERATOR(pg_catalog.<>) $6 AND expires_at OPERATOR(pg_catalog.>) $9)) \
                 RETURNING fencing_token, expires_at"
            ),
            Stmt::Inspect => format!("SELECT {LEASE_ROW} FROM {T} WHERE {NAME_IS}"),
            Stmt::LockForTenure => {
                format!("SELECT {LEASE_ROW} FROM {T} WHERE {NAME_IS} FOR UPDATE SKIP LOCKED")
            }
            Stmt::Take => format!(
                "UPDATE {T} SET fencing_token = GREATEST(fencing_token OPERATOR(pg_catalog.+) 1, $8), \
                 holder = $2, holder_role = $3, acquired_at = $4, renewed_at = $4, expires_at = $5, \
                 timeline = $6, {LONGEST} WHERE {NAME_IS} RETURNING fencing_token, expires_at"
            ),
            // No conflict target: both unique indexes (the name, and name with token) are
            // arbiters, so a concurrent first acquire of the same name makes this one insert
            // nothing instead of failing with 23505.
            Stmt::Create => format!(
                "INSERT INTO {T} (lease_name, fencing_token, holder, holder_role, acquired_at, \
                   renewed_at, expires_at, timeline, max_duration_us) \
                 VALUES ($1, GREATEST(1, $8), $2, $3, $4, $4, $5, $6, $7) \
                 ON CONFLICT DO NOTHING RETURNING fencing_token, expires_at"
            ),
            // The lease table's live rows as the cumulative statistics count them (current to
            // within seconds; this backend's snapshot of them is cached for its transaction),
            // plus the rows this backend inserted and has not reported yet. No lock and no
            // write: an estimate, to tell whether an exact count is worth it.
            Stmt::CountNamesExactly => format!("SELECT pg_catalog.count(*) FROM {T}"),
            Stmt::CountNames => "SELECT pg_catalog.pg_stat_get_live_tuples('lease_lock.leases'::pg_catalog.regclass) \
                 OPERATOR(pg_catalog.+) \
                 pg_catalog.pg_stat_get_xact_tuples_inserted('lease_lock.leases'::pg_catalog.regclass)"
                .to_string(),
            Stmt::Release => format!(
                "UPDATE {T} SET holder = NULL, holder_role = NULL, expires_at = $4 \
                 WHERE {NAME_IS} AND {MINE} \
                 AND (expires_at OPERATOR(pg_catalog.>) $4 OR timeline OPERATOR(pg_catalog.<>) $5) \
                 RETURNING fencing_token"
            ),
            Stmt::Evict => format!(
                "UPDATE {T} SET holder = NULL, holder_role = NULL, expires_at = $2 \
                 WHERE {NAME_IS} AND holder IS NOT NULL \
                 AND (expires_at OPERATOR(pg_catalog.>) $2 OR timeline OPERATOR(pg_catalog.<>) $3) \
                 RETURNING fencing_token"
            ),
            Stmt::Fence => format!(
                "SELECT fencing_token, holder, holder_role, expires_at FROM {T} WHERE {NAME_IS} \
                 FOR KEY SHARE SKIP LOCKED"
            ),
            Stmt::Notify => format!("SELECT pg_catalog.pg_notify('{RELEASE_CHANNEL}', $1)"),
            // The role by name (regrole's output), as lease_status shows it.
            Stmt::Event(event) => format!(
                "SELECT pg_catalog.pg_notify('{EVENTS_CHANNEL}', pg_catalog.json_build_object(\
                 'event', '{}', 'lease_name', $1, 'fencing_token', $2, 'holder_role', {})::pg_catalog.text)",
                event.name(),
                if event == Event::Evicted { "NULL" } else { "$3::pg_catalog.text" }
            ),
        }
    }
}

/// The extension's schema, fixed by the control file (`schema = lease_lock`):
/// `lease_lock_contract::SCHEMA` as a C string (a test checks they agree).
const SCHEMA_C: &std::ffi::CStr = c"lease_lock";

thread_local! {
    // Whether the schema check passed since the last pg_namespace or pg_authid invalidation.
    static SCHEMA_CHECKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static SCHEMA_CALLBACKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A schema or a role changed somewhere: check the schema's owner again on the next call.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn schema_may_have_changed(_arg: Datum, _cache: i32, _hash: u32) {
    SCHEMA_CHECKED.set(false);
}

thread_local! {
    // Backend-local: PostgreSQL backends are single-threaded processes. A DROP/CREATE EXTENSION
    // re-creates the tables under the same names; plan invalidation picks the new ones up.
    static PLANS: RefCell<HashMap<Stmt, pg_sys::SPIPlanPtr>> = RefCell::new(HashMap::new());
}

/// One SPI connection for the duration of a lease function call.
pub struct SpiSession(());

/// Which snapshot a statement reads with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Snapshot {
    /// The transaction's (the statement's, in READ COMMITTED).
    Transaction,
    /// The latest committed state, whatever the isolation level: `lease_fence` judges the
    /// current tenure, not the one a REPEATABLE READ snapshot remembers.
    Latest,
}

impl SpiSession {
    /// Opens SPI for one call, after checking that a superuser still owns the schema. The check
    /// runs again only after a change to `pg_namespace` or `pg_authid` reached this backend
    /// (an owner change, a role losing superuser), which is when the answer can change: the
    /// same moments a per-call catalog lookup would see it, without its cost on every renewal.
    pub fn connect() -> Result<SpiSession, LeaseError> {
        if !SCHEMA_CHECKED.get() {
            if !SCHEMA_CALLBACKS.replace(true) {
                // SAFETY: registers callbacks with the signature syscache callbacks have.
                unsafe {
                    for cache in [pg_sys::SysCacheIdentifier::NAMESPACEOID, pg_sys::SysCacheIdentifier::AUTHOID] {
                        pg_sys::CacheRegisterSyscacheCallback(
                            cache as _,
                            Some(schema_may_have_changed),
                            Datum::from(0),
                        );
                    }
                }
            }
            // Marked checked before the check: an invalidation that arrives during the check's
            // own catalog lookups clears it again, so the next call checks once more.
            SCHEMA_CHECKED.set(true);
            if let Err(e) = Self::check_schema() {
                SCHEMA_CHECKED.set(false);
                return Err(e);
            }
        }
        // SAFETY: called inside a function PostgreSQL invoked (a transaction is open); the
        // matching SPI_finish is in Drop, or AtEOXact_SPI on error.
        unsafe { pg_sys::SPI_connect() };
        Ok(SpiSession(()))
    }

    /// Refuses to run the queries unless the schema is owned by a superuser: its owner could
    /// otherwise swap the tables the cached plans name (`CREATE EXTENSION` checks the same).
    fn check_schema() -> Result<(), LeaseError> {
        // SAFETY: catalog lookups inside a transaction; the name is a valid C string.
        let (schema, owner) = unsafe {
            let schema = pg_sys::get_namespace_oid(SCHEMA_C.as_ptr(), true);
            let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::NAMESPACEOID as _, Datum::from(schema));
            if tuple.is_null() {
                (schema, None)
            } else {
                let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_namespace>(tuple);
                let owner = (*form).nspowner;
                pg_sys::ReleaseSysCache(tuple);
                (schema, Some(owner))
            }
        };
        match owner {
            // SAFETY: a plain catalog lookup.
            Some(owner) if unsafe { pg_sys::superuser_arg(owner) } => Ok(()),
            Some(_) => Err(LeaseError::new(
                SqlState::INSUFFICIENT_PRIVILEGE,
                "schema \"lease_lock\" is not owned by a superuser",
            )
            .detail("Its owner could replace the tables the lease functions use.")
            .hint("A superuser must own the schema: ALTER SCHEMA lease_lock OWNER TO a superuser.")),
            None => Err(LeaseError::new(
                SqlState::UNDEFINED_OBJECT,
                format!("schema \"lease_lock\" does not exist (OID {})", schema.to_u32()),
            )),
        }
    }

    fn plan(&self, stmt: Stmt) -> Result<pg_sys::SPIPlanPtr, LeaseError> {
        if let Some(plan) = PLANS.with(|plans| plans.borrow().get(&stmt).copied()) {
            return Ok(plan);
        }
        let sql = CString::new(stmt.sql()).expect("query text has no NUL");
        let types = stmt.arg_types();
        // SAFETY: the text and the type array outlive the call; SPI is connected.
        let plan = unsafe {
            // A generic plan from the first call: these are primary-key lookups, and
            // `IndexPlans` (guard.rs) makes sure any (re)planning picks the index whatever the
            // table's statistics say.
            let plan = pg_sys::SPI_prepare_cursor(
                sql.as_ptr(),
                types.len() as i32,
                types.as_ptr().cast_mut(),
                pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
            );
            if plan.is_null() {
                let code = pg_sys::SPI_result;
                pgrx::error!("lease_lock: could not prepare {stmt:?}: SPI result {code}");
            }
            pg_sys::SPI_keepplan(plan);
            plan
        };
        PLANS.with(|plans| plans.borrow_mut().insert(stmt, plan));
        Ok(plan)
    }

    /// Runs `stmt` and returns its first row, if any, checked against the statement's column
    /// types.
    pub fn run(&self, stmt: Stmt, args: &[Datum]) -> Result<Option<Row>, LeaseError> {
        self.run_with(stmt, args, Snapshot::Transaction)
    }

    pub fn run_with(&self, stmt: Stmt, args: &[Datum], snapshot: Snapshot) -> Result<Option<Row>, LeaseError> {
        let plan = self.plan(stmt)?;
        assert_eq!(args.len(), stmt.arg_types().len(), "{stmt:?} takes {} arguments", args.len());
        let mut values = args.to_vec();
        // SAFETY: `plan` is a kept plan whose argument types match `values` (asserted above);
        // every statement touches at most one row (the lease name is the primary key).
        let status = unsafe {
            match snapshot {
                Snapshot::Transaction => {
                    pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), std::ptr::null(), false, 0)
                }
                Snapshot::Latest => pg_sys::SPI_execute_snapshot(
                    plan,
                    values.as_mut_ptr(),
                    std::ptr::null(),
                    pg_sys::GetLatestSnapshot(),
                    std::ptr::null_mut(), // no crosscheck: judge the latest state, raise nothing
                    false,
                    true,
                    0,
                ),
            }
        };
        if status < 0 {
            pgrx::error!("lease_lock: {stmt:?} failed: SPI result {status}");
        }
        // SAFETY: set by the SPI_execute_* call above.
        let (processed, table) = unsafe { (pg_sys::SPI_processed, pg_sys::SPI_tuptable) };
        if table.is_null() {
            return Ok(None);
        }
        if processed == 0 {
            // SAFETY: this statement's result, not referenced anywhere else.
            unsafe { pg_sys::SPI_freetuptable(table) };
            return Ok(None);
        }
        // SAFETY: a non-null SPI_tuptable with at least one row; the Row frees it when dropped.
        let row = unsafe { Row { tuple: *(*table).vals, desc: (*table).tupdesc, table } };
        row.check_types(stmt)?;
        Ok(Some(row))
    }
}

impl Drop for SpiSession {
    fn drop(&mut self) {
        // On an ERROR, transaction abort closes the SPI connection (AtEOXact_SPI).
        if !std::thread::panicking() {
            // SAFETY: connected in `connect`.
            unsafe { pg_sys::SPI_finish() };
        }
    }
}

/// One result row. It owns its statement's result table and frees it when dropped: one SPI
/// session runs a statement or two per lease name, and `lease_refresh_many` many names, whose
/// results would otherwise stay allocated until the session ends (about 10 KB a name).
pub struct Row {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
    table: *mut pg_sys::SPITupleTable,
}

impl Drop for Row {
    fn drop(&mut self) {
        // On an ERROR, transaction abort frees it with the SPI connection.
        if !std::thread::panicking() {
            // SAFETY: this row's own result table, freed once; values read from it were copied.
            unsafe { pg_sys::SPI_freetuptable(self.table) };
        }
    }
}

impl Row {
    fn check_types(&self, stmt: Stmt) -> Result<(), LeaseError> {
        let expected = stmt.column_types();
        // SAFETY: `desc` is SPI's valid descriptor of this result; SPI_gettypeid reads column
        // `i` (1-based, at most `natts`) of it. Through SPI rather than the attribute array,
        // whose layout changed in PostgreSQL 18.
        let matches = unsafe {
            let natts = (*self.desc).natts as usize;
            natts == expected.len()
                && expected.iter().enumerate().all(|(i, t)| pg_sys::SPI_gettypeid(self.desc, i as i32 + 1) == *t)
        };
        if !matches {
            return Err(LeaseError::new(
                SqlState::DATA_CORRUPTED,
                format!("lease_lock: the lease table does not have the expected columns ({stmt:?})"),
            )
            .hint("The extension's tables were altered: reinstall the extension."));
        }
        Ok(())
    }

    /// Column `n` (0-based), whose type [`Row::check_types`] has checked.
    fn datum(&self, n: usize) -> Option<Datum> {
        let mut is_null = false;
        // SAFETY: `n` is within the checked descriptor; tuple and desc are SPI's current result.
        let value = unsafe { pg_sys::SPI_getbinval(self.tuple, self.desc, n as i32 + 1, &mut is_null) };
        (!is_null).then_some(value)
    }

    /// An `int8` or `timestamptz` column (both passed by value).
    fn i64(&self, n: usize) -> Option<i64> {
        self.datum(n).map(|d| d.value() as i64)
    }

    fn i32(&self, n: usize) -> Option<i32> {
        self.datum(n).map(|d| d.value() as i32)
    }

    fn oid(&self, n: usize) -> Option<Oid> {
        self.datum(n).map(|d| Oid::from(d.value() as u32))
    }

    /// A `uuid` column, copied out of SPI memory.
    fn uuid(&self, n: usize) -> Option<[u8; 16]> {
        // SAFETY: a non-null uuid datum points at its 16 bytes.
        self.datum(n).map(|d| unsafe { *d.cast_mut_ptr::<[u8; 16]>() })
    }

    fn not_null<T>(value: Option<T>, column: &str) -> Result<T, LeaseError> {
        value.ok_or_else(|| LeaseError::new(SqlState::DATA_CORRUPTED, format!("lease_lock: {column} is NULL")))
    }
}

/// The result of a tenure statement: the caller holds the lease.
pub struct Tenure {
    pub fencing_token: i64,
    pub expires_at: pg_sys::TimestampTz,
}

impl Tenure {
    pub fn read(row: &Row) -> Result<Tenure, LeaseError> {
        Ok(Tenure {
            fencing_token: Row::not_null(row.i64(0), "fencing_token")?,
            expires_at: Row::not_null(row.i64(1), "expires_at")?,
        })
    }
}

/// [`Stmt::CountNames`]'s row.
pub fn count(row: &Row) -> Result<i64, LeaseError> {
    Row::not_null(row.i64(0), "count")
}

/// [`Stmt::Release`]'s and [`Stmt::Evict`]'s row: the token of the tenure they ended.
pub fn ended_token(row: &Row) -> Result<i64, LeaseError> {
    Row::not_null(row.i64(0), "fencing_token")
}

/// A lease row as [`Stmt::Inspect`] and [`Stmt::LockForTenure`] read it.
pub struct LeaseRow {
    pub holder: Option<[u8; 16]>,
    pub holder_role: Option<Oid>,
    pub expires_at: pg_sys::TimestampTz,
    pub timeline: i32,
    /// The longest lease duration any tenure of this name was granted, in microseconds.
    pub max_duration_us: i64,
}

impl LeaseRow {
    pub fn read(row: &Row) -> Result<LeaseRow, LeaseError> {
        Ok(LeaseRow {
            holder: row.uuid(1),
            holder_role: row.oid(2),
            expires_at: Row::not_null(row.i64(3), "expires_at")?,
            timeline: Row::not_null(row.i32(4), "timeline")?,
            max_duration_us: Row::not_null(row.i64(5), "max_duration_us")?,
        })
    }
}

/// [`Stmt::Fence`]'s row.
pub struct FenceRow {
    pub fencing_token: i64,
    pub holder: Option<[u8; 16]>,
    pub holder_role: Option<Oid>,
    pub expires_at: pg_sys::TimestampTz,
}

impl FenceRow {
    pub fn read(row: &Row) -> Result<FenceRow, LeaseError> {
        Ok(FenceRow {
            fencing_token: Row::not_null(row.i64(0), "fencing_token")?,
            holder: row.uuid(1),
            holder_role: row.oid(2),
            expires_at: Row::not_null(row.i64(3), "expires_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_name_agrees_with_the_contract() {
        assert_eq!(super::SCHEMA_C.to_str(), Ok(lease_lock_contract::SCHEMA));
    }
}
