-- Attacks on the extension by roles other than superusers (docs/security.md). Everything the
-- lease functions use lives in the schema lease_lock, which only a superuser owns and creates
-- in; so no rename, look-alike table, trigger, search_path or statistics change can make them
-- touch anything else, and CREATE EXTENSION refuses a schema someone else controls.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

-- The database owner owns schema public (pg_database_owner) and may ANALYZE every table: the
-- role that could take over the old code, which kept its table in the schema it was created in.
CREATE ROLE regress_dbowner;
SELECT pg_temp.try(format('ALTER DATABASE %I OWNER TO regress_dbowner', current_database()));
GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text),
    lease_lock.lease_refresh(uuid, interval, text) TO regress_dbowner;
SET ROLE regress_dbowner;
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'attack');
SELECT q, pg_temp.try(q) FROM (VALUES
    ($$ALTER SCHEMA lease_lock RENAME TO lease_lock_real$$),
    ($$DROP SCHEMA lease_lock CASCADE$$),
    ($$CREATE TABLE lease_lock.evil (x int)$$),
    ($$ALTER TABLE lease_lock.leases RENAME TO leases_real$$),
    ($$CREATE TRIGGER t BEFORE UPDATE ON lease_lock.leases EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()$$)
) AS t(q) ORDER BY q;
-- The issue's attack on the old code: a look-alike table whose trigger makes its owner a
-- superuser, in a schema named like the extension's old one, then a re-plan.
ALTER SCHEMA public RENAME TO public_real;
CREATE SCHEMA public;
CREATE TABLE public.leases (lease_name text PRIMARY KEY, fencing_token bigint NOT NULL, holder uuid,
    holder_role oid, acquired_at timestamptz NOT NULL, renewed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL, timeline int NOT NULL, max_duration_us bigint NOT NULL,
    UNIQUE (lease_name, fencing_token));
CREATE FUNCTION public.pwn() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN EXECUTE 'ALTER ROLE regress_dbowner SUPERUSER'; RETURN NULL; END$$;
CREATE TRIGGER pwn BEFORE UPDATE OR INSERT ON public.leases FOR EACH STATEMENT EXECUTE FUNCTION public.pwn();
SET search_path = public_real, public, pg_catalog;
ANALYZE lease_lock.leases;
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'attack');
SELECT acquired, fencing_token FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'attack');
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'attack-new-name');
RESET search_path;
RESET ROLE;
SELECT rolsuper AS attacker_is_superuser FROM pg_roles WHERE rolname = 'regress_dbowner';
SELECT count(*) AS lookalike_rows FROM public.leases;
DROP SCHEMA public CASCADE;
ALTER SCHEMA public_real RENAME TO public;

-- The database owner may dump the lease rows (pg_dump reads config tables) but not write them.
SET ROLE regress_dbowner;
SELECT count(*) > 0 AS can_read_for_backups FROM lease_lock.leases;
SELECT pg_temp.try($$UPDATE lease_lock.leases SET expires_at = now()$$);
RESET ROLE;

SELECT pg_temp.try(format('ALTER DATABASE %I OWNER TO %I', current_database(), current_user));
DROP ROLE regress_dbowner;
