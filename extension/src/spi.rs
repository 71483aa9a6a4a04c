//! The lease table's queries, prepared once per backend and schema and kept for reuse.
//!
//! Every name in the query texts is schema-qualified (the table by the extension's schema,
//! operators and functions by `pg_catalog`), so a caller's `search_path` cannot change what they
//! mean even when PostgreSQL re-plans them. That is what makes the owner switch in
//! [`crate::guard::AsOwner`] safe without a function-level `SET search_path`.

use pgrx::pg_sys::{self, Datum, Oid};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

/// The statements the lease functions run. Parameters are listed with each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stmt {
    /// Extend the caller's own tenure: unexpired, or untouched since a failover (a row written
    /// on an older timeline).
    /// `$1 name, $2 holder, $3 role, $4 now, $5 expires, $6 timeline` -> `fencing_token, expires_at`.
    Renew,
    /// Read the lease row without locking it. `$1 name` -> `fencing_token, holder, holder_role,
    /// expires_at, renewed_at, timeline`.
    Inspect,
    /// Lock the row for a new tenure unless someone else has it locked (a fenced transaction of
    /// the last tenure holds `FOR KEY SHARE`). Same columns as [`Stmt::Inspect`].
    LockForTenure,
    /// Start a new tenure on a row locked by [`Stmt::LockForTenure`].
    /// `$1 name, $2 holder, $3 role, $4 now, $5 expires, $6 timeline, $7 token floor` ->
    /// `fencing_token, expires_at`.
    Take,
    /// Create the row for a lease name never used before. Params as [`Stmt::Take`].
    Create,
    /// After a failover, give the holder of a row from an older timeline its full lease again
    /// from now (see `protocol.rs`). `$1 name, $2 now, $3 expires, $4 timeline` -> as Inspect.
    Rearm,
    /// End the caller's own tenure. `$1 name, $2 holder, $3 role, $4 now, $5 timeline` ->
    /// `fencing_token`.
    Release,
    /// End whoever's tenure (administrators): unexpired, or untouched since a failover.
    /// `$1 name, $2 now, $3 timeline` -> `fencing_token`.
    Evict,
    /// Lock the row so no new tenure can start before this transaction ends.
    /// `$1 name` -> `fencing_token, holder, expires_at`.
    Fence,
    /// Wake waiters. `$1 name`.
    Notify,
}

/// The channel `lease_release` and `lease_evict` notify, with the lease name as payload.
pub const RELEASE_CHANNEL: &str = "lease_lock_released";

const TEXT: Oid = pg_sys::TEXTOID;
const UUID: Oid = pg_sys::UUIDOID;
const OID: Oid = pg_sys::OIDOID;
const TSTZ: Oid = pg_sys::TIMESTAMPTZOID;
const INT4: Oid = pg_sys::INT4OID;
const INT8: Oid = pg_sys::INT8OID;

impl Stmt {
    fn arg_types(self) -> &'static [Oid] {
        match self {
            Stmt::Renew => &[TEXT, UUID, OID, TSTZ, TSTZ, INT4],
            Stmt::Take | Stmt::Create => &[TEXT, UUID, OID, TSTZ, TSTZ, INT4, INT8],
            Stmt::Rearm => &[TEXT, TSTZ, TSTZ, INT4],
            Stmt::Release => &[TEXT, UUID, OID, TSTZ, INT4],
            Stmt::Evict => &[TEXT, TSTZ, INT4],
            Stmt::Inspect | Stmt::LockForTenure | Stmt::Fence | Stmt::Notify => &[TEXT],
        }
    }

    /// The query text for the lease table `t` (already qualified and quoted).
    fn sql(self, t: &str) -> String {
        // `=`, `<>`, `>` and `+` spelled as OPERATOR(pg_catalog.x): see the module docs.
        const NAME_IS: &str = "lease_name OPERATOR(pg_catalog.=) $1";
        const MINE: &str = "holder OPERATOR(pg_catalog.=) $2 AND holder_role OPERATOR(pg_catalog.=) $3";
        const ROW: &str = "fencing_token, holder, holder_role, expires_at, renewed_at, timeline";
        match self {
            Stmt::Renew => format!(
                "UPDATE {t} SET renewed_at = $4, expires_at = $5, timeline = $6 \
                 WHERE {NAME_IS} AND {MINE} \
                 AND (expires_at OPERATOR(pg_catalog.>) $4 OR timeline OPERATOR(pg_catalog.<>) $6) \
                 RETURNING fencing_token, expires_at"
            ),
            Stmt::Inspect => format!("SELECT {ROW} FROM {t} WHERE {NAME_IS}"),
            Stmt::LockForTenure => {
                format!("SELECT {ROW} FROM {t} WHERE {NAME_IS} FOR UPDATE SKIP LOCKED")
            }
            Stmt::Take => format!(
                "UPDATE {t} SET fencing_token = GREATEST(fencing_token OPERATOR(pg_catalog.+) 1, $7), \
                 holder = $2, holder_role = $3, acquired_at = $4, renewed_at = $4, expires_at = $5, \
                 timeline = $6 WHERE {NAME_IS} RETURNING fencing_token, expires_at"
            ),
            Stmt::Create => format!(
                "INSERT INTO {t} (lease_name, fencing_token, holder, holder_role, acquired_at, \
                 renewed_at, expires_at, timeline) VALUES ($1, GREATEST(1, $7), $2, $3, $4, $4, $5, $6) \
                 ON CONFLICT (lease_name) DO NOTHING RETURNING fencing_token, expires_at"
            ),
            Stmt::Rearm => format!(
                "UPDATE {t} SET renewed_at = $2, expires_at = $3, timeline = $4 \
                 WHERE {NAME_IS} AND timeline OPERATOR(pg_catalog.<>) $4 RETURNING {ROW}"
            ),
            Stmt::Release => format!(
                "UPDATE {t} SET holder = NULL, holder_role = NULL, expires_at = $4 \
                 WHERE {NAME_IS} AND {MINE} \
                 AND (expires_at OPERATOR(pg_catalog.>) $4 OR timeline OPERATOR(pg_catalog.<>) $5) \
                 RETURNING fencing_token"
            ),
            Stmt::Evict => format!(
                "UPDATE {t} SET holder = NULL, holder_role = NULL, expires_at = $2 \
                 WHERE {NAME_IS} AND holder IS NOT NULL \
                 AND (expires_at OPERATOR(pg_catalog.>) $2 OR timeline OPERATOR(pg_catalog.<>) $3) \
                 RETURNING fencing_token"
            ),
            Stmt::Fence => format!(
                "SELECT fencing_token, holder, expires_at FROM {t} WHERE {NAME_IS} \
                 FOR KEY SHARE SKIP LOCKED"
            ),
            Stmt::Notify => format!("SELECT pg_catalog.pg_notify('{RELEASE_CHANNEL}', $1)"),
        }
    }
}

