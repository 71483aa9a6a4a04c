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
    pgrx::GucRegistry::define_int_guc(
        c"lease_lock.max_lease_names",
        c"Most lease names that may exist; a new name beyond it fails with SQLSTATE 53400.",
        c"Lease rows are never deleted (they keep the token history), so this bounds the table. 0: no bound.",
        &guard::MAX_LEASE_NAMES,
        0,
        i32::MAX,
        pgrx::GucContext::Suset,
        pgrx::GucFlags::default(),
    );
}

extension_sql!(
    r#"
-- Everything lives in the schema lease_lock (fixed by the control file), and that schema must be
-- a superuser's and nobody else's to create in: the lease functions run with their owner's
-- rights, and PostgreSQL looks the names in their cached plans up again whenever a plan is
-- invalidated, so whoever could rename or create objects there could swap the table those
-- plans write (docs/security.md). CREATE EXTENSION creates the schema, owned by the installing
-- superuser, unless it exists; an existing one must pass this check.
DO $check$
BEGIN
    IF EXISTS (
        SELECT FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
        WHERE n.nspname OPERATOR(pg_catalog.=) 'lease_lock' AND NOT r.rolsuper)
    THEN
        RAISE EXCEPTION 'schema "lease_lock" is not owned by a superuser'
            USING ERRCODE = '42501',
                  DETAIL = 'Its owner could replace what the lease functions use, with their rights.',
                  HINT = 'DROP SCHEMA lease_lock CASCADE (after checking what is in it), then CREATE EXTENSION lease_lock: it creates the schema itself.';
    END IF;
    -- An existing schema must also be empty: objects someone else put there (say an overload
    -- lease_lock.lease_fence(integer, text), which an integer literal would pick over the real
    -- one) would sit next to the extension's and be called by its users.
    IF EXISTS (
        SELECT FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_namespace n
            ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
           AND d.refobjid OPERATOR(pg_catalog.=) n.oid
        WHERE n.nspname OPERATOR(pg_catalog.=) 'lease_lock'
          -- the extension being created depends on its schema too
          AND d.classid OPERATOR(pg_catalog.<>) 'pg_catalog.pg_extension'::pg_catalog.regclass)
    THEN
        RAISE EXCEPTION 'schema "lease_lock" already contains objects'
            USING ERRCODE = '42501',
                  DETAIL = 'Whoever created them could have them called instead of the extension''s functions.',
                  HINT = 'DROP SCHEMA lease_lock CASCADE (after checking what is in it), then CREATE EXTENSION lease_lock: it creates the schema itself.';
    END IF;
    IF EXISTS (
        SELECT FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
        WHERE n.nspname OPERATOR(pg_catalog.=) 'lease_lock'
          AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
          AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                            WHERE r.oid OPERATOR(pg_catalog.=) a.grantee), false))
    THEN
        RAISE EXCEPTION 'a role other than a superuser may create objects in schema "lease_lock"'
            USING ERRCODE = '42501',
                  HINT = 'Revoke it (from default privileges too: ALTER DEFAULT PRIVILEGES ... REVOKE CREATE ON SCHEMAS), then CREATE EXTENSION lease_lock.';
    END IF;
END
$check$;

-- One row per lease name, never deleted: fencing_token grows with each tenure of that name, and
-- keeping the row is what keeps tokens growing for the life of the database.
CREATE TABLE lease_lock.leases (
    lease_name      text        PRIMARY KEY,
    fencing_token   bigint      NOT NULL,
    holder          uuid,                   -- NULL once released or evicted
    -- The role that took the tenure. regrole, not oid: pg_dump writes it as the role's name,
    -- so a restore into another cluster binds the tenure to the same role (or fails if there is
    -- no such role) instead of to whichever role has that OID there.
    holder_role     regrole,
    acquired_at     timestamptz NOT NULL,   -- start of the current (or last) tenure
    renewed_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    timeline        integer     NOT NULL,   -- WAL timeline of the last write (see protocol.rs)
    -- The longest lease duration any tenure of this name was granted: how long a tenure lost
    -- in an asynchronous failover may still be trusted (see protocol.rs).
    max_duration_us bigint      NOT NULL,
    -- Makes fencing_token a key column: lease_fence's FOR KEY SHARE then blocks a new tenure
    -- (which changes the key) but not the holder's renewals (which do not).
    CONSTRAINT leases_tenure_key UNIQUE (lease_name, fencing_token)
    -- No CHECK constraints: PostgreSQL parses them from text for every UPDATE, which measured a
    -- few percent of a renewal; only the lease functions write this table.
) WITH (fillfactor = 50);  -- room on the page keeps every renewal a HOT update
COMMENT ON TABLE lease_lock.leases IS 'lease_lock: one row per lease name; write it only through the lease_* functions';

-- Keep the rows (and so the token history) in pg_dump output.
SELECT pg_catalog.pg_extension_config_dump('lease_lock.leases', '');

"#,
    name = "lease_table",
    bootstrap
);

