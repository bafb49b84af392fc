//! Directory trees as git trees: which paths, with which git mode, hashed into a private
//! object store (see [`super::git`] for what keeps a guest's tree data).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::git::{Git, path_line};

/// What git records for a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    File {
        exec: bool,
    },
    Symlink,
    /// A submodule's commit, kept as the baseline had it.
    Gitlink(String),
}

/// Paths (relative, `/`-separated) and what they are; sorted, one entry per path.
pub type Items = BTreeMap<PathBuf, Item>;

/// `.git` (in any case: git refuses them all) cannot be a path component of a git tree.
pub fn is_git_dir_name(name: &std::ffi::OsStr) -> bool {
    name.as_bytes().eq_ignore_ascii_case(b".git")
}

fn has_git_component(rel: &Path) -> bool {
    rel.components().any(|c| is_git_dir_name(c.as_os_str()))
}

/// The item for the file at `path` (not followed), `None` for directories and special
/// files. `fix_modes`: make an unreadable file readable first (it is ours: a download).
fn item_of(path: &Path, fix_modes: bool) -> anyhow::Result<Option<Item>> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Ok(Some(Item::Symlink));
    }
    if !ft.is_file() {
        return Ok(None);
    }
    let mode = meta.permissions().mode();
    if fix_modes && mode & 0o400 == 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o400))?;
    }
    Ok(Some(Item::File {
        exec: mode & 0o100 != 0,
    }))
}

/// Everything below `root/rel` (a directory): files and symlinks, not followed; `.git`
/// directories left out. Unreadable directories are opened up (they are ours). A loop,
/// not recursion: a guest's tree may be thousands of directories deep.
pub fn walk(root: &Path, rel: &Path, items: &mut Items) -> anyhow::Result<()> {
    let mut pending = vec![rel.to_path_buf()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        for entry in entries_of(&dir)? {
            let entry = entry?;
            if is_git_dir_name(&entry.file_name()) {
                continue;
            }
            let child = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                pending.push(child);
            } else if let Some(item) = item_of(&root.join(&child), true)? {
                items.insert(child, item);
            }
        }
    }
    Ok(())
}

/// The entries of `dir`, made readable and searchable first (the guest's modes came with
/// the tree; the scratch copy is ours).
fn entries_of(dir: &Path) -> anyhow::Result<std::fs::ReadDir> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.permissions().mode() & 0o700 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))
}

/// Removes every `.git` (any case, file or directory) below `root`: the guest's
/// repositories are theirs, and host git is not to find one, even as data.
pub fn remove_git_dirs(root: &Path) -> anyhow::Result<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in entries_of(&dir)? {
            let entry = entry?;
            let is_dir = entry.file_type()?.is_dir();
            if is_git_dir_name(&entry.file_name()) {
                if is_dir {
                    crate::transfer::remove_tree(&entry.path());
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            } else if is_dir {
                pending.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Every directory above `rel` (under `root`) is a real directory: a guest's symlink
/// where the baseline had a directory must not lead git or us out of `root`.
fn under_real_dirs(root: &Path, rel: &Path) -> bool {
    rel.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .all(|a| std::fs::symlink_metadata(root.join(a)).is_ok_and(|m| m.is_dir()))
}

/// The git items of a packed workspace tree (what `vm run` copied): its files and
/// symlinks, modes read again now.
pub fn of_packed(tree: &crate::transfer::Tree) -> anyhow::Result<Items> {
    let mut items = Items::new();
    for e in &tree.entries {
        if e.kind == crate::transfer::Kind::Dir || has_git_component(&e.rel) {
            continue;
        }
        if let Some(item) = item_of(&tree.source.join(&e.rel), false)? {
            items.insert(e.rel.clone(), item);
        }
    }
    Ok(items)
}

/// A git workspace's tree at `root` as copying it would select it: the paths in the index
/// (the baseline's) and the untracked ones its `.gitignore` files do not ignore. The
/// baseline's submodules stay as they were (their contents are not compared).
pub fn select_git(git: &Git, root: &Path, baseline_tree: &str) -> anyhow::Result<Items> {
    git.run(git.cmd().args(["read-tree", baseline_tree]), None)?;
    let gitlinks = gitlinks(git, baseline_tree)?;
    let listed = git.run(
        git.cmd()
            .env("GIT_WORK_TREE", root)
            .current_dir(root)
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ]),
        None,
    )?;
    let mut items = Items::new();
    for raw in listed.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let rel = PathBuf::from(std::ffi::OsStr::from_bytes(
            raw.strip_suffix(b"/").unwrap_or(raw),
        ));
        if has_git_component(&rel) || !under_real_dirs(root, &rel) {
            continue; // not in the guest's tree as such (or a path through a symlink)
        }
        let Ok(meta) = std::fs::symlink_metadata(root.join(&rel)) else {
            continue; // in the baseline, deleted since
        };
        match gitlinks.get(&rel) {
            Some(commit) if meta.is_dir() => {
                items.insert(rel, Item::Gitlink(commit.clone()));
            }
            _ if meta.is_dir() => walk(root, &rel, &mut items)?,
            _ => {
                if let Some(item) = item_of(&root.join(&rel), true)? {
                    items.insert(rel, item);
                }
            }
        }
    }
    Ok(items)
}

