//! Boots a real Debian kernel under QEMU (`microvm`, TCG) against a disk image and
//! runs a check inside the guest.
//!
//! The kernel is Debian's `linux-image-*-cloud-amd64`, downloaded once into the test
//! cache ([`crate::tools::cache_dir`]). Its virtio drivers are modules, so every boot
//! uses a small initramfs built here: static busybox, the needed `.ko` files
//! (dependency-resolved and decompressed by `banger_kernel`, packed with its `newc`
//! writer) and a generated `/init` that mounts `/dev/vda` at `/mnt` and then either runs
//! the caller's script or `switch_root`s into the image.
//!
//! The guest reports through the serial console: the line `BANGER-GUEST-EXIT=<n>`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use banger_kernel::cpio::Newc;

use crate::tools;

/// The console line prefix the guest uses to report its exit code.
pub const EXIT_SENTINEL: &str = "BANGER-GUEST-EXIT=";
/// Printed by the initramfs when unmounting `/dev/vda` failed (the run then panics).
const UMOUNT_FAILED: &str = "BANGER-UMOUNT-FAILED";
/// Printed by the initramfs for its own failures (missing disk, insmod, mount).
const INIT_ERROR: &str = "BANGER-INIT-ERROR:";
/// The Debian metapackage whose dependency names the concrete kernel package.
const KERNEL_META: &str = "linux-image-cloud-amd64";
/// Modules the initramfs must provide unless built in: virtio-mmio transport, block
/// device, ext4.
const NEEDED_MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "ext4"];

/// An extracted Debian kernel package in the test cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` inside the extracted package.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// The cached kernel, downloading and extracting it on first use (per process
    /// memoized; across processes serialized by a lock file).
    pub fn get() -> &'static Kernel {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        KERNEL.get_or_init(fetch_kernel)
    }

    /// The package's `.deb` itself (for tests that import it), downloaded once into the
    /// test cache under a lock; the extraction above keeps only the unpacked tree.
    pub fn deb(&self) -> PathBuf {
        let package = format!("linux-image-{}", self.release);
        let dir = tools::cache_dir().join("kernel-deb");
        std::fs::create_dir_all(&dir).expect("mkdir kernel-deb cache");
        let lock = File::create(dir.join(".lock")).expect("lock file");
        lock.lock().expect("lock kernel-deb cache");
        let find = || {
            std::fs::read_dir(&dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.extension().is_some_and(|x| x == "deb")
                        && p.file_name().is_some_and(|n| {
                            n.to_string_lossy().starts_with(&format!("{package}_"))
                        })
                })
        };
        if let Some(deb) = find() {
            return deb;
        }
        let tmp = tempfile::tempdir_in(&dir).expect("tmp");
        tools::run(
            tools::command("apt-get")
                .current_dir(tmp.path())
                .args(["download", "-q", &package]),
        );
        for entry in std::fs::read_dir(tmp.path()).expect("ls").flatten() {
            std::fs::rename(entry.path(), dir.join(entry.file_name())).expect("publish deb");
        }
        find().unwrap_or_else(|| panic!("apt-get download {package} produced no .deb"))
    }

    /// Module files (in load order, decompressed bytes) for `names` and their
    /// dependencies, skipping those built into the kernel (resolved by
    /// [`banger_kernel::modules`]). Panics if one is missing.
    pub fn modules_for(&self, names: &[&str]) -> Vec<(String, Vec<u8>)> {
        banger_kernel::resolve_modules(Some(&self.modules_dir), names)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|m| (m.name, m.bytes))
            .collect()
    }
}

