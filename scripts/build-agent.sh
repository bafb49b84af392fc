#!/usr/bin/env bash
# Builds banger's guest agent as a static binary (it runs as /init in an initramfs, with no
# libc beside it) and prints its path. `-C target-feature=+crt-static` on the gnu target
# gives a static-pie executable; passing --target keeps RUSTFLAGS away from build scripts
# and proc macros, which must stay dynamic.
#
# Usage: scripts/build-agent.sh [--install DIR]   (DIR: also copy it there, next to bangerd)
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
case "$(uname -m)" in
  aarch64) target=aarch64-unknown-linux-gnu ;;
esac
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" cargo build --quiet --locked --release \
  -p banger-agent --target "$target"
out="${CARGO_TARGET_DIR:-target}/$target/release/banger-agent"
if [[ "${1:-}" == "--install" ]]; then
  install -m 0755 "$out" "$2/banger-agent"
  out="$2/banger-agent"
fi
realpath "$out"
