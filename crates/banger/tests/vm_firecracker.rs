//! Firecracker VMs through the daemon and the CLI, against the real Firecracker v1.16.1
//! (`../shared/tools`). KVM on these hosts cannot finish booting a guest (no VMX): the
//! Debian kernel gets through early boot, then Firecracker stops with
//! `KVM_EXIT_INTERNAL_ERROR` after 10–30 s. So the daemon runs with `[daemon] accel =
//! "kvm"` (trust /dev/kvm, no probe) and these tests check everything up to "the VMM
//! started the guest, and banger noticed when it died and said why": the console in
//! `vm logs`, the `error` state with the stage reached, `vm kill` and `vm delete` of a
//! starting VM, a daemon killed mid-boot, and that nothing is left behind.
//!
//! A missing Firecracker fails these tests when `CI=true` and skips them (with a message)
//! elsewhere.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use banger_testkit::wait;
use common::{TestEnv, alive, processes_mentioning, vm_dir};

/// How long a guest may take to die here (10–30 s measured) or a boot to be interrupted.
const GUEST_DEATH: Duration = Duration::from_secs(120);

/// A test installation whose daemon trusts /dev/kvm; `None` (skipped) without Firecracker.
fn fc_env() -> Option<TestEnv> {
    let fc = common::firecracker(); // asserts presence under CI=true
    if !fc.is_file() {
        eprintln!(
            "SKIPPED: no Firecracker at {} (../shared/tools); these tests run where it is present",
            fc.display()
        );
        return None;
    }
    let env = TestEnv::new();
    env.write_config(&format!(
        "{}[daemon]\naccel = \"kvm\"\nfirecracker = \"{}\"\n",
        common::COLD,
        fc.canonicalize().expect("firecracker path").display()
    ));
    Some(env)
}

/// `vm create`/`vm start` flags of a Firecracker guest whose early boot reaches the console.
const FC: &[&str] = &[
    "--vmm",
    "firecracker",
    "--kernel-arg",
    "earlyprintk=ttyS0",
    "--kernel-arg",
    "loglevel=8",
];
const SMALL: &[&str] = &["--cpus", "1", "--memory", "256MiB"];

/// `vm create NAME` of a small Firecracker guest with a long readiness deadline: the
/// guest's death (or the test), not the deadline, ends its boot.
fn fc_create<'a>(name: &'a str, image: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "vm",
        "create",
        name,
        "--image",
        image,
        "--ready-timeout",
        "300",
    ];
    args.extend_from_slice(FC);
    args.extend_from_slice(SMALL);
    args
}

/// Nothing of a VM's processes is left: no process, socket or pid file.
fn assert_nothing_running(dir: &Path) {
    assert_eq!(processes_mentioning(dir), Vec::<String>::new());
    for leftover in ["fc.sock", "vsock.sock", "vsock.sock_1025", "pids.json"] {
        assert!(
            !dir.join(leftover).exists(),
            "{leftover} left in {}",
            dir.display()
        );
    }
}

/// `banger ARGS` in the background (a boot that takes its time), output kept for later.
fn spawn(env: &TestEnv, args: &[&str]) -> Child {
    env.banger_cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn banger")
}

