#!/usr/bin/env bash
# Runs the test suites of lease_lock against throwaway PostgreSQL clusters and ends with one line
# "N passed, N failed" summing them all. Exits non-zero on any failure.
#
#   scripts/test.sh                   every suite on PostgreSQL 15, then the matrix suites on
#                                     16, 17 and 18 (fetched into target/pg by scripts/lib/pg.sh)
#   scripts/test.sh regress client    only the named suites, on 15 then on the other majors
#   PG_MAJOR=17 scripts/test.sh       every suite (or the named ones) on PostgreSQL 17 only
#   PG_MAJORS="15 18" scripts/test.sh the named majors, the first with every suite
#   EDITION=portable scripts/test.sh  the portable edition only (default: the C edition, then
#                                     the portable edition's suites on the first major)
#
# Suites: lint (rustfmt, clippy, examples, the tls feature), regress (pg_regress), isolation (two-session
# specs), client (Rust client unit, doc and integration tests), examples (the SQL-only examples in
# sql/examples, psql/bash and Python), faults (the fault harness, 60 s, and its negative control),
# pgrx (#[pg_test] unit tests), package (the .deb and tarball, installed, then pg_regress). The matrix runs MATRIX_SUITES on the majors after the first.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib/cluster.sh
# Every build here is a one-off: incremental caches would only take disk (about 2 GB).
export CARGO_INCREMENTAL=0

# disk_line WHEN: the space target/ takes and what is left, on the log (a full disk fails tests in
# ways that look like anything else).
disk_line() {
    local used free
    used=$(du -sh target 2>/dev/null | cut -f1)
    free=$(df -h --output=avail . | tail -1 | tr -d ' ')
    echo "== disk $1: target/ ${used:-0}, $free free" >&2
}
disk_line "at start"
if [ "$(df -k --output=avail . | tail -1)" -lt $((6 * 1024 * 1024)) ]; then
    echo "warning: under 6 GB free here; the suites build about 5 GB into target/ and start clusters in /tmp" >&2
fi

ALL_SUITES=(lint regress isolation client examples faults pgrx package)
# On the majors after the first: what differs by major (the build, the SQL contract, concurrency,
# the client against that server, #[pg_test]). lint is the same code, and the examples and the
# fault run exercise the client and the protocol more than the server major.
MATRIX_SUITES=(regress isolation client pgrx package)
if [ -n "${PG_MAJOR:-}" ]; then
    MAJORS=("$PG_MAJOR")
else
    read -r -a MAJORS <<<"${PG_MAJORS:-15 16 17 18}"
