#!/usr/bin/env bash
# Builds lease_lock's packages, for users who install it without Rust:
#
#   scripts/package.sh [MAJOR...]   per PostgreSQL major (default: 15 16 17 18), into target/dist/:
#       postgresql-<major>-lease-lock_<version>_amd64.deb   files where Debian's postgresql-<major>
#                                                           looks for extensions; Depends on it
#       lease_lock-<version>-pg<major>-linux-x86_64.tar.gz  the same files, the lease-lock command
#                                                           and an install.sh that takes a pg_config path
#   and once: lease-lock_<version>_amd64.deb                the lease-lock command, /usr/bin/lease-lock
#   scripts/package.sh dist         the source archive for PGXN (META.json at its top), from
#                                   `git archive` of HEAD: target/dist/lease_lock-<version>.zip
#
# Each major is built against that major's headers (scripts/lib/pg.sh fetches 16-18). The .so of
# one major is for that major only: PostgreSQL checks the magic block at load time.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
DIST=$PWD/target/dist
mkdir -p "$DIST"
log() { echo "package: $*" >&2; }

dist() {
    local archive=$DIST/lease_lock-$VERSION.zip
    git archive --format=zip --prefix="lease_lock-$VERSION/" -o "$archive" HEAD
    log "wrote $archive"
    echo "$archive"
}

