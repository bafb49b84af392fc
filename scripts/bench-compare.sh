#!/usr/bin/env bash
# A/B of banger's VM path against an older revision, in one run on this machine: both
# builds (release, each with its own guest agent) boot the minbase image alternately, so
# load and caches hit both alike. Prints medians and the difference for
#   - `vm run --rm -- true` end to end (BENCH_RUNS each),
#   - `vm exec -- true` round trip (BENCH_RUNS × 5 each, on one VM per build),
# e.g. to check that a refactoring kept the numbers (issue 19: ±5 %).
#
# Usage: scripts/bench-compare.sh REV      (a commit, tag or branch to compare HEAD with)
#   BENCH_RUNS=N (default 10)   BENCH_NET=MODE (default none: the VMs' --net)
#   BANGER_TEST_CACHE  cache dir of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
RUNS=${BENCH_RUNS:-10}
# `none` by default: what both sides have, so network changes do not blur the comparison.
NET=${BENCH_NET:-none}
REV=${1:?usage: scripts/bench-compare.sh REV}
export PATH=$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin
die() { echo "bench-compare: $*" >&2; exit 1; }
for t in qemu-system-x86_64 python3 umoci debootstrap dpkg-deb git; do
    command -v "$t" >/dev/null || die "missing $t (scripts/install-test-deps.sh installs it)"
done
old_commit=$(git -C "$REPO" rev-parse --verify "$REV^{commit}") || die "no revision $REV"
new_commit=$(git -C "$REPO" rev-parse HEAD)

"$REPO/scripts/bench-pull.sh" --prepare-only minbase
deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1 || true)
[ -n "$deb" ] || die "no kernel .deb in $CACHE/kernel-deb (scripts/bench-vm.sh fetches one)"

WORK=$(mktemp -d /var/tmp/bench-compare.XXXXXX)
OLD_TREE=$WORK/old
cleanup() {
    for side in old new; do
        [ -x "$WORK/$side.bin/banger" ] || continue
        env_for "$side"
        for vm in $("$B" --json vm list 2>/dev/null | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)["vms"]))' 2>/dev/null); do
            "$B" vm delete "$vm" --force >/dev/null 2>&1 || true
        done
        "$B" daemon stop >/dev/null 2>&1 || true
    done
    git -C "$REPO" worktree remove --force "$OLD_TREE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Builds: HEAD here, REV in a worktree of its own (its own target dir).
build() { # SIDE TREE
    echo "bench-compare: building $1 ($(git -C "$2" rev-parse --short HEAD)) ..." >&2
    (cd "$2" && cargo build --quiet --locked --release -p banger)
    mkdir -p "$WORK/$1.bin"
    cp "$2/target/release/banger" "$2/target/release/bangerd" "$WORK/$1.bin/"
    cp "$("$2/scripts/build-agent.sh")" "$WORK/$1.bin/banger-agent"
}
git -C "$REPO" worktree add --detach "$OLD_TREE" "$old_commit" >/dev/null
build old "$OLD_TREE"
build new "$REPO"

# Each side: its own binaries, agent and state.
env_for() { # SIDE
    B=$WORK/$1.bin/banger
    export BANGER_DAEMON=$WORK/$1.bin/bangerd BANGER_AGENT=$WORK/$1.bin/banger-agent
    export XDG_STATE_HOME=$WORK/$1.state XDG_CACHE_HOME=$WORK/$1.cache XDG_RUNTIME_DIR=$WORK/$1.run
    # Both sides boot: builds with warm starts get --cold (older ones have no such flag).
    COLD=$("$B" vm run --help | grep -q -- '--cold' && echo --cold || true)
}
for side in old new; do
    env_for "$side"
    "$B" kernel import cloud --deb "$deb" >/dev/null
    "$B" image pull "oci:$CACHE/bench/oci-minbase:t" --name minbase --kernel-ref cloud -q >/dev/null
    "$B" vm run --rm --image minbase --net "$NET" $COLD -q -- true   # warm caches (initramfs, modules disk)
    "$B" vm create keep --image minbase --cpus 1 --memory 512MiB --net "$NET" $COLD -q >/dev/null
done

now() { date +%s.%N; }
declare -A RUN EXEC
for i in $(seq 1 "$RUNS"); do
    for side in old new; do
        env_for "$side"
        t0=$(now); "$B" vm run --rm --image minbase --cpus 1 --memory 512MiB --net "$NET" $COLD -q -- true; t1=$(now)
        RUN[$side]+="$(echo "($t1 - $t0) * 1000" | bc) "
        for _ in 1 2 3 4 5; do
            t0=$(now); "$B" vm exec keep -- true; t1=$(now)
            EXEC[$side]+="$(echo "($t1 - $t0) * 1000" | bc) "
        done
    done
done
median() { printf '%s\n' $1 | python3 -c 'import sys,statistics as s; print(f"{s.median(float(x) for x in sys.stdin):.0f}")'; }
pct() { python3 -c "print(f'{($2 - $1) / $1 * 100:+.1f} %')"; }
run_old=$(median "${RUN[old]}"); run_new=$(median "${RUN[new]}")
exec_old=$(median "${EXEC[old]}"); exec_new=$(median "${EXEC[new]}")
cat <<EOF

A/B, minbase, 1 vCPU, 512 MiB, --net $NET, release builds, alternating; old = $(git -C "$REPO" rev-parse --short "$old_commit"), new = $(git -C "$REPO" rev-parse --short "$new_commit"):

| | old | new | difference |
|---|---|---|---|
| \`vm run --rm -- true\`, median of $RUNS | ${run_old} ms | ${run_new} ms | $(pct "$run_old" "$run_new") |
| \`vm exec -- true\`, median of $((RUNS * 5)) | ${exec_old} ms | ${exec_new} ms | $(pct "$exec_old" "$exec_new") |
EOF
