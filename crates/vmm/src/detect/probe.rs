//! The KVM probe: a tiny guest that proves KVM runs guest code at hardware speed.
//!
//! `/dev/kvm` opening is no proof. On hosts whose KVM is PVM-backed (no VMX/SVM), QEMU
//! opens it, and a real-mode guest even runs; kernels hang. Measured on such a host:
//! - a real-mode `out` to `isa-debug-exit` passes under `-cpu qemu64` (~100 ms),
//! - `-cpu host` (what the driver uses) aborts at once (`failed to set MSR 0x10a`),
//! - long mode works, but a 16 Mi-iteration loop takes ~21 s (TCG: ~40 ms; KVM on
//!   hardware: a few ms); a kernel had not reached init after 500 s.
//!
//! So the probe runs with the driver's exact machine and CPU (`-M microvm -accel kvm -cpu
//! host`) a 64 KiB firmware image that enters long mode, computes a value only 64-bit code
//! gets, runs that loop, and writes the value to `isa-debug-exit`: QEMU exits with
//! [`PROBE_EXIT`]. Anything else within the deadline (another code, a signal, a timeout)
//! is a failure.
//!
//! # Invariants
//! - The probe never outlives its caller: it dies with the calling thread
//!   (`PR_SET_PDEATHSIG`) and is killed and reaped at the deadline.
//! - The image file is removed after each probe.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::Pidfd;

/// `isa-debug-exit` makes QEMU exit with `(value << 1) | 1`; the probe writes `0x31`.
pub(crate) const PROBE_EXIT: i32 = (0x31 << 1) | 1;

/// The probe's code, loaded at the image's start, which the firmware alias maps at
/// linear 0xF0000 (real-mode CS 0xF000, IP 0). Offsets in the comments are image offsets;
/// `GDT` is at 0x90 and its descriptor (`GDTR`) at 0xA0.
#[rustfmt::skip]
const CODE: &[u8] = &[
    // 16-bit real mode.
    0xfa,                                     // 00 cli
    0x31, 0xc0,                               // 01 xor ax, ax
    0x8e, 0xd8,                               // 03 mov ds, ax
    0x8e, 0xc0,                               // 05 mov es, ax
    0xfc,                                     // 07 cld
    0xbf, 0x00, 0x10,                         // 08 mov di, 0x1000
    0xb9, 0x00, 0x0c,                         // 0b mov cx, 0xc00
    0x66, 0x31, 0xc0,                         // 0e xor eax, eax
    0x66, 0xf3, 0xab,                         // 11 rep stosd      ; zero 0x1000..0x4000
    0x66, 0xc7, 0x06, 0x00, 0x10, 0x03, 0x20, 0x00, 0x00, // 14 PML4[0] = 0x2003
    0x66, 0xc7, 0x06, 0x00, 0x20, 0x03, 0x30, 0x00, 0x00, // 1d PDPT[0] = 0x3003
    0x66, 0xc7, 0x06, 0x00, 0x30, 0x83, 0x00, 0x00, 0x00, // 26 PD[0] = 0x83 (2 MiB, identity)
    0x2e, 0x0f, 0x01, 0x16, 0xa0, 0x00,       // 2f lgdt cs:[0xa0]
    0x0f, 0x20, 0xe0,                         // 35 mov eax, cr4
    0x66, 0x83, 0xc8, 0x20,                   // 38 or eax, 0x20   ; PAE
    0x0f, 0x22, 0xe0,                         // 3c mov cr4, eax
    0x66, 0xb8, 0x00, 0x10, 0x00, 0x00,       // 3f mov eax, 0x1000
    0x0f, 0x22, 0xd8,                         // 45 mov cr3, eax
    0x66, 0xb9, 0x80, 0x00, 0x00, 0xc0,       // 48 mov ecx, 0xc0000080 ; EFER
    0x0f, 0x32,                               // 4e rdmsr
    0x66, 0x0d, 0x00, 0x01, 0x00, 0x00,       // 50 or eax, 0x100  ; LME
    0x0f, 0x30,                               // 56 wrmsr
    0x0f, 0x20, 0xc0,                         // 58 mov eax, cr0
    0x66, 0x0d, 0x01, 0x00, 0x00, 0x80,       // 5b or eax, 0x80000001 ; PG | PE
    0x0f, 0x22, 0xc0,                         // 61 mov cr0, eax
    0x66, 0xea, 0x6c, 0x00, 0x0f, 0x00, 0x08, 0x00, // 64 jmp far 0x08:0xf006c
    // 64-bit long mode.
    0xb9, 0x00, 0x00, 0x00, 0x01,             // 6c mov ecx, 0x1000000
    0xff, 0xc9,                               // 71 dec ecx
    0x75, 0xfc,                               // 73 jnz 0x71
    0x48, 0xb8, 0xf0, 0xde, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12, // 75 movabs rax, 0x123456789abcdef0
    0x48, 0xc1, 0xe8, 0x3c,                   // 7f shr rax, 60    ; 1, only in 64-bit mode
    0x04, 0x30,                               // 83 add al, 0x30
    0xe6, 0xf4,                               // 85 out 0xf4, al   ; isa-debug-exit
    0xf4,                                     // 87 hlt
    0xeb, 0xfd,                               // 88 jmp 0x87
    0, 0, 0, 0, 0, 0,                         // 8a padding
    // 90 GDT: null, then a 64-bit code segment (L=1, P, DPL 0, execute/read).
    0, 0, 0, 0, 0, 0, 0, 0,
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00,
    // a0 GDTR: limit 15, base 0xf0090.
    0x0f, 0x00, 0x90, 0x00, 0x0f, 0x00,
];

