//! Host git, run on data: a private object store, a private index, no configuration but
//! ours. The trees hashed here may come from a hostile guest, so git never reads anything
//! of theirs as configuration or runs anything they name:
//! - no system, global or repository configuration of theirs: `GIT_CONFIG_NOSYSTEM`,
//!   `GIT_CONFIG_GLOBAL=/dev/null`, a bare `GIT_DIR` we made, every other `GIT_*` variable
//!   of this process removed (the user's `GIT_EXTERNAL_DIFF` or `GIT_DIR` do not apply);
//! - no hooks, fsmonitor, pager, external diff or textconv (`-c` and `--no-ext-diff
//!   --no-textconv`), no excludes or attributes file of the user's;
//! - blobs are hashed from paths we checked are regular files, `--no-filters`: a guest
//!   `.gitattributes` naming a filter, a diff driver or `eol` has nothing to run (no
//!   configuration defines them) and changes no bytes; symlinks are hashed from their
//!   target's text, never opened;
//! - trees are written from an index we fill (`update-index --index-info`) and compared
//!   tree to tree (`diff-tree`): no work tree, so no `.gitattributes` in it is read either.
//!
//! The one command that walks a guest tree is `ls-files --others --exclude-standard` (for a
//! git workspace's ignore rules, as at copy time): it reads the tree's `.gitignore` files
//! as patterns (symlinked ones git refuses to open) and nothing else of it.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// A private bare repository (and index) that git commands run in.
pub struct Git {
    pub dir: PathBuf,
    index: PathBuf,
}

/// Configuration given on the command line (it beats every file, and there is none).
const SAFE_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.pager=cat",
    "core.excludesFile=/dev/null",
    "core.attributesFile=/dev/null",
    "core.quotePath=true",
    "core.untrackedCache=false",
    "core.symlinks=true",
    "protocol.allow=never",
];