fn fetch_kernel() -> Kernel {
    let root = tools::cache_dir().join("kernel");
    std::fs::create_dir_all(&root).expect("create kernel cache dir");
    let package = resolve_kernel_package(&root);
    let dest = root.join(&package);

    // Serialize concurrent test processes; the loser finds the finished dir.
    let lock = File::create(root.join(".lock")).expect("create kernel cache lock");
    lock.lock().expect("lock kernel cache");
    if !dest.join(".complete").exists() {
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&root)
            .expect("kernel download tempdir");
        tools::run(
            tools::command("apt-get")
                .current_dir(tmp.path())
                .args(["download", "-q", &package]),
        );
        let deb = std::fs::read_dir(tmp.path())
            .expect("list download dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .unwrap_or_else(|| panic!("apt-get download {package} produced no .deb"));
        let tree = tmp.path().join("tree");
        tools::run(tools::command("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
        std::fs::remove_file(&deb).expect("remove .deb");
        File::create(tree.join(".complete")).expect("mark kernel complete");
        if dest.exists() {
            // A half-written leftover from an older layout: replace it.
            std::fs::remove_dir_all(&dest).expect("remove stale kernel dir");
        }
        // Atomic publish: a killed run leaves only a `.download-*` dir, never `dest`.
        std::fs::rename(&tree, &dest).expect("publish kernel dir");
    }
    drop(lock);

    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    let vmlinuz = dest.join("boot").join(format!("vmlinuz-{release}"));
    let modules_dir = dest.join("lib/modules").join(&release);
    assert!(
        vmlinuz.is_file() && modules_dir.is_dir(),
        "kernel cache {} lacks {} or {}",
        dest.display(),
        vmlinuz.display(),
        modules_dir.display()
    );
    Kernel {
        release,
        vmlinuz,
        modules_dir,
    }
}

/// `linux-image-<ver>-cloud-amd64`, from `apt-cache depends linux-image-cloud-amd64`
/// (running `apt-get update` once if the package lists are empty). Without a usable
/// apt, falls back to the newest kernel already in the cache, so cached runs work
/// offline.
fn resolve_kernel_package(cache: &Path) -> String {
    fn lookup() -> Option<String> {
        let out = Command::new(tools::find("apt-cache")?)
            .args(["depends", KERNEL_META])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends:")?.trim();
            (dep.starts_with("linux-image-") && dep.ends_with("-cloud-amd64"))
                .then(|| dep.to_string())
        })
    }
    if let Some(p) = lookup() {
        return p;
    }
    let update = tools::find("apt-get").map(|apt| {
        Command::new(apt)
            .args(["update", "-q"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    });
    if let Some(p) = lookup() {
        return p;
    }
    let mut cached: Vec<String> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().join(".complete").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    cached.sort();
    cached.pop().unwrap_or_else(|| {
        panic!(
            "`apt-cache depends {KERNEL_META}` names no linux-image-*-cloud-amd64 package \
             and no kernel is cached in {}; apt-get update: {update:?}",
            cache.display()
        )
    })
}

/// What the initramfs does once `/dev/vda` is mounted at `/mnt`.
#[derive(Debug, Clone)]
enum Mode {
    /// Run a busybox `sh` script with `ROOT=/mnt`, cwd `/mnt`; report its exit code.
    Script(String),
    /// `switch_root /mnt <init>`: the image's own program runs as PID 1 and must print
    /// the sentinel itself, then power off (or exit: the kernel then panics and QEMU
    /// stops because of `-no-reboot`/`panic=-1`).
    SwitchRoot(String),
}

/// Builder for one guest boot.
#[derive(Debug, Clone)]
pub struct GuestRun {
    image: PathBuf,
    extra_disks: Vec<(PathBuf, bool)>,
    mode: Mode,
    mount_options: String,
    append: Vec<String>,
    memory_mib: u32,
    timeout: Duration,
}

/// Outcome of a boot that reached the sentinel.
#[derive(Debug, Clone)]
pub struct GuestResult {
    /// Exit code reported by the guest via `BANGER-GUEST-EXIT=<n>`.
    pub exit_code: i32,
    /// The whole serial console output (CRs stripped).
    pub console: String,
    /// Wall time from QEMU spawn to exit.
    pub elapsed: Duration,
}

impl GuestResult {
    /// Panics with the console tail unless the guest reported exit code 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.exit_code,
            0,
            "guest check failed with exit code {}; console tail:\n{}",
            self.exit_code,
            tools::tail(&self.console, 60)
        );
        self
    }
}

impl GuestRun {
    /// A boot with `image` (raw ext4) as `/dev/vda`, running `true` by default.
    pub fn new(image: impl Into<PathBuf>) -> GuestRun {
        GuestRun {
            image: image.into(),
            extra_disks: Vec::new(),
            mode: Mode::Script("true".into()),
            mount_options: "rw".into(),
            append: Vec::new(),
            memory_mib: 512,
            timeout: Duration::from_secs(600),
        }
    }

