#!/usr/bin/env bash
# What the readiness wait costs: `vm run --rm -- true` with the default `--ready sysinit`
# against `--ready none`, on the dev image (systemd: the wait is real) and on the minbase image
# (no init: the agent is PID 1 and there is nothing to wait for, so both must be equal), runs
# alternating in the same session, and a warm start (`--warm`, from the image's ready-snapshot,
# taken once sysinit was reached: it pays none of the wait). For dev it also prints the wait
# itself, from the guest's boot stages (`init_handed_over` → `init_ready` in `vm show --json`).
#
# Usage: scripts/bench-ready.sh
#   BENCH_RUNS=N (default 5)   BANGER_TEST_CACHE (default /var/tmp/banger-test-cache)
#   BENCH_PROFILE=release|debug (default release: the guest's boot dominates either way)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
RUNS=${BENCH_RUNS:-5}
export PATH=$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin
die() { echo "bench-ready: $*" >&2; exit 1; }
for t in qemu-system-x86_64 python3 bc; do
    command -v "$t" >/dev/null || die "missing $t (scripts/install-test-deps.sh installs it)"
done

"$REPO/scripts/bench-pull.sh" --prepare-only minbase dev
PROFILE=${BENCH_PROFILE:-release}
case $PROFILE in
    release) (cd "$REPO" && cargo build --quiet --locked --release -p banger) ;;
    debug) (cd "$REPO" && cargo build --quiet --locked -p banger) ;;
    *) die "BENCH_PROFILE=$PROFILE: use release or debug" ;;
esac
export BANGER_AGENT
BANGER_AGENT=$("$REPO/scripts/build-agent.sh")
B=$TARGET/$PROFILE/banger
export BANGER_DAEMON=$TARGET/$PROFILE/bangerd
deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1 || true)
[ -n "$deb" ] || die "no cloud kernel .deb in $CACHE/kernel-deb (scripts/bench-vm.sh fetches it)"

WORK=$(mktemp -d /var/tmp/bench-ready.XXXXXX)
export XDG_STATE_HOME=$WORK/state XDG_CACHE_HOME=$WORK/cache XDG_RUNTIME_DIR=$WORK/run
export XDG_CONFIG_HOME=$WORK/config
cleanup() {
    "$B" daemon stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
"$B" kernel import cloud --deb "$deb" >/dev/null
for image in minbase dev; do
    "$B" image pull "oci:$CACHE/bench/oci-$image:t" --name "$image" --kernel-ref cloud -q >/dev/null
done
# One boot each first: the initramfs and modules disk are built once, not in a measured run.
# And each image's ready-snapshot for the warm rows.
for image in minbase dev; do
    "$B" vm run --rm --image "$image" --cold -- true >/dev/null
    "$B" image warm "$image" -q >/dev/null
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
declare -A times waits
for i in $(seq 1 "$RUNS"); do
    for image in minbase dev; do
        # Alternate which mode goes first: the first run after the previous round's dev VM
        # pays for its teardown.
        order="sysinit none warm"
        [ $((i % 2)) = 0 ] && order="warm none sysinit"
        for ready in $order; do
            case $ready in
                warm) flags=(--ready sysinit --warm) ;;
                *) flags=(--ready "$ready" --cold) ;;
            esac
            t0=$(date +%s.%N)
            "$B" vm run --rm --image "$image" "${flags[@]}" -- true >/dev/null
            t1=$(date +%s.%N)
            times[$image-$ready]+="$(echo "$t1 - $t0" | bc) "
        done
    done
    # The wait itself, from the guest's own clock.
    "$B" vm create w --image dev --cold -q >/dev/null
    waits[dev]+="$("$B" --json vm show w | python3 -c '
import json, sys
stages = {s["stage"]: s["guest_uptime_ms"] for s in json.load(sys.stdin)["stages"]}
print(stages["init_ready"] - stages["init_handed_over"])') "
    "$B" vm delete w --force >/dev/null
done

echo "| image | start (--ready, or warm: sysinit reached in the ready-snapshot) | vm run --rm -- true (median of $RUNS) | the wait (guest clock, median) |"
echo "|---|---|---:|---:|"
for image in minbase dev; do
    for ready in sysinit none warm; do
        m=$(tr ' ' '\n' <<<"${times[$image-$ready]}" | grep . | median)
        w=-
        if [ "$image-$ready" = dev-sysinit ]; then
            w="$(tr ' ' '\n' <<<"${waits[dev]}" | grep . | median) ms"
        fi
        printf '| %s | %s | %.2f s | %s |\n' "$image" "$ready" "$m" "$w"
    done
done
