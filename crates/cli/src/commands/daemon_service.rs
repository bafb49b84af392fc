//! `banger daemon install|uninstall`: bangerd as a systemd service.
//!
//! The user unit (`$XDG_CONFIG_HOME/systemd/user/bangerd.service`) runs bangerd as the user
//! with the CLI's own directories, so every `banger` command finds its socket (and no
//! on-demand daemon is started beside it). The system unit
//! (`/etc/systemd/system/bangerd.service`) runs it as root with `/var/lib/banger`,
//! `/var/cache/banger` and `/run/banger`, which systemd makes (`StateDirectory=` …).
//!
//! Both use `KillMode=process`: VMs are children of the daemon's children, and must
//! outlive a daemon restart (the next daemon adopts them) as they outlive `daemon stop`.
//!
//! A daemon the CLI started on demand holds the instance lock the unit's daemon needs:
//! `install` stops it (gracefully; its VMs keep running) before `enable --now`, and with
//! `--no-start` says that it keeps running until `banger daemon stop`.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use banger_api::layout::Layout;
use banger_api::methods;
use banger_api::system::{Empty, VersionInfo};
use banger_client::{Client, ClientError, autostart};

use crate::Context;

pub const UNIT_NAME: &str = "bangerd.service";

/// How long the unit's daemon gets to answer after `enable --now` (as an on-demand start).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Which systemd manager runs the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The user's own manager (`systemctl --user`): bangerd as the user.
    User,
    /// PID 1 (`systemctl`): bangerd as root, for the whole machine.
    System,
}

impl Scope {
    pub fn new(system: bool) -> Scope {
        if system { Scope::System } else { Scope::User }
    }

    /// Where the unit file goes.
    pub fn unit_path(self) -> PathBuf {
        match self {
            Scope::User => xdg_config_home().join("systemd/user").join(UNIT_NAME),
            Scope::System => Path::new("/etc/systemd/system").join(UNIT_NAME),
        }
    }

    /// The directories the unit's daemon serves: the CLI's own for the user unit.
    pub fn layout(self, cli: &Layout) -> Layout {
        match self {
            Scope::User => cli.clone(),
            Scope::System => Layout {
                state_dir: "/var/lib/banger".into(),
                cache_dir: "/var/cache/banger".into(),
                runtime_dir: "/run/banger".into(),
            },
        }
    }

    fn target(self) -> &'static str {
        match self {
            Scope::User => "default.target",
            Scope::System => "multi-user.target",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::System => "system",
        }
    }

    /// `systemctl [--user] ARGS` as the user would type it.
    fn systemctl_line(self, args: &[&str]) -> String {
        let user = if self == Scope::User { " --user" } else { "" };
        format!("systemctl{user} {}", args.join(" "))
    }
}

/// `$XDG_CONFIG_HOME` (relative or empty values ignored, as the XDG spec says), else
/// `~/.config`: where the user manager looks for `systemd/user/`.
fn xdg_config_home() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| crate::config::home_dir().join(".config"))
}

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("{0} is a relative path: a unit needs absolute ones")]
    Relative(PathBuf),
    #[error(
        "bangerd not found ({0}): install it beside banger or on PATH, or set BANGER_DAEMON to its path"
    )]
    Missing(String),
    #[error("{0:?} cannot be written in a systemd unit (not UTF-8, or a control character)")]
    Unquotable(PathBuf),
}

/// What a unit says.
#[derive(Debug)]
pub struct Unit<'a> {
    pub scope: Scope,
    /// Absolute: see [`resolve_bangerd`].
    pub bangerd: &'a Path,
    /// The directories passed to bangerd.
    pub layout: &'a Layout,
    /// The config.toml the daemon reads (the user unit: the CLI's, so `[daemon]` settings
    /// apply as they do to an on-demand daemon); `None` leaves the daemon's default.
    pub config: Option<&'a Path>,
}

/// The daemon binary the CLI would start (`$BANGER_DAEMON`, beside `banger`, on PATH), as
/// a canonical path: a unit runs without the CLI's PATH or working directory.
pub fn resolve_bangerd(binary: &Path) -> Result<PathBuf, UnitError> {
    let bare = binary.components().count() == 1 && !binary.is_absolute();
    let found = if bare {
        super::doctor::find_tool(&binary.to_string_lossy())
            .ok_or_else(|| UnitError::Missing(format!("{} is not on PATH", binary.display())))?
    } else {
        binary.to_path_buf()
    };
    match std::fs::canonicalize(&found) {
        Ok(p) if p.is_file() => Ok(p),
        Ok(p) => Err(UnitError::Missing(format!("{} is not a file", p.display()))),
        Err(e) => Err(UnitError::Missing(format!("{}: {e}", found.display()))),
    }
}