fi
[ $# -gt 0 ] && SUITES=("$@") || SUITES=("${ALL_SUITES[@]}")
PASSED=0
FAILED=0
SUMMARY=()
MAJOR_PASSED=0
MAJOR_FAILED=0
# Which edition the suites run against: c (CREATE EXTENSION) or portable
# (portable/dist/lease_lock_portable.sql). Unset: the C edition on every major, then the
# portable edition's suites on the first major.
if [ -n "${EDITION:-}" ]; then
    EDITIONS=("$EDITION")
else
    EDITIONS=(c portable)
fi
EDITION=${EDITIONS[0]}
export LEASE_LOCK_EDITION=$EDITION
# What the portable edition is tested with: everything that exercises the SQL API (lint, pgrx
# and package are about the C extension's build).
PORTABLE_SUITES=(regress isolation client examples faults)

# record SUITE PASSED FAILED
record() {
    PASSED=$((PASSED + $2))
    FAILED=$((FAILED + $3))
    MAJOR_PASSED=$((MAJOR_PASSED + $2))
    MAJOR_FAILED=$((MAJOR_FAILED + $3))
    SUMMARY+=("$(printf '%-13s %-15s %4d passed, %d failed' "pg$PG_MAJOR $EDITION" "$1" "$2" "$3")")
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
    (cd extension && cargo pgrx test "pg$PG_MAJOR" "${runas[@]}" --pgdata "$pgdata/data") >"$log" 2>&1
    local status=$?
    read -r p f < <(cargo_counts <"$log")
    if [ $status -ne 0 ] && [ "$f" = 0 ]; then f=1; tail -40 "$log"; fi
    [ "$f" != 0 ] && grep -E "^test .*FAILED|panicked|ERROR" "$log" | head -40
    record pgrx "$p" "$f"
    rm -rf "$pgdata" "$log"
    # `cargo pgrx test` installed its test build (with the `tests` schema) into this major's
    # PostgreSQL: put the release build back for the other suites and for users.
    scripts/setup.sh >/dev/null 2>&1 || record reinstall 0 1
}

# run_pg_regress SUITE RUNNER INPUT_DIR TESTS...: a pg_regress-style runner against a throwaway
# cluster; counts its passed and failed tests.
run_pg_regress() {
    local suite=$1 runner=$2 input=$3
    shift 3
    local work out p f
    work=$(scratch_dir)
    cp -r "$input/." "$work/"
    chown -R "$(stat -c %u "$work")" "$work"
    # The portable edition's own expected outputs, where they differ (each explained in that
    # directory's README.md), replace the shared ones.
    if [ "$EDITION" = portable ] && [ -d "$input/expected-portable" ]; then
        cp "$input"/expected-portable/*.out "$work/expected/"
    fi
    (
        cluster_start
        # The database with the edition installed (CREATE EXTENSION, or the portable script run
        # by a non-superuser owner of the schema), then pg_regress uses it as it is.
        "$PG_BIN/psql" -X -q -c "CREATE DATABASE lease_lock_$suite" && install_lease_lock "lease_lock_$suite" &&
            as_pg "$runner" --inputdir="$work" --outputdir="$work" --host="$PGHOST" --port="$PGPORT" \
                --bindir="$PG_BIN" --user=postgres --use-existing --dbname="lease_lock_$suite" "$@"
    ) >"$work/run.log" 2>&1
    # "name ... ok" up to PostgreSQL 15, TAP ("ok 1 - name", "not ok 2 - name") from 16.
    p=$(grep -cE '\.\.\. ok|^ok [0-9]' "$work/run.log")
    f=$(grep -cE '\.\.\. FAILED|^not ok [0-9]' "$work/run.log")
    # A test that did not run (pg_regress bailed out, e.g. on a missing expected file) failed.
    [ $((p + f)) -lt $# ] && f=$(($# - p))
    if [ "$f" != 0 ] || [ -n "${VERBOSE:-}" ]; then cat "$work/run.log"; head -200 "$work/regression.diffs" 2>/dev/null; fi
    # ACCEPT_OUTPUT=1: take this run's output as the expected output (review the diff first!).
    # With EDITION=portable, only the outputs that differ from the shared ones go to
    # expected-portable/ (explain each in its README.md).
    if [ "${ACCEPT_OUTPUT:-}" = 1 ] && [ "$EDITION" = portable ]; then
        local out name
        for out in "$work"/results/*.out; do
            name=$(basename "$out")
            if [[ $name == portable_* ]]; then
                cp "$out" "$input/expected/" # the portable edition's own tests
            elif cmp -s "$out" "$input/expected/$name"; then
                rm -f "$input/expected-portable/$name"
            else
                mkdir -p "$input/expected-portable"
                cp "$out" "$input/expected-portable/"
            fi
        done
    elif [ "${ACCEPT_OUTPUT:-}" = 1 ]; then
        mkdir -p "$input/expected"
        cp "$work"/results/*.out "$input/expected/"
    fi
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
    check "META.json (PGXN) matches Cargo.toml" python3 scripts/lib/check_meta.py
    check "portable/dist generated from portable/lease_lock.sql" scripts/portable.sh --check
    check "shell scripts parse" bash -c 'for f in scripts/*.sh scripts/lib/*.sh sql/examples/*.sh; do bash -n "$f" || exit 1; done' 
    record lint "$CHECK_PASSED" "$CHECK_FAILED"
}

# Rust unit, doc and integration tests (client, harness, benchmark and fault-harness units), against one throwaway cluster.
suite_client() {
    local log status p f
    log=$(mktemp)
    (
        cluster_start
        export LEASE_LOCK_TEST_HOST=$PGHOST LEASE_LOCK_TEST_PORT=$PGPORT
        if [ "$EDITION" = portable ]; then
            # The client, failover, install, TLS and lease-lock tests; extension.rs and upgrade.rs
            # test the C extension's packaging (CREATE EXTENSION, pg_dump of its config table,
            # ALTER EXTENSION).
            cargo test -p lease_lock_tests -p lease_lock_cli --test client --test failover --test portable --test tls \
                --test cli --no-fail-fast 2>&1
        else
            cargo test -p lease_lock_client -p lease_lock_tests -p lease_lock_bench -p lease_lock_faults -p lease_lock_cli --no-fail-fast 2>&1
        fi
    ) >"$log"
    status=$?
    read -r p f < <(cargo_counts <"$log")
    [ $status -ne 0 ] && [ "$f" = 0 ] && f=1
    if [ "$f" != 0 ]; then
        # Each failing test's message first (a backtrace can push it out of the tail), then the end.
        grep -E "panicked at" -A6 "$log" | grep -vE '^\s+([0-9]+: |at )' | head -60
        grep -vE '^\s*(Compiling|Running|Finished|Doc-tests)' "$log" | tail -40
    fi
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

# The fault harness: a 60 s run that must find no safety violation in at least 100 faults and
# see the fence refuse at least one stale write (the pause-write fault), and the negative
# control (reference-behaving clients, writes not fenced) that must be caught. The last summary is
# kept in target/faults-summary.md.
suite_faults() {
    CHECK_PASSED=0 CHECK_FAILED=0
    if ! cargo build --quiet -p lease_lock_faults --bin faults; then
        record faults 0 1
        return
    fi
    local summary=target/faults-summary.md
    check "fault run (60 s, >= 100 faults, >= 1 stale write refused by the fence, no violation)" \
        bash -c "set -o pipefail; target/debug/faults --seconds 60 --min-faults 100 --min-refusals 1 | tee $summary"
    check "negative control (reference behaviour is caught)" \
        bash -c "set -o pipefail; target/debug/faults --seconds 20 --reference --expect-violations | tee -a $summary"
    tail -n +1 "$summary" | grep -E "^## |total|safety violations|negative control|Recovery|refused" >&2
    record faults "$CHECK_PASSED" "$CHECK_FAILED"
}

# The packages users install (scripts/package.sh): built for this major, installed the way a user
# would, then pg_regress against what they installed. On 15 the Debian package goes into the
# machine's PostgreSQL with dpkg -i (and is removed after, the source build put back); on the
# fetched majors, which are not Debian packages, the tarball's install.sh installs into the tree
# and the .deb's file list is checked.
suite_package() {
    CHECK_PASSED=0 CHECK_FAILED=0
    local version deb tarball
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
    deb=target/dist/postgresql-$PG_MAJOR-lease-lock_${version}_amd64.deb
    tarball=target/dist/lease_lock-$version-pg$PG_MAJOR-linux-x86_64.tar.gz
    rm -f "$deb" "$tarball"
    check "package.sh $PG_MAJOR builds a .deb and a tarball" scripts/package.sh "$PG_MAJOR"
    if [ ! -f "$deb" ] || [ ! -f "$tarball" ]; then
        record package "$CHECK_PASSED" "$((CHECK_FAILED + 1))"
        return
    fi
    check ".deb puts the files where postgresql-$PG_MAJOR looks" bash -c "
        dpkg-deb --contents '$deb' | grep -q ' ./usr/lib/postgresql/$PG_MAJOR/lib/lease_lock.so\$' &&
        dpkg-deb --contents '$deb' | grep -q ' ./usr/share/postgresql/$PG_MAJOR/extension/lease_lock.control\$' &&
        dpkg-deb --contents '$deb' | grep -q ' ./usr/share/postgresql/$PG_MAJOR/extension/lease_lock--$version.sql\$' &&
        dpkg-deb --field '$deb' Depends | grep -q 'postgresql-$PG_MAJOR'"
    local cli_deb=target/dist/lease-lock_${version}_amd64.deb
    check "lease-lock's .deb holds the command, which runs" bash -c "
        dpkg-deb --contents '$cli_deb' | grep -q ' ./usr/bin/lease-lock\$' &&
        tar -xzOf '$tarball' lease_lock-$version-pg$PG_MAJOR-linux-x86_64/bin/lease-lock >/dev/null &&
        target/cli/lease-lock --version | grep -q '^lease-lock $version\$'"
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    local libdir extdir
    libdir=$("$PG_CONFIG" --pkglibdir)
    extdir=$("$PG_CONFIG" --sharedir)/extension
    if [ "$PG_MAJOR" = 15 ] && [ "$libdir" = /usr/lib/postgresql/15/lib ]; then
        $sudo rm -f "$libdir/lease_lock.so" "$extdir"/lease_lock[.-]*
        check "dpkg -i $deb" $sudo dpkg -i "$deb"
    else
        rm -f "$libdir/lease_lock.so" "$extdir"/lease_lock[.-]*
        local unpacked
        unpacked=$(mktemp -d)
        tar -C "$unpacked" -xzf "$tarball"
        check "tarball install.sh $PG_CONFIG" env LEASE_LOCK_BINDIR="$unpacked/bin" \
            "$(echo "$unpacked"/lease_lock-*/install.sh)" "$PG_CONFIG"
        check "tarball install.sh installed lease-lock" test -x "$unpacked/bin/lease-lock"
        check "tarball install.sh refuses another major's pg_config" \
            bash -c "! '$(echo "$unpacked"/lease_lock-*/install.sh)' /usr/lib/postgresql/15/bin/pg_config"
        rm -rf "$unpacked"
    fi
    record package "$CHECK_PASSED" "$CHECK_FAILED"
    local tests
    tests=$(regress_tests)
    # shellcheck disable=SC2086
    run_pg_regress package_regress "$libdir/pgxs/src/test/regress/pg_regress" sql/regress $tests
    if [ "$PG_MAJOR" = 15 ] && [ "$libdir" = /usr/lib/postgresql/15/lib ]; then
        $sudo dpkg -r "postgresql-15-lease-lock" >/dev/null 2>&1 || record "dpkg -r" 0 1
    fi
    # Put the source build (and the earlier releases' scripts) back, as it was before.
    scripts/setup.sh >/dev/null 2>&1 || record reinstall 0 1
}

