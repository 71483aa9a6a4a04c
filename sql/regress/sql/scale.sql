\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/helpers.psql

-- Many lease names, and administrators bound their number.

-- (Which plans the lease functions use whatever the statistics: c_only.sql. The portable
-- edition's plans follow the statistics.)
SELECT count(*) AS created
FROM generate_series(1, 3000) g, LATERAL lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', interval '1 hour', 'scale-' || g)
WHERE acquired;

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
