#!/usr/bin/env python3
"""A leader-elected worker over plain SQL with psycopg 3.

Run it twice against one database: one process at a time appends rows to `ledger`; stop the
leader (Ctrl-C, SIGTERM) and the other takes over at once (woken by NOTIFY); kill it and the
other takes over when its lease runs out. The loop is the one in docs/sql-guide.md.

    pip install -r requirements.txt
    python leader.py "host=/var/run/postgresql dbname=app" [worker-name]

Environment: LEASE_NAME (ledger-writer), LEASE_MS (lease duration, 10000), REFRESH_MS (renewal
interval, at most half the lease, 1000), POOLED=1 behind PgBouncer in transaction mode (no
prepared statements, no LISTEN: standbys poll every REFRESH_MS).
The role needs EXECUTE on the lease functions and rights on `ledger` (see the guide).

The work is done in short steps between renewals, in one thread. If a step of yours can take
longer than REFRESH_MS, move the renewal part of the loop to a thread of its own (with its own
connection) and check the renew deadline before each step.
"""

import os
import random
import signal
import sys
import time
import uuid
from datetime import timedelta

import psycopg

CONNINFO = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: leader.py CONNINFO [WORKER]")
WORKER = sys.argv[2] if len(sys.argv) > 2 else f"worker-{os.getpid()}"
NAME = os.environ.get("LEASE_NAME", "ledger-writer")
LEASE = int(os.environ.get("LEASE_MS", "10000")) / 1000
REFRESH = int(os.environ.get("REFRESH_MS", "1000")) / 1000
POOLED = os.environ.get("POOLED") == "1"
# Below the lease, so that we stop trusting it before the server can give it to anyone else.
RENEW_DEADLINE = LEASE * 2 / 3
JITTER = REFRESH / 4
HOLDER = uuid.uuid4()
if not 0 < REFRESH <= LEASE / 2:
    sys.exit("REFRESH_MS must be positive and at most LEASE_MS / 2")

# The renew deadline is measured on a clock that wall-clock changes never move. CLOCK_BOOTTIME
# (Linux) is time.monotonic() that also counts time suspended, as the lease on the server does.
if hasattr(time, "CLOCK_BOOTTIME"):
    def clock():
        return time.clock_gettime(time.CLOCK_BOOTTIME)
else:
    clock = time.monotonic

# The server computes how long the holder's lease has left on its own clock: ours may disagree.
ACQUIRE = """SELECT acquired, fencing_token, extract(epoch FROM expires_at - clock_timestamp())::float8
             FROM lease_lock.lease_acquire(%s, %s, %s)"""
RENEW = "SELECT acquired FROM lease_lock.lease_refresh(%s, %s, %s)"
ARGS = (HOLDER, timedelta(seconds=LEASE), NAME)
# Created here for a quick try; a role without CREATE on the schema needs it created beforehand.
CREATE_LEDGER = """DO $$ BEGIN IF to_regclass('ledger') IS NULL THEN
    CREATE TABLE ledger (token bigint, worker text, at timestamptz DEFAULT clock_timestamp());
END IF; END $$"""


def log(msg):
    # Wall-clock epoch seconds, for humans and for correlating with the server's timestamps.
    print(f"{time.time():.3f} {WORKER}: {msg}", flush=True)


def connect(conns):
    # autocommit: every lease call is its own short transaction. prepare_threshold=None: behind
    # PgBouncer in transaction mode each statement may run on a different server connection.
    opts = dict(autocommit=True, connect_timeout=2, prepare_threshold=None if POOLED else 5)
    conns.append(psycopg.connect(CONNINFO, **opts))  # lease calls only
    conns.append(psycopg.connect(CONNINFO, **opts))  # the application's own (fenced) work
    conns[1].execute(CREATE_LEDGER)
    if POOLED:
        conns.append(None)
    else:
        # LISTEN needs a session of its own. Listening before the first acquire means a release
        # between a refused acquire and our wait still wakes us.
        conns.append(psycopg.connect(CONNINFO, **opts))
        conns[2].execute("LISTEN lease_lock_released")
    return conns


