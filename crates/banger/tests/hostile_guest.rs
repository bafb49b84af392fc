//! The hostile guest, end to end: a real guest in which an unprivileged user runs an
//! impostor agent (`banger-agent`'s `examples/impostor.rs`: it speaks the real protocol
//! with a guessed secret and holds stalled connections to the host's agent port), while
//! the user works with the VM. The host's state is checked afterwards. Faults a real guest
//! cannot easily produce (endless bodies, stalled HTTP/2 streams) are tested in-process in
//! `crates/daemon/src/vms/agent_tests.rs`.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;
use std::time::Duration;

use common::{TestEnv, vm_dir};

fn exec(env: &TestEnv, vm: &str, script: &str) -> Output {
    env.banger(&["vm", "exec", vm, "--", "sh", "-c", script])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Runs `/tmp/impostor MODE` in the guest as `nobody`, in the background, after `prepare`.
fn start_as_nobody(env: &TestEnv, prepare: &str, mode: &str) {
    let out = exec(
        env,
        "h",
        &format!(
            "{prepare} && setpriv --reuid=65534 --regid=65534 --clear-groups /tmp/impostor {mode} \
             </dev/null >>/tmp/impostor.log 2>&1 & echo started"
        ),
    );
    assert!(stdout(&out).contains("started"), "{out:?}");
}

/// Waits (bounded) until the impostor's attempt counter passes `above`.
fn wait_for_attempts(env: &TestEnv, attempts: &dyn Fn(&TestEnv) -> u64, above: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = attempts(env);
        if now > above {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {now} attempts (was {above}); {:?}",
            exec(env, "h", "cat /tmp/impostor.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The guest port of the freezer's thaw listener (published on a free host port).
const THAW_GUEST_PORT: u16 = 7777;

/// Run by guest root: listens on the thaw port, stops the agent (argv[1]) and says so on
/// the console, then lets it go on when the host connects (or after 120 s, so a failed
/// test never leaves it frozen).
const FREEZER: &str = r#"
import os, signal, socket, sys
agent, port = int(sys.argv[1]), int(sys.argv[2])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", port))
listener.listen(1)
os.kill(agent, signal.SIGSTOP)
with open("/dev/console", "w") as console:
    console.write("BANGER-TEST-FROZEN\n")
listener.settimeout(120)
try:
    conn, _ = listener.accept()
finally:
    os.kill(agent, signal.SIGCONT)
conn.sendall(b"thawed\n")
conn.close()
"#;

/// Connects to the freezer's published port until it answers that the agent goes on.
fn thaw(port: u16) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut answer = String::new();
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = conn.read_to_string(&mut answer);
        }
        if answer.contains("thawed") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the freezer in h never answered on port {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_unprivileged_guest_process_cannot_take_the_agent_channel() {
    let env = TestEnv::new();
    // The image's own init (systemd) is PID 1 and the agent its child, which guest root
    // can freeze below (PID 1 ignores SIGSTOP).
    let image = env.debian_image("dev");
    // The published port is how the test thaws the agent it lets guest root freeze below.
    let thaw_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let publish = format!("127.0.0.1:{thaw_port}:{THAW_GUEST_PORT}");
    env.ok(&[
        "vm", "create", "h", "--image", &image, "--cpus", "1", "-p", &publish, "-q",
    ]);
    let vm = env.json(&["vm", "show", "h"]);
    // Any guest process can dial a vsock port; a virtio-serial port is root's alone. The
    // attack needs the vsock channel, which the test tools install (vhost-device-vsock).
    assert_eq!(
        vm["channel"], "vsock",
        "the hostile-guest test needs the vsock channel: run scripts/install-test-deps.sh"
    );
    let dir = vm_dir(&vm);
    // A bystander: its commands must keep working whatever h's guest does.
    // (`debian_image` imports the kernel each time: pull the second image by hand.)
    let layout = banger_testkit::vm::debian_layout("minbase");
    let source = format!("oci:{}:t", layout.display());
    env.ok(&[
        "image",
        "pull",
        &source,
        "--name",
        "minbase",
        "--kernel-ref",
        "cloud",
        "-q",
    ]);
    env.ok(&[
        "vm", "create", "other", "--image", "minbase", "--cpus", "1", "--memory", "256MiB", "-q",
    ]);

    // The boot's secret is nowhere an unprivileged guest user can read it.
    let secret = std::fs::read(dir.join("agent.key")).expect("the boot's agent.key");
    let out = exec(
        &env,
        "h",
        "cat /proc/cmdline; ls /banger 2>&1; setpriv --reuid=65534 --regid=65534 --clear-groups \
         sh -c 'dmesg 2>&1 | tail -n 3'",
    );
    let seen = stdout(&out);
    assert!(
        !seen.contains(&hex(&secret)),
        "the secret leaked into the guest: {seen}"
    );
    assert!(seen.contains("No such file"), "/banger is gone: {seen}");

    // The impostor, as `nobody`, serving the real protocol with a guessed secret.
    let impostor = banger_testkit::vm::impostor_binary();
    env.ok(&[
        "vm",
        "cp",
        "-q",
        impostor.to_str().unwrap(),
        "h:/tmp/impostor",
    ]);
    let daemon = env.daemon_pid();
    let (rss_before, fds_before) = (proc_status_kib(daemon, "VmRSS:"), open_fds(daemon));
    start_as_nobody(
        &env,
        "chmod 755 /tmp/impostor && rm -f /tmp/impostor.count",
        "serve",
    );
    let attempts = |env: &TestEnv| -> u64 {
        stdout(&exec(
            env,
            "h",
            "cat /tmp/impostor.count 2>/dev/null || echo 0",
        ))
        .trim()
        .parse()
        .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while attempts(&env) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the impostor never dialled the host: {:?}",
            exec(&env, "h", "cat /tmp/impostor.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The user's commands reach the real agent (root), never the impostor (nobody).
    for i in 0..100 {
        let out = exec(&env, "h", "echo real; id -u");
        assert_eq!(
            stdout(&out),
            "real\n0\n",
            "exec {i} while the impostor dials: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tried = attempts(&env);
    assert!(tried >= 10, "the impostor kept trying ({tried} attempts)");

    // A restarted daemon: the impostor redials twenty times as often as the real agent, so
    // it is first at the new listener; only the secret keeps it out.
    env.kill_daemon();
    let out = exec(&env, "h", "echo back; id -u");
    assert_eq!(
        stdout(&out),
        "back\n0\n",
        "after a daemon restart under attack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_attempts(
        &env,
        &attempts,
        tried,
        "the impostor dials the restarted daemon",
    );

    // The real agent frozen (by guest root: SIGSTOP) and the daemon restarted: only the
    // impostor dials the new listener, and it must stay out. The test thaws the agent (a
    // connection to the freezer's published port) once another VM has answered; the agent
    // then redials and serves the exec that was waiting.
    let before = attempts(&env);
    let freezer = env.path("freezer.py");
    std::fs::write(&freezer, FREEZER).unwrap();
    env.ok(&[
        "vm",
        "cp",
        "-q",
        freezer.to_str().unwrap(),
        "h:/tmp/freezer.py",
    ]);
    let out = exec(
        &env,
        "h",
        &format!(
            "setsid python3 /tmp/freezer.py $PPID {THAW_GUEST_PORT} </dev/null >/dev/null 2>&1 & \
             echo timer"
        ),
    );
    assert!(stdout(&out).contains("timer"), "{out:?}");
    let console = dir.join("console.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("BANGER-TEST-FROZEN")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent was never frozen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    env.kill_daemon();
    // The exec waits for h's agent on a thread; meanwhile another VM answers at once: one
    // guest's silence holds up no one else.
    let waiting = {
        let cmd = env.banger_cmd(&["vm", "exec", "h", "--", "sh", "-c", "echo thawed; id -u"]);
        std::thread::spawn(move || {
            let mut cmd = cmd;
            cmd.output().expect("vm exec h")
        })
    };
    let other = exec(&env, "other", "echo other");
    assert_eq!(stdout(&other), "other\n", "{other:?}");
    if waiting.is_finished() {
        let out = waiting.join().expect("exec thread");
        panic!("h's exec ended while its agent was frozen: {out:?}");
    }
    thaw(thaw_port);
    let out = waiting.join().expect("exec thread");
    assert_eq!(
        stdout(&out),
        "thawed\n0\n",
        "while the real agent was frozen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_attempts(
        &env,
        &attempts,
        before,
        "the impostor dialled the new daemon",
    );

    // And with 32 stalled connections on top, the real agent still gets through.
    start_as_nobody(&env, "true", "stall");
    env.kill_daemon();
    let out = exec(&env, "h", "echo again; id -u");
    assert_eq!(
        stdout(&out),
        "again\n0\n",
        "after a daemon restart under stalled connections: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let daemon = env.daemon_pid();
    for _ in 0..10 {
        assert_eq!(stdout(&exec(&env, "h", "id -u")), "0\n");
    }

    // The host stays within bounds: memory, descriptors, log lines.
    let rss = proc_status_kib(daemon, "VmRSS:");
    assert!(
        rss < 256 * 1024,
        "daemon RSS {rss} KiB (first daemon: {rss_before} KiB)"
    );
    let fds = open_fds(daemon);
    assert!(
        fds < fds_before + 64,
        "daemon fds {fds} (first daemon: {fds_before})"
    );
    let log = std::fs::read_to_string(env.state_dir().join("bangerd.log")).unwrap();
    let refusals = log
        .lines()
        .filter(|l| l.contains("refused") || l.contains("handshake"))
        .count();
    assert!(
        refusals < 20,
        "refusals are logged at a bounded rate, not per attempt: {refusals} lines"
    );
    assert_eq!(stdout(&exec(&env, "other", "echo still")), "still\n");
    env.ok(&["vm", "kill", "h"]);
    env.ok(&["vm", "kill", "other"]);
}
