#!/usr/bin/env bash
# Real workloads in `banger vm run`, as a new user meets them: `apt-get update` as the first
# command (N times, and once with `--ready none` to show the race it fixes), bash process
# substitution and cgroups on an image with systemd (dev) and one without an init (minbase),
# a systemd service, `apt-get install`, Docker (`apt-get install docker.io`, an image built in
# the guest `FROM scratch`, `docker run`), and real projects' own test suites copied in with
# `vm run PATH`: zlib's `make test` (C, source from the host's apt mirror), more-itertools'
# pytest suite (Python, sdist from pip's index, pytest installed in a venv in the guest), and
# a Node project's `npm ci && npm test` (generated here, its dependency from the npm registry).
# Prints a table: workload, result, time in the VM (boot and teardown included), and the same
# command's time on this host where that makes sense.
#
# Usage: scripts/e2e-workloads.sh [--light]
#   --light            the subset CI runs: apt-get as the first command once and zlib's suite
#                      (process substitution and cgroups are vm_environment.rs's, in the same run)
#   WORKLOAD_APT_RUNS=N (default 20; 1 with --light)
#   WORKLOAD_PROFILE   cargo profile of banger and bangerd: release (default) or debug (the
#                      default with --light, which CI runs after the tests built it)
#   WORKLOAD_ONLY=REGEX  only the workloads whose label matches (e.g. 'Python|Node')
#   BANGER_TEST_CACHE  cache of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
# Needs the guests (and this host) to reach the package registries this host is configured for:
# apt's mirror (/etc/apt), pip's index and the npm registry (their own configuration). No host
# name is written here.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BANGER_TEST_CACHE:-/var/tmp/banger-test-cache}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
LIGHT=0
[ "${1:-}" = --light ] && LIGHT=1
APT_RUNS=${WORKLOAD_APT_RUNS:-$([ "$LIGHT" = 1 ] && echo 1 || echo 20)}
export PATH=$PATH:$HOME/.cargo/bin:/usr/sbin:/sbin
die() { echo "e2e-workloads: $*" >&2; exit 1; }
for t in qemu-system-x86_64 bc apt-get tar python3; do
    command -v "$t" >/dev/null || die "missing $t (scripts/install-test-deps.sh installs it)"
done

"$REPO/scripts/bench-pull.sh" --prepare-only minbase dev
PROFILE=${WORKLOAD_PROFILE:-$([ "$LIGHT" = 1 ] && echo debug || echo release)}
case $PROFILE in
    release) (cd "$REPO" && cargo build --quiet --locked --release -p banger) ;;
    debug) (cd "$REPO" && cargo build --quiet --locked -p banger) ;;
    *) die "WORKLOAD_PROFILE=$PROFILE: use release or debug" ;;
esac
export BANGER_AGENT
BANGER_AGENT=$("$REPO/scripts/build-agent.sh")
B=$TARGET/$PROFILE/banger
export BANGER_DAEMON=$TARGET/$PROFILE/bangerd
deb=$(ls "$CACHE"/kernel-deb/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n 1 || true)
[ -n "$deb" ] || die "no cloud kernel .deb in $CACHE/kernel-deb (scripts/bench-vm.sh fetches it)"

