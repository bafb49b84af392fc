//! The CLI's configuration file: `$XDG_CONFIG_HOME/banger/config.toml` (default
//! `~/.config/banger/config.toml`; the `BANGER_CONFIG` environment variable names another
//! file, e.g. for tests). A missing file means every default applies.
//!
//! Every key, with its default:
//!
//! ```toml
//! # The image `banger vm run` boots when no --image is given: an image reference as
//! # `banger image pull` takes it. Pulled on first use.
//! default_image = "debian:bookworm"
//! # What that image is called locally (looked up before pulling, and the name it is pulled
//! # as). Default: derived from default_image as `image pull` does: the last path segment
//! # plus the tag, '.' and ':' turned into '-' (debian:bookworm → debian-bookworm).
//! default_image_name = "debian-bookworm"
//! # A kernel in banger's kernel store (`banger kernel list`), used as --kernel-ref when
//! # the default image is pulled.
//! default_kernel = "default"
//! # The daemon to drive, on another host (as --host and $BANGER_HOST, which win):
//! # ssh://[user@]host[:port]. Unset: this machine's daemon.
//! host = "ssh://me@build-box"
//!
//! # Defaults for `banger vm run` and `banger vm create`; flags win. Unset keys are left to
//! # the daemon (its defaults are named in `banger config show`).
//! [vm]
//! cpus = 2                # virtual CPUs, >= 1
//! memory = "1GiB"         # guest memory: a size string, or a number of MiB
//! disk = "8GiB"           # copy-on-write root disk (apparent size; sparse)
//! work_disk = "8GiB"      # the work disk mounted at /root (apparent size; sparse)
//! net = "user"            # "user" (rootless NAT + DNS, published ports) or "none"
//! init = "auto"           # "auto", "agent" or "image": who runs as PID 1
//! vmm = "auto"            # "auto", "qemu" or "firecracker" (see `banger vm create --help`)
//! console_log_max = "8MiB" # serial console kept on the host per VM, the newest (64KiB-256MiB)
//! warm = true             # start from the image's ready-snapshot when there is one (the daemon reads it)
//! stop_idle_after = "2h"  # stop a VM after this long without exec, ssh, cp or proxy (the daemon reads it)
//!
//! # How bangerd runs VMs: read by bangerd itself when it starts, however it is started
//! # (its flags win; restart it with `banger daemon stop` for a change to apply).
//! [daemon]
//! firecracker = "/usr/local/bin/firecracker"  # default: $BANGER_FIRECRACKER, then PATH
//! accel = "auto"          # "auto" (probe KVM), "kvm" (trust /dev/kvm, no probe), "tcg"
//! jailer = "/usr/local/bin/jailer"  # jail Firecracker VMs (bangerd as root only); default: none
//!
//! # `banger serve`, the local E2B API (its flags win).
//! [serve]
//! listen = "127.0.0.1:3000"  # the address to serve on; not loopback needs api_keys
//! api_keys = ["e2b_…"]       # the X-API-KEYs accepted; none: any key, on loopback only
//! ```
//!
//! An unknown key or a bad value is an error naming the key and the file: a typo never
//! silently falls back to a default. Precedence: command-line flags, then the file, then
//! the defaults; `banger config show` prints each effective value with where it came from.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::commands::vm::create::{InitArg, NetArg, VmmArg};

/// The environment variable naming another configuration file.
pub use banger_api::config::CONFIG_ENV;
/// `default_image` and `default_kernel` when the file does not set them (the daemon's
/// `vm.defaults` reads the same keys through [`banger_api::config::ImageDefaults`]).
pub use banger_api::config::{DEFAULT_IMAGE, DEFAULT_KERNEL};

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Flag => f.write_str("flag"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    fn new(value: T, source: Source) -> Self {
        Setting { value, source }
    }
}

