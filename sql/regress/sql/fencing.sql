-- lease_lock.lease_fence in one session: only the current, unexpired tenure passes. (Two sessions, where a
-- fenced transaction holds off the next tenure, are in sql/isolation/specs/fencing.spec.)
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

CREATE TABLE protected (token bigint, note text);

SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '10 s', 'fenced');

-- The fencing pattern: fence, then write, in one transaction.
BEGIN;
SELECT lease_lock.lease_fence(1, 'fenced');
INSERT INTO protected VALUES (1, 'written by tenure 1');
COMMIT;

SELECT pg_temp.try($$SELECT lease_lock.lease_fence(2, 'fenced')$$) AS future_token;
SELECT pg_temp.try($$SELECT lease_lock.lease_fence(0, 'fenced')$$) AS past_token;
SELECT pg_temp.try($$SELECT lease_lock.lease_fence(1, 'no-such-lease')$$) AS unknown_lease;

-- After a takeover the old token is refused, and so is its write.
SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000a', 'fenced');
SELECT pg_temp.try($$SELECT lease_lock.lease_fence(1, 'fenced')$$) AS released;
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '200 ms', 'fenced');
BEGIN;
SELECT lease_lock.lease_fence(1, 'fenced');
INSERT INTO protected VALUES (1, 'stale write: never committed');
COMMIT;
SELECT lease_lock.lease_fence(2, 'fenced');

-- Expiry ends the tenure for fencing too.
SELECT pg_sleep(0.3);
SELECT pg_temp.try($$SELECT lease_lock.lease_fence(2, 'fenced')$$) AS expired;

SELECT * FROM protected ORDER BY token, note;
