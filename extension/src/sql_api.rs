//! The C entry points behind the SQL functions: argument checks, the per-call setup, results.
//!
//! These are plain version-1 C functions rather than `#[pg_extern]` ones, for three reasons:
//! - our own SQLSTATE (`LL001`) must reach the client, and pgrx turns SQLSTATEs it does not know
//!   into `XX000` when an error passes through it; so errors are returned as values and raised
//!   here, in the outermost frame, after every Rust value is dropped;
//! - the SQL signatures (OUT parameters: exactly one row, no set-returning machinery) are
//!   written by hand in `lib.rs`;
//! - per-function state (the owner) and the result row's descriptor are cached per backend, so a
//!   `SELECT * FROM lease_refresh(...)` does no catalog lookups after the session's first call.

use crate::error::{LeaseError, PendingError, SqlState};
use crate::guard::{AsOwner, IndexPlans, LockWaitBound};
use crate::protocol::{Grant, Holder, LeaseCall, LeaseName};
use crate::spi::SpiSession;
use pgrx::pg_guard;
use pgrx::pg_sys::{self, Datum, FunctionCallInfo, Oid};
use std::ffi::CStr;

use lease_lock_contract::{MAX_DURATION_MICROS, MAX_NAME_BYTES};

/// What a lease function ends with once all its Rust values are gone.
pub enum Outcome {
    Return(Datum),
    Raise(PendingError),
}

/// Defines the exported C symbol `$sym` (and its `pg_finfo_` record) around `$body`, a
/// `fn(FunctionCallInfo) -> Result<Datum, LeaseError>`.
macro_rules! sql_function {
    ($sym:ident, $finfo:ident, $body:path) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub unsafe extern "C-unwind" fn $sym(fcinfo: FunctionCallInfo) -> Datum {
            #[pg_guard]
            #[allow(improper_ctypes_definitions)]
            unsafe extern "C-unwind" fn guarded(fcinfo: FunctionCallInfo) -> Outcome {
                run_catching_postgres_errors(|| $body(fcinfo))
            }
            // SAFETY: fmgr called us with a valid fcinfo; `guarded` turns PostgreSQL errors
            // into Rust unwinding (pg_guard) and back into an Outcome.
            match unsafe { guarded(fcinfo) } {
                Outcome::Return(datum) => datum,
                // SAFETY: nothing in this frame needs dropping; the caller is fmgr.
                Outcome::Raise(error) => unsafe {
                    error.raise(CStr::from_bytes_with_nul_unchecked(concat!(stringify!($sym), "\0").as_bytes()))
                },
            }
        }
    };
}

/// Runs a function body and turns both its own errors and errors PostgreSQL raised inside it
/// (lock timeouts, cancellations, serialization failures) into an [`Outcome`]. The latter are
/// re-raised with their SQLSTATE, message, detail and hint as they were: letting them pass
/// through pgrx would add a Rust backtrace to their DETAIL when `RUST_BACKTRACE` is set in the
/// server's environment. Rust panics (bugs) still go to pgrx, which reports them as `XX000`.
fn run_catching_postgres_errors(body: impl FnOnce() -> Result<Datum, LeaseError>) -> Outcome {
    use pgrx::pg_sys::panic::CaughtError;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(datum)) => Outcome::Return(datum),
        Ok(Err(error)) => Outcome::Raise(error.into_pending()),
        Err(payload) => match payload.downcast::<CaughtError>() {
            Ok(caught) => match *caught {
                CaughtError::PostgresError(report) => Outcome::Raise(LeaseError::from_postgres(&report).into_pending()),
                other => other.rethrow(),
            },
            Err(payload) => std::panic::resume_unwind(payload),
        },
    }
}

sql_function!(lease_acquire, pg_finfo_lease_acquire, acquire);
sql_function!(lease_refresh, pg_finfo_lease_refresh, refresh);
sql_function!(lease_release, pg_finfo_lease_release, release);
sql_function!(lease_fence, pg_finfo_lease_fence, fence);
sql_function!(lease_evict, pg_finfo_lease_evict, evict);
sql_function!(lease_refresh_many, pg_finfo_lease_refresh_many, refresh_many);

