#!/usr/bin/env bash
# Installs what lease_lock needs to build and test, skipping what is already there, then builds
# and installs the extension into the machine's PostgreSQL 15. Idempotent and quiet when nothing
# is missing. Works as root (as CI runs) and as a normal user with sudo.
#
#   scripts/setup.sh            install prerequisites, build and install the extension (release)
#   scripts/setup.sh --deps     prerequisites only
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION=0.18.1
log() { echo "setup: $*" >&2; }

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi

# Debian packages. postgresql-server-dev-15 may upgrade the server packages: clusters started
# before keep running the old binaries until restarted (ours are throwaway).
need_pkgs=()
for pkg in postgresql-15 postgresql-server-dev-15 libclang-dev pgbouncer sudo; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
# Debian starts a cluster of its own on install; we never use it (tests start throwaway ones).

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    log "installing cargo-pgrx $PGRX_VERSION (about 3 minutes)"
    cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked --quiet
fi

PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs "pg15 = \"$PG_CONFIG\"" "$PGRX_HOME/config.toml"; then
    log "cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

[ "${1:-}" = --deps ] && exit 0

# cargo builds incrementally, so this is quick when nothing changed; its output only on failure.
install_log=$(mktemp)
sudo_flag=()
[ -n "$SUDO" ] && sudo_flag=(--sudo)
if ! (cd extension && cargo pgrx install --release "${sudo_flag[@]}" --pg-config "$PG_CONFIG") >"$install_log" 2>&1; then
    cat "$install_log" >&2
    rm -f "$install_log"
    log "building or installing the extension failed"
    exit 1
fi
rm -f "$install_log"