/// The unit file's text.
pub fn render(unit: &Unit) -> Result<String, UnitError> {
    let mut exec = vec![quote_path(unit.bangerd, true)?];
    for (flag, dir) in [
        ("--state-dir", &unit.layout.state_dir),
        ("--cache-dir", &unit.layout.cache_dir),
        ("--runtime-dir", &unit.layout.runtime_dir),
    ] {
        exec.push(flag.to_string());
        exec.push(quote_path(dir, true)?);
    }
    let mut s = String::new();
    let manage = match unit.scope {
        Scope::User => "systemctl --user",
        Scope::System => "systemctl",
    };
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "# Written by `banger daemon install`, rewritten by each install and removed by\n\
# `banger daemon uninstall`. Local changes belong in a drop-in: {manage} edit bangerd\n\
[Unit]\n\
Description=banger daemon (microVM sandboxes)\n\
\n\
[Service]\n\
Type=exec\n\
ExecStart={}\n\
# `banger daemon status` and `banger doctor` then say the daemon is this unit's.\n\
Environment=BANGER_STARTED_BY=systemd\n",
        exec.join(" ")
    );
    if let Some(config) = unit.config {
        let assignment = format!("BANGER_CONFIG={}", path_text(config)?);
        let _ = writeln!(s, "Environment={}", quote(&assignment, false));
    }
    if unit.scope == Scope::System {
        // bangerd runs as root (network namespaces and taps); systemd makes its
        // directories 0700, as bangerd would.
        s.push_str(
            "StateDirectory=banger\n\
StateDirectoryMode=0700\n\
CacheDirectory=banger\n\
CacheDirectoryMode=0700\n\
RuntimeDirectory=banger\n\
RuntimeDirectoryMode=0700\n\
# Keep /run/banger across stops and restarts: it holds the cached KVM probe (without it\n\
# every start boots a probe guest). VMs' own sockets live under the state dir.\n\
RuntimeDirectoryPreserve=yes\n",
        );
    }
    let _ = write!(
        s,
        "Restart=on-failure\n\
RestartSec=1\n\
# VMs are children of the daemon's children (VMM, network and vsock helpers). They must\n\
# survive a restart or stop of the daemon, which adopts them again when it starts: stop\n\
# only bangerd itself, never the whole cgroup. `banger vm stop` stops VMs.\n\
KillMode=process\n\
\n\
[Install]\n\
WantedBy={}\n",
        unit.scope.target()
    );
    Ok(s)
}

fn path_text(path: &Path) -> Result<&str, UnitError> {
    if !path.is_absolute() {
        return Err(UnitError::Relative(path.to_path_buf()));
    }
    match path.to_str() {
        Some(t) if !t.chars().any(char::is_control) => Ok(t),
        _ => Err(UnitError::Unquotable(path.to_path_buf())),
    }
}

fn quote_path(path: &Path, exec: bool) -> Result<String, UnitError> {
    Ok(quote(path_text(path)?, exec))
}

/// One word as systemd reads it back: `%` (specifiers) doubled, and in a command line `$`
/// (variable expansion) too; double-quoted, with `\` and `"` escaped, when it holds blanks,
/// quotes, backslashes or `;`. The caller refuses control characters.
fn quote(text: &str, exec: bool) -> String {
    let mut out = text.replace('%', "%%");
    if exec {
        out = out.replace('$', "$$");
    }
    if out.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';')) {
        out = format!("\"{}\"", out.replace('\\', "\\\\").replace('"', "\\\""));
    }
    out
}

