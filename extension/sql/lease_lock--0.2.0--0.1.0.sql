-- lease_lock 0.2.0 -> 0.1.0: ALTER EXTENSION lease_lock UPDATE TO '0.1.0', before reinstalling
-- the 0.1.0 package. The reverse of lease_lock--0.1.0--0.2.0.sql, kept in step with it: it drops
-- only what 0.2.0 added (never the lease table or its rows), so that the downgraded catalog equals
-- a fresh 0.1.0 install (tests/tests/upgrade.rs checks it).
\echo Use "ALTER EXTENSION lease_lock UPDATE TO '0.1.0'" to load this file. \quit

-- Issue 16: many leases renewed in one call.
DROP FUNCTION lease_lock.lease_refresh_many(uuid, interval, text[]);
