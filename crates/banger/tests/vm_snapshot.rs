//! Pause, resume, snapshots and forks of real QEMU guests (TCG), through the CLI: one
//! source VM (minbase, the serial channel) serves every phase, two forks of its snapshot
//! run at once.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use banger_testkit::wait;
use common::{TestEnv, vm_dir};

/// How long a guest may take to do its part (TCG on a loaded 2-core host).
const GUEST: Duration = Duration::from_secs(120);

fn exec(env: &TestEnv, vm: &str, script: &str) -> String {
    env.ok(&["vm", "exec", vm, "--", "sh", "-c", script])
}

/// The ticks a guest process writes to the serial console, every 100 ms.
fn last_tick(env: &TestEnv, vm: &str) -> u64 {
    env.ok(&["vm", "logs", vm])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tick ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// 32 bytes of the guest kernel's RNG, hex.
fn random32(env: &TestEnv, vm: &str) -> String {
    exec(
        env,
        vm,
        "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'",
    )
}

/// A process that keeps a random value in memory only and writes it to /tmp/answer
/// whenever /tmp/ask appears; its value is printed once, at start.
const HOLDER: &str = "nohup sh -c 'v=$(cat /proc/sys/kernel/random/uuid); echo $v > /tmp/told; \
    while :; do if [ -e /tmp/ask ]; then echo $v > /tmp/answer; rm /tmp/ask; fi; sleep 0.1; done' \
    >/dev/null 2>&1 & \
    while [ ! -s /tmp/told ]; do sleep 0.1; done; cat /tmp/told";

/// Asks the holder for its value.
fn ask_holder(env: &TestEnv, vm: &str) -> String {
    exec(
        env,
        vm,
        "rm -f /tmp/answer; touch /tmp/ask; n=0; \
         while [ ! -s /tmp/answer ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; cat /tmp/answer",
    )
}

fn snapshots_dir(env: &TestEnv) -> PathBuf {
    env.state_dir().join("snapshots")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `vm create NAME` of a VM QEMU can snapshot: the serial channel, 1 vCPU, no network.
fn create_snapshottable(env: &TestEnv, name: &str, image: &str, memory: &str, extra: &[&str]) {
    let mut args = vec![
        "vm",
        "create",
        name,
        "--image",
        image,
        "--channel",
        "serial",
        "--cpus",
        "1",
        "--memory",
        memory,
        "--net",
        "none",
        "-q",
    ];
    args.extend_from_slice(extra);
    env.ok(&args);
}

#[test]
fn pause_snapshot_fork_and_crash_safety() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    create_snapshottable(&env, "src", &image, "512MiB", &[]);

    // 1. Pause and resume: the console ticks stop and go on; exec is refused while paused;
    //    the guest's clock is set again on resume.
    exec(
        &env,
        "src",
        "nohup sh -c 'i=0; while :; do i=$((i+1)); echo \"tick $i\" > /dev/console; sleep 0.1; done' >/dev/null 2>&1 &",
    );
    wait::until_for("ticks", GUEST, || last_tick(&env, "src") >= 3);
    let paused = env.json(&["vm", "pause", "src"]);
    assert_eq!(paused["state"], "paused", "{paused}");
    assert_eq!(env.json(&["vm", "show", "src"])["state"], "paused");
    let at_pause = last_tick(&env, "src");
    let e = env.fails(&["vm", "exec", "src", "--", "true"]);
    assert!(e.contains("paused") && e.contains("vm resume"), "{e}");
    // Ten of the guest's periods, and long enough that a clock left alone would be off.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(last_tick(&env, "src"), at_pause, "no tick while paused");
    env.ok(&["vm", "resume", "src"]);
    wait::until_for("ticks after resume", GUEST, || {
        last_tick(&env, "src") > at_pause + 2
    });
    let guest: f64 = exec(&env, "src", "date +%s.%N").trim().parse().unwrap();
    let skew = (guest - now_secs()).abs();
    assert!(skew < 1.0, "guest clock off by {skew} s after resume");

    // 2. Snapshot while a process holds a value in memory and another writes the disk.
    let told = exec(&env, "src", HOLDER).trim().to_string();
    exec(&env, "src", "echo before > /root/f");
    exec(
        &env,
        "src",
        "nohup sh -c 'while :; do dd if=/dev/urandom of=/root/blob bs=64k count=16 conv=fsync 2>/dev/null; done' >/dev/null 2>&1 &",
    );
    let snap = env.json(&["vm", "snapshot", "src", "--name", "s1"]);
    assert_eq!(snap["name"], "s1");
    assert_eq!(snap["source_vm"], "src");
    assert!(snap["size_bytes"].as_u64().unwrap() > 0, "{snap}");
    // QEMU shares the guest's memory (a memfd): the save copied it beside a device-only
    // stream, and forks map that copy instead of loading it.
    let snap_dir = snapshots_dir(&env).join(snap["id"].as_str().unwrap());
    let stream = std::fs::metadata(snap_dir.join("qemu.state"))
        .unwrap()
        .len();
    assert!(
        stream < 2 << 20,
        "the stream carries devices only: {stream} bytes"
    );
    let memory = std::fs::metadata(snap_dir.join("memory")).unwrap();
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&memory) * 512 > 16 << 20,
        "the guest's pages are in the memory file"
    );
    assert_eq!(env.json(&["vm", "show", "src"])["state"], "running");
    exec(&env, "src", "echo after > /root/after");
    let src_random = random32(&env, "src");

    // 3. Two forks at once: the file, the process and its memory are there; each is itself.
    let forks: Vec<_> = ["fa", "fb"]
        .iter()
        .map(|name| {
            env.banger_cmd(&["vm", "create", name, "--from", "s1", "-q"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in forks {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "fork: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut randoms = vec![src_random];
    for name in ["fa", "fb"] {
        let vm = env.json(&["vm", "show", name]);
        assert_eq!(vm["state"], "running", "{vm}");
        assert_eq!(vm["forked_from"], "s1", "{vm}");
        let stages: Vec<&str> = vm["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["stage"].as_str())
            .collect();
        assert!(stages.contains(&"identity"), "{stages:?}");
        assert_eq!(exec(&env, name, "cat /root/f").trim(), "before");
        assert_eq!(
            exec(&env, name, "cat /root/after 2>/dev/null || echo absent").trim(),
            "absent",
            "the source's later writes are not in {name}"
        );
        assert_eq!(
            ask_holder(&env, name).trim(),
            told,
            "{name}'s holder's memory"
        );
        assert_eq!(exec(&env, name, "hostname").trim(), name);
        assert_eq!(exec(&env, name, "cat /etc/hostname").trim(), name);
        exec(&env, name, &format!("echo {name} > /root/mine"));
        randoms.push(random32(&env, name));
    }
    for (i, a) in randoms.iter().enumerate() {
        for b in &randoms[i + 1..] {
            assert_ne!(a, b, "two VMs drew the same random bytes");
        }
    }
    assert_eq!(exec(&env, "fa", "cat /root/mine").trim(), "fa");
    assert_eq!(exec(&env, "fb", "cat /root/mine").trim(), "fb");
    assert_eq!(
        exec(&env, "src", "cat /root/mine 2>/dev/null || echo absent").trim(),
        "absent"
    );

    // 4. The source goes; the snapshot and its forks stay. The snapshot cannot go while
    //    forks use it.
    env.ok(&["vm", "delete", "src", "--force"]);
    assert_eq!(ask_holder(&env, "fa").trim(), told);
    let listed = env.json(&["snapshot", "list"]);
    assert_eq!(listed[0]["name"], "s1", "{listed}");
    assert_eq!(
        listed[0]["forks"],
        serde_json::json!(["fa", "fb"]),
        "{listed}"
    );
    let e = env.fails(&["snapshot", "delete", "s1"]);
    assert!(e.contains("fa, fb"), "{e}");
    let e = env.fails(&["image", "delete", &image]);
    assert!(e.contains("s1") || e.contains("fa"), "{e}");

    // 5. A fork stopped cleanly leaves filesystems e2fsck accepts (the snapshot was taken
    //    while a writer was busy on the disk).
    let fa_dir = vm_dir(&env.json(&["vm", "show", "fa"]));
    env.ok(&["vm", "stop", "fa"]);
    for disk in ["root.qcow2", "work.qcow2"] {
        let raw = env.path(&format!("fa-{disk}.raw"));
        let status = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(fa_dir.join(disk))
            .arg(&raw)
            .status()
            .expect("qemu-img (apt-get install qemu-utils)");
        assert!(status.success());
        banger_testkit::tools::e2fsck_clean(&raw);
        std::fs::remove_file(&raw).unwrap();
    }

    // 6. A daemon killed mid-snapshot: no half snapshot is listed, nothing is left over,
    //    and the VM it had paused runs again.
    let before = entries(&snapshots_dir(&env));
    let taking = env
        .banger_cmd(&["vm", "snapshot", "fb", "--name", "s2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait::until_for("the snapshot's directory", GUEST, || {
        entries(&snapshots_dir(&env)).len() > before.len()
    });
    env.kill_daemon();
    let _ = { taking }.wait();
    let listed = env.json(&["snapshot", "list"]); // starts the next daemon
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    eprintln!("killed mid-snapshot; listed after the restart: {names:?}");
    if names.contains(&"s2") {
        // The kill came after the snapshot was recorded: then it is whole.
        assert_eq!(entries(&snapshots_dir(&env)).len(), 2);
    } else {
        assert_eq!(names, ["s1"]);
        assert_eq!(entries(&snapshots_dir(&env)), before, "half snapshot swept");
    }
    let fb = env.json(&["vm", "show", "fb"]);
    assert_eq!(fb["state"], "running", "{fb}");
    assert!(!vm_dir(&fb).join("migrate.sock").exists());
    assert_eq!(ask_holder(&env, "fb").trim(), told, "fb runs again");

    // Cleanup: forks, then the snapshots; nothing is left.
    env.ok(&["vm", "delete", "fa", "--force"]);
    env.ok(&["vm", "delete", "fb", "--force"]);
    for name in names {
        env.ok(&["snapshot", "delete", name]);
    }
    assert_eq!(entries(&snapshots_dir(&env)), Vec::<String>::new());
}

/// The image's systemd and sshd: a fork has host keys of its own, and its sshd serves them.
#[test]
fn a_fork_of_a_systemd_guest_has_its_own_ssh_host_keys() {
    let env = TestEnv::new();
    let image = env.debian_image("dev");
    // Not `--ready multi-user`: on this image that target waits out a 90 s device timeout
    // (no udev for the serial getty). What matters is an sshd already serving the
    // snapshot's key, so the fork must replace keys under a running sshd.
    create_snapshottable(&env, "sys", &image, "768MiB", &[]);
    let key = "cat /etc/ssh/ssh_host_ed25519_key.pub";
    let source_key = exec(&env, "sys", key);
    assert!(source_key.starts_with("ssh-ed25519 "), "{source_key}");
    let source_blob = source_key.split_whitespace().nth(1).unwrap().to_string();
    let served = "ssh-keyscan -t ed25519 127.0.0.1 2>/dev/null | cut -d' ' -f3";
    wait::until_for("sshd in the source to serve its key", GUEST, || {
        exec(&env, "sys", served).trim() == source_blob
    });
    env.ok(&["vm", "snapshot", "sys", "--name", "sys-snap", "--stop"]);
    env.ok(&["vm", "create", "sysf", "--from", "sys-snap", "-q"]);
    let fork_key = exec(&env, "sysf", key);
    assert!(fork_key.starts_with("ssh-ed25519 "), "{fork_key}");
    assert_ne!(
        fork_key, source_key,
        "the fork kept the snapshot's host key"
    );
    // banger's known_hosts has the fork's new key, and the fork's sshd serves it.
    let known = std::fs::read_to_string(env.state_dir().join("ssh/known_hosts")).unwrap();
    let blob = fork_key.split_whitespace().nth(1).unwrap();
    assert!(
        known
            .lines()
            .any(|l| l.starts_with("sysf.vm ") && l.contains(blob)),
        "{known}"
    );
    wait::until_for("sshd to serve the new key", GUEST, || {
        exec(&env, "sysf", served).trim() == blob
    });
    env.ok(&["vm", "delete", "sysf", "--force"]);
    env.ok(&["vm", "delete", "sys", "--force"]);
    env.ok(&["snapshot", "delete", "sys-snap"]);
}
