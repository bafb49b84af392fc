//! `banger --host ssh://…`: a real OpenSSH `sshd` on a loopback port, owned by this test
//! (its own host key, one authorized key), whose sessions see another banger installation
//! (`SetEnv`): the "remote" host. The local CLI reaches it only through `ssh HOST banger
//! daemon dial-stdio` and never starts a daemon of its own.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::oci_image::sha256;
use banger_testkit::registry::Registry;
use banger_testkit::tools;
use common::{PTY_DRIVER, TestEnv, on_pty};

/// A test-owned sshd; stopped (by pid) when dropped.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 with sessions that see `remote`'s installation.
    fn start(dir: &Path, remote: &TestEnv) -> Sshd {
        let sshd = tools::require("sshd");
        let keygen = tools::require("ssh-keygen");
        std::fs::create_dir_all(dir).expect("mkdir");
        for key in ["host_key", "user_key"] {
            let ok = Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(ok.success());
        }
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).expect("copy");
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let port = free_port();
        // The remote session's environment: the remote installation's directories and
        // binaries, as TestEnv::apply gives them to a local command.
        let mut probe = Command::new("true");
        remote.apply(&mut probe);
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_banger"))
            .parent()
            .expect("bin dir")
            .to_path_buf();
        let mut set_env = vec![format!(
            "PATH={}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            bin_dir.display()
        )];
        for (k, v) in probe.get_envs() {
            if let (Some(v), Some(k)) = (v, k.to_str()) {
                set_env.push(format!("{k}={}", v.to_str().expect("utf8 env")));
            }
        }
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile none\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nSetEnv {}\n",
            set_env.join(" "),
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("write sshd_config");
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).expect("read");
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}"),
        )
        .expect("write known_hosts");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).expect("log"))
            .spawn()
            .expect("starting sshd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// An ssh config for `ssh testbox` with this key (or another one) and host key.
    fn client_config(&self, key: &str) -> PathBuf {
        let path = self.dir.join(format!("ssh_config_{key}"));
        std::fs::write(
            &path,
            format!(
                "Host testbox\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {d}/{key}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n  \
                 BatchMode yes\n",
                self.port,
                d = self.dir.display()
            ),
        )
        .expect("write ssh config");
        path
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A local installation whose every command goes to `ssh://testbox`.
fn client_of(sshd: &Sshd, key: &str) -> TestEnv {
    let mut env = TestEnv::new();
    let config = sshd.client_config(key);
    env.extra_env = vec![
        ("BANGER_HOST".into(), "ssh://testbox".into()),
        (
            "BANGER_SSH_COMMAND".into(),
            format!(
                "{} -F {}",
                tools::require("ssh").display(),
                config.display()
            ),
        ),
    ];
    env
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The remote installation gets the Debian minbase image from a real registry on loopback,
/// through the local CLI.
fn pull_through_the_remote(local: &TestEnv) -> String {
    let deb = banger_testkit::qemu::Kernel::get().deb();
    local.ok(&[
        "kernel",
        "import",
        "cloud",
        "--deb",
        deb.to_str().expect("utf8"),
    ]);
    let registry = Registry::start();
    let layout = banger_testkit::vm::debian_layout("minbase");
    registry.push(&format!("oci:{}:t", layout.display()), "minbase:t", &[]);
    let reference = format!("{}/minbase:t", registry.host());
    local.ok(&[
        "image",
        "pull",
        &reference,
        "--name",
        "minbase",
        "--kernel-ref",
        "cloud",
        "-q",
    ]);
    "minbase".into()
}

#[test]
fn a_remote_daemon_does_what_a_local_one_does() {
    let remote = TestEnv::new();
    let sshd = Sshd::start(&remote.path("sshd"), &remote);
    let local = client_of(&sshd, "user_key");

    // Nothing runs there yet: status says so (exit 3) without starting a daemon.
    let status = local.banger(&["daemon", "status"]);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("not running (ssh://testbox)"),
        "{}",
        text(&status.stdout)
    );
    assert!(!remote.socket().exists(), "status started a daemon");

    let image = pull_through_the_remote(&local);
    // The daemon that answered is the remote installation's; no local one was started.
    let version = local.json(&["version"]);
    assert_eq!(
        version["daemon"]["state_dir"].as_str(),
        Some(remote.state_dir().to_str().expect("utf8")),
        "{version}"
    );
    assert!(!local.socket().exists(), "a local daemon was started");

    // vm run PATH: the local workspace goes to the remote VM; exit code and output return.
    let ws = local.path("app");
    std::fs::create_dir_all(&ws).expect("mkdir");
    std::fs::write(ws.join("hello.txt"), b"from the laptop\n").expect("write");
    let run = local.banger(&[
        "vm",
        "run",
        ws.to_str().expect("utf8"),
        "--image",
        &image,
        "--name",
        "far",
        "--cpus",
        "1",
        "--memory",
        "512MiB",
        "--",
        "sh",
        "-c",
        "cat /root/app/hello.txt; exit 7",
    ]);
    assert_eq!(run.status.code(), Some(7), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "from the laptop\n");

    // exec -i: stdin travels through ssh.
    let mut child = local
        .banger_cmd(&["vm", "exec", "-i", "far", "--", "sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("exec -i");
    let input: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with(sha256(&input).trim_start_matches("sha256:")),
        "{}",
        text(&out.stdout)
    );

    // cp both ways: 50 MB, byte for byte.
    let big = local.path("big.bin");
    let data: Vec<u8> = (0..50u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&big, &data).expect("write");
    local.ok(&["vm", "cp", big.to_str().expect("utf8"), "far:/root/big.bin"]);
    let back = local.path("back.bin");
    local.ok(&[
        "vm",
        "cp",
        "far:/root/big.bin",
        back.to_str().expect("utf8"),
    ]);
    assert_eq!(
        sha256(&std::fs::read(&back).expect("read")),
        sha256(&data),
        "the 50 MB file changed on the way"
    );

    // vm ssh: a pty there that follows this window's size.
    let out = on_pty(&local, &["vm", "ssh", "far"], PTY_DRIVER);
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("37 101"), "stty size after the resize: {out}");
    assert!(out.contains("EXIT 0"), "{out}");

    // vm list --json lists the remote VM.
    assert_eq!(vm_names(&local), ["far"]);

    // ssh-config through the remote: ProxyCommand and KnownHostsCommand go there, the
    // identity is a local 0600 copy of the remote daemon's.
    local.ok(&["ssh-config"]);
    let written = std::fs::read_to_string(local.path("config/banger/ssh_config")).expect("read");
    assert!(
        written.contains("--host ssh://testbox vm proxy '%h' %p")
            && written.contains("KnownHostsCommand ")
            && written.contains("--host ssh://testbox ssh-config --known-hosts"),
        "{written}"
    );
    let identity = local.path("config/banger/remote/testbox/id_ed25519");
    assert_eq!(common::mode_of(&identity) & 0o777, 0o600);
    assert_eq!(
        std::fs::read(&identity).expect("read"),
        std::fs::read(remote.state_dir().join("ssh/id_ed25519")).expect("read"),
        "the local copy is not the remote daemon's identity"
    );
    assert_eq!(
        local.ok(&["ssh-config", "--known-hosts"]),
        std::fs::read_to_string(remote.state_dir().join("ssh/known_hosts")).expect("read")
    );

    // The ssh connection killed in the middle of an exec: the remote daemon stays healthy
    // and the VM runs on.
    let mut exec = local
        .banger_cmd(&[
            "vm",
            "exec",
            "far",
            "--",
            "sh",
            "-c",
            "echo started; sleep 600",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("exec");
    let mut first = [0u8; 8];
    exec.stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("the exec started");
    assert_eq!(&first, b"started\n");
    kill_ssh_of(exec.id());
    let status = exec.wait().expect("wait");
    assert!(!status.success(), "exec survived its connection");
    let show = local.json(&["vm", "show", "far"]);
    assert_eq!(show["state"], "running", "{show}");
    assert_eq!(
        local.ok(&["vm", "exec", "far", "--", "echo", "still here"]),
        "still here\n"
    );

    // vm run --rm whose connection drops: the remote daemon removes the VM itself.
    let mut run = local
        .banger_cmd(&[
            "vm",
            "run",
            "--rm",
            "--image",
            &image,
            "--name",
            "gone",
            "--cpus",
            "1",
            "--memory",
            "512MiB",
            "--",
            "sh",
            "-c",
            "echo up; sleep 600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("vm run --rm");
    let mut first = [0u8; 3];
    run.stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("the run started");
    // SIGKILL: the CLI cannot clean up; only the daemon's lease can.
    let _ = run.kill();
    let _ = run.wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names = vm_names(&local);
        if !names.iter().any(|n| n == "gone") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped --rm VM is still there: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Stop the remote daemon through the remote.
    local.ok(&["vm", "rm", "-f", "far"]);
    local.ok(&["daemon", "stop"]);
    assert!(!remote.socket().exists(), "the remote daemon still serves");
}

/// `vm list --json`'s names.
fn vm_names(env: &TestEnv) -> Vec<String> {
    let list = env.json(&["vm", "list"]);
    list["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// SIGKILLs the ssh processes that are children of `pid` (the CLI's bridge).
fn kill_ssh_of(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = descendants(pid);
        let ssh: Vec<i32> = kids
            .iter()
            .filter(|(_, comm)| comm == "ssh")
            .map(|(p, _)| *p)
            .collect();
        if !ssh.is_empty() {
            for p in ssh {
                // SAFETY: kill(2) of an ssh process this test's CLI started.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            return;
        }
        assert!(Instant::now() < deadline, "no ssh under pid {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (pid, comm) of every descendant of `pid`.
fn descendants(pid: u32) -> Vec<(i32, String)> {
    let mut all = Vec::new();
    let mut frontier = vec![pid as i32];
    while let Some(parent) = frontier.pop() {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            all.push((child, comm.trim().to_string()));
            frontier.push(child);
        }
    }
    all
}

#[test]
fn a_wrong_host_or_a_refused_key_is_one_clear_line() {
    let remote = TestEnv::new();
    let sshd = Sshd::start(&remote.path("sshd"), &remote);

    // A key the server does not know.
    let keygen = tools::require("ssh-keygen");
    let ok = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(sshd.dir.join("stranger_key"))
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    let stranger = client_of(&sshd, "stranger_key");
    let err = stranger.fails(&["vm", "list"]);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("banger: error: ssh://testbox: ") && err.contains("Permission denied"),
        "{err}"
    );

    // Nobody listens on that port.
    let mut nobody = client_of(&sshd, "user_key");
    let closed = free_port();
    nobody.extra_env[0].1 = format!("ssh://root@127.0.0.1:{closed}");
    let err = nobody.fails(&["vm", "list"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Connection refused"), "{err}");

    // Not an ssh URL at all.
    let mut typo = client_of(&sshd, "user_key");
    typo.extra_env[0].1 = "testbox".into();
    let err = typo.fails(&["vm", "list"]);
    assert!(err.contains("only ssh://"), "{err}");

    // The remote host has no banger on its PATH.
    let mut missing = client_of(&sshd, "user_key");
    missing
        .extra_env
        .push(("BANGER_REMOTE_BANGER".into(), "/nonexistent/banger".into()));
    let err = missing.fails(&["vm", "list"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("BANGER_REMOTE_BANGER"), "{err}");

    // None of this started a daemon anywhere.
    assert!(!remote.socket().exists());
    assert!(!stranger.socket().exists());
}

#[test]
fn an_archive_on_this_machine_is_uploaded_for_a_remote_pull() {
    let remote = TestEnv::new();
    let sshd = Sshd::start(&remote.path("sshd"), &remote);
    let local = client_of(&sshd, "user_key");
    // A small image as an OCI archive, here, named by a relative path.
    let layout = local.path("layout");
    let layer = banger_testkit::layers::LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hello", b"uploaded")
        .finish();
    banger_testkit::oci_image::single(
        &layout,
        "v1",
        &[banger_testkit::oci_image::Layer {
            tar: layer,
            compression: banger_testkit::oci_image::Compression::Gzip,
        }],
    );
    tools::run(
        Command::new("tar")
            .arg("-cf")
            .arg(local.path("app.tar"))
            .arg("-C")
            .arg(&layout)
            .arg("."),
    );
    let kernel = remote.fixture_files().p("vmlinux");
    let out = local
        .banger_cmd(&[
            "--json",
            "image",
            "pull",
            "oci-archive:app.tar",
            "--kernel",
            &kernel,
        ])
        .current_dir(local.root.path())
        .output()
        .expect("pull");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let image: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(image["name"], "app", "{image}");
    // The rootfs is on the remote side; the upload is gone once the pull is done.
    let rootfs = image["rootfs_path"].as_str().expect("rootfs_path");
    assert!(rootfs.starts_with(remote.state_dir().to_str().expect("utf8")));
    let uploads = remote.state_dir().join("uploads");
    assert_eq!(
        std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0),
        0,
        "an upload was left in {}",
        uploads.display()
    );
    // A relative path the daemon would read in place (not an archive) is refused.
    let err = local.fails(&["image", "pull", "oci:layout:v1", "--kernel", &kernel]);
    assert!(err.contains("must be absolute there"), "{err}");
    assert!(!local.socket().exists(), "a local daemon was started");
}
