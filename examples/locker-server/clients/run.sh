#!/usr/bin/env bash
# Real-client tests of the locker server: every clients/test_* script, each against servers it
# starts itself on 127.0.0.1 (see harness.py). Installs the clients it needs first (PyPI, npm,
# Debian packages); CI runs it from .ci/run. Usage: examples/locker-server/clients/run.sh [NAME...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"

cargo build --release --locked -p locker-server
export LOCKER_SERVER="$root/target/release/locker-server"
export FIXTURES="${FIXTURES:-$root/tests/fixtures}"
python3 -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"

status=0
for t in "$here"/test_*; do
    name="$(basename "$t")"
    if [ "$#" -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "${name%.*}"; then
        continue
    fi
    export WORK="$(mktemp -d)"
    echo "== client test $name"
    case "$t" in
        *.py) python3 "$t" || status=1 ;;
        *.mjs) node "$t" || status=1 ;;
        *.sh) bash "$t" || status=1 ;;
    esac
    rm -rf "$WORK"
done
exit "$status"
