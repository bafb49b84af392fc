//! The control plane end to end: `banger` → socket → `bangerd` → SQLite/files.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::{TestEnv, is_root, mode_of, wait_gone};

#[test]
fn register_list_show_delete_round_trip() {
    let env = TestEnv::new();
    let f = env.fixture_files();
    let registered = env.json(&[
        "image",
        "register",
        "--name",
        "dev",
        "--rootfs",
        &f.p("rootfs.ext4"),
        "--kernel",
        &f.p("vmlinux"),
        "--initrd",
        &f.p("initrd.img"),
        "--modules",
        &f.p("modules"),
    ]);
    assert_eq!(registered["name"], "dev");
    assert_eq!(registered["managed"], false);
    assert_eq!(registered["size_bytes"], 64 << 20);

    let list = env.json(&["image", "list"]);
    let list = list.as_array().expect("list is an array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], registered["id"]);

    let shown = env.json(&["image", "show", "dev"]);
    for key in [
        "id",
        "name",
        "managed",
        "artifact_dir",
        "rootfs_path",
        "kernel_path",
        "initrd_path",
        "modules_dir",
        "source_ref",
        "manifest_digest",
        "size_bytes",
        "created_at",
    ] {
        assert!(
            shown.get(key).is_some(),
            "image show --json lacks {key}: {shown}"
        );
    }
    assert_eq!(shown["rootfs_path"], f.p("rootfs.ext4"));
    assert_eq!(shown["initrd_path"], f.p("initrd.img"));
    assert_eq!(shown["modules_dir"], f.p("modules"));
    assert!(shown["artifact_dir"].is_null());
    // By id as well as by name.
    let by_id = env.json(&["image", "show", shown["id"].as_str().expect("id")]);
    assert_eq!(by_id, shown);

    let human = env.ok(&["image", "list"]);
    assert!(human.starts_with("NAME"), "{human}");
    assert!(
        human.contains("dev") && human.contains("registered"),
        "{human}"
    );

    let deleted = env.json(&["image", "delete", "dev"]);
    assert_eq!(deleted["files_removed"], false);
    // An unmanaged image's files are the user's: still there.
    assert!(f.dir.join("rootfs.ext4").is_file());
    assert!(f.dir.join("vmlinux").is_file());
    assert_eq!(env.json(&["image", "list"]), serde_json::json!([]));
    let err = env.fails(&["image", "show", "dev"]);
    assert!(err.contains("not_found"), "{err}");
}

#[test]
fn relative_paths_are_resolved_against_the_callers_directory() {
    let env = TestEnv::new();
    let f = env.fixture_files();
    let out = env
        .banger_cmd(&[
            "--json",
            "image",
            "register",
            "--name",
            "rel",
            "--rootfs",
            "rootfs.ext4",
            "--kernel",
            "vmlinux",
        ])
        .current_dir(&f.dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["rootfs_path"], f.p("rootfs.ext4"));
}

#[test]
fn errors_carry_codes_and_messages() {
    let env = TestEnv::new();
    let f = env.fixture_files();
    let (rootfs, kernel) = (f.p("rootfs.ext4"), f.p("vmlinux"));
    env.ok(&[
        "image", "register", "--name", "dup", "--rootfs", &rootfs, "--kernel", &kernel,
    ]);

    let err = env.fails(&[
        "image", "register", "--name", "dup", "--rootfs", &rootfs, "--kernel", &kernel,
    ]);
    assert!(
        err.contains("already_exists") && err.contains("already exists"),
        "{err}"
    );

    let missing = f.p("nope.ext4");
    let err = env.fails(&[
        "image", "register", "--name", "m", "--rootfs", &missing, "--kernel", &kernel,
    ]);
    assert!(
        err.contains("bad_request") && err.contains(&missing),
        "{err}"
    );

    let err = env.fails(&[
        "image",
        "register",
        "--name",
        "m",
        "--rootfs",
        &rootfs,
        "--kernel",
        &f.p("modules"),
    ]);
    assert!(
        err.contains("not a regular file") && err.contains("modules"),
        "{err}"
    );

    let err = env.fails(&[
        "image", "register", "--name", "Bad_Name", "--rootfs", &rootfs, "--kernel", &kernel,
    ]);
    assert!(
        err.contains("bad_request") && err.contains("Bad_Name"),
        "{err}"
    );

    let err = env.fails(&[
        "image", "register", "--name", "nokernel", "--rootfs", &rootfs,
    ]);
    assert!(
        err.contains("bad_request") && err.contains("kernel"),
        "{err}"
    );

    let err = env.fails(&[
        "image",
        "register",
        "--name",
        "kr",
        "--rootfs",
        &rootfs,
        "--kernel-ref",
        "nope",
    ]);
    assert!(err.contains("not_found") && err.contains("nope"), "{err}");

    // Every API error names an operation id that the daemon log also has.
    let op = err
        .split("operation ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("operation id in error");
    let log = std::fs::read_to_string(env.state_dir().join("bangerd.log")).expect("log");
    assert!(log.contains(op), "operation {op} not in the daemon log");

    // Nothing half-made from the failures.
    assert_eq!(
        env.json(&["image", "list"]).as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn unknown_method_and_bad_json_over_raw_http() {
    let env = TestEnv::new();
    env.ok(&["daemon", "start"]);
    let sock = env.socket();
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&sock)
            .args(args)
            .output()
            .expect("curl (install curl)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = curl(&["-X", "POST", "http://banger/v1/image.frobnicate"]);
    assert!(out.ends_with("404"), "{out}");
    let body: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("body")).expect("json");
    assert_eq!(body["error"]["code"], "unknown_method");
    assert!(
        body["error"]["operation_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("op-"))
    );

    let out = curl(&[
        "-X",
        "POST",
        "-d",
        "{not json",
        "http://banger/v1/image.list",
    ]);
    assert!(out.ends_with("400") && out.contains("bad_request"), "{out}");

    let out = curl(&[
        "-X",
        "POST",
        "-d",
        r#"{"bogus":1}"#,
        "http://banger/v1/image.list",
    ]);
    assert!(out.ends_with("400") && out.contains("bogus"), "{out}");

    let out = curl(&["http://banger/v1/image.list"]);
    assert!(out.ends_with("400") && out.contains("POST"), "{out}");
}

#[test]
fn restart_keeps_data() {
    let env = TestEnv::new();
    let f = env.fixture_files();
    env.register("keep", &f);
    let first = env.daemon_pid();
    env.ok(&["daemon", "stop"]);
    wait_gone(first);
    let out = env.banger(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3), "status of a stopped daemon");
    // Any command starts it again, with the data intact.
    let list = env.json(&["image", "list"]);
    assert_eq!(list[0]["name"], "keep");
    assert_ne!(env.daemon_pid(), first);
}

#[test]
fn socket_and_runtime_dir_are_private() {
    let env = TestEnv::new();
    env.ok(&["daemon", "start"]);
    assert_eq!(mode_of(&env.socket()), 0o600);
    assert_eq!(mode_of(env.socket().parent().expect("dir")), 0o700);
    assert_eq!(mode_of(&env.state_dir()), 0o700);
}

#[test]
fn stale_socket_after_kill_9_is_recovered() {
    let env = TestEnv::new();
    let f = env.fixture_files();
    env.register("a", &f);
    let pid = env.daemon_pid();
    // SAFETY: plain kill(2) of the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_gone(pid);
    assert!(
        env.socket().exists(),
        "a killed daemon leaves its socket behind"
    );
    let list = env.json(&["image", "list"]);
    assert_eq!(list[0]["name"], "a");
    assert_ne!(env.daemon_pid(), pid);
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let env = TestEnv::new();
    env.ok(&["daemon", "start"]);
    let pid = env.daemon_pid();
    // SAFETY: plain kill(2) of the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_gone(pid);
    assert!(
        !env.socket().exists(),
        "socket removed on graceful shutdown"
    );
    let log = std::fs::read_to_string(env.state_dir().join("bangerd.log")).expect("log");
    assert!(
        log.contains("SIGTERM") && log.contains("bangerd stopped"),
        "{log}"
    );
}

#[test]
fn two_daemons_cannot_share_a_state_dir() {
    let env = TestEnv::new();
    env.ok(&["daemon", "start"]);
    let pid = env.daemon_pid();

    // Same layout: refused.
    let out = env.bangerd_cmd(&[]).output().expect("bangerd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another bangerd") && err.contains(&pid.to_string()),
        "{err}"
    );

    // Same state dir, different socket: still refused.
    let other_run = env.path("other-run");
    let out = env
        .bangerd_cmd(&["--runtime-dir", other_run.to_str().expect("utf8")])
        .output()
        .expect("bangerd");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another bangerd"));

    // The first daemon is unaffected and its socket still works.
    assert_eq!(env.daemon_pid(), pid);
    assert!(env.socket().exists());
}

#[test]
fn another_uid_is_refused() {
    assert!(
        is_root(),
        "this test switches to uid 65534 and must run as root (CI does)"
    );
    let env = TestEnv::new();
    env.ok(&["daemon", "start"]);
    let as_nobody = |program: &str, args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
            .args(args);
        env.apply(&mut cmd);
        cmd.output().expect("setpriv (util-linux)")
    };

    // With the default modes another user cannot even reach the socket.
    std::fs::set_permissions(env.root.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let out = as_nobody(env!("CARGO_BIN_EXE_banger"), &["image", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ermission denied"), "{err}");

    // Even if the modes are loosened, the daemon checks peer credentials.
    let run_dir = env.socket().parent().expect("dir").to_path_buf();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(env.socket(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sock = env.socket();
    let out = as_nobody(
        "curl",
        &[
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            sock.to_str().expect("utf8"),
            "-X",
            "POST",
            "http://banger/v1/image.list",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("403"), "{text}");
    assert!(
        text.contains("unauthorized") && text.contains("65534"),
        "{text}"
    );
}

#[test]
fn doctor_and_version_report() {
    let env = TestEnv::new();
    let out = env.banger(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "e2fsck",
        "qemu-system-x86_64",
        "firecracker",
        "/dev/kvm",
        "acceleration",
        "qemu version",
        "vsock backend",
        "guest agent",
        "disk",
    ] {
        assert!(text.contains(name), "doctor does not check {name}: {text}");
    }
    assert!(
        text.lines().all(|l| l.starts_with("PASS")
            || l.starts_with("WARN")
            || l.starts_with("FAIL")
            || l.trim_start().starts_with("fix:")),
        "{text}"
    );
    let v = env.json(&["doctor"]);
    let checks = v.as_array().expect("a list of checks");
    let accel = checks
        .iter()
        .find(|c| c["name"] == "acceleration")
        .expect("acceleration check");
    let detail = accel["detail"].as_str().expect("detail");
    // Which VMM and accelerator `vm create` will use, and why (the probe's verdict here).
    assert!(detail.contains("vm create uses QEMU with"), "{detail}");
    assert!(
        detail.contains("KVM") && (detail.contains("probe") || accel["verdict"] == "PASS"),
        "{detail}"
    );
    let agent = checks
        .iter()
        .find(|c| c["name"] == "guest agent")
        .expect("agent check");
    assert_eq!(
        agent["verdict"], "PASS",
        "the tests' agent is found: {agent}"
    );

    let v = env.json(&["version"]);
    assert_eq!(v["cli"], env!("CARGO_PKG_VERSION"));
    assert!(v["daemon"].is_null(), "version must not start the daemon");
}

/// `--state-dir/--cache-dir/--runtime-dir` on the CLI beat the XDG variables, and a daemon
/// the CLI starts serves exactly those directories (relative ones made absolute).
#[test]
fn directories_given_as_flags_override_xdg() {
    let env = TestEnv::new();
    let f = env.fixture_files();
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let dirs = ["--state-dir", "s", "--cache-dir", "c", "--runtime-dir", "r"];
    let banger = |args: &[&str]| {
        let mut all = dirs.to_vec();
        all.extend_from_slice(args);
        let out = env
            .banger_cmd(&all)
            .current_dir(&elsewhere)
            .output()
            .expect("run banger");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Stops the flag-configured daemon even if an assertion fails first.
    struct StopDaemon<'a>(&'a TestEnv, PathBuf);
    impl Drop for StopDaemon<'_> {
        fn drop(&mut self) {
            let runtime = self.1.join("r");
            let _ = self
                .0
                .banger_cmd(&[
                    "--runtime-dir",
                    &runtime.to_string_lossy(),
                    "daemon",
                    "stop",
                ])
                .output();
        }
    }
    let _stop = StopDaemon(&env, elsewhere.clone());
    banger(&[
        "image",
        "register",
        "--name",
        "flagged",
        "--rootfs",
        &f.p("rootfs.ext4"),
        "--kernel",
        &f.p("vmlinux"),
    ]);
    assert!(elsewhere.join("s/banger.db").is_file());
    assert!(elsewhere.join("s/bangerd.log").is_file());
    assert!(elsewhere.join("r/bangerd.sock").exists());
    let status: serde_json::Value =
        serde_json::from_str(&banger(&["--json", "version"])).expect("json");
    assert_eq!(
        status["daemon"]["state_dir"],
        elsewhere.join("s").to_string_lossy().as_ref()
    );
    // The XDG installation is untouched: its own daemon starts empty.
    assert!(!env.socket().exists());
    assert_eq!(env.json(&["image", "list"]), serde_json::json!([]));
    assert!(banger(&["image", "list"]).contains("flagged"));
    banger(&["daemon", "stop"]);
    assert!(!elsewhere.join("r/bangerd.sock").exists());
}
