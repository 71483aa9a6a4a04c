#!/usr/bin/env bash
# Builds and installs lease_lock (installing what is missing), starts a throwaway PostgreSQL 15
# and shows two holders and a takeover in plain SQL. Stops and removes the server on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/lib/cluster.sh
cluster_start
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION lease_lock"

A=aaaaaaaa-0000-0000-0000-000000000001
B=bbbbbbbb-0000-0000-0000-000000000002
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -P footer=off -c "$1"; }

say "Holder A takes the lease 'demo' for 2 seconds:"
sql "SELECT acquired, fencing_token FROM lease_acquire('$A', '2 s', 'demo')"
say "Holder B is refused, and told when A's lease ends:"
sql "SELECT acquired, fencing_token, expires_at > clock_timestamp() AS until_later FROM lease_acquire('$B', '2 s', 'demo')"
say "A renews (same token) and writes protected data under its token:"
sql "SELECT acquired, fencing_token FROM lease_refresh('$A', '2 s', 'demo')"
sql "CREATE TABLE ledger (token bigint, entry text)"
sql "BEGIN; SELECT lease_fence(1, 'demo'); INSERT INTO ledger VALUES (1, 'written by A'); COMMIT;" >/dev/null
say "A releases; B takes over at once with token 2:"
sql "SELECT lease_release('$A', 'demo') AS released"
sql "SELECT acquired, fencing_token FROM lease_acquire('$B', '2 s', 'demo')"
say "A, unaware, tries to write with its old token: refused (SQLSTATE LL001), nothing written:"
psql -X -q -c "BEGIN; SELECT lease_fence(1, 'demo'); INSERT INTO ledger VALUES (1, 'stale write by A'); COMMIT;" 2>&1 | sed -n '1,2p' || true
sql "SELECT * FROM ledger"
say "B stops renewing (say it crashed). After 2 s its lease expires and A takes over with token 3:"
sleep 2.1
sql "SELECT acquired, fencing_token FROM lease_acquire('$A', '2 s', 'demo')"
say "lease_status:"
sql "SELECT lease_name, holder, fencing_token, held FROM lease_status"
