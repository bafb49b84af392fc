//! `vm diff`: a guest's changes to a workspace `vm run PATH` copied in, as a binary-safe git
//! patch against what was copied.
//!
//! At copy time [`Records::record`] keeps the baseline on the host, in
//! `STATE_DIR/workspaces/<vm id>/` (removed with `--rm`, and for VMs that no longer exist
//! whenever another workspace is recorded):
//! - a git workspace: the repository's object directory and its HEAD commit (the patch
//!   applies with `git apply --index` to a clone at that commit; changes the host had not
//!   committed are part of it, as they were copied);
//! - a plain directory: its tree, hashed into a private bare repository there.
//!
//! [`prepare`] fetches the guest's tree through `vm cp`'s confined extractor into a private
//! temporary directory (bounded as `vm cp` is), drops every `.git` in it, hashes it into a
//! private repository that borrows the baseline's objects, and [`Prepared::write`] prints
//! `git diff-tree` of the two trees (renames found, binary files as git binary patches).
//! How host git is kept from the guest's configuration: `diff/git.rs`'s module docs.
//!
//! What a patch cannot hold: `.git` directories at any depth, empty directories, special
//! files, modes other than executable or not, and (git workspaces) untracked files the
//! workspace's `.gitignore` ignores and the insides of submodules.

mod git;
mod tree;

use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use banger_api::methods;
use banger_api::vm::VmRef;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::transfer::{self, Destination, Limits};
use crate::transport::Client;
use crate::workspace::Workspace;
use git::Git;

/// What a workspace was when `vm run` copied it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub vm_id: String,
    /// Where it was copied in the guest (`/root/<name>`).
    pub guest_path: String,
    /// The host directory it was copied from.
    pub source: PathBuf,
    pub kind: BaselineKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineKind {
    Git {
        /// The repository's object directory (read, never written).
        objects: PathBuf,
        /// HEAD at copy time; `None` before the first commit (the baseline is empty).
        commit: Option<String>,
        /// `sha1` or `sha256`.
        object_format: String,
    },
    /// A tree in `STATE_DIR/workspaces/<vm id>/baseline.git`.
    Plain { tree: String },
}

/// Where baselines are kept: `STATE_DIR/workspaces`.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

const RECORD: &str = "baseline.json";
const PLAIN_REPO: &str = "baseline.git";

impl Records {
    pub fn new(state_dir: &Path) -> Records {
        Records {
            dir: state_dir.join("workspaces"),
        }
    }