/// Defaults for new VMs (`[vm]`). `None`: the daemon decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmDefaults {
    pub cpus: Option<Setting<u32>>,
    pub memory_mib: Option<Setting<u64>>,
    pub disk_bytes: Option<Setting<u64>>,
    pub work_disk_bytes: Option<Setting<u64>>,
    pub net: Option<Setting<NetArg>>,
    pub init: Option<Setting<InitArg>>,
    pub vmm: Option<Setting<VmmArg>>,
    pub console_log_max: Option<Setting<u64>>,
    /// `[vm] warm`, which the daemon applies itself (shown by `config show`).
    pub warm: Option<Setting<bool>>,
    /// `[vm] stop_idle_after` in seconds, which the daemon applies itself.
    pub stop_idle_after_secs: Option<Setting<u64>>,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file that was (or would be) read.
    pub path: PathBuf,
    /// Whether that file exists.
    pub file_found: bool,
    pub default_image: Setting<String>,
    pub default_image_name: Setting<String>,
    pub default_kernel: Setting<String>,
    pub vm: VmDefaults,
    pub net: NetLists,
    pub daemon: DaemonSettings,
    /// `host`: another host's daemon (`ssh://…`), checked when used.
    pub host: Option<Setting<String>>,
    pub serve: ServeSettings,
}

/// `[serve]`: how `banger serve` listens and whom it lets in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeSettings {
    pub listen: Option<Setting<std::net::SocketAddr>>,
    pub api_keys: Vec<String>,
}

/// `[net]`: destinations every new VM allows or denies (flags add to them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetLists {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// How `bangerd` runs (`[daemon]`, which it reads itself); `None`: its own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonSettings {
    pub firecracker: Option<Setting<PathBuf>>,
    pub accel: Option<Setting<String>>,
    pub jailer: Option<Setting<PathBuf>>,
}

/// The file as written: every key optional, values checked after parsing so that each
/// error names its key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    // Known here (`deny_unknown_fields`); checked by `banger_api::config::ImageDefaults`,
    // the daemon's reader too.
    #[serde(rename = "default_image")]
    _default_image: Option<toml::Value>,
    #[serde(rename = "default_image_name")]
    _default_image_name: Option<toml::Value>,
    #[serde(rename = "default_kernel")]
    _default_kernel: Option<toml::Value>,
    #[serde(default)]
    vm: RawVm,
    #[serde(default)]
    net: RawNet,
    /// Checked by `banger_api::config`, bangerd's reader too.
    daemon: Option<toml::Value>,
    host: Option<toml::Value>,
    #[serde(default)]
    serve: RawServe,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    listen: Option<toml::Value>,
    #[serde(default)]
    api_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    cpus: Option<toml::Value>,
    memory: Option<toml::Value>,
    disk: Option<toml::Value>,
    work_disk: Option<toml::Value>,
    net: Option<toml::Value>,
    init: Option<toml::Value>,
    vmm: Option<toml::Value>,
    console_log_max: Option<toml::Value>,
    /// Read by the daemon (`banger_api::config::warm_starts`); checked here too.
    warm: Option<toml::Value>,
    /// Read by the daemon (`banger_api::config::idle_stop_after`); checked here too.
    stop_idle_after: Option<toml::Value>,
}

pub use banger_api::config::{config_dir, config_path, home_dir};

impl Config {
    /// Reads the file at [`config_path`] (absent: all defaults).
    pub fn load() -> anyhow::Result<Config> {
        Config::load_from(&config_path())
    }

