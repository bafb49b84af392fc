//! `banger vm diff` and `vm run --diff`, end to end: a guest changes the workspace `vm run
//! PATH` copied in; the patch applied on the host (`git apply --index` to a fresh clone,
//! `git apply` outside any repository, GNU `patch -p1` for text) gives the guest's tree.
//! The guest is hostile: its `.git/config`, hooks and `.gitattributes` run nothing on the
//! host, and its symlink to /etc/passwd stays a link. Real QEMU guests of the minbase image
//! (no git in it: the guest side is a shell), booted one at a time.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use banger_testkit::tools;
use common::TestEnv;

/// One guest at a time on a shared machine.
static ONE_VM: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM.lock().unwrap_or_else(|e| e.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a host tool in `dir` with `input` on stdin, insisting on success.
fn host(dir: &Path, tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tools::require(tool))
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("feed");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{tool} {args:?}: {}", stderr(&out));
    out.stdout
}

fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
    let mut all = vec![
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "init.defaultBranch=main",
    ];
    all.extend_from_slice(args);
    host(dir, "git", &all, b"")
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

/// Path → what git can say of it: a file's bytes and executable bit, or a link's target.
/// `.git` directories are left out (no patch holds them), as are `skip` prefixes.
fn tree_of(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    fn walk(root: &Path, rel: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(root.join(rel))
            .expect("readdir")
            .flatten()
        {
            let name = e.file_name();
            if name == ".git" {
                continue;
            }
            let rel = rel.join(&name);
            let key = rel.to_string_lossy().into_owned();
            if skip.iter().any(|s| key.starts_with(s)) {
                continue;
            }
            let path = root.join(&rel);
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(key, format!("link -> {}", target.display()));
            } else if meta.is_dir() {
                walk(root, &rel, skip, out);
            } else {
                let exec = meta.permissions().mode() & 0o100 != 0;
                let bytes = std::fs::read(&path).expect("read");
                out.insert(key, format!("exec={exec} {bytes:?}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), skip, &mut out);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    host(Path::new("/"), "cp", &["-a", s(from), s(to)], b"");
}

/// The guest's changes: a modified, a binary, an untracked, a deleted, a renamed and a
/// newly executable file.
const CHANGES: &str = "set -e
printf 'one\\nTWO\\n' > a.txt
printf '\\000\\001\\377binary\\000' > new.bin
mkdir -p notes && echo untracked > notes/todo.md
rm gone.txt
mv 'old name.txt' 'new name.txt'
chmod +x run.sh
";

/// A guest's attempts to run something on the host through host git: MARKER is a host path.
const HOSTILE: &str = "set -e
cat >> .git/config <<EOF
[core]
\tfsmonitor = touch MARKER
\tpager = touch MARKER
\thooksPath = /root/app/hooks
[diff]
\texternal = touch MARKER
[filter \"evil\"]
\tclean = touch MARKER
\tsmudge = touch MARKER
[diff \"evil\"]
\ttextconv = touch MARKER
EOF
mkdir -p .git/hooks hooks
for h in pre-commit post-checkout post-index-change reference-transaction; do
  printf '#!/bin/sh\\ntouch MARKER\\n' > .git/hooks/$h; cp .git/hooks/$h hooks/$h
done
chmod +x .git/hooks/* hooks/*
printf '* filter=evil diff=evil\\n' > .gitattributes
ln -s /etc/passwd pw
";

fn vm_run_detached(env: &TestEnv, image: &str, path: &Path, name: &str) {
    env.ok(&[
        "vm",
        "run",
        s(path),
        "-d",
        "--name",
        name,
        "--image",
        image,
        "--cpus",
        "1",
        "-q",
    ]);
}

fn guest_sh(env: &TestEnv, vm: &str, dir: &str, script: &str) {
    env.ok(&["vm", "exec", vm, "-w", dir, "--", "sh", "-c", script]);
}

#[test]
fn a_git_workspace_comes_back_as_a_patch_for_a_fresh_clone_and_the_guest_runs_nothing_here() {
    let _one = serial();
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let repo = env.path("app");
    write(&repo.join("a.txt"), b"one\ntwo\n");
    write(
        &repo.join("old name.txt"),
        b"moved, not changed\nline 2\nline 3\nline 4\n",
    );
    write(&repo.join("gone.txt"), b"deleted in the guest\n");
    write(&repo.join("run.sh"), b"#!/bin/sh\necho run\n");
    write(&repo.join(".gitignore"), b"build/\n");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    vm_run_detached(&env, &image, &repo, "work");

    // Nothing changed yet: an empty patch, exit 0.
    let out = env.banger(&["vm", "diff", "work"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"", "{}", stderr(&out));

    let marker = env.path("marker");
    guest_sh(&env, "work", "/root/app", CHANGES);
    guest_sh(
        &env,
        "work",
        "/root/app",
        &HOSTILE.replace("MARKER", s(&marker)),
    );
    guest_sh(
        &env,
        "work",
        "/root/app",
        "mkdir build && echo o > build/out.o",
    );
    let patch_file = env.path("changes.patch");
    env.ok(&["vm", "diff", "work", "--output", s(&patch_file)]);
    let patch = std::fs::read(&patch_file).expect("patch");
    let text = String::from_utf8_lossy(&patch);
    assert!(text.contains("rename from old name.txt"), "{text}");
    assert!(text.contains("GIT binary patch"), "{text}");
    assert!(text.contains("old mode 100644\nnew mode 100755"), "{text}");
    assert!(
        text.contains("new file mode 120000\n") && text.contains("+/etc/passwd\n"),
        "the link as a link: {text}"
    );
    assert!(!text.contains("root:x:0:0"), "never the host's /etc/passwd");
    assert!(!text.contains("build/out.o"), "ignored by .gitignore");
    let stat = env.ok(&["vm", "diff", "work", "--stat"]);
    assert!(
        stat.contains("a.txt") && stat.contains("files changed"),
        "{stat}"
    );

    // Applied to a fresh clone: the guest's tree (fetched with vm cp).
    let clone = env.path("clone");
    git(env.root.path(), &["clone", "-q", s(&repo), "clone"]);
    host(&clone, "git", &["apply", "--index", "-"], &patch);
    let guest = env.path("guest-copy");
    env.ok(&["vm", "cp", "-q", "work:/root/app", s(&guest)]);
    assert_eq!(tree_of(&clone, &[]), tree_of(&guest, &["build"]));
    let status = String::from_utf8(git(&clone, &["status", "--porcelain"])).expect("utf8");
    assert!(
        !status.lines().any(|l| l.starts_with("??")),
        "--index staged everything: {status}"
    );
    assert!(
        !marker.exists(),
        "host git ran something the guest configured"
    );
    env.ok(&["vm", "delete", "--force", "work"]);
}

#[test]
fn a_plain_directory_comes_back_with_rm_and_applies_with_git_apply_or_patch() {
    let _one = serial();
    let env = TestEnv::new();
    let image = env.debian_image("minbase");
    let dir = env.path("plain");
    write(&dir.join("a.txt"), b"one\ntwo\n");
    write(
        &dir.join("old name.txt"),
        b"moved\nline 2\nline 3\nline 4\n",
    );
    write(&dir.join("gone.txt"), b"deleted in the guest\n");
    write(&dir.join("run.sh"), b"#!/bin/sh\necho run\n");
    write(
        &dir.join("build.log"),
        b"no ignore rules in a plain directory\n",
    );
    let pristine = env.path("pristine");
    copy_dir(&dir, &pristine);

    // Binary changes: `git apply` outside any repository.
    let script = format!("{CHANGES}echo more >> build.log\n");
    let patch = run_rm_diff(&env, &image, &dir, &script);
    assert_eq!(
        env.json(&["vm", "list"])["vms"],
        serde_json::json!([]),
        "--rm deleted the vm after writing the patch"
    );
    let left: Vec<_> = std::fs::read_dir(env.state_dir().join("workspaces"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "its baseline went with it: {left:?}");
    let (expected, applied) =
        expected_and_applied(&env, &pristine, &script, "git", &["apply", "-"], &patch);
    assert_eq!(tree_of(&applied, &[]), tree_of(&expected, &[]));

    // Text only: GNU patch.
    let script =
        "set -e\nprintf 'one\\n2\\n' > a.txt\nrm gone.txt\nmkdir -p n && echo new > n/f.txt\n";
    let patch = run_rm_diff(&env, &image, &dir, script);
    let (expected, patched) =
        expected_and_applied(&env, &pristine, script, "patch", &["-p1", "-s"], &patch);
    assert_eq!(tree_of(&patched, &[]), tree_of(&expected, &[]));
}

/// `vm run DIR --rm --diff FILE -- sh -c SCRIPT`; the patch.
fn run_rm_diff(env: &TestEnv, image: &str, dir: &Path, script: &str) -> Vec<u8> {
    let patch_file = env
        .root
        .path()
        .join(format!("{}.patch", std::process::id()));
    env.ok(&[
        "vm",
        "run",
        s(dir),
        "--image",
        image,
        "--cpus",
        "1",
        "-q",
        "--rm",
        "--diff",
        s(&patch_file),
        "--",
        "sh",
        "-c",
        script,
    ]);
    let patch = std::fs::read(&patch_file).expect("patch written");
    std::fs::remove_file(&patch_file).expect("rm");
    patch
}

/// Two copies of `pristine`: SCRIPT run in one (what the guest did), the patch applied to
/// the other with TOOL ARGS.
fn expected_and_applied(
    env: &TestEnv,
    pristine: &Path,
    script: &str,
    tool: &str,
    args: &[&str],
    patch: &[u8],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let expected = env.path(&format!("expected-{tool}"));
    copy_dir(pristine, &expected);
    host(&expected, "sh", &["-c", script], b"");
    let applied = env.path(&format!("applied-{tool}"));
    copy_dir(pristine, &applied);
    host(&applied, tool, args, patch);
    (expected, applied)
}