    fn vm_dir(&self, vm_id: &str) -> anyhow::Result<PathBuf> {
        let ok = !vm_id.is_empty()
            && vm_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            anyhow::bail!("unexpected vm id {:?}", banger_api::text::visible(vm_id));
        }
        Ok(self.dir.join(vm_id))
    }

    /// Records `ws` as copied to `guest_path` in VM `vm_id`.
    pub fn record(&self, vm_id: &str, guest_path: &str, ws: &Workspace) -> Result<Baseline, Error> {
        let dir = self.vm_dir(vm_id)?;
        self.forget(vm_id);
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let kind = if ws.git {
            git_baseline(&ws.tree.source)
        } else {
            plain_baseline(&dir, ws)
        };
        let kind = match kind {
            Ok(k) => k,
            Err(e) => {
                self.forget(vm_id);
                return Err(e.into());
            }
        };
        let baseline = Baseline {
            vm_id: vm_id.to_string(),
            guest_path: guest_path.to_string(),
            source: ws.tree.source.clone(),
            kind,
        };
        let text = serde_json::to_vec_pretty(&baseline).map_err(anyhow::Error::new)?;
        let tmp = dir.join(format!("{RECORD}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(RECORD)).context("saving the baseline")?;
        Ok(baseline)
    }

    /// The baseline recorded for VM `vm_id`, if any.
    pub fn load(&self, vm_id: &str) -> Result<Option<Baseline>, Error> {
        let path = self.vm_dir(vm_id)?.join(RECORD);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("reading {}", path.display()))
                    .into());
            }
        };
        let baseline =
            serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(baseline))
    }

    /// Removes VM `vm_id`'s baseline (best effort).
    pub fn forget(&self, vm_id: &str) {
        if let Ok(dir) = self.vm_dir(vm_id)
            && dir.exists()
        {
            transfer::remove_tree(&dir);
        }
    }

    /// Removes the baselines of VMs not in `live` (ids, as listed at `listed_at`). A
    /// baseline changed since is kept: its VM may be newer than the list (another `vm
    /// run` at the same time).
    pub fn prune(&self, live: &[String], listed_at: std::time::SystemTime) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let known = name.to_str().is_some_and(|n| live.iter().any(|l| l == n));
            let older = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < listed_at);
            if !known && older && entry.file_type().is_ok_and(|t| t.is_dir()) {
                transfer::remove_tree(&entry.path());
            }
        }
    }

    /// Records `ws` for `vm_id` and drops the baselines of VMs that are gone.
    pub async fn record_and_prune(
        &self,
        client: &Client,
        vm_id: &str,
        guest_path: &str,
        ws: &Workspace,
    ) -> Result<Baseline, Error> {
        let listed_at = std::time::SystemTime::now();
        if let Ok(list) = client
            .call::<methods::vm::List>(&banger_api::system::Empty {})
            .await
        {
            let live: Vec<String> = list.vms.into_iter().map(|v| v.id).collect();
            self.prune(&live, listed_at);
        }
        let (records, vm_id, guest_path, ws) = (
            self.clone(),
            vm_id.to_string(),
            guest_path.to_string(),
            ws.clone(),
        );
        tokio::task::spawn_blocking(move || records.record(&vm_id, &guest_path, &ws))
            .await
            .map_err(|e| anyhow::anyhow!("recording the baseline: {e}"))?
    }
}

/// The host repository's objects and HEAD (the user's own repository: plain git, as
/// `vm run` lists it).
fn git_baseline(repo: &Path) -> anyhow::Result<BaselineKind> {
    let ask = |args: &[&str]| -> anyhow::Result<Option<Vec<u8>>> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running git in {}", repo.display()))?;
        let mut text = out.stdout;
        if text.last() == Some(&b'\n') {
            text.pop();
        }
        Ok(out.status.success().then_some(text))
    };
    let common = ask(&["rev-parse", "--git-common-dir"])?
        .ok_or_else(|| anyhow::anyhow!("{} is not a git repository", repo.display()))?;
    // Relative to the repository (older git has no --path-format).
    let common = repo.join(std::ffi::OsStr::from_bytes(&common));
    let text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
    let object_format =
        text(ask(&["rev-parse", "--show-object-format"])?).unwrap_or_else(|| "sha1".to_string());
    let commit = text(ask(&["rev-parse", "-q", "--verify", "HEAD^{commit}"])?);
    Ok(BaselineKind::Git {
        objects: common.join("objects"),
        commit,
        object_format,
    })
}

/// The copied files of a plain directory, hashed into `dir/baseline.git`.
fn plain_baseline(dir: &Path, ws: &Workspace) -> anyhow::Result<BaselineKind> {
    let git = Git::init(&dir.join(PLAIN_REPO), "sha1")?;
    let items = tree::of_packed(&ws.tree)?;
    let scratch = transfer::private_dir(dir, ".links")?;
    let tree = tree::write_tree(&git, &ws.tree.source, &items, &scratch);
    transfer::remove_tree(&scratch);
    let index = git.dir.join("index.banger");
    let _ = std::fs::remove_file(index);
    Ok(BaselineKind::Plain { tree: tree? })
}

/// The host repository's `info/exclude` (ignore rules that applied at copy time), for a
/// git workspace's untracked files.
fn borrow_excludes(git: &Git, objects: &Path) -> anyhow::Result<()> {
    let Some(common) = objects.parent() else {
        return Ok(());
    };
    match std::fs::read(common.join("info/exclude")) {
        Ok(rules) => {
            std::fs::create_dir_all(git.dir.join("info"))?;
            std::fs::write(git.dir.join("info/exclude"), rules)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context("reading the repository's info/exclude"));
        }
    }
    Ok(())
}

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The patch (`git apply`-able, binary files included).
    Patch,
    /// `git diff --stat` of it.
    Stat,
}

