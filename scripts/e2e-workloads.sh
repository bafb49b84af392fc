#!/usr/bin/env bash
# Real workloads in `banger vm run`, as a new user meets them: `apt-get update` as the first
# command (N times, and once with `--ready none` to show the race it fixes), bash process
# substitution and cgroups on an image with systemd (dev) and one without an init (minbase),
# and a transient systemd service. Prints a table: workload, result, time.
#
# Usage: scripts/e2e-workloads.sh
#   WORKLOAD_APT_RUNS=N (default 20)
#   BANGER_TEST_CACHE  cache of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
# Needs the guests to reach the Debian mirror the images were built from (the host's apt
# configuration) through banger's user networking.
#
# Not yet in the matrix (issue 18): a C project's `make test`, a Python project with pytest,
# a Node project with `npm ci && npm test`, `docker run`.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
APT_RUNS=${WORKLOAD_APT_RUNS:-20}
export PATH=$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin
die() { echo "e2e-workloads: $*" >&2; exit 1; }

"$REPO/scripts/bench-pull.sh" --prepare-only minbase dev
(cd "$REPO" && cargo build --quiet --locked --release -p banger)
export BANGER_AGENT
BANGER_AGENT=$("$REPO/scripts/build-agent.sh")
B=$TARGET/release/banger
export BANGER_DAEMON=$TARGET/release/bangerd
deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1 || true)
[ -n "$deb" ] || die "no cloud kernel .deb in $CACHE/kernel-deb (scripts/bench-vm.sh fetches it)"

WORK=$(mktemp -d /var/tmp/e2e-workloads.XXXXXX)
export XDG_STATE_HOME=$WORK/state XDG_CACHE_HOME=$WORK/cache XDG_RUNTIME_DIR=$WORK/run
export XDG_CONFIG_HOME=$WORK/config
cleanup() {
    "$B" daemon stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
"$B" kernel import cloud --deb "$deb" >/dev/null
"$B" image pull "oci:$CACHE/bench/oci-minbase:t" --name minbase --kernel-ref cloud -q >/dev/null
"$B" image pull "oci:$CACHE/bench/oci-dev:t" --name dev --kernel-ref cloud -q >/dev/null

rows=()
failed=0
# run LABEL CHECK -- banger vm run ARGS: CHECK is a grep -E pattern the output must match
# (and "apt-key|^W: |^E: " must not, for apt).
run() {
    local label=$1 want=$2 out t0 t1 result
    shift 3
    t0=$(date +%s.%N)
    out=$("$B" vm run --rm --cpus 2 "$@" 2>&1) || true
    t1=$(date +%s.%N)
    if grep -Eq -- "$want" <<<"$out" && ! grep -Eq 'apt-key|^W: |^E: ' <<<"$out"; then
        result=pass
    else
        result=FAIL
        failed=$((failed + 1))
        # Guest output: control characters made visible before they reach the terminal.
        echo "e2e-workloads: $label: $(tail -n 3 <<<"$out" | cat -v)" >&2
    fi
    rows+=("| $label | $result | $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s |")
}

for i in $(seq 1 "$APT_RUNS"); do
    run "apt-get update as the first command, dev ($i/$APT_RUNS)" 'Reading package lists' \
        -- --image dev -- apt-get update
done
# The control: without the readiness wait the first apt-get races systemd's early boot.
control=$("$B" vm run --rm --cpus 2 --image dev --ready none -- apt-get update 2>&1 || true)
if grep -q 'apt-key' <<<"$control"; then
    rows+=("| apt-get update with --ready none (the old race) | raced, as expected | - |")
else
    rows+=("| apt-get update with --ready none (the old race) | did not race this time | - |")
fi
for image in dev minbase; do
    run "bash process substitution, $image" '^ok$' \
        -- --image "$image" -- bash -c 'cat <(echo ok)'
    run "cgroup2 controllers, $image" 'cpu.*memory.*pids|memory.*pids' \
        -- --image "$image" -- cat /sys/fs/cgroup/cgroup.controllers
done
run "a transient systemd service, dev" '^active$' \
    -- --image dev -- sh -c 'systemd-run --quiet --unit=w sleep 30 && systemctl is-active w'

echo
echo "| workload | result | time |"
echo "|---|---|---:|"
printf '%s\n' "${rows[@]}"
echo "e2e-workloads: $(( ${#rows[@]} - 1 - failed )) passed, $failed failed"
[ "$failed" = 0 ]