impl Git {
    /// Makes a bare repository at `dir` (absent or empty) of `object_format` (`sha1`,
    /// `sha256`); its index is `dir/index.banger`.
    pub fn init(dir: &Path, object_format: &str) -> anyhow::Result<Git> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let git = Git::open(dir);
        // No templates: nothing (sample hooks, info/exclude) but what git needs.
        git.run(
            git.cmd()
                .args(["init", "-q", "--bare", "--template="])
                .arg(format!("--object-format={object_format}"))
                .arg(dir),
            None,
        )?;
        Ok(git)
    }

    pub fn open(dir: &Path) -> Git {
        Git {
            dir: dir.to_path_buf(),
            index: dir.join("index.banger"),
        }
    }

    /// Objects not found here are read from `objects` (another repository's object
    /// directory), never written there.
    pub fn borrow_objects(&self, objects: &Path) -> anyhow::Result<()> {
        let info = self.dir.join("objects/info");
        std::fs::create_dir_all(&info)?;
        let mut line = objects.as_os_str().as_bytes().to_vec();
        if line.contains(&b'\n') || !objects.is_absolute() {
            anyhow::bail!("cannot use {} as an object store", objects.display());
        }
        line.push(b'\n');
        std::fs::write(info.join("alternates"), line)?;
        Ok(())
    }

    /// `git` with the private repository and nothing else of the environment's git.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("git");
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"GIT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("GIT_DIR", &self.dir)
            .env("GIT_INDEX_FILE", &self.index)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ATTR_NOSYSTEM", "1")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_PAGER", "cat")
            .arg("--no-pager");
        for kv in SAFE_CONFIG {
            cmd.args(["-c", kv]);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` (from [`Git::cmd`]) with `input` on stdin; its stdout.
    pub fn run(&self, cmd: &mut Command, input: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
        let what = describe(cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {what} (is git installed?)"))?;
        // Fed from a thread: git may fill its stdout before reading all of stdin.
        let feeder = match (input, child.stdin.take()) {
            (Some(bytes), Some(mut stdin)) => {
                let bytes = bytes.to_vec();
                Some(std::thread::spawn(move || stdin.write_all(&bytes)))
            }
            _ => None,
        };
        let out = child
            .wait_with_output()
            .with_context(|| format!("running {what}"))?;
        if let Some(f) = feeder {
            let fed = f
                .join()
                .map_err(|_| anyhow::anyhow!("feeding {what} panicked"))?;
            if out.status.success() {
                fed.with_context(|| format!("feeding {what}"))?;
            }
        }
        if !out.status.success() {
            anyhow::bail!(
                "{what} failed ({}): {}",
                out.status,
                banger_api::text::visible(String::from_utf8_lossy(&out.stderr).trim())
            );
        }
        Ok(out.stdout)
    }

    /// Runs `cmd` with its stdout going to `out` as it comes.
    pub fn stream(&self, cmd: &mut Command, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        let what = describe(cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {what} (is git installed?)"))?;
        let mut stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = std::io::Read::read_to_end(e, &mut text);
            }
            text
        });
        let copied = match child.stdout.take() {
            Some(mut stdout) => std::io::copy(&mut stdout, out).map(drop),
            None => Ok(()),
        };
        if copied.is_err() {
            let _ = child.kill();
        }
        let status = child.wait().with_context(|| format!("running {what}"))?;
        let err = err_reader.join().unwrap_or_default();
        copied.context("writing the patch")?;
        if !status.success() {
            anyhow::bail!(
                "{what} failed ({status}): {}",
                banger_api::text::visible(String::from_utf8_lossy(&err).trim())
            );
        }
        Ok(())
    }

    /// One line of git's output, as text (an object id).
    pub fn line(&self, cmd: &mut Command, input: Option<&[u8]>) -> anyhow::Result<String> {
        let out = self.run(cmd, input)?;
        let text = String::from_utf8(out).context("git printed a non-UTF-8 object id")?;
        Ok(text.trim_end().to_string())
    }
}

fn describe(cmd: &Command) -> String {
    let sub = cmd
        .get_args()
        .find(|a| *a != "--no-pager" && *a != "-c" && !a.as_bytes().contains(&b'='))
        .map(OsStr::to_string_lossy)
        .unwrap_or_default();
    format!("git {sub}")
}

/// `path` as a line of `hash-object --stdin-paths`: C-quoted (git unquotes a line that
/// starts with `"`) when it holds a newline, a backslash, a quote or a control byte.
pub fn path_line(path: &[u8]) -> Vec<u8> {
    let plain = !path.is_empty()
        && path[0] != b'"'
        && !path.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\');
    if plain {
        return path.to_vec();
    }
    let mut out = vec![b'"'];
    for &b in path {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if b < 0x20 || b == 0x7f => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_are_quoted_as_git_unquotes_them() {
        assert_eq!(path_line(b"/tmp/a b/c"), b"/tmp/a b/c");
        assert_eq!(path_line(b"/x/we\nird"), b"\"/x/we\\nird\"");
        assert_eq!(path_line(b"/x/\"q\\"), b"\"/x/\\\"q\\\\\"");
        assert_eq!(path_line(b"/x/\x1b[31m"), b"\"/x/\\033[31m\"");
        // git reads them back to the same bytes.
        let tmp = tempfile::tempdir().expect("tempdir");
        let git = Git::init(&tmp.path().join("g"), "sha1").expect("init");
        let odd = tmp.path().join("we\nird \"\\\x1b");
        std::fs::write(&odd, b"odd\n").expect("write");
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, b"odd\n").expect("write");
        let mut input = path_line(odd.as_os_str().as_bytes());
        input.push(b'\n');
        input.extend(path_line(plain.as_os_str().as_bytes()));
        input.push(b'\n');
        let out = git
            .run(
                git.cmd()
                    .args(["hash-object", "--no-filters", "--stdin-paths"]),
                Some(&input),
            )
            .expect("hash");
        let ids: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1], "same content, same blob");
    }

    #[test]
    fn the_environments_git_settings_do_not_leak_in() {
        let git = Git::open(Path::new("/nonexistent"));
        let cmd = git.cmd();
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.contains(&(
            OsStr::new("GIT_CONFIG_GLOBAL"),
            Some(OsStr::new("/dev/null"))
        )));
        assert!(envs.contains(&(OsStr::new("GIT_CONFIG_NOSYSTEM"), Some(OsStr::new("1")))));
        let args: Vec<_> = cmd.get_args().collect();
        assert!(args.contains(&OsStr::new("core.hooksPath=/dev/null")));
        assert!(args.contains(&OsStr::new("core.fsmonitor=false")));
    }
}
