-- lease_lock 0.1.0 -> 0.2.0: ALTER EXTENSION lease_lock UPDATE TO '0.2.0'.
--
-- Every change to the extension's SQL objects between the two versions goes here, in the order
-- it landed, so that an upgraded database equals a fresh install of 0.2.0 (tests/tests/upgrade.rs
-- compares the two catalogs). The 0.2.0 library serves 0.1.0's SQL unchanged until this runs:
-- it keeps every C symbol 0.1.0's functions name, with the same arguments and results.
\echo Use "ALTER EXTENSION lease_lock UPDATE" to load this file. \quit

-- Issue 16: many leases renewed in one call.
CREATE FUNCTION lease_lock.lease_refresh_many(holder uuid, lease_duration interval, lease_names text[])
RETURNS TABLE (lease_name text, acquired boolean, fencing_token bigint, expires_at timestamptz)
VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT ROWS 100
LANGUAGE c AS 'MODULE_PATHNAME', 'lease_refresh_many';
COMMENT ON FUNCTION lease_lock.lease_refresh_many(uuid, interval, text[]) IS
    'lease_refresh of each name in lease_names, in one statement: a row per name, in order';
-- Using leases is granted by the administrator (README, "Privileges"), as for the others: take
-- back what anyone was given on it (default privileges of the updating role included), as a
-- fresh install does.
DO $revoke$
DECLARE
    g pg_catalog.oid;
BEGIN
    FOR g IN
        SELECT a.grantee FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.oid OPERATOR(pg_catalog.=) 'lease_lock.lease_refresh_many(uuid, interval, text[])'::pg_catalog.regprocedure
          AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        IF g OPERATOR(pg_catalog.=) 0 THEN
            REVOKE ALL ON FUNCTION lease_lock.lease_refresh_many(uuid, interval, text[]) FROM PUBLIC;
        ELSE
            -- %s: a regrole prints as an identifier, quoted where it needs to be.
            EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION lease_lock.lease_refresh_many(uuid, interval, text[]) FROM %s',
                                      g::pg_catalog.regrole);
        END IF;
    END LOOP;
    REVOKE EXECUTE ON FUNCTION lease_lock.lease_refresh_many(uuid, interval, text[]) FROM PUBLIC;
END
$revoke$;
