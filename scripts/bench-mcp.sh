#!/usr/bin/env bash
# What an agent's tool call costs (issue 22): in one run, on one minbase VM (1 vCPU):
#   - `sandbox_exec` of `echo hi` through `banger mcp`, from the official MCP Python SDK's
#     session (started once, as an agent's is), BENCH_RUNS calls after one warm-up;
#   - `banger vm exec VM -- echo hi`, a new CLI process each time, BENCH_RUNS times.
# Prints median, min and max as a markdown table (load average before and after on stderr).
#
# Usage: scripts/bench-mcp.sh
#   BENCH_RUNS=N (default 20)
#   BENCH_BIN_DIR  where banger and bangerd are (default: a release build made here)
#   BANGER_TEST_VENV  the venv with the MCP SDK (default /var/tmp/banger-test-venv;
#                     scripts/install-test-deps.sh makes it)
#   BANGER_TEST_CACHE  cache dir of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
set -euo pipefail
BENCH_NAME=bench-mcp
. "$(dirname "$0")/bench-lib.sh"
RUNS=${BENCH_RUNS:-20}
VENV_PY=${BANGER_TEST_VENV:-/var/tmp/banger-test-venv}/bin/python
bench_require qemu-system-x86_64 python3 umoci debootstrap dpkg-deb
"$VENV_PY" -c 'import mcp.client.stdio' 2>/dev/null \
    || die "no MCP SDK in $VENV_PY (scripts/install-test-deps.sh makes the venv)"
bench_setup
echo "bench-mcp: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# No user config: cold boots, default networking.
export XDG_CONFIG_HOME=$WORK/config

"$B" vm create bench --image minbase --cpus 1 --memory 512MiB -q >/dev/null

echo "bench-mcp: sandbox_exec echo hi through banger mcp, $RUNS calls ..." >&2
mcp_ms=$("$VENV_PY" - "$B" "$RUNS" <<'PY'
import asyncio, os, statistics, sys, time
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

async def main(banger, runs):
    params = StdioServerParameters(command=banger, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            args = {"sandbox": "bench", "argv": ["echo", "hi"]}
            times = []
            for i in range(runs + 1):
                t = time.perf_counter()
                r = await session.call_tool("sandbox_exec", args)
                dt = time.perf_counter() - t
                if r.is_error or r.structured_content["stdout"] != "hi\n":
                    raise SystemExit(f"bad answer: {r}")
                if i:  # the first call is the warm-up
                    times.append(dt)
            ms = [t * 1000 for t in times]
            print(f"{statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f}")

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
PY
)

echo "bench-mcp: banger vm exec bench -- echo hi, $RUNS times ..." >&2
cli=()
for _ in $(seq "$RUNS"); do
    t0=$(now)
    out=$("$B" vm exec bench -- echo hi)
    t1=$(now)
    [ "$out" = hi ] || die "vm exec said: $out"
    cli+=("$(echo "($t1 - $t0) * 1000" | bc -l)")
done
cli_ms=$(printf '%s\n' "${cli[@]}" | python3 -c '
import statistics, sys
ms = [float(l) for l in sys.stdin]
print(f"{statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f}")')

echo
echo "| echo hi, $RUNS runs | median ms | min | max |"
echo "|---|---:|---:|---:|"
echo "| MCP sandbox_exec (one session) | $mcp_ms |"
echo "| banger vm exec (a process per call) | $cli_ms |"
echo "bench-mcp: load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
