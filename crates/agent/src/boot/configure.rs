//! Per-VM configuration of the assembled root: hostname, `/etc/hosts`, network,
//! `/etc/resolv.conf`. Nothing here is fatal: each failure is one console line.
//!
//! Files are replaced by writing a sibling and renaming it over the old name, so a
//! symlink there (`/etc/resolv.conf → ../run/systemd/…`) is replaced by a file, not
//! followed, and a reader never sees half a file.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::net;
use crate::cmdline::{BootArgs, Net};
use crate::console::log;

/// What the user-mode network's DNS forwarder listens on.
const NAMESERVER: &str = "10.0.2.3";

/// Applies `args` to the running guest (after the switch to the new root).
pub fn apply(args: &BootArgs) {
    if let Some(name) = &args.hostname {
        set_identity_hostname(name);
    }
    report("bringing up lo", net::up("lo"));
    if args.net == Net::User {
        report("configuring eth0", net::configure_eth0());
        report("net.ipv4.tcp_rmem", net::limit_receive_window());
        report(
            "/etc/resolv.conf",
            replace_file(
                Path::new("/etc/resolv.conf"),
                &format!("nameserver {NAMESERVER}\n"),
            ),
        );
    }
}

/// The hostname, `/etc/hostname` and the `/etc/hosts` line, at boot.
pub fn set_identity_hostname(name: &str) {
    set_hostname_with(name, replace_file);
}

/// The same for a fork, which finds its snapshot's files there and rewrites them in place
/// ([`rewrite`]).
pub fn rename_fork(name: &str) {
    set_hostname_with(name, rewrite);
}

fn set_hostname_with(name: &str, write: fn(&Path, &str) -> io::Result<()>) {
    report("sethostname", set_hostname(name));
    report(
        "/etc/hostname",
        write(Path::new("/etc/hostname"), &format!("{name}\n")),
    );
    let hosts = Path::new("/etc/hosts");
    let old = std::fs::read_to_string(hosts).unwrap_or_default();
    report("/etc/hosts", write(hosts, &hosts_content(&old, name)));
}

fn report(what: &str, r: io::Result<()>) {
    if let Err(e) = r {
        log!("{what}: {e}");
    }
}

fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    crate::sys::cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `/etc/hosts` with `127.0.0.1 localhost` (kept if some line has it) and
/// `127.0.1.1 <hostname>` (replacing any other 127.0.1.1 line); other lines kept.
pub fn hosts_content(old: &str, hostname: &str) -> String {
    let first = |line: &str| line.split_whitespace().next().map(str::to_string);
    let kept: Vec<&str> = old
        .lines()
        .filter(|l| first(l).as_deref() != Some("127.0.1.1"))
        .collect();
    let has_localhost = kept.iter().any(|l| {
        let mut f = l.split('#').next().unwrap_or("").split_whitespace();
        f.next() == Some("127.0.0.1") && f.any(|n| n == "localhost")
    });
    let mut out = String::new();
    if !has_localhost {
        out.push_str("127.0.0.1\tlocalhost\n");
    }
    for line in kept {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    out
}

/// Writes `content` to `path` through a sibling and a rename (mode 0644).
fn replace_file(path: &Path, content: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.banger-new"));
    std::fs::write(&tmp, content)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

/// Overwrites a regular file in place (then cuts it to the new length); anything else
/// (missing, a symlink, a FIFO) goes through [`replace_file`]. A fork's first answer waits
/// for this: a new file and a rename through overlayfs cost it tens of milliseconds under
/// emulation (kernel code its VMM has not translated yet), a write a fraction. A reader
/// between the write and the cut sees the new text followed by the old one's tail: the
/// first line is whole either way.
fn rewrite(path: &Path, content: &str) -> io::Result<()> {
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    match opened {
        Ok(mut file) if file.metadata()?.is_file() => {
            file.write_all(content.as_bytes())?;
            file.set_len(content.len() as u64)
        }
        _ => replace_file(path, content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_keeps_other_lines_and_replaces_the_hostname_line() {
        let old =
            "127.0.0.1 localhost\n::1 localhost ip6-localhost\n127.0.1.1 oldname\n10.1.1.1 db\n";
        assert_eq!(
            hosts_content(old, "dev"),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.1.1.1 db\n127.0.1.1\tdev\n"
        );
        assert_eq!(
            hosts_content("", "dev"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tdev\n"
        );
        assert_eq!(
            hosts_content("127.0.0.1 other # localhost\n", "x"),
            "127.0.0.1\tlocalhost\n127.0.0.1 other # localhost\n127.0.1.1\tx\n"
        );
    }

    #[test]
    fn a_symlink_is_replaced_by_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, "old").expect("write");
        let link = dir.path().join("resolv.conf");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        replace_file(&link, "nameserver 10.0.2.3\n").expect("replace");
        assert!(!std::fs::symlink_metadata(&link).expect("stat").is_symlink());
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "old");
        assert_eq!(
            std::fs::read_to_string(&link).expect("read"),
            "nameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn a_fork_rewrites_a_file_in_place_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hostname");
        std::fs::write(&file, "banger-warm-0123456789ab\n").expect("write");
        let inode =
            |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("stat"));
        let before = inode(&file);
        rewrite(&file, "run-1\n").expect("shorter");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "run-1\n");
        rewrite(&file, "a-much-longer-name-than-before\n").expect("longer");
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            "a-much-longer-name-than-before\n"
        );
        assert_eq!(inode(&file), before, "the same file, written in place");

        // A symlink is replaced, not followed; a missing file is made.
        let target = dir.path().join("target");
        std::fs::write(&target, "old").expect("write");
        let link = dir.path().join("hosts");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        rewrite(&link, "new\n").expect("replace");
        assert!(!std::fs::symlink_metadata(&link).expect("stat").is_symlink());
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "old");
        let missing = dir.path().join("missing");
        rewrite(&missing, "made\n").expect("make");
        assert_eq!(std::fs::read_to_string(&missing).expect("read"), "made\n");
    }
}
