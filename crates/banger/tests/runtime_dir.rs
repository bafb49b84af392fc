//! The socket's directory and its server are checked before the CLI trusts them, and what
//! a daemon relays is printed with its control characters made visible.
//!
//! Without `XDG_RUNTIME_DIR` the socket lives in the shared temp dir; these tests give each
//! run its own sticky, world-writable temp dir (`TMPDIR`), as `/tmp` is.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestEnv, is_root, mode_of};

const NOBODY: u32 = 65534;
const FAKE_DAEMON_ENV: &str = "BANGER_TEST_FAKE_DAEMON_SOCKET";

/// A 1777 temp dir inside the test's root (made reachable for other users).
fn shared_tmp(env: &TestEnv) -> PathBuf {
    std::fs::set_permissions(env.root.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod root");
    let tmp = env.path("tmp");
    std::fs::create_dir(&tmp).expect("mkdir tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    tmp
}

/// `<tmp>/banger-runtime-<our uid>`: where the socket's directory goes without
/// XDG_RUNTIME_DIR.
fn fallback_base(tmp: &Path) -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    tmp.join(format!("banger-runtime-{}", unsafe { libc::geteuid() }))
}

/// Points `cmd` at the temp-dir fallback: no XDG_RUNTIME_DIR, TMPDIR = `tmp`.
fn without_runtime_dir(mut cmd: Command, tmp: &Path) -> Command {
    cmd.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", tmp);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("running the command")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Not a test on its own: the fake daemon of `a_foreign_server_gets_not_a_byte`, run as
/// another user by re-executing this test binary. It listens on the socket and, for each
/// connection, reports how many bytes arrived before the client hung up; it runs until
/// killed.
#[test]
fn fake_daemon_helper_process() {
    let Some(socket) = std::env::var_os(FAKE_DAEMON_ENV) else {
        return;
    };
    // Straight to the pipe: the test harness captures `println!` even with --nocapture.
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .expect("stdout");
    };
    let listener = UnixListener::bind(&socket).expect("bind the fake socket");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    say("FAKE-DAEMON listening".into());
    for conn in listener.incoming() {
        let mut conn = conn.expect("accept");
        let mut buf = [0u8; 4096];
        // The first read returns as soon as anything arrives, or 0 at the client's hang-up.
        let n = conn.read(&mut buf).expect("read");
        say(format!("FAKE-DAEMON received {n}"));
    }
}

/// Stops (and reaps) a process this test started, however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_foreign_server_gets_not_a_byte() {
    assert!(
        is_root(),
        "this test runs a listener as uid 65534 and must run as root (CI does)"
    );
    let env = TestEnv::new();
    let tmp = shared_tmp(&env);
    // Another user made the fallback directories first and listens where bangerd would.
    let base = fallback_base(&tmp);
    let dir = base.join("banger");
    for d in [&base, &dir] {
        std::fs::create_dir(d).expect("mkdir");
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let socket = dir.join("bangerd.sock");
    let mut helper = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "fake_daemon_helper_process", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(FAKE_DAEMON_ENV, &socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the fake daemon as uid 65534");
    let stdout = helper.stdout.take().expect("stdout");
    let _helper = KillOnDrop(helper);
    // Its lines arrive through a channel, so each wait has a deadline.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let report = |prefix: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    // The harness may have begun the line ("test … ... ").
                    if let Some((_, rest)) = line.split_once(prefix) {
                        return rest.to_string();
                    }
                }
                Err(e) => panic!("the fake daemon never said {prefix:?} ({e})"),
            }
        }
    };
    report("FAKE-DAEMON listening");

    for args in [["vm", "list"], ["daemon", "status"]] {
        let out = run(without_runtime_dir(env.banger_cmd(&args), &tmp));
        let err = stderr(&out);
        assert!(!out.status.success(), "banger {args:?} trusted it: {err}");
        for want in [
            format!("refusing to talk to {}", socket.display()),
            "served by uid 65534".to_string(),
            "nothing was sent".to_string(),
            "XDG_RUNTIME_DIR".to_string(),
        ] {
            assert!(err.contains(&want), "{want:?} in: {err}");
        }
        assert_eq!(report("FAKE-DAEMON received "), "0", "banger {args:?}");
    }
    assert!(
        !dir.join("bangerd.lock").exists(),
        "no daemon was started in the foreign directory"
    );
}

