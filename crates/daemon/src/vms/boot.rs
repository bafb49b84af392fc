//! What a guest boots with: the kernel from the image, banger's own initramfs (the agent
//! as `/init` plus the modules that kernel needs), and the kernel command line.
//!
//! Initramfs files are cached in `<state>/initramfs/<key>.cpio`, the key hashing the agent
//! binary, the kernel file, the modules tree's path and the channel: one build per kernel
//! and agent version, shared by every VM. The daemon hashes each file once while it stays
//! the same file (`FileIdentity`).

use std::io::Read;
use std::path::{Path, PathBuf};

use banger_api::image::Image;
use banger_guest_proto::{InitMode, Readiness, auth, cmdline};
use sha2::{Digest, Sha256};

use crate::error::OpError;

/// The guest agent binary (`$BANGER_AGENT`, or `banger-agent` next to `bangerd`), which
/// must be statically linked: an initramfs has no dynamic loader.
pub fn agent_binary() -> Result<PathBuf, OpError> {
    let exe = std::env::current_exe().ok();
    banger_kernel::agent::locate(exe.as_deref().and_then(Path::parent))
        .map_err(|e| OpError::Unavailable(e.to_string()))
}

/// The initramfs for `image`'s kernel with the given channel, built if not cached.
/// Fails (with the module named) when the kernel lacks a module the guest needs.
pub fn initramfs(
    cache_dir: &Path,
    image: &Image,
    vsock: bool,
    net: bool,
) -> Result<PathBuf, OpError> {
    let agent = agent_binary()?;
    let modules_dir = image.modules_dir.as_deref().map(Path::new);
    let kernel = Path::new(&image.kernel_path);
    let unchanged = format!(
        "initramfs {} {} {:?} {vsock} {net}",
        FileIdentity::of(&agent)?.key(),
        FileIdentity::of(kernel)?.key(),
        image.modules_dir
    );
    let name = remembered(unchanged, || {
        let mut key = Sha256::new();
        hash_file(&mut key, &agent)?;
        hash_file(&mut key, kernel)?;
        key.update(image.modules_dir.as_deref().unwrap_or("").as_bytes());
        key.update([u8::from(vsock), u8::from(net)]);
        Ok(key
            .finalize()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect())
    })?;
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| OpError::io(format!("creating {}", cache_dir.display()), e))?;
    let out = cache_dir.join(format!("{name}.cpio"));
    if out.is_file() {
        return Ok(out);
    }
    let wanted = banger_kernel::initramfs::guest_modules(vsock, net);
    banger_kernel::initramfs::build_guest_initramfs(&agent, modules_dir, &wanted, &out).map_err(
        |e| {
            OpError::BadRequest(format!(
                "image {}'s kernel cannot boot a banger VM: {e}",
                image.name
            ))
        },
    )?;
    Ok(out)
}

/// The modules disk of `image`'s kernel (every module, decompressed, and the agent as the
/// guest's `modprobe`; see `banger_kernel::modules_disk`), built if not cached; `None`
/// for a kernel without a modules tree (everything built in). Cached as
/// `<cache_dir>/<tree>-<agent>.modules.ext4`, hashes of the tree's path (trees are stored by
/// content digest, so the path names the content) and of the agent binary. Building one
/// removes the disks of the same tree made for other agents (about 100 MB each): running
/// VMs keep theirs open, and a restarted VM boots the current agent anyway.
pub fn modules_disk(cache_dir: &Path, image: &Image) -> Result<Option<PathBuf>, OpError> {
    let Some(modules_dir) = image.modules_dir.as_deref().map(Path::new) else {
        return Ok(None);
    };
    if !modules_dir.is_dir() {
        return Ok(None);
    }
    cached_modules_disk(cache_dir, modules_dir, &agent_binary()?)
        .map(Some)
        .map_err(|e| match e {
            OpError::Failed(why) => OpError::Failed(format!("image {}: {why}", image.name)),
            other => other,
        })
}