/// Most names one `lease_refresh_many` call takes (SQLSTATE 22023 beyond): bounds one call's
/// time (about 10 µs a name) and the locks it holds until its transaction ends.
pub const MAX_BATCH_NAMES: usize = 100_000;

fn acquire(fcinfo: FunctionCallInfo) -> Result<Datum, LeaseError> {
    tenure_call(fcinfo, |call, holder, duration| call.acquire(holder, duration))
}

fn refresh(fcinfo: FunctionCallInfo) -> Result<Datum, LeaseError> {
    tenure_call(fcinfo, |call, holder, duration| call.refresh(holder, duration))
}

/// `(holder uuid, lease_duration interval, lease_name text)` -> `(acquired, fencing_token,
/// expires_at)`.
fn tenure_call(
    fcinfo: FunctionCallInfo,
    op: impl FnOnce(&LeaseCall, &Holder, i64) -> Result<Grant, LeaseError>,
) -> Result<Datum, LeaseError> {
    let holder = holder_arg(fcinfo, 0)?;
    let duration = duration_arg(fcinfo, 1)?;
    let name = name_arg(fcinfo, 2)?;
    let grant = with_call(&CallSite::get(fcinfo), name, |call| op(call, &holder, duration))?;
    Ok(grant_datum(&grant))
}

/// `(holder uuid, lease_duration interval, lease_names text[])` -> a row `(lease_name,
/// acquired, fencing_token, expires_at)` per element, in order: `lease_refresh` of each name, all
/// in one statement (one transaction, one WAL flush at commit), each with its own guarantees.
fn refresh_many(fcinfo: FunctionCallInfo) -> Result<Datum, LeaseError> {
    let holder = holder_arg(fcinfo, 0)?;
    let duration = duration_arg(fcinfo, 1)?;
    let names = names_arg(fcinfo, 2)?;
    let grants = with_calls(&CallSite::get(fcinfo), |calls| {
        names.iter().map(|&name| calls.call(name).refresh(&holder, duration)).collect::<Result<Vec<_>, _>>()
    })?;
    // After the SPI session has ended: the result goes into the caller's per-query memory.
    // SAFETY: fmgr's fcinfo of a set-returning function; InitMaterializedSRF raises an error
    // (caught by the caller) if the call site does not accept a materialized set.
    unsafe {
        pg_sys::InitMaterializedSRF(fcinfo, 0);
        let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
        for (name, grant) in names.iter().zip(&grants) {
            let mut values = [
                name.datum,
                Datum::from(grant.acquired),
                Datum::from(grant.fencing_token.unwrap_or(0)),
                Datum::from(grant.expires_at.unwrap_or(0)),
            ];
            let mut nulls = [false, false, grant.fencing_token.is_none(), grant.expires_at.is_none()];
            // SAFETY: four values and nulls for the declared four-column result.
            pg_sys::tuplestore_putvalues(
                (*rsinfo).setResult,
                (*rsinfo).setDesc,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
        }
    }
    Ok(Datum::from(0))
}

/// `(holder uuid, lease_name text)` -> `boolean`.
fn release(fcinfo: FunctionCallInfo) -> Result<Datum, LeaseError> {
    let holder = holder_arg(fcinfo, 0)?;
    let name = name_arg(fcinfo, 1)?;
    let released = with_call(&CallSite::get(fcinfo), name, |call| call.release(&holder))?;
    Ok(Datum::from(released))
}

/// `(fencing_token bigint, lease_name text)` -> `void`.
fn fence(fcinfo: FunctionCallInfo) -> Result<Datum, LeaseError> {
    let token = arg(fcinfo, 0).ok_or_else(|| null_argument("fencing_token"))?.value() as i64;
    let name = name_arg(fcinfo, 1)?;
    with_call(&CallSite::get(fcinfo), name, |call| call.fence(token))?;
    Ok(Datum::from(0))
}

/// `(lease_name text)` -> `boolean`.
fn evict(fcinfo: FunctionCallInfo) -> Result<Datum, LeaseError> {
    let name = name_arg(fcinfo, 0)?;
    let evicted = with_call(&CallSite::get(fcinfo), name, |call| call.evict())?;
    Ok(Datum::from(evicted))
}

/// Runs `op` on one lease name: see [`with_calls`].
fn with_call<T>(
    site: &CallSite,
    name: LeaseName,
    op: impl FnOnce(&LeaseCall) -> Result<T, LeaseError>,
) -> Result<T, LeaseError> {
    with_calls(site, |calls| op(&calls.call(name)))
}

/// What the calls of one function invocation share: the SPI session, the caller's role and
/// the timeline.
struct Calls<'a> {
    spi: &'a SpiSession,
    role: Oid,
    timeline: i32,
}

