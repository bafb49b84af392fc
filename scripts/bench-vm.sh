#!/usr/bin/env bash
# Benchmark banger's VM lifecycle and, in the same run, the baseline a user would script by
# hand: copy the image's rootfs, boot it with QEMU and a minimal initrd that hands over to
# the image's systemd, wait on the serial console for systemd's "Reached target
# multi-user.target" (the dev image has no udev, so no serial getty ever shows a login
# prompt; multi-user is the same moment one would).
#
# Prints: create→ready (median, p95) over BENCH_BOOTS boots, `vm exec -- true` round trip,
# allocated disk per new VM (at create and after boot), host RSS of QEMU + vsock helper per
# VM, create time for a ~200 MB and a ~800 MB image, BENCH_SOAK boots without a hang,
# `vm run --rm -- true` end to end, cold (a boot) and warm (from the image's ready-snapshot),
# against the by-hand SSH equivalent (copy the rootfs, boot it, wait for its sshd, `ssh true`),
# and the workspace copy rate of a 10,000-file repo. Every VM boots cold (`--cold`) but the
# warm row's.
#
# Usage: scripts/bench-vm.sh
#   BENCH_BOOTS=N  (default 10)   BENCH_SOAK=N (default 50)   BENCH_BASELINE_RUNS=N (default 3)
#   BANGER_TEST_CACHE  cache dir of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
# Needs (Debian): qemu-system-x86 debootstrap umoci busybox-static, vhost-device-vsock (cargo).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BOOTS=${BENCH_BOOTS:-10}
SOAK=${BENCH_SOAK:-50}
BASE_RUNS=${BENCH_BASELINE_RUNS:-3}
RUNS=${BENCH_RUNS:-10}
export PATH=$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin
die() { echo "bench-vm: $*" >&2; exit 1; }
for t in qemu-system-x86_64 busybox umoci debootstrap dpkg-deb ssh ssh-keygen debugfs git; do
    command -v "$t" >/dev/null || die "missing $t (scripts/install-test-deps.sh installs it)"
done

"$REPO/scripts/bench-pull.sh" --prepare-only minbase dev
(cd "$REPO" && cargo build --quiet --locked --release -p banger && \
    cargo build --quiet --locked --release -p banger-kernel --example baseline_initrd)
export BANGER_AGENT
BANGER_AGENT=$("$REPO/scripts/build-agent.sh")
B=$TARGET/release/banger
export BANGER_DAEMON=$TARGET/release/bangerd

deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
    mkdir -p "$CACHE/kernel-deb"
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    (cd "$CACHE/kernel-deb" && apt-get download -q "$pkg")
    deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb | head -n 1)
fi

WORK=$(mktemp -d /var/tmp/bench-vm.XXXXXX)
export XDG_STATE_HOME=$WORK/state XDG_CACHE_HOME=$WORK/cache XDG_RUNTIME_DIR=$WORK/run
QEMU_PID=""
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null
    for vm in $("$B" --json vm list 2>/dev/null | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)["vms"]))' 2>/dev/null); do
        "$B" vm delete "$vm" --force >/dev/null 2>&1 || true
    done
    "$B" daemon stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$B" kernel import cloud --deb "$deb" >/dev/null
"$B" image pull "oci:$CACHE/bench/oci-minbase:t" --name minbase --kernel-ref cloud -q >/dev/null
"$B" image pull "oci:$CACHE/bench/oci-dev:t" --name dev --kernel-ref cloud -q >/dev/null
size_of() { "$B" --json image show "$1" | python3 -c 'import json,sys; i=json.load(sys.stdin); print(round(i["allocated_bytes"]/2**20))'; }

