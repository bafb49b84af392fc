#!/usr/bin/env bash
# Installs the system tools banger's tests drive for real, on Debian 12 (root or sudo).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

# tool -> Debian package
declare -A PACKAGES=(
  [e2fsck]=e2fsprogs
  [debugfs]=e2fsprogs
  [resize2fs]=e2fsprogs
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [umoci]=umoci
  [qemu-system-x86_64]=qemu-system-x86
  # Forks of snapshots: copy-on-write qcow2 overlays over the snapshot's disks.
  [qemu-img]=qemu-utils
  [busybox]=busybox-static
  [cpio]=cpio
  [zstd]=zstd
  [xz]=xz-utils
  [curl]=curl
  [openssl]=openssl
  [setpriv]=util-linux
  [dpkg-deb]=dpkg
  [debootstrap]=debootstrap
  [pasta]=passt
  [iptables]=iptables
  [ebtables]=iptables
  [nft]=nftables
  [unshare]=util-linux
  [nsenter]=util-linux
  [ip]=iproute2
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  # tests/remote_ssh.rs starts its own sshd on a loopback port (never the system's).
  [sshd]=openssh-server
  [git]=git
  # tests/vm_diff.rs applies a plain directory's text patch with GNU patch.
  [patch]=patch
  [python3]=python3
  # scripts/e2e-workloads.sh (its light subset runs in scripts/test.sh).
  [bc]=bc
  [apt-get]=apt
  # tests/daemon_service.rs checks the units `banger daemon install` writes.
  [systemd-analyze]=systemd
)

# Rootless TAP networking (crates/vmm/src/netns, tests/netns_guest.rs) needs an
# unprivileged user to open /dev/net/tun. Debian creates it 0666 (what it grants is
# bounded by CAP_NET_ADMIN in the opener's own network namespace); some hosts and
# container runtimes create it 0600, which makes those tests fail under CI=true. Restore
# Debian's default, only when it is a character device with a stricter mode.
if [[ -c /dev/net/tun ]] && [[ $(stat -c %a /dev/net/tun) != 666 ]]; then
  echo "install-test-deps: /dev/net/tun is $(stat -c %a /dev/net/tun): setting Debian's default 0666"
  if [[ $(id -u) -eq 0 ]]; then chmod 0666 /dev/net/tun; else sudo chmod 0666 /dev/net/tun; fi
fi

missing=()
for tool in "${!PACKAGES[@]}"; do
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1; then
    missing+=("${PACKAGES[$tool]}")
  fi
done
# busybox must be the static build: the test initramfs has no libc.
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  missing+=(busybox-static)
fi
# tests/mcp.rs and scripts/bench-mcp.sh drive `banger mcp` with the official MCP Python
# SDK, tests/e2b.rs and scripts/bench-e2b.sh `banger serve` with the official E2B Python
# SDK, both installed in one venv (below, after the packages).
if ! dpkg -s python3-venv >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

# The vhost-user vsock backend QEMU uses for the agent channel: only crates.io has it.
export PATH="$PATH:$HOME/.cargo/bin"
if ! command -v vhost-device-vsock >/dev/null 2>&1; then
  echo "install-test-deps: cargo install --locked vhost-device-vsock (once, ~1-3 min)"
  cargo install --quiet --locked vhost-device-vsock
fi
# The dependency policy checker scripts/test.sh runs (deny.toml): only crates.io has it.
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "install-test-deps: cargo install --locked cargo-deny (once, ~3-5 min)"
  cargo install --quiet --locked cargo-deny
fi

# The MCP and E2B SDKs, pinned, from whatever index the machine's pip configuration names.
MCP_SDK_VERSION=2.3.0
E2B_SDK_VERSION=2.63.0
install_sdk_venv() {
  local venv=${BANGER_TEST_VENV:-/var/tmp/banger-test-venv}
  local pinned='import importlib.metadata as m, sys; sys.exit(m.version("mcp") != sys.argv[1] or m.version("e2b") != sys.argv[2])'
  if "$venv/bin/python" -c "$pinned" "$MCP_SDK_VERSION" "$E2B_SDK_VERSION" 2>/dev/null; then
    return
  fi
  echo "install-test-deps: python venv $venv with mcp==$MCP_SDK_VERSION e2b==$E2B_SDK_VERSION"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "mcp==$MCP_SDK_VERSION" "e2b==$E2B_SDK_VERSION"
}

if ((${#missing[@]} == 0)); then
  install_sdk_venv
  echo "install-test-deps: all test tools present"
  exit 0
fi

readarray -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-test-deps: installing ${missing[*]}"
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-test-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# Installing a server package starts its service (openssh-server: sshd on port 22): the
# tests only need the binary, so services stay stopped while we install (policy-rc.d 101,
# honoured by invoke-rc.d and deb-systemd-invoke), unless the machine has its own policy.
policy=/usr/sbin/policy-rc.d
ours_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  ours_policy=1
fi
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" || {
  [[ $ours_policy = 1 ]] && "${SUDO[@]}" rm -f "$policy"
  exit 1
}
[[ $ours_policy = 1 ]] && "${SUDO[@]}" rm -f "$policy"
install_sdk_venv