/// At the reset vector (0xFFFF0, image offset 0xFFF0): `jmp far 0xf000:0x0000`.
const RESET: &[u8] = &[0xea, 0x00, 0x00, 0x00, 0xf0];

/// The 64 KiB firmware image (QEMU wants a multiple of 64 KiB).
pub(crate) fn image() -> Vec<u8> {
    let mut img = vec![0u8; 0x10000];
    img[..CODE.len()].copy_from_slice(CODE);
    img[0xfff0..0xfff0 + RESET.len()].copy_from_slice(RESET);
    img
}

/// Runs the probe under KVM with the driver's CPU model; `Ok(elapsed)` when it passed,
/// else a short description of what happened.
pub(crate) fn run(qemu: &Path, timeout: Duration) -> Result<Duration, String> {
    run_with(qemu, "kvm", "host", timeout)
}

/// The probe under any accelerator and CPU model (the tests run it under TCG, and under
/// KVM with a CPU model that boots in real mode on PVM).
pub(crate) fn run_with(
    qemu: &Path,
    accel: &str,
    cpu: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let file = ImageFile::create().map_err(|e| format!("cannot write the probe image: {e}"))?;
    let mut cmd = Command::new(qemu);
    cmd.args(["-M", "microvm", "-accel", accel, "-cpu", cpu])
        .args(["-smp", "1", "-m", "16"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-bios")
        .arg(&file.0)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec; prctl(PR_SET_PDEATHSIG) is
    // async-signal-safe and only changes the calling process's own attributes.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let finished = Pidfd::open(child.id())
        .and_then(|fd| fd.wait_readable(timeout))
        .unwrap_or(false);
    let elapsed = started.elapsed();
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    if !finished {
        return Err(format!("timed out after {}", human(timeout)));
    }
    match status {
        Ok(s) if s.code() == Some(PROBE_EXIT) => Ok(elapsed),
        Ok(s) => {
            let how = match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => format!("QEMU exited with code {c}"),
                (None, Some(sig)) => format!("QEMU died of signal {sig}"),
                (None, None) => format!("QEMU ended: {s}"),
            };
            Err(format!("{how}{}", qemu_message(&stderr)))
        }
        Err(e) => Err(format!("waiting for QEMU: {e}")),
    }
}

/// `3 s`, `500 ms`.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `: <QEMU's error>`: its first `error` line, else its last line, without the program
/// prefix; nothing when it said nothing.
fn qemu_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let Some(line) = lines.iter().find(|l| l.contains("error")).or(lines.last()) else {
        return String::new();
    };
    let msg = line.strip_prefix("qemu-system-x86_64: ").unwrap_or(line);
    format!(": {msg}")
}

/// The image in a private temporary file, removed on drop.
struct ImageFile(PathBuf);

impl ImageFile {
    fn create() -> std::io::Result<ImageFile> {
        use std::io::Write;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "banger-kvm-probe-{}-{nanos}.bin",
            std::process::id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let file = ImageFile(path);
        f.write_all(&image())?;
        Ok(file)
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> PathBuf {
        banger_testkit::tools::require("qemu-system-x86_64")
    }

    #[test]
    fn image_layout() {
        let img = image();
        assert_eq!(img.len(), 0x10000);
        // The far jump's target is the long-mode code; lgdt reads the GDTR at 0xa0,
        // which points at the GDT at 0x90 (through the 0xf0000 alias).
        assert_eq!(&img[0x66..0x6a], &0xf006cu32.to_le_bytes());
        assert_eq!(&img[0x33..0x35], &0xa0u16.to_le_bytes());
        assert_eq!(&img[0xa2..0xa6], &0xf0090u32.to_le_bytes());
        assert_eq!(img[0x9d], 0x9a, "code segment access byte");
        assert_eq!(&img[0xfff0..0xfff5], RESET);
    }

    #[test]
    fn the_probe_passes_under_software_emulation() {
        let t = run_with(&qemu(), "tcg", "max", Duration::from_secs(30))
            .expect("the probe image runs to its exit under TCG");
        assert!(t < Duration::from_secs(30));
    }

    /// The probe agrees with the CPU: with VMX/SVM it passes; without (a PVM-backed
    /// /dev/kvm, as on this project's machines) it fails, even with a CPU model under
    /// which a real-mode probe would pass.
    #[test]
    fn kvm_passes_the_probe_only_with_hardware_virtualization() {
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_err()
        {
            return; // nothing to probe; detection reports it separately
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let hardware = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        let host = run(&qemu(), Duration::from_secs(3));
        eprintln!("hardware virtualization: {hardware}; probe under -cpu host: {host:?}");
        if hardware {
            host.expect("KVM with VMX/SVM runs the probe");
        } else {
            let qemu64 = run_with(&qemu(), "kvm", "qemu64", Duration::from_secs(3));
            eprintln!("probe under -cpu qemu64: {qemu64:?}");
            assert!(
                host.is_err() && qemu64.is_err(),
                "KVM without VMX/SVM passed the probe: host={host:?} qemu64={qemu64:?}"
            );
        }
    }

    #[test]
    fn failures_are_described() {
        assert_eq!(
            qemu_message("qemu-system-x86_64: warning: x\n\nqemu-system-x86_64: error: y\nabort\n"),
            ": error: y"
        );
        assert_eq!(qemu_message("warning: x\nlast\n"), ": last");
        assert_eq!(qemu_message(""), "");
        assert_eq!(human(Duration::from_secs(3)), "3 s");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
    }
}
