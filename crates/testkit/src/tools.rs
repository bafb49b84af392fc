//! Locating and running the external tools the tests drive.
//!
//! Tests never skip silently: a missing tool panics with the Debian package that
//! provides it, so the fix is one `apt-get install` away.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Directories searched after `$PATH`: test runners often lack the sbin dirs, where
/// e2fsprogs and friends live.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The Debian package that ships `tool` (best effort; falls back to the tool's name).
pub fn debian_package(tool: &str) -> &str {
    match tool {
        "e2fsck" | "fsck.ext4" | "mkfs.ext4" | "mke2fs" | "debugfs" | "dumpe2fs" | "tune2fs"
        | "resize2fs" => "e2fsprogs",
        "docker-registry" => "docker-registry",
        "qemu-system-x86_64" => "qemu-system-x86",
        "busybox" => "busybox-static",
        "skopeo" => "skopeo",
        "umoci" => "umoci",
        "cpio" => "cpio",
        "xz" => "xz-utils",
        "zstd" => "zstd",
        "gzip" => "gzip",
        "jq" => "jq",
        "curl" => "curl",
        "debootstrap" => "debootstrap",
        "time" => "time",
        "tar" => "tar",
        "apt-get" | "apt-cache" => "apt",
        "dpkg-deb" => "dpkg",
        "ssh" | "ssh-keygen" => "openssh-client",
        "sshd" => "openssh-server",
        "pasta" | "passt" => "passt",
        other => other,
    }
}

/// Finds `tool` on `$PATH` or in the sbin directories; `None` if absent.
pub fn find(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return is_executable(&p).then_some(p);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

/// Like [`find`], but panics naming the Debian package to install when missing.
pub fn require(tool: &str) -> PathBuf {
    find(tool).unwrap_or_else(|| {
        panic!(
            "required tool `{tool}` not found on PATH or in /usr/sbin, /sbin: \
             install it with `apt-get install {}`",
            debian_package(tool)
        )
    })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Whether the test process runs as root (owner of our own `/proc/self`).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A shell-like rendering of `cmd`, for failure messages.
pub fn command_line(cmd: &Command) -> String {
    let mut parts = vec![quote(cmd.get_program())];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion, capturing its output; panics with the command line,
/// exit status, stdout and stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot spawn `{}`: {e}", command_line(cmd)));
    if !out.status.success() {
        panic!(
            "command failed: `{}`\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            command_line(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// [`run`], returning stdout as (lossy) UTF-8.
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// A `Command` for `tool`, resolved through [`require`].
pub fn command(tool: &str) -> Command {
    Command::new(require(tool))
}

/// The persistent cache for downloaded test inputs (kernels, bench tarballs):
/// `$BANGER_TEST_CACHE`, or `/var/tmp/banger-test-cache`. Created if missing.
pub fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("BANGER_TEST_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/banger-test-cache"));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create test cache {}: {e}", dir.display()));
    dir
}

/// The tools no package registry carries (Firecracker, its jailer and API schema):
/// `shared/tools` beside the repository, or beside the nearest directory above it that
/// has one (a worktree under `<top>/wt/` uses `<top>/shared/tools`). The path beside the
/// repository when none exists (callers report it missing).
pub fn shared_tools_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    repo.ancestors()
        .map(|a| a.join("../shared/tools"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| repo.join("../shared/tools"))
}

/// Last `max_lines` lines of `text`, for panic messages.
pub fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

/// `e2fsck -fn IMG`; panics with its output unless the image is clean.
pub fn e2fsck_clean(image: &Path) {
    run(command("e2fsck").arg("-fn").arg(image));
}

/// `debugfs -R REQUEST IMG` stdout (read-only open).
pub fn debugfs(image: &Path, request: &str) -> String {
    run_stdout(command("debugfs").arg("-R").arg(request).arg(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sbin_tools_and_maps_packages() {
        assert!(require("e2fsck").is_absolute());
        assert_eq!(debian_package("qemu-system-x86_64"), "qemu-system-x86");
        assert!(find("definitely-not-a-tool-banger").is_none());
    }

    #[test]
    #[should_panic(expected = "apt-get install no-such-tool-banger")]
    fn missing_tool_names_package() {
        require("no-such-tool-banger");
    }

    #[test]
    fn run_reports_failure() {
        let err = std::panic::catch_unwind(|| {
            run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]));
        })
        .expect_err("must panic");
        let msg = err.downcast_ref::<String>().expect("string panic").clone();
        assert!(
            msg.contains("sh -c 'echo out; echo err >&2; exit 3'"),
            "{msg}"
        );
        assert!(
            msg.contains("out") && msg.contains("err") && msg.contains('3'),
            "{msg}"
        );
    }
}
