#!/usr/bin/env bash
# What snapshots and forks (issue 21) buy, in one run on the minbase image (1 vCPU, the
# serial channel, no network):
#   - `vm run --rm -- true`, cold (`--cold`: a boot, the default vsock channel), warm
#     (`--warm`: from the image's ready-snapshot, made by `image warm`) and from a snapshot of
#     a ready VM (`--from`; forks run on the serial channel, which QEMU can save),
#     BENCH_RUNS times each, alternating: median and p95;
#   - create → ready of one fork and of one warm start;
#   - BENCH_FORKS forks of one snapshot created at once, then BENCH_FORKS warm starts: time
#     until all are ready, and host RSS and PSS per VM (QEMU's; PSS shares what they share);
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

# The snapshot forks start from: a ready minbase VM, stopped once saved; and the image's
# ready-snapshot for these settings, which warm starts use.
"$B" vm create base "${SMALL[@]}" --channel serial --cold -q >/dev/null
"$B" vm snapshot base --name ready --stop >/dev/null
"$B" image warm "${SMALL[@]:1}" -q >/dev/null

echo "bench-snapshot: vm run --rm -- true, cold, warm and from the snapshot, $RUNS each ..." >&2
declare -A RUN_TIMES
for i in $(seq 1 "$RUNS"); do
    for how in cold warm fork; do
        case $how in
            cold) flags=("${SMALL[@]}" --cold) ;;
            warm) flags=("${SMALL[@]}" --warm) ;;
            fork) flags=(--from ready) ;;
        esac
        t0=$(now); "$B" vm run --rm -q "${flags[@]}" -- true; t1=$(now)
        RUN_TIMES[$how]+="$(echo "$t1 - $t0" | bc) "
    done
done
declare -A MED P95
for how in cold warm fork; do
    read -r "MED[$how]" "P95[$how]" < <(printf '%s\n' ${RUN_TIMES[$how]} | stats)
done
echo "bench-snapshot: cold ${MED[cold]}/${P95[cold]} s, warm ${MED[warm]}/${P95[warm]} s, fork ${MED[fork]}/${P95[fork]} s" >&2

create_ready() { # ARGS...: seconds from create to ready of one VM
    local t0 t1
    t0=$(now); "$B" vm create one "$@" -q >/dev/null; t1=$(now)
    "$B" vm delete one --force >/dev/null
    printf '%.2f' "$(echo "$t1 - $t0" | bc)"
}
fork_ready=$(create_ready --from ready)
warm_ready=$(create_ready "${SMALL[@]}" --warm)

# N VMs created at once: seconds until all are ready, and QEMU's RSS and PSS per VM (PSS
# divides what they share).
at_once() { # PREFIX ARGS...
    local prefix=$1 t0 t1 pids=()
    shift
    t0=$(now)
    for i in $(seq 1 "$FORKS"); do
        "$B" vm create "$prefix$i" "$@" -q >/dev/null & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t1=$(now)
    printf '%.2f ' "$(echo "$t1 - $t0" | bc)"
    python3 - "$B" "$FORKS" "$prefix" <<'EOF'
import json, subprocess, sys, statistics
b, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rss, pss = [], []
for i in range(1, n + 1):
    vm = json.loads(subprocess.check_output([b, "--json", "vm", "show", f"{prefix}{i}"]))
    fields = {}
    for line in open(f"/proc/{vm['pid']}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            fields[parts[0][:-1]] = int(parts[1])
    rss.append(fields["Rss"] / 1024)
    pss.append(fields["Pss"] / 1024)
print(f"{statistics.median(rss):.0f} {statistics.median(pss):.0f}")
EOF
    for i in $(seq 1 "$FORKS"); do "$B" vm delete "$prefix$i" --force >/dev/null; done
}
echo "bench-snapshot: $FORKS forks at once, then $FORKS warm starts at once ..." >&2
read -r all_ready rss_mib pss_mib < <(at_once f --from ready)
read -r warm_all_ready warm_rss_mib warm_pss_mib < <(at_once w "${SMALL[@]}" --warm)

echo "bench-snapshot: pause and snapshot of 512 MiB and 2 GiB guests ..." >&2
declare -A PAUSE SNAP
for mem in 512 2048; do
    "$B" vm create "m$mem" --image minbase --cpus 1 --memory "${mem}MiB" --channel serial --net none --cold -q >/dev/null
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
| \`vm run --rm -- true\` cold (boot), median / p95 of $RUNS | ${MED[cold]} s / ${P95[cold]} s | - |
| \`vm run --rm -- true\` warm (the image's ready-snapshot), median / p95 of $RUNS | ${MED[warm]} s / ${P95[warm]} s | ≤ 0.5 s median |
| \`vm run --rm --from SNAP -- true\` (fork of a snapshot), median / p95 of $RUNS | ${MED[fork]} s / ${P95[fork]} s | - |
| one VM, create → ready: fork / warm | ${fork_ready} s / ${warm_ready} s | - |
| $FORKS forks of a snapshot at once, until all ready | ${all_ready} s | ≤ 3 s |
| $FORKS warm starts at once, until all ready | ${warm_all_ready} s | ≤ 3 s |
| host RSS / PSS per VM (QEMU), median: forks / warm starts | ${rss_mib} / ${pss_mib} MiB; ${warm_rss_mib} / ${warm_pss_mib} MiB | - |
| \`vm pause\`, 512 MiB / 2 GiB guest | ${PAUSE[512]} ms / ${PAUSE[2048]} ms | - |
| \`vm snapshot\` (40 % of its free memory filled), 512 MiB / 2 GiB guest | ${SNAP[512]} s / ${SNAP[2048]} s | ≤ 1 s (512 MiB) |
EOF
