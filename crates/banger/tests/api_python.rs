//! A client in another language, written from docs/api.md alone (`tests/python/
//! exec_client.py`, Python's standard library only), drives a real daemon: it creates a
//! VM, runs a command through the `vm.exec` stream with stdin, stdout, stderr and the exit
//! code, checks a malformed frame and an old `Upgrade` token are refused, and deletes the
//! VM. If the documented framing and the daemon's disagree, this fails.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use banger_testkit::tools;
use common::TestEnv;

#[test]
fn a_python_client_from_the_docs_runs_a_command_in_a_vm() {
    let env = TestEnv::new();
    // Also starts the daemon (the CLI's autostart), which the script then talks to alone.
    let image = env.debian_image("minbase");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/exec_client.py");
    let out = Command::new(tools::require("python3"))
        .args(["-B", script])
        .arg(env.socket())
        .arg(&image)
        .output()
        .expect("running python3");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "exec_client.py failed: {stderr}\n{stdout}"
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"));
    assert_eq!(summary["stdout"], "hi\nin\n");
    assert_eq!(summary["stderr"], "err\n");
    assert_eq!(
        summary["exit"],
        serde_json::json!({"type": "exit", "code": 3})
    );
    assert_eq!(summary["missing_program"], "command_not_found");
    assert_eq!(summary["bad_frame"], "bad_frame");
    assert_eq!(summary["old_token"], "bad_request");
    assert_eq!(summary["deleted"], summary["vm"]);
    assert_eq!(env.json(&["vm", "list"])["vms"], serde_json::json!([]));
}