fn cached_modules_disk(
    cache_dir: &Path,
    modules_dir: &Path,
    agent: &Path,
) -> Result<PathBuf, OpError> {
    let short =
        |digest: &[u8]| -> String { digest.iter().take(8).map(|b| format!("{b:02x}")).collect() };
    let tree = short(&Sha256::digest(modules_dir.as_os_str().as_encoded_bytes()));
    let agent_digest = remembered(format!("agent {}", FileIdentity::of(agent)?.key()), || {
        let mut agent_hash = Sha256::new();
        hash_file(&mut agent_hash, agent)?;
        Ok(short(&agent_hash.finalize()))
    })?;
    let name = format!("{tree}-{agent_digest}.modules.ext4");
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| OpError::io(format!("creating {}", cache_dir.display()), e))?;
    let out = cache_dir.join(&name);
    if out.is_file() {
        return Ok(out);
    }
    banger_kernel::build_modules_disk(modules_dir, agent, &out)
        .map_err(|e| OpError::Failed(format!("building the kernel's modules disk: {e}")))?;
    if let Ok(entries) = std::fs::read_dir(cache_dir) {
        for e in entries.flatten() {
            let other = e.file_name().to_string_lossy().into_owned();
            if other != name
                && other.starts_with(&format!("{tree}-"))
                && other.ends_with(".modules.ext4")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(out)
}

/// The file in a VM's directory that keeps its boot's agent secret, for a restarted daemon
/// (mode 0600, in the 0700 state directory).
pub const AGENT_KEY: &str = "agent.key";
/// The VM's own initramfs: the shared one plus the boot's secret.
pub const VM_INITRAMFS: &str = "initramfs.cpio";

/// Draws this boot's agent secret and writes `<vm_dir>/initramfs.cpio`: the shared
/// `cached` initramfs followed by a second newc archive holding only the secret at
/// [`auth::SECRET_PATH`] (the kernel unpacks concatenated archives in order). The secret
/// is kept in `<vm_dir>/agent.key`, the one place every handshake (and a daemon that adopts
/// the VM later) reads it from.
pub fn agent_initramfs(cached: &Path, vm_dir: &Path) -> Result<PathBuf, OpError> {
    let mut secret = vec![0u8; auth::SECRET_LEN];
    crate::ids::secret_random(&mut secret)
        .map_err(|e| OpError::io("drawing the agent secret".to_string(), e))?;
    let out = vm_dir.join(VM_INITRAMFS);
    let io = |what: &str, e| OpError::io(format!("{what} {}", out.display()), e);
    let _ = std::fs::remove_file(&out);
    std::fs::copy(cached, &out).map_err(|e| io("writing", e))?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .map_err(|e| io("opening", e))?;
    // Only the VMM reads it (a jailed one gets a copy of its own, see banger-vmm's jail).
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("chmod", e))?;
    let dir = auth::SECRET_PATH
        .rsplit_once('/')
        .map(|(d, _)| d.trim_start_matches('/'))
        .unwrap_or("banger");
    let mut cpio = banger_kernel::cpio::Newc::new(&mut file);
    cpio.dir(dir, 0o700)
        .and_then(|()| cpio.file(auth::SECRET_PATH.trim_start_matches('/'), 0o400, &secret))
        .and_then(|()| cpio.finish().map(|_| ()))
        .map_err(|e| OpError::Failed(format!("writing {}: {e}", out.display())))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    write_private(&vm_dir.join(AGENT_KEY), &secret)?;
    Ok(out)
}

/// Replaces the agent secret kept for a VM (a fork's, once its agent took its own).
pub fn replace_agent_key(vm_dir: &Path, secret: &[u8]) -> Result<(), OpError> {
    write_private(&vm_dir.join(AGENT_KEY), secret)
}

/// The secret of the VM's current boot, as [`agent_initramfs`] kept it.
pub fn read_agent_key(vm_dir: &Path) -> Result<Vec<u8>, OpError> {
    let path = vm_dir.join(AGENT_KEY);
    std::fs::read(&path).map_err(|e| OpError::io(format!("reading {}", path.display()), e))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), OpError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .map_err(|e| OpError::io(format!("writing {}", path.display()), e))
}