thread_local! {
    // Backend-local: PostgreSQL backends are single-threaded processes. Plans are keyed by the
    // extension's schema so a DROP/CREATE EXTENSION in another schema in the same session gets
    // fresh ones; a re-created table in the same schema is picked up by plan invalidation.
    static PLANS: RefCell<HashMap<(Oid, Stmt), pg_sys::SPIPlanPtr>> = RefCell::new(HashMap::new());
}

/// One SPI connection for the duration of a lease function call.
pub struct SpiSession {
    schema: Oid,
}

impl SpiSession {
    pub fn connect(schema: Oid) -> SpiSession {
        unsafe { pg_sys::SPI_connect() };
        SpiSession { schema }
    }

    fn plan(&self, stmt: Stmt) -> pg_sys::SPIPlanPtr {
        let key = (self.schema, stmt);
        if let Some(plan) = PLANS.with(|plans| plans.borrow().get(&key).copied()) {
            return plan;
        }
        let table = unsafe {
            let schema = pg_sys::get_namespace_name(self.schema);
            let quoted = pg_sys::quote_identifier(schema);
            format!("{}.leases", std::ffi::CStr::from_ptr(quoted).to_string_lossy())
        };
        let sql = CString::new(stmt.sql(&table)).expect("query text has no NUL");
        let types = stmt.arg_types();
        let plan = unsafe {
            // A generic plan from the first call: these are primary-key lookups, a custom plan
            // per call would only add planning time.
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
        PLANS.with(|plans| plans.borrow_mut().insert(key, plan));
        plan
    }

    /// Runs `stmt` and returns its first row, if any.
    pub fn run(&self, stmt: Stmt, args: &[Datum]) -> Option<Row> {
        let plan = self.plan(stmt);
        debug_assert_eq!(args.len(), stmt.arg_types().len());
        let mut values = args.to_vec();
        unsafe {
            // Every statement touches at most one row: the lease name is the primary key.
            let status = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), std::ptr::null(), false, 0);
            if status < 0 {
                pgrx::error!("lease_lock: {stmt:?} failed: SPI result {status}");
            }
            if pg_sys::SPI_processed == 0 || pg_sys::SPI_tuptable.is_null() {
                return None;
            }
            let table = &*pg_sys::SPI_tuptable;
            Some(Row { tuple: *table.vals, desc: table.tupdesc })
        }
    }
}

impl Drop for SpiSession {
    fn drop(&mut self) {
        // On an ERROR, transaction abort closes the SPI connection (AtEOXact_SPI).
        if !std::thread::panicking() {
            unsafe { pg_sys::SPI_finish() };
        }
    }
}

/// One result row, valid until the next [`SpiSession::run`] or the end of the session.
pub struct Row {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl Row {
    fn datum(&self, column: i32) -> Option<Datum> {
        let mut is_null = false;
        let value = unsafe { pg_sys::SPI_getbinval(self.tuple, self.desc, column, &mut is_null) };
        (!is_null).then_some(value)
    }

    /// An `int8` or `timestamptz` column (both passed by value).
    pub fn i64(&self, column: i32) -> Option<i64> {
        self.datum(column).map(|d| d.value() as i64)
    }

    /// An `int4` column.
    pub fn i32(&self, column: i32) -> Option<i32> {
        self.datum(column).map(|d| d.value() as i32)
    }

    pub fn oid(&self, column: i32) -> Option<Oid> {
        self.datum(column).map(|d| Oid::from(d.value() as u32))
    }

    /// A `uuid` column, copied out of SPI memory.
    pub fn uuid(&self, column: i32) -> Option<[u8; 16]> {
        self.datum(column).map(|d| unsafe { *d.cast_mut_ptr::<[u8; 16]>() })
    }
}
