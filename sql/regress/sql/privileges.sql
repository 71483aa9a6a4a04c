-- Privileges: the table is the functions' alone; using leases is granted; a holder id only acts
-- for the role that took the tenure.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

CREATE ROLE regress_lease_app1;
CREATE ROLE regress_lease_app2;
CREATE ROLE regress_lease_other;
GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text), lease_lock.lease_refresh(uuid, interval, text),
    lease_lock.lease_release(uuid, text), lease_lock.lease_fence(bigint, text)
TO regress_lease_app1, regress_lease_app2;

-- Ungranted roles cannot call the functions; nobody but the owner touches the table.
SET ROLE regress_lease_other;
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 s', 'p')$$);
SELECT count(*) > 0 AS sees_leases FROM lease_lock.lease_status;
SET ROLE regress_lease_app1;
SELECT q, pg_temp.try(q) FROM (VALUES
    ($$SELECT * FROM lease_lock.leases$$),
    ($$UPDATE lease_lock.leases SET expires_at = now()$$),
    ($$DELETE FROM lease_lock.leases$$),
    ($$INSERT INTO lease_lock.leases VALUES ('x', 1, NULL, NULL, now(), now(), now())$$),
    ($$SELECT lease_lock.lease_evict('p')$$)
) AS t(q) ORDER BY q;

-- app1 takes the lease; app2, knowing app1's holder id from lease_lock.lease_status, cannot use it.
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '10 s', 'p');
SET ROLE regress_lease_app2;
SELECT holder, holder_role, held FROM lease_lock.lease_status WHERE lease_name = 'p';
SELECT q, pg_temp.try(q) FROM (VALUES
    ($$SELECT * FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '10 s', 'p')$$),
    ($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '10 s', 'p')$$),
    ($$SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000a', 'p')$$)
) AS t(q) ORDER BY q;
-- With its own holder id app2 is simply refused.
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '10 s', 'p');
SET ROLE regress_lease_app1;
SELECT acquired, fencing_token FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '10 s', 'p');
SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000a', 'p');
RESET ROLE;

-- Revoking use works like any function privilege.
REVOKE EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text) FROM regress_lease_app2;
SET ROLE regress_lease_app2;
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '1 s', 'p')$$);
RESET ROLE;

SELECT lease_name, fencing_token, held, holder_role FROM lease_lock.lease_status WHERE lease_name = 'p';

REVOKE ALL ON FUNCTION lease_lock.lease_acquire(uuid, interval, text), lease_lock.lease_refresh(uuid, interval, text),
    lease_lock.lease_release(uuid, text), lease_lock.lease_fence(bigint, text)
FROM regress_lease_app1, regress_lease_app2;
DROP ROLE regress_lease_app1, regress_lease_app2, regress_lease_other;

-- Holder ids show in lease_status only to the tenure's role (and its members, and superusers):
-- another role that knew one could take a free lease under it, and the rightful holder would
-- then be refused with 42501.
CREATE ROLE regress_lease_app1;
CREATE ROLE regress_lease_app2;
GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text) TO regress_lease_app1;
SET ROLE regress_lease_app1;
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-0000000000a1', interval '10 s', 'hidden');
SELECT holder, holder_role, held FROM lease_lock.lease_status WHERE lease_name = 'hidden';
SET ROLE regress_lease_app2;
SELECT holder, holder_role, held FROM lease_lock.lease_status WHERE lease_name = 'hidden';
RESET ROLE;
SELECT holder, holder_role, held FROM lease_lock.lease_status WHERE lease_name = 'hidden';
REVOKE ALL ON FUNCTION lease_lock.lease_acquire(uuid, interval, text) FROM regress_lease_app1;
DROP ROLE regress_lease_app1, regress_lease_app2;
