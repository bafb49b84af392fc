//! What programs find in a guest, as on any Linux machine: `/dev/fd` and the `/dev/std*`
//! links (bash's process substitution), cgroup2 with controllers to delegate, `/dev/mqueue`,
//! sane limits and `LANG` — with the agent as PID 1 (minbase, no init) and with the
//! image's systemd (dev); kernel modules loaded on demand and container engines'
//! directories off the overlay. One VM per image.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestEnv;

fn run(env: &TestEnv, image: &str, script: &str) -> String {
    let out = env.banger(&[
        "vm", "run", "--image", image, "--rm", "--cpus", "1", "--", "bash", "-c", script,
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{image}: {stderr}\n{stdout}");
    stdout
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
}

const COMMON: &str = "echo subst=$(cat <(echo ok)); \
    echo stdin=$(readlink /dev/stdin); \
    echo controllers=$(cat /sys/fs/cgroup/cgroup.controllers); \
    echo loader=$(cat /proc/sys/kernel/modprobe); \
    modprobe -v veth >/dev/null; echo veth=$(grep -c '^veth ' /proc/modules); \
    mount -t vfat none /mnt 2>/dev/null; echo vfat=$(grep -c '^vfat ' /proc/modules); \
    modprobe no-such-module 2>/dev/null; echo missing=$?; \
    echo docker_fs=$(stat -f -c %T /var/lib/docker)";

/// The kernel modules a workload asks for load on demand from banger's modules disk: by
/// `modprobe` (there is none in these images: banger's stands in) and by the kernel itself
/// (`fs-vfat` on a mount); container engines' directories are not on overlayfs.
fn assert_modules_and_native_dirs(out: &str) {
    assert!(
        line(out, "loader").ends_with("/banger-modprobe"),
        "the kernel's module loader: {out}"
    );
    assert_eq!(line(out, "veth"), "1", "modprobe veth: {out}");
    assert_eq!(line(out, "vfat"), "1", "the kernel's own request: {out}");
    assert_eq!(line(out, "missing"), "1", "{out}");
    assert_eq!(line(out, "docker_fs"), "ext2/ext3", "{out}");
}

#[test]
fn the_agent_as_pid_1_sets_up_what_programs_expect() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let out = run(
        &env,
        &image,
        &format!(
            "{COMMON}; echo pid1=$(cat /proc/1/comm); \
             echo delegated=$(cat /sys/fs/cgroup/cgroup.subtree_control); \
             mkdir /sys/fs/cgroup/t && echo 64M > /sys/fs/cgroup/t/memory.max && \
             echo $$ > /sys/fs/cgroup/t/cgroup.procs && echo child=$(cat /proc/self/cgroup); \
             echo mqueue=$(grep -c ' /dev/mqueue mqueue ' /proc/mounts); \
             echo nofile=$(ulimit -Sn)/$(ulimit -Hn); echo lang=$LANG; \
             echo runlock=$(stat -c %a /run/lock)"
        ),
    );
    assert_eq!(line(&out, "subst"), "ok", "{out}");
    assert_eq!(line(&out, "stdin"), "/proc/self/fd/0", "{out}");
    let controllers = line(&out, "controllers");
    for c in ["cpu", "memory", "pids"] {
        assert!(controllers.split(' ').any(|x| x == c), "{c}: {out}");
    }
    assert_eq!(line(&out, "pid1"), "init", "the agent is PID 1: {out}");
    let delegated = line(&out, "delegated");
    for c in ["cpu", "memory", "pids"] {
        assert!(delegated.split(' ').any(|x| x == c), "{c} delegated: {out}");
    }
    assert_eq!(line(&out, "child"), "0::/t", "{out}");
    assert_eq!(line(&out, "mqueue"), "1", "{out}");
    assert_eq!(line(&out, "nofile"), "1024/524288", "{out}");
    assert_eq!(line(&out, "lang"), "C.UTF-8", "{out}");
    assert_eq!(line(&out, "runlock"), "1777", "{out}");
    assert_modules_and_native_dirs(&out);
}

#[test]
fn with_systemd_the_first_command_finds_a_booted_machine() {
    let env = TestEnv::new();
    let image = env.debian_image("dev");
    env.ok(&["vm", "create", "d", "--image", &image, "--cpus", "1", "-q"]);
    // Ready means systemd reached sysinit.target (banger's default `--ready`), measured
    // among the boot stages.
    let vm = env.json(&["vm", "show", "d"]);
    let stages: Vec<&str> = vm["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|s| s["stage"].as_str())
        .collect();
    assert!(
        stages.contains(&"init_handed_over") && stages.contains(&"init_ready"),
        "{stages:?}"
    );
    let out = env.ok(&[
        "vm",
        "exec",
        "d",
        "--",
        "bash",
        "-c",
        &format!(
            "{COMMON}; echo pid1=$(cat /proc/1/comm); \
             echo sysinit=$(systemctl is-active sysinit.target)"
        ),
    ]);
    assert_eq!(line(&out, "pid1"), "systemd", "{out}");
    assert_eq!(line(&out, "sysinit"), "active", "{out}");
    assert_eq!(line(&out, "subst"), "ok", "{out}");
    assert_eq!(line(&out, "stdin"), "/proc/self/fd/0", "{out}");
    let controllers = line(&out, "controllers");
    for c in ["cpu", "memory", "pids"] {
        assert!(controllers.split(' ').any(|x| x == c), "{c}: {out}");
    }
    assert_modules_and_native_dirs(&out);
    env.ok(&["vm", "delete", "d", "--force"]);
}
