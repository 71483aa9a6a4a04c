//! `lease_lock`: database leases with fencing tokens, for leader election on PostgreSQL.
//!
//! `CREATE EXTENSION lease_lock` gives `lease_acquire`, `lease_refresh`, `lease_release`,
//! `lease_fence`, `lease_evict` and the view `lease_status`. Each function is one round trip that
//! does the whole step of the protocol server-side, atomically, on the database's clock
//! (`clock_timestamp()`). See README.md for the contract; `protocol.rs` for how it is kept.

use pgrx::prelude::*;

mod error;
mod guard;
mod protocol;
mod spi;
mod sql_api;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    pgrx::GucRegistry::define_int_guc(
        c"lease_lock.lock_timeout",
        c"Longest lock wait of a lease function call.",
        c"Applied when the session's lock_timeout is off or longer. 0 keeps the session's setting.",
        &guard::LOCK_TIMEOUT_MS,
        0,
        i32::MAX,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::UNIT_MS,
    );
}

extension_sql!(
    r#"
-- One row per lease name, never deleted: fencing_token grows with each tenure of that name, and
-- keeping the row is what keeps tokens growing for the life of the database.
CREATE TABLE leases (
    lease_name    text        PRIMARY KEY,
    fencing_token bigint      NOT NULL,
    holder        uuid,                   -- NULL once released or evicted
    holder_role   oid,                    -- the role that took the tenure
    acquired_at   timestamptz NOT NULL,   -- start of the current (or last) tenure
    renewed_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    timeline      integer     NOT NULL,   -- WAL timeline of the last write (see protocol.rs)
    -- Makes fencing_token a key column: lease_fence's FOR KEY SHARE then blocks a new tenure
    -- (which changes the key) but not the holder's renewals (which do not).
    CONSTRAINT leases_tenure_key UNIQUE (lease_name, fencing_token)
    -- No CHECK constraints: PostgreSQL parses them from text for every UPDATE, which measured a
    -- few percent of a renewal; only the lease functions write this table.
) WITH (fillfactor = 50);  -- room on the page keeps every renewal a HOT update
COMMENT ON TABLE leases IS 'lease_lock: one row per lease name; write it only through the lease_* functions';

-- Keep the rows (and so the token history) in pg_dump output.
SELECT pg_catalog.pg_extension_config_dump('leases', '');

-- Ordinary roles get no access to the table: they use the functions.
REVOKE ALL ON leases FROM PUBLIC;
"#,
    name = "lease_table",
    bootstrap
);

extension_sql!(
    r#"
CREATE FUNCTION lease_acquire(
    holder uuid, lease_duration interval, lease_name text DEFAULT 'default',
    OUT acquired boolean, OUT fencing_token bigint, OUT expires_at timestamptz)
RETURNS record VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_acquire';
COMMENT ON FUNCTION lease_acquire(uuid, interval, text) IS
    'Take the lease if it is free, expired or released (new token), or renew it if holder holds it';

CREATE FUNCTION lease_refresh(
    holder uuid, lease_duration interval, lease_name text DEFAULT 'default',
    OUT acquired boolean, OUT fencing_token bigint, OUT expires_at timestamptz)
RETURNS record VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_refresh';
COMMENT ON FUNCTION lease_refresh(uuid, interval, text) IS
    'Extend the unexpired lease holder holds; never takes a free or expired lease';

CREATE FUNCTION lease_release(holder uuid, lease_name text DEFAULT 'default')
RETURNS boolean VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_release';
COMMENT ON FUNCTION lease_release(uuid, text) IS
    'Free the lease holder holds and NOTIFY lease_lock_released with the lease name';

CREATE FUNCTION lease_fence(fencing_token bigint, lease_name text DEFAULT 'default')
RETURNS void VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_fence';
COMMENT ON FUNCTION lease_fence(bigint, text) IS
    'Raise SQLSTATE LL001 unless fencing_token is the current unexpired tenure; else block new tenures until this transaction ends';

CREATE FUNCTION lease_evict(lease_name text)
RETURNS boolean VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_evict';
COMMENT ON FUNCTION lease_evict(text) IS
    'Administrators: end the current tenure whoever holds it and NOTIFY lease_lock_released';

-- Using leases is a privilege the administrator grants (see README, "Privileges"): a role that
-- can call lease_acquire can take any free lease name.
REVOKE EXECUTE ON FUNCTION
    lease_acquire(uuid, interval, text), lease_refresh(uuid, interval, text),
    lease_release(uuid, text), lease_fence(bigint, text), lease_evict(text)
FROM PUBLIC;

CREATE VIEW lease_status AS
SELECT lease_name,
       holder,
       fencing_token,
       expires_at,
       holder IS NOT NULL AND expires_at > pg_catalog.clock_timestamp() AS held,
       holder_role::pg_catalog.regrole AS holder_role,
       acquired_at,
       renewed_at,
       timeline
FROM leases;
COMMENT ON VIEW lease_status IS 'lease_lock: every lease, its holder and whether it is held now';
-- Read-only and shows nothing secret (holder ids cannot be used by other roles), so everyone
-- may watch, like pg_locks.
GRANT SELECT ON lease_status TO PUBLIC;
"#,
    name = "lease_functions",
    requires = ["lease_table"],
    finalize
);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
