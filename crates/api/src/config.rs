//! `config.toml`: where it is, its `[daemon]` table and the default image keys, read by
//! both `bangerd` (which applies them, however it was started: `[daemon]` at start, the
//! image defaults at each `vm.defaults`) and the CLI (`banger config show`, `doctor`, and
//! an early check before it auto-starts a daemon). The rest of the file is the CLI's
//! (`banger_cli::config`).
//!
//! The file: `$BANGER_CONFIG`, else `$XDG_CONFIG_HOME/banger/config.toml`, else
//! `~/.config/banger/config.toml`. A missing file means every default applies.

use std::path::{Path, PathBuf};

/// The environment variable naming another configuration file.
pub const CONFIG_ENV: &str = "BANGER_CONFIG";

/// The configuration file's path: `$BANGER_CONFIG`, else `$XDG_CONFIG_HOME/banger/config.toml`,
/// else `~/.config/banger/config.toml`.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    config_dir().join("config.toml")
}

/// `$XDG_CONFIG_HOME/banger` (relative or empty values ignored, as the XDG spec says),
/// else `$HOME/.config/banger`.
pub fn config_dir() -> PathBuf {
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    xdg.unwrap_or_else(|| home_dir().join(".config"))
        .join("banger")
}

/// `$HOME` (tests set it), else the password database's home, else `/`.
pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h);
    }
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy out at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_dir.is_null() {
            let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
            use std::os::unix::ffi::OsStrExt;
            return PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes()));
        }
    }
    PathBuf::from("/")
}

/// `[daemon]`: how `bangerd` runs VMs. `None`: its own default. Its command-line flags
/// (and their environment variables) win over these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The Firecracker binary (absolute).
    pub firecracker: Option<PathBuf>,
    /// `auto`, `kvm` or `tcg`.
    pub accel: Option<String>,
    /// Firecracker's jailer (absolute).
    pub jailer: Option<PathBuf>,
}

/// A bad `[daemon]` value: the key (`daemon.accel`) and what is wrong, or a file that is
/// not TOML (`key` = `None`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", key.as_deref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
pub struct KeyError {
    pub key: Option<String>,
    pub message: String,
}

/// The parsed file at `path`; `None` when there is none.
pub fn read_table(path: &Path) -> Result<Option<toml::Table>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(KeyError {
                key: None,
                message: format!("cannot be read: {e}"),
            });
        }
    };
    toml::from_str(&text).map(Some).map_err(|e| KeyError {
        key: None,
        message: e.to_string().trim_end().to_string(),
    })
}

impl DaemonConfig {
    /// The `[daemon]` table of the file at `path` (absent file: all defaults). Other keys
    /// are the CLI's and are not looked at here.
    pub fn load(path: &Path) -> Result<DaemonConfig, KeyError> {
        match read_table(path)? {
            Some(mut table) => Self::from_table(table.remove("daemon")),
            None => Ok(Self::default()),
        }
    }

    /// Checks the `[daemon]` table's value (as parsed by either reader).
    pub fn from_table(value: Option<toml::Value>) -> Result<DaemonConfig, KeyError> {
        let err = |key: &str, message: String| KeyError {
            key: Some(format!("daemon.{key}")),
            message,
        };
        let mut table = match value {
            None => return Ok(Self::default()),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                return Err(KeyError {
                    key: Some("daemon".into()),
                    message: format!("expected a table, found {}", other.type_str()),
                });
            }
        };
        let mut string = |key: &str| -> Result<Option<String>, KeyError> {
            match table.remove(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
                Some(toml::Value::String(_)) => Err(err(key, "must not be empty".into())),
                Some(other) => Err(err(
                    key,
                    format!("expected a string, found {}", other.type_str()),
                )),
            }
        };
        let absolute = |key: &str, v: Option<String>| match v.map(PathBuf::from) {
            Some(p) if !p.is_absolute() => Err(err(key, format!("{p:?} is not an absolute path"))),
            other => Ok(other),
        };
        let firecracker = absolute("firecracker", string("firecracker")?)?;
        let jailer = absolute("jailer", string("jailer")?)?;
        let accel = string("accel")?;
        if let Some(a) = &accel
            && !["auto", "kvm", "tcg"].contains(&a.as_str())
        {
            return Err(err("accel", format!("{a:?} is not one of auto, kvm, tcg")));
        }
        if let Some(unknown) = table.keys().next() {
            return Err(KeyError {
                key: Some(format!("daemon.{unknown}")),
                message: "unknown key (known: firecracker, accel, jailer)".into(),
            });
        }
        Ok(DaemonConfig {
            firecracker,
            accel,
            jailer,
        })
    }
}