now() { date +%s.%N; }
stats() { # median p95 of the numbers on stdin
    python3 -c 'import sys,statistics as s; v=sorted(float(x) for x in sys.stdin); print(f"{s.median(v):.2f} {v[min(len(v)-1, int(round(0.95*(len(v)-1))))]:.2f}")'
}
vm_field() { "$B" --json vm show "$1" | python3 -c "import json,sys; v=json.load(sys.stdin); print($2)"; }
rss_kib() { # VmRSS of the VM's processes, summed
    python3 - "$1" <<'EOF'
import json, sys
total = 0
for p in json.load(open(sys.argv[1] + "/pids.json")):
    pid = p["pid"] if isinstance(p, dict) else p
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    except FileNotFoundError:
        pass
print(total)
EOF
}

echo "bench-vm: $BOOTS boots of minbase (1 vCPU, 512 MiB) ..." >&2
ready=() exec_ms=() alloc_boot=() rss=()
for i in $(seq 1 "$BOOTS"); do
    t0=$(now)
    "$B" vm create "b$i" --image minbase --cpus 1 --memory 512MiB --cold -q >/dev/null
    t1=$(now)
    ready+=("$(echo "$t1 - $t0" | bc)")
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        e0=$(now); "$B" vm exec "b$i" -- true; e1=$(now)
        exec_ms+=("$(echo "($e1 - $e0) * 1000" | bc)")
    done
    dir=$(vm_field "b$i" 'v["dir"]')
    alloc_boot+=("$(du -B1 -s "$dir" --exclude=console.log | cut -f1)")
    rss+=("$(rss_kib "$dir")")
    "$B" vm delete "b$i" --force >/dev/null
done
read -r ready_med ready_p95 < <(printf '%s\n' "${ready[@]}" | stats)
read -r exec_med exec_p95 < <(printf '%s\n' "${exec_ms[@]}" | stats)
alloc_boot_mib=$(printf '%s\n' "${alloc_boot[@]}" | python3 -c 'import sys,statistics as s; print(f"{s.median(int(x) for x in sys.stdin)/2**20:.1f}")')
rss_mib=$(printf '%s\n' "${rss[@]}" | python3 -c 'import sys,statistics as s; print(f"{s.median(int(x) for x in sys.stdin)/1024:.0f}")')

"$B" vm create fresh --image minbase --no-start --cold -q >/dev/null
alloc_create=$(du -B1 -s "$(vm_field fresh 'v["dir"]')" | cut -f1)
alloc_create_kib=$((alloc_create / 1024))
"$B" vm delete fresh >/dev/null

echo "bench-vm: create time against image size ..." >&2
create_time() { # IMAGE: median create→ready of 3 (init agent, same guest work)
    for i in 1 2 3; do
        t0=$(now)
        "$B" vm create "s$i" --image "$1" --cpus 1 --memory 512MiB --init agent --cold -q >/dev/null
        t1=$(now)
        "$B" vm delete "s$i" --force >/dev/null
        echo "$t1 - $t0" | bc
    done | stats | cut -d' ' -f1
}
small=$(create_time minbase)
big=$(create_time dev)

echo "bench-vm: $SOAK boots without a hang ..." >&2
hangs=0
for i in $(seq 1 "$SOAK"); do
    if ! "$B" vm create "k$i" --image minbase --cpus 1 --memory 256MiB --ready-timeout 60 --cold -q >/dev/null 2>"$WORK/soak.err" ||
        ! timeout 30 "$B" vm exec "k$i" -- true; then
        hangs=$((hangs + 1))
        echo "bench-vm: soak boot $i failed: $(tail -n 3 "$WORK/soak.err")" >&2
    fi
    "$B" vm delete "k$i" --force >/dev/null 2>&1 || true
done

echo "bench-vm: $RUNS × vm run --rm -- true, cold and warm, alternating ..." >&2
"$B" image warm minbase --cpus 1 --memory 512MiB -q >/dev/null
runs=() warm_runs=()
for i in $(seq 1 "$RUNS"); do
    t0=$(now)
    "$B" vm run --image minbase --rm --cpus 1 --memory 512MiB --cold -q -- true
    t1=$(now)
    runs+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now)
    "$B" vm run --image minbase --rm --cpus 1 --memory 512MiB --warm -q -- true
    t1=$(now)
    warm_runs+=("$(echo "$t1 - $t0" | bc)")
