#!/usr/bin/env bash
# Runs every test suite of lease_lock against throwaway PostgreSQL 15 clusters and ends with one
# line "N passed, N failed" summing them all. Exits non-zero on any failure.
#
#   scripts/test.sh                 every suite
#   scripts/test.sh regress client  only the named suites
#
# Suites: lint (rustfmt, clippy, examples, the tls feature), regress (pg_regress), isolation (two-session
# specs), client (Rust client unit, doc and integration tests), examples (the SQL-only examples in
# sql/examples, psql/bash and Python), faults (the fault harness, 60 s, and its negative control),
# pgrx (#[pg_test] unit tests).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib/cluster.sh

scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

ALL_SUITES=(lint regress isolation client examples faults pgrx)
[ $# -gt 0 ] && SUITES=("$@") || SUITES=("${ALL_SUITES[@]}")
PASSED=0
FAILED=0
SUMMARY=()

# record SUITE PASSED FAILED
record() {
    PASSED=$((PASSED + $2))
    FAILED=$((FAILED + $3))
    SUMMARY+=("$(printf '%-10s %4d passed, %d failed' "$1" "$2" "$3")")
}

# A scratch directory the postgres OS user can write (tests run PostgreSQL as postgres when root).
scratch_dir() {
    local d
    d=$(mktemp -d /tmp/ll-test.XXXXXX)
    chmod 755 "$d"
    [ "$(id -u)" = 0 ] && chown postgres: "$d"
    echo "$d"
}

# Sums "test result: ok. N passed; M failed" lines of cargo test output on stdin.
cargo_counts() {
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
         END { print p + 0, f + 0 }'
}

suite_pgrx() {
    local pgdata log counts
    pgdata=$(scratch_dir)
    log=$pgdata.log
    local runas=()
    [ "$(id -u)" = 0 ] && runas=(--runas postgres)
    (cd extension && cargo pgrx test pg15 "${runas[@]}" --pgdata "$pgdata/data") >"$log" 2>&1
    local status=$?
    read -r p f < <(cargo_counts <"$log")
    if [ $status -ne 0 ] && [ "$f" = 0 ]; then f=1; tail -40 "$log"; fi
    [ "$f" != 0 ] && grep -E "^test .*FAILED|panicked|ERROR" "$log" | head -40
    record pgrx "$p" "$f"
    rm -rf "$pgdata" "$log"
    # `cargo pgrx test` installed its test build (with the `tests` schema) into the system's
    # PostgreSQL: put the release build back for the other suites and for users.
    scripts/setup.sh >/dev/null 2>&1 || record reinstall 0 1
}

# run_pg_regress SUITE RUNNER INPUT_DIR TESTS...: a pg_regress-style runner against a throwaway
# cluster; counts its "... ok" / "... FAILED" lines.
run_pg_regress() {
    local suite=$1 runner=$2 input=$3
    shift 3
    local work out p f
    work=$(scratch_dir)
    cp -r "$input/." "$work/"
    chown -R "$(stat -c %u "$work")" "$work"
    (
        cluster_start
        as_pg "$runner" --inputdir="$work" --outputdir="$work" --host="$PGHOST" --port="$PGPORT" \
            --user=postgres --dbname="lease_lock_$suite" --load-extension=lease_lock "$@"
    ) >"$work/run.log" 2>&1
    p=$(grep -cE '\.\.\. ok' "$work/run.log")
    f=$(grep -cE '\.\.\. FAILED' "$work/run.log")
    [ "$p" = 0 ] && [ "$f" = 0 ] && f=1
    if [ "$f" != 0 ]; then cat "$work/run.log"; head -200 "$work/regression.diffs" 2>/dev/null; fi
    # ACCEPT_OUTPUT=1: take this run's output as the expected output (review the diff first!).
    if [ "${ACCEPT_OUTPUT:-}" = 1 ]; then mkdir -p "$input/expected"; cp "$work"/results/*.out "$input/expected/"; fi
    record "$suite" "$p" "$f"
    rm -rf "$work"
}

# check NAME COMMAND...: one pass or fail, output shown on failure.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        CHECK_PASSED=$((CHECK_PASSED + 1))
    else
        CHECK_FAILED=$((CHECK_FAILED + 1))
        echo "check failed: $name" >&2
        echo "$out" | tail -40 >&2
    fi
}

suite_lint() {
    CHECK_PASSED=0 CHECK_FAILED=0
    check "rustfmt" cargo fmt --all -- --check
    check "clippy -D warnings" cargo clippy --workspace --all-targets --quiet -- -D warnings
    check "client examples build" cargo build --quiet -p lease_lock_client --examples
    check "client tls feature" cargo check --quiet -p lease_lock_client --features tls
    check "rustdoc" env RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps -p lease_lock_client
    record lint "$CHECK_PASSED" "$CHECK_FAILED"
}

# Rust unit, doc and integration tests (client, harness, benchmark and fault-harness units), against one throwaway cluster.
suite_client() {
    local log status p f
    log=$(mktemp)
    (
        cluster_start
        export LEASE_LOCK_TEST_HOST=$PGHOST LEASE_LOCK_TEST_PORT=$PGPORT
        cargo test -p lease_lock_client -p lease_lock_tests -p lease_lock_bench -p lease_lock_faults --no-fail-fast 2>&1
    ) >"$log"
    status=$?
    read -r p f < <(cargo_counts <"$log")
    [ $status -ne 0 ] && [ "$f" = 0 ] && f=1
    [ "$f" != 0 ] && grep -vE '^\s*(Compiling|Running|Finished|Doc-tests)' "$log" | tail -80
    record client "$p" "$f"
    rm -f "$log"
}

# The SQL-only examples; their runner prints "N passed, M failed" last.
suite_examples() {
    local log p f
    log=$(mktemp)
    sql/examples/run_tests.sh >"$log" 2>&1
    local status=$?
    read -r p f < <(tail -1 "$log" | awk '/passed/ { print $1 + 0, $3 + 0; next } { print 0, 0 }')
    [ $status -ne 0 ] && [ "$f" = 0 ] && f=1
    [ "$f" != 0 ] && tail -60 "$log"
    record examples "$p" "$f"
    rm -f "$log"
}

# The fault harness: a 60 s run that must find no safety violation in at least 100 faults, and
# the negative control (reference-behaving clients) that must be caught. The last summary is
# kept in target/faults-summary.md.
suite_faults() {
    CHECK_PASSED=0 CHECK_FAILED=0
    if ! cargo build --quiet -p lease_lock_faults --bin faults; then
        record faults 0 1
        return
    fi
    local summary=target/faults-summary.md
    check "fault run (60 s, >= 100 faults, no violation)" \
        bash -c "set -o pipefail; target/debug/faults --seconds 60 --min-faults 100 | tee $summary"
    check "negative control (reference behaviour is caught)" \
        bash -c "set -o pipefail; target/debug/faults --seconds 20 --reference --expect-violations | tee -a $summary"
    tail -n +1 "$summary" | grep -E "^## |total|safety violations|negative control|Recovery" >&2
    record faults "$CHECK_PASSED" "$CHECK_FAILED"
}

suite_regress() {
    local tests
    tests=$(cd sql/regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
    # shellcheck disable=SC2086
    run_pg_regress regress "$PG_BIN/../lib/pgxs/src/test/regress/pg_regress" sql/regress $tests
}

suite_isolation() {
    local tests
    tests=$(cd sql/isolation/specs && ls *.spec | sed 's/\.spec$//' | sort)
    # shellcheck disable=SC2086
    run_pg_regress isolation "$PG_BIN/../lib/pgxs/src/test/isolation/pg_isolation_regress" sql/isolation $tests
}

for suite in "${SUITES[@]}"; do
    echo "== $suite" >&2
    "suite_$suite"
done

echo
printf '%s\n' "${SUMMARY[@]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
