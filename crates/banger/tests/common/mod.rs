//! An isolated banger installation per test: its own XDG dirs, the real binaries.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestEnv {
    pub root: tempfile::TempDir,
    /// More environment for both binaries (e.g. `BANGER_HOST` for a remote client).
    pub extra_env: Vec<(String, String)>,
}

/// `config.toml` with warm starts off (every test's default).
pub const COLD: &str = "[vm]\nwarm = false\n";

impl TestEnv {
    pub fn new() -> TestEnv {
        let root = tempfile::Builder::new()
            .prefix("banger-e2e-")
            .tempdir()
            .expect("creating a temp dir");
        let env = TestEnv {
            root,
            extra_env: Vec::new(),
        };
        // Cold boots unless a test asks: a warm start's background template would boot a
        // second guest beside every test's own (`tests/vm_warm.rs` turns them on).
        env.write_config(COLD);
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
    pub fn state_home(&self) -> PathBuf {
        self.path("state")
    }
    pub fn runtime_home(&self) -> PathBuf {
        self.path("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.runtime_home().join("banger/bangerd.sock")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.state_home().join("banger")
    }

    /// Environment that points both binaries at this test's directories.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("XDG_STATE_HOME", self.state_home())
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_RUNTIME_DIR", self.runtime_home())
            // The user's own config.toml must not leak into a test.
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("BANGER_DAEMON", env!("CARGO_BIN_EXE_bangerd"))
            .env("NO_COLOR", "1")
            .env("BANGER_AGENT", banger_testkit::vm::agent_binary())
            .env("BANGER_FIRECRACKER", firecracker())
            .env_remove("BANGER_LOG")
            .env_remove("BANGER_HOST");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
    }

    pub fn banger_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger"));
        cmd.args(args);
        self.apply(&mut cmd);
        cmd
    }

    pub fn bangerd_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bangerd"));
        cmd.args(args);
        self.apply(&mut cmd);
        cmd
    }

    /// Runs `banger ARGS`, whatever its outcome.
    pub fn banger(&self, args: &[&str]) -> Output {
        self.banger_cmd(args).output().expect("running banger")
    }

    /// Runs `banger ARGS` and insists on success.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stderr(args).0
    }

    /// Runs `banger ARGS`, insists on success, returns (stdout, stderr): stderr carries
    /// the progress lines.
    pub fn ok_with_stderr(&self, args: &[&str]) -> (String, String) {
        let out = self.banger(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "banger {args:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
            out.status,
        );
        (stdout, stderr)
    }

    /// Runs `banger --json ARGS` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("banger {args:?}: bad JSON ({e}): {out}"))
    }

    /// Runs `banger ARGS`, insists on failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.banger(args);
        assert!(
            !out.status.success(),
            "banger {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Registers the fixture's rootfs and kernel as image `name`.
    pub fn register(&self, name: &str, f: &Fixture) -> String {
        let (rootfs, kernel) = (f.p("rootfs.ext4"), f.p("vmlinux"));
        self.ok(&[
            "image", "register", "--name", name, "--rootfs", &rootfs, "--kernel", &kernel,
        ])
    }

    /// Imports the Debian cloud kernel (as `cloud`) and pulls the debootstrap image `name`
    /// (`minbase` or `dev`) under that name: a bootable image as a user would make it.
    pub fn debian_image(&self, name: &str) -> String {
        let kernels = self.json(&["kernel", "list"]);
        let has_cloud = kernels["kernels"]
            .as_array()
            .is_some_and(|ks| ks.iter().any(|k| k["name"] == "cloud"));
        if !has_cloud {
            let deb = banger_testkit::qemu::Kernel::get().deb();
            self.ok(&[
                "kernel",
                "import",
                "cloud",
                "--deb",
                deb.to_str().expect("utf8"),
            ]);
        }
        let layout = banger_testkit::vm::debian_layout(name);
        let source = format!("oci:{}:t", layout.display());
        self.ok(&[
            "image",
            "pull",
            &source,
            "--name",
            name,
            "--kernel-ref",
            "cloud",
            "-q",
        ]);
        name.to_string()
    }

    /// Writes this installation's `config.toml` (read by the CLI, and by the daemon it
    /// starts for `[daemon]` and `[vm] warm`): the text as given (include [`COLD`]'s key
    /// to keep warm starts off).
    pub fn write_config(&self, text: &str) {
        let dir = self.path("config/banger");
        std::fs::create_dir_all(&dir).expect("mkdir config");
        std::fs::write(dir.join("config.toml"), text).expect("write config.toml");
    }

    /// `kill -9` of this installation's daemon, waiting until it is gone.
    pub fn kill_daemon(&self) -> i32 {
        let daemon = self.daemon_pid();
        // SAFETY: plain kill(2) of the daemon this test started (through banger).
        unsafe { libc::kill(daemon, libc::SIGKILL) };
        wait_gone(daemon);
        daemon
    }

    pub fn daemon_pid(&self) -> i32 {
        let v = self.json(&["daemon", "status"]);
        v["daemon"]["pid"].as_i64().expect("pid in status") as i32
    }

    /// A fake kernel triple and an (empty, sparse) rootfs file.
    pub fn fixture_files(&self) -> Fixture {
        let dir = self.path("files");
        std::fs::create_dir_all(dir.join("modules")).expect("mkdir");
        std::fs::write(dir.join("vmlinux"), b"kernel").expect("write");
        std::fs::write(dir.join("initrd.img"), b"initrd").expect("write");
        std::fs::write(dir.join("modules/modules.dep"), b"").expect("write");
        let rootfs = dir.join("rootfs.ext4");
        std::fs::File::create(&rootfs)
            .and_then(|f| f.set_len(64 << 20))
            .expect("rootfs");
        Fixture { dir }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Stop this test's daemon; ignore failures (it may be stopped or killed already).
        let _ = self.banger_cmd(&["daemon", "stop"]).output();
        // VMs outlive the daemon by design: a test that failed half-way still must not
        // leave its guests running. The VMs' pid records name them all (pasta's command
        // line does not mention our root); the rest name their directory under it.
        kill_recorded_vm_processes(&self.state_dir().join("vms"));
        kill_processes_mentioning(&self.root.path().to_string_lossy());
    }
}

