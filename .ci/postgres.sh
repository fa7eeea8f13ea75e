#!/usr/bin/env bash
# A scratch PostgreSQL 15 (the machine's own, from Debian's packages) on 127.0.0.1, for the tests
# whose metadata is in PostgreSQL (tests/postgres.rs and the server's many-node tests).
# Usage: source .ci/postgres.sh; postgres_start DIR; ...; postgres_stop
# The cluster lives in DIR/data, owned by the `postgres` user (the server refuses to run as
# root), listens on 127.0.0.1:${LOCKERSTORE_PG_PORT:-55432} only, takes passwords
# (scram-sha-256) and has one role and database, `lockerstore`. Exports LOCKERSTORE_PG_URL.

postgres_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

postgres_start() {
    local dir="$1"
    local port="${LOCKERSTORE_PG_PORT:-55432}"
    local bin
    if ! bin="$(postgres_bin)"; then
        apt-get install -y -q postgresql >/dev/null
        bin="$(postgres_bin)"
    fi
    mkdir -p "$dir"
    chmod 755 "$dir"
    local run=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$dir"
        run=(runuser -u postgres --)
    fi
    local password=lockerstore-ci-secret
    printf '%s\n' "$password" >"$dir/pwfile"
    [ "${#run[@]}" -gt 0 ] && chown postgres "$dir/pwfile"
    "${run[@]}" "$bin/initdb" -D "$dir/data" -U lockerstore --pwfile="$dir/pwfile" \
        --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    rm -f "$dir/pwfile"
    # Loopback only, no Unix socket outside the data directory; fsync stays on (the tests
    # measure what a real deployment pays for durability).
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/data -c max_connections=200" \
        start >/dev/null || {
        tail -n 30 "$dir/server.log" >&2
        return 1
    }
    POSTGRES_DIR="$dir"
    POSTGRES_RUN=("${run[@]}")
    POSTGRES_BIN="$bin"
    PGPASSWORD="$password" psql -q -h 127.0.0.1 -p "$port" -U lockerstore -d postgres \
        -c "CREATE DATABASE lockerstore" >/dev/null
    export LOCKERSTORE_PG_URL="postgres://lockerstore:$password@127.0.0.1:$port/lockerstore"
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

postgres_stop() {
    if [ -n "${POSTGRES_DIR:-}" ]; then
        "${POSTGRES_RUN[@]}" "$POSTGRES_BIN/pg_ctl" -D "$POSTGRES_DIR/data" -m immediate -w -t 30 \
            stop >/dev/null 2>&1 || true
        POSTGRES_DIR=""
    fi
}
