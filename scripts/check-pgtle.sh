#!/usr/bin/env bash
# The portable edition's pg_tle package, tested once by hand (pg_tle is not packaged for Debian,
# and its source comes from GitHub, which CI cannot reach): builds pg_tle from a source tree into
# a copy of a fetched PostgreSQL (default 16), installs portable/dist/lease_lock_pgtle.sql as a
# role without superuser rights (a pgtle_admin member), CREATE EXTENSION lease_lock, and runs the
# shared and portable pg_regress tests against it.
#
#   scripts/check-pgtle.sh /path/to/pg_tle-source     (needs flex and libkrb5-dev to build)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(cd "${1:?usage: scripts/check-pgtle.sh PG_TLE_SOURCE_DIR}" && pwd)
ROOT=$PWD
source scripts/lib/cluster.sh
pg_install "${PG_MAJOR:-16}" >/dev/null
# A copy of the install, so the cache stays as pg.sh made it and no C lease_lock is visible
# (pg_tle will not install an extension whose control file exists).
copy=$(mktemp -d /tmp/ll-pgtle.XXXXXX)
chmod 755 "$copy"
cp -a "$PG_ROOT/." "$copy/"
rm -f "$copy"/lib/lease_lock.so "$copy"/share/extension/lease_lock[.-]*
PG_BIN=$copy/bin
make -s -C "$src" PG_CONFIG="$copy/bin/pg_config" >/dev/null
make -s -C "$src" PG_CONFIG="$copy/bin/pg_config" install >/dev/null
cluster_start shared_preload_libraries=pg_tle >/dev/null
psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1)
"${psql[@]}" -c "CREATE ROLE lease_owner LOGIN" -c "CREATE DATABASE lease_lock_regress"
"${psql[@]}" -d lease_lock_regress -c "CREATE EXTENSION pg_tle" -c "GRANT pgtle_admin TO lease_owner" \
    -c "GRANT CREATE ON DATABASE lease_lock_regress TO lease_owner"
"${psql[@]}" -d lease_lock_regress -U lease_owner -f portable/dist/lease_lock_pgtle.sql >/dev/null
"${psql[@]}" -d lease_lock_regress -U lease_owner -c "CREATE SCHEMA lease_lock" -c "CREATE EXTENSION lease_lock SCHEMA lease_lock"
"${psql[@]}" -d lease_lock_regress -c "SELECT extname, extversion, extowner::regrole FROM pg_extension WHERE extname = 'lease_lock'"
work=$(mktemp -d /tmp/ll-test.XXXXXX)
chmod 755 "$work"
cp -r sql/regress/. "$work/"
[ "$(id -u)" = 0 ] && chown -R postgres "$work"
tests=$(cd sql/regress/sql && ls *.sql | sed 's/\.sql$//' | grep -v '^c_' | sort)
status=0
# shellcheck disable=SC2086
as_pg "$copy/lib/pgxs/src/test/regress/pg_regress" --inputdir="$work" --outputdir="$work" --host="$PGHOST" \
    --port="$PGPORT" --bindir="$PG_BIN" --user=postgres --use-existing --dbname=lease_lock_regress $tests || status=1
[ $status = 0 ] || cat "$work/regression.diffs"
cluster_stop
rm -rf "$work" "$copy"
cd "$ROOT"
exit $status
