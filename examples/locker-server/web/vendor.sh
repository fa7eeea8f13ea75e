#!/usr/bin/env bash
# Vendors the web pages' browser libraries: `npm ci` inside web/ (package-lock.json pins
# tus-js-client 4.3.1), then copies node_modules/tus-js-client/dist/tus.min.js to vendor/tus.min.js,
# which is committed and embedded in the server binary (no npm at build time).
# Usage: web/vendor.sh           refresh vendor/ (then update the sha256 in vendor/README.md)
#        web/vendor.sh --check   only verify the committed copy equals npm's; exit 1 if not
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

npm ci --no-audit --no-fund --loglevel=error
src="node_modules/tus-js-client/dist/tus.min.js"
dst="vendor/tus.min.js"
version="$(node -p 'require("./node_modules/tus-js-client/package.json").version')"

if [ "$check" -eq 1 ]; then
    if cmp -s "$src" "$dst"; then
        echo "vendor/tus.min.js is tus-js-client $version's dist/tus.min.js"
        exit 0
    fi
    echo "vendor/tus.min.js differs from tus-js-client $version's dist/tus.min.js: run web/vendor.sh" >&2
    exit 1
fi

mkdir -p vendor
cp "$src" "$dst"
echo "vendor/tus.min.js <- tus-js-client $version, sha256 $(sha256sum "$dst" | cut -d' ' -f1)"
