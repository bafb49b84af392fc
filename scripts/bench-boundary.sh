#!/usr/bin/env bash
# What the hostile-guest checks cost: the `vm exec` round trip and the `vm cp` rates (a
# 100 MB file in and out, a 5,000-file tree out through the confined extractor), measured
# for this checkout and, in the same run and on the same image, for a base revision built
# from git (default: the last commit before the checks). Runs alternate between the two
# builds so drift of the machine hits both alike.
#
# Usage: scripts/bench-boundary.sh [BASE_REV]
#   BENCH_EXECS=N (default 30)   BENCH_COPIES=N (default 3)
#   BASE_SRC=DIR     use this checkout of the base instead of a new worktree of BASE_REV
#   BASE_TARGET=DIR  reuse a target dir that holds the base's release build
#   BANGER_TEST_CACHE  cache dir of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
BASE_REV=${1:-d7b4a29}
EXECS=${BENCH_EXECS:-30}
COPIES=${BENCH_COPIES:-3}
export PATH=$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin
die() { echo "bench-boundary: $*" >&2; exit 1; }
for t in qemu-system-x86_64 umoci debootstrap git python3 bc; do
    command -v "$t" >/dev/null || die "missing $t (scripts/install-test-deps.sh installs it)"
done

"$REPO/scripts/bench-pull.sh" --prepare-only minbase
deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1 || true)
[ -n "$deb" ] || die "no cloud kernel .deb in $CACHE/kernel-deb (scripts/bench-vm.sh fetches it)"

# The two builds: release binaries and the static agent of each.
build() { # SRC TARGET -> prints "banger bangerd agent"
    (cd "$1" && CARGO_TARGET_DIR=$2 cargo build --quiet --locked --release -p banger) >&2
    local agent
    agent=$(cd "$1" && CARGO_TARGET_DIR=$2 scripts/build-agent.sh)
    echo "$2/release/banger $2/release/bangerd $agent"
}
echo "bench-boundary: building this checkout and $BASE_REV (release) ..." >&2
read -r NEW_B NEW_D NEW_A < <(build "$REPO" "${CARGO_TARGET_DIR:-$REPO/target}")
OWN_SRC=""
if [ -z "${BASE_SRC:-}" ]; then
    BASE_SRC=$(mktemp -d /var/tmp/bench-boundary-src.XXXXXX)
    OWN_SRC=$BASE_SRC
    git -C "$REPO" worktree add -q --detach "$BASE_SRC" "$BASE_REV"
fi
BASE_TARGET=${BASE_TARGET:-/var/tmp/bench-boundary-target}
read -r BASE_B BASE_D BASE_A < <(build "$BASE_SRC" "$BASE_TARGET")

WORK=$(mktemp -d /var/tmp/bench-boundary.XXXXXX)
cleanup() {
    for which in new base; do
        use "$which" 2>/dev/null || continue
        "$B" vm delete bench --force >/dev/null 2>&1 || true
        "$B" daemon stop >/dev/null 2>&1 || true
    done
    if [ -n "$OWN_SRC" ]; then
        git -C "$REPO" worktree remove --force "$OWN_SRC" 2>/dev/null || true
        rm -rf "$OWN_SRC"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

use() { # new|base: points banger at that build and an installation of its own
    case $1 in
        new) B=$NEW_B; export BANGER_DAEMON=$NEW_D BANGER_AGENT=$NEW_A ;;
        base) B=$BASE_B; export BANGER_DAEMON=$BASE_D BANGER_AGENT=$BASE_A ;;
    esac
    export XDG_STATE_HOME=$WORK/$1/state XDG_CACHE_HOME=$WORK/$1/cache XDG_RUNTIME_DIR=$WORK/$1/run
    export XDG_CONFIG_HOME=$WORK/$1/config
}

now() { date +%s.%N; }
median() { python3 -c 'import sys,statistics as s; print(f"{s.median(float(x) for x in sys.stdin):.2f}")'; }

# The payloads: one 100 MB file, one tree of 5,000 small files (made in the guest).
head -c 100000000 /dev/urandom >"$WORK/big.bin"
for which in new base; do
    use "$which"
    mkdir -p "$WORK/$which/out"
    "$B" kernel import cloud --deb "$deb" >/dev/null
    "$B" image pull "oci:$CACHE/bench/oci-minbase:t" --name minbase --kernel-ref cloud -q >/dev/null
    # Boots cold, and no warm start template boots beside it (builds before warm starts have no --cold).
    cold=$("$B" vm create --help | grep -q -- '--cold' && echo --cold || true)
    "$B" vm create bench --image minbase --cpus 1 --memory 512MiB $cold -q >/dev/null
    "$B" vm exec bench -- sh -c 'mkdir -p /root/tree && cd /root/tree &&
        i=0; while [ $i -lt 5000 ]; do echo "file $i" > f$i; i=$((i+1)); done'
done

declare -A exec_ms cp_in cp_out cp_tree
# Exec round trips first, in small alternating batches; then the copies, the order of the
# two builds swapped every round (whoever goes second meets the other's writeback).
echo "bench-boundary: $EXECS exec round trips each, alternating ..." >&2
for batch in $(seq 1 $((EXECS / 5))); do
    for which in new base; do
        use "$which"
        for _ in 1 2 3 4 5; do
            t0=$(now); "$B" vm exec bench -- true; t1=$(now)
            exec_ms[$which]+="$(echo "($t1 - $t0) * 1000" | bc) "
        done
    done
done
echo "bench-boundary: $COPIES copies each way, alternating ..." >&2
for round in $(seq 1 "$COPIES"); do
    order="new base"
    [ $((round % 2)) = 0 ] && order="base new"
    for which in $order; do
        use "$which"
        sync
        t0=$(now); "$B" vm cp -q "$WORK/big.bin" bench:/root/big.bin; t1=$(now)
        cp_in[$which]+="$(echo "100 / ($t1 - $t0)" | bc -l) "
        rm -f "$WORK/$which/out/big.bin"
        t0=$(now); "$B" vm cp -q bench:/root/big.bin "$WORK/$which/out/"; t1=$(now)
        cp_out[$which]+="$(echo "100 / ($t1 - $t0)" | bc -l) "
        rm -rf "$WORK/$which/out/tree"
        t0=$(now); "$B" vm cp -q bench:/root/tree "$WORK/$which/out/"; t1=$(now)
        cp_tree[$which]+="$(echo "5000 / ($t1 - $t0)" | bc -l) "
        cmp -s "$WORK/big.bin" "$WORK/$which/out/big.bin" || die "$which: the 100 MB file came back different"
        [ "$(find "$WORK/$which/out/tree" -type f | wc -l)" = 5000 ] || die "$which: the tree came back incomplete"
    done
done

row() { # LABEL UNIT ARRAY-NAME [lower-is-better]
    local -n arr=$3
    local n b
    n=$(tr ' ' '\n' <<<"${arr[new]}" | grep . | median)
    b=$(tr ' ' '\n' <<<"${arr[base]}" | grep . | median)
    printf '| %-34s | %10s | %10s | %+6.1f %% |\n' "$1 ($2)" "$n" "$b" "$(echo "($n - $b) * 100 / $b" | bc -l)"
}
echo
echo "bench-boundary: this checkout vs $BASE_REV, minbase, 1 vCPU, medians"
echo "| measure | this | base | change |"
echo "|---|---:|---:|---:|"
row "vm exec -- true round trip" "ms" exec_ms
row "vm cp 100 MB file in" "MB/s" cp_in
row "vm cp 100 MB file out" "MB/s" cp_out
row "vm cp 5,000-file tree out" "files/s" cp_tree
