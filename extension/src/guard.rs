//! Scoped changes of backend state that each lease function makes for its own duration.
//!
//! Both guards restore on drop. On an error PostgreSQL's (sub)transaction abort restores the user
//! and the GUC nest level as well, exactly as it does for a `SECURITY DEFINER ... SET` function,
//! so the drop during unwinding only repeats what abort would do.

use pgrx::guc::GucSetting;
use pgrx::pg_sys;
use std::ffi::CString;

/// `lease_lock.lock_timeout`: the longest a lease function waits for a lock, in milliseconds.
///
/// Applied only when the session's own `lock_timeout` is off or longer, so a caller can always
/// ask for less. `0` leaves the session's `lock_timeout` alone.
pub static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// Runs the lease queries as the function's owner, like `SECURITY DEFINER`, while remembering
/// who the caller was.
///
/// We switch in Rust instead of declaring the functions `SECURITY DEFINER` because inside a
/// definer function the caller's `current_user` is no longer visible, and leases are bound to it
/// (a role must not refresh or release another role's lease). The switch uses the same flag as
/// `SECURITY DEFINER` (`SECURITY_LOCAL_USERID_CHANGE`), which forbids `SET ROLE` meanwhile.
pub struct AsOwner {
    saved_user: pg_sys::Oid,
    saved_context: i32,
}

impl AsOwner {
    pub fn enter(owner: pg_sys::Oid) -> AsOwner {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
        }
        AsOwner { saved_user, saved_context }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context) }
    }
}

/// Bounds every lock wait of one lease function call by `lease_lock.lock_timeout`.
///
/// This is a function-level `SET lock_timeout`, but paid only when needed: a session that
/// already has a `lock_timeout` at or below the bound (the Rust client sets one) skips the GUC
/// save/restore entirely, and no `search_path` is set (the queries are fully qualified instead),
/// which is what made a `SET` clause cost ~15% of a renewal.
pub struct LockWaitBound {
    nest_level: Option<i32>,
}

impl LockWaitBound {
    pub fn enter() -> LockWaitBound {
        let bound = LOCK_TIMEOUT_MS.get();
        let session = unsafe { pg_sys::LockTimeout };
        if bound <= 0 || (session > 0 && session <= bound) {
            return LockWaitBound { nest_level: None };
        }
        let value = CString::new(bound.to_string()).expect("an integer has no NUL");
        unsafe {
            let nest_level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"lock_timeout".as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            LockWaitBound { nest_level: Some(nest_level) }
        }
    }
}

impl Drop for LockWaitBound {
    fn drop(&mut self) {
        // While unwinding from an ERROR the (sub)transaction abort pops this nest level itself.
        if let Some(level) = self.nest_level {
            if !std::thread::panicking() {
                unsafe { pg_sys::AtEOXact_GUC(true, level) }
            }
        }
    }
}