#[test]
fn a_symlinked_or_shared_fallback_base_is_refused() {
    let env = TestEnv::new();
    let tmp = shared_tmp(&env);
    let base = fallback_base(&tmp);
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, &base).expect("symlink");

    let refused_by_both = |why: &str| {
        let out = run(without_runtime_dir(env.banger_cmd(&["vm", "list"]), &tmp));
        let err = stderr(&out);
        assert!(!out.status.success(), "the CLI accepted a base that {why}");
        assert!(
            err.contains(&format!("refusing to use {}: it {why}", base.display())),
            "CLI: {err}"
        );
        let out = run(without_runtime_dir(env.bangerd_cmd(&[]), &tmp));
        let err = stderr(&out);
        assert!(!out.status.success(), "bangerd accepted a base that {why}");
        assert!(
            err.contains(&format!("refusing to use {}: it {why}", base.display())),
            "bangerd: {err}"
        );
    };

    refused_by_both("is a symlink");
    assert!(
        std::fs::read_dir(&elsewhere).expect("ls").next().is_none(),
        "nothing was created through the symlink"
    );

    std::fs::remove_file(&base).expect("rm symlink");
    std::fs::create_dir(&base).expect("mkdir");
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    refused_by_both("is writable by group or others (mode 0770)");

    // Made private, the fallback works: the CLI starts a daemon there and stops it.
    std::fs::remove_dir(&base).expect("rmdir");
    let ok = |args: &[&str]| {
        let out = run(without_runtime_dir(env.banger_cmd(args), &tmp));
        assert!(out.status.success(), "banger {args:?}: {}", stderr(&out));
    };
    ok(&["daemon", "start"]);
    assert_eq!(mode_of(&base), 0o700);
    assert_eq!(mode_of(&base.join("banger")), 0o700);
    assert!(base.join("banger/bangerd.sock").exists());
    ok(&["daemon", "stop"]);
}

/// A daemon that answers every request with one API error, on the test's socket.
struct ErrorDaemon {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ErrorDaemon {
    fn start(env: &TestEnv, message: &str) -> ErrorDaemon {
        let socket = env.socket();
        let dir = socket.parent().expect("dir");
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let listener = UnixListener::bind(&socket).expect("bind");
        let body = serde_json::json!({
            "error": { "code": "operation_failed", "message": message, "operation_id": "op-7" }
        })
        .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    answer(conn, &body);
                }
            }
        });
        ErrorDaemon {
            socket,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ErrorDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (headers, then Content-Length bytes) and answers `body` as a 500.
fn answer(mut conn: UnixStream, body: &str) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    };
    let headers = String::from_utf8_lossy(&request[..header_end]).to_ascii_lowercase();
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < header_end + length {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let _ = write!(
        conn,
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn a_daemon_error_quoting_terminal_escapes_is_printed_escaped() {
    let env = TestEnv::new();
    // What a guest could print on its console to write the user's clipboard (OSC 52).
    let osc52 = "\u{1b}]52;c;Y3VybCBldmlsfHNo\u{7}";
    let _daemon = ErrorDaemon::start(
        &env,
        &format!("the guest did not boot\nconsole tail:\n{osc52}\u{9b}2J"),
    );
    for args in [
        &["vm", "show", "dev"][..],
        &["vm", "exec", "dev", "--", "true"],
    ] {
        let out = env.banger(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            !err.contains(['\u{1b}', '\u{7}', '\u{9b}']),
            "a raw control character reached the terminal: {err:?}"
        );
        assert!(
            err.contains("console tail:\n\\x1b]52;c;Y3VybCBldmlsfHNo\\x07\\x9b2J [operation_failed, operation op-7]"),
            "{args:?}: {err}"
        );
    }
}