/// `default_image` when the file does not set it.
pub const DEFAULT_IMAGE: &str = "debian:bookworm";
/// `default_kernel` when the file does not set it.
pub const DEFAULT_KERNEL: &str = "default";

/// The file's top-level `default_image`, `default_image_name` and `default_kernel`: what
/// `vm run` boots without `--image`. `None`: not set (the daemon then uses
/// [`DEFAULT_IMAGE`], the name `image pull` derives from it, and [`DEFAULT_KERNEL`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub image: Option<String>,
    pub image_name: Option<String>,
    pub kernel: Option<String>,
}

impl ImageDefaults {
    /// The keys of the file at `path` (absent file: none set).
    pub fn load(path: &Path) -> Result<ImageDefaults, KeyError> {
        match read_table(path)? {
            Some(table) => Self::from_table(&table),
            None => Ok(Self::default()),
        }
    }

    /// Checks the three keys of a parsed file (other keys are not looked at).
    pub fn from_table(table: &toml::Table) -> Result<ImageDefaults, KeyError> {
        let string = |key: &str| -> Result<Option<String>, KeyError> {
            let err = |message: String| KeyError {
                key: Some(key.to_string()),
                message,
            };
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(toml::Value::String(_)) => Err(err("must not be empty".into())),
                Some(other) => Err(err(format!(
                    "expected a string, found {}",
                    other.type_str()
                ))),
            }
        };
        let name = |key: &str| -> Result<Option<String>, KeyError> {
            let value = string(key)?;
            if let Some(v) = &value {
                crate::names::validate_name(v).map_err(|message| KeyError {
                    key: Some(key.to_string()),
                    message,
                })?;
            }
            Ok(value)
        };
        Ok(ImageDefaults {
            image: string("default_image")?,
            image_name: name("default_image_name")?,
            kernel: name("default_kernel")?,
        })
    }
}

/// `[vm] warm` of the file at `path`: whether `vm.create` from an image starts warm when
/// the request does not say (absent file or key: true).
pub fn warm_starts(path: &Path) -> Result<bool, KeyError> {
    match read_table(path)? {
        Some(table) => warm_from_table(&table),
        None => Ok(true),
    }
}

/// `[vm] warm` of a parsed file.
pub fn warm_from_table(table: &toml::Table) -> Result<bool, KeyError> {
    match table.get("vm").and_then(|vm| vm.get("warm")) {
        None => Ok(true),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(other) => Err(KeyError {
            key: Some("vm.warm".into()),
            message: format!("expected true or false, found {}", other.type_str()),
        }),
    }
}

/// `[vm] stop_idle_after` of the file at `path`, in seconds: a running VM with no exec,
/// ssh, cp or proxy session (and, when it publishes ports, no traffic) for that long is
/// stopped. `None`: never (absent file or key, or `"0"`).
pub fn idle_stop_after(path: &Path) -> Result<Option<u64>, KeyError> {
    match read_table(path)? {
        Some(table) => idle_stop_from_table(&table),
        None => Ok(None),
    }
}

/// `[vm] stop_idle_after` of a parsed file (see [`idle_stop_after`]).
pub fn idle_stop_from_table(table: &toml::Table) -> Result<Option<u64>, KeyError> {
    let err = |message: String| KeyError {
        key: Some("vm.stop_idle_after".into()),
        message,
    };
    match table.get("vm").and_then(|vm| vm.get("stop_idle_after")) {
        None => Ok(None),
        Some(toml::Value::String(s)) => parse_duration(s)
            .map(|secs| (secs > 0).then_some(secs))
            .map_err(err),
        Some(other) => Err(err(format!(
            "expected a duration such as \"2h\", \"30m\" or \"90s\", found {}",
            other.type_str()
        ))),
    }
}