    pub fn load_from(path: &Path) -> anyhow::Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Config::parse(&text, path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut c = Config::parse("", path)?;
                c.file_found = false;
                Ok(c)
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot read config file {}: {e}",
                path.display()
            )),
        }
    }

    /// Parses `text` as the file at `path` (named in errors and sources).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            key: None,
            message: e.to_string().trim_end().to_string(),
        })?;
        let file = Source::File(path.to_path_buf());
        let err = |key: &str, message: String| ConfigError {
            path: path.to_path_buf(),
            key: Some(key.to_string()),
            message,
        };
        let string = |key: &str, v: Option<toml::Value>| -> Result<Option<String>, ConfigError> {
            match v {
                None => Ok(None),
                Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
                Some(toml::Value::String(_)) => Err(err(key, "must not be empty".into())),
                Some(other) => Err(err(
                    key,
                    format!("expected a string, found {}", other.type_str()),
                )),
            }
        };
        let size = |key: &str, v: Option<toml::Value>| -> Result<Option<u64>, ConfigError> {
            match v {
                None => Ok(None),
                Some(toml::Value::Integer(n)) if n > 0 => Ok(Some((n as u64) << 20)),
                Some(toml::Value::Integer(n)) => Err(err(
                    key,
                    format!("{n} is not a size; use e.g. \"2GiB\" or a positive number of MiB"),
                )),
                Some(toml::Value::String(s)) => {
                    let bytes = crate::size::parse_size(&s).map_err(|m| err(key, m))?;
                    if bytes == 0 {
                        return Err(err(key, format!("{s:?} is zero")));
                    }
                    Ok(Some(bytes))
                }
                Some(other) => Err(err(
                    key,
                    format!(
                        "expected a size such as \"2GiB\" (or a number of MiB), found {}",
                        other.type_str()
                    ),
                )),
            }
        };
        let choice = |key: &str, v: Option<toml::Value>, allowed: &[&str]| {
            let s = string(key, v)?;
            match s {
                Some(s) if !allowed.contains(&s.as_str()) => Err(err(
                    key,
                    format!("{s:?} is not one of {}", allowed.join(", ")),
                )),
                other => Ok(other),
            }
        };

        // The keys the daemon's `vm.defaults` reads, checked by the same code.
        let table: toml::Table = toml::from_str(text).map_err(|e| err("", e.to_string()))?;
        let banger_api::config::ImageDefaults {
            image,
            image_name,
            kernel,
        } = banger_api::config::ImageDefaults::from_table(&table).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            key: e.key,
            message: e.message,
        })?;

        let default_image = match image {
            Some(v) => Setting::new(v, file.clone()),
            None => Setting::new(DEFAULT_IMAGE.to_string(), Source::Default),
        };
        let default_image_name = match image_name {
            Some(v) => Setting::new(v, file.clone()),
            None => {
                let derived = banger_oci::reference::default_image_name_of(&default_image.value);
                banger_api::names::validate_name(&derived).map_err(|m| {
                    err(
                        "default_image_name",
                        format!(
                            "the name derived from default_image {:?} is not usable ({m}); set default_image_name",
                            default_image.value
                        ),
                    )
                })?;
                // Derived from a value: it comes from where that value came from.
                Setting::new(derived, default_image.source.clone())
            }
        };
        let default_kernel = match kernel {
            Some(v) => Setting::new(v, file.clone()),
            None => Setting::new(DEFAULT_KERNEL.to_string(), Source::Default),
        };

        let vm = raw.vm;
        let cpus = match vm.cpus {
            None => None,
            Some(toml::Value::Integer(n)) if (1..=i64::from(u32::MAX)).contains(&n) => {
                Some(n as u32)
            }
            Some(toml::Value::Integer(n)) => {
                return Err(err(
                    "vm.cpus",
                    format!("{n} is not a CPU count (at least 1)"),
                ));
            }
            Some(other) => {
                return Err(err(
                    "vm.cpus",
                    format!("expected a whole number, found {}", other.type_str()),
                ));
            }
        };
        let memory = size("vm.memory", vm.memory)?;
        let memory_mib = match memory {
            Some(b) if b >> 20 == 0 => {
                return Err(err("vm.memory", "is less than 1 MiB".into()));
            }
            other => other.map(|b| b >> 20),
        };
        let disk = size("vm.disk", vm.disk)?;
        let work_disk = size("vm.work_disk", vm.work_disk)?;
        let net =
            choice("vm.net", vm.net, &["public", "host", "any", "none", "user"])?.map(|s| match s
                .as_str()
            {
                "none" => NetArg::None,
                "host" => NetArg::Host,
                "any" => NetArg::Any,
                "user" => NetArg::User,
                _ => NetArg::Public,
            });
        let init =
            choice("vm.init", vm.init, &["auto", "agent", "image"])?.map(|s| match s.as_str() {
                "agent" => InitArg::Agent,
                "image" => InitArg::Image,
                _ => InitArg::Auto,
            });
        let vmm =
            choice("vm.vmm", vm.vmm, &["auto", "qemu", "firecracker"])?.map(|s| match s.as_str() {
                "qemu" => VmmArg::Qemu,
                "firecracker" => VmmArg::Firecracker,
                _ => VmmArg::Auto,
            });
        let console_log_max = size("vm.console_log_max", vm.console_log_max)?;
        if let Some(b) = console_log_max
            && !(64 << 10..=256 << 20).contains(&b)
        {
            return Err(err(
                "vm.console_log_max",
                format!("{b} bytes is out of range; give 64KiB to 256MiB"),
            ));
        }
        let warm = match vm.warm {
            None => None,
            Some(toml::Value::Boolean(b)) => Some(b),
            Some(other) => {
                return Err(err(
                    "vm.warm",
                    format!("expected true or false, found {}", other.type_str()),
                ));
            }
        };
        let stop_idle_after = match vm.stop_idle_after {
            None => None,
            Some(toml::Value::String(s)) => banger_api::config::parse_duration(&s)
                .map(|secs| (secs > 0).then_some(secs))
                .map_err(|m| err("vm.stop_idle_after", m))?,
            Some(other) => {
                return Err(err(
                    "vm.stop_idle_after",
                    format!(
                        "expected a duration such as \"2h\", \"30m\" or \"90s\", found {}",
                        other.type_str()
                    ),
                ));
            }
        };
        let daemon =
            banger_api::config::DaemonConfig::from_table(raw.daemon).map_err(|e| ConfigError {
                path: path.to_path_buf(),
                key: e.key,
                message: e.message,
            })?;
        let host = string("host", raw.host)?;
        if let Some(h) = &host {
            banger_client::SshTarget::parse(h).map_err(|e| err("host", e.to_string()))?;
        }
        let listen = string("serve.listen", raw.serve.listen)?
            .map(|l| {
                l.parse::<std::net::SocketAddr>().map_err(|_| {
                    err(
                        "serve.listen",
                        format!("{l:?} is not an address and port such as \"127.0.0.1:3000\""),
                    )
                })
            })
            .transpose()?;
        if raw.serve.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(err("serve.api_keys", "a key must not be empty".into()));
        }
        fn from<T>(file: &Source) -> impl Fn(T) -> Setting<T> + '_ {
            move |v| Setting::new(v, file.clone())
        }
        Ok(Config {
            serve: ServeSettings {
                listen: listen.map(from(&file)),
                api_keys: raw.serve.api_keys,
            },
            host: host.map(from(&file)),
            path: path.to_path_buf(),
            file_found: true,
            default_image,
            default_image_name,
            default_kernel,
            vm: VmDefaults {
                cpus: cpus.map(from(&file)),
                memory_mib: memory_mib.map(from(&file)),
                disk_bytes: disk.map(from(&file)),
                work_disk_bytes: work_disk.map(from(&file)),
                net: net.map(from(&file)),
                init: init.map(from(&file)),
                vmm: vmm.map(from(&file)),
                console_log_max: console_log_max.map(from(&file)),
                warm: warm.map(from(&file)),
                stop_idle_after_secs: stop_idle_after.map(from(&file)),
            },
            net: NetLists {
                allow: raw.net.allow,
                deny: raw.net.deny,
            },
            daemon: DaemonSettings {
                firecracker: daemon.firecracker.map(from(&file)),
                accel: daemon.accel.map(from(&file)),
                jailer: daemon.jailer.map(from(&file)),
            },
        })
    }

    /// The `[vm]` defaults with flags laid over them (a flag given wins).
    pub fn vm_with_flags(&self, flags: &VmFlags) -> VmDefaults {
        fn over<T: Clone>(flag: Option<T>, file: &Option<Setting<T>>) -> Option<Setting<T>> {
            match flag {
                Some(v) => Some(Setting::new(v, Source::Flag)),
                None => file.clone(),
            }
        }
        VmDefaults {
            cpus: over(flags.cpus, &self.vm.cpus),
            memory_mib: over(flags.memory_mib, &self.vm.memory_mib),
            disk_bytes: over(flags.disk_bytes, &self.vm.disk_bytes),
            work_disk_bytes: over(flags.work_disk_bytes, &self.vm.work_disk_bytes),
            net: over(flags.net, &self.vm.net),
            init: over(flags.init, &self.vm.init),
            vmm: over(flags.vmm, &self.vm.vmm),
            // `vm create --console-log-max` is applied with the other create flags.
            console_log_max: self.vm.console_log_max.clone(),
            warm: self.vm.warm.clone(),
            stop_idle_after_secs: self.vm.stop_idle_after_secs.clone(),
        }
    }

    /// Every key with its effective value (as text) and source, in file order, for
    /// `banger config show`. Keys the daemon decides say so.
    pub fn rows(&self, flags: &VmFlags) -> Vec<ConfigRow> {
        let vm = self.vm_with_flags(flags);
        let row = |key: &str, value: Option<String>, source: Source, daemon: &str| ConfigRow {
            key: key.to_string(),
            value: value.clone(),
            display: value.unwrap_or_else(|| format!("(daemon default: {daemon})")),
            source,
        };
        fn split<T>(s: Option<Setting<T>>, f: impl Fn(T) -> String) -> (Option<String>, Source) {
            match s {
                Some(s) => (Some(f(s.value)), s.source),
                None => (None, Source::Default),
            }
        }
        let size = |b: u64| {
            crate::output::human_bytes(b)
                .replace(".0 ", " ")
                .replace(' ', "")
        };
        let mut rows = vec![
            row(
                "default_image",
                Some(self.default_image.value.clone()),
                self.default_image.source.clone(),
                "",
            ),
            row(
                "default_image_name",
                Some(self.default_image_name.value.clone()),
                self.default_image_name.source.clone(),
                "",
            ),
            row(
                "default_kernel",
                Some(self.default_kernel.value.clone()),
                self.default_kernel.source.clone(),
                "",
            ),
        ];
        let (v, s) = split(vm.cpus, |n| n.to_string());
        rows.push(row("vm.cpus", v, s, "2, or the host's core count if lower"));
        let (v, s) = split(vm.memory_mib, |m| size(m << 20));
        rows.push(row("vm.memory", v, s, "1GiB, at most half the host's RAM"));
        let (v, s) = split(vm.disk_bytes, size);
        rows.push(row("vm.disk", v, s, "8GiB"));
        let (v, s) = split(vm.work_disk_bytes, size);
        rows.push(row("vm.work_disk", v, s, "8GiB"));
        let (v, s) = split(vm.net, |n| n.as_str().to_string());
        rows.push(row("vm.net", v, s, "public"));
        let (v, s) = split(vm.init, |i| init_str(i).to_string());
        rows.push(row("vm.init", v, s, "auto"));
        let (v, s) = split(vm.vmm, |m| m.as_str().to_string());
        rows.push(row("vm.vmm", v, s, "auto"));
        let (v, s) = split(vm.console_log_max, size);
        rows.push(row("vm.console_log_max", v, s, "8MiB"));
        let (v, s) = split(vm.warm, |w| w.to_string());
        rows.push(row("vm.warm", v, s, "true"));
        let (v, s) = split(vm.stop_idle_after_secs, |secs| {
            banger_api::text::human_duration(secs)
        });
        rows.push(row("vm.stop_idle_after", v, s, "never"));
        let list = |l: &[String]| (!l.is_empty()).then(|| l.join(", "));
        let source = |l: &[String]| match l.is_empty() {
            true => Source::Default,
            false => Source::File(self.path.clone()),
        };
        let (allow, deny) = (&self.net.allow, &self.net.deny);
        rows.push(row(
            "net.allow",
            list(allow),
            source(allow),
            "none: what vm.net allows",
        ));
        rows.push(row("net.deny", list(deny), source(deny), "none"));
        let (v, s) = split(self.daemon.firecracker.clone(), |p| p.display().to_string());
        rows.push(row(
            "daemon.firecracker",
            v,
            s,
            "$BANGER_FIRECRACKER, then PATH",
        ));
        let (v, s) = split(self.daemon.accel.clone(), |a| a);
        rows.push(row("daemon.accel", v, s, "auto"));
        let (v, s) = split(self.daemon.jailer.clone(), |p| p.display().to_string());
        rows.push(row(
            "daemon.jailer",
            v,
            s,
            "none: Firecracker runs unjailed",
        ));
        // `banger serve` reads these itself: their defaults are its own, not the daemon's.
        let serve_row =
            |key: &str, value: Option<String>, source: Source, default: &str| ConfigRow {
                key: key.to_string(),
                display: value
                    .clone()
                    .unwrap_or_else(|| format!("(default: {default})")),
                value,
                source,
            };
        let (v, s) = split(self.serve.listen.clone(), |a| a.to_string());
        rows.push(serve_row("serve.listen", v, s, "127.0.0.1:3000"));
        let keys = &self.serve.api_keys;
        rows.push(serve_row(
            "serve.api_keys",
            (!keys.is_empty()).then(|| format!("{} key(s)", keys.len())),
            source(keys),
            "none: any key, loopback only",
        ));
        rows
    }
}