/// Runs `script` (Python) driving `banger ARGS` on a pseudo-terminal; returns what it
/// printed.
pub fn on_pty(env: &TestEnv, args: &[&str], script: &str) -> String {
    let mut cmd = Command::new(banger_testkit::tools::require("python3"));
    cmd.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_banger"))
        .args(args);
    env.apply(&mut cmd);
    let out = cmd.output().expect("python3");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "pty driver failed: {stdout}\n{stderr}"
    );
    stdout
}

/// For [`on_pty`]: on a login shell, `tty`, then a window resize and `stty size`, then
/// `exit 0`; prints what it read and `EXIT <status>`.
pub const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
def read_until(token, limit=60):
    buf, end = b"", time.time() + limit
    while token not in buf:
        if time.time() > end:
            raise SystemExit("timed out waiting for %r; got %r" % (token, buf[-400:]))
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return buf
os.write(fd, b"tty; echo TTY-$((40+2))\n")
print(read_until(b"TTY-42\r\n").decode(errors="replace"))
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 101, 0, 0))
# The resize travels to the guest on its own: ask until it arrived (or the deadline).
out, end = b"", time.time() + 30
while b"37 101" not in out:
    if time.time() > end:
        raise SystemExit("the new window size never reached the guest; got %r" % out[-400:])
    os.write(fd, b"stty size; echo SIZE-$((40+2))\n")
    out = read_until(b"SIZE-42\r\n")
print(out.decode(errors="replace"))
os.write(fd, b"exit 0\n")
_, status = os.waitpid(pid, 0)
print("EXIT", os.waitstatus_to_exitcode(status))
"#;

/// SIGKILLs the processes of every VM's `pids.json` under `vms_dir` that still run with
/// the recorded start time (a reused pid is left alone).
pub fn kill_recorded_vm_processes(vms_dir: &Path) {
    for vm in std::fs::read_dir(vms_dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(vm.path().join("pids.json")) else {
            continue;
        };
        let Ok(serde_json::Value::Array(records)) = serde_json::from_str(&text) else {
            continue;
        };
        for r in records {
            let (Some(pid), Some(start)) = (r["pid"].as_i64(), r["start_time"].as_u64()) else {
                continue;
            };
            let started = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    fields.get(19)?.parse::<u64>().ok() // field 22 of the whole line
                });
            if started == Some(start) {
                // SAFETY: plain kill(2) of a VM process this test's banger started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// Processes (but this test) whose command line contains `needle`, as `(pid, command
/// line)`.
fn scan_processes(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Processes (but this test) whose command line mentions `needle` (a VM's directory), as
/// `pid: command line`, for assertions that nothing is left.
pub fn processes_mentioning(needle: impl AsRef<std::ffi::OsStr>) -> Vec<String> {
    scan_processes(&needle.as_ref().to_string_lossy())
        .into_iter()
        .map(|(pid, cmdline)| format!("{pid}: {cmdline}"))
        .collect()
}

/// Whether any thread of `pid` runs: a zombie waiting for its parent to reap it does not,
/// but a killed multi-threaded process whose leader is already `Z` does until its last
/// thread is gone.
pub fn alive(pid: i32) -> bool {
    let running = |stat: String| {
        // The state follows the parenthesised command name, which may contain spaces.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X"))
    };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| std::fs::read_to_string(task.path().join("stat")).is_ok_and(running))
}

/// A VM's directory, from its `vm show --json`.
pub fn vm_dir(vm: &serde_json::Value) -> PathBuf {
    PathBuf::from(vm["dir"].as_str().expect("dir"))
}

/// SIGKILLs every process (but this one) whose command line contains `needle`, and waits
/// for them to go.
pub fn kill_processes_mentioning(needle: &str) {
    let killed: Vec<i32> = scan_processes(needle)
        .into_iter()
        .map(|(pid, _)| {
            // SAFETY: plain kill(2) of a process this test's banger started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            pid
        })
        .collect();
    // Never panic here (this runs in Drop, maybe while unwinding): wait, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline && killed.iter().any(|pid| alive(*pid)) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub struct Fixture {
    pub dir: PathBuf,
}

impl Fixture {
    pub fn p(&self, rel: &str) -> String {
        self.dir.join(rel).to_str().expect("utf8").to_string()
    }
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The Firecracker build at `../shared/tools/firecracker` (beside the repository). CI has
/// it and must use it; elsewhere a missing one is reported by the tests that need it.
pub fn firecracker() -> PathBuf {
    let p = banger_testkit::tools::shared_tools_dir().join("firecracker");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(p.is_file(), "CI must have Firecracker at {}", p.display());
    }
    p
}

/// Waits (bounded) for a process to be gone.
pub fn wait_gone(pid: i32) {
    // Until reaped, not merely a zombie: a killed multi-threaded process's leader shows
    // `Z` while its other threads still hold its files (a daemon's socket).
    // SAFETY: signal 0 only checks for existence.
    banger_testkit::wait::until(&format!("process {pid} to exit"), || unsafe {
        libc::kill(pid, 0) != 0
    });
}
