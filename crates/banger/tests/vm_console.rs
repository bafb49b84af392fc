//! The serial console is the guest's: bounded on the host (`[vm] console_log_max`, the
//! daemon's keeper), read in pieces by `vm logs` whatever the file's size, and shown
//! escaped on a terminal unless `--raw`. One real QEMU guest for all of it.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::{tools, wait};
use common::{TestEnv, vm_dir};

/// The cap the test configures: small, so that the guest's UART (about 0.5 MiB/s under
/// TCG) overflows it many times in a few seconds.
const CAP: u64 = 256 << 10;
/// What the keeper lets pass in one poll (250 ms) on top of the cap, generously.
const POLL_SLACK: u64 = 256 << 10;
/// The OSC 52 sequence a hostile guest prints to set the user's clipboard.
const OSC52: &str = "\x1b]52;c;Y3VybCBldmlsfHNo\x07";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn on_disk(dir: &Path) -> u64 {
    ["console.log", "console.log.1"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
        .sum()
}

fn exec(env: &TestEnv, vm: &str, script: &str) -> Output {
    let out = env
        .banger_cmd(&["vm", "exec", vm, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("vm exec");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `banger ARGS` on a pseudo-terminal (python3's `pty`): what a terminal would receive.
fn on_a_terminal(env: &TestEnv, args: &[&str]) -> Vec<u8> {
    const RUN_ON_PTY: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut cmd = Command::new(tools::require("python3"));
    cmd.args(["-c", RUN_ON_PTY, env!("CARGO_BIN_EXE_banger")])
        .args(args);
    env.apply(&mut cmd);
    let out = cmd.output().expect("python3 pty");
    assert!(out.status.success(), "banger {args:?} on a pty failed");
    out.stdout
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Peak resident memory of `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib << 10
}

#[test]
fn the_console_is_capped_streamed_and_escaped_on_a_terminal() {
    let env = TestEnv::new();
    env.write_config("[vm]\nconsole_log_max = \"256KiB\"\nwarm = false\n");
    let image = env.debian_image("minbase");
    env.ok(&[
        "vm", "create", "c", "--image", &image, "--cpus", "1", "--memory", "384MiB", "-q",
    ]);
    let vm = env.json(&["vm", "show", "c"]);
    let dir = vm_dir(&vm);

    // Eight times the cap through the UART, watched while it flows.
    let flood = (8 * CAP).to_string();
    let mut writer = env
        .banger_cmd(&[
            "vm",
            "exec",
            "c",
            "--",
            "sh",
            "-c",
            &format!(
                "head -c {flood} /dev/zero | tr '\\0' A > /dev/ttyS0; printf '\\nEND-OF-FLOOD\\n' > /dev/ttyS0"
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("vm exec");
    let started = Instant::now();
    let mut most = 0;
    let status = loop {
        most = most.max(on_disk(&dir));
        if let Some(status) = writer.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the flood did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the guest's write failed");
    assert!(
        most <= CAP + POLL_SLACK,
        "{most} bytes on disk while the guest wrote (cap {CAP})"
    );
    wait::until_for(
        "the end of the flood on the console",
        Duration::from_secs(60),
        || {
            std::fs::read(dir.join("console.log")).is_ok_and(|b| contains(&b, b"END-OF-FLOOD"))
                || std::fs::read(dir.join("console.log.1"))
                    .is_ok_and(|b| contains(&b, b"END-OF-FLOOD"))
        },
    );
    wait::until_for(
        "the keeper to cut the log to the cap",
        Duration::from_secs(10),
        || on_disk(&dir) <= CAP,
    );
    assert!(dir.join("console.log.1").exists(), "the log was rotated");

    // `vm logs` gives the newest bytes, at most the cap.
    let logs = env.ok(&["vm", "logs", "c"]);
    assert!(logs.len() as u64 <= CAP, "{} bytes", logs.len());
    assert!(
        logs.trim_end().ends_with("END-OF-FLOOD"),
        "{}",
        &logs[logs.len() - 40..]
    );
    assert!(logs.contains(&"A".repeat(4096)), "the flood's newest part");
    assert_eq!(
        env.ok(&["vm", "logs", "c", "-n", "1"]).trim(),
        "END-OF-FLOOD"
    );

    // An OSC 52 sequence from the guest: text on a terminal, bytes with --raw.
    exec(
        &env,
        "c",
        &format!(
            "printf '{}\\nafter-osc\\n' > /dev/ttyS0",
            OSC52.replace('\x1b', "\\033").replace('\x07', "\\007")
        ),
    );
    wait::until_for(
        "the OSC 52 line on the console",
        Duration::from_secs(30),
        || {
            env.ok(&["vm", "logs", "c", "-n", "1"])
                .contains("after-osc")
        },
    );
    let shown = on_a_terminal(&env, &["vm", "logs", "c", "-n", "3"]);
    assert!(
        contains(&shown, b"\\x1b]52;c;Y3VybCBldmlsfHNo\\x07"),
        "escaped on a terminal: {:?}",
        String::from_utf8_lossy(&shown)
    );
    assert!(!contains(&shown, b"\x1b]52"), "no raw OSC 52 on a terminal");
    let raw = on_a_terminal(&env, &["vm", "logs", "c", "-n", "3", "--raw"]);
    assert!(
        contains(&raw, OSC52.as_bytes()),
        "--raw passes the bytes: {:?}",
        String::from_utf8_lossy(&raw)
    );

    // A huge console (written while no keeper ran) is read in pieces: the daemon's memory
    // stays flat and `vm logs` shows only the newest cap's worth.
    env.ok(&["vm", "stop", "c"]);
    {
        let mut f = std::fs::File::create(dir.join("console.log")).expect("create");
        let line = format!("{}\n", "B".repeat(1023));
        let block = line.repeat(1024);
        for _ in 0..200 {
            f.write_all(block.as_bytes()).expect("write");
        }
        f.write_all(b"LAST-LINE\n").expect("write");
    }
    let daemon = env.daemon_pid();
    let logs = env.banger(&["vm", "logs", "c"]);
    assert!(logs.status.success());
    let text = stdout(&logs);
    assert!(text.len() as u64 <= CAP, "{} bytes", text.len());
    assert!(text.ends_with("LAST-LINE\n"));
    let tail = env.ok(&["vm", "logs", "c", "--tail", "2"]);
    assert_eq!(tail, format!("{}\nLAST-LINE\n", "B".repeat(1023)));
    let peak = peak_rss(daemon);
    assert!(
        peak < 256 << 20,
        "bangerd's peak RSS is {} MiB after reading a 200 MiB console",
        peak >> 20
    );
    env.ok(&["vm", "delete", "c"]);
}
