#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md, in one command: installs what is missing and the
# extension (scripts/setup.sh) and etcd, builds the runner in release mode, and runs every scenario
# against a throwaway PostgreSQL cluster ($PG_MAJOR, default 15) and a throwaway etcd server,
# both with default durability. Writes docs/benchmarks.md,
# docs/benchmarks.svg, results/benchmarks.md and results/benchmarks.json.
#
#   scripts/bench.sh            full run (a few minutes)
#   scripts/bench.sh --quick    about a minute, a smoke run: its figures are too short to quote
#
# Progress goes to stderr (RUST_LOG filters it), the goals and the files written to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# etcd for scenario 9, started by the runner itself on free ports (Debian 12: 3.4). Only the
# benchmark needs it, so only the benchmark installs it.
if ! command -v "${ETCD_BIN:-etcd}" >/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    echo "bench: installing etcd-server" >&2
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
source scripts/lib/pg.sh
pg_install "${PG_MAJOR:-15}"
export PG_BIN PG_CONFIG # the runner's clusters use this major's binaries
cargo build --release --quiet -p lease_lock_bench --bin bench
exec "${CARGO_TARGET_DIR:-target}/release/bench" --out "$PWD" "$@"
