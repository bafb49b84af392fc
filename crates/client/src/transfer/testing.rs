//! Helpers shared by the cp modules' tests.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

/// A tree with a file, an executable, a read-only dir, a symlink and an empty dir.
pub fn sample_tree(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    std::fs::create_dir_all(root.join("ro")).expect("mkdir");
    std::fs::write(root.join("a.txt"), "hello\n").expect("write");
    std::fs::write(root.join("bin/run"), "#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(root.join("bin/run"), PermissionsExt::from_mode(0o750))
        .expect("chmod");
    std::fs::write(root.join("ro/file"), "x").expect("write");
    std::fs::set_permissions(root.join("ro"), PermissionsExt::from_mode(0o555)).expect("chmod");
    symlink("a.txt", root.join("link")).expect("symlink");
}

/// The names in an archive, directories with a trailing `/`.
pub fn archive_names(bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(bytes);
    ar.entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            let mut name = e.path().expect("path").to_string_lossy().into_owned();
            if e.header().entry_type() == tar::EntryType::Directory && !name.ends_with('/') {
                name.push('/');
            }
            name
        })
        .collect()
}

/// Makes the sample tree's read-only directory writable again, so the temp dir cleans up.
pub fn unlock(root: &Path) {
    std::fs::set_permissions(root.join("ro"), PermissionsExt::from_mode(0o755)).expect("chmod");
}

/// Mode bits of a local path.
pub fn mode_of(path: &Path) -> std::io::Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.mode() & 0o7777)
}
