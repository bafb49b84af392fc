#!/usr/bin/env bash
# What the network policy (issue 20) costs. In one run, on one VM per mode (the minbase
# image, 1 vCPU):
#   - a 100 MB download from a host-side HTTP/1.1 server (python3, on 127.0.0.1, reached at the
#     gateway 10.0.2.2) into the guest (bash's /dev/tcp, to /dev/null), BENCH_DL_RUNS times,
#     with `--net any` (no ruleset loaded: the baseline), `--net host` (the ruleset) and an
#     allow-list (`--net host --allow 10.0.2.2:PORT --allow '*.<apt mirror's parent>'`:
#     ruleset, learnt-address sets and the DNS forwarder);
#   - `vm run -- true`, BENCH_RUNS times each, whole and its host-side set-up, with `--net any`
#     (baseline), the default (`public`: ruleset) and the allow-list (ruleset + DNS forwarder).
# Modes take turns run by run.
# Prints medians and the cost relative to the baseline as a markdown table.
#
# Usage: scripts/bench-net.sh
#   BENCH_RUNS=N (default 10)  BENCH_DL_RUNS=N (default 5)  BENCH_DL_MB=N (default 100)
#   BENCH_BIN_DIR  where banger and bangerd are (default: a release build made here)
#   BANGER_TEST_CACHE  cache dir of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
set -euo pipefail
BENCH_NAME=bench-net
. "$(dirname "$0")/bench-lib.sh"
RUNS=${BENCH_RUNS:-10}
DL_RUNS=${BENCH_DL_RUNS:-5}
DL_MB=${BENCH_DL_MB:-100}
bench_require qemu-system-x86_64 python3 umoci debootstrap dpkg-deb pasta nft ebtables
SERVER_PID=""
bench_cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
    bench_delete_vms
}
bench_setup