# The regress tests of this edition: the shared ones and its own (c_* or portable_*).
regress_tests() {
    local skip=portable_
    [ "$EDITION" = portable ] && skip=c_
    (cd sql/regress/sql && ls *.sql | sed 's/\.sql$//' | grep -v "^$skip" | sort)
}

suite_regress() {
    local tests
    tests=$(regress_tests)
    # shellcheck disable=SC2086
    run_pg_regress regress "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" sql/regress $tests
}

suite_isolation() {
    local tests
    tests=$(cd sql/isolation/specs && ls *.spec | sed 's/\.spec$//' | sort)
    # shellcheck disable=SC2086
    run_pg_regress isolation "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress" sql/isolation $tests
}

# The suites on one major and edition ($EDITION): install its PostgreSQL and the extension into
# it (the portable edition is installed per database by the suites), then run them.
run_major() {
    local major=$1
    shift
    export PG_MAJOR=$major EDITION LEASE_LOCK_EDITION=$EDITION
    MAJOR_PASSED=0 MAJOR_FAILED=0
    local started=$SECONDS
    echo "== PostgreSQL $major, $EDITION edition: $*" >&2
    if ! PG_MAJOR=$major scripts/setup.sh || ! pg_install "$major"; then
        record setup 0 1
    else
        # The harness and cluster.sh take the binaries from here.
        export PG_BIN PG_CONFIG
        for suite in "$@"; do
            echo "== pg$major $EDITION $suite" >&2
            "suite_$suite"
        done
    fi
    MAJOR_LINES+=("$(printf 'PostgreSQL %-3s %-9s %4d passed, %d failed (%d s)' "$major" "$EDITION" "$MAJOR_PASSED" "$MAJOR_FAILED" $((SECONDS - started)))")
}

MAJOR_LINES=()
if [ "$EDITION" = portable ]; then
    # The portable edition alone: its suites, on every major named.
    for major in "${MAJORS[@]}"; do
        run_major "$major" "${SUITES[@]}"
    done
else
    run_major "${MAJORS[0]}" "${SUITES[@]}"
    matrix=()
    for suite in "${SUITES[@]}"; do
        [[ " ${MATRIX_SUITES[*]} " == *" $suite "* ]] && matrix+=("$suite")
    done
    for major in "${MAJORS[@]:1}"; do
        [ ${#matrix[@]} -gt 0 ] && run_major "$major" "${matrix[@]}"
    done
    if [[ " ${EDITIONS[*]} " == *" portable "* ]]; then
        EDITION=portable
        portable=()
        for suite in "${SUITES[@]}"; do
            [[ " ${PORTABLE_SUITES[*]} " == *" $suite "* ]] && portable+=("$suite")
        done
        [ ${#portable[@]} -gt 0 ] && run_major "${MAJORS[0]}" "${portable[@]}"
    fi
fi

disk_line "at the end"
echo
printf '%s\n' "${SUMMARY[@]}"
echo
printf '%s\n' "${MAJOR_LINES[@]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
