//! Workspace selection for `vm run PATH`: what a directory contributes.
//!
//! A git repository (PATH holds `.git`, or is the top level `git rev-parse --show-toplevel`
//! reports) gives its tracked files and the untracked files git does not ignore (`git
//! ls-files --cached --others --exclude-standard`; tracked files deleted from the work tree
//! are skipped) plus the whole `.git` directory; any other directory gives everything in
//! it. Symlinks stay symlinks; special files are left out.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::Error;
use crate::transfer::Tree;

/// A workspace to copy in.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Its directory name, the name under /root in the guest.
    pub name: String,
    pub git: bool,
    pub tree: Tree,
}

/// What PATH contributes (see the module docs).
pub fn workspace(path: &Path) -> Result<Workspace, Error> {
    Ok(select(path)?)
}

fn select(path: &Path) -> anyhow::Result<Workspace> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot copy {}", path.display()))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "{} is not a directory (to copy single files, use `banger vm cp`)",
            path.display()
        );
    }
    let root = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    let name = match root.file_name() {
        Some(n) => n
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("directory name {n:?} is not valid UTF-8"))?
            .to_string(),
        None => anyhow::bail!("cannot copy / as a workspace: name a directory"),
    };
    let git = is_git_toplevel(&root);
    let mut tree = Tree {
        source: root.clone(),
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    tree.add(PathBuf::new(), &std::fs::symlink_metadata(&root)?);
    if git {
        for rel in git_files(&root)? {
            let Ok(meta) = std::fs::symlink_metadata(root.join(&rel)) else {
                continue; // tracked, but deleted from the work tree
            };
            tree.add(rel.clone(), &meta);
            if meta.is_dir() {
                // A submodule's checkout: all of it.
                tree.walk(&rel)?;
            }
        }
        let dot_git = PathBuf::from(".git");
        let meta = std::fs::symlink_metadata(root.join(&dot_git))?;
        tree.add(dot_git.clone(), &meta);
        if meta.is_dir() {
            tree.walk(&dot_git)?;
        }
    } else {
        tree.walk(Path::new(""))?;
    }
    tree.sort();
    Ok(Workspace { name, git, tree })
}

/// `root` holds `.git`, or git calls it the top level of its work tree.
fn is_git_toplevel(root: &Path) -> bool {
    if std::fs::symlink_metadata(root.join(".git")).is_ok() {
        return true;
    }
    let Ok(out) = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--show-toplevel"])
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let top = std::ffi::OsStr::from_bytes(out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout));
    std::fs::canonicalize(top).is_ok_and(|t| t == root)
}

/// Tracked plus untracked-but-not-ignored paths, relative to `root`.
fn git_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .with_context(|| {
            format!(
                "{} is a git repository, but git could not be run (is it installed?)",
                root.display()
            )
        })?;
    if !out.status.success() {
        anyhow::bail!(
            "git ls-files in {} failed: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(OsString::from(std::ffi::OsStr::from_bytes(p))))
        .collect();
    // Unmerged paths are listed once per stage.
    files.sort();
    files.dedup();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command as Proc;

    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = Proc::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn a_git_workspace_is_tracked_plus_untracked_not_ignored_plus_dot_git() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("app");
        std::fs::create_dir(&repo).expect("mkdir");
        git(&repo, &["init", "-q"]);
        write(&repo.join(".gitignore"), "target/\n*.log\n");
        write(&repo.join("src/main.rs"), "fn main() {}\n");
        write(&repo.join("run.sh"), "#!/bin/sh\n");
        std::fs::set_permissions(repo.join("run.sh"), PermissionsExt::from_mode(0o755))
            .expect("chmod");
        write(&repo.join("gone.txt"), "deleted later\n");
        write(&repo.join("sub/.gitignore"), "secret.txt\n");
        write(&repo.join("sub/keep.txt"), "kept\n");
        symlink("src/main.rs", repo.join("link")).expect("symlink");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        std::fs::remove_file(repo.join("gone.txt")).expect("rm");
        // Untracked: one kept, the ignored ones not.
        write(&repo.join("notes.md"), "untracked\n");
        write(&repo.join("target/debug/app"), "build output\n");
        write(&repo.join("build.log"), "ignored\n");
        write(&repo.join("sub/secret.txt"), "nested-ignored\n");
        write(&repo.join("sub/new.txt"), "untracked in sub\n");

        let ws = workspace(&repo).expect("workspace");
        assert!(ws.git);
        assert_eq!(ws.name, "app");
        let listing = ws.tree.listing();
        let outside_git: Vec<&str> = listing
            .iter()
            .map(String::as_str)
            .filter(|p| !p.starts_with(".git/") || *p == ".git/")
            .collect();
        assert_eq!(
            outside_git,
            [
                ".git/",
                ".gitignore",
                "link",
                "notes.md",
                "run.sh",
                "src/",
                "src/main.rs",
                "sub/",
                "sub/.gitignore",
                "sub/keep.txt",
                "sub/new.txt"
            ]
        );
        assert!(listing.contains(&".git/HEAD".to_string()), "the whole .git");
        assert!(listing.iter().any(|p| p.starts_with(".git/objects/")));

        // The packed archive holds exactly the listing, under app/, with modes.
        let mut bytes = Vec::new();
        crate::transfer::pack(&ws.tree, Path::new("app"), &mut bytes).expect("pack");
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            let mut n = e.path().expect("path").to_string_lossy().into_owned();
            if e.header().entry_type() == tar::EntryType::Directory && !n.ends_with('/') {
                n.push('/');
            }
            if n == "app/run.sh" {
                assert_eq!(e.header().mode().expect("mode") & 0o777, 0o755);
            }
            if n == "app/link" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
            }
            names.push(n);
        }
        assert_eq!(names[0], "app/");
        let packed: Vec<String> = names[1..]
            .iter()
            .map(|n| n.strip_prefix("app/").expect("prefix").to_string())
            .collect();
        assert_eq!(packed, listing, "dry-run listing = packed entries");
    }

    #[test]
    fn a_plain_directory_is_everything() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("Plain Dir");
        write(&dir.join("a.log"), "x");
        write(&dir.join("target/out"), "y");
        write(&dir.join(".hidden"), "z");
        std::fs::create_dir(dir.join("empty")).expect("mkdir");
        let ws = workspace(&dir).expect("workspace");
        assert!(!ws.git);
        assert_eq!(ws.name, "Plain Dir");
        assert_eq!(
            ws.tree.listing(),
            [".hidden", "a.log", "empty/", "target/", "target/out"]
        );
        assert_eq!((ws.tree.files(), ws.tree.bytes()), (3, 3));
        assert!(
            workspace(&dir.join("a.log")).is_err(),
            "a file is not a workspace"
        );
    }

    #[test]
    fn a_repo_subdirectory_is_a_plain_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("r");
        std::fs::create_dir(&repo).expect("mkdir");
        git(&repo, &["init", "-q"]);
        write(&repo.join("sub/f"), "x");
        let ws = workspace(&repo.join("sub")).expect("workspace");
        assert!(!ws.git);
        assert_eq!(ws.tree.listing(), ["f"]);
    }
}