impl<'a> Calls<'a> {
    /// The call for `name`, at the clock's time now: in a batch each name is judged at its own
    /// moment, so a lease that expired while the batch ran is not renewed.
    fn call(&self, name: LeaseName<'a>) -> LeaseCall<'a> {
        // SAFETY: reads the system clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        LeaseCall { spi: self.spi, name, role: self.role, now, timeline: self.timeline }
    }
}

/// Runs `op` as the function's owner, with lock waits bounded, index plans forced and an SPI
/// connection open.
fn with_calls<T>(site: &CallSite, op: impl FnOnce(&Calls) -> Result<T, LeaseError>) -> Result<T, LeaseError> {
    // SAFETY: a read of shared recovery state, valid in any backend.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(LeaseError::new(SqlState::READ_ONLY_SQL_TRANSACTION, "leases cannot be taken on a standby server")
            .hint("Connect to the primary (libpq: target_session_attrs=read-write)."));
    }
    // SAFETY: reads the backend's current user id (set for any backend running a query).
    let role = unsafe { pg_sys::GetUserId() };
    // SAFETY: valid outside recovery (checked above).
    let timeline = unsafe { pg_sys::GetWALInsertionTimeLine() } as i32;
    let _owner = AsOwner::enter(site.owner);
    let _bound = LockWaitBound::enter();
    let _plans = IndexPlans::enter();
    let spi = SpiSession::connect()?;
    op(&Calls { spi: &spi, role, timeline })
}

fn arg(fcinfo: FunctionCallInfo, n: usize) -> Option<Datum> {
    // SAFETY: fmgr passes `nargs` arguments; `n` is below the SQL signature's argument count.
    unsafe {
        let args = (*fcinfo).args.as_slice((*fcinfo).nargs as usize);
        (!args[n].isnull).then_some(args[n].value)
    }
}

fn null_argument(name: &str) -> LeaseError {
    LeaseError::new(SqlState::NULL_VALUE_NOT_ALLOWED, format!("{name} must not be NULL"))
}

fn invalid(message: impl Into<String>) -> LeaseError {
    LeaseError::new(SqlState::INVALID_PARAMETER_VALUE, message)
}

fn holder_arg(fcinfo: FunctionCallInfo, n: usize) -> Result<Holder, LeaseError> {
    let datum = arg(fcinfo, n).ok_or_else(|| null_argument("holder"))?;
    // SAFETY: a non-null uuid datum points at its 16 bytes.
    let bytes = unsafe { *datum.cast_mut_ptr::<[u8; 16]>() };
    Ok(Holder { datum, bytes })
}

/// The lease duration in microseconds: positive, at most a day, and free of months (which have
/// no fixed length). Days count as 24 hours.
fn duration_arg(fcinfo: FunctionCallInfo, n: usize) -> Result<i64, LeaseError> {
    let datum = arg(fcinfo, n).ok_or_else(|| null_argument("lease_duration"))?;
    // SAFETY: a non-null interval datum points at an Interval.
    let interval = unsafe { &*datum.cast_mut_ptr::<pg_sys::Interval>() };
    if interval.month != 0 {
        return Err(invalid("lease_duration must not contain months or years")
            .hint("Use days, hours, minutes or seconds: a month has no fixed length."));
    }
    let micros =
        i64::from(interval.day).checked_mul(24 * 3600 * 1_000_000).and_then(|days| days.checked_add(interval.time));
    match micros {
        Some(m) if m <= 0 => Err(invalid("lease_duration must be positive")),
        Some(m) if m <= MAX_DURATION_MICROS => Ok(m),
        _ => Err(invalid("lease_duration must be at most 1 day")),
    }
}

