-- The C edition only (the portable edition's counterpart is portable_only.sql): what
-- CREATE EXTENSION refuses, the schema owner checked at every call, the function properties,
-- and the planner settings the functions ignore. scripts/test.sh runs c_* files for the C
-- edition and portable_* files for the portable one; the rest are shared.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

-- Lookups by lease name use the primary key index whatever the table's size and statistics were
-- when a backend prepared its plans.
-- Plans prepared while the table is analysed as tiny (the old code then planned sequential
-- scans and kept them until the next ANALYZE). Autovacuum is kept out of the way meanwhile.
ALTER TABLE lease_lock.leases SET (autovacuum_enabled = false);
ANALYZE lease_lock.leases;
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-0');
SELECT count(*) AS created
FROM generate_series(1, 3000) g, LATERAL lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-' || g)
WHERE acquired;
BEGIN;
SELECT count(*) AS renewed
FROM generate_series(1, 200) g, LATERAL lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-' || g)
WHERE acquired;
SELECT seq_scan AS sequential_scans, idx_scan >= 200 AS index_scans
FROM pg_stat_xact_user_tables WHERE relid = 'lease_lock.leases'::regclass;
COMMIT;
-- An ANALYZE (which a database owner may run) re-plans: still index scans.
ANALYZE lease_lock.leases;
BEGIN;
SELECT count(*) AS renewed
FROM generate_series(1, 200) g, LATERAL lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-' || g)
WHERE acquired;
SELECT seq_scan AS sequential_scans, idx_scan >= 200 AS index_scans
FROM pg_stat_xact_user_tables WHERE relid = 'lease_lock.leases'::regclass;
COMMIT;
-- Neither do cost settings a role or database may change (they could outweigh the penalty of
-- a disabled scan): the functions plan with PostgreSQL's default costs.
SET random_page_cost = 1e12;
SET cpu_index_tuple_cost = 1e6;
SET plan_cache_mode = force_custom_plan;
ANALYZE lease_lock.leases;
BEGIN;
SELECT count(*) AS renewed
FROM generate_series(1, 200) g, LATERAL lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-' || g)
WHERE acquired;
SELECT seq_scan AS sequential_scans, idx_scan >= 200 AS index_scans
FROM pg_stat_xact_user_tables WHERE relid = 'lease_lock.leases'::regclass;
COMMIT;
RESET random_page_cost;
RESET cpu_index_tuple_cost;
RESET plan_cache_mode;
ALTER TABLE lease_lock.leases RESET (autovacuum_enabled);

-- C functions, not SECURITY DEFINER: they switch to the owner themselves, remembering the
-- caller's current_user, to which tenures are bound.
SELECT p.proname, l.lanname, p.prosecdef, p.proconfig
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'lease_lock'::regnamespace ORDER BY 1;

CREATE ROLE regress_dbowner;
GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text),
    lease_lock.lease_refresh(uuid, interval, text) TO regress_dbowner;
SET ROLE regress_dbowner;
SELECT q, pg_temp.try(q) FROM (VALUES
    ($$ALTER EXTENSION lease_lock UPDATE$$),
    ($$DROP EXTENSION lease_lock$$)
) AS t(q) ORDER BY q;
RESET ROLE;

-- A superuser who hands the schema to another role makes every lease call fail closed (42501),
-- also in a backend that has its plans cached already, until it is given back.
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000c', interval '1 hour', 'handed-over');
ALTER SCHEMA lease_lock OWNER TO regress_dbowner;
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000c', interval '1 hour', 'handed-over')$$);
ALTER SCHEMA lease_lock OWNER TO CURRENT_USER;
SELECT acquired FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000c', interval '1 hour', 'handed-over');

-- CREATE EXTENSION refuses a schema lease_lock that a non-superuser owns or may create in.
-- (DROP EXTENSION leaves the schema: it is not a member of the extension.)
DROP EXTENSION lease_lock;
DROP SCHEMA lease_lock;
CREATE SCHEMA lease_lock AUTHORIZATION regress_dbowner;
SELECT pg_temp.try($$CREATE EXTENSION lease_lock$$);
ALTER SCHEMA lease_lock OWNER TO CURRENT_USER;
GRANT CREATE ON SCHEMA lease_lock TO regress_dbowner;
SELECT pg_temp.try($$CREATE EXTENSION lease_lock$$);
DROP SCHEMA lease_lock;
-- Nor a superuser's schema that already holds objects: an overload created there by someone
-- else (an integer literal would pick lease_fence(integer, text) over the real one) would sit
-- next to the extension's functions.
CREATE SCHEMA lease_lock;
CREATE FUNCTION lease_lock.lease_fence(fencing_token integer, lease_name text DEFAULT 'default')
    RETURNS void LANGUAGE sql AS 'SELECT';
ALTER FUNCTION lease_lock.lease_fence(integer, text) OWNER TO regress_dbowner;
SELECT pg_temp.try($$CREATE EXTENSION lease_lock$$);
DROP SCHEMA lease_lock CASCADE;
-- Default privileges of the installing role do not reach the extension's objects: whatever they
-- granted is taken back, then exactly the documented grants are made.
-- Also to a role whose name needs quoting.
CREATE ROLE "regress Quoted-Role";
ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO regress_dbowner;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO regress_dbowner, "regress Quoted-Role";
-- A schema it creates itself belongs to the installing superuser.
CREATE EXTENSION lease_lock;
ALTER DEFAULT PRIVILEGES REVOKE ALL ON TABLES FROM regress_dbowner;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM regress_dbowner, "regress Quoted-Role";
DROP ROLE "regress Quoted-Role";
SELECT c.relname, a.grantee::regrole, a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.relnamespace = 'lease_lock'::regnamespace AND a.grantee <> c.relowner
ORDER BY 1, 2, 3;
SELECT p.proname, p.proacl IS NULL OR NOT EXISTS (
           SELECT FROM aclexplode(p.proacl) a WHERE a.grantee <> p.proowner) AS only_the_owner
FROM pg_proc p WHERE p.pronamespace = 'lease_lock'::regnamespace ORDER BY 1;
SELECT nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) AS owned_by_installer
FROM pg_namespace WHERE nspname = 'lease_lock';
DROP ROLE regress_dbowner;


-- lease_lock.max_lease_names is a server parameter.
SHOW lease_lock.max_lease_names;
-- Only a superuser may change the bound.
CREATE ROLE regress_lease_nobody;
SET ROLE regress_lease_nobody;
SET lease_lock.max_lease_names = 0;
RESET ROLE;
DROP ROLE regress_lease_nobody;
