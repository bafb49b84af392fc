//! The `vm.exec` stream's bytes, pinned: one checked-in hex fixture per frame kind
//! (`tests/golden/exec/*.hex`), and the transcript in docs/api.md. Clients in other
//! languages are written against those bytes, so a change here breaks them: it needs a
//! new `Upgrade` token (`banger_api::vm::EXEC_UPGRADE`), docs/api.md and COMPATIBILITY.md
//! updated, and then the fixture rewritten by hand.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_api::exec::{
    ClientControl, ClientFrame, DaemonControl, DaemonFrame, ExecErrorCode, ExitStatus, FrameReader,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/golden/exec/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    unhex(&text)
}

fn assert_golden(name: &str, encoded: &[u8]) {
    let expected = fixture(name);
    assert_eq!(
        hex(encoded),
        hex(&expected),
        "the `{name}` frame's bytes changed: clients written from docs/api.md break. \
         If intended: a new Upgrade token, docs/api.md, COMPATIBILITY.md, then this fixture"
    );
}

fn client_frames() -> Vec<(&'static str, ClientFrame)> {
    vec![
        ("stdin", ClientFrame::Stdin(b"in\n".to_vec())),
        ("stdin_eof", ClientFrame::StdinEof),
        (
            "control_signal",
            ClientFrame::Control(ClientControl::Signal { signal: 2 }),
        ),
        (
            "control_resize",
            ClientFrame::Control(ClientControl::Resize { rows: 24, cols: 80 }),
        ),
    ]
}

fn daemon_frames() -> Vec<(&'static str, DaemonFrame)> {
    vec![
        ("stdout", DaemonFrame::Stdout(b"hi\n".to_vec())),
        ("stderr", DaemonFrame::Stderr(b"err\n".to_vec())),
        (
            "control_started",
            DaemonFrame::Control(DaemonControl::Started { pid: 42 }),
        ),
        (
            "control_exit_code",
            DaemonFrame::Control(DaemonControl::exit(ExitStatus::Code(3))),
        ),
        (
            "control_exit_signal",
            DaemonFrame::Control(DaemonControl::exit(ExitStatus::Signal(9))),
        ),
        (
            "control_error",
            DaemonFrame::Control(DaemonControl::Error {
                code: ExecErrorCode::CommandNotFound,
                message: "nosuch: command not found".into(),
            }),
        ),
    ]
}

#[test]
fn client_frames_match_their_fixtures() {
    for (name, frame) in client_frames() {
        assert_golden(name, &frame.encode().expect("encode"));
        let mut reader = FrameReader::default();
        reader.push(&fixture(name));
        assert_eq!(reader.next_client().expect("decode"), Some(frame), "{name}");
        assert_eq!(reader.pending(), 0, "{name}");
    }
}

#[test]
fn daemon_frames_match_their_fixtures() {
    for (name, frame) in daemon_frames() {
        assert_golden(name, &frame.encode().expect("encode"));
        let mut reader = FrameReader::default();
        reader.push(&fixture(name));
        assert_eq!(reader.next_daemon().expect("decode"), Some(frame), "{name}");
        assert_eq!(reader.pending(), 0, "{name}");
    }
}

#[test]
fn every_exec_error_code_is_documented() {
    let doc = include_str!("../../../docs/api.md");
    for code in [
        ExecErrorCode::CommandNotFound,
        ExecErrorCode::PermissionDenied,
        ExecErrorCode::StartFailed,
        ExecErrorCode::ExecFailed,
        ExecErrorCode::BadFrame,
    ] {
        let name = serde_json::to_value(code).expect("json");
        let name = name.as_str().expect("a string");
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "{name} missing from docs/api.md"
        );
    }
}

/// The hex transcript in docs/api.md is what the encoder produces.
#[test]
fn the_docs_transcript_is_real() {
    let doc = include_str!("../../../docs/api.md");
    let (mut sent, mut received) = (Vec::new(), Vec::new());
    for line in doc.lines() {
        let (to, rest) = if let Some(rest) = line.strip_prefix("→ ") {
            (&mut sent, rest)
        } else if let Some(rest) = line.strip_prefix("← ") {
            (&mut received, rest)
        } else {
            continue;
        };
        // `TYPE LENGTH PAYLOAD   comment`: the hex is the first three words at most.
        let hex_part: String = rest
            .split_whitespace()
            .take_while(|w| w.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        to.extend(unhex(&hex_part));
    }
    assert!(
        !sent.is_empty() && !received.is_empty(),
        "no transcript in docs/api.md"
    );
    let expected_sent: Vec<u8> = [ClientFrame::Stdin(b"hi\n".to_vec()), ClientFrame::StdinEof]
        .iter()
        .flat_map(|f| f.encode().expect("encode"))
        .collect();
    let expected_received: Vec<u8> = [
        DaemonFrame::Control(DaemonControl::Started { pid: 42 }),
        DaemonFrame::Stdout(b"hi\n".to_vec()),
        DaemonFrame::Control(DaemonControl::exit(ExitStatus::Code(0))),
    ]
    .iter()
    .flat_map(|f| f.encode().expect("encode"))
    .collect();
    assert_eq!(hex(&sent), hex(&expected_sent));
    assert_eq!(hex(&received), hex(&expected_received));
}