# stage MAJOR DIR: the extension's files for MAJOR, built in release mode, in DIR/lib and
# DIR/extension.
stage() {
    local major=$1 dir=$2 built
    pg_install "$major" >/dev/null
    built=$(mktemp -d)
    (cd extension && cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$built") >"$built.log" 2>&1 \
        || { cat "$built.log" >&2; rm -rf "$built" "$built.log"; return 1; }
    rm -f "$built.log"
    mkdir -p "$dir/lib" "$dir/extension"
    # pgrx lays the files out under the paths pg_config names; take them by name.
    find "$built" -name 'lease_lock.so' -exec install -m 755 {} "$dir/lib/" \;
    find "$built" \( -name 'lease_lock.control' -o -name 'lease_lock--*.sql' \) -exec install -m 644 {} "$dir/extension/" \;
    # The frozen install scripts of earlier releases (pgrx copies only the upgrade scripts).
    install -m 644 extension/sql/lease_lock--*.sql "$dir/extension/"
    rm -rf "$built"
    [ -f "$dir/lib/lease_lock.so" ] && [ -f "$dir/extension/lease_lock--$VERSION.sql" ] \
        || { log "pg$major: the build did not produce the expected files"; return 1; }
}

deb() {
    local major=$1 stage_dir=$2 root name
    name=postgresql-$major-lease-lock
    root=$(mktemp -d)
    mkdir -p "$root/DEBIAN" "$root/usr/lib/postgresql/$major/lib" "$root/usr/share/postgresql/$major/extension" \
        "$root/usr/share/doc/$name"
    cp "$stage_dir"/lib/* "$root/usr/lib/postgresql/$major/lib/"
    cp "$stage_dir"/extension/* "$root/usr/share/postgresql/$major/extension/"
    printf '%s\n' "lease_lock $VERSION: database leases with fencing tokens for PostgreSQL." \
        "License: Apache-2.0 (on Debian systems: /usr/share/common-licenses/Apache-2.0)." \
        >"$root/usr/share/doc/$name/copyright"
    cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $VERSION-1
Architecture: amd64
Maintainer: lease_lock developers <lease_lock@example.invalid>
Depends: postgresql-$major, libc6
Section: database
Priority: optional
Description: database leases with fencing tokens for leader election (PostgreSQL $major)
 lease_lock gives PostgreSQL lease_acquire, lease_refresh, lease_release, lease_fence,
 lease_evict and the view lease_status: leader election for services that run one active
 instance with hot standbys, on the database's clock, one round trip per call.
 After installing: CREATE EXTENSION lease_lock; (or ALTER EXTENSION lease_lock UPDATE).
EOF
    local out=$DIST/${name}_${VERSION}_amd64.deb
    chmod -R u=rwX,go=rX "$root"
    dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
    rm -rf "$root"
    log "wrote $out"
}

tarball() {
    local major=$1 stage_dir=$2 name out
    name=lease_lock-$VERSION-pg$major-linux-x86_64
    local root
    root=$(mktemp -d)
    mkdir -p "$root/$name"
    cp -r "$stage_dir"/lib "$stage_dir"/extension "$stage_dir"/bin "$root/$name/"
    cat >"$root/$name/install.sh" <<EOF
#!/bin/sh
# Installs lease_lock $VERSION for PostgreSQL $major into the PostgreSQL whose pg_config is given
# (default: the first pg_config on PATH). Run it as a user that may write there (often root).
#   ./install.sh [/path/to/pg_config]
set -eu
cd "\$(dirname "\$0")"
PG_CONFIG=\${1:-pg_config}
version=\$("\$PG_CONFIG" --version) || { echo "install.sh: cannot run \$PG_CONFIG" >&2; exit 1; }
case "\$version" in
    "PostgreSQL $major."* | "PostgreSQL $major"[!0-9]*) ;;
    *) echo "install.sh: this build is for PostgreSQL $major; \$PG_CONFIG is \$version" >&2; exit 1 ;;
esac
libdir=\$("\$PG_CONFIG" --pkglibdir)
extdir=\$("\$PG_CONFIG" --sharedir)/extension
install -d "\$libdir" "\$extdir"
install -m 755 lib/lease_lock.so "\$libdir/"
install -m 644 extension/* "\$extdir/"
bindir=\${LEASE_LOCK_BINDIR:-/usr/local/bin}
install -d "\$bindir"
install -m 755 bin/lease-lock "\$bindir/"
echo "installed lease_lock $VERSION into \$libdir and \$extdir, and lease-lock into \$bindir"
echo "next: CREATE EXTENSION lease_lock;  (or ALTER EXTENSION lease_lock UPDATE;)"
EOF
    chmod 755 "$root/$name/install.sh"
    out=$DIST/$name.tar.gz
    tar -C "$root" --owner=0 --group=0 -czf "$out" "$name"
    rm -rf "$root"
    log "wrote $out"
}

# The lease-lock command: the same binary for every major, so a package of its own
# (lease-lock_<version>_amd64.deb, /usr/bin/lease-lock) that the postgresql-<major>-lease-lock
# packages do not conflict over; the tarballs carry it too. Built once, in the "cli" profile
# (release with thin LTO: a command line tool needs no fat LTO, and this keeps the build short).
cli_binary() {
    local bin=${CARGO_TARGET_DIR:-target}/cli/lease-lock
    cargo build --profile cli --quiet -p lease_lock_cli --bin lease-lock >&2 \
        || { log "the lease-lock command did not build"; return 1; }
    echo "$bin"
}

cli_deb() {
    local bin=$1 root out
    root=$(mktemp -d)
    mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/lease-lock"
    install -m 755 "$bin" "$root/usr/bin/lease-lock"
    printf '%s\n' "lease-lock $VERSION: leader election from the command line on lease_lock." \
        "License: Apache-2.0 (on Debian systems: /usr/share/common-licenses/Apache-2.0)." \
        >"$root/usr/share/doc/lease-lock/copyright"
    cat >"$root/DEBIAN/control" <<EOF
Package: lease-lock
Version: $VERSION-1
Architecture: amd64
Maintainer: lease_lock developers <lease_lock@example.invalid>
Depends: libc6
Section: admin
Priority: optional
Description: leader election for any program on PostgreSQL (lease_lock)
 lease-lock runs a command only while this node holds a lease of the lease_lock PostgreSQL
 extension (run, elect), stops it before another node can hold the lease, serves /leader and
 /metrics, and shows or watches who leads (status, watch).
EOF
    out=$DIST/lease-lock_${VERSION}_amd64.deb
    chmod -R u=rwX,go=rX "$root"
    dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
    rm -rf "$root"
    log "wrote $out"
}

if [ "${1:-}" = dist ]; then
    dist
    exit 0
fi
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(15 16 17 18)
cli=$(cli_binary)
cli_deb "$cli"
for major in "${majors[@]}"; do
    stage_dir=$(mktemp -d)
    stage "$major" "$stage_dir"
    install -D -m 755 "$cli" "$stage_dir/bin/lease-lock"
    deb "$major" "$stage_dir"
    tarball "$major" "$stage_dir"
    rm -rf "$stage_dir"
done
