#!/usr/bin/env bash
# Smoke test for a host whose KVM really boots guests: runs the VM and sandbox scenarios
# (create / exec / stop / start / delete, the agent secret out of the guest's reach and
# checked again by a restarted daemon, modules loaded on demand, /dev/fd and delegated cgroups with the agent as
# PID 1, `vm run -- true`, the network policy: the default keeps the host's loopback out and
# reaches apt's mirror, an allow-list resolves and reaches only what it names) once with `--vmm firecracker`
# and once with `--vmm qemu` (QEMU + KVM), plus with Firecracker pause/resume, snapshots and
# forks (`vm pause|resume|snapshot`, `snapshot list|show|delete`, `vm create|run --from`), and
# warm starts on both (`image warm`, `vm run --warm`, the warm VM's identity: hostname files and
# banger's SSH key made anew after the snapshot authorized, a warm VM restarted cold),
# then prints create→ready, `vm run -- true` and `vm exec -- true` round-trip timings of
# both side by side as a markdown table (and `vm run --from SNAP` for Firecracker).
#
# On a host where KVM cannot boot guests (no VMX/SVM, PVM-backed /dev/kvm, no /dev/kvm) it
# stops before building anything, quoting `banger doctor --json`'s acceleration check.
#
# Usage: scripts/smoke-kvm.sh
#   SMOKE_RUNS=N       timing samples per VMM (default 5; medians are printed)
#   BANGER_FIRECRACKER the firecracker binary (default: on PATH, else ../shared/tools/firecracker)
#   BANGER_TEST_CACHE  cache of the debootstrap image and the kernel .deb (default /var/tmp/banger-test-cache)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
RUNS=${SMOKE_RUNS:-5}
export PATH=$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin
die() { echo "smoke-kvm: $*" >&2; exit 1; }
for t in qemu-system-x86_64 python3 umoci debootstrap dpkg-deb apt-get; do
    command -v "$t" >/dev/null || die "missing $t (scripts/install-test-deps.sh installs it)"
done
if [ -z "${BANGER_FIRECRACKER:-}" ] && ! command -v firecracker >/dev/null; then
    [ -x "$REPO/../shared/tools/firecracker" ] || die "no firecracker on PATH; set BANGER_FIRECRACKER"
    export BANGER_FIRECRACKER=$REPO/../shared/tools/firecracker
fi

WORK=$(mktemp -d /var/tmp/smoke-kvm.XXXXXX)
export XDG_STATE_HOME=$WORK/state XDG_CACHE_HOME=$WORK/cache XDG_RUNTIME_DIR=$WORK/run
# Cold unless a check says --warm: no warm start template boots behind the other checks.
export XDG_CONFIG_HOME=$WORK/config
mkdir -p "$XDG_CONFIG_HOME/banger"
printf '[vm]\nwarm = false\n' >"$XDG_CONFIG_HOME/banger/config.toml"
B=$TARGET/release/banger
export BANGER_DAEMON=$TARGET/release/bangerd
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
    if [ -x "$B" ]; then
        for vm in $("$B" --json vm list 2>/dev/null | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)["vms"]))' 2>/dev/null); do
            "$B" vm delete "$vm" --force >/dev/null 2>&1 || true
        done
        "$B" daemon stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "smoke-kvm: building banger ..." >&2
(cd "$REPO" && cargo build --quiet --locked --release -p banger)

