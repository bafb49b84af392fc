//! What a guest boots with: the kernel from the image, banger's own initramfs (the agent
//! as `/init` plus the modules that kernel needs), and the kernel command line.
//!
//! Initramfs files are cached in `<state>/initramfs/<key>.cpio`, the key hashing the agent
//! binary, the kernel file, the modules tree's path and the channel: one build per kernel
//! and agent version, shared by every VM.

use std::io::Read;
use std::path::{Path, PathBuf};

use banger_api::image::Image;
use banger_guest_proto::{InitMode, cmdline};
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
    let mut key = Sha256::new();
    hash_file(&mut key, &agent)?;
    hash_file(&mut key, Path::new(&image.kernel_path))?;
    key.update(image.modules_dir.as_deref().unwrap_or("").as_bytes());
    key.update([u8::from(vsock), u8::from(net)]);
    let digest = key.finalize();
    let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
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
    net: bool,
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
        format!("{}={}", cmdline::NET, if net { "user" } else { "none" }),
        format!("{}={now}", cmdline::CLOCK),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .collect::<Vec<_>>()
    .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_carries_the_agent_keys() {
        let c = kernel_cmdline("dev", true, InitMode::Image, false, &[]);
        assert!(c.contains("banger.channel=vsock"), "{c}");
        assert!(c.contains("banger.hostname=dev"), "{c}");
        assert!(c.contains("banger.init=image"), "{c}");
        assert!(c.contains("banger.net=none"), "{c}");
        assert!(c.contains("banger.clock="), "{c}");
        let c = kernel_cmdline("x", false, InitMode::Auto, true, &["loglevel=7".into()]);
        assert!(c.contains("banger.channel=serial") && c.contains("banger.net=user"));
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