    /// The check script (busybox `sh`; all busybox applets on `PATH`). It runs with
    /// `ROOT=/mnt` (the image's root, mounted rw) as cwd; its exit code is reported.
    pub fn script(mut self, sh: &str) -> Self {
        self.mode = Mode::Script(sh.to_string());
        self
    }

    /// Instead of a script, `switch_root` into the image and exec `init` (a path inside
    /// the image) as PID 1. `/dev` is moved to the image's `/dev` when it exists.
    pub fn switch_root(mut self, init: &str) -> Self {
        self.mode = Mode::SwitchRoot(init.to_string());
        self
    }

    /// Attach another raw disk: `/dev/vdb`, `/dev/vdc`, … in call order.
    pub fn disk(mut self, path: impl Into<PathBuf>, read_only: bool) -> Self {
        self.extra_disks.push((path.into(), read_only));
        self
    }

    /// `mount -o` options for `/dev/vda` (default `rw`).
    pub fn mount_options(mut self, opts: &str) -> Self {
        self.mount_options = opts.to_string();
        self
    }

    /// Extra kernel command-line words.
    pub fn append(mut self, arg: &str) -> Self {
        self.append.push(arg.to_string());
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Hard limit on the whole boot; QEMU is killed past it (default 600 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Boots and waits. Panics (with the console tail) on timeout, on a guest that never
    /// printed the sentinel, or on an initramfs failure; otherwise returns the reported
    /// exit code, which may be non-zero.
    pub fn run(self) -> GuestResult {
        assert!(
            self.image.is_file(),
            "guest image {} does not exist",
            self.image.display()
        );
        let kernel = Kernel::get();
        let work = tempfile::Builder::new()
            .prefix("banger-qemu-")
            .tempdir()
            .expect("qemu work tempdir");
        let initrd = work.path().join("initrd.cpio");
        write_initrd(&initrd, kernel, &self);

        let mut cmd = Command::new(tools::require("qemu-system-x86_64"));
        cmd.args(["-M", "microvm,accel=tcg", "-cpu", "max", "-smp", "1"])
            // Derive guest time from the instruction count: on a loaded host, plain TCG
            // makes the kernel's TSC-vs-PIT calibration fail and the boot stall forever.
            .args(["-icount", "shift=auto"])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-serial", "stdio"])
            .arg("-kernel")
            .arg(&kernel.vmlinuz)
            .arg("-initrd")
            .arg(&initrd);
        let mut append = vec!["console=ttyS0", "panic=-1", "quiet"];
        append.extend(self.append.iter().map(String::as_str));
        cmd.arg("-append").arg(append.join(" "));
        let disks = std::iter::once((&self.image, false))
            .chain(self.extra_disks.iter().map(|(p, ro)| (p, *ro)));
        for (i, (path, ro)) in disks.enumerate() {
            let mut drive = format!("id=d{i},file={},format=raw,if=none", qemu_escape(path));
            if ro {
                drive.push_str(",readonly=on");
            }
            cmd.arg("-drive")
                .arg(drive)
                .arg("-device")
                .arg(format!("virtio-blk-device,drive=d{i}"));
        }
        let stderr_path = work.path().join("qemu.stderr");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).expect("qemu stderr file"));

        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{}`: {e}", tools::command_line(&cmd)));
        let console = Arc::new(Mutex::new(Vec::<u8>::new()));
        let reader = {
            let console = Arc::clone(&console);
            let mut out = child.stdout.take().expect("piped stdout");
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut c) = console.lock() {
                        c.extend_from_slice(&buf[..n]);
                    }
                }
            })
        };
        let snapshot = |console: &Arc<Mutex<Vec<u8>>>| {
            let bytes = console.lock().map(|c| c.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).replace('\r', "")
        };

        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => panic!("waiting for qemu: {e}"),
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                panic!(
                    "guest timed out after {:?}; `{}`\nconsole tail:\n{}",
                    self.timeout,
                    tools::command_line(&cmd),
                    tools::tail(&snapshot(&console), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = reader.join();
        let elapsed = started.elapsed();
        let console = snapshot(&console);
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let context = || {
            format!(
                "`{}` exited {status}\n--- qemu stderr ---\n{}\n--- console tail ---\n{}",
                tools::command_line(&cmd),
                tools::tail(&stderr, 20),
                tools::tail(&console, 60)
            )
        };
        if let Some(err) = console.lines().find(|l| l.contains(INIT_ERROR)) {
            panic!("initramfs failed: {err}\n{}", context());
        }
        if console.lines().any(|l| l.contains(UMOUNT_FAILED)) {
            panic!("guest could not unmount /dev/vda cleanly\n{}", context());
        }
        let exit_code = console
            .lines()
            .filter_map(|l| l.trim().strip_prefix(EXIT_SENTINEL))
            .filter_map(|v| v.trim().parse::<i32>().ok())
            .next_back()
            .unwrap_or_else(|| panic!("guest never printed {EXIT_SENTINEL}<n>\n{}", context()));
        GuestResult {
            exit_code,
            console,
            elapsed,
        }
    }
}

/// QEMU's `-drive` option parser treats `,` as a separator; `,,` escapes it.
fn qemu_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn init_script(modules: &[String], run: &GuestRun) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         # Generated by banger-testkit: bring up virtio-blk, mount /dev/vda, run the check.\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         fail() { echo \"BANGER-INIT-ERROR: $*\"; sync; poweroff -f; }\n\
         mkdir -p /proc /sys /dev /mnt /tmp\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /tmp\n",
    );
    for m in modules {
        s.push_str(&format!(
            "insmod /lib/modules/{m}.ko || fail 'insmod {m}'\n"
        ));
    }
    let last_disk = char::from(b'a' + u8::try_from(run.extra_disks.len()).unwrap_or(25).min(25));
    s.push_str(&format!(
        "n=0\n\
         while [ ! -b /dev/vd{last_disk} ]; do\n\
         \x20 n=$((n+1)); [ $n -gt 600 ] && fail 'no /dev/vd{last_disk} after 60s'; sleep 0.1\n\
         done\n\
         mount -t ext4 -o {} /dev/vda /mnt || fail 'mount /dev/vda'\n",
        sh_quote(&run.mount_options)
    ));
    match &run.mode {
        Mode::Script(_) => s.push_str(
            "export ROOT=/mnt\n\
             cd /mnt\n\
             sh /check.sh\n\
             rc=$?\n\
             cd /\n\
             sync\n\
             umount /mnt || echo BANGER-UMOUNT-FAILED\n\
             sync\n\
             echo \"BANGER-GUEST-EXIT=$rc\"\n\
             poweroff -f\n",
        ),
        Mode::SwitchRoot(init) => s.push_str(&format!(
            "umount /tmp /sys /proc\n\
             if [ -d /mnt/dev ]; then mount --move /dev /mnt/dev; else umount /dev; fi\n\
             exec switch_root /mnt {} || fail 'switch_root'\n",
            sh_quote(init)
        )),
    }
    s
}

fn write_initrd(path: &Path, kernel: &Kernel, run: &GuestRun) {
    let modules = kernel.modules_for(NEEDED_MODULES);
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let busybox = std::fs::read(tools::require("busybox")).expect("read busybox");
    let f = File::create(path).expect("create initrd");
    let mut cpio = Newc::new(std::io::BufWriter::new(f));
    for dir in [
        "bin",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "dev",
        "mnt",
        "tmp",
    ] {
        cpio.dir(dir, 0o755).expect("initrd dir");
    }
    cpio.file("bin/busybox", 0o755, &busybox)
        .expect("initrd busybox");
    for (name, bytes) in &modules {
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, bytes)
            .expect("initrd module");
    }
    cpio.file("init", 0o755, init_script(&names, run).as_bytes())
        .expect("initrd init");
    if let Mode::Script(sh) = &run.mode {
        cpio.file("check.sh", 0o755, sh.as_bytes())
            .expect("initrd check.sh");
    }
    let (mut w, _) = cpio.finish().expect("initrd trailer");
    w.flush().expect("write initrd");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_loads_modules_in_order() {
        let run = GuestRun::new("/nonexistent.ext4").disk("/x", true);
        let s = init_script(&["virtio".into(), "virtio_blk".into()], &run);
        let a = s.find("insmod /lib/modules/virtio.ko").expect("virtio");
        let b = s
            .find("insmod /lib/modules/virtio_blk.ko")
            .expect("virtio_blk");
        assert!(a < b);
        assert!(s.contains("/dev/vdb"), "{s}");
    }
}
