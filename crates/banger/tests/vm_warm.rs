//! Warm starts of real QEMU guests (TCG), through the CLI: a cold `vm run` has the image's
//! ready-snapshot made in the background; VMs with the same settings then start from it,
//! each with its own identity and disks; other settings, `--cold` and `[vm] warm = false`
//! boot; the ready-snapshots go with their image; a daemon killed while a template boots
//! leaves nothing behind.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use banger_testkit::wait;
use common::{TestEnv, vm_dir};

/// How long a guest (or a template's boot and snapshot) may take on a loaded 2-core host.
const GUEST: Duration = Duration::from_secs(180);

/// One small VM's settings; the key of its ready-snapshot.
fn small(image: &str) -> Vec<&str> {
    vec![
        "--image", image, "--cpus", "1", "--memory", "512MiB", "--net", "none",
    ]
}

fn warm_snapshots(env: &TestEnv) -> Vec<serde_json::Value> {
    env.json(&["snapshot", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["warm"] == true)
        .cloned()
        .collect()
}

fn vms(env: &TestEnv) -> Vec<serde_json::Value> {
    env.json(&["vm", "list"])["vms"].as_array().unwrap().clone()
}

fn vm_names(env: &TestEnv) -> Vec<String> {
    vms(env)
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn exec(env: &TestEnv, vm: &str, script: &str) -> String {
    env.ok(&["vm", "exec", vm, "--", "sh", "-c", script])
}

#[test]
fn vms_start_warm_from_the_ready_snapshot_a_cold_start_left() {
    let env = TestEnv::new();
    env.write_config(""); // warm starts on: the daemon's default
    let image = env.debian_image("minbase");
    let base = small(&image);

    // The first run boots, and leaves a ready-snapshot made in the background.
    let out = env.ok(&[
        &["vm", "run", "--rm", "-q"],
        &base[..],
        &["--", "echo", "cold"],
    ]
    .concat());
    assert_eq!(out.trim(), "cold");
    wait::until_for("the ready-snapshot", GUEST, || {
        warm_snapshots(&env).len() == 1
    });
    wait::until_for("the template VM to go", GUEST, || vm_names(&env).is_empty());
    let snap = warm_snapshots(&env).remove(0);
    assert!(
        snap["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{image}@warm-")),
        "{snap}"
    );

    // banger's SSH key changes after the snapshot (a new state's key, say): a VM that starts
    // from it gets the new key authorized as it takes its identity.
    let ssh_dir = env.state_dir().join("ssh");
    for file in ["id_ed25519", "id_ed25519.pub"] {
        std::fs::remove_file(ssh_dir.join(file)).unwrap();
    }

    // Two VMs of the same settings start from it, each its own machine.
    let mut shown = Vec::new();
    for name in ["w1", "w2"] {
        env.ok(&[&["vm", "create", name, "-q"], &base[..]].concat());
        let vm = env.json(&["vm", "show", name]);
        assert_eq!(vm["start"], "warm", "{vm}");
        let stages: Vec<&str> = vm["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert!(stages.contains(&"identity"), "{stages:?}");
        assert_eq!(exec(&env, name, "hostname").trim(), name);
        // The snapshot's files, rewritten for this VM.
        assert_eq!(exec(&env, name, "cat /etc/hostname"), format!("{name}\n"));
        let hosts = exec(&env, name, "cat /etc/hosts");
        assert!(
            hosts
                .lines()
                .any(|l| l.split_whitespace().eq(["127.0.1.1", name])),
            "{hosts}"
        );
        assert!(!hosts.contains("banger-warm-"), "{hosts}");
        let key = std::fs::read_to_string(ssh_dir.join("id_ed25519.pub")).unwrap();
        let authorized = exec(&env, name, "cat /root/.ssh/authorized_keys");
        assert!(
            authorized.lines().any(|l| l.trim() == key.trim()),
            "the new key is not authorized: {authorized}"
        );
        shown.push(vm);
    }
    let random = |vm: &str| {
        exec(
            &env,
            vm,
            "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'",
        )
    };
    assert_ne!(
        random("w1"),
        random("w2"),
        "forks of one snapshot share random bytes"
    );
    // Disks of their own: a write in one is not in the other.
    exec(&env, "w1", "echo mine > /root/f; sync");
    assert_eq!(
        exec(&env, "w2", "cat /root/f 2>/dev/null || echo none").trim(),
        "none"
    );
    // It no longer needs the ready-snapshot: stopped and started, it boots its own disks.
    env.ok(&["vm", "stop", "w1"]);
    env.ok(&["vm", "start", "w1", "-q"]);
    assert_eq!(env.json(&["vm", "show", "w1"])["start"], "cold");
    assert_eq!(exec(&env, "w1", "cat /root/f").trim(), "mine");

    // Other settings, and --cold, boot.
    env.ok(&[&["vm", "create", "c1", "--cold", "-q"], &base[..]].concat());
    assert_eq!(env.json(&["vm", "show", "c1"])["start"], "cold");
    let mut two_cpus = [&["vm", "create", "c2", "-q"], &base[..]].concat();
    let at = two_cpus.iter().position(|a| *a == "--cpus").unwrap();
    two_cpus[at + 1] = "2";
    env.ok(&two_cpus);
    assert_eq!(env.json(&["vm", "show", "c2"])["start"], "cold");

    // The image keeps its ready-snapshots until it goes; they go with it.
    for vm in ["w1", "w2", "c1", "c2"] {
        env.ok(&["vm", "delete", vm, "--force"]);
    }
    wait::until_for("c2's ready-snapshot", GUEST, || {
        warm_snapshots(&env).len() == 2
    });
    wait::until_for("its template to go", GUEST, || vm_names(&env).is_empty());
    env.ok(&["image", "delete", &image]);
    assert!(warm_snapshots(&env).is_empty());
    let left: Vec<_> = std::fs::read_dir(env.state_dir().join("snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "snapshot files left: {left:?}");
    let left = common::processes_mentioning(env.state_dir().join("vms"));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_daemon_killed_while_a_template_boots_leaves_nothing() {
    let env = TestEnv::new();
    env.write_config("");
    let image = env.debian_image("minbase");
    let warm_args = [
        "image", "warm", "-q", &image, "--cpus", "1", "--memory", "512MiB", "--net", "none",
    ];
    let mut warm = env
        .banger_cmd(&warm_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("image warm");
    // Killed once the template's VMM runs.
    let mut template_dir = None;
    wait::until_for("the template's VMM", GUEST, || {
        template_dir = vms(&env)
            .iter()
            .find(|v| v["state"] == "starting" && v["pid"].is_number())
            .map(vm_dir);
        template_dir.is_some()
    });
    let template_dir = template_dir.unwrap();
    env.kill_daemon();
    let _ = warm.wait();

    // The next daemon deletes the template: no VM, no snapshot, no file, no process.
    assert!(vm_names(&env).is_empty(), "{:?}", vm_names(&env));
    assert!(warm_snapshots(&env).is_empty());
    assert!(!template_dir.exists(), "template dir left");
    let snaps: Vec<_> = std::fs::read_dir(env.state_dir().join("snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(snaps.is_empty(), "{snaps:?}");
    wait::until("the template's processes to go", || {
        common::processes_mentioning(&template_dir).is_empty()
    });

    // And a warm start still works: `image warm` makes it, `vm run` uses it.
    env.ok(&warm_args);
    let out = env.ok(&[
        &["vm", "run", "--rm", "-q"],
        &small(&image)[..],
        &["--", "hostname"],
    ]
    .concat());
    assert!(out.trim().starts_with("run-"), "{out}");
}