WORK=$(mktemp -d /var/tmp/e2e-workloads.XXXXXX)
export XDG_STATE_HOME=$WORK/state XDG_CACHE_HOME=$WORK/cache XDG_RUNTIME_DIR=$WORK/run
export XDG_CONFIG_HOME=$WORK/config
cleanup() {
    "$B" daemon stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
"$B" kernel import cloud --deb "$deb" >/dev/null
"$B" image pull "oci:$CACHE/bench/oci-minbase:t" --name minbase --kernel-ref cloud -q >/dev/null
"$B" image pull "oci:$CACHE/bench/oci-dev:t" --name dev --kernel-ref cloud -q >/dev/null

rows=()
failed=0
# run LABEL CHECK HOST_SECS -- banger vm run ARGS: CHECK is a grep -E pattern the output must
# match (and "apt-key|^W: |^E: " must not, for apt); HOST_SECS the host's time or "-".
run() {
    local label=$1 want=$2 host=$3 out t0 t1 result
    shift 4
    if [ -n "${WORKLOAD_ONLY:-}" ] && ! grep -Eq -- "$WORKLOAD_ONLY" <<<"$label"; then
        return 0
    fi
    t0=$(date +%s.%N)
    out=$("$B" vm run --rm --cpus 2 "$@" 2>&1) || true
    t1=$(date +%s.%N)
    if grep -Eq -- "$want" <<<"$out" && ! grep -Eq 'apt-key|^W: |^E: ' <<<"$out"; then
        result=pass
    else
        result=FAIL
        failed=$((failed + 1))
        # Guest output: control characters made visible before they reach the terminal.
        echo "e2e-workloads: $label: $(tail -n 5 <<<"$out" | cat -v)" >&2
    fi
    rows+=("| $label | $result | $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s | $host |")
}
# host_time DIR CMD: runs CMD in a copy of DIR on this host; prints its seconds, or "failed".
host_time() {
    local dir=$1 cmd=$2 copy t0 t1
    copy=$(mktemp -d "$WORK/host.XXXXXX")
    cp -a "$dir" "$copy/"
    t0=$(date +%s.%N)
    if (cd "$copy/$(basename "$dir")" && bash -c "$cmd") >"$copy/log" 2>&1; then
        t1=$(date +%s.%N)
        printf '%.1f s' "$(echo "$t1 - $t0" | bc)"
    else
        echo "failed (see $copy/log)"
    fi
}

# The host's package sources, read from its own configuration.
apt_mirror() {
    { grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '{print $2}'
      grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'; } |
        grep -v security | head -n 1
}
npm_registry() { npm config get registry 2>/dev/null | sed 's:/*$::'; }
# The trust store the host's own pip uses (its `cert` setting, else Debian's bundle): on
# machines whose registries sit behind a TLS-inspecting proxy it holds the proxy's CA, which
# a fresh guest does not trust. Copied into each HTTPS workload as .host-ca.pem; the guest
# commands point pip, npm, Node and OpenSSL at it.
host_ca() {
    local ca
    ca=$(python3 -m pip config get global.cert 2>/dev/null || true)
    [ -r "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
    [ -r "$ca" ] || die "no CA bundle at $ca"
    cp "$ca" "$1/.host-ca.pem"
}
CA_ENV='export SSL_CERT_FILE=$PWD/.host-ca.pem PIP_CERT=$PWD/.host-ca.pem \
    NODE_EXTRA_CA_CERTS=$PWD/.host-ca.pem npm_config_cafile=$PWD/.host-ca.pem'

# zlib's source as Debian ships it, from the host's own mirror (a private apt state: the host's
# lists are untouched).
fetch_zlib() {
    local dest=$1 a=$WORK/apt mirror suite
    mirror=$(apt_mirror)
    [ -n "$mirror" ] || die "no apt mirror in /etc/apt"
    suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$dest"
    echo "deb-src $mirror $suite main" >"$a/sources.list"
    local opts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$a/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache")
    apt-get -qq "${opts[@]}" update || die "apt-get update of $mirror's sources failed"
    (cd "$a" && apt-get -qq "${opts[@]}" source --download-only zlib >/dev/null) ||
        die "apt-get source zlib failed"
    tar -xf "$a"/zlib_*.orig.tar.* -C "$dest" --strip-components=1
}

# more-itertools' sdist (its tests ship in it), from pip's configured index.
fetch_more_itertools() {
    local dest=$1 tmp=$WORK/pip
    mkdir -p "$tmp" "$dest"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" more-itertools==10.5.0 ||
        die "pip download more-itertools failed"
    tar -xzf "$tmp"/more-itertools-10.5.0.tar.gz -C "$dest" --strip-components=1
}

# A Node project: a module, node:test tests, one dependency from the npm registry, and the
# lockfile `npm ci` needs (made here by the host's npm).
make_node_project() {
    local dest=$1
    mkdir -p "$dest/test"
    cat >"$dest/package.json" <<'JSON'
{ "name": "banger-workload", "version": "1.0.0", "private": true,
  "scripts": { "test": "node --test" },
  "dependencies": { "is-number": "7.0.0" } }
JSON
    cat >"$dest/index.js" <<'JS'
const isNumber = require('is-number');
exports.sum = (xs) => xs.filter(isNumber).reduce((a, b) => a + Number(b), 0);
JS
    cat >"$dest/test/sum.test.js" <<'JS'
const test = require('node:test');
const assert = require('node:assert');
const { sum } = require('..');
test('sums numbers and numeric strings', () => assert.strictEqual(sum([1, '2', 'x', 3.5]), 6.5));
test('ignores what is not a number', () => assert.strictEqual(sum(['', null, NaN]), 0));
JS
    (cd "$dest" && npm install --package-lock-only --ignore-scripts --registry "$(npm_registry)/" \
        >/dev/null) || die "npm could not make the lockfile"
}

for i in $(seq 1 "$APT_RUNS"); do
    run "apt-get update as the first command, dev ($i/$APT_RUNS)" 'Reading package lists' - \
        -- --image dev -- apt-get update
done
if [ "$LIGHT" = 0 ] && [ -z "${WORKLOAD_ONLY:-}" ]; then
    # The control: without the readiness wait the first apt-get races systemd's early boot.
    control=$("$B" vm run --rm --cpus 2 --image dev --ready none -- apt-get update 2>&1 || true)
    if grep -q 'apt-key' <<<"$control"; then
        rows+=("| apt-get update with --ready none (the old race) | raced, as expected | - | - |")
    else
        rows+=("| apt-get update with --ready none (the old race) | did not race this time | - | - |")
    fi
fi
# With --light (CI) these two are left to crates/banger/tests/vm_environment.rs, which checks
# the same on both kinds of image in the same run.
if [ "$LIGHT" = 0 ]; then
    for image in dev minbase; do
        run "bash process substitution, $image" '^ok$' - \
            -- --image "$image" -- bash -c 'cat <(echo ok)'
        run "cgroup2 controllers, $image" 'cpu.*memory.*pids|memory.*pids' - \
            -- --image "$image" -- cat /sys/fs/cgroup/cgroup.controllers
    done
fi

SRC=$WORK/src
fetch_zlib "$SRC/zlib"
run "C: zlib ./configure && make test" '\*\*\* zlib test OK \*\*\*' \
    "$(host_time "$SRC/zlib" './configure >/dev/null && make -s test')" \
    -- "$SRC/zlib" --image dev -- bash -c './configure >/dev/null && make -s test'

if [ "$LIGHT" = 0 ]; then
    run "a systemd service started with systemctl, dev" '^active$' - \
        -- --image dev -- sh -c 'printf "[Service]\nExecStart=/bin/sleep 300\n" \
            >/etc/systemd/system/w.service && systemctl daemon-reload && systemctl start w &&
            systemctl is-active w'
    run "apt-get install jq tree, dev" '^jq-1\.' - \
        -- --image dev -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq jq tree >/dev/null && jq --version'

    for t in npm; do
        command -v "$t" >/dev/null || die "missing $t (the full matrix needs Node.js and npm)"
    done
    fetch_more_itertools "$SRC/more-itertools"
    host_ca "$SRC/more-itertools"
    py='python3 -m venv /tmp/v && /tmp/v/bin/pip install -q pytest . && /tmp/v/bin/pytest -q -p no:cacheprovider'
    # Debian splits venv's ensurepip into python3-venv, which the dev image lacks.
    venv='apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null'
    run "Python: more-itertools, pip install + pytest in a venv" ' passed' \
        "$(host_time "$SRC/more-itertools" "$py")" \
        -- "$SRC/more-itertools" --image dev -- bash -c "$CA_ENV && $venv && $py"

    make_node_project "$SRC/node-project"
    host_ca "$SRC/node-project"
    reg=$(npm_registry)
    # Node from Debian in the guest; npm itself from the registry (Debian's npm is hundreds of
    # packages).
    node_guest="$CA_ENV && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        nodejs ca-certificates >/dev/null && python3 -c 'import sys, urllib.request; \
        urllib.request.urlretrieve(sys.argv[1], \"/tmp/npm.tgz\")' $reg/npm/-/npm-10.8.2.tgz && \
        mkdir -p /tmp/npm && tar -xzf /tmp/npm.tgz -C /tmp/npm && \
        node /tmp/npm/package/bin/npm-cli.js ci --registry $reg/ --no-audit --no-fund && \
        node /tmp/npm/package/bin/npm-cli.js test"
    run "Node: npm ci && npm test (node from apt, npm from the registry)" '# pass 2' \
        "$(host_time "$SRC/node-project" "npm ci --registry $reg/ --no-audit --no-fund >/dev/null && npm test")" \
        -- "$SRC/node-project" --image dev -- bash -c "$node_guest"

    docker_guest='apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        docker.io >/dev/null && mkdir -p /tmp/img && cd /tmp/img &&
        printf "#include <stdio.h>\nint main(void){puts(\"hello from FROM scratch\");return 0;}\n" >h.c &&
        gcc -static -O2 -o hello h.c &&
        printf "FROM scratch\nCOPY hello /hello\nCMD [\"/hello\"]\n" >Dockerfile &&
        DOCKER_BUILDKIT=0 docker build -q -t hello . >/dev/null &&
        docker run --rm hello | grep -x "hello from FROM scratch" &&
        docker info --format "storage={{.Driver}}"'
    run "Docker: apt-get install docker.io, build FROM scratch, docker run" \
        '^storage=overlay2$' - -- --image dev -- bash -c "$docker_guest"
fi

echo
echo "| workload | result | in the VM | on the host |"
echo "|---|---|---:|---:|"
printf '%s\n' "${rows[@]}"
echo "e2e-workloads: $(( ${#rows[@]} - failed )) rows, $failed failed"
[ "$failed" = 0 ]
