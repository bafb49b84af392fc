#!/usr/bin/env bash
# Sets banger up and does its main job: turns an OCI image into a bootable microVM image.
#
# Usage: scripts/quickstart.sh [REF]     (default: debian:bookworm)
#   REF is anything `banger image pull` takes: a registry reference, oci:DIR[:TAG],
#   oci-archive:FILE or docker-archive:FILE.
#
# Builds banger (release) and installs `banger` and `bangerd` into ~/.cargo/bin, checks the
# machine, finds a kernel (the host's, else Debian's cloud kernel package, unpacked, not
# installed) and pulls REF.
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${1:-debian:bookworm}

cargo build --release --locked -p banger
BIN=${CARGO_HOME:-$HOME/.cargo}/bin
mkdir -p "$BIN"
install -m 0755 target/release/banger target/release/bangerd "$BIN/"
export PATH="$BIN:$PATH"
echo "installed banger and bangerd into $BIN"

banger doctor || true

release=$(uname -r)
if [[ -r /boot/vmlinuz-$release && -d /lib/modules/$release ]]; then
  KERNEL=/boot/vmlinuz-$release
  MODULES=/lib/modules/$release
else
  kdir=${XDG_CACHE_HOME:-$HOME/.cache}/banger/quickstart-kernel
  if [[ ! -f $kdir/vmlinuz ]]; then
    echo "no host kernel in /boot: unpacking Debian's cloud kernel package into $kdir"
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    [[ -n $pkg ]] || { echo "cannot find linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -q "$pkg" && dpkg-deb -x ./*.deb root)
    mkdir -p "$kdir.new"
    cp "$tmp"/root/boot/vmlinuz-* "$kdir.new/vmlinuz"
    cp -a "$tmp"/root/lib/modules/* "$kdir.new/modules"
    rm -rf "$tmp" "$kdir"
    mv "$kdir.new" "$kdir"
  fi
  KERNEL=$kdir/vmlinuz
  MODULES=$kdir/modules
fi

banger image pull "$REF" --kernel "$KERNEL" --modules "$MODULES"
banger image list
