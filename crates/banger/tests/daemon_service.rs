//! `banger daemon install|uninstall` (bangerd as a systemd service) and which daemon
//! answers: the units pass `systemd-analyze verify`, install and uninstall write and remove
//! them, a real user manager runs one, and `daemon status` says who started the daemon.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TestEnv, mode_of, wait_gone};

/// `systemd-analyze`, which must exist (package `systemd`, see
/// scripts/install-test-deps.sh).
fn systemd_analyze() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("systemd-analyze is missing: scripts/install-test-deps.sh installs it (package systemd)")
        })
}

/// Writes `unit` as `bangerd.service` and insists that `systemd-analyze verify` accepts it
/// without a word about it (unknown keys and bad values are only warnings, exit 0).
fn assert_verifies(unit: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bangerd.service");
    std::fs::write(&file, unit).expect("write the unit");
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&file)
        .output()
        .expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{stderr}\nunit:\n{unit}",
        out.status
    );
    let about_it: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("bangerd.service"))
        .collect();
    assert!(
        about_it.is_empty(),
        "systemd-analyze verify complains about the unit:\n{}\nunit:\n{unit}",
        about_it.join("\n")
    );
}

fn exec_start(unit: &str) -> &str {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in\n{unit}"))
}

fn bangerd() -> PathBuf {
    std::fs::canonicalize(env!("CARGO_BIN_EXE_bangerd")).expect("bangerd")
}

#[test]
fn printed_units_pass_systemd_analyze_verify() {
    let env = TestEnv::new();
    let bangerd = bangerd();

    let user = env.ok(&["daemon", "install", "--print"]);
    assert_verifies(&user);
    assert_eq!(
        exec_start(&user),
        format!(
            "{} --state-dir {} --cache-dir {} --runtime-dir {}",
            bangerd.display(),
            env.state_dir().display(),
            env.path("cache/banger").display(),
            env.runtime_home().join("banger").display()
        )
    );
    assert!(user.contains("\nWantedBy=default.target\n"), "{user}");
    assert!(user.contains("\nKillMode=process\n"), "{user}");
    assert!(
        user.contains("\nEnvironment=BANGER_STARTED_BY=systemd\n"),
        "{user}"
    );

    let system = env.ok(&["daemon", "install", "--system", "--print"]);
    assert_verifies(&system);
    assert_eq!(
        exec_start(&system),
        format!(
            "{} --state-dir /var/lib/banger --cache-dir /var/cache/banger --runtime-dir /run/banger",
            bangerd.display()
        )
    );
    for line in [
        "StateDirectory=banger",
        "RuntimeDirectoryPreserve=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(system.lines().any(|l| l == line), "no {line} in\n{system}");
    }

    // Nothing was written.
    assert!(!env.path("config/systemd").exists());
}

#[test]
fn paths_with_blanks_and_specifiers_survive_systemd_quoting() {
    let env = TestEnv::new();
    let odd = env.path("a dir/100%");
    let odd = odd.to_str().expect("utf8");
    let unit = env.ok(&["--state-dir", odd, "daemon", "install", "--print"]);
    assert_verifies(&unit);
    let quoted = format!("--state-dir \"{}\" ", odd.replace('%', "%%"));
    assert!(exec_start(&unit).contains(&quoted), "{unit}");
}

