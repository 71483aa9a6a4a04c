-- The SQL contract: signatures, acquire/refresh/release, expiry, takeover and tokens.
-- Timestamps are never printed (they differ per run): only comparisons with clock_timestamp().

SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result, p.provolatile, p.proparallel
FROM pg_proc p WHERE p.pronamespace = 'lease_lock'::regnamespace AND p.proname LIKE 'lease\_%'
ORDER BY p.proname;

-- The card's two-argument calls: the single, default lease.
SELECT acquired, fencing_token, expires_at > clock_timestamp() AS in_future
FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '10 seconds');
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '10 seconds');
SELECT acquired, fencing_token FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '10 seconds');
-- A standby is refused and told when the holder's lease ends.
SELECT acquired, fencing_token,
       expires_at = (SELECT expires_at FROM lease_lock.lease_status WHERE lease_name = 'default') AS holders_expiry
FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '10 seconds');
SELECT acquired, fencing_token FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000b', interval '10 seconds');
SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000b');
-- Release lets the standby in at once, with a new token.
SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000a');
SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000a') AS released_twice;
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '10 seconds');

-- Expiry: a 200 ms lease is free after 300 ms; refresh never revives it, acquire takes it anew.
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '200 ms', 'short');
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '200 ms', 'short');
SELECT pg_sleep(0.3);
SELECT acquired, fencing_token, expires_at < clock_timestamp() AS expired
FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '10 seconds', 'short');
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '10 seconds', 'short');

-- Tokens only grow, across release, expiry and re-acquisition by the same holder.
SELECT lease_lock.lease_release('00000000-0000-0000-0000-00000000000b', 'short');
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '100 ms', 'short');
SELECT pg_sleep(0.2);
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '10 seconds', 'short');
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '10 seconds', 'short');

-- Refresh never takes a lease nobody ever took.
SELECT acquired, fencing_token, expires_at FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '1 s', 'unused');

-- Many named leases are independent.
SELECT n, (lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 minute', 'many-' || n)).fencing_token
FROM generate_series(1, 3) AS n ORDER BY n;
SELECT count(*) FILTER (WHERE held) AS held, count(*) AS leases FROM lease_lock.lease_status WHERE lease_name LIKE 'many-%';

-- Administrators can end any tenure.
SELECT lease_lock.lease_evict('many-1'), lease_lock.lease_evict('many-1') AS evicted_twice, lease_lock.lease_evict('unused') AS never_taken;

SELECT lease_name, fencing_token, held, holder IS NOT NULL AS has_holder, timeline,
       acquired_at <= renewed_at AND renewed_at <= expires_at AS times_ordered
FROM lease_lock.lease_status ORDER BY lease_name;
