//! Scoped changes of backend state that each lease function makes for its own duration.
//!
//! Both guards restore on drop, also while an ERROR unwinds through the call. (For the user id,
//! PostgreSQL's (sub)transaction abort would restore it as well, as for `SECURITY DEFINER`.)

use pgrx::guc::GucSetting;
use pgrx::pg_sys;

/// `lease_lock.lock_timeout`: the longest a lease function waits for a lock, in milliseconds.
///
/// Applied only when the session's own `lock_timeout` is off or longer, so a caller can always
/// ask for less. `0` leaves the session's `lock_timeout` alone.
pub static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `lease_lock.max_lease_names`: how many lease names may exist (rows are never deleted, so this
/// bounds the table). `0` means no bound.
pub static MAX_LEASE_NAMES: GucSetting<i32> = GucSetting::<i32>::new(1_000_000);

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
        // SAFETY: reads and sets the backend's user id, as fmgr_security_definer does; Drop
        // restores it.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
            pg_sys::SetUserIdAndSecContext(owner, saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
        }
        AsOwner { saved_user, saved_context }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: puts back exactly what `enter` read.
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context) }
    }
}

/// Makes every plan of the lease queries an index scan on the primary key, whatever the table's
/// statistics, for the duration of one call.
///
/// The plans are generic and cached per backend, and PostgreSQL (re)plans them when they are
/// first prepared and whenever they are invalidated (an `ANALYZE`, a `search_path` change, a
/// cache reset). Planned while the table was analysed at one page, a lookup by name would be a
/// sequential scan for as long as the plan lives: measured 6.5 ms per renewal at 100,000 names
/// instead of 19 µs. Index scans cost the same at one row and stay flat at millions.
///
/// Like [`LockWaitBound`], this sets the planner's variables directly and restores them on
/// drop, without GUC save/restore.
///
/// The cost settings a role or database can change (`ALTER ROLE ... SET random_page_cost`) are
/// put at PostgreSQL's defaults too: a huge `random_page_cost` would otherwise outweigh the
/// penalty of a disabled scan, and the plan made then would stay cached. `plan_cache_mode` is
/// forced to generic plans, which the statements are prepared for, and JIT compilation is off.
pub struct IndexPlans {
    saved: PlannerSettings,
}

#[derive(Clone, Copy)]
struct PlannerSettings {
    enable: [bool; 3],
    costs: [f64; 5],
    effective_cache_size: i32,
    plan_cache_mode: i32,
    jit: bool,
}

impl PlannerSettings {
    /// PostgreSQL's defaults, with sequential and bitmap scans off.
    const FOR_LEASES: PlannerSettings = PlannerSettings {
        enable: [false, false, true],
        costs: [1.0, 4.0, 0.01, 0.005, 0.0025],
        effective_cache_size: 524_288, // 4 GB in 8 kB pages
        plan_cache_mode: pg_sys::PlanCacheMode::PLAN_CACHE_MODE_FORCE_GENERIC_PLAN as i32,
        // A role's jit_above_cost = 0 would compile these one-row plans on every call.
        jit: false,
    };

    /// # Safety
    /// Backend-local globals; call only in a backend.
    unsafe fn read() -> PlannerSettings {
        // SAFETY: plain reads of the planner's variables (the caller's contract).
        unsafe {
            PlannerSettings {
                enable: [pg_sys::enable_seqscan, pg_sys::enable_bitmapscan, pg_sys::enable_indexscan],
                costs: [
                    pg_sys::seq_page_cost,
                    pg_sys::random_page_cost,
                    pg_sys::cpu_tuple_cost,
                    pg_sys::cpu_index_tuple_cost,
                    pg_sys::cpu_operator_cost,
                ],
                effective_cache_size: pg_sys::effective_cache_size,
                plan_cache_mode: pg_sys::plan_cache_mode,
                jit: pg_sys::jit_enabled,
            }
        }
    }

    /// # Safety
    /// As [`PlannerSettings::read`].
    unsafe fn write(self) {
        // SAFETY: plain writes of the planner's variables (the caller's contract).
        unsafe {
            [pg_sys::enable_seqscan, pg_sys::enable_bitmapscan, pg_sys::enable_indexscan] = self.enable;
            [
                pg_sys::seq_page_cost,
                pg_sys::random_page_cost,
                pg_sys::cpu_tuple_cost,
                pg_sys::cpu_index_tuple_cost,
                pg_sys::cpu_operator_cost,
            ] = self.costs;
            pg_sys::effective_cache_size = self.effective_cache_size;
            pg_sys::plan_cache_mode = self.plan_cache_mode;
            pg_sys::jit_enabled = self.jit;
        }
    }
}

