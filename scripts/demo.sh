#!/usr/bin/env bash
# Builds and installs lease_lock (installing what is missing), starts a throwaway PostgreSQL
# ($PG_MAJOR, default 15) and shows two holders and a takeover in plain SQL. Stops and removes
# the server on exit.
#
#   scripts/demo.sh              the C edition (CREATE EXTENSION lease_lock)
#   scripts/demo.sh --portable   the portable edition, installed by a role without superuser
#                                rights that owns the schema, as on a managed service
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/lib/cluster.sh
cluster_start
if [ "${1:-}" = --portable ]; then
    psql -X -q -v ON_ERROR_STOP=1 -c "CREATE ROLE lease_owner LOGIN" -c "CREATE SCHEMA lease_lock AUTHORIZATION lease_owner"
    psql -X -q -v ON_ERROR_STOP=1 -U lease_owner -d postgres -f portable/dist/lease_lock_portable.sql >/dev/null
    echo "installed the portable edition as lease_owner (not a superuser)"
else
    psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION lease_lock"
fi

A=aaaaaaaa-0000-0000-0000-000000000001
B=bbbbbbbb-0000-0000-0000-000000000002
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -P footer=off -c "$1"; }

say "Holder A takes the lease 'demo' for 2 seconds:"
sql "SELECT acquired, fencing_token FROM lease_lock.lease_acquire('$A', '2 s', 'demo')"
say "Holder B is refused, and told when A's lease ends:"
sql "SELECT acquired, fencing_token, expires_at > clock_timestamp() AS until_later FROM lease_lock.lease_acquire('$B', '2 s', 'demo')"
say "A renews (same token) and writes protected data under its token:"
sql "SELECT acquired, fencing_token FROM lease_lock.lease_refresh('$A', '2 s', 'demo')"
sql "CREATE TABLE orders_log (token bigint, entry text)"
sql "BEGIN; SELECT lease_lock.lease_fence(1, 'demo'); INSERT INTO orders_log VALUES (1, 'written by A'); COMMIT;" >/dev/null
say "A releases; B takes over at once with token 2:"
sql "SELECT lease_lock.lease_release('$A', 'demo') AS released"
sql "SELECT acquired, fencing_token FROM lease_lock.lease_acquire('$B', '2 s', 'demo')"
say "A, unaware, tries to write with its old token: refused (SQLSTATE LL001), nothing written:"
psql -X -q -c "BEGIN; SELECT lease_lock.lease_fence(1, 'demo'); INSERT INTO orders_log VALUES (1, 'stale write by A'); COMMIT;" 2>&1 | sed -n '1,2p' || true
sql "SELECT * FROM orders_log"
say "B stops renewing (say it crashed). After 2 s its lease expires and A takes over with token 3:"
sleep 2.1
sql "SELECT acquired, fencing_token FROM lease_lock.lease_acquire('$A', '2 s', 'demo')"
say "lease_lock.lease_status:"
sql "SELECT lease_name, holder, fencing_token, held FROM lease_lock.lease_status"

say "Now two processes of the Rust example (client/examples/leader.rs) elect a leader:"
cargo build --quiet -p lease_lock_client --example leader
LEADER=target/debug/examples/leader
CONNINFO="host=$PGHOST port=$PGPORT user=postgres dbname=postgres"
LOGS=$(mktemp -d)
RUST_LOG=info $LEADER "$CONNINFO" alpha >"$LOGS/alpha" 2>&1 &
ALPHA=$!
sleep 0.5
RUST_LOG=info $LEADER "$CONNINFO" beta >"$LOGS/beta" 2>&1 &
BETA=$!
sleep 2
say "alpha leads and writes fenced rows; beta waits. Stopping alpha (SIGTERM: it releases):"
kill -TERM $ALPHA; wait $ALPHA || true
sleep 1.5
say "beta took over at once. Now beta is killed (SIGKILL, no release) and gamma starts: gamma leads once beta's 3 s lease expires."
kill -KILL $BETA; wait $BETA 2>/dev/null || true
RUST_LOG=info $LEADER "$CONNINFO" gamma >"$LOGS/gamma" 2>&1 &
GAMMA=$!
sleep 4.5
kill -TERM $GAMMA; wait $GAMMA || true
sql "SELECT token, worker, count(*) AS rows, min(at)::time(3) AS first, max(at)::time(3) AS last FROM ledger GROUP BY 1, 2 ORDER BY 1"
say "The leaders' logs:"
cat "$LOGS/alpha" "$LOGS/beta" "$LOGS/gamma" | sed 's/\x1b\[[0-9;]*m//g' \
    | grep -E "leader: (leading|shutting)|lease released" \
    | sed -E 's/^[0-9-]+T([0-9:.]{12})[0-9]*Z +INFO .*\}: [a-z_:]+: /\1  /' | sort
rm -rf "$LOGS"
