//! The guest protocol's bytes, pinned: one checked-in fixture per message kind
//! (`tests/golden/`): `.hex` for the postcard frames of an exec stream (length prefix
//! included), `.json` for the JSON bodies of the other methods. A running VM keeps the
//! agent it booted with, so a change here can break VMs that outlive a daemon upgrade:
//! it needs a `PROTO_VERSION` bump (or a compatible addition, see the crate docs'
//! "Versioning"), a COMPATIBILITY.md line, and then the fixture rewritten by hand.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_guest_proto::frame::{self, FrameBuffer};
use banger_guest_proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn fixture(file: &str) -> String {
    let path = format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Checks one frame both ways; a mismatch is returned as `name: actual`.
fn check_frame<T>(name: &str, msg: T) -> Option<String>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let actual = hex(&frame::encode(&msg).expect("encode"));
    let expected = fixture(&format!("{name}.hex"));
    if actual != expected {
        return Some(format!("{name}.hex: {actual}"));
    }
    let mut frames = FrameBuffer::default();
    frames.push(&unhex(&expected));
    assert_eq!(frames.next::<T>().expect("decode"), Some(msg), "{name}");
    None
}

/// Checks one JSON body both ways.
fn check_json<T>(name: &str, msg: T) -> Option<String>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let actual = serde_json::to_string(&msg).expect("json");
    let expected = fixture(&format!("{name}.json"));
    if actual != expected {
        return Some(format!("{name}.json: {actual}"));
    }
    let back: T = serde_json::from_str(&expected).expect("parse");
    assert_eq!(back, msg, "{name}");
    None
}

fn report(changed: Vec<Option<String>>) {
    let changed: Vec<String> = changed.into_iter().flatten().collect();
    assert!(
        changed.is_empty(),
        "guest-protocol bytes changed (agents already running in VMs speak the old ones): \
         bump PROTO_VERSION or make the change compatible, note it in COMPATIBILITY.md, \
         then update the fixtures. Now:\n{}",
        changed.join("\n")
    );
}

#[test]
fn exec_frames_match_their_fixtures() {
    let tty = TtySize { rows: 24, cols: 80 };
    report(vec![
        check_frame(
            "exec_request",
            ExecRequest {
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("K".into(), "V".into())],
                cwd: Some("/root".into()),
                user: Some("root".into()),
                tty: Some(tty),
                term: Some("xterm".into()),
            },
        ),
        check_frame("exec_input_stdin", ExecInput::Stdin(b"in\n".to_vec())),
        check_frame("exec_input_stdin_eof", ExecInput::StdinEof),
        check_frame("exec_input_resize", ExecInput::Resize(tty)),
        check_frame("exec_input_signal", ExecInput::Signal(2)),
        check_frame("exec_output_started", ExecOutput::Started { pid: 42 }),
        check_frame("exec_output_stdout", ExecOutput::Stdout(b"hi\n".to_vec())),
        check_frame("exec_output_stderr", ExecOutput::Stderr(b"err\n".to_vec())),
        check_frame(
            "exec_output_exited_code",
            ExecOutput::Exited(ExitStatus::Code(3)),
        ),
        check_frame(
            "exec_output_exited_signal",
            ExecOutput::Exited(ExitStatus::Signal(9)),
        ),
        check_frame(
            "exec_output_failed_to_start",
            ExecOutput::FailedToStart(StartFailure {
                kind: StartFailureKind::NotFound,
                message: "nosuch: not found".into(),
            }),
        ),
    ]);
}

/// Both sides of `identity` across the `authorize` addition: an older daemon's request
/// (no `authorize`) is read by a newer agent, and an older agent's `Empty` answer is read
/// as an `IdentityTaken` without host keys (the daemon then asks for them itself).
#[test]
fn identity_messages_read_their_older_forms() {
    let old: SetIdentity =
        serde_json::from_str(r#"{"hostname":"a","seed":[1],"secret":[2],"unix_nanos":5}"#)
            .expect("an older SetIdentity");
    assert_eq!(old.authorize, None);
    let answer: IdentityTaken =
        serde_json::from_str(&serde_json::to_string(&Empty {}).unwrap()).expect("Empty");
    assert_eq!(answer.host_keys, None);
    assert_eq!(answer.authorize_error, None);
}

#[test]
fn json_bodies_match_their_fixtures() {
    report(vec![
        check_json(
            "hello_request",
            HelloRequest {
                proto_min: 2,
                proto_max: 2,
                host_version: "0.1.0".into(),
                nonce: "00ff".into(),
            },
        ),
        check_json(
            "hello",
            Hello {
                proto_version: 2,
                proto_min: 2,
                proto_max: 2,
                agent_version: "0.1.0".into(),
                boot_id: "b".into(),
                init: InitMode::Image,
                stages: vec![StageTime {
                    stage: GuestStage::RootAssembled,
                    uptime_ms: 120,
                }],
                kernel_release: "6.1.0".into(),
                proof: "ab".into(),
            },
        ),
        check_json(
            "set_clock",
            SetClock {
                unix_nanos: 1_700_000_000_000_000_000,
            },
        ),
        check_json(
            "set_identity",
            SetIdentity {
                hostname: "run-1".into(),
                seed: vec![1, 2],
                secret: vec![3],
                unix_nanos: 1_700_000_000_000_000_000,
                authorize: Some(AddAuthorizedKey {
                    user: "root".into(),
                    key: "ssh-ed25519 AAAA banger".into(),
                }),
            },
        ),
        check_json(
            "identity_taken",
            IdentityTaken {
                host_keys: Some(vec!["ssh-ed25519 AAAA root@dev".into()]),
                authorize_error: None,
            },
        ),
        check_json("shutdown_request", ShutdownRequest {}),
        check_json("empty", Empty {}),
        check_json(
            "read_file",
            ReadFile {
                path: "/proc/net/tcp".into(),
                max_bytes: 65536,
            },
        ),
        check_json("file_content", FileContent { data: "x".into() }),
        check_json(
            "add_authorized_key",
            AddAuthorizedKey {
                user: "root".into(),
                key: "ssh-ed25519 AAAA banger".into(),
            },
        ),
        check_json(
            "put_files",
            PutFiles {
                dest: "/root/w".into(),
                owner: Some("1000:1000".into()),
            },
        ),
        check_json(
            "put_result",
            PutResult {
                entries: 3,
                bytes: 10,
                error: None,
            },
        ),
        check_json(
            "get_files",
            GetFiles {
                path: "/etc".into(),
            },
        ),
        check_json("connect", Connect { port: 22 }),
        check_json(
            "agent_error",
            AgentError {
                message: "no such file".into(),
            },
        ),
    ]);
}