/// The lease names of a `text[]` argument: one-dimensional, at most [`MAX_BATCH_NAMES`], none
/// NULL, each valid as a lease name ([`lease_name`]).
fn names_arg<'a>(fcinfo: FunctionCallInfo, n: usize) -> Result<Vec<LeaseName<'a>>, LeaseError> {
    let datum = arg(fcinfo, n).ok_or_else(|| null_argument("lease_names"))?;
    // SAFETY: a non-null text[] datum, detoasted into the call's memory context; its elements
    // are deconstructed (pointing into that copy) into arrays palloc'd there too.
    let (elements, nulls) = unsafe {
        let array = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
        if (*array).ndim > 1 {
            return Err(invalid("lease_names must be a one-dimensional array"));
        }
        let (mut elements, mut nulls, mut count) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
        pg_sys::deconstruct_array(
            array,
            pg_sys::TEXTOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
            &mut elements,
            &mut nulls,
            &mut count,
        );
        let count = count as usize;
        if count == 0 {
            return Ok(Vec::new());
        }
        (std::slice::from_raw_parts(elements, count), std::slice::from_raw_parts(nulls, count))
    };
    if elements.len() > MAX_BATCH_NAMES {
        return Err(invalid(format!("lease_names must have at most {MAX_BATCH_NAMES} names, not {}", elements.len()))
            .hint("Renew in several calls."));
    }
    if nulls.iter().any(|&null| null) {
        return Err(null_argument("an element of lease_names"));
    }
    let names: Vec<LeaseName> = elements.iter().map(|&element| lease_name(element)).collect::<Result<_, _>>()?;
    // A name twice would renew one row twice in one transaction, each time a new row version
    // that the next must step over: quadratic in the repeats.
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    // SAFETY: each datum is a detoasted text datum (`lease_name`), alive for the call.
    if names.iter().any(|name| !seen.insert(unsafe { pgrx::varlena::varlena_to_byte_slice(name.datum.cast_mut_ptr()) }))
    {
        return Err(invalid("lease_names must not name a lease twice"));
    }
    Ok(names)
}

/// The lease name as a detoasted `text` datum and as `&str`: 1 to [`MAX_NAME_BYTES`] bytes.
fn name_arg<'a>(fcinfo: FunctionCallInfo, n: usize) -> Result<LeaseName<'a>, LeaseError> {
    lease_name(arg(fcinfo, n).ok_or_else(|| null_argument("lease_name"))?)
}

/// A non-null `text` datum as a lease name: see [`name_arg`].
fn lease_name<'a>(datum: Datum) -> Result<LeaseName<'a>, LeaseError> {
    // SAFETY: a non-null text datum; the detoasted copy lives in the call's memory context,
    // which outlives the call.
    unsafe {
        let text = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let bytes = pgrx::varlena::varlena_to_byte_slice(text);
        if bytes.is_empty() {
            return Err(invalid("lease_name must not be empty"));
        }
        if bytes.len() > MAX_NAME_BYTES {
            return Err(invalid(format!("lease_name must be at most {MAX_NAME_BYTES} bytes, not {}", bytes.len())));
        }
        // The server already checked the encoding; lossy only matters for non-UTF8 databases,
        // where the name is used in messages only.
        let name = std::str::from_utf8(bytes).unwrap_or("(lease name)");
        Ok(LeaseName { datum: Datum::from(text), text: name })
    }
}

/// What every call of one of our functions needs: its owner, looked up once per backend and
/// function (a `FunctionScan` gets a fresh `FmgrInfo` each execution, so `fn_extra` would not
/// last), and forgotten when `pg_proc` changes (`ALTER FUNCTION ... OWNER TO`).
#[derive(Clone, Copy)]
struct CallSite {
    /// The function's owner, whose rights the lease queries run with.
    owner: Oid,
}

