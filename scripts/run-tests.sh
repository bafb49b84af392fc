#!/usr/bin/env bash
# Runs the workspace's tests as `cargo test --workspace --no-fail-fast` does, in two lanes
# side by side: most VM tests wait on guests under software emulation, so a second lane
# uses the time. The tests that boot the most guests, or time an idle guest, share lane 1;
# everything else runs in lane 2 in cargo's order. Each test binary's output is printed
# whole when it ends (never interleaved), then the doc tests run, then a total.
#
# Usage: scripts/run-tests.sh [ARGS for every test binary, e.g. a name filter]
#   RUN_TESTS_LANES=1  one lane (cargo's own sequential order)
set -euo pipefail
cd "$(dirname "$0")/.."

# Lane 1: the heaviest VM tests (each boots several guests, or waits on idle timers),
# about half of the whole.
LANE1='^(vm_lifecycle|vm_snapshot|vm_net_policy|vm_warm|vm_rm|hostile_guest|vm_sandbox)$'
LANES=${RUN_TESTS_LANES:-2}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics \
    >"$work/build.json"
# One line per test binary: name, executable, package directory.
python3 - "$work/build.json" >"$work/binaries" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        name = m["target"]["name"]
        print("\t".join([name, m["executable"], os.path.dirname(m["manifest_path"])]))
PY

# run_lane FILE: runs the binaries listed in FILE one after the other.
run_lane() {
    local name exe dir log status
    while IFS=$'\t' read -r name exe dir; do
        log=$work/$(basename "$exe").log
        status=0
        # stdin is not the lane's list: a test's child that reads stdin must not eat it.
        (cd "$dir" && CARGO_MANIFEST_DIR=$dir "$exe" "${@:2}") </dev/null >"$log" 2>&1 || status=$?
        {
            echo "     Running $name ($exe)"
            cat "$log"
            [ "$status" = 0 ] || echo "run-tests: $name FAILED (exit $status)"
        } | flock "$work/print.lock" cat
        [ "$status" = 0 ] || echo "$name" >>"$work/failed"
        echo "$name" >>"$work/ran"
    done <"$1"
}

if [ "$LANES" = 1 ]; then
    cp "$work/binaries" "$work/lane2"
    : >"$work/lane1"
else
    awk -F'\t' -v re="$LANE1" '$1 ~ re' "$work/binaries" >"$work/lane1"
    awk -F'\t' -v re="$LANE1" '$1 !~ re' "$work/binaries" >"$work/lane2"
fi
start=$SECONDS
run_lane "$work/lane1" "$@" &
lane1=$!
run_lane "$work/lane2" "$@"
wait "$lane1"
echo "run-tests: $(wc -l <"$work/binaries") test binaries took $((SECONDS - start))s in $LANES lane(s)"
# Every binary listed must have run (a lane that lost its list would look like a pass).
if [ "$(wc -l <"$work/ran" 2>/dev/null || echo 0)" != "$(wc -l <"$work/binaries")" ]; then
    echo "run-tests: only $(wc -l <"$work/ran" 2>/dev/null || echo 0) of $(wc -l <"$work/binaries") test binaries ran"
    echo "run-tests (lanes)" >>"$work/failed"
fi

# Doc tests (cargo test runs them after the binaries).
if [ "$#" = 0 ]; then
    cargo test --workspace --locked --doc 2>&1 | tee "$work/doc.log" \
        || echo "doc tests" >>"$work/failed"
fi
if [ -s "$work/failed" ]; then
    echo "run-tests: failed: $(tr '\n' ' ' <"$work/failed")"
    exit 101
fi
