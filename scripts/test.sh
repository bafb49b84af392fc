#!/usr/bin/env bash
# The one test command: installs what the tests need, then format, lint and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo's last lines are the (empty) doc-test runs; close with the real totals.
awk '/^test result:/ {p += $4; f += $6} END {printf "Total: %d passed, %d failed\n", p, f}' "$log"
exit "$status"