/// The baseline and the guest's tree, both hashed, ready to compare; the temporary
/// directory goes when this is dropped.
pub struct Prepared {
    git: Git,
    scratch: PathBuf,
    pub base: String,
    pub guest: String,
    pub baseline: Baseline,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        transfer::remove_tree(&self.scratch);
    }
}

impl Prepared {
    /// No change at all (an empty patch).
    pub fn is_empty(&self) -> bool {
        self.base == self.guest
    }

    /// Writes the patch (or its stat) to `out`.
    pub fn write(&self, format: Format, out: &mut dyn std::io::Write) -> Result<(), Error> {
        if self.is_empty() {
            return Ok(());
        }
        let mut cmd = self.git.cmd();
        cmd.args([
            "diff-tree",
            "-r",
            "-M",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
        ]);
        match format {
            Format::Patch => cmd.args(["-p", "--binary", "--full-index"]),
            Format::Stat => cmd.args(["--stat"]),
        };
        cmd.args([&self.base, &self.guest]);
        Ok(self.git.stream(&mut cmd, out)?)
    }
}

/// Fetches VM `vm`'s workspace (`path` in the guest, default where `vm run` copied it) and
/// hashes it against the recorded baseline.
pub async fn prepare(
    client: &Client,
    records: &Records,
    vm: &str,
    path: Option<&str>,
) -> Result<Prepared, Error> {
    let shown = client
        .call::<methods::vm::Show>(&VmRef { vm: vm.to_string() })
        .await?;
    let baseline = records.load(&shown.id)?.ok_or_else(|| {
        anyhow::anyhow!(
            "vm {vm} has no recorded workspace: `banger vm diff` compares what `banger vm run PATH` copied in (on this host) with the guest's copy"
        )
    })?;
    let guest_path = match path {
        Some(p) => transfer::guest_absolute(p),
        None => baseline.guest_path.clone(),
    };
    let scratch = transfer::private_dir(&std::env::temp_dir(), "banger-diff")?;
    let plain_objects = records.vm_dir(&shown.id)?.join(PLAIN_REPO).join("objects");
    let prepared = fetch_and_hash(
        client,
        vm,
        &guest_path,
        scratch.clone(),
        baseline,
        plain_objects,
    )
    .await;
    if prepared.is_err() {
        transfer::remove_tree(&scratch);
    }
    prepared
}

async fn fetch_and_hash(
    client: &Client,
    vm: &str,
    guest_path: &str,
    scratch: PathBuf,
    baseline: Baseline,
    plain_objects: PathBuf,
) -> Result<Prepared, Error> {
    let (conn, top) = transfer::open_download(client, vm, guest_path).await?;
    let dest = Destination {
        dir: scratch.clone(),
        top,
        name: "tree".into(),
    };
    transfer::download(conn, dest, Limits::default())
        .await
        .with_context(|| format!("fetching {guest_path} from {vm}"))?;
    let hashed = tokio::task::spawn_blocking(move || hash_both(scratch, baseline, plain_objects))
        .await
        .map_err(|e| anyhow::anyhow!("comparing the trees: {e}"))?;
    Ok(hashed?)
}