#[test]
fn install_no_start_writes_the_user_unit_and_uninstall_removes_it() {
    let env = TestEnv::new();
    let unit = env.path("config/systemd/user/bangerd.service");

    let out = env.ok(&["daemon", "install", "--no-start"]);
    assert!(
        out.contains("systemctl --user enable --now bangerd.service"),
        "{out}"
    );
    assert!(out.contains("loginctl enable-linger"), "{out}");
    assert_eq!(mode_of(&unit), 0o644);
    let text = std::fs::read_to_string(&unit).expect("the unit");
    assert_eq!(text, env.ok(&["daemon", "install", "--print"]));
    // --no-start starts nothing, not even the on-demand daemon.
    assert_eq!(env.banger(&["daemon", "status"]).status.code(), Some(3));

    // Without a user manager's bus (the test's XDG_RUNTIME_DIR has none; a session bus
    // address would reach the real one) systemctl fails: a note, and the file goes anyway.
    let uninstall = || {
        let out = env
            .banger_cmd(&["daemon", "uninstall"])
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .output()
            .expect("running banger");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "uninstall: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = uninstall();
    assert!(out.contains("removed"), "{out}");
    assert!(!unit.exists());

    let out = uninstall();
    assert!(out.contains("nothing to remove"), "{out}");
}

#[test]
fn an_autostarted_daemon_says_the_cli_started_it() {
    let env = TestEnv::new();
    env.json(&["image", "list"]); // any command starts the daemon on demand
    let status = env.ok(&["daemon", "status"]);
    assert!(
        status.contains("started by: banger CLI (on demand)"),
        "{status}"
    );
    let v = env.json(&["daemon", "status"]);
    assert_eq!(v["daemon"]["started_by"], "banger CLI (on demand)");
    let doctor = String::from_utf8_lossy(&env.banger(&["doctor"]).stdout).into_owned();
    assert!(
        doctor
            .lines()
            .any(|l| l.contains("daemon") && l.contains("started by banger CLI (on demand)")),
        "{doctor}"
    );
}

#[test]
fn a_daemon_started_by_hand_says_so() {
    let env = TestEnv::new();
    let mut cmd = env.bangerd_cmd(&[]);
    // As from a shell, even when these tests run inside a systemd service.
    cmd.env_remove("INVOCATION_ID")
        .env_remove("BANGER_STARTED_BY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("bangerd");
    banger_testkit::wait::until("the daemon to answer", || {
        env.banger(&["daemon", "status"]).status.success()
    });
    let v = env.json(&["daemon", "status"]);
    assert_eq!(v["daemon"]["started_by"], "by hand");
    env.ok(&["daemon", "stop"]);
    child.wait().expect("reaping bangerd");
}

/// The real user manager runs the unit: `banger daemon status` reaches its daemon, which
/// says systemd started it; uninstall stops it. Needs systemd as PID 1 and a user manager.
#[test]
fn a_user_unit_runs_under_the_user_manager() {
    if !Path::new("/run/systemd/system").exists() {
        let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        println!(
            "daemon_service: no systemd running as PID 1 (PID 1 is {}): the live user-unit test is skipped",
            init.trim()
        );
        return;
    }
    let probe = Command::new("systemctl")
        .args(["--user", "show-environment"])
        .output()
        .expect("running systemctl");
    assert!(
        probe.status.success(),
        "systemd is PID 1 but `systemctl --user` does not work ({}): run the tests in a login \
         session, or with `loginctl enable-linger $USER`",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    let env = TestEnv::new();
    // The user manager reads units from the real config home only; the daemon still serves
    // this test's directories (XDG_STATE_HOME, XDG_CACHE_HOME and --runtime-dir).
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".config"));
    let unit = config_home.join("systemd/user/bangerd.service");
    assert!(
        !unit.exists(),
        "{} exists: this test would replace a real installation",
        unit.display()
    );
    let runtime = env.runtime_home().join("banger");
    let live = |args: &[&str]| -> Output {
        let mut all = vec!["--runtime-dir", runtime.to_str().expect("utf8")];
        all.extend_from_slice(args);
        let mut cmd = env.banger_cmd(&all);
        cmd.env("XDG_CONFIG_HOME", &config_home)
            .env("BANGER_CONFIG", env.path("config/banger/config.toml"));
        // systemctl --user finds the manager's bus through the real XDG_RUNTIME_DIR.
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) => cmd.env("XDG_RUNTIME_DIR", dir),
            None => cmd.env_remove("XDG_RUNTIME_DIR"),
        };
        cmd.output().expect("running banger")
    };
    // Whatever happens below, the user's manager is left without the unit.
    struct Uninstall<F: Fn() -> Output>(F);
    impl<F: Fn() -> Output> Drop for Uninstall<F> {
        fn drop(&mut self) {
            let _ = (self.0)();
        }
    }
    let _cleanup = Uninstall(|| live(&["daemon", "uninstall"]));

    let out = live(&["daemon", "install"]);
    assert!(
        out.status.success(),
        "install: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    banger_testkit::wait::until("the unit's daemon to answer", || {
        env.banger(&["daemon", "status"]).status.success()
    });
    let status = env.ok(&["daemon", "status"]);
    assert!(
        status.contains("started by: systemd unit bangerd.service (user manager)"),
        "{status}"
    );
    let pid = env.daemon_pid();

    let out = live(&["daemon", "uninstall"]);
    assert!(
        out.status.success(),
        "uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!unit.exists());
    wait_gone(pid);
    banger_testkit::wait::until("the daemon to be gone", || {
        env.banger(&["daemon", "status"]).status.code() == Some(3)
    });
}