/// `banger daemon install`.
pub async fn install(
    ctx: &Context,
    scope: Scope,
    print: bool,
    no_start: bool,
) -> anyhow::Result<u8> {
    let bangerd = resolve_bangerd(&autostart::daemon_binary())?;
    let layout = scope.layout(&ctx.layout);
    let config = match scope {
        Scope::User => Some(std::path::absolute(crate::config::config_path())?),
        Scope::System => None,
    };
    let text = render(&Unit {
        scope,
        bangerd: &bangerd,
        layout: &layout,
        config: config.as_deref(),
    })?;
    if print {
        print!("{text}");
        return Ok(0);
    }
    require_root(scope, "install")?;
    let path = scope.unit_path();
    write_unit(&path, &text)?;
    println!("wrote {}", path.display());

    let client = Client::new(&layout.socket_path());
    let running = running_daemon(&client).await?;
    let by_systemd = |v: &VersionInfo| v.started_by.starts_with("systemd");
    let enable = [
        scope.systemctl_line(&["daemon-reload"]),
        scope.systemctl_line(&["enable", "--now", UNIT_NAME]),
    ];
    if no_start {
        println!(
            "not started (--no-start); to start it now and at every {}:\n  {}\n  {}",
            if scope == Scope::User {
                "login"
            } else {
                "boot"
            },
            enable[0],
            enable[1]
        );
        if let Some(v) = running.as_ref().filter(|v| !by_systemd(v)) {
            println!(
                "bangerd pid {}, started by {}, keeps running until `banger daemon stop`: stop it \
                 first, or the unit's daemon cannot take the instance lock",
                v.pid,
                started_by_text(v)
            );
        }
        linger_hint(scope);
        return Ok(0);
    }
    let failed = |what: String| {
        eprintln!(
            "banger: {what}\n{}\nThe unit file stays at {}. Once systemd can run it:\n  {}\n  {}",
            why_systemctl_fails(scope),
            path.display(),
            enable[0],
            enable[1]
        );
        linger_hint(scope);
        Ok(1)
    };
    // First: where systemd cannot run the unit, the running daemon is left alone.
    if let Err(what) = systemctl(scope, &["daemon-reload"]) {
        return failed(what);
    }
    match &running {
        Some(v) if by_systemd(v) => println!(
            "bangerd pid {} already runs under systemd; `{}` applies this unit to it",
            v.pid,
            scope.systemctl_line(&["restart", UNIT_NAME])
        ),
        Some(v) => {
            println!(
                "stopping bangerd pid {}, started by {}, so the unit's daemon can take the \
                 instance lock; its VMs keep running and are adopted",
                v.pid,
                started_by_text(v)
            );
            stop_daemon(&client, &layout).await?;
        }
        None => {}
    }
    if let Err(what) = systemctl(scope, &["enable", "--now", UNIT_NAME]) {
        return failed(what);
    }
    match wait_for_daemon(&client).await {
        Some(v) => println!(
            "bangerd {} running (pid {}), started by {}\n  socket: {}",
            v.version,
            v.pid,
            started_by_text(&v),
            v.socket_path
        ),
        None => {
            eprintln!(
                "banger: the unit started but bangerd did not answer on {} within {START_TIMEOUT:?}; \
                 see `{}` and {}",
                client.location(),
                scope.systemctl_line(&["status", UNIT_NAME]),
                layout.log_path().display()
            );
            return Ok(1);
        }
    }
    linger_hint(scope);
    Ok(0)
}

/// `banger daemon uninstall`.
pub async fn uninstall(scope: Scope) -> anyhow::Result<u8> {
    require_root(scope, "uninstall")?;
    let path = scope.unit_path();
    if std::fs::symlink_metadata(&path).is_err() {
        println!("nothing to remove: {} does not exist", path.display());
        return Ok(0);
    }
    // Stops the unit's daemon (its VMs keep running: KillMode=process) and removes the
    // `.wants` link.
    let disabled = systemctl(scope, &["disable", "--now", UNIT_NAME]);
    if let Err(what) = &disabled {
        println!(
            "note: {what}\n{}\nIf a bangerd of this unit still runs, `banger daemon stop` stops it.",
            why_systemctl_fails(scope)
        );
        remove_wants_link(scope, &path);
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    println!("removed {}", path.display());
    if disabled.is_ok()
        && let Err(what) = systemctl(scope, &["daemon-reload"])
    {
        println!("note: {what}");
    }
    Ok(0)
}

/// The unit files installed on this machine, for `banger doctor`.
pub fn installed_units() -> Vec<(Scope, PathBuf)> {
    [Scope::User, Scope::System]
        .into_iter()
        .map(|s| (s, s.unit_path()))
        .filter(|(_, p)| p.is_file())
        .collect()
}

/// `started_by`, or what an older daemon without the field means.
pub fn started_by_text(v: &VersionInfo) -> &str {
    if v.started_by.is_empty() {
        "unknown (an older bangerd)"
    } else {
        &v.started_by
    }
}

/// `verb` is `install` or `uninstall`, for the command to suggest.
fn require_root(scope: Scope, verb: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if scope == Scope::System && unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "--system needs root (the system unit runs bangerd as root); try: sudo banger daemon {verb} --system"
        );
    }
    Ok(())
}