/// The baseline's submodules: path → commit.
fn gitlinks(git: &Git, tree: &str) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    let out = git.run(git.cmd().args(["ls-tree", "-r", "-z", tree]), None)?;
    let mut links = BTreeMap::new();
    for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        // `<mode> SP <type> SP <object> TAB <path>`
        let Some(tab) = rec.iter().position(|b| *b == b'\t') else {
            continue;
        };
        let head = String::from_utf8_lossy(&rec[..tab]);
        let mut fields = head.split(' ');
        if fields.next() == Some("160000") {
            let id = fields.nth(1).unwrap_or_default().to_string();
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(&rec[tab + 1..]));
            links.insert(path, id);
        }
    }
    Ok(links)
}

/// Hashes `items` (under `root`) into `git`'s store and writes their tree; `scratch` is a
/// private directory for symlink targets. Returns the tree's id.
pub fn write_tree(git: &Git, root: &Path, items: &Items, scratch: &Path) -> anyhow::Result<String> {
    // One `hash-object` for everything: files by path, symlinks by a file holding their
    // target (a symlink itself is never opened).
    let mut input = Vec::new();
    let mut hashed = Vec::new();
    for (n, (rel, item)) in items.iter().enumerate() {
        let path = match item {
            Item::File { .. } => root.join(rel),
            Item::Symlink => {
                let target = std::fs::read_link(root.join(rel))
                    .with_context(|| format!("reading the link {}", rel.display()))?;
                let holder = scratch.join(format!("link-{n}"));
                std::fs::write(&holder, target.as_os_str().as_bytes())?;
                holder
            }
            Item::Gitlink(_) => continue,
        };
        input.extend(path_line(path.as_os_str().as_bytes()));
        input.push(b'\n');
        hashed.push(rel);
    }
    let ids = if hashed.is_empty() {
        Vec::new()
    } else {
        git.run(
            git.cmd()
                .args(["hash-object", "-w", "--no-filters", "--stdin-paths"]),
            Some(&input),
        )?
    };
    let mut ids = ids.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let mut info = Vec::new();
    let mut hashed = hashed.into_iter().peekable();
    for (rel, item) in items {
        let (mode, id) = match item {
            Item::Gitlink(commit) => ("160000", commit.as_bytes()),
            _ => {
                if hashed.next() != Some(rel) {
                    anyhow::bail!("internal error: hashed paths out of order");
                }
                let id = ids
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("git hash-object printed too few ids"))?;
                let mode = match item {
                    Item::File { exec: true } => "100755",
                    Item::File { exec: false } => "100644",
                    _ => "120000",
                };
                (mode, id)
            }
        };
        info.extend_from_slice(mode.as_bytes());
        info.push(b' ');
        info.extend_from_slice(id);
        info.push(b'\t');
        info.extend_from_slice(rel.as_os_str().as_bytes());
        info.push(0);
    }
    let index = git.dir.join("index.banger");
    if index.exists() {
        std::fs::remove_file(&index)?;
    }
    git.run(
        git.cmd()
            .args(["update-index", "--add", "-z", "--index-info"]),
        Some(&info),
    )?;
    git.line(git.cmd().args(["write-tree"]), None)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn every_dot_git_goes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join(".git/objects")).expect("mkdir");
        std::fs::create_dir_all(root.join("sub/.Git/hooks")).expect("mkdir");
        std::fs::create_dir_all(root.join("other")).expect("mkdir");
        std::fs::write(root.join("other/.git"), "gitdir: /home\n").expect("write");
        std::fs::write(root.join("sub/keep"), "k").expect("write");
        std::fs::set_permissions(root.join("sub"), PermissionsExt::from_mode(0o500))
            .expect("chmod");
        remove_git_dirs(root).expect("removed");
        let mut left = Items::new();
        walk(root, Path::new(""), &mut left).expect("walk");
        assert_eq!(left.keys().collect::<Vec<_>>(), [Path::new("sub/keep")]);
        assert!(!root.join("sub/.Git").exists() && !root.join(".git").exists());
        assert!(!root.join("other/.git").exists());
    }

    #[test]
    fn paths_through_symlinks_are_not_the_trees() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("d/e")).expect("mkdir");
        symlink("/etc", root.join("a")).expect("symlink");
        assert!(under_real_dirs(root, Path::new("d/e/f")));
        assert!(under_real_dirs(root, Path::new("top")));
        assert!(!under_real_dirs(root, Path::new("a/passwd")));
        assert!(!under_real_dirs(root, Path::new("missing/x")));
    }

    fn items(pairs: &[(&str, Item)]) -> Items {
        pairs
            .iter()
            .map(|(p, i)| (PathBuf::from(p), i.clone()))
            .collect()
    }

    #[test]
    fn a_walk_keeps_files_links_and_modes_and_leaves_git_dirs_out() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("w");
        std::fs::create_dir_all(root.join("a/.git")).expect("mkdir");
        std::fs::create_dir_all(root.join(".GIT")).expect("mkdir");
        std::fs::create_dir_all(root.join("empty")).expect("mkdir");
        std::fs::write(root.join("a/.git/config"), "x").expect("write");
        std::fs::write(root.join(".GIT/config"), "x").expect("write");
        std::fs::write(root.join("a/f"), "f").expect("write");
        std::fs::write(root.join("run"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(root.join("run"), PermissionsExt::from_mode(0o700))
            .expect("chmod");
        std::fs::write(root.join("secret"), "s").expect("write");
        std::fs::set_permissions(root.join("secret"), PermissionsExt::from_mode(0o000))
            .expect("chmod");
        symlink("/etc/passwd", root.join("pw")).expect("symlink");
        let mut got = Items::new();
        walk(&root, Path::new(""), &mut got).expect("walk");
        assert_eq!(
            got,
            items(&[
                ("a/f", Item::File { exec: false }),
                ("pw", Item::Symlink),
                ("run", Item::File { exec: true }),
                ("secret", Item::File { exec: false }),
            ])
        );

        let git = Git::init(&tmp.path().join("g"), "sha1").expect("init");
        let scratch = tmp.path().join("s");
        std::fs::create_dir(&scratch).expect("mkdir");
        let tree = write_tree(&git, &root, &got, &scratch).expect("tree");
        let listing = git
            .run(git.cmd().args(["ls-tree", "-r", &tree]), None)
            .expect("ls-tree");
        let listing = String::from_utf8(listing).expect("utf8");
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 4, "{listing}");
        assert!(lines[1].starts_with("120000 blob ") && lines[1].ends_with("\tpw"));
        assert!(lines[2].starts_with("100755 blob ") && lines[2].ends_with("\trun"));
        // The link is stored as its target's text, not the file it points at.
        let link_id = lines[1].split(' ').nth(2).expect("id").split('\t').next();
        let content = git
            .run(
                git.cmd().args(["cat-file", "blob", link_id.expect("id")]),
                None,
            )
            .expect("cat-file");
        assert_eq!(content, b"/etc/passwd");
    }
}
