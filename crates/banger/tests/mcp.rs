//! `banger mcp` driven by a client banger did not write: the official MCP Python SDK
//! (`tests/python/mcp_client.py`, in the venv `scripts/install-test-deps.sh` makes). One VM
//! from the minbase image for the whole test: create with a workspace, exec (exit code,
//! both streams, stdin), write then read a file, list a directory, a timeout, a capped 10 MB
//! output, bad calls that leave the server serving, list, show, delete.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use common::TestEnv;
use serde_json::json;

/// The venv's python, or a panic saying how to make it.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BANGER_TEST_VENV")
        .map_or_else(|| PathBuf::from("/var/tmp/banger-test-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    let has_sdk = Command::new(&python)
        .args(["-c", "import mcp.client.stdio"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_sdk,
        "{} with the MCP SDK is missing: run scripts/install-test-deps.sh",
        python.display()
    );
    python
}

/// `mcp_client.py MODE BANGER ARGS…` with the test's environment: its JSON summary.
fn run_client(env: &TestEnv, args: &[&OsStr], mode: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/mcp_client.py");
    let mut cmd = Command::new(venv_python());
    cmd.args(["-B", script, mode, env!("CARGO_BIN_EXE_banger")])
        .args(args);
    env.apply(&mut cmd);
    let out = cmd.output().expect("running mcp_client.py");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "mcp_client.py {mode} failed: {stderr}\n{stdout}"
    );
    let s: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}\n{stderr}"));
    eprintln!("summary: {s:#}");
    s
}

/// A refusal whose text holds `needle`.
fn refused(s: &serde_json::Value, key: &str, needle: &str) {
    let r = &s[key];
    assert_eq!(r["is_error"], true, "{key}: {r}");
    assert!(
        r["text"].as_str().unwrap().contains(needle),
        "{key}: {needle:?} not in {r}"
    );
}

#[test]
fn banger_mcp_starts_the_daemon_and_refuses_bad_calls_without_dying() {
    let env = TestEnv::new();
    assert!(!env.socket().exists());
    let s = run_client(&env, &[], "errors");
    assert_eq!(s["first_list"], json!({"sandboxes": []}));
    refused(&s, "bad_name", "name");
    refused(&s, "missing_workspace", "/nonexistent/dir");
    refused(&s, "argv_and_command", "either argv or command");
    refused(&s, "zero_timeout", "timeout_secs must be at least 1");
    refused(&s, "setuid", "setuid");
    refused(&s, "huge_read", "over the limit");
    refused(&s, "unknown_field", "vm");
    refused(&s, "unknown_tool", "tool not found");
    refused(&s, "delete_missing", "not_found");
    assert_eq!(s["last_list"], json!({"sandboxes": []}));
    // The daemon `banger mcp` started serves the CLI too.
    assert_eq!(env.json(&["vm", "list"])["vms"], json!([]));
}

#[test]
fn an_mcp_sdk_client_drives_a_sandbox_through_banger_mcp() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let workspace = env.path("proj");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(workspace.join("hello.txt"), "from the host\n").unwrap();

    let s = run_client(
        &env,
        &[OsStr::new(&image), workspace.as_os_str()],
        "sandbox",
    );

    assert_eq!(s["server_name"], "banger");
    assert_eq!(
        s["tools"],
        json!([
            "sandbox_create",
            "sandbox_delete",
            "sandbox_diff",
            "sandbox_exec",
            "sandbox_list",
            "sandbox_list_dir",
            "sandbox_read_file",
            "sandbox_show",
            "sandbox_write_file"
        ])
    );
    assert_eq!(s["schemas_are_objects"], true);
    assert_eq!(s["exec_schema_has_timeout"], true);
    assert_eq!(s["created"]["state"], "running", "{}", s["created"]);
    assert_eq!(s["created"]["workspace"], "/root/proj");
    assert_eq!(s["workspace_file"], "from the host\n");
    assert_eq!(s["diff_before"], json!({"empty": true, "patch": ""}));
    let patch = s["diff_after"]["patch"].as_str().unwrap();
    assert_eq!(s["diff_after"]["empty"], false);
    assert!(
        patch.contains("+++ b/hello.txt") && patch.contains("+changed"),
        "{patch}"
    );
    assert!(
        patch.contains("new file mode") && patch.contains("+brand new"),
        "{patch}"
    );
    let stat = s["diff_stat"].as_str().unwrap();
    assert!(stat.contains("2 files changed"), "{stat}");
    assert_eq!(
        s["exec"],
        json!({"exit_code": 3, "stdout": "out\n", "stderr": "err\n", "timed_out": false})
    );
    assert_eq!(s["stdin_stdout"], "SHOUT\nhello there\n");
    assert_eq!(
        s["read_back"],
        json!({"content": "#!/bin/sh\necho written\n", "mode": "755", "size": 23})
    );
    assert_eq!(s["ran_written"], "written\n");
    let entries = s["root_entries"].as_array().unwrap();
    assert!(entries.contains(&json!(["notes", "dir"])), "{entries:?}");
    assert!(entries.contains(&json!(["proj", "dir"])), "{entries:?}");
    assert_eq!(s["binary_read"]["is_error"], true);
    assert!(
        s["binary_read"]["text"]
            .as_str()
            .unwrap()
            .contains("not UTF-8 text"),
        "{}",
        s["binary_read"]
    );

    let timeout = &s["timeout"];
    assert_eq!(timeout["timed_out"], true, "{timeout}");
    assert_eq!(timeout["exit_code"], serde_json::Value::Null, "{timeout}");
    assert_eq!(
        timeout["sleeps_left"], "0",
        "the command's child outlived the timeout"
    );
    assert_eq!(
        timeout["stdout"], "",
        "the command went on after its timeout: {timeout}"
    );
    assert!(
        timeout["note"]
            .as_str()
            .unwrap()
            .contains("timed out after 2s"),
        "{timeout}"
    );
    // 2 s of timeout and a round trip: far below the 30 s sleep.
    assert!(timeout["seconds"].as_f64().unwrap() < 15.0, "{timeout}");

    let big = &s["big"];
    assert_eq!(big["exit_code"], 0);
    assert_eq!(big["stdout_bytes"], 10_000_000);
    assert_eq!(big["stdout_truncated"], true);
    assert_eq!(big["kept_a"], 1 << 20);
    assert!(
        big["tail"]
            .as_str()
            .unwrap()
            .ends_with("[banger: output truncated: kept the first 1048576 of 10000000 bytes]"),
        "{big}"
    );

    assert_eq!(s["missing_sandbox"]["is_error"], true);
    assert!(
        s["missing_sandbox"]["text"]
            .as_str()
            .unwrap()
            .contains("no-such-sandbox"),
        "{}",
        s["missing_sandbox"]
    );
    assert_eq!(s["wrong_type"]["is_error"], true, "{}", s["wrong_type"]);
    assert_eq!(s["after_errors"], "still\n");
    assert_eq!(s["listed"], json!([s["vm"].clone()]));
    assert_eq!(s["shown_state"], "running");
    assert_eq!(s["deleted"], s["vm"]);
    assert_eq!(env.json(&["vm", "list"])["vms"], json!([]));
}
