#!/usr/bin/env bash
# A leader-elected worker in bash and psql. Run it twice against one database: one process at a
# time appends rows to `ledger`; stop the leader (Ctrl-C, SIGTERM) or kill it, and the other
# takes over. The loop is the one in docs/sql-guide.md.
#
#   sql/examples/leader.sh "host=/var/run/postgresql dbname=app" [worker-name]
#
# Environment: LEASE_NAME (ledger-writer), LEASE_MS (lease duration, 10000), REFRESH_MS (renewal
# interval, at most half the lease, 1000), CALL_TIMEOUT (seconds one psql call may take, 2).
# The role needs EXECUTE on the lease functions and rights on `ledger` (see the guide).
#
# Every SQL call is one short psql run. The functions keep no session state (a holder is just a
# uuid), so a lost connection costs one failed call, and this works through PgBouncer in
# transaction mode. psql cannot sleep waiting for a NOTIFY, so standbys poll: after a release a
# standby takes over within REFRESH_MS + REFRESH_MS/4 (jitter) + a psql call; after a crash,
# within LEASE_MS + REFRESH_MS/4 + a psql call of the crashed leader's last renewal.
set -u

conninfo=${1:?usage: leader.sh CONNINFO [WORKER]}
worker=${2:-worker-$$}
lease_name=${LEASE_NAME:-ledger-writer}
lease_ms=${LEASE_MS:-10000}
refresh_ms=${REFRESH_MS:-1000}
call_timeout=${CALL_TIMEOUT:-2}
# Below the lease, so that we stop trusting it before the server can give it to anyone else.
deadline_ms=$((lease_ms * 2 / 3))
jitter_ms=$((refresh_ms / 4))
if ! ((refresh_ms > 0 && refresh_ms * 2 <= lease_ms)); then
    echo "REFRESH_MS must be positive and at most LEASE_MS / 2" >&2
    exit 2
fi
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-2}

read -r holder </proc/sys/kernel/random/uuid
q="'"
name_lit="'${lease_name//$q/$q$q}'"
worker_lit="'${worker//$q/$q$q}'"
errfile=$(mktemp)
trap 'rm -f "$errfile"' EXIT
stopping=
trap 'stopping=1' TERM INT

# Log lines start with the wall-clock time (epoch seconds), for humans and for correlating with
# the server's timestamps; the lease logic never uses it.
log() { printf '%s %s: %s\n' "${EPOCHREALTIME%???}" "$worker" "$*"; }

