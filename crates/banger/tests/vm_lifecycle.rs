//! The VM lifecycle end to end, through the CLI: real `bangerd`, real QEMU guests under
//! software emulation booting Debian's cloud kernel with banger's initramfs and agent,
//! images made by `debootstrap` and pulled with `banger image pull`.
//!
//! Guests are expensive (seconds each): every test boots as few as its assertions need
//! and reuses a running guest across assertions that do not interfere.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use banger_testkit::oci_image::sha256;
use banger_testkit::wait;
use common::{TestEnv, processes_mentioning, vm_dir};

/// Small guests: the suite runs several at once on two cores.
const SMALL: &[&str] = &["--cpus", "1", "--memory", "384MiB"];

fn create(env: &TestEnv, name: &str, image: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["vm", "create", name, "--image", image];
    if !extra.contains(&"--memory") {
        args.extend_from_slice(SMALL);
    }
    args.extend_from_slice(extra);
    let (_, stderr) = env.ok_with_stderr(&args);
    assert!(
        stderr.contains("ready"),
        "create showed no ready stage: {stderr}"
    );
    env.json(&["vm", "show", name])
}

/// `banger vm exec NAME ARGS…`, bounded: an exec that hangs fails the test.
fn exec(env: &TestEnv, name: &str, args: &[&str]) -> Output {
    exec_with(env, name, &[], args, None)
}