/// Waits (bounded) for a background `banger` and returns its stderr; it must have failed.
fn failed(child: Child) -> String {
    let out = std::thread::spawn(move || child.wait_with_output().expect("wait banger"));
    wait::until_for("the background banger to finish", GUEST_DEATH, || {
        out.is_finished()
    });
    let out = out.join().expect("wait thread");
    assert!(!out.status.success(), "expected a failure: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until the VM is `starting` with its VMM's pid recorded; returns that pid.
fn wait_starting(env: &TestEnv, name: &str) -> i32 {
    let mut pid = 0;
    wait::until_for(
        &format!("VM {name} to be starting with a pid"),
        Duration::from_secs(60),
        || {
            // Not found until the create has recorded it.
            let out = env.banger(&["--json", "vm", "show", name]);
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            pid = v["pid"].as_i64().unwrap_or(0) as i32;
            v["state"] == "starting" && pid > 0
        },
    );
    pid
}

#[test]
fn a_firecracker_guest_that_dies_ends_in_error_with_its_console() {
    let Some(env) = fc_env() else { return };
    let image = env.debian_image("minbase");

    let args = fc_create("fc", &image);
    let e = env.fails(&args);
    assert!(
        e.contains("the VMM exited before the agent was ready"),
        "the VMM's exit should end the boot: {e}"
    );
    assert!(
        e.contains("last stage reached: kernel_started"),
        "the console showed the kernel: {e}"
    );
    let console = e
        .split_once("--- console")
        .map(|(_, tail)| tail)
        .unwrap_or_default();
    assert!(
        console.contains("] ") && console.contains("[    "),
        "the console tail holds the kernel's lines: {e}"
    );
    assert!(
        e.contains("The API server received"),
        "Firecracker's own log is quoted: {e}"
    );

    let fc = env.json(&["vm", "show", "fc"]);
    assert_eq!(fc["state"], "error", "{fc}");
    assert_eq!(fc["vmm"], "firecracker", "{fc}");
    assert!(
        fc["vmm_reason"]
            .as_str()
            .is_some_and(|r| r.contains("as asked")),
        "{fc}"
    );
    assert!(
        fc["last_error"]
            .as_str()
            .is_some_and(|m| m.contains("last stage reached: kernel_started")),
        "{fc}"
    );
    let logs = env.ok(&["vm", "logs", "fc"]);
    assert!(logs.contains("Hypervisor detected: KVM"), "{logs}");
    let dir = vm_dir(&fc);
    let fc_log = std::fs::read_to_string(dir.join("firecracker.log")).expect("firecracker.log");
    assert!(
        fc_log.contains("earlyprintk=ttyS0 loglevel=8"),
        "the boot source carries our --kernel-args: {fc_log}"
    );
    assert_nothing_running(&dir);
    env.ok(&["vm", "delete", "fc"]);
    assert!(!dir.exists());
}

#[test]
fn a_starting_firecracker_vm_is_adopted_killed_and_deleted_cleanly() {
    let Some(env) = fc_env() else { return };
    let image = env.debian_image("minbase");

    // 1. The daemon is killed while the guest boots: the next daemon adopts the VM still
    //    `starting` (same Firecracker process) and notices when its guest dies.
    let args = fc_create("fc", &image);
    let create = spawn(&env, &args);
    let pid = wait_starting(&env, "fc");
    let daemon = env.kill_daemon();
    let e = failed(create);
    assert!(!e.is_empty(), "the create's client lost its daemon");
    let fc = env.json(&["vm", "show", "fc"]); // starts the next daemon
    assert_ne!(env.daemon_pid(), daemon);
    assert_eq!(fc["state"], "starting", "adopted mid-boot: {fc}");
    assert_eq!(fc["pid"], pid, "the same Firecracker process: {fc}");
    assert!(alive(pid));
    let dir = vm_dir(&fc);
    let mut fc = fc;
    wait::until_for("the adopted guest to die", GUEST_DEATH, || {
        fc = env.json(&["vm", "show", "fc"]);
        fc["state"] != "starting"
    });
    assert_eq!(fc["state"], "error", "{fc}");
    assert!(
        fc["last_error"]
            .as_str()
            .is_some_and(|m| m.contains("last stage reached") && m.contains("--- console")),
        "{fc}"
    );
    assert!(!alive(pid));
    assert_nothing_running(&dir);

    // 2. `vm kill` of a VM that is still starting does not wait for its boot.
    let start = spawn(&env, &["vm", "start", "fc", "--ready-timeout", "300"]);
    let pid = wait_starting(&env, "fc");
    let killed = env.json(&["vm", "kill", "fc"]);
    assert_eq!(killed["state"], "stopped", "{killed}");
    assert!(!alive(pid), "Firecracker {pid} survived vm kill");
    assert_nothing_running(&dir);
    let e = failed(start);
    assert!(e.contains("did not finish starting"), "{e}");

    // 3. `vm delete --force` of a starting VM: record, directory and processes go.
    let start = spawn(&env, &["vm", "start", "fc", "--ready-timeout", "300"]);
    let pid = wait_starting(&env, "fc");
    env.ok(&["vm", "delete", "fc", "--force"]);
    assert!(!alive(pid), "Firecracker {pid} survived vm delete --force");
    failed(start);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_eq!(processes_mentioning(&dir), Vec::<String>::new());
    assert_eq!(env.json(&["vm", "list"])["vms"], serde_json::json!([]));
}

/// The uid in `/proc/<pid>/status` (real, effective, saved, fs: the first).
fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("Uid line")
}

#[test]
fn a_jailed_firecracker_vm_runs_unprivileged_and_its_jail_goes_after_a_restart() {
    let Some(env) = fc_env() else { return };
    if !common::is_root() {
        eprintln!("SKIPPED: the jailer needs root");
        return;
    }
    let jailer = common::firecracker().with_file_name("jailer");
    let fc = common::firecracker()
        .canonicalize()
        .expect("firecracker path");
    env.write_config(&format!(
        "{}[daemon]\naccel = \"kvm\"\nfirecracker = \"{}\"\njailer = \"{}\"\n",
        common::COLD,
        fc.display(),
        jailer.canonicalize().expect("jailer path").display()
    ));
    let image = env.debian_image("minbase");
    let args = fc_create("jailed", &image);
    let create = spawn(&env, &args);
    let pid = wait_starting(&env, "jailed");
    assert_eq!(uid_of(pid), 65534, "Firecracker runs as nobody in its jail");
    let jails = env.state_dir().join("jail");
    let jail_entries = || -> Vec<String> {
        walk(&jails)
            .into_iter()
            .filter(|p| p.ends_with("root"))
            .collect()
    };
    assert_eq!(jail_entries().len(), 1, "one jail: {:?}", walk(&jails));
    let netns_before = named_netns();
    assert!(
        netns_before.iter().any(|n| n.starts_with("banger-")),
        "the jail's network namespace: {netns_before:?}"
    );

    // The daemon dies; the next one adopts the jailed VM and, at `vm kill`, removes the
    // jail and its namespace, which no launcher is left to clean.
    env.kill_daemon();
    failed(create);
    let vm = env.json(&["vm", "show", "jailed"]);
    assert_eq!(vm["pid"], pid, "adopted: {vm}");
    let killed = env.json(&["vm", "kill", "jailed"]);
    assert_eq!(killed["state"], "stopped", "{killed}");
    assert!(!alive(pid));
    assert_nothing_running(&vm_dir(&vm));
    assert_eq!(jail_entries(), Vec::<String>::new(), "the jail is removed");
    assert!(
        !named_netns().iter().any(|n| n.starts_with("banger-")),
        "the namespace is removed: {:?}",
        named_netns()
    );
    env.ok(&["vm", "delete", "jailed"]);
}

/// Every path under `dir` (as strings), depth first; empty when `dir` is missing.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
    }
    out
}

/// The named network namespaces (`/run/netns`).
fn named_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
