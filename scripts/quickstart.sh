#!/usr/bin/env bash
# Builds and installs banger, checks the machine, and shows the daemon at work with a demo
# image made of placeholder files (real images arrive with `banger image pull`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo install --locked --path crates/banger --root "${CARGO_HOME:-$HOME/.cargo}"
BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$BIN:$PATH"

banger doctor || true

demo="${XDG_STATE_HOME:-$HOME/.local/state}/banger-demo"
mkdir -p "$demo"
[[ -f "$demo/vmlinux" ]] || printf 'placeholder kernel\n' > "$demo/vmlinux"
[[ -f "$demo/rootfs.ext4" ]] || truncate -s 1G "$demo/rootfs.ext4"
if ! banger image show demo >/dev/null 2>&1; then
  banger image register --name demo --rootfs "$demo/rootfs.ext4" --kernel "$demo/vmlinux"
fi
banger image list
banger daemon status
