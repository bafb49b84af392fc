//! `--rm` is the daemon's: a `vm run --rm` whose CLI is SIGKILLed, or whose output closes
//! early, leaves no VM, VMM process or directory; a `vm create --rm` VM goes when it
//! stops; leased VMs do not survive a daemon restart, unleased `--rm` VMs do. Real guests
//! (minbase, the agent as PID 1), booted one at a time.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{TestEnv, alive, vm_dir};

/// One guest at a time on a shared machine.
static ONE_VM: Mutex<()> = Mutex::new(());

/// Boot plus teardown under software emulation, with room for a loaded machine.
const VM_DEADLINE: Duration = Duration::from_secs(180);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM.lock().unwrap_or_else(|e| e.into_inner())
}

fn vm_names(env: &TestEnv) -> Vec<String> {
    env.json(&["vm", "list"])["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_string())
        .collect()
}

fn find_vm(env: &TestEnv, name: &str) -> Option<serde_json::Value> {
    env.json(&["vm", "list"])["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
}

/// Waits until `name` is running; returns its `vm show`.
fn wait_running(env: &TestEnv, name: &str) -> serde_json::Value {
    banger_testkit::wait::until_for(&format!("vm {name} to run"), VM_DEADLINE, || {
        find_vm(env, name).is_some_and(|v| v["state"] == "running")
    });
    env.json(&["vm", "show", name])
}

/// Waits until no VM record, no VMM process and no VM directory is left of `vm`.
fn wait_vm_gone(env: &TestEnv, vm: &serde_json::Value) {
    let name = vm["name"].as_str().expect("name").to_string();
    let pid = vm["pid"].as_i64().map(|p| p as i32);
    let dir: PathBuf = vm_dir(vm);
    banger_testkit::wait::until_for(
        &format!("vm {name}: record, VMM and directory gone"),
        VM_DEADLINE,
        || !vm_names(env).contains(&name) && pid.is_none_or(|p| !alive(p)) && !dir.exists(),
    );
}

/// Runs `script` in bash with `$0` the banger binary and this installation's environment.
fn bash(env: &TestEnv, script: &str) -> (String, String) {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script, env!("CARGO_BIN_EXE_banger")]);
    env.apply(&mut cmd);
    let out = cmd.output().expect("running bash");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_killed_cli_leaves_no_vm() {
    let _one = serial();
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let mut cli = env
        .banger_cmd(&[
            "vm", "run", "--rm", "--image", &image, "--name", "doomed", "--cpus", "1", "--",
            "sleep", "600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning banger vm run");
    let vm = wait_running(&env, "doomed");
    assert_eq!(vm["auto_remove"], true, "{vm}");
    assert_eq!(vm["leased"], true, "{vm}");
    assert!(vm["pid"].as_i64().is_some_and(|p| alive(p as i32)));
    cli.kill().expect("SIGKILL the CLI");
    cli.wait().expect("reap the CLI");
    wait_vm_gone(&env, &vm);
}

#[test]
fn closing_the_output_early_ends_the_cli_quietly_and_leaves_no_vm() {
    let _one = serial();
    let env = TestEnv::new();
    let image = env.debian_image("minbase");

    // `| head -1`: the first line, the status of a writer whose pipe closed, no panic.
    let stderr_file = env.path("head.stderr");
    let (out, _) = bash(
        &env,
        &format!(
            "\"$0\" vm run --rm --image {image} --cpus 1 -- seq 1000000 2>{} | head -1; \
             echo \"status=${{PIPESTATUS[0]}}\"",
            stderr_file.display()
        ),
    );
    let err = std::fs::read_to_string(&stderr_file).expect("stderr");
    assert_eq!(out, "1\nstatus=141\n", "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(vm_names(&env).is_empty(), "{:?}", vm_names(&env));

    // `2>&1 | true`: the reader is gone before the boot ends; the CLI dies by SIGPIPE at
    // its first line and the daemon, its lease gone, deletes the half-booted VM.
    let (out, err) = bash(
        &env,
        &format!(
            "\"$0\" vm run --rm --image {image} --cpus 1 -- true 2>&1 | true; \
             echo \"status=${{PIPESTATUS[0]}}\""
        ),
    );
    assert_eq!(out, "status=141\n", "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    banger_testkit::wait::until_for("no VM left", VM_DEADLINE, || vm_names(&env).is_empty());
    let vms_dir = env.state_dir().join("vms");
    banger_testkit::wait::until_for("no VM directory left", VM_DEADLINE, || {
        std::fs::read_dir(&vms_dir).is_ok_and(|mut d| d.next().is_none())
    });
}

#[test]
fn a_create_rm_vm_goes_when_stopped_and_leased_vms_not_past_a_restart() {
    let _one = serial();
    let env = TestEnv::new();
    let image = env.debian_image("minbase");

    // `vm create --rm`, stopped: gone. Shown as such before.
    env.ok(&[
        "vm", "create", "once", "--image", &image, "--cpus", "1", "--rm", "-q",
    ]);
    let vm = env.json(&["vm", "show", "once"]);
    assert_eq!(
        (&vm["auto_remove"], &vm["leased"]),
        (&true.into(), &false.into())
    );
    assert!(
        env.ok(&["vm", "show", "once"])
            .contains("when it stops (--rm)")
    );
    let stopped = env.json(&["vm", "stop", "once"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let err = env.fails(&["vm", "show", "once"]);
    assert!(err.contains("not_found"), "{err}");
    wait_vm_gone(&env, &vm);

    // Across a daemon restart: a leased VM is deleted at start (its lease died with the
    // daemon); an unleased --rm VM is adopted and still goes when it stops.
    env.ok(&[
        "vm", "create", "kept", "--image", &image, "--cpus", "1", "--rm", "-q",
    ]);
    let kept = env.json(&["vm", "show", "kept"]);
    let mut cli = env
        .banger_cmd(&[
            "vm", "run", "--rm", "--image", &image, "--name", "leased", "--cpus", "1", "--",
            "sleep", "600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning banger vm run");
    let leased = wait_running(&env, "leased");
    env.kill_daemon();
    // The CLI's exec stream broke with the daemon; whatever it does now, it talks to no one.
    cli.wait().expect("reap the CLI");
    wait_vm_gone(&env, &leased);
    let kept_now = env.json(&["vm", "show", "kept"]);
    assert_eq!(kept_now["state"], "running", "{kept_now}");
    assert_eq!(kept_now["pid"], kept["pid"], "the same VMM, adopted");
    env.ok(&["vm", "kill", "kept"]);
    wait_vm_gone(&env, &kept);
}

/// `bangerd` started by hand (as a service manager would), not by the CLI, applies
/// config.toml's `[daemon]` table: `accel = "tcg"` shows in a VM's acceleration reason.
#[test]
fn a_bangerd_started_directly_applies_the_daemon_table() {
    let _one = serial();
    let env = TestEnv::new();
    env.write_config(&format!("{}[daemon]\naccel = \"tcg\"\n", common::COLD));
    let mut daemon = env
        .bangerd_cmd(&[])
        .env_remove("BANGER_ACCEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning bangerd");
    banger_testkit::wait::until_for("bangerd to answer", VM_DEADLINE, || {
        env.banger(&["daemon", "status"]).status.success()
    });
    assert_eq!(
        env.daemon_pid(),
        daemon.id() as i32,
        "the CLI found our daemon"
    );
    let image = env.debian_image("minbase");
    env.ok(&[
        "vm", "create", "tcg", "--image", &image, "--cpus", "1", "--rm", "-q",
    ]);
    let vm = env.json(&["vm", "show", "tcg"]);
    assert_eq!(vm["accel"], "tcg", "{vm}");
    assert_eq!(
        vm["accel_reason"], "software emulation (TCG), as configured",
        "{vm}"
    );
    env.ok(&["vm", "kill", "tcg"]);
    wait_vm_gone(&env, &vm);
    env.ok(&["daemon", "stop"]);
    daemon.wait().expect("reap bangerd");
}