/// `plain_objects`: where a plain baseline's objects are.
fn hash_both(
    scratch: PathBuf,
    baseline: Baseline,
    plain_objects: PathBuf,
) -> anyhow::Result<Prepared> {
    let root = scratch.join("tree");
    if !std::fs::symlink_metadata(&root)?.is_dir() {
        anyhow::bail!("{} is not a directory in the guest", baseline.guest_path);
    }
    // The guest's repositories are theirs: never where git looks, not even as data.
    tree::remove_git_dirs(&root)?;
    let links = scratch.join("links");
    std::fs::create_dir(&links)?;
    let (git, base) = match &baseline.kind {
        BaselineKind::Git {
            objects,
            commit,
            object_format,
        } => {
            let git = Git::init(&scratch.join("git"), object_format)?;
            if !objects.is_dir() {
                anyhow::bail!(
                    "the repository {} that was copied is gone",
                    baseline.source.display()
                );
            }
            git.borrow_objects(objects)?;
            borrow_excludes(&git, objects)?;
            let base = match commit {
                Some(c) => git
                    .line(
                        git.cmd()
                            .args(["rev-parse", "--verify", &format!("{c}^{{tree}}")]),
                        None,
                    )
                    .with_context(|| {
                        format!(
                            "commit {c} (copied from {}) is no longer in that repository",
                            baseline.source.display()
                        )
                    })?,
                None => git.line(git.cmd().arg("mktree"), Some(b""))?,
            };
            (git, base)
        }
        BaselineKind::Plain { tree } => {
            let git = Git::init(&scratch.join("git"), "sha1")?;
            git.borrow_objects(&plain_objects)?;
            (git, tree.clone())
        }
    };
    let items = match &baseline.kind {
        BaselineKind::Git { .. } => tree::select_git(&git, &root, &base)?,
        BaselineKind::Plain { .. } => {
            let mut items = tree::Items::new();
            tree::walk(&root, Path::new(""), &mut items)?;
            items
        }
    };
    let guest = tree::write_tree(&git, &root, &items, &links)?;
    Ok(Prepared {
        git,
        scratch,
        base,
        guest,
        baseline,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;

    use super::*;

    fn run(dir: &Path, program: &str, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = Command::new(program)
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.unwrap_or_default()).expect("feed");
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
        let mut all = vec![
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ];
        all.extend_from_slice(args);
        run(dir, "git", &all, None)
    }

    fn write(path: &Path, data: &[u8]) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// Path → (kind and content or link target, executable), `.git` and `skip` left out.
    fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<String, (String, bool)> {
        let mut items = tree::Items::new();
        let copy = tempfile::tempdir().expect("tempdir");
        run(
            Path::new("/"),
            "cp",
            &[
                "-a",
                &format!("{}/.", root.display()),
                &copy.path().display().to_string(),
            ],
            None,
        );
        tree::walk(copy.path(), Path::new(""), &mut items).expect("walk");
        items
            .into_iter()
            .filter(|(p, _)| !skip.iter().any(|s| p.starts_with(s)))
            .map(|(p, item)| {
                let full = copy.path().join(&p);
                let value = match item {
                    tree::Item::Symlink => (
                        format!(
                            "link:{}",
                            std::fs::read_link(&full).expect("link").display()
                        ),
                        false,
                    ),
                    tree::Item::File { exec } => {
                        (format!("{:?}", std::fs::read(&full).expect("read")), exec)
                    }
                    tree::Item::Gitlink(c) => (c, false),
                };
                (p.display().to_string(), value)
            })
            .collect()
    }

    /// The "guest's" copy of `src`: what `vm run` copied, extracted to a scratch dir.
    fn guest_copy(src: &Path) -> (PathBuf, PathBuf) {
        let scratch =
            transfer::private_dir(&std::env::temp_dir(), "banger-diff-test").expect("scratch");
        let root = scratch.join("tree");
        run(
            Path::new("/"),
            "cp",
            &[
                "-a",
                &src.display().to_string(),
                &root.display().to_string(),
            ],
            None,
        );
        (scratch, root)
    }

    fn prepare_local(records: &Records, vm_id: &str, scratch: PathBuf) -> Prepared {
        let baseline = records.load(vm_id).expect("load").expect("recorded");
        let objects = records
            .vm_dir(vm_id)
            .expect("dir")
            .join(PLAIN_REPO)
            .join("objects");
        hash_both(scratch, baseline, objects).expect("hashed")
    }

    fn patch_of(p: &Prepared, format: Format) -> Vec<u8> {
        let mut out = Vec::new();
        p.write(format, &mut out).expect("patch");
        out
    }

    #[test]
    fn a_git_workspace_diff_applies_to_a_fresh_clone_and_gives_the_guest_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("app");
        std::fs::create_dir(&repo).expect("mkdir");
        git(&repo, &["init", "-q"]);
        write(&repo.join("a.txt"), b"one\ntwo\n");
        write(
            &repo.join("old name.txt"),
            b"renamed but the same\nline\nline\nline\n",
        );
        write(&repo.join("gone.txt"), b"to delete\n");
        write(&repo.join("run.sh"), b"#!/bin/sh\necho hi\n");
        write(&repo.join(".gitignore"), b"target/\n");
        write(&repo.join("img.bin"), &[0u8, 1, 2, 255, 0, 7]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        write(&repo.join(".git/info/exclude"), b"*.swp\n");
        let records = Records::new(&tmp.path().join("state"));
        let ws = crate::workspace::workspace(&repo).expect("workspace");
        let baseline = records.record("vm-1", "/root/app", &ws).expect("record");
        assert_eq!(baseline.guest_path, "/root/app");
        assert!(matches!(
            baseline.kind,
            BaselineKind::Git {
                commit: Some(_),
                ..
            }
        ));

        // Nothing changed: an empty patch.
        let (scratch, _) = guest_copy(&repo);
        let p = prepare_local(&records, "vm-1", scratch);
        assert!(p.is_empty());
        assert_eq!(patch_of(&p, Format::Patch), b"");
        drop(p);

        let (scratch, g) = guest_copy(&repo);
        write(&g.join("a.txt"), b"one\nTWO\n");
        write(&g.join("new.bin"), &[0u8, 159, 146, 150, 0, 1]);
        write(&g.join("notes/untracked.md"), b"untracked\n");
        write(&g.join("target/build.o"), b"ignored\n");
        write(
            &g.join("editor.swp"),
            b"ignored by the repository's info/exclude\n",
        );
        write(&g.join("esc\x1b[31mname"), b"odd name\n");
        std::fs::remove_file(g.join("gone.txt")).expect("rm");
        std::fs::rename(g.join("old name.txt"), g.join("new name.txt")).expect("mv");
        chmod(&g.join("run.sh"), 0o755);
        symlink("/etc/passwd", g.join("pw")).expect("symlink");
        write(&g.join(".gitattributes"), b"* filter=evil diff=evil\n");
        // The guest's own repository: never read.
        write(
            &g.join(".git/config"),
            b"[core]\n\tfsmonitor = touch /tmp/never\n",
        );
        let p = prepare_local(&records, "vm-1", scratch);
        let patch = patch_of(&p, Format::Patch);
        let text = String::from_utf8_lossy(&patch);
        assert!(text.contains("rename from old name.txt"), "{text}");
        assert!(text.contains("GIT binary patch"), "{text}");
        assert!(text.contains("old mode 100644\nnew mode 100755"), "{text}");
        assert!(text.contains("new file mode 120000"), "{text}");
        assert!(!text.contains("root:x:0"), "a link is its target's name");
        assert!(!text.contains("target/build.o"), "ignored, as at copy time");
        assert!(!patch.contains(&0x1b), "control bytes in names are quoted");
        assert!(text.contains("esc\\033[31mname"), "{text}");
        let stat = String::from_utf8(patch_of(&p, Format::Stat)).expect("utf8");
        assert!(
            stat.contains("a.txt") && stat.contains("files changed"),
            "{stat}"
        );

        let clone = tmp.path().join("clone");
        git(
            tmp.path(),
            &["clone", "-q", &repo.display().to_string(), "clone"],
        );
        run(&clone, "git", &["apply", "--index", "-"], Some(&patch));
        assert!(!text.contains("editor.swp"), "info/exclude applies");
        assert_eq!(
            snapshot(&clone, &[]),
            snapshot(&g, &["target", "editor.swp"])
        );
        let staged = git(&clone, &["status", "--porcelain"]);
        assert!(
            !String::from_utf8_lossy(&staged)
                .lines()
                .any(|l| l.starts_with("??")),
            "--index staged everything"
        );
    }

    #[test]
    fn a_symlink_where_a_tracked_directory_was_brings_back_no_host_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("app");
        std::fs::create_dir(&repo).expect("mkdir");
        git(&repo, &["init", "-q"]);
        write(&repo.join("etc/passwd"), b"tracked in the repository\n");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        let records = Records::new(&tmp.path().join("state"));
        let ws = crate::workspace::workspace(&repo).expect("workspace");
        records.record("vm-3", "/root/app", &ws).expect("record");
        let (scratch, g) = guest_copy(&repo);
        std::fs::remove_dir_all(g.join("etc")).expect("rm");
        symlink("/etc", g.join("etc")).expect("symlink");
        let p = prepare_local(&records, "vm-3", scratch);
        let text = String::from_utf8(patch_of(&p, Format::Patch)).expect("utf8");
        assert!(!text.contains("root:x:0"), "{text}");
        assert!(text.contains("deleted file mode 100644"), "{text}");
        assert!(text.contains("new file mode 120000"), "{text}");
    }

    #[test]
    fn a_plain_directory_diff_applies_with_git_apply_or_patch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("plain");
        write(&dir.join("a.txt"), b"one\ntwo\n");
        write(&dir.join("sub/b.txt"), b"b\n");
        write(&dir.join("bin"), &[0u8, 1, 2]);
        write(&dir.join("build.log"), b"no ignore rules here\n");
        let records = Records::new(&tmp.path().join("state"));
        let ws = crate::workspace::workspace(&dir).expect("workspace");
        records.record("vm-2", "/root/plain", &ws).expect("record");
        // The host directory changing later changes nothing: the baseline is a snapshot.
        write(&dir.join("a.txt"), b"changed on the host afterwards\n");
        let pristine = tmp.path().join("pristine");
        write(&pristine.join("a.txt"), b"one\ntwo\n");
        write(&pristine.join("sub/b.txt"), b"b\n");
        write(&pristine.join("bin"), &[0u8, 1, 2]);
        write(&pristine.join("build.log"), b"no ignore rules here\n");

        // Text only: GNU patch applies it.
        let (scratch, g) = guest_copy(&pristine);
        write(&g.join("a.txt"), b"one\n2\n");
        write(&g.join("new/c.txt"), b"c\n");
        std::fs::remove_file(g.join("sub/b.txt")).expect("rm");
        write(&g.join("build.log"), b"more\n");
        let p = prepare_local(&records, "vm-2", scratch);
        let patch = patch_of(&p, Format::Patch);
        let target = tmp.path().join("by-patch");
        run(
            tmp.path(),
            "cp",
            &[
                "-a",
                &pristine.display().to_string(),
                &target.display().to_string(),
            ],
            None,
        );
        run(&target, "patch", &["-p1", "-s"], Some(&patch));
        assert_eq!(snapshot(&target, &[]), snapshot(&g, &[]));
        drop(p);

        // Binary and modes: `git apply` (outside any repository).
        let (scratch, g) = guest_copy(&pristine);
        write(&g.join("bin"), &[9u8, 0, 9, 0]);
        write(&g.join("more.bin"), &[0u8; 100]);
        chmod(&g.join("a.txt"), 0o755);
        symlink("sub/b.txt", g.join("link")).expect("symlink");
        let p = prepare_local(&records, "vm-2", scratch);
        let patch = patch_of(&p, Format::Patch);
        let target = tmp.path().join("by-git-apply");
        run(
            tmp.path(),
            "cp",
            &[
                "-a",
                &pristine.display().to_string(),
                &target.display().to_string(),
            ],
            None,
        );
        run(&target, "git", &["apply", "-"], Some(&patch));
        assert_eq!(snapshot(&target, &[]), snapshot(&g, &[]));
    }

    #[test]
    fn records_are_kept_per_vm_and_pruned() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("w");
        write(&dir.join("f"), b"x");
        let records = Records::new(&tmp.path().join("state"));
        let ws = crate::workspace::workspace(&dir).expect("workspace");
        records.record("vm-a", "/root/w", &ws).expect("record");
        records.record("vm-b", "/root/w", &ws).expect("record");
        assert!(records.load("vm-a").expect("load").is_some());
        assert!(records.load("../x").is_err(), "ids are names, not paths");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        records.prune(&["vm-b".to_string()], std::time::SystemTime::UNIX_EPOCH);
        assert!(
            records.load("vm-a").expect("load").is_some(),
            "newer than the list: kept"
        );
        records.prune(&["vm-b".to_string()], later);
        assert!(records.load("vm-a").expect("load").is_none());
        assert!(records.load("vm-b").expect("load").is_some());
        records.forget("vm-b");
        assert!(records.load("vm-b").expect("load").is_none());
    }
}
