#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md, in one command: installs what is missing and the
# extension (scripts/setup.sh), builds the runner in release mode, and runs every scenario
# against a throwaway PostgreSQL cluster ($PG_MAJOR, default 15) with default durability. Writes docs/benchmarks.md,
# docs/benchmarks.svg, results/benchmarks.md and results/benchmarks.json.
#
#   scripts/bench.sh            full run (a few minutes)
#   scripts/bench.sh --quick    about a minute, a smoke run: its figures are too short to quote
#
# Progress goes to stderr (RUST_LOG filters it), the goals and the files written to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
source scripts/lib/pg.sh
pg_install "${PG_MAJOR:-15}"
export PG_BIN PG_CONFIG # the runner's clusters use this major's binaries
cargo build --release --quiet -p lease_lock_bench --bin bench
exec "${CARGO_TARGET_DIR:-target}/release/bench" --out "$PWD" "$@"