/// Writes the unit 0644 (systemd reads it as any user), its directories made, through a
/// temporary file renamed over the old one.
fn write_unit(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{UNIT_NAME}.banger-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, text)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("writing {}", path.display()))
    })
}

/// Runs `systemctl [--user] ARGS` with its output passed through; the error says which
/// command failed and how.
fn systemctl(scope: Scope, args: &[&str]) -> Result<(), String> {
    let line = scope.systemctl_line(args);
    let mut cmd = Command::new("systemctl");
    if scope == Scope::User {
        cmd.arg("--user");
    }
    match cmd.args(args).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{line}` failed ({s})")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "`{line}`: systemctl not found (is systemd installed?)"
        )),
        Err(e) => Err(format!("`{line}`: {e}")),
    }
}

/// The usual reasons `systemctl` fails here, for the message after its own.
fn why_systemctl_fails(scope: Scope) -> String {
    if !Path::new("/run/systemd/system").exists() {
        let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        return format!(
            "systemd is not running as PID 1 here (PID 1 is {}).",
            init.trim()
        );
    }
    match scope {
        Scope::User => "The user manager runs only in a login session or with lingering \
                        (`loginctl enable-linger $USER`); over su or sudo there is none."
            .into(),
        Scope::System => "See the message above.".into(),
    }
}

/// Without lingering, the user manager starts at login and stops at logout.
fn linger_hint(scope: Scope) {
    if scope != Scope::User {
        return;
    }
    let user = user_name();
    if Path::new("/var/lib/systemd/linger").join(&user).exists() {
        println!("lingering is on for {user}: the daemon runs from boot, logged in or not");
    } else {
        println!(
            "hint: without `loginctl enable-linger {user}` your user manager, and this daemon, \
             stop when you log out and do not start at boot"
        );
    }
}

fn user_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "$USER".into())
}

/// The `WantedBy` link `systemctl enable` made, when systemctl cannot remove it.
fn remove_wants_link(scope: Scope, unit: &Path) {
    let Some(dir) = unit.parent() else { return };
    let link = dir
        .join(format!("{}.wants", scope.target()))
        .join(UNIT_NAME);
    if std::fs::read_link(&link).is_ok_and(|target| target == unit) {
        let _ = std::fs::remove_file(&link);
    }
}

/// The daemon answering on `client`'s socket, if any.
async fn running_daemon(client: &Client) -> anyhow::Result<Option<VersionInfo>> {
    match client.call::<methods::system::Version>(&Empty {}).await {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `daemon.shutdown`, then waits until the instance lock is free for the unit's daemon.
async fn stop_daemon(client: &Client, layout: &Layout) -> anyhow::Result<()> {
    match client.call::<methods::system::Shutdown>(&Empty {}).await {
        Ok(_) | Err(ClientError::NotRunning { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while super::daemon::lock_is_held(&layout.state_lock_path()) {
        if Instant::now() > deadline {
            anyhow::bail!(
                "bangerd did not stop within 30s; see {}",
                layout.log_path().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Polls until the unit's daemon answers, or [`START_TIMEOUT`] passes.
async fn wait_for_daemon(client: &Client) -> Option<VersionInfo> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(v)) = running_daemon(client).await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(base: &str) -> Layout {
        Layout {
            state_dir: format!("{base}/state/banger").into(),
            cache_dir: format!("{base}/cache/banger").into(),
            runtime_dir: format!("{base}/run/banger").into(),
        }
    }

    fn exec_start(text: &str) -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("an ExecStart line")
    }

    #[test]
    fn the_user_unit_serves_the_cli_directories() {
        let l = layout("/home/u");
        let text = render(&Unit {
            scope: Scope::User,
            bangerd: Path::new("/usr/local/bin/bangerd"),
            layout: &l,
            config: Some(Path::new("/home/u/.config/banger/config.toml")),
        })
        .expect("render");
        assert_eq!(
            exec_start(&text),
            "/usr/local/bin/bangerd --state-dir /home/u/state/banger --cache-dir \
             /home/u/cache/banger --runtime-dir /home/u/run/banger"
        );
        for line in [
            "[Service]",
            "Type=exec",
            "Environment=BANGER_STARTED_BY=systemd",
            "Environment=BANGER_CONFIG=/home/u/.config/banger/config.toml",
            "Restart=on-failure",
            "RestartSec=1",
            "KillMode=process",
            "[Install]",
            "WantedBy=default.target",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("StateDirectory"), "{text}");
        assert!(text.contains("systemctl --user edit bangerd"), "{text}");
    }

    #[test]
    fn the_system_unit_uses_systemds_directories() {
        let l = Scope::System.layout(&layout("/root"));
        let text = render(&Unit {
            scope: Scope::System,
            bangerd: Path::new("/usr/bin/bangerd"),
            layout: &l,
            config: None,
        })
        .expect("render");
        assert_eq!(
            exec_start(&text),
            "/usr/bin/bangerd --state-dir /var/lib/banger --cache-dir /var/cache/banger \
             --runtime-dir /run/banger"
        );
        for line in [
            "StateDirectory=banger",
            "CacheDirectory=banger",
            "RuntimeDirectory=banger",
            "RuntimeDirectoryPreserve=yes",
            "KillMode=process",
            "Environment=BANGER_STARTED_BY=systemd",
            "WantedBy=multi-user.target",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("BANGER_CONFIG"), "{text}");
    }

    #[test]
    fn paths_with_blanks_and_specials_are_quoted_for_systemd() {
        let l = layout("/home/a b");
        let text = render(&Unit {
            scope: Scope::User,
            bangerd: Path::new("/opt/my tools/bangerd"),
            layout: &Layout {
                state_dir: "/data/100%/$HOME/x\"y\\z".into(),
                ..l
            },
            config: Some(Path::new("/home/a b/c%d.toml")),
        })
        .expect("render");
        assert_eq!(
            exec_start(&text),
            "\"/opt/my tools/bangerd\" --state-dir \"/data/100%%/$$HOME/x\\\"y\\\\z\" --cache-dir \
             \"/home/a b/cache/banger\" --runtime-dir \"/home/a b/run/banger\""
        );
        // No variable expansion in Environment=: `$` stays single.
        assert!(
            text.contains("Environment=\"BANGER_CONFIG=/home/a b/c%%d.toml\"\n"),
            "{text}"
        );
        assert_eq!(quote("/plain/path", true), "/plain/path");
        assert_eq!(quote("/a;b", true), "\"/a;b\"");
        assert_eq!(quote("/a$b", false), "/a$b");
    }

    #[test]
    fn relative_and_unwritable_paths_are_refused() {
        let l = layout("/home/u");
        let unit = |bangerd: &'static str| {
            render(&Unit {
                scope: Scope::User,
                bangerd: Path::new(bangerd),
                layout: &l,
                config: None,
            })
        };
        assert!(matches!(unit("bangerd"), Err(UnitError::Relative(_))));
        assert!(matches!(unit("./bin/bangerd"), Err(UnitError::Relative(_))));
        assert!(matches!(
            unit("/opt/new\nline/bangerd"),
            Err(UnitError::Unquotable(_))
        ));
        let e = unit("bin/bangerd").expect_err("relative");
        assert!(e.to_string().contains("bin/bangerd"), "{e}");
    }

    #[test]
    fn a_missing_binary_is_refused_and_a_present_one_made_canonical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("bangerd");
        let e = resolve_bangerd(&missing).expect_err("missing");
        assert!(matches!(e, UnitError::Missing(_)), "{e}");
        assert!(e.to_string().contains("BANGER_DAEMON"), "{e}");
        assert!(matches!(
            resolve_bangerd(Path::new("surely-no-such-bangerd-on-path")),
            Err(UnitError::Missing(_))
        ));
        std::fs::write(&missing, b"#!/bin/sh\n").expect("write");
        let via_dotdot = dir.path().join("sub/../bangerd");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let resolved = resolve_bangerd(&via_dotdot).expect("present");
        assert_eq!(
            resolved,
            std::fs::canonicalize(&missing).expect("canonical")
        );
        assert!(resolved.is_absolute());
        assert!(matches!(
            resolve_bangerd(dir.path()),
            Err(UnitError::Missing(_))
        ));
    }

    #[test]
    fn units_live_where_the_managers_look() {
        assert_eq!(
            Scope::System.unit_path(),
            Path::new("/etc/systemd/system/bangerd.service")
        );
        assert!(
            Scope::User
                .unit_path()
                .ends_with("systemd/user/bangerd.service")
        );
    }
}