done
read -r run_med run_p95 < <(printf '%s\n' "${runs[@]}" | stats)
read -r warm_med warm_p95 < <(printf '%s\n' "${warm_runs[@]}" | stats)

echo "bench-vm: workspace copy of a 10,000-file repository ..." >&2
repo=$WORK/repo
mkdir -p "$repo"
git -C "$repo" init -q
python3 - "$repo" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/src/d{d:03}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/src/d{d:03}/f{f:03}.txt", "w") as fh:
            fh.write(f"file {d}/{f}\n" * 40)
PY
git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@example.invalid commit -qm files
t0=$(now)
"$B" vm run "$repo" --image minbase --rm --cpus 1 --memory 512MiB --cold -- sh -c 'find /root/repo/src -type f | wc -l' >"$WORK/count" 2>"$WORK/copy.err"
t1=$(now)
copied=$(tr -d ' ' <"$WORK/count")
copy_s=$(echo "$t1 - $t0" | bc)
copy_line=$(grep -i -m1 "copied\|MiB/s" "$WORK/copy.err" || echo "(no rate line)")

echo "bench-vm: baseline (copy rootfs, QEMU + busybox initrd, systemd to multi-user) ..." >&2
rel=$(dpkg-deb -f "$deb" Package | sed 's/^linux-image-//')
kdir=$(ls -d "$CACHE"/kernel/linux-image-"$rel" 2>/dev/null || true)
if [ -z "$kdir" ]; then
    kdir=$WORK/kernel
    dpkg-deb -x "$deb" "$kdir"
fi
"$TARGET/release/examples/baseline_initrd" "$(command -v busybox)" "$kdir/lib/modules/$rel" /lib/systemd/systemd "$WORK/baseline.cpio"
dev_rootfs=$("$B" --json image show dev | python3 -c 'import json,sys; print(json.load(sys.stdin)["rootfs_path"])')
khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
baseline=()
for i in $(seq 1 "$BASE_RUNS"); do
    t0=$(now)
    cp --sparse=always "$dev_rootfs" "$WORK/copy.ext4"
    : >"$WORK/console.log"
    qemu-system-x86_64 -M microvm,accel=tcg -cpu max -smp 1 -m 512 -nodefaults -no-user-config \
        -nographic -no-reboot -serial "file:$WORK/console.log" \
        -kernel "$kdir/boot/vmlinuz-$rel" -initrd "$WORK/baseline.cpio" \
        -append "console=ttyS0 panic=-1 tsc_early_khz=$khz" \
        -drive "id=d0,file=$WORK/copy.ext4,format=raw,if=none" -device virtio-blk-device,drive=d0 &
    QEMU_PID=$!
    deadline=$(( $(date +%s) + 180 ))
    until grep -q "Reached target.*Multi-User System" "$WORK/console.log"; do
        [ "$(date +%s)" -gt "$deadline" ] && die "baseline guest did not reach multi-user in 180 s"
        kill -0 "$QEMU_PID" 2>/dev/null || die "baseline QEMU exited: $(tail -n 5 "$WORK/console.log")"
        sleep 0.05
    done
    t1=$(now)
    kill "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=""
    baseline+=("$(echo "$t1 - $t0" | bc)")
    rm -f "$WORK/copy.ext4"
done
read -r base_med _ < <(printf '%s\n' "${baseline[@]}" | stats)

