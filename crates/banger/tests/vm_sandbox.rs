//! The sandbox end to end, through the CLI: `vm run` with a workspace, `vm ssh` on a pty,
//! real OpenSSH through the agent, `vm cp`, user-mode networking with published ports, and
//! the config file. Real QEMU guests of debootstrap images, as in `vm_lifecycle.rs`.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use banger_testkit::oci_image::sha256;
use banger_testkit::{tools, wait};
use common::{PTY_DRIVER, TestEnv, on_pty};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new(tools::require("git"))
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

fn write(path: &Path, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn run_returns_the_exit_code_and_rm_leaves_nothing() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let out = env.banger(&[
        "vm",
        "run",
        "--image",
        &image,
        "--rm",
        "--cpus",
        "1",
        "--",
        "sh",
        "-c",
        "echo in-guest; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stdout(&out).contains("in-guest"), "{}", stdout(&out));
    assert_eq!(env.json(&["vm", "list"])["vms"], serde_json::json!([]));
    let left: Vec<_> = std::fs::read_dir(env.state_dir().join("vms"))
        .expect("vms dir")
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        common::processes_mentioning(env.state_dir().join("vms")),
        Vec::<String>::new()
    );

    // A plain directory (no git): everything is copied, modes kept.
    let plain = env.path("plain");
    write(&plain.join("a.txt"), b"a\n", 0o640);
    write(&plain.join("nested/deeper/b.sh"), b"#!/bin/sh\n", 0o755);
    write(
        &plain.join("build.log"),
        b"no .gitignore here, so this is copied too\n",
        0o644,
    );
    let out = env.banger(&[
        "vm",
        "run",
        s(&plain),
        "--image",
        &image,
        "--rm",
        "--cpus",
        "1",
        "--",
        "sh",
        "-c",
        "find . -type f | sort; stat -c '%a' a.txt nested/deeper/b.sh",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "./a.txt\n./build.log\n./nested/deeper/b.sh\n640\n755\n",
        "{}",
        stderr(&out)
    );

    // --net none: no network device at all.
    let out = env.banger(&[
        "vm",
        "run",
        "--image",
        &image,
        "--rm",
        "--cpus",
        "1",
        "--net",
        "none",
        "--",
        "sh",
        "-c",
        "! grep -q eth0 /proc/net/dev",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the guest has an eth0 with --net none: {}",
        stderr(&out)
    );
}

#[test]
fn run_copies_a_git_workspace_and_dry_run_lists_it() {
    let env = TestEnv::new();
    let image = env.debian_image("dev");
    let repo = env.path("app");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q"]);
    write(&repo.join("README"), b"tracked\n", 0o644);
    write(&repo.join("bin/run.sh"), b"#!/bin/sh\necho run\n", 0o755);
    write(&repo.join(".gitignore"), b"*.log\nbuild/\n", 0o644);
    write(&repo.join("sub/.gitignore"), b"secret.txt\n", 0o644);
    write(&repo.join("sub/kept.txt"), b"tracked too\n", 0o600);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    write(&repo.join("notes.txt"), b"untracked, not ignored\n", 0o644);
    write(&repo.join("debug.log"), b"ignored\n", 0o644);
    write(&repo.join("build/out.o"), b"ignored dir\n", 0o644);
    write(&repo.join("sub/secret.txt"), b"nested ignore\n", 0o644);

    let dry = env.banger(&["vm", "run", s(&repo), "--image", &image, "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let listed: Vec<String> = stdout(&dry).lines().map(str::to_owned).collect();
    for want in [
        "README",
        "bin/run.sh",
        ".gitignore",
        "sub/.gitignore",
        "sub/kept.txt",
        "notes.txt",
        ".git/HEAD",
    ] {
        assert!(
            listed.iter().any(|l| l == want
                || l.ends_with(&format!("/{want}"))
                || l == &format!("app/{want}")),
            "{want} missing from --dry-run: {listed:?}"
        );
    }
    for never in ["debug.log", "build/out.o", "sub/secret.txt"] {
        assert!(
            !listed.iter().any(|l| l.ends_with(never)),
            "{never} listed: {listed:?}"
        );
    }
    assert_eq!(
        env.json(&["vm", "list"])["vms"],
        serde_json::json!([]),
        "--dry-run made a VM"
    );

    // What the guest gets: the same files (modes kept), none of the ignored ones, a usable .git.
    let script = "cd /root/app && find . -path ./.git -prune -o -type f -print | sed 's|^./||' | sort && \
                  stat -c '%a %n' bin/run.sh sub/kept.txt && git status --porcelain && git log --oneline | wc -l";
    let out = env.banger(&[
        "vm",
        "run",
        s(&repo),
        "--image",
        &image,
        "--rm",
        "--cpus",
        "1",
        "--memory",
        "512MiB",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let files: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(
        files,
        vec![
            ".gitignore",
            "README",
            "bin/run.sh",
            "notes.txt",
            "sub/.gitignore",
            "sub/kept.txt"
        ],
        "{text}"
    );
    assert!(
        text.contains("755 bin/run.sh") && text.contains("600 sub/kept.txt"),
        "{text}"
    );
    assert!(
        text.contains("?? notes.txt"),
        "git status in the guest: {text}"
    );
    assert!(
        text.trim_end().ends_with('1'),
        "one commit in the guest's git log: {text}"
    );
    let dry_files: Vec<String> = listed
        .iter()
        .map(|l| l.trim_start_matches("app/").to_string())
        .filter(|l| !l.starts_with(".git/") && l != ".git" && !l.ends_with('/'))
        .collect();
    let mut sorted = dry_files.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        files.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        "--dry-run differs from the copy"
    );
}

/// One dev VM with a published port serves the pty, cp, ports and network assertions.
#[test]
fn a_sandbox_has_a_pty_files_and_a_network() {
    let env = TestEnv::new();
    let image = env.debian_image("dev");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let publish = format!("{port}:8000");
    env.ok(&[
        "vm", "create", "box", "--image", &image, "--cpus", "1", "--memory", "512MiB", "-p",
        &publish, "--net", "host", "-q",
    ]);

    // vm ssh: a login shell on a pty that follows the window size.
    let out = on_pty(&env, &["vm", "ssh", "box"], PTY_DRIVER);
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("37 101"), "stty size after the resize: {out}");
    assert!(out.contains("EXIT 0"), "{out}");

    // vm cp: a 100 MB file and a tree with modes and symlinks, there and back.
    let big = env.path("big.bin");
    let data: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&big, &data).expect("write");
    let tree = env.path("tree");
    write(&tree.join("exec.sh"), b"#!/bin/sh\n", 0o750);
    write(&tree.join("deep/er/file"), b"deep\n", 0o640);
    std::os::unix::fs::symlink("deep/er/file", tree.join("link")).expect("symlink");
    env.ok(&["vm", "cp", s(&big), "box:/root/"]);
    env.ok(&["vm", "cp", s(&tree), "box:/root/"]);
    let guest = env.banger(&[
        "vm",
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "sha256sum /root/big.bin; stat -c '%a' /root/tree/exec.sh; readlink /root/tree/link",
    ]);
    assert!(
        stdout(&guest).contains(sha256(&data).trim_start_matches("sha256:")),
        "{}",
        stdout(&guest)
    );
    assert!(
        stdout(&guest).contains("750\ndeep/er/file"),
        "{}",
        stdout(&guest)
    );
    let back = env.path("back");
    std::fs::create_dir_all(&back).expect("mkdir");
    env.ok(&["vm", "cp", "box:/root/big.bin", &format!("{}/", s(&back))]);
    env.ok(&["vm", "cp", "box:/root/tree", &format!("{}/", s(&back))]);
    assert_eq!(
        sha256(&std::fs::read(back.join("big.bin")).expect("read")),
        sha256(&data)
    );
    assert_eq!(common::mode_of(&back.join("tree/exec.sh")), 0o750);
    assert_eq!(common::mode_of(&back.join("tree/deep/er/file")), 0o640);
    assert_eq!(
        std::fs::read(back.join("tree/deep/er/file")).expect("read"),
        b"deep\n",
        "tree content round-trips"
    );
    assert_eq!(
        std::fs::read_link(back.join("tree/link")).expect("link"),
        PathBuf::from("deep/er/file")
    );

    // Networking: a guest server published on 127.0.0.1, the host reachable at the gateway,
    // names resolving through the host's resolver.
    let started = env.banger(&[
        "vm",
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "cd /etc && nohup python3 -m http.server 8000 >/dev/null 2>&1 &",
    ]);
    assert!(started.status.success(), "{}", stderr(&started));
    wait::until_for(
        "the guest's HTTP server on the published port",
        Duration::from_secs(60),
        || http_get(&format!("127.0.0.1:{port}"), "/hostname").is_some_and(|b| b == "box\n"),
    );
    let ports = env.json(&["vm", "ports", "box"]);
    assert_eq!(ports["published"][0]["host_port"], port, "{ports}");
    assert_eq!(ports["published"][0]["host_ip"], "127.0.0.1", "{ports}");
    assert!(
        ports["listening"]
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["port"] == 8000)),
        "{ports}"
    );

    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host_port = host.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = host.accept().expect("accept");
        let mut req = [0u8; 1024];
        let _ = c.read(&mut req);
        c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nfrom-the-host")
            .expect("reply");
    });
    let fetch = format!(
        "import urllib.request; print(urllib.request.urlopen('http://10.0.2.2:{host_port}/').read().decode())"
    );
    let got = env.banger(&["vm", "exec", "box", "--", "python3", "-c", &fetch]);
    assert_eq!(stdout(&got).trim(), "from-the-hos", "{}", stderr(&got));
    server.join().expect("server");
    let dns = env.banger(&[
        "vm",
        "exec",
        "box",
        "--",
        "getent",
        "hosts",
        "deb.debian.org",
    ]);
    assert!(
        dns.status.success() && !stdout(&dns).trim().is_empty(),
        "no name resolution in the guest: {}",
        stderr(&dns)
    );

    // A taken host port is refused before anything boots.
    let taken = env.fails(&[
        "vm",
        "create",
        "other",
        "--image",
        &image,
        "-p",
        &format!("{port}:80"),
    ]);
    assert!(taken.contains(&port.to_string()), "{taken}");
    assert!(!env.json(&["vm", "list"]).to_string().contains("\"other\""));
    env.ok(&["vm", "delete", "box", "--force"]);
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    c.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[test]
fn openssh_reaches_guests_without_prompts_or_warnings() {
    let env = TestEnv::new();
    let image = env.debian_image("dev");
    let home = env.path("home");
    std::fs::create_dir_all(&home).expect("home");
    let ssh_config = |env: &TestEnv| {
        let mut cmd = env.banger_cmd(&["ssh-config", "--install"]);
        cmd.env("HOME", &home);
        let out = cmd.output().expect("ssh-config");
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let ssh = |env: &TestEnv| {
        let mut cmd = Command::new(tools::require("ssh"));
        // OpenSSH finds ~/.ssh through the passwd entry, not $HOME: name the config that
        // `ssh-config --install` wrote (it only Includes banger's).
        cmd.arg("-F").arg(home.join(".ssh/config"));
        cmd.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "sshbox.vm",
            "echo",
            "over-ssh",
        ]);
        env.apply(&mut cmd);
        cmd.env("HOME", &home).env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(env!("CARGO_BIN_EXE_banger"))
                    .parent()
                    .map(s)
                    .unwrap_or(""),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        cmd.stdin(Stdio::null()).output().expect("ssh")
    };
    let sshd = "mkdir -p /run/sshd && /usr/sbin/sshd";
    for round in 0..2 {
        env.ok(&[
            "vm", "create", "sshbox", "--image", &image, "--cpus", "1", "--memory", "512MiB",
            "--init", "agent", "-q",
        ]);
        if round == 1 {
            // A recreated VM with new host keys: banger's known_hosts must follow.
            env.ok(&[
                "vm",
                "exec",
                "sshbox",
                "--",
                "sh",
                "-c",
                "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null",
            ]);
        }
        env.ok(&["vm", "exec", "sshbox", "--", "sh", "-c", sshd]);
        ssh_config(&env);
        let out = ssh(&env);
        assert_eq!(
            stdout(&out).trim(),
            "over-ssh",
            "round {round}: {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("WARNING"),
            "round {round}: {}",
            stderr(&out)
        );
        env.ok(&["vm", "delete", "sshbox", "--force"]);
    }
    let cfg = std::fs::read_to_string(home.join(".ssh/config")).expect("~/.ssh/config");
    assert_eq!(cfg.matches("Include").count(), 1, "{cfg}");
    let mut un = env.banger_cmd(&["ssh-config", "--uninstall"]);
    un.env("HOME", &home);
    assert!(un.output().expect("uninstall").status.success());
    let cfg = std::fs::read_to_string(home.join(".ssh/config")).unwrap_or_default();
    assert!(!cfg.contains("Include"), "{cfg}");
}

#[test]
fn the_config_file_sets_defaults_and_names_bad_keys() {
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let cfg = env.path("config.toml");
    std::fs::write(&cfg, "[vm]\ncpus = 1\nmemory = \"300MiB\"\nbogus = 3\n").expect("write");
    let with_cfg = |args: &[&str]| {
        let mut cmd = env.banger_cmd(args);
        cmd.env("BANGER_CONFIG", &cfg);
        cmd.output().expect("banger")
    };
    let bad = with_cfg(&["config", "show"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("bogus"), "{}", stderr(&bad));
    std::fs::write(
        &cfg,
        "default_image_name = \"minbase\"\n[vm]\ncpus = 1\nmemory = \"300MiB\"\n",
    )
    .expect("write");
    let shown = with_cfg(&["--json", "config", "show"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    assert!(
        text.contains("300") && text.contains(s(&cfg)),
        "sources in config show: {text}"
    );
    let created = with_cfg(&["vm", "create", "c", "--image", &image, "--no-start", "-q"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let c = env.json(&["vm", "show", "c"]);
    assert_eq!(c["cpus"], 1, "{c}");
    assert_eq!(c["memory_mib"], 300, "{c}");
    env.ok(&["vm", "delete", "c"]);
}