impl IndexPlans {
    pub fn enter() -> IndexPlans {
        // SAFETY: backends are single-threaded; these are the variables the planner reads.
        unsafe {
            let saved = PlannerSettings::read();
            PlannerSettings::FOR_LEASES.write();
            IndexPlans { saved }
        }
    }
}

impl Drop for IndexPlans {
    fn drop(&mut self) {
        // SAFETY: puts back what `enter` read.
        unsafe { self.saved.write() }
    }
}

/// Bounds every lock wait of one lease function call by `lease_lock.lock_timeout`.
///
/// The effect of a function-level `SET lock_timeout`, without its cost: PostgreSQL 15 saves and
/// restores GUCs for a `SET` clause (or `set_config_option` at a new nest level) by walking every
/// GUC at the end of each call, which measured ~9% of a renewal here. Instead the guard sets the
/// variable behind `lock_timeout` (`LockTimeout`, read when a lock wait starts) and puts the old
/// value back when dropped, which also happens while an ERROR unwinds through the call (pgrx
/// turns it into a Rust panic, and [`crate::sql_api`] catches it only above this guard). A
/// session whose own `lock_timeout` is already at or below the bound is left alone entirely.
pub struct LockWaitBound {
    saved: Option<i32>,
}

impl LockWaitBound {
    pub fn enter() -> LockWaitBound {
        let bound = LOCK_TIMEOUT_MS.get();
        // SAFETY: backends are single-threaded; this is the variable the GUC assigns.
        let session = unsafe { pg_sys::LockTimeout };
        if bound <= 0 || (session > 0 && session <= bound) {
            return LockWaitBound { saved: None };
        }
        // SAFETY: as above.
        unsafe { pg_sys::LockTimeout = bound };
        LockWaitBound { saved: Some(session) }
    }
}

impl Drop for LockWaitBound {
    fn drop(&mut self) {
        if let Some(session) = self.saved {
            // SAFETY: puts back what `enter` read.
            unsafe { pg_sys::LockTimeout = session };
        }
    }
}

/// An internal subtransaction around the taking of a new tenure, so that a caller that locked a
/// lease row and then finds it taken after all gives the lock back at once instead of keeping it
/// until its transaction ends (a refused caller must never hold a lock the holder's renewal waits
/// on). Rolled back unless [`SubTransaction::commit`] is called, also while an ERROR raised
/// inside it unwinds (a lock or statement timeout, a cancel, a serialization failure): the
/// error then leaves the caller's (sub)transaction exactly as the same error outside it would,
/// instead of an open subtransaction that the caller's abort or exception block would end in
/// its place.
///
/// As PL/pgSQL does for an exception block: the caller's memory context is kept, the resource
/// owner is put back when the subtransaction ends, and an error is rolled back only after it
/// was caught and PostgreSQL's error state flushed (pgrx does both before unwinding).
pub struct SubTransaction {
    owner: pg_sys::ResourceOwner,
    context: pg_sys::MemoryContext,
    open: bool,
}

impl SubTransaction {
    pub fn begin() -> SubTransaction {
        // SAFETY: inside a transaction; the saved context and owner outlive the subtransaction.
        unsafe {
            let (owner, context) = (pg_sys::CurrentResourceOwner, pg_sys::CurrentMemoryContext);
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            pg_sys::MemoryContextSwitchTo(context);
            SubTransaction { owner, context, open: true }
        }
    }

    pub fn commit(mut self) {
        // SAFETY: ends the subtransaction `begin` started, restoring what it saved.
        unsafe {
            pg_sys::ReleaseCurrentSubTransaction();
            self.restore();
        }
    }

    /// # Safety
    /// Only right after the subtransaction ended.
    unsafe fn restore(&mut self) {
        // SAFETY: the caller's contract.
        unsafe {
            pg_sys::MemoryContextSwitchTo(self.context);
            pg_sys::CurrentResourceOwner = self.owner;
        }
        self.open = false;
    }
}

impl Drop for SubTransaction {
    fn drop(&mut self) {
        if self.open {
            // SAFETY: rolls back the subtransaction `begin` started (its row locks go with it).
            // While unwinding from an ERROR, pgrx has already copied and flushed PostgreSQL's
            // error state, as PL/pgSQL does before its rollback in PG_CATCH.
            unsafe {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                self.restore();
            }
        }
    }
}
