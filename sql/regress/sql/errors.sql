-- Bad input: a clear error with a fitting SQLSTATE, never NULL or a wrong answer, and nothing
-- changes.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '10 s', 'e');

-- NULL arguments: 22004.
SELECT q, pg_temp.try(q) FROM (VALUES
    ($$SELECT * FROM lease_lock.lease_acquire(NULL, interval '1 s', 'e')$$),
    ($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', NULL, 'e')$$),
    ($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 s', NULL)$$),
    ($$SELECT * FROM lease_lock.lease_refresh(NULL, interval '1 s', 'e')$$),
    ($$SELECT lease_lock.lease_release(NULL, 'e')$$),
    ($$SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000a', NULL)$$),
    ($$SELECT lease_lock.lease_fence(NULL, 'e')$$),
    ($$SELECT lease_lock.lease_fence(1, NULL)$$),
    ($$SELECT lease_lock.lease_evict(NULL)$$)
) AS t(q) ORDER BY q;

-- Durations: positive, at most one day, no months (22023).
SELECT d, pg_temp.try(format($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval %L, 'e-' || %L)$$, d, d))
FROM (VALUES ('0'), ('-5 seconds'), ('1 month'), ('1 year'), ('1 mon -30 days'), ('1 day 1 microsecond'),
             ('1000 years'), ('1 day'), ('86400 seconds'), ('1 microsecond')) AS t(d)
ORDER BY d;

-- Lease names: 1 to 255 bytes (22023).
SELECT length(n) AS characters, octet_length(n) AS bytes, pg_temp.try(format($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '1 s', %L)$$, n))
FROM (VALUES (''), (repeat('x', 255)), (repeat('x', 256)), (repeat('é', 128))) AS t(n)
ORDER BY 1, 2;

-- Wrong types are the parser's business.
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('not-a-uuid', interval '1 s')$$);
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', 'ten seconds')$$);

-- Nothing above changed the lease.
SELECT lease_name, fencing_token, held, holder FROM lease_lock.lease_status WHERE lease_name = 'e';
