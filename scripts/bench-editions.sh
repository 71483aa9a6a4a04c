#!/usr/bin/env bash
# Renewals per second of the two editions side by side, in one run against one throwaway server
# ($PG_MAJOR, default 15) with default durability: a plain one-row UPDATE (the durable-commit
# floor), the C edition's lease_refresh, the portable edition's, and the portable edition's with
# its SET search_path clause removed (what the clause costs). pgbench, one client, prepared
# statements, ROUNDS rounds (default 3) of SECONDS seconds (default 8) each, interleaved.
#
#   scripts/bench-editions.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER=${2:-8}
scripts/setup.sh
source scripts/lib/cluster.sh
pg_install "${PG_MAJOR:-15}"
cluster_start >/dev/null
PGBENCH=$PG_BIN/pgbench
psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1)
"${psql[@]}" -c "CREATE DATABASE c" -c "CREATE DATABASE p" -c "CREATE DATABASE p_noset"
install_lease_lock c c
"${psql[@]}" -d c -c "CREATE TABLE t (id int PRIMARY KEY, v timestamptz) WITH (fillfactor = 50)" -c "INSERT INTO t VALUES (1, now())"
for db in p p_noset; do
    install_lease_lock "$db" portable
done
"${psql[@]}" -d p_noset -c "ALTER FUNCTION lease_lock.lease_refresh(uuid, interval, text) RESET search_path"
for db in c p p_noset; do
    "${psql[@]}" -d "$db" -c "SELECT FROM lease_lock.lease_acquire('00000000-0000-0000-0000-00000000000a', '1 day', 'b')"
done
work=$(mktemp -d)
chmod 755 "$work"
echo "SELECT * FROM lease_lock.lease_refresh('00000000-0000-0000-0000-00000000000a', '1 day', 'b');" >"$work/refresh.sql"
echo "UPDATE t SET v = clock_timestamp() WHERE id = 1;" >"$work/update.sql"
chmod 644 "$work"/*.sql

declare -A runs
cases=("update:c" "refresh:c" "refresh:p" "refresh:p_noset")
for ((round = 1; round <= ROUNDS; round++)); do
    for case in "${cases[@]}"; do
        script=${case%%:*} db=${case#*:}
        tps=$(as_pg "$PGBENCH" -n -c 1 -T "$SECONDS_PER" -M prepared -h "$PGHOST" -p "$PGPORT" -U postgres \
            -f "$work/$script.sql" "$db" 2>/dev/null | awk '/^tps/ { print $3 }')
        runs[$case]="${runs[$case]:-} $tps"
        echo "round $round: $script on $db: $tps per second" >&2
    done
done
rm -rf "$work"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
update=$(echo "${runs[update:c]}" | median)
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }'), $ROUNDS rounds of $SECONDS_PER s, medians:"
printf '| %-44s | %10s | %16s |\n' "call" "per second" "cost vs UPDATE"
printf '|%s|%s|%s|\n' "----------------------------------------------" "------------" "------------------"
for case in "${cases[@]}"; do
    m=$(echo "${runs[$case]}" | median)
    case $case in
        update:c) label="one-row durable UPDATE" ;;
        refresh:c) label="lease_refresh, C edition" ;;
        refresh:p) label="lease_refresh, portable edition" ;;
        refresh:p_noset) label="lease_refresh, portable, without SET search_path" ;;
    esac
    printf '| %-44s | %10.0f | %15.2fx |\n' "$label" "$m" "$(awk -v u="$update" -v m="$m" 'BEGIN { print u / m }')"
done
