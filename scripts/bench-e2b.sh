#!/usr/bin/env bash
# What a sandbox costs through the local E2B API (issue 24): in one run, on minbase (1 vCPU,
# 512 MiB):
#   - the official E2B Python SDK against `banger serve`: `Sandbox.create()` until its first
#     `commands.run("true")` has completed, BENCH_RUNS times after one warm-up, cold
#     (`[vm] warm = false`: a boot) and warm (`[vm] warm = true` after `image warm`: from the
#     image's ready-snapshot), a `banger serve` of its own for each (stopped by pid);
#   - banger's own `vm run --rm --image minbase -- true`, cold (`--cold`) and warm (`--warm`),
#     BENCH_RUNS times each.
# Prints median, min and max as a markdown table (load average before and after on stderr).
#
# Usage: scripts/bench-e2b.sh
#   BENCH_RUNS=N (default 10)
#   BENCH_BIN_DIR  where banger and bangerd are (default: a release build made here)
#   BANGER_TEST_VENV  the venv with the E2B SDK (default /var/tmp/banger-test-venv;
#                     scripts/install-test-deps.sh makes it)
#   BANGER_TEST_CACHE  cache dir of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
set -euo pipefail
BENCH_NAME=bench-e2b
. "$(dirname "$0")/bench-lib.sh"
RUNS=${BENCH_RUNS:-10}
VENV_PY=${BANGER_TEST_VENV:-/var/tmp/banger-test-venv}/bin/python
KEY=bench-e2b-key
bench_require qemu-system-x86_64 python3 umoci debootstrap dpkg-deb bc
"$VENV_PY" -c 'import e2b' 2>/dev/null \
    || die "no E2B SDK in $VENV_PY (scripts/install-test-deps.sh makes the venv)"
bench_setup
echo "bench-e2b: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
export XDG_CONFIG_HOME=$WORK/config
mkdir -p "$XDG_CONFIG_HOME/banger"
# The SDK talks to our server only.
unset E2B_DOMAIN E2B_DEBUG HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy
export NO_PROXY=127.0.0.1,localhost

SERVE_PID=
stop_serve() {
    [ -n "$SERVE_PID" ] || return 0
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=
}
bench_cleanup() {
    stop_serve
    bench_delete_vms
}

# config WARM: the [vm] settings every sandbox (and vm run) gets.
config() {
    printf '[vm]\ncpus = 1\nmemory = "512MiB"\nwarm = %s\n' "$1" >"$XDG_CONFIG_HOME/banger/config.toml"
}

# start_serve NAME: a `banger serve` on a free port; sets SERVE_PID and E2B_API_URL.
start_serve() {
    local log=$WORK/serve-$1.log
    "$B" serve --listen 127.0.0.1:0 --api-key "$KEY" </dev/null >/dev/null 2>"$log" &
    SERVE_PID=$!
    local port=
    for _ in $(seq 600); do # 60 s
        port=$(sed -n 's|.*E2B API on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -n 1)
        [ -n "$port" ] && break
        kill -0 "$SERVE_PID" 2>/dev/null || die "banger serve exited: $(cat "$log")"
        sleep 0.1
    done
    [ -n "$port" ] || die "banger serve did not announce its port: $(cat "$log")"
    export E2B_API_URL=http://127.0.0.1:$port E2B_SANDBOX_URL=http://127.0.0.1:$port E2B_API_KEY=$KEY
}

# sdk_runs START: "median | min | max" (seconds) of create → first run("true"), one warm-up
# first; every sandbox must have started as START says (`cold` or `warm`, from `vm show`).
sdk_runs() {
    "$VENV_PY" - "$RUNS" "$B" "$1" <<'PY'
import json, statistics, subprocess, sys, time
from e2b import Sandbox

runs, banger, start = int(sys.argv[1]), sys.argv[2], sys.argv[3]
times = []
for i in range(runs + 1):
    t = time.perf_counter()
    sbx = Sandbox.create(template="minbase", timeout=120)
    try:
        r = sbx.commands.run("true")
        dt = time.perf_counter() - t
        if r.exit_code != 0:
            raise SystemExit(f"bad answer: {r}")
        shown = json.loads(subprocess.check_output([banger, "vm", "show", "--json", sbx.sandbox_id]))
        if shown.get("start") != start:
            raise SystemExit(f"{sbx.sandbox_id} started {shown.get('start')}, not {start}")
    finally:
        sbx.kill()
    if i:  # the first one is the warm-up
        times.append(dt)
print(f"{statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f}")
PY
}

# vm_runs FLAG: the same for `vm run --rm -- true`.
vm_runs() {
    local t=()
    for _ in $(seq "$RUNS"); do
        local t0 t1
        t0=$(now)
        "$B" vm run --image minbase --rm --cpus 1 --memory 512MiB "$1" -q -- true
        t1=$(now)
        t+=("$(echo "$t1 - $t0" | bc)")
    done
    printf '%s\n' "${t[@]}" | python3 -c '
import statistics, sys
v = [float(l) for l in sys.stdin]
print(f"{statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f}")'
}

echo "bench-e2b: cold: SDK through banger serve, $RUNS runs ..." >&2
# The daemon reads [vm] warm when it starts (the setup's daemon read the default, true).
"$B" daemon stop >/dev/null
config false
start_serve cold
sdk_cold=$(sdk_runs cold)
stop_serve
echo "bench-e2b: cold: banger vm run --rm --cold -- true, $RUNS runs ..." >&2
vm_cold=$(vm_runs --cold)

echo "bench-e2b: warm: image warm minbase, then the same ..." >&2
# The daemon reads [vm] warm when it starts: the next command starts it again.
"$B" daemon stop >/dev/null
config true
"$B" image warm minbase --cpus 1 --memory 512MiB -q >/dev/null
start_serve warm
sdk_warm=$(sdk_runs warm)
stop_serve
vm_warm=$(vm_runs --warm)

echo
echo "| create → first command done, $RUNS runs | median s | min | max |"
echo "|---|---:|---:|---:|"
echo "| E2B SDK: \`Sandbox.create()\` + \`commands.run(\"true\")\`, cold | $sdk_cold |"
echo "| E2B SDK: the same, warm (ready-snapshot) | $sdk_warm |"
echo "| \`banger vm run --rm -- true\`, cold | $vm_cold |"
echo "| \`banger vm run --rm -- true\`, warm | $vm_warm |"
echo "bench-e2b: load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
