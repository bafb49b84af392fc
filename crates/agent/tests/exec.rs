//! The exec engine through the HTTP/2 server: exit codes, stdio, start failures, signals,
//! ptys, cwd/env/user, and what happens when the host goes away.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use banger_guest_proto::frame::MAX_CHUNK;
use banger_guest_proto::{
    ExecInput, ExecOutput, ExitStatus, StartFailure, StartFailureKind, TtySize,
};
use common::{Guest, alive, eventually, is_root, req};

fn exited(code: i32) -> Option<ExecOutput> {
    Some(ExecOutput::Exited(ExitStatus::Code(code)))
}

fn failure(end: &Option<ExecOutput>) -> &StartFailure {
    match end {
        Some(ExecOutput::FailedToStart(f)) => f,
        other => panic!("expected FailedToStart, got {other:?}"),
    }
}

#[tokio::test]
async fn the_exit_code_comes_back_while_input_stays_open() {
    let mut g = Guest::start().await;
    let mut e = g.exec(req(&["sh", "-c", "exit 7"])).await;
    // The input side is still open: the exit must not wait for it.
    let out = e.finish().await;
    assert_eq!(out.end, exited(7));
    assert!(out.pid.is_some_and(|p| p > 1));
}

#[tokio::test]
async fn stdin_round_trips_through_cat_byte_exact() {
    let mut g = Guest::start().await;
    let mut data = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    let mut e = g.exec(req(&["cat"])).await;
    let input = e.input();
    let sent = data.clone();
    let feeder = tokio::spawn(async move {
        for chunk in sent.chunks(MAX_CHUNK) {
            let f = banger_guest_proto::frame::encode(&ExecInput::Stdin(chunk.to_vec()))
                .expect("encode");
            input.send(f).await.expect("send");
        }
        let eof = banger_guest_proto::frame::encode(&ExecInput::StdinEof).expect("encode");
        input.send(eof).await.expect("send");
    });
    let out = e.finish().await;
    feeder.await.expect("feeder");
    assert_eq!(out.end, exited(0));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "stdout differs from stdin");
    assert!(out.stderr.is_empty());
}

#[tokio::test]
async fn the_end_of_the_request_body_is_stdin_eof() {
    let mut g = Guest::start().await;
    let mut e = g.exec(req(&["cat"])).await;
    e.send(ExecInput::Stdin(b"hello".to_vec())).await;
    e.close_input();
    let out = e.finish().await;
    assert_eq!(out.end, exited(0));
    assert_eq!(out.stdout(), "hello");
}

