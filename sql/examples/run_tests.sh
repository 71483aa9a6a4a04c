#!/usr/bin/env bash
# Tests of the SQL-only examples (leader.sh, leader.py) with real processes, real signals and a
# throwaway PostgreSQL 15 cluster; the Python one also through PgBouncer in transaction mode.
# Prints "ok - NAME" or "FAILED - NAME: WHY" per scenario and "N passed, M failed" as the last
# line; exits 1 if any failed. Cleans up clusters, pgbouncer and example processes on any exit.
#
# Each mode (bash, python, python via pgbouncer) runs two workers, each under its own role with
# only the documented grants, and checks:
#   graceful   SIGTERM to the leader: it releases and exits 0, and the standby's new tenure starts
#              before the released lease would have expired and within the documented bound:
#              python (woken by NOTIFY, which it logs): 1 s; polling (bash, pgbouncer):
#              REFRESH_MS * 1.25 (poll interval + jitter) + 1 s slack
#   sigkill    SIGKILL to the leader's process group: the new tenure starts no earlier than the
#              killed tenure's expiry and within LEASE_MS + REFRESH_MS * 1.25 + 1 s slack
#   stale      a write fenced with the killed tenure's token is refused with LL001 and writes
#              nothing
#   reconnect  the leader's sessions are terminated: it reconnects and a lease duration later
#              still holds the same tenure and has written rows since
#   deadline   the lease row is locked FOR SHARE for 3 s, so renewals fail but fenced writes
#              pass: the leader logs "stop leading" (renew deadline) before its lease expires,
#              and writes nothing after that
#   evict      lease_lock.lease_evict while a fenced transaction (2 s) of the leader's tenure is open: the
#              leader logs "stop leading" and writes nothing after that; no other tenure writes before
#              that transaction ends, and a new tenure starts after it, within REFRESH_MS * 1.25
#              + 1 s (a standby's retry interval)
#   tokens     over all the above: every token was written by one worker only, tokens increase
#              in write order, tenures' writes do not overlap in time, one token per tenure seen
#
# Timing bounds carry 1 s of slack for a loaded 2-core machine: they test correctness (before
# the lease's expiry, within lease + retry), not speed. Measured times are printed in the ok lines.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
source scripts/lib/cluster.sh

export LEASE_MS=2000 REFRESH_MS=400 LEASE_NAME=ledger-writer CALL_TIMEOUT=2
unset PGOPTIONS # PgBouncer rejects the startup parameter "options"
POLL_BOUND=$(awk -v r=$REFRESH_MS 'BEGIN { print r * 1.25 / 1000 + 1 }')
NOTIFY_BOUND=1
KILL_BOUND=$(awk -v l=$LEASE_MS -v r=$REFRESH_MS 'BEGIN { print (l + r * 1.25) / 1000 + 1 }')
VENV=$ROOT/target/examples-venv
PY=$VENV/bin/python

PASSED=0
FAILED=0
ok() { echo "ok - $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAILED - $1: $2"; FAILED=$((FAILED + 1)); }
# show_logs MODE: the example processes' logs, after a failure.
show_logs() {
    local f
    for f in "$WORK/$1"-*.log; do
        [ -f "$f" ] && { echo "# --- $f"; sed 's/^/# /' "$f" | tail -25; }
    done
}

WORK=$(mktemp -d /tmp/llex.XXXXXX)
chmod 755 "$WORK"
declare -A PID=()
PGB_PIDFILE=$WORK/pgbouncer/pgbouncer.pid

cleanup() {
    local p
    for p in "${PID[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
    # Read at exit: pgbouncer -d may write its pid file only after its port already accepts
    # connections.
    [ -s "$PGB_PIDFILE" ] && kill -TERM "$(cat "$PGB_PIDFILE")" 2>/dev/null
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the Python virtualenv: reused while requirements.txt is unchanged --------------------------
setup_venv() {
    if cmp -s sql/examples/requirements.txt "$VENV/.requirements" && "$PY" -c 'import psycopg' 2>/dev/null; then
        return 0
    fi
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 has no venv module until python3-venv is installed.
        [ "$(id -u)" = 0 ] || return 1
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null &&
            rm -rf "$VENV" && python3 -m venv "$VENV" || return 1
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check -r sql/examples/requirements.txt &&
        cp sql/examples/requirements.txt "$VENV/.requirements"
}

# --- helpers ------------------------------------------------------------------------------------
# q DB SQL: one query as the superuser, unaligned rows, fields separated by |.
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
# calc EXPR: floating point arithmetic; lt A B: A < B.
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# conninfo MODE WORKER
conninfo() {
    case $1 in
        pgbouncer) echo "host=127.0.0.1 port=$PGB_PORT dbname=ex_$1 user=ll_$2" ;;
        *) echo "host=$PGHOST port=$PGPORT dbname=ex_$1 user=ll_$2" ;;
    esac
}

