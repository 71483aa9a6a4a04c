#!/usr/bin/env bash
# Installs what lease_lock needs to build and test, skipping what is already there, then builds
# and installs the extension into the PostgreSQL of major $PG_MAJOR (default 15: the machine's,
# from Debian; 16, 17 and 18 are fetched into target/pg/<major> by scripts/lib/pg.sh). Idempotent
# and quiet when nothing is missing. Works as root (as CI runs) and as a normal user with sudo.
#
#   scripts/setup.sh            install prerequisites, build and install the extension (release)
#   scripts/setup.sh --deps     prerequisites only
#   PG_MAJOR=17 scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

PG_MAJOR=${PG_MAJOR:-15}
PGRX_VERSION=0.18.1
log() { echo "setup: $*" >&2; }

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi

# Debian packages. postgresql-server-dev-15 may upgrade the server packages: clusters started
# before keep running the old binaries until restarted (ours are throwaway). PostgreSQL 15 is
# installed whatever the major: pgrx and the examples' tools (psql) use it. protobuf-compiler:
# protoc, which the benchmark runner's etcd client crate (etcd-client) runs when it is built.
need_pkgs=()
for pkg in postgresql-15 postgresql-server-dev-15 libclang-dev protobuf-compiler pgbouncer sudo unzip; do
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

pg_install "$PG_MAJOR"

# pgrx's config lists every major it may build for: this one and those already here.
PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
# pgrx init adds to that list and keeps the rest, and a listed pg_config that is gone (another
# checkout's target/pg, deleted) fails every build: such entries are dropped first.
if [ -f "$PGRX_HOME/config.toml" ]; then
    kept=$(while IFS= read -r line || [ -n "$line" ]; do
        if [[ $line =~ ^pg[0-9]+\ =\ \"(.*)\"$ ]] && [ ! -x "${BASH_REMATCH[1]}" ]; then continue; fi
        printf '%s\n' "$line"
    done <"$PGRX_HOME/config.toml")
    if [ "$kept" != "$(cat "$PGRX_HOME/config.toml")" ]; then
        log "pgrx config: dropping the majors whose pg_config is gone"
        printf '%s\n' "$kept" >"$PGRX_HOME/config.toml.new" && mv "$PGRX_HOME/config.toml.new" "$PGRX_HOME/config.toml"
    fi
fi
init_args=()
for major in 15 16 17 18; do
    [ "$major" = "$PG_MAJOR" ] || [ "$major" = 15 ] || [ -e "${PG_CACHE_DIR:-target/pg}/$major/.complete" ] || continue
    config=$(pg_install "$major" 2>/dev/null && echo "$PG_CONFIG") || continue
    init_args+=("--pg$major" "$config")
done
wanted=$(for ((i = 0; i < ${#init_args[@]}; i += 2)); do
    echo "${init_args[i]#--} = \"${init_args[i + 1]}\""
done | sort)
have=$(grep -E '^pg[0-9]+ = ' "$PGRX_HOME/config.toml" 2>/dev/null | sort || true)
if [ "$wanted" != "$have" ]; then
    log "cargo pgrx init ${init_args[*]}"
    cargo pgrx init "${init_args[@]}" >/dev/null
fi

[ "${1:-}" = --deps ] && exit 0

# cargo builds incrementally, so this is quick when nothing changed; its output only on failure.
install_log=$(mktemp)
sudo_flag=()
[ -n "$SUDO" ] && [ ! -w "$("$PG_CONFIG" --pkglibdir)" ] && sudo_flag=(--sudo)
if ! (cd extension && cargo pgrx install --release "${sudo_flag[@]}" --pg-config "$PG_CONFIG") >"$install_log" 2>&1; then
    cat "$install_log" >&2
    rm -f "$install_log"
    log "building or installing the extension failed"
    exit 1
fi
rm -f "$install_log"
# pgrx generates this version's script and copies the upgrade scripts; the frozen install
# scripts of earlier releases (CREATE EXTENSION ... VERSION, the upgrade test) are ours to copy.
ext_dir=$("$PG_CONFIG" --sharedir)/extension
if [ -w "$ext_dir" ]; then install -m 644 extension/sql/lease_lock--*.sql "$ext_dir/"; else $SUDO install -m 644 extension/sql/lease_lock--*.sql "$ext_dir/"; fi
