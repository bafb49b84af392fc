#!/usr/bin/env bash
# Sets banger up and does its main job: turns an OCI image into a bootable microVM image.
#
# Usage: scripts/quickstart.sh [REF]     (default: debian:bookworm)
#   REF is anything `banger image pull` takes: a registry reference, oci:DIR[:TAG],
#   oci-archive:FILE or docker-archive:FILE.
#
# Builds banger (release) and installs `banger` and `bangerd` into ~/.cargo/bin, checks the
# machine, imports a kernel into banger's kernel store (the host's, else Debian's cloud
# kernel package) and pulls REF.
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

# A kernel in banger's kernel store: the host's own, else Debian's cloud kernel package
# (downloaded, read by banger, never installed).
if ! banger kernel show quickstart >/dev/null 2>&1; then
  if [[ -r /boot/vmlinuz-$(uname -r) && -d /lib/modules/$(uname -r) ]]; then
    banger kernel import quickstart --host
  else
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    [[ -n $pkg ]] || { echo "cannot find linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -q "$pkg" 2>/dev/null)
    banger kernel import quickstart --deb "$tmp"/*.deb
    rm -rf "$tmp"
  fi
fi

banger image pull "$REF" --kernel-ref quickstart
banger image list
