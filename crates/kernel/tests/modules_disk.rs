//! The modules disk of the real Debian cloud kernel: a clean ext4 (e2fsck), every module
//! decompressed at its tree path, an index whose dependencies and aliases are what
//! Docker's kernel requests need, and the agent as `banger-modprobe`.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use banger_guest_proto::modindex::{self, ModIndex};
use banger_kernel::build_modules_disk;

fn debugfs_cat(disk: &std::path::Path, file: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat /{file}")])
        .arg(disk)
        .output()
        .expect("debugfs (e2fsprogs) is required");
    assert!(out.status.success(), "debugfs cat {file}");
    out.stdout
}

#[test]
fn debian_cloud_kernel_modules_disk() {
    let kernel = banger_testkit::qemu::Kernel::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = dir.path().join("agent");
    std::fs::write(&agent, b"\x7fELF pretend agent").expect("agent");
    let out = dir.path().join("modules.ext4");
    let info = build_modules_disk(&kernel.modules_dir, &agent, &out).expect("build");
    assert!(info.modules > 1000 && info.aliases > 1000, "{info:?}");
    // Nothing but the result is left beside it.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");

    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&out)
        .output()
        .expect("e2fsck (e2fsprogs) is required");
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    let text = String::from_utf8(debugfs_cat(&out, modindex::INDEX_FILE)).expect("utf-8");
    let index = ModIndex::parse(&text).expect("index");
    assert_eq!(index.modules.len(), info.modules);
    // What Docker's daemon and kernel ask for, by name or alias.
    for (asked, module) in [
        ("fs-overlay", "overlay"),
        ("rtnl-link-bridge", "bridge"),
        ("rtnl-link-veth", "veth"),
        ("br_netfilter", "br_netfilter"),
        ("nf_tables", "nf_tables"),
    ] {
        assert_eq!(index.lookup(asked), [module], "{asked}");
    }
    let order: Vec<&str> = index
        .load_order("br_netfilter")
        .expect("order")
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    let bridge = order.iter().position(|p| p.ends_with("/bridge.ko"));
    assert!(
        bridge.is_some_and(
            |at| at + 1 < order.len() && order[order.len() - 1].ends_with("/br_netfilter.ko")
        ),
        "{order:?}"
    );
    // Each file on the disk is the decompressed module.
    let overlay = &index.modules["overlay"].path;
    assert!(
        debugfs_cat(&out, overlay).starts_with(b"\x7fELF"),
        "{overlay}"
    );
    assert_eq!(
        debugfs_cat(&out, modindex::MODPROBE_FILE),
        b"\x7fELF pretend agent"
    );
}

#[test]
fn a_missing_tree_or_agent_leaves_nothing() {
    let kernel = banger_testkit::qemu::Kernel::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("modules.ext4");
    let err = build_modules_disk(&kernel.modules_dir, &dir.path().join("nope"), &out)
        .expect_err("no agent");
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
}