echo "bench-vm: baseline for run -- true (copy rootfs, boot, wait for sshd, ssh true) ..." >&2
ssh-keygen -q -t ed25519 -N "" -f "$WORK/key"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ssh_base=()
for i in $(seq 1 "$BASE_RUNS"); do
    t0=$(now)
    cp --sparse=always "$dev_rootfs" "$WORK/copy.ext4"
    # debugfs's `write` names a file in the current directory only: cd there first.
    printf 'mkdir /root/.ssh\ncd /root/.ssh\nwrite %s authorized_keys\n' "$WORK/key.pub" >"$WORK/debugfs.cmd"
    debugfs -w -f "$WORK/debugfs.cmd" "$WORK/copy.ext4" >/dev/null 2>&1
    debugfs -R "cat /root/.ssh/authorized_keys" "$WORK/copy.ext4" 2>/dev/null | grep -q ssh-ed25519 ||
        die "could not put the baseline's key into the copied rootfs"
    : >"$WORK/console.log"
    qemu-system-x86_64 -M microvm,accel=tcg -cpu max -smp 1 -m 512 -nodefaults -no-user-config \
        -nographic -no-reboot -serial "file:$WORK/console.log" \
        -kernel "$kdir/boot/vmlinuz-$rel" -initrd "$WORK/baseline.cpio" \
        -append "console=ttyS0 panic=-1 tsc_early_khz=$khz" \
        -drive "id=d0,file=$WORK/copy.ext4,format=raw,if=none" -device virtio-blk-device,drive=d0 \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-device,netdev=n0 &
    QEMU_PID=$!
    deadline=$(( $(date +%s) + 300 ))
    answered=0
    while [ "$(date +%s)" -le "$deadline" ] && kill -0 "$QEMU_PID" 2>/dev/null; do
        if ssh -q -i "$WORK/key" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no \
            -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 root@127.0.0.1 true 2>/dev/null; then
            answered=1
            break
        fi
        sleep 0.2
    done
    t1=$(now)
    kill "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=""
    rm -f "$WORK/copy.ext4"
    if [ "$answered" != 1 ]; then
        echo "bench-vm: the baseline's sshd never answered: $(tail -n 3 "$WORK/console.log")" >&2
        ssh_base=()
        break
    fi
    ssh_base+=("$(echo "$t1 - $t0" | bc)")
done
ssh_med="failed"
[ ${#ssh_base[@]} -gt 0 ] && read -r ssh_med _ < <(printf '%s\n' "${ssh_base[@]}" | stats)

cat <<EOF

| measure | banger | baseline (by hand) | target |
|---|---|---|---|
| create → ready, median / p95 of $BOOTS | ${ready_med} s / ${ready_p95} s | ${base_med} s to multi-user (copy + systemd boot) | ≤ 4 s median |
| \`vm exec -- true\` round trip, median / p95 | ${exec_med} ms / ${exec_p95} ms | - | ≤ 80 ms |
| allocated disk per new VM: at create / after boot | $((alloc_create_kib)) KiB / ${alloc_boot_mib} MiB | $(size_of dev) MiB (a copy of the rootfs) | ≤ 2 MiB |
| host RSS of QEMU + vsock helper per VM (512 MiB guest) | ${rss_mib} MiB | - | report |
| create → ready: minbase ($(size_of minbase) MiB) vs dev ($(size_of dev) MiB) | ${small} s vs ${big} s | - | equal ±10 % |
| boots without a hang | $((SOAK - hangs)) / $SOAK | - | all |
| \`vm run --rm -- true\` end to end, cold (boot), median / p95 of $RUNS | ${run_med} s / ${run_p95} s | ${ssh_med} s (copy, boot, wait for sshd, ssh true) | ≤ 4 s median |
| \`vm run --rm -- true\` end to end, warm (ready-snapshot), median / p95 of $RUNS, same run | ${warm_med} s / ${warm_p95} s | - | ≤ 0.5 s median |
| workspace copy: 10,000-file repo, \`vm run REPO -- find\` in all | ${copy_s} s, ${copied} files in the guest; ${copy_line} | - | report |
EOF