fn exec_with(
    env: &TestEnv,
    name: &str,
    flags: &[&str],
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Output {
    let mut all = vec!["vm", "exec", name];
    all.extend_from_slice(flags);
    all.push("--");
    all.extend_from_slice(args);
    let mut cmd = env.banger_cmd(&all);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn banger vm exec");
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            pipe.write_all(&data).expect("write stdin");
        })
    });
    let pid = child.id();
    let out = std::thread::spawn(move || child.wait_with_output().expect("wait exec"));
    wait::until_for(
        &format!("`banger vm exec {name} -- {args:?}` to finish"),
        Duration::from_secs(120),
        || out.is_finished(),
    );
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    let _ = pid;
    out.join().expect("exec thread")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn file_sha256(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

#[test]
fn a_container_image_boots_execs_persists_and_leaves_nothing() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let rootfs = PathBuf::from(
        env.json(&["image", "show", &image])["rootfs_path"]
            .as_str()
            .expect("rootfs_path"),
    );
    let rootfs_sha = file_sha256(&rootfs);

    let a = create(&env, "a", &image, &[]);
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["init"], "agent", "minbase has no init system: {a}");
    assert_eq!(a["channel"], "vsock", "{a}");
    assert_eq!(a["vmm"], "qemu", "{a}");
    assert!(
        a["vmm_reason"].as_str().is_some_and(|r| r.contains("QEMU")),
        "`--vmm auto` says why: {a}"
    );
    let stages: Vec<&str> = a["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|s| s["stage"].as_str())
        .collect();
    for s in ["vmm_spawned", "agent_connected", "root_assembled", "ready"] {
        assert!(stages.contains(&s), "stage {s} missing from {stages:?}");
    }
    // Creating a VM copies nothing of the image.
    let allocated = a["root_disk"]["allocated_bytes"].as_u64().expect("alloc")
        + a["work_disk"]["allocated_bytes"].as_u64().expect("alloc");
    assert!(allocated < 64 << 20, "a new VM allocated {allocated} bytes");
    let list = env.json(&["vm", "list"]);
    assert_eq!(list["vms"][0]["name"], "a");

    // Exit codes, stdin, separate streams, signals, start failures, a tty.
    assert_eq!(exec(&env, "a", &["true"]).status.code(), Some(0));
    assert_eq!(
        exec(&env, "a", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    let input: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let echoed = exec_with(&env, "a", &["-i"], &["cat"], Some(input.clone()));
    assert_eq!(echoed.status.code(), Some(0), "{}", stderr(&echoed));
    assert!(
        echoed.stdout == input,
        "stdin came back with {} bytes",
        echoed.stdout.len()
    );
    let split = exec(&env, "a", &["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(stdout(&split), "out\n");
    assert_eq!(stderr(&split), "err\n");
    let made = exec(
        &env,
        "a",
        &[
            "sh",
            "-c",
            "head -c 52428800 /dev/urandom > /tmp/big && sha256sum /tmp/big",
        ],
    );
    assert_eq!(made.status.code(), Some(0), "{}", stderr(&made));
    let guest_sha = stdout(&made)
        .split_whitespace()
        .next()
        .expect("sha")
        .to_string();
    let big = exec(&env, "a", &["cat", "/tmp/big"]);
    assert_eq!(big.stdout.len(), 52_428_800);
    assert_eq!(sha256(&big.stdout).trim_start_matches("sha256:"), guest_sha);
    let missing = exec(&env, "a", &["no-such-program", "x"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(
        stderr(&missing).contains("no-such-program"),
        "{}",
        stderr(&missing)
    );
    let signalled = exec(&env, "a", &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(signalled.status.code(), Some(128 + 15));
    let tty = exec_with(&env, "a", &["-t"], &["tty"], None);
    assert!(stdout(&tty).starts_with("/dev/pts/"), "{}", stdout(&tty));
    // Ctrl-C reaches the guest process, whose death by SIGINT is the exit code.
    let mut sleeper = env
        .banger_cmd(&[
            "vm",
            "exec",
            "a",
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 300",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let mut first = [0u8; 8];
    std::io::Read::read_exact(sleeper.stdout.as_mut().expect("stdout"), &mut first)
        .expect("started");
    // SAFETY: kill(2) of the banger CLI this test spawned.
    unsafe { libc::kill(sleeper.id() as i32, libc::SIGINT) };
    let status = sleeper.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(128 + 2),
        "Ctrl-C should end the guest's sleep"
    );

    // Both disks persist across stop/start.
    let wrote = exec(
        &env,
        "a",
        &[
            "sh",
            "-c",
            "echo root > /etc/banger-note && echo work > /root/work-note && sync",
        ],
    );
    assert_eq!(wrote.status.code(), Some(0), "{}", stderr(&wrote));
    let stopped = env.json(&["vm", "stop", "a"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(processes_mentioning(vm_dir(&a).to_str().expect("utf8")).is_empty());
    let refused = env.fails(&["vm", "exec", "a", "--", "true"]);
    assert!(refused.contains("not running"), "{refused}");
    env.ok(&["vm", "start", "a"]);
    let notes = exec(&env, "a", &["cat", "/etc/banger-note", "/root/work-note"]);
    assert_eq!(stdout(&notes), "root\nwork\n", "{}", stderr(&notes));

    // A new VM of the same image sees none of it, over the virtio-serial fallback.
    let b = create(&env, "b", &image, &["--channel", "serial"]);
    assert_eq!(b["channel"], "serial", "{b}");
    let clean = exec(
        &env,
        "b",
        &[
            "sh",
            "-c",
            "test ! -e /etc/banger-note && test ! -e /root/work-note && hostname",
        ],
    );
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert_eq!(stdout(&clean), "b\n");

    // The image is in use; running VMs are not deleted by accident.
    let in_use = env.fails(&["image", "delete", &image]);
    assert!(in_use.contains("a, b"), "{in_use}");
    let running = env.fails(&["vm", "delete", "a"]);
    assert!(running.contains("--force"), "{running}");
    env.ok(&["vm", "stop", "a"]);
    env.ok(&["vm", "delete", "a"]);
    env.ok(&["vm", "delete", "b", "--force"]);
    assert_eq!(env.json(&["vm", "list"])["vms"], serde_json::json!([]));
    for vm in [&a, &b] {
        assert!(!vm_dir(vm).exists(), "{} left behind", vm_dir(vm).display());
        assert!(processes_mentioning(vm_dir(vm).to_str().expect("utf8")).is_empty());
    }
    assert_eq!(
        file_sha256(&rootfs),
        rootfs_sha,
        "the image's rootfs changed"
    );
    env.ok(&["image", "delete", &image]);
}

fn states(env: &TestEnv) -> Vec<(String, String)> {
    env.json(&["vm", "list"])["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or("").to_string(),
                v["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn vms_outlive_a_killed_daemon() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let keep = create(&env, "keep", &image, &[]);
    let lose = create(&env, "lose", &image, &["--channel", "serial"]);

    // Both survive a kill -9 of the daemon and are adopted again by the next one.
    env.kill_daemon();
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        states(&env),
        pairs(&[("keep", "running"), ("lose", "running")])
    );
    for name in ["keep", "lose"] {
        let hi = exec(&env, name, &["echo", "still here"]);
        assert_eq!(stdout(&hi), "still here\n", "{name}: {}", stderr(&hi));
    }
    assert_eq!(env.json(&["vm", "show", "keep"])["pid"], keep["pid"]);

    // A VM whose QEMU dies while no daemon runs comes back stopped, with nothing left.
    env.kill_daemon();
    let lose_pid = lose["pid"].as_i64().expect("pid") as i32;
    // SAFETY: plain kill(2) of a QEMU this test started (through banger).
    unsafe { libc::kill(lose_pid, libc::SIGKILL) };
    common::wait_gone(lose_pid);
    assert_eq!(
        states(&env),
        pairs(&[("keep", "running"), ("lose", "stopped")])
    );
    let lose_dir = vm_dir(&lose);
    assert!(processes_mentioning(lose_dir.to_str().expect("utf8")).is_empty());
    for leftover in ["agent.sock", "vsock.sock", "vhost-vsock.sock", "pids.json"] {
        assert!(!lose_dir.join(leftover).exists(), "{leftover} left behind");
    }
    assert_eq!(stdout(&exec(&env, "keep", &["echo", "ok"])), "ok\n");
    env.ok(&["vm", "start", "lose"]);
    assert_eq!(stdout(&exec(&env, "lose", &["hostname"])), "lose\n");

    // `vm restart`: the disks are kept, the processes are not.
    let marker = exec(
        &env,
        "keep",
        &[
            "sh",
            "-c",
            "echo kept > /root/kept; sync; nohup sleep 1000 >/dev/null 2>&1 & echo $!",
        ],
    );
    let sleeper = stdout(&marker).trim().to_string();
    let before = env.json(&["vm", "show", "keep"]);
    let (_, progress) = env.ok_with_stderr(&["vm", "restart", "keep"]);
    assert!(
        progress.contains("stopped") && progress.contains("ready"),
        "{progress}"
    );
    let after = env.json(&["vm", "show", "keep"]);
    assert_eq!(after["state"], "running");
    assert_ne!(after["pid"], before["pid"], "a new VMM");
    assert_eq!(
        stdout(&exec(&env, "keep", &["cat", "/root/kept"])),
        "kept\n"
    );
    let gone = exec(
        &env,
        "keep",
        &[
            "sh",
            "-c",
            &format!("kill -0 {sleeper} 2>/dev/null && echo alive || echo gone"),
        ],
    );
    assert_eq!(stdout(&gone), "gone\n");

    // `vm stats`: the guest's numbers agree with its /proc, the disks' with `du`.
    let stats = env.json(&["vm", "stats", "keep"]);
    let meminfo = stdout(&exec(
        &env,
        "keep",
        &["cat", "/proc/meminfo", "/proc/uptime"],
    ));
    let kib = |name: &str| -> f64 {
        let line = meminfo.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            * 1024.0
    };
    let within = |what: &str, got: f64, want: f64| {
        assert!(
            (got - want).abs() <= want.abs() * 0.10,
            "{what}: vm stats says {got}, the source {want}"
        );
    };
    let guest = &stats["guest"];
    within(
        "MemTotal",
        guest["memory_total_bytes"].as_f64().unwrap(),
        kib("MemTotal:"),
    );
    within(
        "MemAvailable",
        guest["memory_available_bytes"].as_f64().unwrap(),
        kib("MemAvailable:"),
    );
    let uptime: f64 = meminfo
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    within("uptime", guest["uptime_secs"].as_f64().unwrap(), uptime);
    assert!(guest["cpu_system_secs"].as_f64().unwrap() > 0.0, "{stats}");
    let du = |file: &str| -> f64 {
        let out = std::process::Command::new("du")
            .args(["--block-size=1"])
            .arg(vm_dir(&keep).join(file))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    within(
        "root disk",
        stats["host"]["root_disk"]["allocated_bytes"]
            .as_f64()
            .unwrap(),
        du("root.ext4"),
    );
    within(
        "work disk",
        stats["host"]["work_disk"]["allocated_bytes"]
            .as_f64()
            .unwrap(),
        du("work.ext4"),
    );
    assert!(
        stats["host"]["vmm_pss_bytes"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        stats["host"]["vmm_cpu_secs"].as_f64().unwrap() > 0.0,
        "{stats}"
    );

    // `vm prune`: exactly the VMs that are not up go (here: a stopped and a created one).
    env.ok(&["vm", "stop", "lose"]);
    env.ok(&["vm", "create", "idle", "--image", &image, "--no-start"]);
    let refused = env.fails(&["vm", "prune"]);
    assert!(refused.contains("--force"), "{refused}");
    let listed = env.json(&["vm", "list"])["vms"].as_array().unwrap().len();
    assert_eq!(listed, 3, "nothing pruned without a confirmation");
    let pruned = env.json(&["vm", "prune", "--force"]);
    let mut deleted: Vec<String> = pruned["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["idle", "lose"]);
    assert!(pruned["freed_bytes"].as_u64().unwrap() > 0, "{pruned}");
    assert_eq!(states(&env), pairs(&[("keep", "running")]));
    assert!(!lose_dir.exists(), "the pruned VM's directory is gone");
    env.ok(&["vm", "delete", "keep", "--force"]);
    assert!(processes_mentioning(vm_dir(&keep).to_str().expect("utf8")).is_empty());
}

#[test]
fn parallel_creates_all_come_up_and_a_name_is_taken_once() {
    let env = std::sync::Arc::new(TestEnv::new());
    let image = env.debian_image("minbase");
    let handles: Vec<_> = ["p1", "p2", "p3", "p4", "same", "same"]
        .into_iter()
        .map(|name| {
            let env = env.clone();
            let image = image.clone();
            std::thread::spawn(move || {
                let mut args = vec!["vm", "create", name, "--image", &image, "-q"];
                args.extend_from_slice(&["--cpus", "1", "--memory", "256MiB"]);
                (name, env.banger(&args))
            })
        })
        .collect();
    let results: Vec<(&str, Output)> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    for (name, out) in &results {
        if *name != "same" {
            assert!(out.status.success(), "create {name}: {}", stderr(out));
        }
    }
    let same: Vec<&Output> = results
        .iter()
        .filter(|(n, _)| *n == "same")
        .map(|(_, o)| o)
        .collect();
    let won = same.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "two creates of one name: {} succeeded", won);
    let lost = same.iter().find(|o| !o.status.success()).expect("a loser");
    assert!(stderr(lost).contains("already exists"), "{}", stderr(lost));
    let list = env.json(&["vm", "list"]);
    let vms = list["vms"].as_array().expect("vms");
    assert_eq!(vms.len(), 5, "{list}");
    assert!(vms.iter().all(|v| v["state"] == "running"), "{list}");
    for name in ["p1", "p2", "p3", "p4", "same"] {
        assert_eq!(
            stdout(&exec(&env, name, &["hostname"])),
            format!("{name}\n")
        );
        env.ok(&["vm", "delete", name, "--force"]);
    }
    let left: Vec<_> = std::fs::read_dir(env.state_dir().join("vms"))
        .expect("vms dir")
        .collect();
    assert!(left.is_empty(), "VM dirs left: {left:?}");
}

#[test]
fn bad_requests_are_clear_and_leave_nothing() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let vms_dir = env.state_dir().join("vms");
    let nothing_left = || {
        assert_eq!(env.json(&["vm", "list"])["vms"], serde_json::json!([]));
        let left: Vec<_> = std::fs::read_dir(&vms_dir)
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    };

    // A kernel whose modules tree lacks what the guest needs.
    let kernel = banger_testkit::qemu::Kernel::get();
    let mods = env.path("no-modules");
    std::fs::create_dir_all(&mods).expect("mkdir");
    std::fs::write(mods.join("modules.builtin"), b"").expect("write");
    std::fs::write(mods.join("modules.dep"), b"").expect("write");
    let vmlinuz = kernel.vmlinuz.to_str().expect("utf8");
    env.ok(&[
        "kernel",
        "import",
        "bare",
        "--kernel",
        vmlinuz,
        "--modules",
        mods.to_str().expect("utf8"),
    ]);
    let layout = banger_testkit::vm::debian_layout("minbase");
    let source = format!("oci:{}:t", layout.display());
    env.ok(&[
        "image",
        "pull",
        &source,
        "--name",
        "nomods",
        "--kernel-ref",
        "bare",
        "-q",
    ]);
    let e = env.fails(&["vm", "create", "x", "--image", "nomods"]);
    assert!(e.contains("module") && e.contains("virtio"), "{e}");
    nothing_left();

    let e = env.fails(&[
        "vm",
        "create",
        "x",
        "--image",
        &image,
        "--memory",
        "100000GiB",
    ]);
    assert!(e.contains("host") && e.contains("MiB"), "{e}");
    let e = env.fails(&["vm", "create", "x", "--image", &image, "--cpus", "999"]);
    assert!(e.contains("CPUs"), "{e}");
    let e = env.fails(&["vm", "create", "Bad_Name", "--image", &image]);
    assert!(e.contains("name"), "{e}");
    let e = env.fails(&["vm", "create", "x", "--image", "no-such-image"]);
    assert!(e.contains("no image"), "{e}");
    if common::firecracker().is_file() {
        // Firecracker is installed, but KVM cannot boot guests on this host.
        let e = env.fails(&[
            "vm",
            "create",
            "x",
            "--image",
            &image,
            "--vmm",
            "firecracker",
        ]);
        assert!(e.contains("KVM"), "{e}");
    } else {
        eprintln!(
            "SKIP --vmm firecracker check: no Firecracker at {}",
            common::firecracker().display()
        );
    }
    nothing_left();

    // An image of another architecture.
    let arm = env.path("arm-layout");
    let layer = banger_testkit::layers::LayerBuilder::new()
        .file("etc/hostname", b"arm\n")
        .finish();
    let written = banger_testkit::oci_image::write_image(
        &arm,
        &[banger_testkit::oci_image::Layer {
            tar: layer,
            compression: banger_testkit::oci_image::Compression::Gzip,
        }],
        "arm64",
    );
    banger_testkit::oci_image::write_index(
        &arm,
        vec![serde_json::json!({
            "mediaType": banger_testkit::oci_image::MT_MANIFEST,
            "digest": written.manifest_digest,
            "size": written.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        })],
    );
    let odd_kernel = env.path("odd-kernel");
    std::fs::write(&odd_kernel, b"not a kernel banger can identify").expect("write");
    let arm_source = format!("oci:{}:latest", arm.display());
    let pulled = env.banger(&[
        "image",
        "pull",
        &arm_source,
        "--name",
        "armimg",
        "--platform",
        "linux/arm64",
        "--kernel",
        odd_kernel.to_str().expect("utf8"),
        "-q",
    ]);
    if pulled.status.success() {
        let e = env.fails(&["vm", "create", "x", "--image", "armimg"]);
        assert!(e.contains("arm64") && e.contains("--platform"), "{e}");
    } else {
        panic!("could not pull the arm64 fixture: {}", stderr(&pulled));
    }
    nothing_left();

    // A taken name, before anything boots.
    env.ok(&["vm", "create", "y", "--image", &image, "--no-start"]);
    let e = env.fails(&["vm", "create", "y", "--image", &image, "--no-start"]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(env.json(&["vm", "show", "y"])["state"], "created");
    let e = env.fails(&["vm", "exec", "y", "--", "true"]);
    assert!(e.contains("not running"), "{e}");
    env.ok(&["vm", "delete", "y"]);
    nothing_left();
}

#[test]
fn a_guest_that_cannot_come_up_says_why_and_stays_for_logs() {
    let env = TestEnv::new();
    env.debian_image("minbase"); // imports the `cloud` kernel
    let junk = env.path("junk.ext4");
    std::fs::File::create(&junk)
        .and_then(|f| f.set_len(64 << 20))
        .expect("junk rootfs");
    env.ok(&[
        "image",
        "register",
        "--name",
        "broken",
        "--rootfs",
        junk.to_str().expect("utf8"),
        "--kernel-ref",
        "cloud",
    ]);
    let e = env.fails(&[
        "vm",
        "create",
        "z",
        "--image",
        "broken",
        "--ready-timeout",
        "90",
    ]);
    assert!(
        e.contains("failed to start") && e.contains("last stage reached"),
        "{e}"
    );
    assert!(
        e.contains("FATAL"),
        "the console tail should show the agent's error: {e}"
    );
    let z = env.json(&["vm", "show", "z"]);
    assert_eq!(z["state"], "error", "{z}");
    assert!(
        z["last_error"]
            .as_str()
            .is_some_and(|m| m.contains("FATAL")),
        "{z}"
    );
    let logs = env.ok(&["vm", "logs", "z"]);
    assert!(logs.contains("FATAL"), "{logs}");
    assert!(processes_mentioning(vm_dir(&z).to_str().expect("utf8")).is_empty());
    env.ok(&["vm", "delete", "z"]);
}

#[test]
fn a_systemd_image_hands_pid_1_over_and_keeps_exec() {
    let env = TestEnv::new();
    let image = env.debian_image("dev");
    let d = create(
        &env,
        "d",
        &image,
        &["--init", "image", "--memory", "768MiB"],
    );
    assert_eq!(d["init"], "image", "{d}");
    let pid1 = exec(&env, "d", &["cat", "/proc/1/comm"]);
    assert_eq!(stdout(&pid1), "systemd\n", "{}", stderr(&pid1));
    wait::until_for(
        "systemd to reach multi-user",
        Duration::from_secs(300),
        || {
            let s = exec(&env, "d", &["systemctl", "is-active", "multi-user.target"]);
            stdout(&s).trim() == "active"
        },
    );
    assert_eq!(stdout(&exec(&env, "d", &["echo", "ok"])), "ok\n");
    env.ok(&["vm", "stop", "d"]);
    env.ok(&["vm", "delete", "d"]);
}

/// `[vm] stop_idle_after`: a VM nobody uses is stopped (with a note saying why), one with
/// a command running is not, and `vm show` says when the stop comes.
#[test]
fn an_idle_vm_is_stopped_and_a_busy_one_is_not() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    env.write_config("[vm]\nwarm = false\nstop_idle_after = \"5s\"\n");
    create(&env, "busy", &image, &["--net", "none"]);
    // A session held open for longer than the limit: the VM is in use all along.
    let mut session = env
        .banger_cmd(&["vm", "exec", "busy", "--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    create(&env, "idle", &image, &["--net", "none"]);
    let shown = env.ok(&["vm", "show", "idle"]);
    assert!(
        shown.contains("Idle stop") && shown.contains("after 5s idle"),
        "{shown}"
    );

    wait::until_for("the idle VM to stop", Duration::from_secs(60), || {
        env.json(&["vm", "show", "idle"])["state"] == "stopped"
    });
    let idle = env.json(&["vm", "show", "idle"]);
    assert!(
        idle["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("stop_idle_after"),
        "{idle}"
    );
    // The busy one has been up longer than the idle one was, its session still open.
    assert_eq!(env.json(&["vm", "show", "busy"])["state"], "running");
    assert!(
        session.try_wait().unwrap().is_none(),
        "the session ended early"
    );
    let _ = session.kill();
    let _ = session.wait();
    env.ok(&["vm", "delete", "busy", "--force"]);
    env.ok(&["vm", "delete", "idle"]);
}
