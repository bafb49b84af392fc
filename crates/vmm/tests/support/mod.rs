//! Test context for real launches: the driver as detection finds it, VM configs over a
//! private run directory, tiny initramfs images (static busybox, kernel modules, a
//! hand-assembled vsock client) and a guard that stops every process a test launched.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use banger_testkit::qemu::Kernel;
use banger_vmm::{
    Accel, AccelChoice, ChannelKind, DetectOptions, Detection, NetConfig, ProcessRecord, Qemu,
    VmConfig,
};

/// How long a guest may take to do its part (TCG on a loaded 2-core host).
pub const GUEST_DEADLINE: Duration = Duration::from_secs(180);

/// Detection without the KVM probe (the launch tests always use software emulation).
pub fn detection() -> &'static Detection {
    static D: OnceLock<Detection> = OnceLock::new();
    D.get_or_init(|| {
        banger_vmm::detect(&DetectOptions {
            accel: AccelChoice::Tcg,
            ..DetectOptions::default()
        })
    })
}

/// The QEMU driver with the vsock helper; panics naming what to install.
pub fn qemu() -> Qemu {
    let d = detection();
    let qemu = d
        .qemu
        .clone()
        .unwrap_or_else(|| panic!("qemu-system-x86_64 not found: apt-get install qemu-system-x86"));
    let helper = d.vsock_backend.clone().unwrap_or_else(|| {
        panic!(
            "vhost-device-vsock not found ({}): cargo install --locked vhost-device-vsock",
            d.channel_reason
        )
    });
    Qemu::new(qemu, Some(helper))
}

/// TCG with the host's TSC rate, as detection gives it.
pub fn accel() -> Accel {
    let a = detection().accel;
    assert!(matches!(a, Accel::Tcg { tsc_khz: Some(_) }), "{a:?}");
    a
}

/// A private run directory (short path: socket names must fit `sockaddr_un`).
pub fn run_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bvmm-")
        .tempdir_in("/tmp")
        .expect("run dir")
}

/// A VM of Debian's cloud kernel, 1 vCPU, 256 MiB, no disks, no network.
pub fn config(
    run: &Path,
    channel: ChannelKind,
    initrd: Option<PathBuf>,
    cmdline: &str,
) -> VmConfig {
    VmConfig {
        name: "test".into(),
        run_dir: run.to_path_buf(),
        cpus: 1,
        memory_mib: 256,
        kernel: Kernel::get().vmlinuz.clone(),
        initrd,
        cmdline: cmdline.into(),
        disks: vec![],
        channel,
        net: NetConfig::None,
        accel: accel(),
        restore: None,
        shared_memory: false,
    }
}

/// SIGKILLs every recorded process still alive when dropped (a failing test leaks none).
pub struct Reap(pub Vec<ProcessRecord>);

impl Drop for Reap {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = p.signal(libc::SIGKILL);
        }
    }
}

/// Pids of live processes whose command line mentions `dir`.
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes().to_vec();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'));
            !zombie
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_slice()))
        })
        .collect()
}

/// The console log so far (CRs stripped).
pub fn console(run: &Path) -> String {
    std::fs::read_to_string(run.join("console.log"))
        .unwrap_or_default()
        .replace('\r', "")
}

