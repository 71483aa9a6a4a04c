\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

-- Lookups by lease name use the primary key index whatever the table's size and statistics were
-- when a backend prepared its plans; and administrators bound the number of lease names.

-- Plans prepared while the table is analysed as tiny (the old code then planned sequential
-- scans and kept them until the next ANALYZE). Autovacuum is kept out of the way meanwhile.
ALTER TABLE lease_lock.leases SET (autovacuum_enabled = false);
ANALYZE lease_lock.leases;
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-0');
SELECT count(*) AS created
FROM generate_series(1, 3000) g, LATERAL lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-' || g)
WHERE acquired;
BEGIN;
SELECT count(*) AS renewed
FROM generate_series(1, 200) g, LATERAL lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-' || g)
WHERE acquired;
SELECT seq_scan AS sequential_scans, idx_scan >= 200 AS index_scans
FROM pg_stat_xact_user_tables WHERE relid = 'lease_lock.leases'::regclass;
COMMIT;
-- An ANALYZE (which a database owner may run) re-plans: still index scans.
ANALYZE lease_lock.leases;
BEGIN;
SELECT count(*) AS renewed
FROM generate_series(1, 200) g, LATERAL lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-' || g)
WHERE acquired;
SELECT seq_scan AS sequential_scans, idx_scan >= 200 AS index_scans
FROM pg_stat_xact_user_tables WHERE relid = 'lease_lock.leases'::regclass;
COMMIT;
ALTER TABLE lease_lock.leases RESET (autovacuum_enabled);

-- lease_lock.max_lease_names bounds the names (rows are never deleted): a new name beyond it
-- fails with 53400 and leaves nothing behind; existing names keep working. Near the bound the
-- names are counted exactly (including the calling transaction's own new ones).
SELECT count(*) AS before FROM lease_lock.leases \gset
SELECT set_config('lease_lock.max_lease_names', (:before + 1)::text, false) IS NOT NULL AS bounded;
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'one-more');
SELECT regexp_replace(pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'one-too-many')$$), 'name [0-9]+ of at most [0-9]+', 'name N of at most M') AS try;
SELECT count(*) = :before + 1 AS counted, count(*) FILTER (WHERE lease_name = 'one-too-many') AS rows_left
FROM lease_lock.leases;
-- Within one transaction the names it creates count at once.
SELECT set_config('lease_lock.max_lease_names', (:before + 3)::text, false) IS NOT NULL AS bounded;
BEGIN;
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'in-one-1');
SELECT acquired FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'in-one-2');
SELECT regexp_replace(pg_temp.try($$SELECT * FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'in-one-3')$$), 'name [0-9]+ of at most [0-9]+', 'name N of at most M') AS try;
ROLLBACK;
SELECT acquired FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-1');
RESET lease_lock.max_lease_names;

-- What a lease name costs on disk, for the README: table and indexes, per name.
SELECT count(*) > 3000 AS many_names,
       pg_total_relation_size('lease_lock.leases') / count(*) BETWEEN 100 AND 1000 AS bytes_per_name_in_range
FROM lease_lock.leases;
