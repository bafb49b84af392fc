# Shared by the VM benchmarks that run on the minbase image (bench-net.sh,
# bench-snapshot.sh): sourced after they set BENCH_NAME. Gives die, bench_require,
# bench_setup (binaries, agent, a private state dir with minbase and the cloud kernel),
# bench_delete_vms and now. Sets REPO, CACHE, B, WORK.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
export PATH=$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
now() { date +%s.%N; }

bench_require() { # TOOL...
    for t in "$@"; do
        command -v "$t" >/dev/null || die "missing $t (scripts/install-test-deps.sh installs it)"
    done
}

# Binaries (BENCH_BIN_DIR, else a release build here), the agent, the minbase image and the
# cloud kernel in a fresh state dir under /var/tmp (removed at exit, after bench_cleanup).
bench_setup() {
    "$REPO/scripts/bench-pull.sh" --prepare-only minbase
    local bin
    if [ -n "${BENCH_BIN_DIR:-}" ]; then
        bin=$BENCH_BIN_DIR
    else
        (cd "$REPO" && cargo build --quiet --locked --release -p banger)
        bin=$TARGET/release
    fi
    if [ -z "${BANGER_AGENT:-}" ]; then
        BANGER_AGENT=$("$REPO/scripts/build-agent.sh")
    fi
    export BANGER_AGENT
    B=$bin/banger
    export BANGER_DAEMON=$bin/bangerd
    local deb
    deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$deb" ] || die "no kernel .deb in $CACHE/kernel-deb (scripts/bench-vm.sh fetches one)"
    WORK=$(mktemp -d "/var/tmp/$BENCH_NAME.XXXXXX")
    export XDG_STATE_HOME=$WORK/state XDG_CACHE_HOME=$WORK/cache XDG_RUNTIME_DIR=$WORK/run
    trap 'bench_cleanup; rm -rf "$WORK"' EXIT
    "$B" kernel import cloud --deb "$deb" >/dev/null
    "$B" image pull "oci:$CACHE/bench/oci-minbase:t" --name minbase --kernel-ref cloud -q >/dev/null
}

# Every VM deleted, the daemon stopped. A script may define bench_cleanup to do more and
# call this.
bench_delete_vms() {
    for vm in $("$B" --json vm list 2>/dev/null | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)["vms"]))' 2>/dev/null); do
        "$B" vm delete "$vm" --force >/dev/null 2>&1 || true
    done
    "$B" daemon stop >/dev/null 2>&1 || true
}
bench_cleanup() { bench_delete_vms; }