/// Polls `cond` until it holds or [`GUEST_DEADLINE`] passes (then panics with `what` and
/// the console tail).
pub async fn until(run: &Path, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUEST_DEADLINE;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; console tail:\n{}",
                banger_testkit::tools::tail(&console(run), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A static x86-64 Linux program that connects to vsock CID 2 port 1025, sends
/// `BANGER-VSOCK-HELLO\n`, copies one read of the reply to stdout and exits 0 (1 on any
/// failure). Assembled by hand; loaded at 0x400000, code at file offset 0x78.
pub fn vsock_client() -> Vec<u8> {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xb8, 0x29, 0x00, 0x00, 0x00,       // mov eax, 41 (socket)
        0xbf, 0x28, 0x00, 0x00, 0x00,       // mov edi, 40 (AF_VSOCK)
        0xbe, 0x01, 0x00, 0x00, 0x00,       // mov esi, 1 (SOCK_STREAM)
        0x31, 0xd2,                         // xor edx, edx
        0x0f, 0x05,                         // syscall
        0x85, 0xc0,                         // test eax, eax
        0x78, 0x6b,                         // js fail
        0x41, 0x89, 0xc4,                   // mov r12d, eax
        0xb8, 0x2a, 0x00, 0x00, 0x00,       // mov eax, 42 (connect)
        0x44, 0x89, 0xe7,                   // mov edi, r12d
        0x48, 0x8d, 0x35, 0x65, 0x00, 0x00, 0x00, // lea rsi, [rip+addr]
        0xba, 0x10, 0x00, 0x00, 0x00,       // mov edx, 16
        0x0f, 0x05,                         // syscall
        0x85, 0xc0,                         // test eax, eax
        0x75, 0x4e,                         // jnz fail
        0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1 (write)
        0x44, 0x89, 0xe7,                   // mov edi, r12d
        0x48, 0x8d, 0x35, 0x5b, 0x00, 0x00, 0x00, // lea rsi, [rip+msg]
        0xba, 0x13, 0x00, 0x00, 0x00,       // mov edx, 19
        0x0f, 0x05,                         // syscall
        0x3d, 0x13, 0x00, 0x00, 0x00,       // cmp eax, 19
        0x75, 0x31,                         // jne fail
        0x48, 0x83, 0xec, 0x40,             // sub rsp, 64
        0x31, 0xc0,                         // xor eax, eax (read)
        0x44, 0x89, 0xe7,                   // mov edi, r12d
        0x48, 0x89, 0xe6,                   // mov rsi, rsp
        0xba, 0x40, 0x00, 0x00, 0x00,       // mov edx, 64
        0x0f, 0x05,                         // syscall
        0x85, 0xc0,                         // test eax, eax
        0x7e, 0x1a,                         // jle fail
        0x89, 0xc2,                         // mov edx, eax
        0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1 (write)
        0xbf, 0x01, 0x00, 0x00, 0x00,       // mov edi, 1
        0x48, 0x89, 0xe6,                   // mov rsi, rsp
        0x0f, 0x05,                         // syscall
        0xb8, 0x3c, 0x00, 0x00, 0x00,       // mov eax, 60 (exit)
        0x31, 0xff,                         // xor edi, edi
        0x0f, 0x05,                         // syscall
        // fail:
        0xb8, 0x3c, 0x00, 0x00, 0x00,       // mov eax, 60 (exit)
        0xbf, 0x01, 0x00, 0x00, 0x00,       // mov edi, 1
        0x0f, 0x05,                         // syscall
        // addr: sockaddr_vm { family 40, reserved, port 1025, cid 2, flags, zero }
        0x28, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // msg:
        b'B', b'A', b'N', b'G', b'E', b'R', b'-', b'V', b'S', b'O', b'C', b'K', b'-',
        b'H', b'E', b'L', b'L', b'O', b'\n',
    ];
    const BASE: u64 = 0x40_0000;
    const HDR: u64 = 64 + 56;
    let total = HDR + CODE.len() as u64;
    let mut b = Vec::new();
    b.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(BASE + HDR).to_le_bytes()); // entry
    b.extend_from_slice(&64u64.to_le_bytes()); // phoff
    b.extend_from_slice(&0u64.to_le_bytes()); // shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b.extend_from_slice(&5u32.to_le_bytes()); // R+X
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    b.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    b.extend_from_slice(&BASE.to_le_bytes()); // paddr
    b.extend_from_slice(&total.to_le_bytes()); // filesz
    b.extend_from_slice(&total.to_le_bytes()); // memsz
    b.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    b.extend_from_slice(CODE);
    b
}

/// Writes an initramfs at `path`: static busybox as `/bin/busybox`, the kernel modules
/// for `modules` (dependencies resolved, load order), `files`, and `/init` running
/// `script` after mounting /proc, /sys, /dev and loading the modules.
pub fn initramfs(path: &Path, modules: &[&str], script: &str, files: &[(&str, Vec<u8>)]) {
    let mods = Kernel::get().modules_for(modules);
    let busybox = std::fs::read(banger_testkit::tools::require("busybox")).expect("busybox");
    let mut c = Newc::default();
    for d in ["bin", "lib", "lib/modules", "proc", "sys", "dev"] {
        c.entry(d, 0o040755, &[]);
    }
    c.entry("bin/busybox", 0o100755, &busybox);
    let mut init = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n",
    );
    for (name, bytes) in &mods {
        c.entry(&format!("lib/modules/{name}.ko"), 0o100644, bytes);
        init.push_str(&format!(
            "insmod /lib/modules/{name}.ko || echo BANGER-INSMOD-FAILED {name}\n"
        ));
    }
    init.push_str(script);
    c.entry("init", 0o100755, init.as_bytes());
    for (name, bytes) in files {
        c.entry(name, 0o100755, bytes);
    }
    std::fs::write(path, c.finish()).expect("write initramfs");
}

/// A `newc` cpio writer (the initramfs format).
#[derive(Default)]
struct Newc {
    out: Vec<u8>,
    ino: u32,
}

impl Newc {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(data.len()).expect("small member"),
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).expect("short name"),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}
