//! Facts about the host the drivers and detection need: where programs are, the TSC
//! frequency, the boot id, QEMU's version. A leaf module: it knows nothing of VMs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The first executable `name` on `$PATH`, then in `extra` directories.
pub(crate) fn find_program(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A regular file with an execute bit.
pub(crate) fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `~/.cargo/bin`, where `cargo install vhost-device-vsock` puts the helper.
pub(crate) fn cargo_bin() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// `/proc/sys/kernel/random/boot_id`: changes on every host boot.
pub(crate) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// `7.2.22` from `qemu-system-x86_64 --version` (first line, `QEMU emulator version X`).
pub(crate) fn qemu_version(qemu: &Path) -> Option<String> {
    let out = Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_qemu_version(&String::from_utf8_lossy(&out.stdout))
}

/// `1.16.1` from `firecracker --version` (first line, `Firecracker v1.16.1`).
pub(crate) fn firecracker_version(program: &Path) -> Option<String> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_firecracker_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_firecracker_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("Firecracker v"))?;
    let v = line
        .strip_prefix("Firecracker v")?
        .split_whitespace()
        .next()?;
    Some(v.to_string())
}

fn parse_qemu_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let rest = line.split("version").nth(1)?.trim();
    let v = rest.split_whitespace().next()?;
    Some(v.to_string())
}

/// The host's TSC frequency in kHz: the guest's TSC runs at the host's rate under TCG, and
/// telling the guest kernel (`tsc_early_khz=`) spares it a calibration that can hang.
/// Measured against `CLOCK_MONOTONIC_RAW` over ~20 ms (exact whatever the CPU's current
/// clock speed); `/proc/cpuinfo`'s `cpu MHz` when no TSC can be read.
pub(crate) fn tsc_khz() -> Option<u64> {
    measure_tsc_khz().or_else(cpuinfo_khz)
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    if !std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| has_constant_tsc(&c)) {
        return None;
    }
    let sample = || {
        let t = monotonic_raw_ns()?;
        // SAFETY: rdtsc reads a counter; it has no memory effects and every x86_64 CPU has it.
        let c = unsafe { core::arch::x86_64::_rdtsc() };
        Some((t, c))
    };
    let (t0, c0) = sample()?;
    std::thread::sleep(Duration::from_millis(20));
    let (t1, c1) = sample()?;
    let ns = t1.checked_sub(t0).filter(|ns| *ns > 0)?;
    let cycles = c1.checked_sub(c0)?;
    let khz = (u128::from(cycles) * 1_000_000 + u128::from(ns) / 2) / u128::from(ns);
    u64::try_from(khz).ok().filter(|k| *k > 0)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
}

/// Without an invariant TSC its rate follows the CPU clock, and no single number is right.
fn has_constant_tsc(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "constant_tsc"))
}

fn monotonic_raw_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
    if r != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn cpuinfo_khz() -> Option<u64> {
    parse_cpu_mhz(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// The first `cpu MHz : 2596.122` line, in kHz (rounded).
fn parse_cpu_mhz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    if !mhz.is_finite() || mhz <= 0.0 || mhz > 1.0e6 {
        return None;
    }
    // Positive and below 1e9 kHz by the check above: the cast is exact after rounding.
    Some((mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_mhz() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            )
            .as_deref(),
            Some("7.2.22")
        );
        assert_eq!(parse_qemu_version(""), None);
        assert_eq!(
            parse_firecracker_version("Firecracker v1.16.1\n\n2026-12-01T10:22 [main] exiting\n")
                .as_deref(),
            Some("1.16.1")
        );
        assert_eq!(parse_firecracker_version("garbage"), None);
        assert_eq!(
            parse_cpu_mhz("processor\t: 0\ncpu MHz\t\t: 2596.122\n"),
            Some(2_596_122)
        );
        assert_eq!(parse_cpu_mhz("cpu MHz : nan\n"), None);
    }

    #[test]
    fn the_measured_tsc_agrees_with_cpuinfo_on_this_host() {
        let measured = tsc_khz().expect("a TSC frequency on an x86_64 test host");
        if let Some(reported) = cpuinfo_khz() {
            // cpuinfo shows the current clock, which may differ from the TSC's under
            // frequency scaling; on the hosts we test, it is within a few percent.
            let ratio = measured as f64 / reported as f64;
            assert!((0.5..2.0).contains(&ratio), "{measured} vs {reported} kHz");
        }
    }
}
