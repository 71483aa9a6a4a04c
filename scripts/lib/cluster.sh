# Throwaway PostgreSQL clusters for demos and tests. Source this file; never touches the
# machine's own clusters. The binaries are $PG_BIN's, or else those of major $PG_MAJOR (default
# 15) from scripts/lib/pg.sh.
#
#   cluster_start            starts one; sets PGHOST (socket dir), PGPORT, PGUSER=postgres, CLUSTER_DIR
#   cluster_stop             stops it and removes its directory (also run on EXIT by cluster_start)
#   as_pg CMD...             runs CMD as the cluster's OS user (postgres when we are root)
#   install_lease_lock DB    installs lease_lock into DB ($EDITION: c or portable)
#
# Clusters use trust authentication on a Unix socket and 127.0.0.1, on a free port.

source "$(dirname "${BASH_SOURCE[0]}")/pg.sh"

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# install_lease_lock DB [EDITION]: lease_lock into DB of the cluster at PGHOST/PGPORT, as EDITION
# (default $EDITION, else c) says: the C extension (CREATE EXTENSION, as the superuser), or the
# portable edition's psql script run by lease_owner, a role without superuser rights that owns
# the schema (as on a managed service).
install_lease_lock() {
    local db=$1 edition=${2:-${EDITION:-c}}
    local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$db")
    if [ "$edition" = portable ]; then
        "${psql[@]}" -c "DO \$\$BEGIN CREATE ROLE lease_owner; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END\$\$" \
            -c "CREATE SCHEMA lease_lock AUTHORIZATION lease_owner" &&
            "${psql[@]}" -c "SET ROLE lease_owner" -f "$_PG_SH_REPO/portable/dist/lease_lock_portable.sql" >/dev/null
    else
        "${psql[@]}" -c "CREATE EXTENSION lease_lock"
    fi
}

# cluster_start [extra postgres -c options...]
cluster_start() {
    if [ -z "${PG_BIN:-}" ]; then
        pg_install "${PG_MAJOR:-15}" || return 1
    fi
    CLUSTER_DIR=$(mktemp -d /tmp/ll.XXXXXX)
    chmod 755 "$CLUSTER_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$CLUSTER_DIR"
    PGPORT=$(free_port)
    as_pg "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$CLUSTER_DIR/initdb.log" 2>&1 || { cat "$CLUSTER_DIR/initdb.log" >&2; return 1; }
    local opts="-p $PGPORT -k $CLUSTER_DIR -c listen_addresses=127.0.0.1"
    for o in "$@"; do opts="$opts -c $o"; done
    as_pg "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/log" -w -o "$opts" start >/dev/null \
        || { cat "$CLUSTER_DIR/log" >&2; return 1; }
    export PGHOST=$CLUSTER_DIR PGPORT PGUSER=postgres PGDATABASE=postgres CLUSTER_DIR
    trap cluster_stop EXIT
}

cluster_stop() {
    [ -n "${CLUSTER_DIR:-}" ] && [ -d "$CLUSTER_DIR" ] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=
}
