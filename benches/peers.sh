#!/usr/bin/env bash
# Peers side by side: ingests the same locker corpus into restic, borg and lockerstore (both
# license modes) in one run and prints MB/s, repository bytes, dedup ratio, peak RSS, and
# lockerstore's single-master speed as a multiple of each peer's.
#
#   benches/peers.sh [--size-gb N] [--work DIR] [--corpus DIR]
#
# The corpus is DIR/<user>/<key...> (the layout `lockerstore import` reads); without --corpus,
# `lockerstore bench --dir WORK` generates one (3-10 MB tracks, popular recordings held by many
# users under their own tags) and leaves it in WORK/corpus. restic and borgbackup are installed
# from the distribution's packages when missing. Each peer ingests all users in one invocation
# ("one repo") and, separately, one invocation and repository per user ("per user").
set -euo pipefail

SIZE_GB=1
WORK=${TMPDIR:-/tmp}/lockerstore-peers
CORPUS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --size-gb) SIZE_GB=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --corpus) CORPUS=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
cargo build --release --quiet --features cli
LS=$PWD/target/release/lockerstore

need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
command -v /usr/bin/time >/dev/null || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$WORK"
if [ -z "$CORPUS" ]; then
    CORPUS=$WORK/corpus
    if [ ! -d "$CORPUS" ]; then
        echo "generating a ${SIZE_GB} GB corpus in $CORPUS" >&2
        "$LS" bench --size-gb "$SIZE_GB" --dir "$WORK" --seeks 1 --json >/dev/null
    fi
fi
LOGICAL=$(du -sb "$CORPUS" | cut -f1)
USERS=$(find "$CORPUS" -mindepth 1 -maxdepth 1 -type d | wc -l)
echo "corpus: $CORPUS, $USERS users, $((LOGICAL / 1000000)) MB" >&2
# Warm the page cache so every tool reads the corpus from memory.
find "$CORPUS" -type f -exec cat {} + >/dev/null

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# run NAME LAYOUT REPO COMMAND...: times COMMAND, records seconds, peak RSS (KB) and repo bytes.
run() {
    local name=$1 layout=$2 repo=$3
    shift 3
    local start end rss
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$WORK/rss" "$@" >/dev/null 2>"$WORK/err" || {
        cat "$WORK/err" >&2
        return 1
    }
    end=$(date +%s.%N)
    rss=$(tail -n 1 "$WORK/rss")
    echo -e "$name\t$layout\t$(echo "$end - $start" | bc)\t$rss\t$(du -sb "$repo" | cut -f1)" >>"$RESULTS"
}

# run_per_user NAME REPO_BASE INIT_CMD BACKUP_CMD: one repository and invocation per user; the
# seconds add up, the peak RSS is the largest, the bytes add up. Commands get USER_DIR and REPO.
run_per_user() {
    local name=$1 base=$2 init=$3 backup=$4
    local total=0 peak=0 bytes=0
    rm -rf "$base"
    mkdir -p "$base"
    for udir in "$CORPUS"/*/; do
        local u repo start end rss
        u=$(basename "$udir")
        repo=$base/$u
        USER_DIR=$udir REPO=$repo bash -c "$init" >/dev/null 2>&1
        start=$(date +%s.%N)
        USER_DIR=$udir REPO=$repo /usr/bin/time -f "%M" -o "$WORK/rss" bash -c "$backup" >/dev/null 2>"$WORK/err" || {
            cat "$WORK/err" >&2
            return 1
        }
        end=$(date +%s.%N)
        total=$(echo "$total + $end - $start" | bc)
        rss=$(tail -n 1 "$WORK/rss")
        [ "$rss" -gt "$peak" ] && peak=$rss
        bytes=$((bytes + $(du -sb "$repo" | cut -f1)))
    done
    echo -e "$name\tper user\t$total\t$peak\t$bytes" >>"$RESULTS"
}

export RESTIC_PASSWORD=bench BORG_PASSPHRASE="" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes

# lockerstore, both modes, all users in one import (2 threads, every put durable).
for mode in single-master per-user-copy; do
    store=$WORK/lockerstore-$mode
    rm -rf "$store"
    "$LS" --store "$store" init --mode "$mode" >/dev/null
    run "lockerstore $mode" "one store" "$store" "$LS" --store "$store" import "$CORPUS"
done

# restic
rm -rf "$WORK/restic"
restic init --repo "$WORK/restic" >/dev/null 2>&1
run restic "one repo" "$WORK/restic" restic --repo "$WORK/restic" backup --quiet "$CORPUS"
run_per_user restic "$WORK/restic-users" \
    'restic init --repo "$REPO"' \
    'restic --repo "$REPO" backup --quiet "$USER_DIR"'

# borg
rm -rf "$WORK/borg"
borg init --encryption none "$WORK/borg" >/dev/null 2>&1
run borg "one repo" "$WORK/borg" borg create "$WORK/borg::all" "$CORPUS"
run_per_user borg "$WORK/borg-users" \
    'borg init --encryption none "$REPO"' \
    'borg create "$REPO::a" "$USER_DIR"'

echo
echo "versions: $(restic version | head -n 1); $(borg --version)"
awk -F'\t' -v logical="$LOGICAL" '
    BEGIN {
        printf "%-28s %-9s %8s %8s %10s %7s %9s\n", "tool", "layout", "seconds", "MB/s", "repo MB", "dedup", "RSS MB"
    }
    {
        mbs = logical / 1e6 / $3
        if ($1 == "lockerstore single-master") ls = mbs
        speed[NR] = mbs; name[NR] = $1 " (" $2 ")"
        printf "%-28s %-9s %8.1f %8.1f %10.1f %7.2f %9.0f\n", $1, $2, $3, mbs, $5 / 1e6, logical / $5, $4 / 1024
    }
    END {
        print ""
        for (i = 1; i <= NR; i++)
            if (name[i] !~ /^lockerstore/)
                printf "lockerstore single-master is %.1fx %s\n", ls / speed[i], name[i]
    }' "$RESULTS"