thread_local! {
    // Backend-local (backends are single-threaded processes). Plain values only: an
    // invalidation can arrive in the middle of a call (while SPI takes a lock), so nothing a
    // call may still be using is ever freed by the callback.
    static CALL_SITES: std::cell::RefCell<std::collections::HashMap<Oid, CallSite>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
    static CALLBACK_REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    // The blessed descriptor of `(acquired boolean, fencing_token bigint, expires_at
    // timestamptz)`, made once per backend in `TopMemoryContext` and never freed. It depends on
    // nothing in the catalogs, so no invalidation concerns it; a function re-declared with
    // other OUT types gets PostgreSQL's own "return type mismatch" error.
    static GRANT_DESC: std::cell::Cell<pg_sys::TupleDesc> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// A `pg_proc` change may change a function's owner: forget the cached owners (they are cheap
/// to look up again). Frees nothing.
#[pg_guard]
unsafe extern "C-unwind" fn forget_call_sites(_arg: Datum, _cache: i32, _hash: u32) {
    CALL_SITES.with(|sites| {
        if let Ok(mut sites) = sites.try_borrow_mut() {
            sites.clear();
        }
    });
}

impl CallSite {
    fn get(fcinfo: FunctionCallInfo) -> CallSite {
        // SAFETY: fmgr passes a valid fcinfo with its flinfo.
        let fn_oid = unsafe { (*(*fcinfo).flinfo).fn_oid };
        if let Some(site) = CALL_SITES.with(|sites| sites.borrow().get(&fn_oid).copied()) {
            return site;
        }
        if !CALLBACK_REGISTERED.with(|r| r.replace(true)) {
            // SAFETY: registers a callback with the signature syscache callbacks have.
            unsafe {
                pg_sys::CacheRegisterSyscacheCallback(
                    pg_sys::SysCacheIdentifier::PROCOID as _,
                    Some(forget_call_sites),
                    Datum::from(0),
                );
            }
        }
        let site = CallSite { owner: function_owner(fn_oid) };
        CALL_SITES.with(|sites| sites.borrow_mut().insert(fn_oid, site));
        site
    }
}

fn function_owner(fn_oid: Oid) -> Oid {
    // SAFETY: a syscache lookup inside a transaction, released before returning.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::PROCOID as _, Datum::from(fn_oid));
        if tuple.is_null() {
            pgrx::error!("lease_lock: cache lookup failed for function {}", fn_oid.to_u32());
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_proc>(tuple);
        let owner = (*form).proowner;
        pg_sys::ReleaseSysCache(tuple);
        owner
    }
}

/// The descriptor of the `(acquired, fencing_token, expires_at)` row: see [`GRANT_DESC`].
fn grant_desc() -> pg_sys::TupleDesc {
    let desc = GRANT_DESC.get();
    if !desc.is_null() {
        return desc;
    }
    // SAFETY: builds a three-column descriptor in TopMemoryContext (lives as long as the
    // backend); BlessTupleDesc registers it as an anonymous record type.
    let desc = unsafe {
        let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        let desc = pg_sys::CreateTemplateTupleDesc(3);
        for (n, (name, ty)) in [
            (c"acquired", pg_sys::BOOLOID),
            (c"fencing_token", pg_sys::INT8OID),
            (c"expires_at", pg_sys::TIMESTAMPTZOID),
        ]
        .into_iter()
        .enumerate()
        {
            pg_sys::TupleDescInitEntry(desc, (n + 1) as pg_sys::AttrNumber, name.as_ptr(), ty, -1, 0);
        }
        let desc = pg_sys::BlessTupleDesc(desc);
        pg_sys::MemoryContextSwitchTo(old);
        desc
    };
    GRANT_DESC.set(desc);
    desc
}

fn grant_datum(grant: &Grant) -> Datum {
    let mut values = [
        Datum::from(grant.acquired),
        Datum::from(grant.fencing_token.unwrap_or(0)),
        Datum::from(grant.expires_at.unwrap_or(0)),
    ];
    let mut nulls = [false, grant.fencing_token.is_none(), grant.expires_at.is_none()];
    // SAFETY: three values and nulls for the three-column descriptor; the tuple is palloc'd in
    // the caller's context, as fmgr expects of a composite result.
    unsafe {
        let tuple = pg_sys::heap_form_tuple(grant_desc(), values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
    }
}
