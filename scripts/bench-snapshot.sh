#!/usr/bin/env bash
# What snapshots and forks (issue 21) buy, in one run on the minbase image (1 vCPU, the
# serial channel, no network):
#   - `vm run --rm -- true`, cold (a boot, the default vsock channel) and from a snapshot of
#     a ready VM (`--from`; it runs on the serial channel, which QEMU can save),
#     BENCH_RUNS times each: median and p95;
#   - create → ready of one fork;
#   - BENCH_FORKS forks of one snapshot created at once: time until all are ready, and host
#     RSS and PSS per fork (QEMU's; PSS shares what the forks share);
#   - pause (`vm pause`) and snapshot (`vm snapshot`) time of a 512 MiB and a 2 GiB guest.
# Prints a markdown table.
#
# Usage: scripts/bench-snapshot.sh
#   BENCH_RUNS=N (default 10)  BENCH_FORKS=N (default 10)
#   BENCH_BIN_DIR  where banger and bangerd are (default: a release build made here)
#   BANGER_TEST_CACHE  cache dir of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
set -euo pipefail
BENCH_NAME=bench-snapshot
. "$(dirname "$0")/bench-lib.sh"
RUNS=${BENCH_RUNS:-10}
FORKS=${BENCH_FORKS:-10}
bench_require qemu-system-x86_64 qemu-img python3 umoci debootstrap dpkg-deb bc
bench_setup

stats() { # median p95 of the numbers on stdin
    python3 -c 'import sys,statistics as s; v=sorted(float(x) for x in sys.stdin); print(f"{s.median(v):.2f} {v[min(len(v)-1, int(round(0.95*(len(v)-1))))]:.2f}")'
}
SMALL=(--image minbase --cpus 1 --memory 512MiB --net none)

# The snapshot forks start from: a ready minbase VM, stopped once saved.
"$B" vm create base "${SMALL[@]}" --channel serial -q >/dev/null
"$B" vm snapshot base --name ready --stop >/dev/null

echo "bench-snapshot: vm run --rm -- true, cold and from the snapshot, $RUNS each ..." >&2
cold=() warm=()
for i in $(seq 1 "$RUNS"); do
    t0=$(now); "$B" vm run --rm -q "${SMALL[@]}" -- true; t1=$(now)
    cold+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now); "$B" vm run --rm -q --from ready -- true; t1=$(now)
    warm+=("$(echo "$t1 - $t0" | bc)")
done
read -r cold_med cold_p95 < <(printf '%s\n' "${cold[@]}" | stats)
read -r warm_med warm_p95 < <(printf '%s\n' "${warm[@]}" | stats)
echo "bench-snapshot: cold ${cold_med}/${cold_p95} s, from the snapshot ${warm_med}/${warm_p95} s" >&2

t0=$(now); "$B" vm create one --from ready -q >/dev/null; t1=$(now)
fork_ready=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")
"$B" vm delete one --force >/dev/null

echo "bench-snapshot: $FORKS forks at once ..." >&2
t0=$(now)
pids=()
for i in $(seq 1 "$FORKS"); do
    "$B" vm create "f$i" --from ready -q >/dev/null & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
t1=$(now)
all_ready=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")
read -r rss_mib pss_mib < <(python3 - "$B" "$FORKS" <<'EOF'
import json, subprocess, sys, statistics
b, n = sys.argv[1], int(sys.argv[2])
rss, pss = [], []
for i in range(1, n + 1):
    vm = json.loads(subprocess.check_output([b, "--json", "vm", "show", f"f{i}"]))
    pid = vm["pid"]
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            fields[parts[0][:-1]] = int(parts[1])
    rss.append(fields["Rss"] / 1024)
    pss.append(fields["Pss"] / 1024)
print(f"{statistics.median(rss):.0f} {statistics.median(pss):.0f}")
EOF
)
for i in $(seq 1 "$FORKS"); do "$B" vm delete "f$i" --force >/dev/null; done

echo "bench-snapshot: pause and snapshot of 512 MiB and 2 GiB guests ..." >&2
declare -A PAUSE SNAP
for mem in 512 2048; do
    "$B" vm create "m$mem" --image minbase --cpus 1 --memory "${mem}MiB" --channel serial --net none -q >/dev/null
    # Fill part of the memory, so that the state is not just zero pages.
    "$B" vm exec "m$mem" -- sh -c 'n=$(awk "/MemAvailable/ {print int(\$2/1024*0.4)}" /proc/meminfo); mkdir -p /dev/shm/f; head -c ${n}M /dev/urandom > /dev/shm/f/blob'
    t0=$(now); "$B" vm pause "m$mem" >/dev/null; t1=$(now)
    PAUSE[$mem]=$(echo "($t1 - $t0) * 1000" | bc | cut -d. -f1)
    "$B" vm resume "m$mem" >/dev/null
    t0=$(now); "$B" vm snapshot "m$mem" --name "s$mem" >/dev/null; t1=$(now)
    SNAP[$mem]=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")
    "$B" vm delete "m$mem" --force >/dev/null
    "$B" snapshot delete "s$mem" >/dev/null
done

cat <<EOF

Snapshots and forks, minbase image, 1 vCPU, 512 MiB unless said, serial channel, no network; $(uname -r) host, QEMU $(qemu-system-x86_64 --version | awk 'NR==1 {print $4}'), software emulation:

| | measured | target |
|---|---|---|
| \`vm run --rm -- true\` cold (boot), median / p95 of $RUNS | ${cold_med} s / ${cold_p95} s | - |
| \`vm run --rm --from SNAP -- true\` (fork), median / p95 of $RUNS | ${warm_med} s / ${warm_p95} s | ≤ 0.5 s median |
| one fork, create → ready | ${fork_ready} s | - |
| $FORKS forks at once, until all ready | ${all_ready} s | ≤ 3 s |
| host RSS / PSS per fork (QEMU), median | ${rss_mib} MiB / ${pss_mib} MiB | - |
| \`vm pause\`, 512 MiB / 2 GiB guest | ${PAUSE[512]} ms / ${PAUSE[2048]} ms | - |
| \`vm snapshot\` (40 % of its free memory filled), 512 MiB / 2 GiB guest | ${SNAP[512]} s / ${SNAP[2048]} s | ≤ 1 s (512 MiB) |
EOF