# start MODE WORKER: one example process in a process group of its own (so that SIGKILL and the
# cleanup reach its psql children too), logging to $WORK/MODE-WORKER.log.
start() {
    local mode=$1 w=$2 cmd
    case $mode in
        bash) cmd=(sql/examples/leader.sh) ;;
        python) cmd=("$PY" sql/examples/leader.py) ;;
        pgbouncer) cmd=(env POOLED=1 "$PY" sql/examples/leader.py) ;;
    esac
    setsid "${cmd[@]}" "$(conninfo "$mode" "$w")" "$mode-$w" >>"$WORK/$mode-$w.log" 2>&1 </dev/null &
    PID[$mode-$w]=$!
}

# stop_gracefully MODE WORKER: SIGTERM, waits up to 10 s; sets RC (its exit status, or "hung").
stop_gracefully() {
    local pid=${PID[$1-$2]} i
    RC=
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        RC=hung
        kill -KILL -- "-$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    local status=$?
    [ "$RC" = hung ] || RC=$status
    unset "PID[$1-$2]"
}

# wait_leader DB AFTER_TOKEN TIMEOUT_S: waits for a held tenure with a token above AFTER_TOKEN
# that has written a row; sets TOKEN, WORKER, ACQUIRED (epoch s) and OLD_EXPIRES (the last
# expires_at seen for AFTER_TOKEN). Returns 1 on timeout.
wait_leader() {
    local db=$1 after=$2 end row tok held exp acq w
    end=$(calc "${EPOCHREALTIME} + $3")
    OLD_EXPIRES=
    while lt "$EPOCHREALTIME" "$end"; do
        row=$(q "$db" "SELECT s.fencing_token, s.held, extract(epoch FROM s.expires_at),
                              extract(epoch FROM s.acquired_at),
                              (SELECT worker FROM ledger WHERE token = s.fencing_token LIMIT 1)
                       FROM lease_lock.lease_status s WHERE s.lease_name = '$LEASE_NAME'")
        IFS='|' read -r tok held exp acq w <<<"$row"
        if [ -n "$tok" ]; then
            [ "$tok" = "$after" ] && OLD_EXPIRES=$exp
            if [ "$tok" -gt "$after" ] && [ "$held" = t ] && [ -n "$w" ]; then
                TOKEN=$tok WORKER=$w ACQUIRED=$acq
                return 0
            fi
        fi
        sleep 0.05
    done
    return 1
}

other() { [ "$1" = a ] && echo b || echo a; }

# setup_db DB: what an administrator sets up (docs/sql-guide.md): the extension, the
# application's table, and for each application role EXECUTE on the four lease functions.
# EDITION=portable: the portable edition's psql script, run by lease_owner, which owns the schema.
setup_db() {
    q postgres "CREATE DATABASE $1" >/dev/null || return 1
    install_lease_lock "$1" >/dev/null || return 1
    q "$1" "CREATE TABLE ledger (token bigint, worker text, at timestamptz DEFAULT clock_timestamp());
                GRANT SELECT, INSERT ON ledger TO ll_a, ll_b;
                GRANT EXECUTE ON FUNCTION lease_lock.lease_acquire(uuid, interval, text),
                    lease_lock.lease_refresh(uuid, interval, text), lease_lock.lease_release(uuid, text),
                    lease_lock.lease_fence(bigint, text) TO ll_a, ll_b" >/dev/null
}

# --- one mode: two workers, every scenario ------------------------------------------------------
run_mode() {
    local mode=$1 label=$2 db=ex_$1 notify_bound=$3 notify=${4:-}
    local t1 t2 t3 leader standby t0 dt out line ts n old_token tok held w
    local tokens_seen=() failed_before=$FAILED

    start "$mode" a
    start "$mode" b
    if ! wait_leader "$db" 0 15; then
        for n in graceful sigkill stale reconnect deadline evict tokens; do fail "$label: $n" "no leader within 15 s"; done
        show_logs "$mode"
        return
    fi
    t1=$TOKEN leader=${WORKER#"$mode-"} standby=$(other "$leader")
    tokens_seen+=("$t1")
    sleep 1 # the standby has connected (and LISTENs) and lost its first acquire by now

    # graceful: SIGTERM -> release -> the standby takes over long before the lease would expire.
    local expires_before
    expires_before=$(q "$db" "SELECT extract(epoch FROM expires_at) FROM lease_lock.lease_status WHERE lease_name = '$LEASE_NAME'")
    t0=$EPOCHREALTIME
    stop_gracefully "$mode" "$leader"
    if ! wait_leader "$db" "$t1" 10; then
        fail "$label: graceful takeover after SIGTERM" "no new leader within 10 s"
    else
        t2=$TOKEN
        tokens_seen+=("$t2")
        dt=$(calc "$ACQUIRED - $t0")
        if [ "$RC" != 0 ]; then
            fail "$label: graceful takeover after SIGTERM" "the leader exited with $RC"
        elif ! grep -q "released the lease" "$WORK/$mode-$leader.log"; then
            fail "$label: graceful takeover after SIGTERM" "the leader did not log a release"
        elif [ "$WORKER" != "$mode-$standby" ]; then
            fail "$label: graceful takeover after SIGTERM" "new tenure by $WORKER, not the standby"
        elif ! lt "$ACQUIRED" "$expires_before"; then
            fail "$label: graceful takeover after SIGTERM" "taken over ${dt}s after SIGTERM, not before the lease's expiry"
        elif [ -n "$notify" ] && ! awk -v t="$t0" '$1 >= t && /woken by a release/ { f = 1 } END { exit !f }' "$WORK/$mode-$standby.log"; then
            fail "$label: graceful takeover after SIGTERM" "the standby was not woken by the release's NOTIFY"
        elif ! le "$dt" "$notify_bound"; then
            fail "$label: graceful takeover after SIGTERM" "taken over ${dt}s after SIGTERM (bound ${notify_bound}s)"
        else
            ok "$label: graceful takeover after SIGTERM in ${dt}s (bound ${notify_bound}s, lease $((LEASE_MS / 1000))s${notify:+, woken by NOTIFY})"
        fi
        leader=$standby standby=$(other "$standby")
    fi
    start "$mode" "$standby"
    sleep 1

    # sigkill: no release; the standby takes over once the lease has run out.
    old_token=${t2:-$t1}
    t0=$EPOCHREALTIME
    kill -KILL -- "-${PID[$mode-$leader]}" 2>/dev/null
    wait "${PID[$mode-$leader]}" 2>/dev/null
    unset "PID[$mode-$leader]"
    if ! wait_leader "$db" "$old_token" 15; then
        fail "$label: takeover after SIGKILL" "no new leader within 15 s"
    else
        t3=$TOKEN
        tokens_seen+=("$t3")
        dt=$(calc "$ACQUIRED - $t0")
        if [ "$WORKER" != "$mode-$standby" ]; then
            fail "$label: takeover after SIGKILL" "new tenure by $WORKER, not the standby"
        elif [ -z "$OLD_EXPIRES" ] || lt "$ACQUIRED" "$OLD_EXPIRES"; then
            fail "$label: takeover after SIGKILL" "new tenure at $ACQUIRED, before the killed tenure's expiry ${OLD_EXPIRES:-unseen}"
        elif ! le "$dt" "$KILL_BOUND"; then
            fail "$label: takeover after SIGKILL" "taken over ${dt}s after SIGKILL (bound ${KILL_BOUND}s)"
        else
            ok "$label: takeover after SIGKILL in ${dt}s (bound ${KILL_BOUND}s)"
        fi
        leader=$standby standby=$(other "$standby")
    fi

    # stale: the killed tenure's token can no longer write.
    if out=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate -d "$db" -c "BEGIN;
            SELECT lease_lock.lease_fence($old_token, '$LEASE_NAME');
            INSERT INTO ledger (token, worker) VALUES ($old_token, 'stale-writer'); COMMIT" 2>&1); then
        fail "$label: stale fencing token refused (LL001)" "the fenced write with token $old_token succeeded"
    elif ! grep -q LL001 <<<"$out"; then
        fail "$label: stale fencing token refused (LL001)" "refused with: $out"
    elif [ "$(q "$db" "SELECT count(*) FROM ledger WHERE worker = 'stale-writer'")" != 0 ]; then
        fail "$label: stale fencing token refused (LL001)" "a stale row was written"
    else
        ok "$label: stale fencing token $old_token refused (LL001), nothing written"
    fi
    start "$mode" "$standby"
    sleep 1

    # reconnect: the leader's sessions are terminated; it reconnects and keeps its tenure (a
    # lost connection is not a lost lease). A whole lease duration later the same tenure is still
    # held, so it was renewed after the kill, and the leader wrote rows after the kill.
    old_token=${t3:-${t2:-$t1}}
    t0=$EPOCHREALTIME
    n=$(q "$db" "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'll_$leader'")
    sleep "$(calc "$LEASE_MS / 1000")"
    IFS='|' read -r tok held w <<<"$(q "$db" "SELECT fencing_token, held,
        (SELECT count(*) FROM ledger WHERE token = s.fencing_token AND at > to_timestamp($t0))
        FROM lease_lock.lease_status s WHERE lease_name = '$LEASE_NAME'")"
    if [ "$tok" != "$old_token" ] || [ "$held" != t ]; then
        fail "$label: leader keeps its tenure across a lost connection" "tenure $tok (held: $held) instead of $old_token"
    elif [ "$w" = 0 ]; then
        fail "$label: leader keeps its tenure across a lost connection" "no rows written since its $n sessions were terminated"
    else
        ok "$label: leader keeps its tenure across a lost connection ($n sessions terminated, $w rows written since)"
    fi

    # deadline: an administrator's transaction locks the lease row FOR SHARE for 3 s. Renewals
    # wait for it (lease_lock.lock_timeout, 1 s) and fail; fenced writes still pass until the lease
    # expires; nobody can start a new tenure. The leader must stop acting on its own clock, at its
    # renew deadline, before the lease expires; it writes nothing after that.
    local blocker old_expires t_block
    t_block=$EPOCHREALTIME
    PGAPPNAME=ll_blocker psql -X -q -d "$db" -c "BEGIN;
        SELECT 1 FROM lease_lock.leases WHERE lease_name = '$LEASE_NAME' FOR SHARE;
        SELECT pg_sleep(3); COMMIT" >/dev/null 2>&1 &
    blocker=$!
    for ((n = 0; n < 100; n++)); do
        [ "$(q postgres "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'll_blocker' AND wait_event = 'PgSleep'")" = 1 ] && break
        sleep 0.05
    done
    # Renewals cannot move expires_at any more.
    IFS='|' read -r tok old_expires <<<"$(q "$db" "SELECT fencing_token, extract(epoch FROM expires_at)
        FROM lease_lock.lease_status WHERE lease_name = '$LEASE_NAME' AND held")"
    wait "$blocker"
    if [ "$tok" != "$old_token" ]; then
        fail "$label: leader that cannot renew stops at its renew deadline" "tenure $tok held when the row was locked, not $old_token"
    elif ! wait_leader "$db" "$old_token" 10; then
        fail "$label: leader that cannot renew stops at its renew deadline" "no new tenure within 10 s of the lock's end"
    else
        tokens_seen+=("$TOKEN")
        line=$(awk -v t="$t_block" '$1 >= t && /renew deadline/ { print; exit }' "$WORK/$mode-$leader.log")
        ts=${line%% *}
        if [ -z "$line" ]; then
            fail "$label: leader that cannot renew stops at its renew deadline" "no renew-deadline stop logged"
        elif ! lt "$ts" "$old_expires"; then
            fail "$label: leader that cannot renew stops at its renew deadline" "stopped at $ts, the lease expired at $old_expires"
        elif [ "$(q "$db" "SELECT count(*) FROM ledger WHERE token = $old_token AND at > to_timestamp($ts)")" != 0 ]; then
            fail "$label: leader that cannot renew stops at its renew deadline" "wrote rows after it stopped"
        else
            ok "$label: leader that cannot renew stopped acting $(calc "$old_expires - $ts")s before its lease expired"
        fi
    fi
    sleep 1 # the new leader writes a few rows

    # evict: an administrator evicts the leader while a fenced transaction of its tenure is open
    # (2 s). The leader stops; no new tenure starts until that transaction ends, then one does
    # within a standby's retry interval (+ 1 s slack).
    local fenced_out fenced_end evicted t_evict
    if ! wait_leader "$db" 0 5; then
        fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "no leader"
    else
        old_token=$TOKEN leader=${WORKER#"$mode-"}
        fenced_out=$WORK/fenced.out
        PGAPPNAME=ll_fenced psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$db" -c "BEGIN;
            SELECT lease_lock.lease_fence($old_token, '$LEASE_NAME'); SELECT pg_sleep(2);
            SELECT extract(epoch FROM clock_timestamp()); COMMIT" >"$fenced_out" 2>&1 &
        blocker=$!
        for ((n = 0; n < 100; n++)); do
            [ "$(q postgres "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'll_fenced' AND wait_event = 'PgSleep'")" = 1 ] && break
            sleep 0.05
        done
        t0=$EPOCHREALTIME
        IFS='|' read -r evicted t_evict <<<"$(q "$db" "SELECT lease_lock.lease_evict('$LEASE_NAME'), extract(epoch FROM clock_timestamp())")"
        wait "$blocker"
        fenced_end=$(tail -1 "$fenced_out")
        line=$(awk -v t="$t0" '$1 >= t && /stop leading/ { print; exit }' "$WORK/$mode-$leader.log")
        ts=${line%% *}
        # What happened while the fenced transaction was open. A fenced write of the leader that
        # passed its fence before the eviction may still land after it; none may after it stopped.
        IFS='|' read -r tok held <<<"$(q "$db" "SELECT
            (SELECT min(token) FROM ledger WHERE token > $old_token AND at < to_timestamp(${fenced_end:-0})),
            (SELECT count(*) FROM ledger WHERE token = $old_token AND at > to_timestamp(${ts:-0}))")"
        if [ "$evicted" != t ]; then
            fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "lease_lock.lease_evict returned $evicted"
        elif [ -z "$fenced_end" ] || ! grep -qE '^[0-9.]+$' <<<"$fenced_end"; then
            fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "the fenced transaction failed: $(cat "$fenced_out")"
        elif [ -z "$line" ] || ! lt "$ts" "$fenced_end"; then
            fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "the evicted leader did not stop while the fenced transaction was open"
        elif [ "$held" != 0 ]; then
            fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "the evicted leader wrote $held rows after it stopped"
        elif [ -n "$tok" ]; then
            fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "tenure $tok wrote while the fenced transaction was open"
        elif ! wait_leader "$db" "$old_token" 10; then
            fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "no new tenure within 10 s"
        elif lt "$ACQUIRED" "$fenced_end"; then
            fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "new tenure at $ACQUIRED, before the fenced transaction's end $fenced_end"
        elif ! le "$(calc "$ACQUIRED - $fenced_end")" "$POLL_BOUND"; then
            fail "$label: evicted leader stops, fenced transaction holds off the next tenure" "new tenure $(calc "$ACQUIRED - $fenced_end")s after the fenced transaction ended (bound ${POLL_BOUND}s)"
        else
            tokens_seen+=("$TOKEN")
            ok "$label: evicted leader stopped $(calc "$ts - $t_evict")s after the eviction; next tenure $(calc "$ACQUIRED - $fenced_end")s after the fenced transaction ended"
        fi
    fi
    sleep 1

    # tokens: stop everyone, then check the whole ledger.
    for n in a b; do [ -n "${PID[$mode-$n]:-}" ] && stop_gracefully "$mode" "$n"; done
    local bad
    bad=$(q "$db" "SELECT
        (SELECT count(*) FROM (SELECT token FROM ledger GROUP BY token HAVING count(DISTINCT worker) > 1) x),
        (SELECT count(*) FROM (SELECT token, lag(token) OVER (ORDER BY at) AS prev FROM ledger) x WHERE token < prev),
        (SELECT count(*) FROM (SELECT max(at) AS last, lead(min(at)) OVER (ORDER BY token) AS next
                               FROM ledger GROUP BY token) x WHERE last >= next),
        (SELECT count(DISTINCT token) FROM ledger),
        (SELECT count(*) FROM ledger)")
    local shared backwards overlaps ntokens nrows
    IFS='|' read -r shared backwards overlaps ntokens nrows <<<"$bad"
    local missing=0 prev=0 t
    for t in "${tokens_seen[@]}"; do
        [ "$(q "$db" "SELECT count(*) > 0 FROM ledger WHERE token = $t")" = t ] || missing=1
        [ "$t" -gt "$prev" ] || missing=1
        prev=$t
    done
    if [ "$shared" != 0 ] || [ "$backwards" != 0 ] || [ "$overlaps" != 0 ]; then
        fail "$label: one writer per token, tokens increase" "tokens with two writers: $shared, backwards steps: $backwards, overlapping tenures: $overlaps"
    elif [ "${#tokens_seen[@]}" -lt 2 ] || [ "$missing" != 0 ]; then
        fail "$label: one writer per token, tokens increase" "tenures seen: ${tokens_seen[*]}"
    else
        ok "$label: one writer per token, tokens increase ($nrows rows, $ntokens tenures, seen ${tokens_seen[*]})"
    fi
    [ "$FAILED" = "$failed_before" ] || show_logs "$mode"
}

# --- PgBouncer in transaction mode, in front of the throwaway cluster ---------------------------
start_pgbouncer() {
    local dir=$WORK/pgbouncer i
    mkdir -p "$dir"
    PGB_PORT=$(free_port)
    cat >"$dir/pgbouncer.ini" <<EOF
[databases]
ex_pgbouncer = host=127.0.0.1 port=$PGPORT dbname=ex_pgbouncer

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
logfile = $dir/pgbouncer.log
pidfile = $PGB_PIDFILE
EOF
    printf '"ll_a" ""\n"ll_b" ""\n"postgres" ""\n' >"$dir/userlist.txt"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
    # pgbouncer refuses to run as root, like PostgreSQL. scripts/setup.sh installs it.
    as_pg "$(command -v pgbouncer || echo /usr/sbin/pgbouncer)" -d -q "$dir/pgbouncer.ini" || return 1
    for ((i = 0; i < 50; i++)); do
        psql -X -q -h 127.0.0.1 -p "$PGB_PORT" -U ll_a -d ex_pgbouncer -c 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$dir/pgbouncer.log" >&2
    return 1
}

# --- main ---------------------------------------------------------------------------------------
started=$SECONDS
cluster_start >/dev/null
status=$?
trap cleanup EXIT # cluster_start replaced it
[ $status = 0 ] || { fail "cluster" "could not start PostgreSQL"; echo "$PASSED passed, $FAILED failed"; exit 1; }
q postgres "CREATE ROLE ll_a LOGIN; CREATE ROLE ll_b LOGIN" >/dev/null

# Modes to run (all by default): bash python pgbouncer.
MODES=" ${*:-bash python pgbouncer} "
if [[ $MODES == *" bash "* ]]; then
    if setup_db ex_bash; then run_mode bash bash "$POLL_BOUND"; else fail bash "database setup failed"; fi
fi
if [[ $MODES == *" python "* || $MODES == *" pgbouncer "* ]]; then
    if setup_venv >"$WORK/venv.log" 2>&1; then
        if [[ $MODES == *" python "* ]]; then
            if setup_db ex_python; then
                run_mode python python "$NOTIFY_BOUND" notify
            else
                fail python "database setup failed"
            fi
        fi
        if [[ $MODES == *" pgbouncer "* ]]; then
            if setup_db ex_pgbouncer && start_pgbouncer; then
                run_mode pgbouncer "python via pgbouncer (transaction mode, polling)" "$POLL_BOUND"
            else
                fail "python via pgbouncer" "database setup failed or pgbouncer did not start"
            fi
        fi
    else
        sed 's/^/# /' "$WORK/venv.log" | tail -20
        fail "python" "could not create the virtualenv $VENV"
    fi
fi

echo "# run time $((SECONDS - started)) s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
