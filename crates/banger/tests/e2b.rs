//! `banger serve` driven by a client banger did not write: the official E2B Python SDK
//! (`tests/python/e2b_client.py`, in the venv `scripts/install-test-deps.sh` makes, pinned
//! there). Two sandboxes (A and B) from the minbase image for the whole workflow: commands
//! (output, exit codes, a killed background command, stdin), files (relative and absolute
//! paths, 20 MB both ways), list, two at once kept apart, B's timeout and expiry, malformed
//! Connect bodies, pause and connect, A killed. A second test boots nothing: unknown ids, a
//! bad template, missing and wrong API keys, each refused in the SDK's shape.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestEnv;
use serde_json::{Value, json};

/// The key `banger serve` is started with (the SDK sends it as `X-API-KEY`).
const KEY: &str = "e2b-test-key-0123456789";

/// The size of the big file `e2b_client.py` moves each way.
const BIG: u64 = 20 * 1024 * 1024;

/// The venv's python, or a panic saying how to make it.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BANGER_TEST_VENV")
        .map_or_else(|| PathBuf::from("/var/tmp/banger-test-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    let has_sdk = Command::new(&python)
        .args(["-c", "import e2b"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_sdk,
        "{} with the E2B SDK is missing: run scripts/install-test-deps.sh",
        python.display()
    );
    python
}

/// A running `banger serve`, stopped by pid when dropped (also while a test panics), its
/// stderr kept to show when something failed.
struct Serve {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Serve {
    fn start(env: &TestEnv) -> Serve {
        Serve::start_with(env, &["--api-key", KEY])
    }

    /// `banger serve --listen 127.0.0.1:0 ARGS…`.
    fn start_with(env: &TestEnv, args: &[&str]) -> Serve {
        let mut argv = vec!["serve", "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let mut child = env
            .banger_cmd(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting banger serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let kept = Arc::clone(&log);
        // Drains stderr for the server's whole life (a full pipe would stall it).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut kept = kept.lock().unwrap();
                    kept.push_str(&line);
                    kept.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let mut serve = Serve {
            child,
            url: String::new(),
            log,
        };
        let marker = "E2B API on http://127.0.0.1:";
        let deadline = Instant::now() + Duration::from_secs(60);
        let port: u16 = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(marker) {
                        let digits: String = line[at + marker.len()..]
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect();
                        break digits
                            .parse()
                            .unwrap_or_else(|e| panic!("no port in {line:?}: {e}"));
                    }
                }
                Err(e) => panic!(
                    "banger serve did not announce {marker}PORT within 60 s ({e}); status {:?}, \
                     stderr:\n{}",
                    serve.child.try_wait(),
                    serve.log()
                ),
            }
        };
        serve.url = format!("http://127.0.0.1:{port}");
        serve
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the server still runs (bad requests must not have ended it).
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// `e2b_client.py TEMPLATE MODE` against this server: its JSON summary.
    fn client(&self, template: &str, mode: &str) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/e2b_client.py");
        let mut cmd = Command::new(venv_python());
        cmd.args(["-B", script, template, mode])
            .env("E2B_API_URL", &self.url)
            .env("E2B_SANDBOX_URL", &self.url)
            .env("E2B_API_KEY", KEY)
            // Only this server: no other E2B setting, no proxy between us and loopback.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null());
        for var in [
            "E2B_DOMAIN",
            "E2B_DEBUG",
            "E2B_ACCESS_TOKEN",
            "E2B_HTTP_VERSION",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        let started = Instant::now();
        let out = cmd.output().expect("running e2b_client.py");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        eprintln!(
            "e2b_client.py {mode}: {:?}, {:.1} s",
            out.status,
            started.elapsed().as_secs_f64()
        );
        let s: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "summary is not JSON ({e}): {stdout}\n{stderr}\nserver:\n{}",
                self.log()
            )
        });
        eprintln!("summary: {s:#}");
        assert!(
            out.status.success() && s.get("fatal").is_none(),
            "e2b_client.py {mode} failed: {}\n{stderr}\nserver:\n{}",
            s["fatal"].as_str().unwrap_or("(no traceback)"),
            self.log()
        );
        s
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("banger serve stderr:\n{}", self.log());
        }
        let pid = i32::try_from(self.child.id()).expect("pid");
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            // SAFETY: plain kill(2) of the server this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.child.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vm list` once the sandboxes are gone: no VM may remain (waited for, bounded, since a
/// killed sandbox's VM may still be going down when the SDK's call returned).
fn no_vms_left(env: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let vms = env.json(&["vm", "list"])["vms"].clone();
        if vms == json!([]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "VMs left after their sandboxes were killed or expired: {vms:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The summary's record of an SDK exception: its class, and that its text holds `needle`.
fn raised(r: &Value, class: &str, needle: &str) {
    assert_eq!(r["exception"], class, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains(needle),
        "{needle:?} not in {r}"
    );
}

/// A raw response carrying a Connect error with `code`: an end-of-stream frame of a 200,
/// or a 4xx body.
fn connect_error(r: &Value, code: &str) {
    let status = r["status"]
        .as_u64()
        .unwrap_or_else(|| panic!("no status: {r}"));
    assert!(status == 200 || (400..500).contains(&status), "{r}");
    assert_eq!(r["error"]["code"], code, "{r}");
    assert!(r["error"]["message"].is_string(), "{r}");
    if status == 200 {
        let frames = r["frames"].as_array().unwrap();
        assert_eq!(frames.last().unwrap()["flags"], 2, "{r}");
    }
}

#[test]
fn an_e2b_sdk_client_drives_two_sandboxes_through_banger_serve() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let mut serve = Serve::start(&env);
    let started = Instant::now();
    let s = serve.client(&image, "sandbox");
    eprintln!(
        "timings: A {} B {}, whole client {:.1} s",
        s["timing_a"],
        s["timing_b"],
        started.elapsed().as_secs_f64()
    );
    let (a, b) = (s["a"].as_str().unwrap(), s["b"].as_str().unwrap());
    assert_ne!(a, b);
    assert_eq!(s["sdk_version"], "2.63.0");
    assert_eq!(s["timing_a"]["first_stdout"], "first\n");
    assert_eq!(s["timing_b"]["first_stdout"], "first\n");

    // Commands.
    assert_eq!(
        s["echo"],
        json!({"stdout": "hi\n", "stderr": "", "exit_code": 0, "error": null})
    );
    let failing = &s["failing"];
    assert_eq!(failing["exception"], "CommandExitException", "{failing}");
    assert_eq!(failing["exit_code"], 3, "{failing}");
    assert_eq!(failing["stderr"], "bad\n", "{failing}");
    assert_eq!(failing["stdout"], "", "{failing}");
    assert_eq!(
        s["env_cwd"]["stdout"], "hello there\n/tmp\n",
        "{}",
        s["env_cwd"]
    );
    // envd's default: a command starts in its user's home.
    let identity: Vec<&str> = s["identity"]["stdout"].as_str().unwrap().lines().collect();
    assert_eq!(identity.len(), 3, "{}", s["identity"]);
    assert_eq!(identity[1], identity[2], "cwd is not $HOME: {identity:?}");

    let bg = &s["background"];
    assert_eq!(bg["pid_positive"], true, "{bg}");
    assert_eq!(bg["kill"], true, "{bg}");
    // envd's end event after SIGKILL: Go's exit code -1, which the SDK raises.
    assert_eq!(bg["wait"]["exception"], "CommandExitException", "{bg}");
    assert_eq!(bg["wait"]["exit_code"], -1, "{bg}");
    assert_eq!(bg["sleeps_left"], "0", "{bg}");
    assert_eq!(bg["kill_again"], json!({"ok": false}), "{bg}");

    let stdin = &s["stdin"];
    assert_eq!(stdin["has_close_stdin"], true, "{stdin}");
    assert_eq!(stdin["close"], json!({"ok": "closed"}), "{stdin}");
    assert_eq!(
        stdin["wait"]["returned"],
        json!({"stdout": "hello\nbytes too\n", "stderr": "", "exit_code": 0, "error": null}),
        "{stdin}"
    );

    assert_eq!(stdin["stream_input"], json!({"ok": "sent"}), "{stdin}");
    assert_eq!(
        stdin["streamed_wait"]["returned"]["stdout"], "one\ntwo\n",
        "{stdin}"
    );

    // A command past its timeout: the SDK's TimeoutException, and the process killed.
    let timed = &s["timeout_kill"];
    assert_eq!(timed["run"]["exception"], "TimeoutException", "{timed}");
    assert_eq!(timed["sleeps_left"], "0", "{timed}");

    let procs = &s["processes"];
    assert_eq!(
        procs["listed"],
        json!([{"pid_matches": true, "cmd": "/bin/bash", "args": ["-l", "-c", "sleep 600"]}]),
        "{procs}"
    );
    assert_eq!(procs["kill"], true, "{procs}");
    assert_eq!(procs["connected_wait"]["exit_code"], -1, "{procs}");

    let metrics = &s["metrics"]["ok"];
    assert_eq!(metrics["count"], 1, "{metrics}");
    assert_eq!(metrics["cpu_count"], s["info_a"]["cpu_count"], "{metrics}");
    for key in [
        "cpu_pct_in_range",
        "mem_used_below_total",
        "disk_used_below_total",
    ] {
        assert_eq!(metrics[key], true, "{key}: {metrics}");
    }
    assert!(metrics["mem_total_mib"].as_u64().unwrap() > 64, "{metrics}");
    let unknown_user = &s["unknown_user_write"];
    assert_eq!(
        unknown_user["exception"], "InvalidArgumentException",
        "{unknown_user}"
    );
    assert!(
        unknown_user["message"]
            .as_str()
            .unwrap()
            .contains("nosuchuser"),
        "{unknown_user}"
    );

    // A pty: sized, resized, a terminal, typed at, its exit code.
    let pty = &s["pty"];
    for key in ["sized", "resized", "on_a_tty", "echoed"] {
        assert_eq!(pty[key], true, "{key}: {pty}");
    }
    assert_eq!(pty["exit_code"], 5, "{pty}");

    // Watching: the polled watcher sees a file created below (recursive), the stream sees
    // one created in the directory; a stopped watcher is gone.
    let watch = &s["watch"];
    let polled = watch["polled"].as_array().unwrap();
    assert!(
        polled.contains(&json!(["sub/deep.txt", "CREATE"])),
        "{watch}"
    );
    assert_eq!(
        watch["events_after_stop"]["exception"], "SandboxException",
        "{watch}"
    );
    let streamed = watch["streamed"]["ok"].as_array().expect("streamed events");
    assert!(
        streamed.contains(&json!(["streamed.txt", "CREATE"])),
        "{watch}"
    );

    // Files.
    let f = &s["files"];
    assert_eq!(f["rename"]["content"], "moved\n", "{}", f["rename"]);
    assert_eq!(f["rename"]["source_left"], false, "{}", f["rename"]);
    assert!(
        f["rename"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/moved/dst.txt"),
        "{}",
        f["rename"]
    );
    let home_file = f["write_relative"]["path"].as_str().unwrap();
    assert!(
        home_file.starts_with('/') && home_file.ends_with("/notes/hello.txt"),
        "{f}"
    );
    assert_eq!(f["write_relative"]["name"], "hello.txt", "{f}");
    assert_eq!(f["write_relative"]["type"], "file", "{f}");
    for key in ["read_relative", "read_absolute", "cat_relative"] {
        assert_eq!(f[key], "hello file\n", "{key}: {f}");
    }
    assert_eq!(
        f["write_absolute"],
        json!({"name": "x.txt", "path": "/tmp/e2b-abs/deep/x.txt"})
    );
    assert_eq!(f["read_absolute_bytes"], "absolute\n");
    assert_eq!(f["make_dir_new"], true);
    assert_eq!(
        f["make_dir_again"], false,
        "make_dir of an existing dir: {f}"
    );
    assert_eq!(f["make_dir_absolute"], true);
    let listed: Vec<Value> = f["list_relative"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e[0], e[1]]))
        .collect();
    assert_eq!(
        listed,
        vec![json!(["hello.txt", "file"]), json!(["sub", "dir"])],
        "{f}"
    );
    let hello = &f["list_relative"][0];
    assert_eq!(hello[2], home_file, "{f}");
    assert_eq!(hello[3], 11, "{f}");
    assert_eq!(
        f["list_absolute"],
        json!([["deep", "dir"], ["made", "dir"]])
    );
    assert_eq!(
        f["exists"],
        json!({"file": true, "dir": true, "absolute": true, "missing": false})
    );
    assert_eq!(
        f["exists_after_remove"],
        json!({"file": false, "absolute_tree": false, "dir_kept": true})
    );
    raised(&f["read_missing"], "FileNotFoundException", "hello.txt");
    assert_eq!(f["remove_missing"]["not_found"], true, "{f}");

    let big = &s["big"];
    assert_eq!(big["guest_sha256"], big["sent_sha256"], "{big}");
    assert_eq!(big["read_back_sha256"], big["sent_sha256"], "{big}");
    assert_eq!(big["guest_size"], BIG, "{big}");
    assert_eq!(big["read_back_size"], BIG, "{big}");
    assert_eq!(
        big["guest_made_read_sha256"], big["guest_made_sha256"],
        "{big}"
    );
    assert_eq!(big["guest_made_read_size"], BIG, "{big}");
    eprintln!(
        "20 MB: write {} s, read {} s",
        big["write_s"], big["read_s"]
    );

    // A guest whose `find` prints for ever: refused at the 16 MiB bound, well before any
    // timeout, and the next listing works.
    let hostile = &s["hostile_find"];
    assert_eq!(
        hostile["list"]["exception"], "SandboxException",
        "{hostile}"
    );
    assert!(
        hostile["list"]["message"]
            .as_str()
            .unwrap()
            .contains("over 16777216 bytes"),
        "{hostile}"
    );
    assert!(
        hostile["list_s"].as_f64().unwrap() < 30.0,
        "refused at the bound, not at a timeout: {hostile}"
    );
    assert_eq!(hostile["after"], json!({"ok": ["x.txt"]}), "{hostile}");

    // Two at once, kept apart; both listed as created.
    assert_eq!(
        s["apart"],
        json!({
            "a_sees_a": true, "b_sees_a": false, "a_sees_b": false, "b_sees_b": true,
            "b_shell_sees_a": "no\n", "boot_ids_differ": true,
        })
    );
    for (id, role) in [(a, "a"), (b, "b")] {
        let l = &s["list"][id];
        assert_eq!(l["template_id"], image.as_str(), "{id}: {}", s["list"]);
        assert_eq!(l["state"], "running", "{id}: {l}");
        assert_eq!(l["metadata"], json!({"suite": "e2b", "role": role}), "{l}");
        assert!(
            l["envd_version"].as_str().is_some_and(|v| !v.is_empty()),
            "{l}"
        );
        assert_eq!(l["end_after_start"], true, "{l}");
    }
    assert_eq!(s["list"].as_object().unwrap().len(), 2, "{}", s["list"]);
    let info = &s["info_a"];
    assert_eq!(info["sandbox_id"], a);
    assert_eq!(info["template_id"], image.as_str());
    assert_eq!(info["state"], "running");
    assert_eq!(info["metadata"], json!({"suite": "e2b", "role": "a"}));
    let lifetime = info["lifetime_s"].as_i64().unwrap();
    assert!(
        (570..=630).contains(&lifetime),
        "created with timeout=600: {info}"
    );
    assert_eq!(s["is_running_a"], true);

    // B: set_timeout(5), then gone on its own.
    let expiry = &s["expiry"];
    let ends_in = expiry["ends_in_s"].as_i64().unwrap();
    assert!((2..=6).contains(&ends_in), "set_timeout(5): {expiry}");
    assert_eq!(expiry["get_info"]["not_found"], true, "{expiry}");
    assert_eq!(expiry["run"]["sandbox_exception"], true, "{expiry}");
    assert!(
        expiry["run"]["message"].as_str().unwrap().contains(b),
        "{expiry}"
    );
    assert_eq!(expiry["kill"], json!({"ok": false}), "{expiry}");
    eprintln!("B expired {} s after set_timeout(5)", expiry["after_set_s"]);

    // Malformed Connect requests: refused in Connect's shape, and A still serves.
    let bad = &s["malformed"];
    for key in [
        "prefix_one_past",
        "bad_json",
        "prefix_far_past",
        "no_envelope",
    ] {
        connect_error(&bad[key], "invalid_argument");
    }
    assert_eq!(bad["bad_unary"]["status"], 400, "{bad}");
    assert_eq!(
        bad["bad_unary"]["json"]["code"], "invalid_argument",
        "{bad}"
    );
    assert_eq!(bad["wrong_token"]["status"], 401, "{bad}");
    assert_eq!(
        bad["wrong_token"]["json"]["code"], "unauthenticated",
        "{bad}"
    );
    assert_eq!(s["after_malformed"], "still\n");

    // Pause, then connect: a paused sandbox resumes with its state.
    let pause = &s["pause"];
    assert_eq!(pause["pause"]["ok"], true, "{pause}");
    assert_eq!(pause["listed_state"], "paused", "{pause}");
    assert_eq!(
        pause["pause_again"],
        json!({"ok": false}),
        "409 when paused: {pause}"
    );
    assert_eq!(pause["file_kept"], json!({"ok": "a\n"}), "{pause}");
    assert_eq!(pause["listed_state_after"], "running", "{pause}");
    assert_eq!(pause["connect"]["sandbox_id"], a, "{pause}");
    assert_eq!(pause["run"], json!({"ok": "resumed\n"}), "{pause}");

    // A killed: every later call says so.
    let killed = &s["killed"];
    assert_eq!(killed["kill"], true, "{killed}");
    assert_eq!(killed["kill_again"], false, "{killed}");
    assert_eq!(killed["run"]["sandbox_exception"], true, "{killed}");
    assert!(
        killed["run"]["message"].as_str().unwrap().contains(a),
        "{killed}"
    );
    assert_eq!(killed["get_info"]["not_found"], true, "{killed}");
    assert_eq!(killed["connect"]["not_found"], true, "{killed}");
    assert_eq!(killed["listed"], false, "{killed}");
    assert_eq!(s["list_after"], json!({}));
    // Nothing was left for the script's clean-up to kill.
    for (id, r) in s["cleanup"].as_object().unwrap() {
        assert_eq!(r, &json!({"ok": false}), "{id} was still there at the end");
    }

    assert!(serve.running(), "banger serve exited:\n{}", serve.log());
    no_vms_left(&env);
}

#[test]
fn banger_serve_refuses_unknown_ids_bad_templates_and_keys_in_the_sdks_shapes() {
    let env = TestEnv::new();
    let mut serve = Serve::start(&env);
    // No image is needed: nothing here may boot (a wrong key's create is refused first).
    let s = serve.client("minbase", "errors");

    let unknown = &s["unknown"];
    raised(&unknown["connect"], "SandboxNotFoundException", "nope");
    assert_eq!(unknown["kill"], json!({"ok": false}), "{unknown}");
    raised(&unknown["get_info"], "SandboxNotFoundException", "nope");
    raised(&unknown["set_timeout"], "SandboxNotFoundException", "nope");
    raised(&unknown["pause"], "SandboxNotFoundException", "nope");

    let bad = &s["bad_template"];
    assert_eq!(bad["sandbox_exception"], true, "{bad}");
    assert!(
        bad["message"].as_str().unwrap().contains("no-such-image"),
        "{bad}"
    );

    for key in ["no_key", "wrong_key", "wrong_key_create"] {
        let r = &s[key];
        assert_eq!(r["status"], 401, "{key}: {r}");
        assert!(
            r["content_type"]
                .as_str()
                .unwrap()
                .starts_with("application/json"),
            "{key}: {r}"
        );
        assert_eq!(r["json"]["code"], 401, "{key}: {r}");
        assert!(
            r["json"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{key}: {r}"
        );
    }
    for key in [
        "sdk_wrong_key_list",
        "sdk_wrong_key_create",
        "sdk_wrong_key_kill",
    ] {
        raised(&s[key], "AuthenticationException", "401");
    }

    let envd = &s["envd_unknown"];
    let status = envd["status"].as_u64().unwrap();
    assert!((400..600).contains(&status), "{envd}");
    assert!(
        envd["json"]["message"].as_str().unwrap().contains("nope"),
        "{envd}"
    );
    assert_eq!(s["unknown_route"]["status"], 501, "{}", s["unknown_route"]);
    assert_eq!(s["still_serving"], json!({}));
    assert_eq!(s["cleanup"], json!({}), "a refused create made a sandbox");

    assert!(serve.running(), "banger serve exited:\n{}", serve.log());
    assert_eq!(env.json(&["vm", "list"])["vms"], json!([]));

    // No key configured: anything is let in, on loopback; an open address is refused.
    let keyless = Serve::start_with(&env, &[]);
    let s = keyless.client("minbase", "keyless");
    assert_eq!(s["no_key"], 200, "{s}");
    assert_eq!(s["sdk_list"], json!({"ok": 0}), "{s}");
    let refused = env.fails(&["serve", "--listen", "0.0.0.0:0"]);
    assert!(refused.contains("without an API key"), "{refused}");
}

/// A template that names an image reference: pulled from a real registry on the first
/// create (under its derived name), found on the second, whose sandbox pauses at its
/// timeout as its lifecycle asks and resumes on connect.
#[test]
fn a_template_reference_is_pulled_on_first_use() {
    let env = TestEnv::new();
    // The kernel a pulled template boots (`default_kernel`), warm starts off as in every test.
    env.write_config("default_kernel = \"cloud\"\n[vm]\nwarm = false\n");
    let deb = banger_testkit::qemu::Kernel::get().deb();
    env.ok(&["kernel", "import", "cloud", "--deb", deb.to_str().unwrap()]);
    let registry = banger_testkit::registry::Registry::start();
    let layout = banger_testkit::vm::debian_layout("minbase");
    registry.push(&format!("oci:{}:t", layout.display()), "minbase:t", &[]);
    let reference = format!("{}/minbase:t", registry.host());
    let serve = Serve::start(&env);
    let s = serve.client(&reference, "reference");
    for round in ["first", "second"] {
        let r = &s[round];
        assert_eq!(r["run"], "pulled\n", "{round}: {r}");
        assert_eq!(r["template_id"], reference.as_str(), "{round}: {r}");
        assert_eq!(r["kill"], true, "{round}: {r}");
    }
    // `lifecycle.on_timeout = "pause"`: paused at its deadline, not killed, and resumed by
    // connect with its files.
    let second = &s["second"];
    assert_eq!(second["state_at_timeout"], "paused", "{second}");
    assert_eq!(second["after_connect"], "kept\n", "{second}");
    let images = env.json(&["image", "list"]);
    assert_eq!(images.as_array().unwrap().len(), 1, "pulled once: {images}");
    assert_eq!(
        images[0]["name"], "minbase-t",
        "the name image pull derives: {images}"
    );
    no_vms_left(&env);
}