def wait_for_turn(listen, left):
    """Sleep until the holder's lease ends or (with LISTEN) it is released, plus jitter."""
    # left <= 0: the lease has ended but is still locked (a fenced transaction of the last
    # tenure is open) or NULL: retry after one refresh interval.
    wait = left if left is not None and left > 0 else REFRESH
    wait = min(wait, LEASE if listen else REFRESH) + random.uniform(0, JITTER)
    if listen is None:
        time.sleep(wait)
        return
    for note in listen.notifies(timeout=wait):
        if note.payload == NAME:
            log("woken by a release of the lease")
            return


def work(app, token):
    """The leader's work: one fenced row."""
    # The fence makes this transaction fail with LL001 unless `token` is still the current
    # tenure, and holds off the next tenure until it commits: a deposed leader's row can never
    # land after a successor's.
    with app.transaction():
        app.execute("SELECT lease_lock.lease_fence(%s, %s)", (token, NAME))
        app.execute("INSERT INTO ledger (token, worker) VALUES (%s, %s)", (token, WORKER))


def release():
    # A fresh connection: SIGTERM may have interrupted a call on the lease connection. Any
    # connection of the same role will do: the holder id is the identity.
    try:
        with psycopg.connect(CONNINFO, autocommit=True, connect_timeout=2,
                             prepare_threshold=None) as conn:
            released = conn.execute("SELECT lease_lock.lease_release(%s, %s)", (HOLDER, NAME)).fetchone()[0]
        log("released the lease" if released else "stopped; did not hold the lease")
    except psycopg.Error as e:
        log(f"release failed, the lease will expire: {e}")


def main():
    # SIGTERM acts like Ctrl-C: KeyboardInterrupt wherever we are waiting, then `finally`.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    token = None       # our fencing token while we lead
    confirmed = 0.0    # clock() when the last CONFIRMED acquire or refresh was SENT
    next_refresh = 0.0
    backoff = 0.0
    conns = []
    log(f"competing for lease {NAME} as holder {HOLDER}")
    try:
        while True:
            now = clock()
            # Checked before anything that can fail, so that a dead database cannot keep us
            # leading past the deadline.
            if token is not None and now - confirmed >= RENEW_DEADLINE:
                log(f"no renewal confirmed within the renew deadline ({RENEW_DEADLINE:.3f} s): stop leading")
                token = None
            try:
                lease, app, listen = conns or connect(conns)
                if token is None:
                    acquired, tok, left = lease.execute(ACQUIRE, ARGS).fetchone()
                    if acquired:
                        token, confirmed, next_refresh = tok, now, now + REFRESH
                        log(f"leading with fencing token {token}")
                    else:
                        wait_for_turn(listen, left)
                elif now >= next_refresh:
                    if lease.execute(RENEW, ARGS).fetchone()[0]:
                        confirmed, next_refresh = now, now + REFRESH
                    else:
                        # Expired, taken over or evicted: never keep acting on it.
                        log("lease lost (refresh returned false): stop leading")
                        token = None
                else:
                    work(app, token)
                    time.sleep(max(0.0, next_refresh - clock()))
                backoff = 0.0
            except psycopg.Error as e:
                if e.sqlstate == "LL001":
                    log(f"fencing token {token} refused (LL001): stop leading")
                    token = None
                    continue
                log(f"database error, reconnecting: {str(e).strip()}")
                for conn in conns:
                    if conn is not None:
                        conn.close()
                conns.clear()
                # Capped exponential back-off with jitter; while leading, never past the renew
                # deadline, so that the loop stops leading on time.
                backoff = min(max(backoff * 2, 0.1), 5.0)
                pause = random.uniform(backoff / 2, backoff)
                if token is not None:
                    pause = min(pause, max(0.0, confirmed + RENEW_DEADLINE - clock()))
                time.sleep(pause)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Released even when the renew deadline had passed: the server may still count us.
        release()
        for conn in conns:
            if conn is not None:
                conn.close()


if __name__ == "__main__":
    main()