#[tokio::test]
async fn stdout_and_stderr_are_kept_apart() {
    let mut g = Guest::start().await;
    let mut e = g
        .exec(req(&[
            "sh",
            "-c",
            "echo out; echo err >&2; echo out2; exit 3",
        ]))
        .await;
    let out = e.finish().await;
    assert_eq!(out.end, exited(3));
    assert_eq!(out.stdout(), "out\nout2\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[tokio::test]
async fn a_missing_program_fails_to_start_at_once() {
    let mut g = Guest::start().await;
    let t = Instant::now();
    let mut e = g.exec(req(&["banger-no-such-command"])).await;
    let out = e.finish().await;
    let f = failure(&out.end);
    assert_eq!(f.kind, StartFailureKind::NotFound);
    assert!(
        f.message
            .contains("banger-no-such-command: command not found (PATH=/usr/local/sbin:"),
        "{}",
        f.message
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    let mut e = g.exec(req(&["/no/such/dir/prog"])).await;
    assert_eq!(
        failure(&e.finish().await.end).kind,
        StartFailureKind::NotFound
    );
}

#[tokio::test]
async fn a_file_without_exec_permission_is_permission_denied() {
    let mut g = Guest::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\necho no\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let mut e = g.exec(req(&[script.to_str().expect("utf-8")])).await;
    let f = failure(&e.finish().await.end).clone();
    assert_eq!(f.kind, StartFailureKind::PermissionDenied, "{}", f.message);

    // Found through PATH but not executable: the same answer, not "not found".
    let mut r = req(&["script"]);
    r.env
        .push(("PATH".into(), dir.path().display().to_string()));
    let mut e = g.exec(r).await;
    let f = failure(&e.finish().await.end).clone();
    assert_eq!(f.kind, StartFailureKind::PermissionDenied, "{}", f.message);
}

#[tokio::test]
async fn an_exec_failure_in_the_child_is_reported() {
    // Executable, but its interpreter is missing: only execve itself can tell.
    let mut g = Guest::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/banger/no/such/interpreter\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut e = g.exec(req(&[script.to_str().expect("utf-8")])).await;
    let f = failure(&e.finish().await.end).clone();
    assert_eq!(f.kind, StartFailureKind::NotFound, "{}", f.message);
    assert!(f.message.contains("interpreter"), "{}", f.message);
}

#[tokio::test]
async fn bad_cwd_and_unknown_user_fail_to_start() {
    let mut g = Guest::start().await;
    let mut r = req(&["true"]);
    r.cwd = Some("/banger/no/such/dir".into());
    let mut e = g.exec(r).await;
    let f = failure(&e.finish().await.end).clone();
    assert_eq!(f.kind, StartFailureKind::Other);
    assert!(f.message.contains("/banger/no/such/dir"), "{}", f.message);

    let mut r = req(&["true"]);
    r.user = Some("mallory".into());
    let mut e = g.exec(r).await;
    let f = failure(&e.finish().await.end).clone();
    assert_eq!(f.kind, StartFailureKind::Other);
    assert!(f.message.contains("mallory"), "{}", f.message);
}

#[tokio::test]
async fn a_signal_reaches_the_process() {
    let mut g = Guest::start().await;
    let mut e = g.exec(req(&["sleep", "100"])).await;
    e.started().await;
    e.send(ExecInput::Signal(libc::SIGTERM)).await;
    let out = e.finish().await;
    assert_eq!(out.end, Some(ExecOutput::Exited(ExitStatus::Signal(15))));
}

#[tokio::test]
async fn cwd_and_env_are_honoured() {
    let mut g = Guest::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().canonicalize().expect("canonicalize");
    let mut r = req(&[
        "sh",
        "-c",
        "pwd; echo \"$FOO|$HOME|$USER|$LOGNAME|$SHELL|$TERM\"",
    ]);
    r.cwd = Some(dir.display().to_string());
    r.env.push(("FOO".into(), "bar baz".into()));
    r.env.push(("USER".into(), "override".into()));
    let mut e = g.exec(r).await;
    let out = e.finish().await;
    assert_eq!(out.end, exited(0));
    assert_eq!(
        out.stdout(),
        format!("{}\nbar baz|/root|override|root|/bin/sh|\n", dir.display())
    );
}

#[tokio::test]
async fn the_user_comes_from_the_guests_passwd() {
    if !is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let root = common::default_root();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = root.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(
        root.path().join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/sh\ntester:x:65534:65534:t:{}:/bin/sh\n",
            home.display()
        ),
    )
    .expect("passwd");
    std::fs::write(
        root.path().join("etc/group"),
        "root:x:0:\nnogroup:x:65534:\nextra:x:4242:someone,tester\n",
    )
    .expect("group");
    let mut g = Guest::with_root(root).await;
    let mut r = req(&["sh", "-c", "id -u; id -g; id -G; echo $HOME $USER; pwd"]);
    r.user = Some("tester".into());
    let mut e = g.exec(r).await;
    let out = e.finish().await;
    assert_eq!(
        out.end,
        exited(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = home.display();
    assert_eq!(
        out.stdout(),
        format!("65534\n65534\n65534 4242\n{h} tester\n{h}\n")
    );

    // A numeric uid:gid with no entry runs with HOME=/.
    let mut r = req(&["sh", "-c", "id -u; id -g; echo $HOME"]);
    r.user = Some("4321:4322".into());
    let out = g.exec(r).await.finish().await;
    assert_eq!(out.stdout(), "4321\n4322\n/\n");
}

#[tokio::test]
async fn a_tty_is_a_pts_and_follows_resizes() {
    let mut g = Guest::start().await;
    let mut r = req(&["tty"]);
    r.tty = Some(TtySize { rows: 24, cols: 80 });
    let out = g.exec(r).await.finish().await;
    assert_eq!(out.end, exited(0));
    assert!(out.stdout().starts_with("/dev/pts/"), "{:?}", out.stdout());

    let mut r = req(&["sh", "-c", "stty size; echo $TERM; read x; stty size"]);
    r.tty = Some(TtySize { rows: 24, cols: 80 });
    r.term = Some("vt100".into());
    let mut e = g.exec(r).await;
    let first = e.stdout_until("vt100").await;
    assert!(first.contains("24 80"), "{first:?}");
    e.send(ExecInput::Resize(TtySize {
        rows: 30,
        cols: 100,
    }))
    .await;
    e.send(ExecInput::Stdin(b"go\n".to_vec())).await;
    let out = e.finish().await;
    assert_eq!(out.end, exited(0));
    assert!(out.stdout().contains("30 100"), "{:?}", out.stdout());
}

#[tokio::test]
async fn a_tty_delivers_signals_and_eof() {
    let mut g = Guest::start().await;
    let mut r = req(&["sleep", "100"]);
    r.tty = Some(TtySize { rows: 24, cols: 80 });
    let mut e = g.exec(r).await;
    e.started().await;
    e.send(ExecInput::Signal(libc::SIGINT)).await;
    assert_eq!(
        e.finish().await.end,
        Some(ExecOutput::Exited(ExitStatus::Signal(libc::SIGINT)))
    );

    // StdinEof on a tty is ^D: cat sees the end of its input.
    let mut r = req(&["cat"]);
    r.tty = Some(TtySize { rows: 24, cols: 80 });
    let mut e = g.exec(r).await;
    e.send(ExecInput::Stdin(b"line\n".to_vec())).await;
    e.send(ExecInput::StdinEof).await;
    let out = e.finish().await;
    assert_eq!(out.end, exited(0));
    assert!(out.stdout().contains("line"), "{:?}", out.stdout());
}

#[tokio::test]
async fn a_background_process_holding_stdout_does_not_hold_the_exit() {
    let mut g = Guest::start().await;
    let mut e = g.exec(req(&["sh", "-c", "sleep 60 & echo started"])).await;
    let out = e.finish().await;
    assert_eq!(out.end, exited(0));
    assert_eq!(out.stdout(), "started\n");
    // The session's group is the shell's pid: take the sleeper down too.
    let pgid = out.pid.expect("pid") as i32;
    // SAFETY: kill with plain integers.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[tokio::test]
async fn a_vanished_host_hangs_the_process_up() {
    let mut g = Guest::start().await;
    let mut e = g.exec(req(&["sleep", "100"])).await;
    let pid = e.started().await;
    assert!(alive(pid));
    drop(e);
    eventually("sleep killed by SIGHUP", || !alive(pid)).await;

    // Ignoring SIGHUP buys a second, then SIGKILL.
    let mut e = g
        .exec(req(&[
            "sh",
            "-c",
            "trap '' HUP; echo ready; sleep 100; echo survived",
        ]))
        .await;
    let pid = e.started().await;
    e.stdout_until("ready").await;
    let t = Instant::now();
    drop(e);
    eventually("shell killed after the grace period", || !alive(pid)).await;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "SIGHUP was not ignored?"
    );
}