# The apt mirror's parent domain, from this machine's apt configuration (a wildcard entry
# makes the DNS forwarder run; nothing here resolves through it).
parent=$(python3 - <<'EOF'
import glob, re
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list") + glob.glob("/etc/apt/sources.list.d/*.sources")):
    try:
        text = open(f).read()
    except OSError:
        continue
    for m in re.finditer(r"^(?:URIs:|deb(?:\s+\[[^]]*\])?)\s+\w+://([^/:\s]+)", text, re.M):
        host = m.group(1)
        if host.count(".") >= 2:
            print(host.split(".", 1)[1]); raise SystemExit
raise SystemExit("no apt mirror with a parent domain in /etc/apt")
EOF
)

# The host-side server: DL_MB MB from 127.0.0.1 (the guest reaches it at 10.0.2.2), HTTP/1.1
# with keep-alive: the guest reads the body's Content-Length bytes and closes first. (With a
# server that closes right after the body, Debian 12's pasta drops the connection's unsent tail
# when the guest is slower than the server: the download then stalls for good. That is pasta's
# bug, not the policy's, and it would decide the numbers: see the README.)
mkdir -p "$WORK/www"
head -c $((DL_MB * 1024 * 1024)) /dev/zero > "$WORK/www/blob"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$port" "$WORK/www" >/dev/null 2>&1 <<'PY' &
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
handler = functools.partial(Handler, directory=sys.argv[2])
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
PY
SERVER_PID=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.1
done

median() { python3 -c 'import sys,statistics as s; print(f"{s.median(float(x) for x in sys.stdin):.1f}")'; }
ALLOW=(--net host --allow "10.0.2.2:$port" --allow "*.$parent")

# Download: seconds for the whole body, timed inside the guest (headers read up to the blank
# line, then exactly the body; the guest closes).
BODY=$((DL_MB * 1024 * 1024))
DL='s=$(date +%s.%N); exec 3<>/dev/tcp/10.0.2.2/'$port'; printf "GET /blob HTTP/1.1\r\nHost: bench\r\n\r\n" >&3; while IFS= read -r l <&3 && [ "$l" != $'"'"'\r'"'"' ]; do :; done; n=$(head -c '$BODY' <&3 | wc -c); exec 3<&-; e=$(date +%s.%N); echo "$n $s $e"'
# Modes take turns, run by run (not one block per mode): the machine's drift (caches, other
# load, TCG's variance) then falls on every mode alike instead of on whichever ran last.
MODES=(any host allow)
mode_args() {
    case $1 in
        allow) args=("${ALLOW[@]}") ;;
        *) args=(--net "$1") ;;
    esac
}
declare -A MBPS START SETUP RATES TIMES SETUPS
for mode in "${MODES[@]}"; do
    mode_args "$mode"
    "$B" vm create "dl-$mode" --image minbase --cpus 1 --memory 512MiB --cold -q "${args[@]}" >/dev/null
done
for _ in $(seq "$DL_RUNS"); do
    for mode in "${MODES[@]}"; do
        out=$("$B" vm exec "dl-$mode" -- bash -c "$DL") || die "--net $mode: the download failed: $out"
        read -r n s e <<<"$out"
        [ "$n" -eq "$BODY" ] || die "--net $mode: the download got $n bytes of $BODY"
        RATES[$mode]+="$(python3 -c "print($n / 1e6 / ($e - $s))") "
    done
done
for mode in "${MODES[@]}"; do
    MBPS[$mode]=$(printf '%s\n' ${RATES[$mode]} | median)
    "$B" vm delete "dl-$mode" --force >/dev/null
done

# Starts: `vm run -- true` timed whole, and the host's share of it: the `vmm_spawned` stage
# (the launch returned: namespace and ruleset made, VMM started, pasta and forwarder
# attached, guest let go), which is where the policy's work is; the rest is the guest's
# boot, the same in every mode.
START_MODES=(any public allow)
for mode in "${START_MODES[@]}"; do
    mode_args "$mode"
    "$B" vm run --image minbase --rm --cold -q "${args[@]}" -- true   # warm caches
done
for i in $(seq "$RUNS"); do
    for mode in "${START_MODES[@]}"; do
        mode_args "$mode"
        t0=$(now); "$B" vm run --image minbase --name "st-$mode-$i" --cpus 1 --memory 512MiB --cold -q "${args[@]}" -- true; t1=$(now)
        TIMES[$mode]+="$(python3 -c "print(($t1 - $t0) * 1000)") "
        SETUPS[$mode]+="$("$B" vm show "st-$mode-$i" --json | python3 -c 'import json,sys; print(next(s["at_ms"] for s in json.load(sys.stdin)["stages"] if s["stage"] == "vmm_spawned"))') "
        "$B" vm delete "st-$mode-$i" --force >/dev/null
    done
done
for mode in "${START_MODES[@]}"; do
    START[$mode]=$(printf '%s\n' ${TIMES[$mode]} | median)
    SETUP[$mode]=$(printf '%s\n' ${SETUPS[$mode]} | median)
done

pct() { python3 -c "print(f'{($2 - $1) / $1 * 100:+.1f} %')"; }
diff_ms() { python3 -c "print(f'{$2 - $1:+.0f} ms')"; }
echo
echo "Medians, 1 vCPU, 512 MiB, minbase image, $(uname -r) host, accel: $("$B" --json doctor 2>/dev/null | python3 -c 'import json,sys; print(next((c["detail"] for c in json.load(sys.stdin) if c["name"] == "acceleration"), "?").split(":")[0])' || echo '?'):"
echo
echo "| | baseline (\`--net any\`) | ruleset | ruleset + DNS forwarder (allow-list) |"
echo "|---|---|---|---|"
echo "| ${DL_MB} MB download from the host, MB/s ($DL_RUNS runs) | ${MBPS[any]} | ${MBPS[host]} (\`--net host\`, $(pct "${MBPS[any]}" "${MBPS[host]}")) | ${MBPS[allow]} ($(pct "${MBPS[any]}" "${MBPS[allow]}")) |"
echo "| \`vm run -- true\`, ms ($RUNS runs) | ${START[any]} | ${START[public]} (default \`public\`, $(diff_ms "${START[any]}" "${START[public]}")) | ${START[allow]} ($(diff_ms "${START[any]}" "${START[allow]}")) |"
echo "| of which the host's set-up (to \`vmm_spawned\`), ms | ${SETUP[any]} | ${SETUP[public]} ($(diff_ms "${SETUP[any]}" "${SETUP[public]}")) | ${SETUP[allow]} ($(diff_ms "${SETUP[any]}" "${SETUP[allow]}")) |"
