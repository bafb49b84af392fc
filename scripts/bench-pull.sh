#!/usr/bin/env bash
# Benchmark `banger image pull` against the classic pipeline
# `skopeo copy` + `umoci unpack` + `mkfs.ext4 -d` + `cp` of the kernel triple + sync, both
# pulling the same images from the same local docker-registry, in the same run.
#
# Images (built once with debootstrap into the bench cache, pushed as one gzip layer):
#   minbase  debootstrap --variant=minbase bookworm                               (~200 MB)
#   dev      minbase + systemd openssh-server python3 build-essential git         (~800 MB)
#
# Usage: scripts/bench-pull.sh [--prepare-only] [IMAGE...]   (default: minbase dev)
#   BANGER_TEST_CACHE   cache dir (default /var/tmp/banger-test-cache)
#   BENCH_RUNS=N        runs per measurement, the median is shown (default 3)
#   BENCH_ENFORCE=1     exit non-zero when a target is missed (cold >= 5x faster,
#                       warm pull of a converted digest < 0.1 s, the warm image adds
#                       < 1 MiB to the state dir, daemon peak RSS < 256 MiB)
# Every pull stages a real kernel triple: Debian's cloud kernel (vmlinuz + modules/, the
# package the tests use, fetched once into the cache) and a 32 MiB initrd. The classic
# pipeline copies the same triple into its image directory (`cp`, `cp -a` for modules/),
# as the original Go tool's StageBootArtifacts did; its rootfs-only time is shown too.
# Needs (Debian): debootstrap docker-registry skopeo umoci e2fsprogs time curl dpkg-deb,
# A run of both images takes about ten minutes, most of it waiting (see settle).
set -euo pipefail

CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
BENCH=$CACHE/bench
REPO=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
TIME=/usr/bin/time
export PATH=$PATH:/usr/sbin:/sbin

die() { echo "bench-pull: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing $1: apt-get install $2"; }
need debootstrap debootstrap
need docker-registry docker-registry
need skopeo skopeo
need umoci umoci
need mkfs.ext4 e2fsprogs
need curl curl
[ -x "$TIME" ] || die "missing $TIME: apt-get install time"

DEV_PACKAGES=systemd,openssh-server,python3,build-essential,git

mirror() {
    local m=""
    [ -f /etc/apt/sources.list.d/debian.sources ] &&
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    [ -z "$m" ] && [ -f /etc/apt/sources.list ] &&
        m=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    echo "${m:-http://deb.debian.org/debian}"
}

# prepare NAME: an OCI layout $BENCH/oci-NAME (tag t) from a debootstrap tree, built
# once under a lock and published by rename so a killed run never leaves half a cache.
prepare() {
    local name=$1 layout=$BENCH/oci-$1
    mkdir -p "$BENCH"
    exec 9>"$BENCH/.lock-$name"
    flock 9
    if [ ! -f "$layout/index.json" ]; then
        local tmp tar include=()
        tmp=$(mktemp -d "$BENCH/.build-$name.XXXXXX")
        if [ "$name" = minbase ] && [ -s "$BENCH/rootfs.tar" ]; then
            tar=$BENCH/rootfs.tar # shared with bench-ext4.sh
        else
            [ "$name" = dev ] && include=(--include="$DEV_PACKAGES")
            echo "bench-pull: debootstrap $name from $(mirror) (once; minutes)" >&2
            debootstrap --variant=minbase "${include[@]}" bookworm "$tmp/root" "$(mirror)" \
                >"$tmp/debootstrap.log" 2>&1 ||
                { tail -n 30 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; die "debootstrap failed"; }
            tar=$tmp/rootfs.tar
            tar --numeric-owner --xattrs --xattrs-include='*' -cf "$tar" -C "$tmp/root" .
            rm -rf "$tmp/root"
        fi
        umoci init --layout "$tmp/layout" >/dev/null
        umoci new --image "$tmp/layout:t" >/dev/null
        umoci raw add-layer --image "$tmp/layout:t" "$tar" >/dev/null
        mv "$tmp/layout" "$layout"
        rm -rf "$tmp"
    fi
    flock -u 9
}

IMAGES=()
PREPARE_ONLY=0
for a in "$@"; do
    case $a in
    --prepare-only) PREPARE_ONLY=1 ;;
    minbase | dev) IMAGES+=("$a") ;;
    *) die "unknown argument $a" ;;
    esac