pub fn init_str(i: InitArg) -> &'static str {
    match i {
        InitArg::Auto => "auto",
        InitArg::Agent => "agent",
        InitArg::Image => "image",
    }
}

/// One line of `banger config show`.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigRow {
    pub key: String,
    /// `null` where the daemon decides.
    pub value: Option<String>,
    #[serde(skip)]
    pub display: String,
    pub source: Source,
}

/// VM settings given as flags (each `None` when not given).
#[derive(Debug, Clone, Copy, Default)]
pub struct VmFlags {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub work_disk_bytes: Option<u64>,
    pub net: Option<NetArg>,
    pub init: Option<InitArg>,
    pub vmm: Option<VmmArg>,
}

/// A bad configuration file: which file, which key (when the parser knows), what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(
                f,
                "config file {}: key `{key}`: {} (see `banger config show --help`)",
                self.path.display(),
                self.message
            ),
            None => write!(
                f,
                "config file {}: {} (see `banger config show --help` for the keys)",
                self.path.display(),
                self.message
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/cfg/config.toml"))
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = parse("").expect("parses");
        assert_eq!(c.default_image.value, "debian:bookworm");
        assert_eq!(c.default_image.source, Source::Default);
        assert_eq!(c.default_image_name.value, "debian-bookworm");
        assert_eq!(c.default_kernel.value, "default");
        assert_eq!(c.vm, VmDefaults::default());
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
default_image = "ghcr.io/org/dev:v2.1"
default_kernel = "cloud"
[vm]
cpus = 4
memory = "2GiB"
disk = 20480
work_disk = "50G"
net = "none"
init = "agent"
vmm = "firecracker"
console_log_max = "1MiB"
[daemon]
firecracker = "/opt/fc/firecracker"
accel = "kvm"
jailer = "/opt/fc/jailer"
"#,
        )
        .expect("parses");
        let file = Source::File("/cfg/config.toml".into());
        assert_eq!(c.default_image.value, "ghcr.io/org/dev:v2.1");
        assert_eq!(c.default_image_name.value, "dev-v2-1", "derived");
        assert_eq!(c.default_image_name.source, file, "from the file's image");
        assert_eq!(c.default_kernel, Setting::new("cloud".into(), file.clone()));
        assert_eq!(c.vm.cpus, Some(Setting::new(4, file.clone())));
        assert_eq!(c.vm.memory_mib.as_ref().map(|s| s.value), Some(2048));
        assert_eq!(c.vm.disk_bytes.as_ref().map(|s| s.value), Some(20 << 30));
        assert_eq!(
            c.vm.work_disk_bytes.as_ref().map(|s| s.value),
            Some(50 << 30)
        );
        assert_eq!(c.vm.net.as_ref().map(|s| s.value), Some(NetArg::None));
        assert_eq!(c.vm.init.as_ref().map(|s| s.value), Some(InitArg::Agent));
        assert_eq!(
            c.vm.vmm.as_ref().map(|s| s.value),
            Some(VmmArg::Firecracker)
        );
        assert_eq!(
            c.vm.console_log_max,
            Some(Setting::new(1 << 20, file.clone()))
        );
        assert_eq!(
            c.daemon.firecracker,
            Some(Setting::new("/opt/fc/firecracker".into(), file.clone()))
        );
        assert_eq!(
            c.daemon.accel,
            Some(Setting::new("kvm".into(), file.clone()))
        );
        assert_eq!(
            c.daemon.jailer.map(|s| s.value),
            Some("/opt/fc/jailer".into())
        );
        assert_eq!(parse("").expect("empty").daemon, DaemonSettings::default());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it_and_the_file() {
        for (text, key) in [
            ("defualt_image = \"x\"\n", "defualt_image"),
            ("[vm]\nmemroy = \"1G\"\n", "memroy"),
            ("[network]\nmode = \"user\"\n", "network"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains("/cfg/config.toml"), "{e}");
        }
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key() {
        for (text, key, what) in [
            ("[vm]\nmemory = \"lots\"\n", "vm.memory", "lots"),
            ("[vm]\nmemory = true\n", "vm.memory", "boolean"),
            ("[vm]\nmemory = \"100K\"\n", "vm.memory", "1 MiB"),
            ("[vm]\ncpus = 0\n", "vm.cpus", "0"),
            ("[vm]\ncpus = \"two\"\n", "vm.cpus", "string"),
            ("[vm]\nnet = \"bridge\"\n", "vm.net", "bridge"),
            ("[vm]\ninit = \"systemd\"\n", "vm.init", "systemd"),
            ("[vm]\ndisk = -1\n", "vm.disk", "-1"),
            ("[vm]\nvmm = \"kvm\"\n", "vm.vmm", "kvm"),
            (
                "[vm]\nconsole_log_max = \"1KiB\"\n",
                "vm.console_log_max",
                "64KiB",
            ),
            ("[daemon]\naccel = \"hvf\"\n", "daemon.accel", "hvf"),
            (
                "[daemon]\nfirecracker = \"fc\"\n",
                "daemon.firecracker",
                "absolute",
            ),
            ("default_image = 3\n", "default_image", "integer"),
            ("default_kernel = \"bad name\"\n", "default_kernel", "' '"),
            ("default_image_name = \"\"\n", "default_image_name", "empty"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
            assert!(e.contains(what), "{text}: {e}");
            assert!(e.contains("/cfg/config.toml"), "{e}");
        }
        let e = parse("default_image = \n").expect_err("syntax").to_string();
        assert!(e.contains("/cfg/config.toml"), "{e}");
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let c = parse("[vm]\ncpus = 4\nmemory = 512\n").expect("parses");
        let flags = VmFlags {
            cpus: Some(1),
            net: Some(NetArg::None),
            ..VmFlags::default()
        };
        let vm = c.vm_with_flags(&flags);
        assert_eq!(vm.cpus, Some(Setting::new(1, Source::Flag)));
        assert_eq!(
            vm.memory_mib,
            Some(Setting::new(512, Source::File("/cfg/config.toml".into())))
        );
        assert_eq!(vm.net, Some(Setting::new(NetArg::None, Source::Flag)));
        assert_eq!(vm.disk_bytes, None, "left to the daemon");
    }

    #[test]
    fn net_mode_and_lists_come_from_the_file() {
        let c =
            parse("[vm]\nnet = \"host\"\n[net]\nallow = [\"example.org:443\"]\n").expect("parses");
        assert_eq!(c.vm.net.as_ref().map(|s| s.value), Some(NetArg::Host));
        assert_eq!(c.net.allow, ["example.org:443"]);
        let rows = c.rows(&VmFlags::default());
        let allow = rows.iter().find(|r| r.key == "net.allow").expect("row");
        assert_eq!(allow.value.as_deref(), Some("example.org:443"));
        assert!(allow.source.to_string().starts_with("config file"));
        let deny = rows.iter().find(|r| r.key == "net.deny").expect("row");
        assert_eq!(deny.source, Source::Default);
        assert!(parse("[net]\nbogus = 1\n").is_err());
        assert!(parse("[vm]\nnet = \"bridge\"\n").is_err());
        let user = parse("[vm]\nnet = \"user\"\n").expect("deprecated, still read");
        assert_eq!(user.vm.net.map(|s| s.value.as_str()), Some("host"));
    }

    #[test]
    fn show_rows_report_every_key_and_its_source() {
        let c = parse("default_kernel = \"cloud\"\n[vm]\nmemory = \"2GiB\"\n").expect("parses");
        let rows = c.rows(&VmFlags {
            cpus: Some(3),
            ..VmFlags::default()
        });
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "default_image",
                "default_image_name",
                "default_kernel",
                "vm.cpus",
                "vm.memory",
                "vm.disk",
                "vm.work_disk",
                "vm.net",
                "vm.init",
                "vm.vmm",
                "vm.console_log_max",
                "vm.warm",
                "vm.stop_idle_after",
                "net.allow",
                "net.deny",
                "daemon.firecracker",
                "daemon.accel",
                "daemon.jailer",
                "serve.listen",
                "serve.api_keys"
            ]
        );
        let get = |k: &str| rows.iter().find(|r| r.key == k).expect(k);
        assert_eq!(get("default_image").source.to_string(), "default");
        assert_eq!(
            get("default_kernel").source.to_string(),
            "config file /cfg/config.toml"
        );
        assert_eq!(get("vm.cpus").source.to_string(), "flag");
        assert_eq!(get("vm.cpus").display, "3");
        assert_eq!(get("vm.memory").display, "2GiB");
        assert_eq!(get("vm.disk").value, None);
        assert!(get("vm.disk").display.contains("daemon default"));
    }

    #[test]
    fn serve_listens_where_the_file_says_and_names_a_bad_address() {
        let c = parse("[serve]\nlisten = \"0.0.0.0:8080\"\napi_keys = [\"k1\", \"k2\"]\n")
            .expect("parses");
        let listen = c.serve.listen.as_ref().expect("listen");
        assert_eq!(listen.value, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(c.serve.api_keys, ["k1", "k2"]);
        let rows = c.rows(&VmFlags::default());
        let keys = rows
            .iter()
            .find(|r| r.key == "serve.api_keys")
            .expect("row");
        assert_eq!(keys.display, "2 key(s)", "keys are not printed");
        let e = parse("[serve]\nlisten = \"localhost\"\n").expect_err("no port");
        assert_eq!(e.key.as_deref(), Some("serve.listen"));
        let e = parse("[serve]\napi_keys = [\" \"]\n").expect_err("empty key");
        assert_eq!(e.key.as_deref(), Some("serve.api_keys"));
        assert!(parse("[serve]\nport = 1\n").is_err());
    }

    #[test]
    fn a_missing_file_is_all_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Config::load_from(&dir.path().join("none.toml")).expect("loads");
        assert!(!c.file_found);
        assert_eq!(c.default_image.source, Source::Default);
        std::fs::write(dir.path().join("c.toml"), "[vm]\ncpus = 2\n").expect("write");
        let c = Config::load_from(&dir.path().join("c.toml")).expect("loads");
        assert!(c.file_found);
        assert_eq!(c.vm.cpus.map(|s| s.value), Some(2));
    }
}
