#!/usr/bin/env bash
# Sets banger up and does its main job: turns an OCI image into a bootable microVM image
# and runs a disposable VM from it.
#
# Usage: scripts/quickstart.sh [REF]     (default: debian:bookworm)
#   REF is anything `banger image pull` takes: a registry reference, oci:DIR[:TAG],
#   oci-archive:FILE or docker-archive:FILE.
#
# Installs QEMU, passt and nftables from Debian when missing (root or sudo), builds banger
# (release) and installs `banger` and `bangerd` into ~/.cargo/bin, checks the
# machine, imports a kernel into banger's kernel store (the host's, else Debian's cloud
# kernel package), pulls REF, and ends inside a disposable VM booted from it, with this
# repository copied in (`banger vm run`).
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${1:-debian:bookworm}

# What VMs need at run time, from Debian: QEMU, and for the guest network pasta (passt) and
# nftables (the network policy's rules, enforced outside the guest).
missing=()
for t in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils pasta:passt nft:nftables; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (apt-get)"
  SUDO=(); [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cargo build --release --locked -p banger
BIN=${CARGO_HOME:-$HOME/.cargo}/bin
mkdir -p "$BIN"
install -m 0755 target/release/banger target/release/bangerd "$BIN/"
# The guest agent (static; PID 1 of every VM) goes next to bangerd, where it looks.
scripts/build-agent.sh --install "$BIN" >/dev/null
export PATH="$BIN:$PATH"
echo "installed banger, bangerd and banger-agent into $BIN"
# The vsock backend of the agent channel (without it banger falls back to virtio-serial).
command -v vhost-device-vsock >/dev/null || cargo install --locked vhost-device-vsock

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

banger image show quickstart >/dev/null 2>&1 ||
  banger image pull "$REF" --name quickstart --kernel-ref quickstart
banger image list

# The main job: a disposable VM with this directory copied in. On a terminal you land in a
# shell inside it (exit to leave; --rm deletes the VM); otherwise a command runs there.
if [[ -t 0 && -t 1 ]]; then
  exec banger vm run . --image quickstart --rm
fi
banger vm run . --image quickstart --rm -- sh -c \
  '. /etc/os-release; echo "hello from $PRETTY_NAME in VM $(hostname), in $(pwd) ($(ls | wc -l) entries copied)"'
