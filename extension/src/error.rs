//! Errors the lease functions raise on misuse, with the SQLSTATE clients match on.
//!
//! pgrx re-raises errors through its panic machinery and maps every SQLSTATE it does not know to
//! `XX000`, which would hide our own `LL001`. So the SQL entry points return these errors as
//! values and raise them themselves, at the outermost frame, once every Rust value is dropped
//! (see [`crate::sql_api`]). Errors that PostgreSQL raises inside SPI (lock timeouts,
//! serialization failures, cancellations) are caught there too and re-raised with their own
//! SQLSTATE, message, detail and hint ([`LeaseError::from_postgres`]).

use lease_lock_contract::sqlstate;
use pgrx::pg_sys;
use std::ffi::{c_char, c_int, CStr};

/// A five-character SQLSTATE packed the way PostgreSQL's `MAKE_SQLSTATE` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlState(c_int);

impl SqlState {
    const fn new(code: &str) -> Self {
        let code = code.as_bytes();
        assert!(code.len() == 5, "a SQLSTATE has five characters");
        let mut packed = 0;
        let mut i = 0;
        while i < 5 {
            packed += ((code[i] as c_int - b'0' as c_int) & 0x3F) << (6 * i);
            i += 1;
        }
        SqlState(packed)
    }

    /// `22004 null_value_not_allowed`: a NULL argument.
    pub const NULL_VALUE_NOT_ALLOWED: SqlState = SqlState::new(sqlstate::NULL_VALUE_NOT_ALLOWED);
    /// `22023 invalid_parameter_value`: a bad duration or lease name.
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState::new(sqlstate::INVALID_PARAMETER_VALUE);
    /// `25006 read_only_sql_transaction`: called on a standby.
    pub const READ_ONLY_SQL_TRANSACTION: SqlState = SqlState::new(sqlstate::READ_ONLY_SQL_TRANSACTION);
    /// `42501 insufficient_privilege`: another role's holder id.
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState::new(sqlstate::INSUFFICIENT_PRIVILEGE);
    /// `42704 undefined_object`: the extension's schema is missing.
    pub const UNDEFINED_OBJECT: SqlState = SqlState::new(sqlstate::UNDEFINED_OBJECT);
    /// `53400 configuration_limit_exceeded`: `lease_lock.max_lease_names` reached.
    pub const CONFIGURATION_LIMIT_EXCEEDED: SqlState = SqlState::new(sqlstate::CONFIGURATION_LIMIT_EXCEEDED);
    /// `XX001 data_corrupted`: the extension's tables were altered.
    pub const DATA_CORRUPTED: SqlState = SqlState::new(sqlstate::DATA_CORRUPTED);
    /// `LL001 lease_fence_rejected` (ours): the fencing token is not the current, unexpired tenure.
    pub const FENCE_REJECTED: SqlState = SqlState::new(sqlstate::FENCE_REJECTED);
}

/// An error to raise at `ERROR` level with a SQLSTATE, a message and optional detail and hint.
#[derive(Debug)]
pub struct LeaseError {
    pub sqlstate: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl LeaseError {
    pub fn new(sqlstate: SqlState, message: impl Into<String>) -> Self {
        LeaseError { sqlstate, message: message.into(), detail: None, hint: None }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same error as one PostgreSQL raised and pgrx caught, without pgrx's additions.
    pub fn from_postgres(report: &pgrx::pg_sys::panic::ErrorReportWithLevel) -> Self {
        LeaseError {
            sqlstate: SqlState(report.sql_error_code() as c_int),
            message: report.message().to_owned(),
            detail: report.detail().filter(|d| !d.is_empty()).map(str::to_owned),
            hint: report.hint().filter(|h| !h.is_empty()).map(str::to_owned),
        }
    }

    /// Copies the texts into palloc'd memory so that no Rust value needs dropping when the error
    /// is raised (raising longjmps over the caller's frame).
    pub fn into_pending(self) -> PendingError {
        PendingError {
            sqlstate: self.sqlstate,
            message: palloc_cstring(&self.message),
            detail: self.detail.as_deref().map_or(std::ptr::null_mut(), palloc_cstring),
            hint: self.hint.as_deref().map_or(std::ptr::null_mut(), palloc_cstring),
        }
    }
}

/// A [`LeaseError`] in C strings, ready to raise. Holds no Rust resources.
pub struct PendingError {
    sqlstate: SqlState,
    message: *mut c_char,
    detail: *mut c_char,
    hint: *mut c_char,
}

fn palloc_cstring(text: &str) -> *mut c_char {
    // Lease names and messages never hold NUL (text values cannot), but be safe: cut at one.
    let bytes = text.as_bytes();
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    // SAFETY: palloc returns `len + 1` writable bytes (or raises); `bytes` has at least `len`.
    unsafe {
        let buf = pg_sys::palloc(len + 1).cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, len);
        *buf.add(len) = 0;
        buf.cast()
    }
}

// elog.h's error API. pgrx keeps these out of its bindings; we need them to raise our own SQLSTATE.
unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errdetail(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
}

impl PendingError {
    /// Raises the error at `ERROR` level. Never returns: PostgreSQL longjmps to its handler.
    ///
    /// # Safety
    /// Call only from the outermost frame of a function called by PostgreSQL's fmgr, with no
    /// Rust value left that needs dropping (the longjmp skips destructors).
    pub unsafe fn raise(self, funcname: &'static CStr) -> ! {
        const PERCENT_S: &CStr = c"%s";
        // SAFETY: the elog API used as ereport(ERROR, ...) expands to; every string is a valid
        // NUL-terminated palloc'd or static C string passed through "%s", never as a format.
        // errfinish does not return at ERROR level (see the function's contract above).
        unsafe {
            if errstart(pgrx::PgLogLevel::ERROR as c_int, std::ptr::null()) {
                errcode(self.sqlstate.0);
                errmsg(PERCENT_S.as_ptr(), self.message);
                if !self.detail.is_null() {
                    errdetail(PERCENT_S.as_ptr(), self.detail);
                }
                if !self.hint.is_null() {
                    errhint(PERCENT_S.as_ptr(), self.hint);
                }
                errfinish(c"lease_lock".as_ptr(), 0, funcname.as_ptr());
            }
        }
        unreachable!("errfinish returned from an ERROR")
    }
}

#[cfg(test)]
mod tests {
    use super::SqlState;

    #[test]
    fn sqlstate_packing_matches_postgres() {
        // ERRCODE_NULL_VALUE_NOT_ALLOWED as PostgreSQL computes it.
        assert_eq!(SqlState::NULL_VALUE_NOT_ALLOWED.0, pgrx::PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED as i32);
        assert_eq!(SqlState::INSUFFICIENT_PRIVILEGE.0, pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32);
    }
}