# 1. Stop early where KVM cannot boot guests: the doctor's acceleration check runs the probe.
accel=$("$B" --json doctor 2>/dev/null | python3 -c '
import json, sys
for c in json.load(sys.stdin):
    if c["name"] == "acceleration":
        print(c["verdict"] + "\t" + c["detail"]); break
else:
    print("MISSING\tdoctor reported no acceleration check")
' || true)
verdict=${accel%%$'\t'*}
detail=${accel#*$'\t'}
if [ "$verdict" != PASS ]; then
    die "KVM cannot boot guests on this host, so there is nothing to smoke-test here ($verdict: $detail). Run this on a host with hardware virtualisation (VMX/SVM) exposed to /dev/kvm."
fi

echo "smoke-kvm: building the agent, preparing kernel and image ..." >&2
export BANGER_AGENT
BANGER_AGENT=$("$REPO/scripts/build-agent.sh")
"$REPO/scripts/bench-pull.sh" --prepare-only minbase
deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
    mkdir -p "$CACHE/kernel-deb"
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    (cd "$CACHE/kernel-deb" && apt-get download -q "$pkg")
    deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb | head -n 1)
fi
"$B" kernel import cloud --deb "$deb" >/dev/null
"$B" image pull "oci:$CACHE/bench/oci-minbase:t" --name minbase --kernel-ref cloud -q >/dev/null

now() { date +%s.%N; }
ms() { python3 -c "print(round(($2 - $1) * 1000))"; }
median() { python3 -c 'import sys,statistics as s; print(round(s.median(float(x) for x in sys.stdin)))'; }
vm_field() { "$B" --json vm show "$1" | python3 -c "import json,sys; v=json.load(sys.stdin); print($2)"; }

# The network policy's destinations: a server on the host's 127.0.0.1, apt's mirror and
# pip's index (from this machine's configuration, never written here).
NET_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$NET_PORT" --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 &
SERVER_PID=$!
read -r MIRROR MIRROR_PORT INDEX INDEX_PORT < <(python3 - <<'EOF'
import glob, os, re, subprocess
from urllib.parse import urlsplit
def host_port(url):
    u = urlsplit(url)
    return u.hostname, u.port or (443 if u.scheme == "https" else 80)
mirror = None
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list") + glob.glob("/etc/apt/sources.list.d/*.sources")):
    try:
        m = re.search(r"^(?:URIs:|deb(?:\s+\[[^]]*\])?)\s+(\w+://\S+)", open(f).read(), re.M)
    except OSError:
        continue
    if m:
        mirror = host_port(m.group(1)); break
if not mirror:
    raise SystemExit("no apt mirror in /etc/apt")
index = os.environ.get("PIP_INDEX_URL")
if not index:
    out = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    index = next((l.split("=", 1)[1].strip("'") for l in out.splitlines() if l.split("=", 1)[0].endswith("index-url")), None)
if not index:
    from pip._internal.models.index import PyPI
    index = PyPI.url
print(*mirror, *host_port(index))
EOF
)
[ -n "$INDEX_PORT" ] || die "cannot read apt's mirror and pip's index from this machine's configuration"
# Connects from VM to HOST PORT (bash's /dev/tcp): `ok`, or how long the failure took (ms).
connect() {
    local t0 t1
    t0=$(now)
    if "$B" vm exec "$1" -- timeout 5 bash -c "exec 3<>/dev/tcp/$2/$3" >/dev/null 2>&1; then
        echo ok
    else
        t1=$(now); ms "$t0" "$t1"
    fi
}
fails_fast() { # VM HOST PORT WHAT
    local r; r=$(connect "$1" "$2" "$3")
    [ "$r" != ok ] || die "$4: $2:$3 is reachable"
    [ "$r" -lt 3000 ] || die "$4: $2:$3 failed only after $r ms (not at once)"
}
net_checks() {
    local vmm=$1 parent=${MIRROR#*.} addr
    "$B" vm create "n-$vmm" --image minbase --vmm "$vmm" --cpus 1 --memory 512MiB -q >/dev/null
    fails_fast "n-$vmm" 10.0.2.2 "$NET_PORT" "--vmm $vmm, default policy: the host's loopback"
    [ "$(connect "n-$vmm" "$MIRROR" "$MIRROR_PORT")" = ok ] ||
        die "--vmm $vmm, default policy: apt's mirror $MIRROR:$MIRROR_PORT is unreachable"
    "$B" vm delete "n-$vmm" --force >/dev/null
    [ "$parent" != "$MIRROR" ] && [[ $parent == *.* ]] || die "apt's mirror $MIRROR has no parent domain"
    "$B" vm create "a-$vmm" --image minbase --vmm "$vmm" --cpus 1 --memory 512MiB -q \
        --allow "*.$parent:$MIRROR_PORT" >/dev/null
    [ "$(connect "a-$vmm" "$MIRROR" "$MIRROR_PORT")" = ok ] ||
        die "--vmm $vmm, --allow '*.$parent:$MIRROR_PORT': $MIRROR is unreachable"
    ! "$B" vm exec "a-$vmm" -- getent hosts "$INDEX" >/dev/null ||
        die "--vmm $vmm, allow-list: $INDEX resolves in the guest"
    fails_fast "a-$vmm" "$INDEX" "$INDEX_PORT" "--vmm $vmm, allow-list: pip's index by name"
    addr=$(getent ahostsv4 "$INDEX" | awk 'NR == 1 {print $1}')
    fails_fast "a-$vmm" "$addr" "$INDEX_PORT" "--vmm $vmm, allow-list: pip's index by address"
    fails_fast "a-$vmm" 10.0.2.2 "$NET_PORT" "--vmm $vmm, allow-list: the host's loopback"
    "$B" vm logs --net "a-$vmm" | grep -q "tcp/$INDEX_PORT" ||
        die "--vmm $vmm: vm logs --net does not list the denied $addr:$INDEX_PORT"
    "$B" vm delete "a-$vmm" --force >/dev/null
}

# The guest's counter (/tmp/counter, +1 every 100 ms, by a detached loop started by
# start_counter) in VM.
counter() { "$B" vm exec "$1" -- cat /tmp/counter; }
start_counter() {
    "$B" vm exec "$1" -- sh -c 'setsid sh -c "i=0; while :; do i=\$((i+1)); echo \$i >/tmp/counter; sleep 0.1; done" </dev/null >/dev/null 2>&1 &'
    local deadline=$((SECONDS + 10))
    until "$B" vm exec "$1" -- test -s /tmp/counter 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || die "$1: the guest's counter did not start"
        sleep 0.2
    done
}
# Waits until VM's counter passes N (the guest runs), for at most 10 s.
counter_passes() { # VM N WHAT
    local deadline=$((SECONDS + 10))
    until [ "$(counter "$1" 2>/dev/null || echo 0)" -gt "$2" ]; do
        [ $SECONDS -lt $deadline ] || die "$3: the counter of $1 stays at $(counter "$1" || true)"
        sleep 0.2
    done
}

# Pause/resume, a snapshot of a running VM and forks of it (issue 21), with --vmm VMM.
snapshot_checks() {
    local vmm=$1 src="p-$1" snap="snap-$1" f1="f1-$1" f2="f2-$1"
    "$B" vm create "$src" --image minbase --vmm "$vmm" --cpus 1 --memory 512MiB -q >/dev/null
    start_counter "$src"
    # Paused: listed as such, the counter stands still, exec is a clear error.
    "$B" vm pause "$src" >/dev/null
    "$B" vm list | grep -w "$src" | grep -qw paused || die "--vmm $vmm: vm list does not say $src is paused"
    "$B" vm show "$src" | grep -qw paused || die "--vmm $vmm: vm show does not say $src is paused"
    if err=$("$B" vm exec "$src" -- true 2>&1); then
        die "--vmm $vmm: exec on a paused VM succeeded"
    fi
    echo "$err" | grep -qi paused || die "--vmm $vmm: exec on a paused VM fails without saying why: $err"
    sleep 1
    "$B" vm resume "$src" >/dev/null
    local c1 c2
    c1=$(counter "$src")
    sleep 1
    c2=$(counter "$src")
    [ $((c2 - c1)) -ge 5 ] || die "--vmm $vmm: the counter did not go on after resume ($c1 → $c2)"
    [ "$("$B" vm exec "$src" -- echo ok)" = ok ] || die "--vmm $vmm: exec after resume failed"
    local drift
    drift=$(python3 -c "print(abs($("$B" vm exec "$src" -- date +%s) - $(date +%s)))")
    [ "$drift" -le 1 ] || die "--vmm $vmm: the guest clock is ${drift}s off after resume"

    # A snapshot of the running VM: a file on its disk and the counter's process go into it.
    "$B" vm exec "$src" -- sh -c 'echo before-snapshot >/root/marker && sync'
    "$B" vm snapshot "$src" --name "$snap" >/dev/null
    "$B" snapshot list | grep -qw "$snap" || die "--vmm $vmm: snapshot list does not list $snap"
    "$B" snapshot show "$snap" | grep -qw "$src" || die "--vmm $vmm: snapshot show does not name the source $src"
    [ "$("$B" vm exec "$src" -- echo ok)" = ok ] || die "--vmm $vmm: the source does not run on after its snapshot"

    # Forks: the file and the running process are there, identities and writes are their own.
    "$B" vm create "$f1" --from "$snap" -q >/dev/null
    "$B" vm create "$f2" --from "$snap" -q >/dev/null
    local f
    for f in "$f1" "$f2"; do
        [ "$("$B" vm exec "$f" -- cat /root/marker)" = before-snapshot ] ||
            die "--vmm $vmm: $f lacks the file written before the snapshot"
        counter_passes "$f" "$(counter "$f")" "--vmm $vmm: $f's copy of the source's process"
        [ "$("$B" vm exec "$f" -- hostname)" = "$f" ] || die "--vmm $vmm: $f's hostname is not its name"
    done
    local r0 r1 r2
    r0=$("$B" vm exec "$src" -- sh -c 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n"')
    r1=$("$B" vm exec "$f1" -- sh -c 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n"')
    r2=$("$B" vm exec "$f2" -- sh -c 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n"')
    [ "$r0" != "$r1" ] && [ "$r1" != "$r2" ] && [ "$r0" != "$r2" ] ||
        die "--vmm $vmm: forks read the same random bytes ($r0 / $r1 / $r2)"
    "$B" vm exec "$f1" -- sh -c 'echo f1 >/root/only-f1 && sync'
    for f in "$src" "$f2"; do
        "$B" vm exec "$f" -- test ! -e /root/only-f1 || die "--vmm $vmm: $f1's write shows in $f"
    done
    # The source goes; the snapshot and its forks stay.
    "$B" vm delete "$src" --force >/dev/null
    [ "$("$B" vm exec "$f1" -- echo ok)" = ok ] || die "--vmm $vmm: $f1 broke with its source deleted"
    "$B" vm run --from "$snap" --rm -q -- true || die "--vmm $vmm: vm run --from $snap -- true failed"
    [ "$("$B" vm run --from "$snap" --rm -q -- cat /root/marker)" = before-snapshot ] ||
        die "--vmm $vmm: vm run --from $snap does not see the snapshot's disk"
    "$B" vm delete "$f1" --force >/dev/null
    "$B" vm delete "$f2" --force >/dev/null
}

# `vm run --from SNAP --rm -- true`, RUNS times: the median in ms (the snapshot's VM stays).
from_snapshot_timing() {
    local vmm=$1 snap="timing-$1" runs=()
    "$B" vm create "ts-$vmm" --image minbase --vmm "$vmm" --cpus 1 --memory 512MiB -q >/dev/null
    "$B" vm snapshot "ts-$vmm" --name "$snap" >/dev/null
    "$B" vm delete "ts-$vmm" --force >/dev/null
    local i r0 r1
    for i in $(seq "$RUNS"); do
        r0=$(now); "$B" vm run --from "$snap" --rm -q -- true; r1=$(now)
        runs+=("$(ms "$r0" "$r1")")
    done
    "$B" snapshot delete "$snap" >/dev/null
    "$B" snapshot list | grep -qw "$snap" && die "--vmm $vmm: snapshot delete left $snap listed"
    printf '%s\n' "${runs[@]}" | median
}

# Warm starts (issue 21) with --vmm VMM: `image warm` makes the image's ready-snapshot, a VM
# of the same settings starts from it (`vm show`: warm) as its own machine, and restarted it
# boots its own disks; prints the median of RUNS warm `vm run --rm -- true` in ms.
warm_checks() {
    local vmm=$1 w="w-$1" i r0 r1 runs=()
    local small=(--image minbase --vmm "$vmm" --cpus 1 --memory 512MiB)
    "$B" image warm minbase --vmm "$vmm" --cpus 1 --memory 512MiB -q >/dev/null ||
        die "--vmm $vmm: image warm failed"
    "$B" snapshot list | grep -q "minbase@warm-" || die "--vmm $vmm: no ready-snapshot listed"
    # banger's SSH key made anew after the snapshot: the warm VM's identity call authorizes it.
    rm -f "$XDG_STATE_HOME/banger/ssh/id_ed25519" "$XDG_STATE_HOME/banger/ssh/id_ed25519.pub"
    "$B" vm create "$w" "${small[@]}" --warm -q >/dev/null
    [ "$(vm_field "$w" 'v.get("start")')" = warm ] || die "--vmm $vmm: $w did not start warm"
    [ "$("$B" vm exec "$w" -- hostname)" = "$w" ] || die "--vmm $vmm: a warm VM's hostname is not its name"
    [ "$("$B" vm exec "$w" -- cat /etc/hostname)" = "$w" ] || die "--vmm $vmm: a warm VM's /etc/hostname is not its name"
    "$B" vm exec "$w" -- cat /root/.ssh/authorized_keys |
        grep -qxF "$(cat "$XDG_STATE_HOME/banger/ssh/id_ed25519.pub")" ||
        die "--vmm $vmm: a warm VM did not get banger's new SSH key authorized"
    "$B" vm exec "$w" -- sh -c 'echo kept >/root/marker && sync'
    "$B" vm stop "$w" >/dev/null
    "$B" vm start "$w" >/dev/null
    [ "$(vm_field "$w" 'v.get("start")')" = cold ] || die "--vmm $vmm: a restarted warm VM did not boot"
    [ "$("$B" vm exec "$w" -- cat /root/marker)" = kept ] || die "--vmm $vmm: a warm VM lost its disk on restart"
    "$B" vm delete "$w" --force >/dev/null
    for i in $(seq "$RUNS"); do
        r0=$(now); "$B" vm run "${small[@]}" --warm --rm -q -- true; r1=$(now)
        runs+=("$(ms "$r0" "$r1")")
    done
    printf '%s\n' "${runs[@]}" | median
}

declare -A READY RUN EXEC FROM WARM
FC=${BANGER_FIRECRACKER:-$(command -v firecracker)}
for vmm in firecracker qemu; do
    echo "smoke-kvm: --vmm $vmm: lifecycle ..." >&2
    "$B" daemon stop >/dev/null 2>&1 || true
    export BANGER_FIRECRACKER=$FC
    # The VM scenario: create, exec, stop, start, exec, delete.
    "$B" vm create "s-$vmm" --image minbase --vmm "$vmm" --cpus 1 --memory 512MiB --cold -q >/dev/null
    got=$(vm_field "s-$vmm" 'v.get("vmm")' 2>/dev/null || true)
    [ -z "$got" ] || [ "$got" = "$vmm" ] || die "--vmm $vmm: vm show says the VMM is $got"
    [ "$("$B" vm exec "s-$vmm" -- echo ok)" = ok ] || die "--vmm $vmm: exec after create failed"
    "$B" vm stop "s-$vmm" >/dev/null
    "$B" vm start "s-$vmm" >/dev/null
    [ "$("$B" vm exec "s-$vmm" -- echo ok)" = ok ] || die "--vmm $vmm: exec after restart failed"
    # The guest is hostile: the boot's agent secret left the guest's file systems, and a
    # restarted daemon authenticates the running agent with the secret it kept.
    [ "$("$B" vm exec "s-$vmm" -- sh -c 'test -e /banger && echo leaked || echo ok')" = ok ] ||
        die "--vmm $vmm: /banger (the agent secret's directory) is visible in the guest"
    "$B" daemon stop >/dev/null
    [ "$("$B" vm exec "s-$vmm" -- echo ok)" = ok ] || die "--vmm $vmm: exec after a daemon restart failed"
    # What programs expect of PID 1 (the agent, on minbase).
    [ "$("$B" vm exec "s-$vmm" -- bash -c 'cat <(echo ok)')" = ok ] || die "--vmm $vmm: no /dev/fd"
    "$B" vm exec "s-$vmm" -- cat /sys/fs/cgroup/cgroup.subtree_control | grep -qw memory ||
        die "--vmm $vmm: no cgroup2 with the memory controller delegated"
    # The modules disk (vdd): a module loaded on demand, by banger's modprobe and by the kernel.
    "$B" vm exec "s-$vmm" -- bash -c 'modprobe veth && mount -t vfat none /mnt 2>/dev/null; grep -c "^veth \|^vfat " /proc/modules' |
        grep -qx 2 || die "--vmm $vmm: modules do not load on demand from the modules disk"
    "$B" vm delete "s-$vmm" --force >/dev/null
    # The sandbox scenario: a one-shot command in a throw-away VM.
    "$B" vm run --image minbase --vmm "$vmm" --rm --cold -q -- true || die "--vmm $vmm: vm run -- true failed"
    echo "smoke-kvm: --vmm $vmm: network policy ..." >&2
    net_checks "$vmm"
    # The QEMU side of snapshots is checked by the QEMU tests here (software emulation).
    FROM[$vmm]=n/a
    if [ "$vmm" = firecracker ]; then
        echo "smoke-kvm: --vmm $vmm: pause, resume, snapshot and forks ..." >&2
        snapshot_checks "$vmm"
        "$B" snapshot delete "snap-$vmm" >/dev/null
        FROM[$vmm]="$(from_snapshot_timing "$vmm") ms"
    fi

    echo "smoke-kvm: --vmm $vmm: warm starts ..." >&2
    WARM[$vmm]="$(warm_checks "$vmm") ms"

    echo "smoke-kvm: --vmm $vmm: $RUNS timing samples ..." >&2
    ready=() run=() exec=()
    for i in $(seq "$RUNS"); do
        t0=$(now); "$B" vm create "t-$vmm-$i" --image minbase --vmm "$vmm" --cpus 1 --memory 512MiB --cold -q >/dev/null; t1=$(now)
        ready+=("$(ms "$t0" "$t1")")
        e0=$(now); "$B" vm exec "t-$vmm-$i" -- true; e1=$(now)
        exec+=("$(ms "$e0" "$e1")")
        "$B" vm delete "t-$vmm-$i" --force >/dev/null
        r0=$(now); "$B" vm run --image minbase --vmm "$vmm" --rm --cpus 1 --memory 512MiB --cold -q -- true; r1=$(now)
        run+=("$(ms "$r0" "$r1")")
    done
    READY[$vmm]=$(printf '%s\n' "${ready[@]}" | median)
    RUN[$vmm]=$(printf '%s\n' "${run[@]}" | median)
    EXEC[$vmm]=$(printf '%s\n' "${exec[@]}" | median)
done

echo
echo "Medians of $RUNS runs, 1 vCPU, 512 MiB, minbase image ($(uname -r) host):"
echo
echo "| | Firecracker | QEMU + KVM |"
echo "|---|---|---|"
echo "| create → ready | ${READY[firecracker]} ms | ${READY[qemu]} ms |"
echo "| \`vm run --rm -- true\`, cold | ${RUN[firecracker]} ms | ${RUN[qemu]} ms |"
echo "| \`vm run --rm -- true\`, warm (ready-snapshot) | ${WARM[firecracker]} | ${WARM[qemu]} |"
echo "| \`vm exec -- true\` round trip | ${EXEC[firecracker]} ms | ${EXEC[qemu]} ms |"
echo "| \`vm run --from SNAP --rm -- true\` | ${FROM[firecracker]} | ${FROM[qemu]} |"