extension_sql!(
    r#"
CREATE FUNCTION lease_lock.lease_acquire(
    holder uuid, lease_duration interval, lease_name text DEFAULT 'default',
    OUT acquired boolean, OUT fencing_token bigint, OUT expires_at timestamptz)
RETURNS record VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_acquire';
COMMENT ON FUNCTION lease_lock.lease_acquire(uuid, interval, text) IS
    'Take the lease if it is free, expired or released (new token), or renew it if holder holds it';

CREATE FUNCTION lease_lock.lease_refresh(
    holder uuid, lease_duration interval, lease_name text DEFAULT 'default',
    OUT acquired boolean, OUT fencing_token bigint, OUT expires_at timestamptz)
RETURNS record VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_refresh';
COMMENT ON FUNCTION lease_lock.lease_refresh(uuid, interval, text) IS
    'Extend the lease holder holds; never takes a free or expired lease';

CREATE FUNCTION lease_lock.lease_release(holder uuid, lease_name text DEFAULT 'default')
RETURNS boolean VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_release';
COMMENT ON FUNCTION lease_lock.lease_release(uuid, text) IS
    'Free the lease holder holds and NOTIFY lease_lock_released with the lease name';

CREATE FUNCTION lease_lock.lease_fence(fencing_token bigint, lease_name text DEFAULT 'default')
RETURNS void VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_fence';
COMMENT ON FUNCTION lease_lock.lease_fence(bigint, text) IS
    'Raise SQLSTATE LL001 unless fencing_token is the current unexpired tenure of the caller''s role; else block new tenures until this transaction ends';

CREATE FUNCTION lease_lock.lease_evict(lease_name text)
RETURNS boolean VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_evict';
COMMENT ON FUNCTION lease_lock.lease_evict(text) IS
    'Administrators: end the current tenure whoever holds it and NOTIFY lease_lock_released';

CREATE FUNCTION lease_lock.lease_refresh_many(holder uuid, lease_duration interval, lease_names text[])
RETURNS TABLE (lease_name text, acquired boolean, fencing_token bigint, expires_at timestamptz)
VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT ROWS 100
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_refresh_many';
COMMENT ON FUNCTION lease_lock.lease_refresh_many(uuid, interval, text[]) IS
    'lease_refresh of each name in lease_names, in one statement: a row per name, in order';


-- A holder id is shown only to roles that are members of the tenure's role (and superusers):
-- another role that knew it could take a free lease under it, and the rightful holder would then
-- be refused with 42501.
CREATE VIEW lease_lock.lease_status AS
SELECT lease_name,
       CASE WHEN pg_catalog.pg_has_role(holder_role::pg_catalog.oid, 'MEMBER') THEN holder END AS holder,
       fencing_token,
       expires_at,
       holder IS NOT NULL AND expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp() AS held,
       holder_role,
       acquired_at,
       renewed_at,
       timeline
FROM lease_lock.leases;
COMMENT ON VIEW lease_lock.lease_status IS 'lease_lock: every lease, its holder and whether it is held now';

-- Privileges. First take back everything anyone was granted on the new objects (default
-- privileges of the installing role, ALTER DEFAULT PRIVILEGES ... GRANT ALL ON TABLES TO x,
-- would otherwise give some role the tables, where a trigger of its own would run as the
-- functions' owner), then grant exactly what is meant.
DO $revoke$
DECLARE
    o record;
BEGIN
    FOR o IN
        SELECT pg_catalog.format('TABLE %s', c.oid::pg_catalog.regclass) AS object,
               a.grantee
        FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE c.relnamespace OPERATOR(pg_catalog.=) 'lease_lock'::pg_catalog.regnamespace
          AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
        UNION
        SELECT pg_catalog.format('FUNCTION %s', p.oid::pg_catalog.regprocedure), a.grantee
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.pronamespace OPERATOR(pg_catalog.=) 'lease_lock'::pg_catalog.regnamespace
          AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        IF o.grantee OPERATOR(pg_catalog.=) 0 THEN
            EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', o.object);
        ELSE
            -- %s: a regrole prints as an identifier, quoted where it needs to be.
            EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %s', o.object, o.grantee::pg_catalog.regrole);
        END IF;
    END LOOP;
    -- Functions are executable by PUBLIC by default (not an ACL entry until changed).
    REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA lease_lock FROM PUBLIC;
END
$revoke$;

-- Using leases is a privilege the administrator grants (see README, "Privileges"): a role that
-- can call lease_acquire can take any free lease name. lease_evict is granted to nobody.
-- pg_dump reads the tables' rows (config tables): the database owner, who usually runs backups,
-- may read them (holder ids in them are shown to their own role only elsewhere).
GRANT SELECT ON lease_lock.leases TO pg_database_owner;
-- Callers reach the functions and the view through the schema.
GRANT USAGE ON SCHEMA lease_lock TO PUBLIC;
-- Everyone may watch, like pg_locks; holder ids show only to their own role (see the view).
GRANT SELECT ON lease_lock.lease_status TO PUBLIC;
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
