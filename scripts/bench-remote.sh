#!/usr/bin/env bash
# What `--host ssh://` costs (issue 23): one minbase VM (1 vCPU) of one daemon, driven
#   - locally (the Unix socket),
#   - through `ssh://` to a test-owned sshd on 127.0.0.1 (a new ssh session per command),
#   - through `ssh://` with OpenSSH connection sharing (ControlMaster auto, ControlPersist:
#     what a user who drives a remote host all day sets in ~/.ssh/config),
# the three alternating in each round: `vm exec VM -- true` (a new CLI process each time)
# and a 100 MB `vm cp` into the VM and back. Prints median, min and max as a markdown
# table (load average before and after on stderr).
#
# Usage: scripts/bench-remote.sh
#   BENCH_RUNS=N (default 15 exec rounds; cp rounds are a third of that, at least 3)
#   BENCH_BIN_DIR  where banger and bangerd are (default: a release build made here)
#   BANGER_TEST_CACHE  cache dir of the debootstrap images and kernel (default /var/tmp/banger-test-cache)
set -euo pipefail
BENCH_NAME=bench-remote
. "$(dirname "$0")/bench-lib.sh"
RUNS=${BENCH_RUNS:-15}
CP_RUNS=$(( RUNS / 3 > 3 ? RUNS / 3 : 3 ))
bench_require qemu-system-x86_64 python3 umoci debootstrap dpkg-deb sshd ssh ssh-keygen
bench_setup
echo "bench-remote: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
export XDG_CONFIG_HOME=$WORK/config

# The sshd: its sessions see this very installation (same daemon, same VM).
SSHD_DIR=$WORK/sshd
mkdir -p "$SSHD_DIR" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$SSHD_DIR/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$SSHD_DIR/user_key"
cp "$SSHD_DIR/user_key.pub" "$SSHD_DIR/authorized_keys"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$SSHD_DIR/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $SSHD_DIR/host_key
AuthorizedKeysFile $SSHD_DIR/authorized_keys
PidFile none
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
SetEnv PATH=$(dirname "$B"):/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin XDG_STATE_HOME=$XDG_STATE_HOME XDG_CACHE_HOME=$XDG_CACHE_HOME XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR XDG_CONFIG_HOME=$XDG_CONFIG_HOME BANGER_DAEMON=$BANGER_DAEMON BANGER_AGENT=$BANGER_AGENT
EOF
echo "[127.0.0.1]:$PORT $(cat "$SSHD_DIR/host_key.pub")" >"$SSHD_DIR/known_hosts"
client_config() { # FILE EXTRA-LINES
    printf 'Host benchbox\n  HostName 127.0.0.1\n  Port %s\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  BatchMode yes\n%s' \
        "$PORT" "$SSHD_DIR/user_key" "$SSHD_DIR/known_hosts" "$2" >"$1"
}
client_config "$SSHD_DIR/plain" ""
client_config "$SSHD_DIR/shared" "  ControlMaster auto
  ControlPath $SSHD_DIR/cm-%C
  ControlPersist 60
"
/usr/sbin/sshd -D -e -f "$SSHD_DIR/sshd_config" 2>"$SSHD_DIR/sshd.log" &
SSHD_PID=$!
bench_cleanup() {
    ssh -F "$SSHD_DIR/shared" -O exit benchbox >/dev/null 2>&1 || true
    kill "$SSHD_PID" 2>/dev/null || true
    wait "$SSHD_PID" 2>/dev/null || true
    bench_delete_vms
}
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.05
done

# mode NAME: runs "$@" as that mode's banger.
run_as() {
    local mode=$1
    shift
    case $mode in
        local) "$B" "$@" ;;
        ssh) BANGER_SSH_COMMAND="ssh -F $SSHD_DIR/plain" "$B" --host ssh://benchbox "$@" ;;
        shared) BANGER_SSH_COMMAND="ssh -F $SSHD_DIR/shared" "$B" --host ssh://benchbox "$@" ;;
    esac
}
MODES=(local ssh shared)

"$B" vm create bench --image minbase --cpus 1 --memory 512MiB -q >/dev/null
for m in "${MODES[@]}"; do # warm-up: the shared mode's master starts here
    [ "$(run_as "$m" vm exec bench -- echo ok)" = ok ] || die "$m: exec failed"
done

declare -A EXEC CP_IN CP_OUT
echo "bench-remote: vm exec -- true, $RUNS rounds of ${MODES[*]} ..." >&2
for i in $(seq "$RUNS"); do
    for m in "${MODES[@]}"; do
        t0=$(now)
        run_as "$m" vm exec bench -- true
        EXEC[$m]+="$(echo "($(now) - $t0) * 1000" | bc -l) "
    done
done
head -c 100000000 /dev/urandom >"$WORK/in.bin"
want=$(sha256sum <"$WORK/in.bin" | cut -d' ' -f1)
echo "bench-remote: vm cp 100 MB in and out, $CP_RUNS rounds ..." >&2
for i in $(seq "$CP_RUNS"); do
    for m in "${MODES[@]}"; do
        t0=$(now)
        run_as "$m" vm cp "$WORK/in.bin" bench:/root/in.bin >/dev/null
        CP_IN[$m]+="$(echo "($(now) - $t0) * 1000" | bc -l) "
        rm -f "$WORK/out.bin"
        t0=$(now)
        run_as "$m" vm cp bench:/root/in.bin "$WORK/out.bin" >/dev/null
        CP_OUT[$m]+="$(echo "($(now) - $t0) * 1000" | bc -l) "
        [ "$(sha256sum <"$WORK/out.bin" | cut -d' ' -f1)" = "$want" ] || die "$m: cp changed the file"
    done
done

stats() { # "MS MS ..." -> "median | min | max" (ms)
    python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.0f} | {min(v):.0f} | {max(v):.0f}")' $1
}
echo "bench-remote: load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo
echo "| what | how | median ms | min | max |"
echo "|---|---|---:|---:|---:|"
for m in "${MODES[@]}"; do
    case $m in
        local) how="this machine's socket" ;;
        ssh) how="ssh:// (a new ssh session per command)" ;;
        shared) how="ssh:// with ControlMaster/ControlPersist" ;;
    esac
    echo "| vm exec -- true ($RUNS) | $how | $(stats "${EXEC[$m]}") |"
done
for m in "${MODES[@]}"; do
    echo "| vm cp 100 MB in ($CP_RUNS) | $m | $(stats "${CP_IN[$m]}") |"
done
for m in "${MODES[@]}"; do
    echo "| vm cp 100 MB out ($CP_RUNS) | $m | $(stats "${CP_OUT[$m]}") |"
done
