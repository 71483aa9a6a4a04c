-- The portable edition only (the C edition's counterpart is c_only.sql): PL/pgSQL functions,
-- SECURITY DEFINER with search_path pinned, every name schema-qualified; the owner's settings.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

SELECT p.proname, l.lanname, p.prosecdef, p.proconfig
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'lease_lock'::regnamespace AND p.proname LIKE 'lease\_%' ORDER BY 1;
-- Nobody but the owner may call the helpers or read the tables.
SELECT p.proname, p.proacl IS NULL OR NOT EXISTS (
           SELECT FROM aclexplode(p.proacl) a WHERE a.grantee <> p.proowner) AS only_the_owner
FROM pg_proc p WHERE p.pronamespace = 'lease_lock'::regnamespace ORDER BY 1;
SELECT c.relname, a.grantee::regrole, a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.relnamespace = 'lease_lock'::regnamespace AND a.grantee <> c.relowner
ORDER BY 1, 2, 3;

-- A caller's search_path cannot change what the functions call: an operator = that says every
-- uuid and text is equal, first on the path, does not let another holder renew or release.
CREATE ROLE regress_shadow;
GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text), lease_lock.lease_refresh(uuid, interval, text),
    lease_lock.lease_release(uuid, text) TO regress_shadow;
CREATE SCHEMA regress_evil AUTHORIZATION regress_shadow;
SET ROLE regress_shadow;
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'shadowed');
CREATE FUNCTION regress_evil.always(uuid, uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR regress_evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = regress_evil.always);
CREATE FUNCTION regress_evil.always(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.always);
SET search_path = regress_evil, pg_catalog;
SELECT acquired FROM lease_lock.lease_refresh('00000000-0000-0000-0000-0000000000ff', interval '1 hour', 'shadowed');
SELECT lease_lock.lease_release('00000000-0000-0000-0000-0000000000ff', 'shadowed');
RESET search_path;
RESET ROLE;
SELECT holder, fencing_token, held FROM lease_lock.lease_status WHERE lease_name = 'shadowed';
DROP SCHEMA regress_evil CASCADE;
REVOKE ALL ON FUNCTION lease_lock.lease_acquire(uuid, interval, text), lease_lock.lease_refresh(uuid, interval, text),
    lease_lock.lease_release(uuid, text) FROM regress_shadow;
DROP ROLE regress_shadow;

-- max_lease_names is the owner's (lease_lock.settings); the parameter may only lower it.
SELECT max_lease_names FROM lease_lock.settings;
SELECT count(*) AS before FROM lease_lock.leases \gset
UPDATE lease_lock.settings SET max_lease_names = :before + 1;
SET lease_lock.max_lease_names = 1000000;
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'owner-bound-1');
SELECT regexp_replace(pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'owner-bound-2')$$), 'name [0-9]+ of at most [0-9]+', 'name N of at most M') AS try;
RESET lease_lock.max_lease_names;
UPDATE lease_lock.settings SET max_lease_names = DEFAULT;

-- Anyone may set the two parameters to anything: a value that is not one is an error that
-- names it (22023), never a way past the bound (a negative count used to switch it off).
SET lease_lock.max_lease_names = '-1';
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'bad-bound')$$);
SET lease_lock.max_lease_names = 'abc';
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'bad-bound')$$);
RESET lease_lock.max_lease_names;
SELECT v, pg_temp.try(format('SET lease_lock.lock_timeout = %L; SELECT lease_lock.lease_release(%L, %L)',
                             v, '00000000-0000-0000-0000-00000000000a', 'bad-bound'))
FROM (VALUES ('-5'), ('abc'), ('1e99'), ('99999999999'), ('1000000 years'), ('250ms'), ('2 s'), ('0')) AS t(v);
RESET lease_lock.lock_timeout;

-- SET ROLE's role renamed by another session: the stale name binds no tenure (42501), rather
-- than a NULL role that nobody could release and anybody could fence.
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE ROLE regress_renamed;
GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text) TO regress_renamed;
SELECT dblink_connect('other', format('dbname=%s port=%s host=%s', current_database(),
    current_setting('port'), current_setting('unix_socket_directories')));
SET ROLE regress_renamed;
SELECT dblink_exec('other', 'ALTER ROLE regress_renamed RENAME TO regress_renamed2');
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-0000000000b1', interval '1 hour', 'renamed')$$);
RESET ROLE;
SELECT dblink_disconnect('other');
SELECT count(*) AS tenures_without_a_role FROM lease_lock.leases WHERE holder IS NOT NULL AND holder_role IS NULL;
REVOKE ALL ON FUNCTION lease_lock.lease_acquire(uuid, interval, text) FROM regress_renamed2;
DROP ROLE regress_renamed2;
