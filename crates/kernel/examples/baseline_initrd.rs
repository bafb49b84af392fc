//! The hand-scripted baseline of `scripts/bench-vm.sh`: a minimal busybox initramfs that
//! loads the block-device modules, mounts `/dev/vda` and hands over to the image's own
//! init (what a user booting a copied rootfs with QEMU would put together). When a virtio
//! NIC is attached it is configured for QEMU's user network (10.0.2.15/24 via 10.0.2.2), so
//! the image's sshd is reachable through a host forward.
//!
//! Usage: baseline_initrd BUSYBOX MODULES_DIR INIT OUT

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [busybox, modules, init, out] = args.as_slice() else {
        return Err("usage: baseline_initrd BUSYBOX MODULES_DIR INIT OUT".into());
    };
    let mods = banger_kernel::resolve_modules(
        Some(Path::new(modules)),
        &["virtio_mmio", "virtio_blk", "ext4", "virtio_net"],
    )?;
    let mut script = String::from(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for m in &mods {
        script.push_str(&format!("insmod /lib/modules/{}.ko\n", m.name));
    }
    script.push_str(
        // The NIC appears asynchronously after its module loads: wait for it (briefly).
        "n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done\n\
         if ip link set eth0 up 2>/dev/null; then ip addr add 10.0.2.15/24 dev eth0; \
         ip route add default via 10.0.2.2; fi\nip link set lo up\n",
    );
    script.push_str(&format!(
        "while [ ! -b /dev/vda ]; do sleep 0.05; done\nmount -t ext4 -o rw /dev/vda /mnt\n\
         umount /proc /sys\nmount --move /dev /mnt/dev\nexec switch_root /mnt {init}\n"
    ));
    let file = std::fs::File::create(out)?;
    let mut cpio = banger_kernel::cpio::Newc::new(std::io::BufWriter::new(file));
    for d in ["bin", "lib", "lib/modules", "proc", "sys", "dev", "mnt"] {
        cpio.dir(d, 0o755)?;
    }
    cpio.file("bin/busybox", 0o755, &std::fs::read(busybox)?)?;
    for m in &mods {
        cpio.file(&format!("lib/modules/{}.ko", m.name), 0o644, &m.bytes)?;
    }
    cpio.file("init", 0o755, script.as_bytes())?;
    cpio.finish()?;
    Ok(())
}
