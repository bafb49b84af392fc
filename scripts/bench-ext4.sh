#!/usr/bin/env bash
# Benchmark banger's ext4 writer (examples/tar2ext4) against the classic pipeline
# `tar -x` + `mkfs.ext4 -d` on a Debian minbase root filesystem (~200 MB tar).
#
# Usage: scripts/bench-ext4.sh [--prepare-only]
#   N=3                 runs per tool (median reported)
#   BANGER_TEST_CACHE   cache dir (default /var/tmp/banger-test-cache); the rootfs tar
#                       is built once into $BANGER_TEST_CACHE/bench/ with debootstrap
#   BENCH_ENFORCE=1     exit non-zero when a target (>=3x faster, RSS < 64 MiB) is missed
# Needs (Debian): debootstrap tar e2fsprogs time, plus a Rust toolchain.
set -euo pipefail

N=${N:-3}
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
BENCH=$CACHE/bench
REPO=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
ROOTFS_TAR=$BENCH/rootfs.tar
TIME=/usr/bin/time

die() { echo "bench-ext4: $*" >&2; exit 1; }

need() { # need TOOL PACKAGE
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ||
        die "missing $1: apt-get install $2"
}
export PATH=$PATH:/usr/sbin:/sbin
need debootstrap debootstrap
need tar tar
need mkfs.ext4 e2fsprogs
need e2fsck e2fsprogs
need dumpe2fs e2fsprogs
need flock util-linux

# The first Debian mirror apt is configured with (deb822 or one-line format).
mirror() {
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# Build the rootfs tar once; lock + temp dir + rename so parallel or killed runs never
# leave a half-written tar in the cache.
prepare_rootfs() {
    mkdir -p "$BENCH"
    exec 9>"$BENCH/.lock"
    flock 9
    if [ ! -s "$ROOTFS_TAR" ]; then
        local tmp
        tmp=$(mktemp -d "$BENCH/.build.XXXXXX")
        echo "bench-ext4: debootstrap --variant=minbase bookworm from $(mirror) (once)" >&2
        debootstrap --variant=minbase bookworm "$tmp/root" "$(mirror)" >"$tmp/debootstrap.log" 2>&1 ||
            { tail -n 30 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; die "debootstrap failed"; }
        tar --numeric-owner --xattrs --xattrs-include='*' -cf "$tmp/rootfs.tar" -C "$tmp/root" .
        mv "$tmp/rootfs.tar" "$ROOTFS_TAR"
        rm -rf "$tmp"
    fi
    flock -u 9
}

prepare_rootfs
echo "bench-ext4: rootfs tar $(du -m "$ROOTFS_TAR" | cut -f1) MiB at $ROOTFS_TAR" >&2
[ "${1:-}" = "--prepare-only" ] && exit 0
[ -x "$TIME" ] || die "missing $TIME: apt-get install time"

(cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --quiet --release --example tar2ext4 -p banger-ext4)
TAR2EXT4=$TARGET/release/examples/tar2ext4
[ -x "$TAR2EXT4" ] || die "no $TAR2EXT4 after build"

# Outputs live next to the cache (same filesystem for both tools).
WORK=$(mktemp -d "$BENCH/run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

# Image used bytes from the superblock: (blocks - free blocks) * block size.
used_mib() {
    dumpe2fs -h "$1" 2>/dev/null | awk -F: '
        /^Block count/ {c = $2} /^Free blocks/ {f = $2} /^Block size/ {b = $2}
        END {printf "%.1f", (c - f) * b / 1048576}'
}

# timed NAME CMD...: appends "wall rss_kib" for one run to $WORK/NAME.times.
timed() {
    local name=$1
    shift
    "$TIME" -f '%e %M' -o "$WORK/$name.one" "$@" >"$WORK/$name.log" 2>&1 ||
        { cat "$WORK/$name.log" >&2; die "$name run failed"; }
    cat "$WORK/$name.one" >>"$WORK/$name.times"
}

OURS=$WORK/ours.img
THEIRS=$WORK/mkfs.img
# Size the baseline like ours: first produce our image (auto-sized), reuse its size.
"$TAR2EXT4" "$ROOTFS_TAR" "$OURS" >/dev/null
SIZE_KIB=$(($(stat -c %s "$OURS") / 1024))
rm -f "$OURS"
export ROOTFS_TAR OURS THEIRS TAR2EXT4 SIZE_KIB WORK

for i in $(seq "$N"); do
    echo "bench-ext4: run $i/$N" >&2
    rm -f "$OURS"
    timed ours bash -c '"$TAR2EXT4" "$ROOTFS_TAR" "$OURS" && sync'
    rm -rf "$WORK/tree" "$THEIRS"
    sync
    timed mkfs bash -c 'mkdir "$WORK/tree" &&
        tar -x --numeric-owner --xattrs --xattrs-include="*" -f "$ROOTFS_TAR" -C "$WORK/tree" &&
        mkfs.ext4 -q -F -d "$WORK/tree" "$THEIRS" "${SIZE_KIB}k" && sync'
done

OURS_WALL=$(cut -d' ' -f1 "$WORK/ours.times" | median)
OURS_RSS=$(cut -d' ' -f2 "$WORK/ours.times" | median)
MKFS_WALL=$(cut -d' ' -f1 "$WORK/mkfs.times" | median)
MKFS_RSS=$(cut -d' ' -f2 "$WORK/mkfs.times" | median)
SPEEDUP=$(awk -v a="$MKFS_WALL" -v b="$OURS_WALL" 'BEGIN {printf "%.2f", a / (b > 0 ? b : 0.001)}')

echo
echo "rootfs.tar: $(du -m "$ROOTFS_TAR" | cut -f1) MiB, image size: $((SIZE_KIB / 1024)) MiB, N=$N (median)"
printf '%-28s %8s %14s %16s %9s\n' tool "wall s" "peak RSS MiB" "image used MiB" speed-up
printf '%-28s %8s %14.1f %16s %9s\n' "tar2ext4 (banger-ext4)" "$OURS_WALL" \
    "$(awk -v k="$OURS_RSS" 'BEGIN {print k / 1024}')" "$(used_mib "$OURS")" "${SPEEDUP}x"
printf '%-28s %8s %14.1f %16s %9s\n' "tar -x + mkfs.ext4 -d" "$MKFS_WALL" \
    "$(awk -v k="$MKFS_RSS" 'BEGIN {print k / 1024}')" "$(used_mib "$THEIRS")" "1.00x"
echo
echo "all runs (wall s, peak RSS KiB):"
echo "  tar2ext4: $(tr '\n' ';' <"$WORK/ours.times")"
echo "  mkfs:     $(tr '\n' ';' <"$WORK/mkfs.times")"
echo

status=0
for img in "$OURS" "$THEIRS"; do
    if e2fsck -fn "$img" >"$WORK/fsck.log" 2>&1; then
        echo "e2fsck -fn $(basename "$img"): clean"
    else
        echo "e2fsck -fn $(basename "$img"): FAILED"
        tail -n 20 "$WORK/fsck.log"
        status=1
    fi
done

fast=$(awk -v s="$SPEEDUP" 'BEGIN {print (s >= 3) ? "yes" : "no"}')
small=$((OURS_RSS < 64 * 1024 ? 1 : 0))
echo "target >=3x faster: $fast; target peak RSS < 64 MiB: $([ $small = 1 ] && echo yes || echo no)"
if [ "${BENCH_ENFORCE:-0}" = 1 ] && { [ "$fast" != yes ] || [ $small != 1 ]; }; then
    status=1
fi
exit $status
