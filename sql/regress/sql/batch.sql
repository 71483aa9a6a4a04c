-- lease_refresh_many: lease_refresh of many names in one statement, a row per name in order,
-- each with lease_refresh's own answer; bad input is refused before anything changes.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

SELECT n, (lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 minute', 'b-' || n)).fencing_token
FROM generate_series(1, 3) AS n ORDER BY n;
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '1 minute', 'b-other');

-- Held names renew (same token, new expiry); a name held by another holder, a name never
-- taken and a released name are refused, with lease_refresh's expires_at (NULL when never
-- taken).
SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000a', 'b-3');
SELECT ordinality, lease_name, acquired, fencing_token, expires_at > clock_timestamp() AS in_future,
       expires_at IS NULL AS no_expiry
FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '2 minutes',
                                   ARRAY['b-2', 'b-1', 'b-other', 'b-never', 'b-3'])
     WITH ORDINALITY
ORDER BY ordinality;
-- The renewals took effect: the held ones now expire in about 2 minutes.
SELECT lease_name, expires_at > clock_timestamp() + interval '90 seconds' AS renewed
FROM lease_lock.lease_status WHERE lease_name LIKE 'b-%' ORDER BY lease_name;
-- An empty array is no rows.
SELECT count(*) FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', '{}');

-- Bad input: the same SQLSTATEs and messages as lease_refresh's, and nothing renewed.
SELECT q, pg_temp.try(q) FROM (VALUES
    ($$SELECT * FROM lease_lock.lease_refresh_many(NULL, interval '1 s', ARRAY['b-1'])$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', NULL, ARRAY['b-1'])$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '-1 s', ARRAY['b-1'])$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', NULL)$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', ARRAY['b-1', NULL])$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', ARRAY['b-1', ''])$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', ARRAY['b-1', repeat('x', 256)])$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', ARRAY[['b-1'], ['b-2']])$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', ARRAY['b-1', 'b-2', 'b-1'])$$),
    ($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s',
        (SELECT array_agg('b-' || n) FROM generate_series(1, 100001) n))$$)
) AS t(q);
SELECT lease_name, expires_at > clock_timestamp() + interval '90 seconds' AS still_two_minutes
FROM lease_lock.lease_status WHERE lease_name IN ('b-1', 'b-2') ORDER BY lease_name;

-- Another role's holder id: 42501, as for lease_refresh.
CREATE ROLE batch_other;
GRANT EXECUTE ON FUNCTION lease_lock.lease_refresh_many(uuid, interval, text[]) TO batch_other;
SET ROLE batch_other;
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', ARRAY['b-1'])$$);
RESET ROLE;
-- Not granted to PUBLIC.
CREATE ROLE batch_nobody;
SET ROLE batch_nobody;
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_refresh_many('00000000-0000-0000-0000-00000000000a', interval '1 s', ARRAY['b-1'])$$);
RESET ROLE;
DROP ROLE batch_nobody;
REVOKE ALL ON FUNCTION lease_lock.lease_refresh_many(uuid, interval, text[]) FROM batch_other;
DROP ROLE batch_other;