/// What tells a file's content apart without reading it: the inode, the size and when
/// it last changed (the ctime moves on every write and cannot be set back).
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileIdentity {
    fn of(path: &Path) -> Result<FileIdentity, OpError> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path)
            .map_err(|e| OpError::io(format!("reading {}", path.display()), e))?;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Ok(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// The identity as text, for a [`remembered`] description.
    fn key(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.dev, self.ino, self.len, self.mtime_ns, self.ctime_ns
        )
    }
}

/// Cache keys already computed by this daemon, by what their files' identities were: the
/// agent (~4 MB) and a kernel (~15 MB, 50 MB for Firecracker's) are hashed once, not at
/// every VM start.
static REMEMBERED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, String>>,
> = std::sync::LazyLock::new(Default::default);

/// `compute()`, or what it gave last time for the same `unchanged` description.
fn remembered(
    unchanged: String,
    compute: impl FnOnce() -> Result<String, OpError>,
) -> Result<String, OpError> {
    let memo = || REMEMBERED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = memo().get(&unchanged) {
        return Ok(known.clone());
    }
    let value = compute()?;
    let mut memo = memo();
    // A handful of agents and kernels per daemon; bounded all the same.
    if memo.len() >= 256 {
        memo.clear();
    }
    memo.insert(unchanged, value.clone());
    Ok(value)
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<(), OpError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| OpError::io(format!("reading {}", path.display()), e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| OpError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// The guest kernel command line banger owns (the VMM driver appends its console and
/// timing flags).
///
/// - `rw`-less: the agent mounts everything itself; the kernel mounts no root.
/// - `panic=-1` (set by the driver) with the VMM's no-reboot turns a guest crash into a
///   VMM exit that the daemon sees.
/// - `banger.*`: read by the agent (see `banger_guest_proto::cmdline`).
/// - `extra`: the user's `--kernel-arg`s, last, so that theirs win (`loglevel=`).
pub fn kernel_cmdline(
    hostname: &str,
    channel_vsock: bool,
    init: InitMode,
    ready: Readiness,
    net: bool,
    modules: bool,
    extra: &[String],
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    [
        // No kernel log on the console beyond warnings: the serial port is slow under
        // emulation; `vm logs` still shows errors and the agent's own lines.
        "loglevel=4".to_string(),
        format!(
            "{}={}",
            cmdline::CHANNEL,
            if channel_vsock { "vsock" } else { "serial" }
        ),
        format!("{}={hostname}", cmdline::HOSTNAME),
        format!("{}={}", cmdline::INIT, init.as_str()),
        format!("{}={}", cmdline::READY, ready.as_str()),
        format!("{}={}", cmdline::NET, if net { "user" } else { "none" }),
        format!("{}={now}", cmdline::CLOCK),
    ]
    .into_iter()
    .chain(modules.then(|| format!("{}=1", cmdline::MODULES)))
    .chain(extra.iter().cloned())
    .collect::<Vec<_>>()
    .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_again_only_once_it_changed() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("agent");
        std::fs::write(&file, b"one").expect("write");
        let calls = std::cell::Cell::new(0);
        let digest = |file: &Path| {
            let unchanged = format!("test {}", FileIdentity::of(file).expect("stat").key());
            remembered(unchanged, || {
                calls.set(calls.get() + 1);
                Ok(std::fs::read_to_string(file).expect("read"))
            })
            .expect("remembered")
        };
        assert_eq!(digest(&file), "one");
        assert_eq!(digest(&file), "one");
        assert_eq!(calls.get(), 1, "the same file is not read again");
        // A new file in its place (as a rebuilt agent is): another inode, read again.
        let new = dir.path().join("agent.new");
        std::fs::write(&new, b"two").expect("write");
        std::fs::rename(&new, &file).expect("rename");
        assert_eq!(digest(&file), "two");
        // Written in place: the ctime moves, read again.
        std::fs::write(&file, b"three").expect("write");
        assert_eq!(digest(&file), "three");
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn the_vm_initramfs_appends_a_root_only_secret() {
        let dir = tempfile::tempdir().unwrap();
        let cached = dir.path().join("shared.cpio");
        let mut shared = banger_kernel::cpio::Newc::new(Vec::new());
        shared.file("init", 0o755, b"agent").unwrap();
        let (shared, _) = shared.finish().unwrap();
        std::fs::write(&cached, &shared).unwrap();
        let path = agent_initramfs(&cached, dir.path()).unwrap();
        let secret = read_agent_key(dir.path()).unwrap();
        assert_eq!(secret.len(), auth::SECRET_LEN);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            &bytes[..shared.len()],
            &shared[..],
            "the shared archive comes first"
        );
        let tail = &bytes[shared.len()..];
        let at = tail
            .windows(b"banger/agent.key".len())
            .position(|w| w == b"banger/agent.key")
            .expect("the secret's member");
        // newc header: magic(6) ino(8) mode(8) ...; the mode of the member before its name.
        let header = &tail[..at];
        let start = header.len() - 110;
        let mode = u32::from_str_radix(
            std::str::from_utf8(&header[start + 14..start + 22]).unwrap(),
            16,
        )
        .unwrap();
        assert_eq!(mode & 0o7777, 0o400);
        assert!(tail.windows(secret.len()).any(|w| w == &secret[..]));
        use std::os::unix::fs::PermissionsExt;
        let key_mode = std::fs::metadata(dir.path().join(AGENT_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        // A second boot draws another secret.
        agent_initramfs(&cached, dir.path()).unwrap();
        let again = read_agent_key(dir.path()).unwrap();
        assert_ne!(again, secret);
    }

    #[test]
    fn a_new_agent_replaces_the_trees_old_modules_disk() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("lib/modules/6.1.0-test");
        std::fs::create_dir_all(tree.join("kernel")).unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"\x7fELF one").unwrap();
        let cache = dir.path().join("cache");
        let first = cached_modules_disk(&cache, &tree, &agent).unwrap();
        let again = cached_modules_disk(&cache, &tree, &agent).unwrap();
        assert_eq!(again, first, "cached");
        std::fs::write(&agent, b"\x7fELF two").unwrap();
        let second = cached_modules_disk(&cache, &tree, &agent).unwrap();
        assert_ne!(first, second);
        assert!(second.is_file() && !first.exists(), "the old disk is gone");
        // Another kernel's disk stays.
        let other_tree = dir.path().join("lib/modules/6.1.0-other");
        std::fs::create_dir_all(&other_tree).unwrap();
        let other = cached_modules_disk(&cache, &other_tree, &agent).unwrap();
        assert!(other.is_file() && second.is_file());
    }

    #[test]
    fn cmdline_carries_the_agent_keys() {
        let c = kernel_cmdline(
            "dev",
            true,
            InitMode::Image,
            Readiness::Sysinit,
            false,
            false,
            &[],
        );
        assert!(c.contains("banger.ready=sysinit"), "{c}");
        assert!(c.contains("banger.channel=vsock"), "{c}");
        assert!(c.contains("banger.hostname=dev"), "{c}");
        assert!(c.contains("banger.init=image"), "{c}");
        assert!(c.contains("banger.net=none"), "{c}");
        assert!(c.contains("banger.clock="), "{c}");
        assert!(!c.contains("banger.modules"), "{c}");
        let c = kernel_cmdline(
            "x",
            false,
            InitMode::Auto,
            Readiness::None,
            true,
            true,
            &["loglevel=7".into()],
        );
        assert!(c.contains("banger.channel=serial") && c.contains("banger.net=user"));
        assert!(c.contains(" banger.modules=1 "), "{c}");
        assert!(
            c.ends_with(" loglevel=7"),
            "the user's arguments come last: {c}"
        );
    }

    #[test]
    fn kernel_args_are_single_words_and_not_banger_keys() {
        use crate::vms::spec::validate_kernel_args;
        assert!(validate_kernel_args(&["earlyprintk=ttyS0".into(), "quiet".into()]).is_ok());
        for bad in ["", "a b", "banger.init=agent", "init=/bin/sh", "x\n"] {
            let err = validate_kernel_args(&[bad.to_string()]).unwrap_err();
            assert!(err.to_string().contains("--kernel-arg"), "{bad}: {err}");
        }
    }
}