/// `90s`, `30m`, `2h`, `1d`, or plain seconds, in seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as \"2h\", \"30m\" or \"90s\""))?;
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use s, m, h or d)"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig, KeyError> {
        let mut table: toml::Table = toml::from_str(text).expect("toml");
        DaemonConfig::from_table(table.remove("daemon"))
    }

    #[test]
    fn idle_stop_reads_durations_and_refuses_nonsense() {
        let t = |text: &str| idle_stop_from_table(&toml::from_str(text).expect("toml"));
        assert_eq!(t("").expect("empty"), None);
        assert_eq!(t("[vm]\nstop_idle_after = \"2h\"").expect("2h"), Some(7200));
        assert_eq!(t("[vm]\nstop_idle_after = \"90\"").expect("90"), Some(90));
        assert_eq!(t("[vm]\nstop_idle_after = \"0\"").expect("0"), None);
        for bad in [
            "[vm]\nstop_idle_after = 5",
            "[vm]\nstop_idle_after = \"2 weeks\"",
            "[vm]\nstop_idle_after = \"h\"",
        ] {
            let e = t(bad).expect_err(bad);
            assert_eq!(e.key.as_deref(), Some("vm.stop_idle_after"), "{bad}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(
            idle_stop_after(Path::new("/nonexistent/banger/config.toml"))
                .expect("no file")
                .is_none()
        );
    }

    #[test]
    fn warm_starts_are_on_unless_the_vm_table_says_false() {
        let t = |text: &str| warm_from_table(&toml::from_str(text).expect("toml"));
        assert!(t("").expect("empty"));
        assert!(t("[vm]\ncpus = 2").expect("unset"));
        assert!(!t("[vm]\nwarm = false").expect("off"));
        let e = t("[vm]\nwarm = \"no\"").expect_err("a string");
        assert_eq!(e.key.as_deref(), Some("vm.warm"));
        assert!(warm_starts(Path::new("/nonexistent/banger/config.toml")).expect("no file"));
    }

    #[test]
    fn the_daemon_table_is_checked_key_by_key() {
        assert_eq!(parse("x = 1").expect("no table"), DaemonConfig::default());
        let c = parse("[daemon]\naccel = \"tcg\"\njailer = \"/usr/bin/jailer\"\n").expect("ok");
        assert_eq!(c.accel.as_deref(), Some("tcg"));
        assert_eq!(c.jailer, Some(PathBuf::from("/usr/bin/jailer")));
        assert_eq!(c.firecracker, None);
        let e = parse("[daemon]\naccel = \"fast\"").expect_err("bad accel");
        assert_eq!(e.key.as_deref(), Some("daemon.accel"));
        let e = parse("[daemon]\nfirecracker = \"fc\"").expect_err("relative");
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        let e = parse("[daemon]\naccell = \"tcg\"").expect_err("typo");
        assert_eq!(e.key.as_deref(), Some("daemon.accell"));
        assert!(parse("daemon = 3").is_err());
    }

    #[test]
    fn a_missing_file_is_all_defaults() {
        let dir = std::env::temp_dir().join(format!("banger-no-config-{}", std::process::id()));
        assert_eq!(
            DaemonConfig::load(&dir.join("config.toml")).expect("defaults"),
            DaemonConfig::default()
        );
    }

    #[test]
    fn the_image_defaults_are_checked_and_may_be_absent() {
        let table = |text: &str| -> toml::Table { toml::from_str(text).expect("toml") };
        assert_eq!(
            ImageDefaults::from_table(&table("[daemon]\naccel = \"tcg\"")).expect("none"),
            ImageDefaults::default()
        );
        let d = ImageDefaults::from_table(&table(
            "default_image = \"ghcr.io/o/dev:v2\"\ndefault_kernel = \"cloud\"",
        ))
        .expect("set");
        assert_eq!(d.image.as_deref(), Some("ghcr.io/o/dev:v2"));
        assert_eq!((d.image_name, d.kernel.as_deref()), (None, Some("cloud")));
        let e = ImageDefaults::from_table(&table("default_image_name = \"Bad Name\""))
            .expect_err("not a name");
        assert_eq!(e.key.as_deref(), Some("default_image_name"));
        let e = ImageDefaults::from_table(&table("default_image = 3")).expect_err("not a string");
        assert!(e.to_string().contains("expected a string"), "{e}");
    }
}
