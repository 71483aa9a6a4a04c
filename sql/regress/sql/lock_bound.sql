-- A call never waits for a lock longer than lease_lock.lock_timeout (or the session's shorter
-- lock_timeout), and leaves the session's lock_timeout as it was. A second session, through
-- dblink, holds the lease table locked.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql
CREATE EXTENSION dblink;
SELECT acquired, fencing_token FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '10 s', 'bound');
SELECT dblink_connect('admin', format('dbname=%s port=%s host=%s', current_database(),
    current_setting('port'), current_setting('unix_socket_directories')));
SELECT dblink_exec('admin', 'BEGIN');
SELECT dblink_exec('admin', 'LOCK TABLE lease_lock.leases IN ACCESS EXCLUSIVE MODE');

SET lease_lock.lock_timeout = '200ms';
SELECT clock_timestamp() AS t0 \gset
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '10 s', 'bound')$$);
SELECT clock_timestamp() - :'t0' BETWEEN interval '200ms' AND interval '5s' AS waited_the_bound;
SHOW lock_timeout;

-- A shorter session lock_timeout wins, and stays as it was.
SET lease_lock.lock_timeout = '3s';
SET lock_timeout = '50ms';
SELECT clock_timestamp() AS t0 \gset
SELECT pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000b', interval '10 s', 'bound')$$);
SELECT clock_timestamp() - :'t0' BETWEEN interval '50ms' AND interval '2s' AS waited_the_session_bound;
SHOW lock_timeout;
RESET lock_timeout;

SELECT dblink_exec('admin', 'COMMIT');
SELECT acquired, fencing_token FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '10 s', 'bound');
SELECT dblink_disconnect('admin');