done
[ ${#IMAGES[@]} -eq 0 ] && IMAGES=(minbase dev)
for img in "${IMAGES[@]}"; do prepare "$img"; done
[ $PREPARE_ONLY = 1 ] && exit 0

(cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --quiet --release -p banger)
BANGER=$TARGET/release/banger
export BANGER_DAEMON=$TARGET/release/bangerd

WORK=$(mktemp -d "$BENCH/run.XXXXXX")
REG_PID=""
RUN_NO=0
cleanup() {
    [ -n "${BANGER_PID:-}" ] && kill "$BANGER_PID" 2>/dev/null
    [ "$RUN_NO" -gt 0 ] && { "$BANGER" daemon stop >/dev/null 2>&1 || true; }
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# A registry on a free loopback port.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT}
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null || die "registry did not start: $(tail "$WORK/registry.log")"
REG=127.0.0.1:$PORT

# The kernel triple every pull stages: Debian's cloud kernel, as the tests use it (same
# cache dir, same lock), and an initrd (its content does not matter for a pull).
kernel_triple() {
    local root=$CACHE/kernel pkg tree
    mkdir -p "$root"
    exec 8>"$root/.lock"
    flock 8
    tree=$(ls -d "$root"/linux-image-*-cloud-amd64 2>/dev/null | head -n 1)
    if [ -z "$tree" ] || [ ! -f "$tree/.complete" ]; then
        pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
        [ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 (apt-get update?)"
        local tmp
        tmp=$(mktemp -d "$root/.download-XXXXXX")
        (cd "$tmp" && apt-get download -q "$pkg" >/dev/null) || die "apt-get download $pkg failed"
        dpkg-deb -x "$tmp"/*.deb "$tmp/tree" && touch "$tmp/tree/.complete"
        rm -rf "${root:?}/$pkg"
        mv "$tmp/tree" "$root/$pkg"
        rm -rf "$tmp"
        tree=$root/$pkg
    fi
    flock -u 8
    KERNEL=$(ls "$tree"/boot/vmlinuz-* | head -n 1)
    MODULES=$(ls -d "$tree"/lib/modules/* | head -n 1)
    INITRD=$BENCH/initrd.img
    [ -s "$INITRD" ] || { head -c $((32 << 20)) /dev/urandom >"$INITRD.tmp" && mv "$INITRD.tmp" "$INITRD"; }
}
kernel_triple
KARGS=(--kernel "$KERNEL" --initrd "$INITRD" --modules "$MODULES")
du_bytes() { du -s -B1 "$1" | awk '{print $1}'; }

# This root filesystem has no journal, and ext4 then scans past every inode freed in the
# last minute (six while its inode table is dirty) whenever it allocates one: a step run
# right after tens of thousands of files were removed (an unpacked bundle) creates its own
# files several times slower, and leaving every run's output in place slows the later runs
# instead (this VM writes slower the more it has written). So each run removes its outputs
# at its end, syncs, and waits out that minute before the next (BENCH_SETTLE seconds).
settle() {
    rm -rf "$WORK/r$RUN_NO" "$WORK/b$RUN_NO"
    sync
    sleep "${BENCH_SETTLE:-65}"
}
fresh_banger() { # a new, empty banger instance
    [ "$RUN_NO" -gt 0 ] && { "$BANGER" daemon stop >/dev/null 2>&1 || true; }
    RUN_NO=$((RUN_NO + 1))
    local r=$WORK/r$RUN_NO
    export XDG_STATE_HOME=$r/state XDG_CACHE_HOME=$r/cache XDG_RUNTIME_DIR=$r/run
    "$BANGER" daemon start >/dev/null
}

secs() { # secs CMD...: wall seconds of one run
    "$TIME" -f '%e' -o "$WORK/t" "$@" >"$WORK/cmd.log" 2>&1 || { cat "$WORK/cmd.log" >&2; die "failed: $*"; }
    cat "$WORK/t"
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

load() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_BEFORE=$(load)
RUNS=${BENCH_RUNS:-3}
ROWS=() RUNS_SEEN=()
STATUS=0
for img in "${IMAGES[@]}"; do
    # Not in the last run's (removed) runtime dir, which skopeo would warn about.
    env -u XDG_RUNTIME_DIR skopeo copy --quiet --dest-tls-verify=false "oci:$BENCH/oci-$img:t" "docker://$REG/$img:t"
    ref=$REG/$img:t

    colds=() warms=() reconverts=() bases=() rootfs_bases=() added=() rss_kib=0
    for _ in $(seq "$RUNS"); do
        fresh_banger
        colds+=("$(secs "$BANGER" image pull "$ref" --name cold "${KARGS[@]}" --quiet)")
        size=$("$BANGER" --json image show cold | python3 -c 'import json,sys; print(json.load(sys.stdin)["size_bytes"])')
        rootfs=$("$BANGER" --json image show cold | python3 -c 'import json,sys; print(json.load(sys.stdin)["rootfs_path"])')
        e2fsck -fn "$rootfs" >"$WORK/fsck.log" 2>&1 || { tail "$WORK/fsck.log"; STATUS=1; }

        # Baseline: skopeo + umoci + mkfs.ext4 -d (same size) + sync, then the kernel
        # triple copied into the image dir + sync. Timed at both syncs, so one run gives
        # the rootfs-only figure and the whole (the second sync flushes only the triple).
        # Right after banger's cold pull, before anything is deleted (see settle).
        export REF=$ref B=$WORK/b$RUN_NO WORK SIZE_KIB=$((size / 1024)) KERNEL INITRD MODULES
        mkdir "$B"
        bash -c 'now() { date +%s.%N; }
            t0=$(now) &&
            skopeo copy --quiet --src-tls-verify=false "docker://$REF" "oci:$B/oci:t" &&
            umoci unpack --image "$B/oci:t" "$B/bundle" >/dev/null &&
            mkfs.ext4 -q -F -d "$B/bundle/rootfs" "$B/img" "${SIZE_KIB}k" && sync &&
            t1=$(now) &&
            cp "$KERNEL" "$B/kernel" && cp "$INITRD" "$B/initrd.img" &&
            cp -a "$MODULES" "$B/modules" && sync &&
            echo "$t0 $t1 $(now)" >"$WORK/t"' >"$WORK/cmd.log" 2>&1 ||
            { cat "$WORK/cmd.log" >&2; die "the classic pipeline failed"; }
        read -r t0 t1 t2 <"$WORK/t"
        rootfs_bases+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')")
        bases+=("$(awk -v a="$t0" -v b="$t2" 'BEGIN {printf "%.2f", b - a}')")

        # Warm, same digest: the converted rootfs is reused.
        before=$(du_bytes "$XDG_STATE_HOME")
        warms+=("$(secs "$BANGER" image pull "$ref" --name warm "${KARGS[@]}" --quiet)")
        # What the second image of one kernel costs on disk (kernel files are shared).
        added+=("$(( ($(du_bytes "$XDG_STATE_HOME") - before) / 1024 ))")
        # Blobs cached but no converted image left: measures flatten + write alone.
        "$BANGER" image delete cold >/dev/null
        "$BANGER" image delete warm >/dev/null
        reconverts+=("$(secs "$BANGER" image pull "$ref" --name again "${KARGS[@]}" --quiet)")
        pid=$("$BANGER" --json daemon status | python3 -c 'import json,sys; print(json.load(sys.stdin)["daemon"]["pid"])')
        run_rss=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
        [ "$run_rss" -gt "$rss_kib" ] && rss_kib=$run_rss
        "$BANGER" daemon stop >/dev/null
        settle
    done
    cold=$(median "${colds[@]}") warm=$(median "${warms[@]}")
    reconvert=$(median "${reconverts[@]}") base=$(median "${bases[@]}")
    rootfs_base=$(median "${rootfs_bases[@]}") add_kib=$(median "${added[@]}")

    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / (b > 0 ? b : 0.001)}'; }
    speedup=$(ratio "$base" "$cold") rootfs_speedup=$(ratio "$rootfs_base" "$cold")
    RUNS_SEEN+=("$img: cold ${colds[*]}; baseline ${bases[*]}; rootfs-only ${rootfs_bases[*]}")
    ROWS+=("$(printf '| %-7s | %5s | %5s | %9s | %9s | %8s | %8s | %11s | %8s | %7s |' "$img" "$cold" "$warm" "$add_kib" "$reconvert" "$base" "${speedup}x" "$rootfs_base" "${rootfs_speedup}x" "$((rss_kib / 1024))")")
    if [ "${BENCH_ENFORCE:-0}" = 1 ]; then
        awk -v s="$speedup" -v w="$warm" -v a="$add_kib" -v r="$rss_kib" 'BEGIN {exit !(s >= 5 && w < 0.1 && a < 1024 && r < 262144)}' || STATUS=1
    fi
done

echo
echo "banger image pull vs skopeo copy + umoci unpack + mkfs.ext4 -d + cp of the kernel triple"
echo "(wall seconds, median of $RUNS runs; both stage the Debian cloud kernel, its"
echo "$(du -sh "$MODULES" | cut -f1) modules/ tree and a 32 MiB initrd)"
echo
echo "| image   | cold  | warm  | warm +KiB | reconvert | baseline | speed-up | rootfs-only | speed-up | RSS MiB |"
echo "| ------- | ----: | ----: | --------: | --------: | -------: | -------: | ----------: | -------: | ------: |"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
echo "cold: empty cache; warm: new name, same digest (rootfs and kernel files shared); warm +KiB:"
echo "what that second image adds to the state dir (du); reconvert: blobs cached, rootfs rebuilt;"
echo "baseline: the classic pipeline from the same registry, kernel triple copied into its image"
echo "dir (cp, cp -a) and synced; rootfs-only: the same pipeline up to its rootfs sync, without"
echo "the triple (banger's cold pull still stages it); RSS: daemon peak (largest of the runs)."
echo "targets: cold >= 5x faster than baseline, warm < 0.1 s and < 1 MiB, daemon peak RSS < 256 MiB"
echo "every run (s): $(printf '%s | ' "${RUNS_SEEN[@]}" | sed 's/ | $//')"
echo "load average (1, 5, 15 min): $LOAD_BEFORE before, $(load) after ($(nproc) CPUs)"
exit $STATUS