# Milliseconds on a clock that never jumps, into $now, without forking. /proc/uptime is
# CLOCK_BOOTTIME: wall-clock changes (date +%s%N, $EPOCHREALTIME) do not move it, and it keeps
# counting while the machine is suspended, as the lease does on the server. 10 ms resolution.
clock() {
    local up
    read -r up _ </proc/uptime
    now=$((${up%.*} * 1000 + 10#${up#*.} * 10))
}

# pause MS: sleeps, but a trapped SIGTERM/SIGINT ends the `wait` at once.
pause() {
    local secs
    printf -v secs '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
    sleep "$secs" &
    wait $! 2>/dev/null
    kill $! 2>/dev/null
}

# sql QUERY: one psql session; prints the rows, fields separated by |; errors (SQLSTATE only for
# server errors) to $errfile. timeout bounds a hung connection so that the loop gets back to its
# renew deadline.
sql() {
    timeout "$call_timeout" psql -X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=sqlstate \
        -d "$conninfo" -c "$1" 2>"$errfile"
}

# failed WHAT: logs a failed call and backs off (exponential, capped at 5 s, with jitter); while
# leading, never past the renew deadline, so that the loop stops leading on time.
backoff=0
failed() {
    local rc=$? ms left
    log "$1 failed (exit $rc): $(tr '\n' ' ' <"$errfile")"
    backoff=$((backoff ? backoff * 2 : 100))
    ((backoff > 5000)) && backoff=5000
    ms=$((backoff / 2 + RANDOM % (backoff / 2 + 1)))
    if [ -n "$token" ]; then
        clock
        left=$((confirmed + deadline_ms - now))
        ((ms > left)) && ms=$((left > 0 ? left : 0))
    fi
    pause "$ms"
}

# The server computes how long the holder's lease has left on its own clock: the client's wall
# clock may disagree with the server's.
acquire_sql="SELECT acquired, fencing_token,
    ceil(extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint
    FROM lease_lock.lease_acquire('$holder', '$lease_ms ms', $name_lit)"
refresh_sql="SELECT acquired FROM lease_lock.lease_refresh('$holder', '$lease_ms ms', $name_lit)"
# The fence makes the transaction fail with LL001 unless $token is still the current tenure, and
# holds off the next tenure until it commits: a deposed leader's row can never land after a
# successor's.
write_sql() {
    echo "BEGIN; SELECT lease_lock.lease_fence($token, $name_lit);
          INSERT INTO ledger (token, worker) VALUES ($token, $worker_lit); COMMIT"
}

# Created here for a quick try; a role without CREATE on the schema needs it created beforehand.
sql 'DO $$ BEGIN IF to_regclass($t$ledger$t$) IS NULL THEN
       CREATE TABLE ledger (token bigint, worker text, at timestamptz DEFAULT clock_timestamp());
     END IF; END $$' >/dev/null || log "could not create ledger: $(tr '\n' ' ' <"$errfile")"

token=        # our fencing token while we lead
confirmed=0   # clock when the last CONFIRMED acquire or refresh was SENT
next_refresh=0
log "competing for lease $lease_name as holder $holder"
while [ -z "$stopping" ]; do
    clock
    if [ -n "$token" ] && ((now - confirmed >= deadline_ms)); then
        log "no renewal confirmed within the renew deadline ($deadline_ms ms): stop leading"
        token=
    fi
    if [ -z "$token" ]; then
        sent=$now
        row=$(sql "$acquire_sql") || { failed acquire; continue; }
        backoff=0
        IFS='|' read -r acquired tok left <<<"$row"
        if [ "$acquired" = t ]; then
            token=$tok confirmed=$sent next_refresh=$((sent + refresh_ms))
            log "leading with fencing token $token"
            continue
        fi
        # Poll at the holder's expiry or after one refresh interval, whichever is first; the
        # jitter keeps standbys from calling in lockstep. A lease that has ended but is still
        # locked (a fenced transaction of the last tenure is open) also lands here: retry.
        wait_ms=$refresh_ms
        [ -n "$left" ] && ((left > 0 && left < wait_ms)) && wait_ms=$left
        pause $((wait_ms + RANDOM % (jitter_ms + 1)))
    elif ((now >= next_refresh)); then
        sent=$now
        row=$(sql "$refresh_sql") || { failed refresh; continue; }
        backoff=0
        if [ "$row" = t ]; then
            confirmed=$sent next_refresh=$((sent + refresh_ms))
        else
            # Expired or taken over (or evicted): never keep acting on it.
            log "lease lost (refresh returned false): stop leading"
            token=
        fi
    else
        # The leader's work: one fenced row per refresh interval.
        if ! sql "$(write_sql)" >/dev/null; then
            if grep -q LL001 "$errfile"; then
                log "fencing token $token refused (LL001): stop leading"
                token=
                continue
            fi
            log "write failed: $(tr '\n' ' ' <"$errfile")"
        fi
        clock
        ((next_refresh > now)) && pause $((next_refresh - now))
    fi
done

# Free the lease now so that a standby need not wait for it to expire. Released even when the
# renew deadline had passed: the server may still count us as the holder.
if [ "$(sql "SELECT lease_lock.lease_release('$holder', $name_lit)")" = t ]; then
    log "released the lease"
else
    log "stopped; did not hold the lease"
fi
exit 0
