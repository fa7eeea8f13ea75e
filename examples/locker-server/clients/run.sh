#!/usr/bin/env bash
# Real-client tests of the locker server: every clients/test_* script, each against servers it
# starts itself on 127.0.0.1 (see harness.py). Installs the clients it needs first: PyPI
# (requirements.txt), npm (package-lock.json: playwright-core, which drives Debian's chromium and
# downloads no browser) and Debian packages (chromium, ffmpeg) when missing.
# Usage: examples/locker-server/clients/run.sh [NAME...]   (NAME: test_players, test_browser, ...)
# LOCKER_SERVER=PATH uses that binary instead of building a release one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"

if [ -z "${LOCKER_SERVER:-}" ]; then
    cargo build --release --locked -p locker-server
    export LOCKER_SERVER="$root/target/release/locker-server"
fi
export FIXTURES="${FIXTURES:-$root/tests/fixtures}"

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$here/requirements.txt"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

status=0
for t in "$here"/test_*; do
    name="$(basename "$t")"
    if [ "$#" -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "${name%.*}"; then
        continue
    fi
    WORK="$(mktemp -d)"
    export WORK
    echo "== client test $name"
    case "$t" in
        *.py) (cd "$here" && python3 "$t") || status=1 ;;
        *.mjs) (cd "$here" && node "$t") || status=1 ;;
        *.sh) bash "$t" || status=1 ;;
    esac
    rm -rf "$WORK"
done
exit "$status"
