//! The agent as the guest's `/init`.
//!
//! Invariants:
//! - The early phase (mounts, modules, root, work disk, switch, configuration) runs
//!   synchronously on the only thread, before any runtime exists, so the fork that hands
//!   PID 1 to the image's init happens in a single-threaded process.
//! - PID 1 never exits and never panics silently: a failure before the root is usable
//!   prints `banger-agent: FATAL: …` on the console and reboots (the VMM exits on a guest
//!   reboot, and the host reports the console's tail). The binary refuses to run as
//!   anything but PID 1, so it can never reboot a host by accident.
//! - Fds 0–2 are open from the start (the console, else `/dev/null`): exec relies on it.
//! - Boot stages are recorded as they are reached and reported by whichever process
//!   serves (with `image`, `InitHandedOver` is recorded before the fork, in the child).

pub(crate) mod configure;
mod error;
mod modules;
mod mounts;
mod net;
mod pid1;
mod ready;
mod seed;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use banger_guest_proto::{GuestStage, InitMode, StageTime, auth};

use self::error::{BootError, Context};
use crate::cmdline::BootArgs;
use crate::console::log;
use crate::server::{Agent, AgentConfig, Machine};
use crate::{power, sys, transport};

/// Where the initramfs keeps its modules and their load order.
const MODULES: &str = "/lib/modules/banger";
/// Inits the image may have, in order: `/sbin/init` (systemd-sysv, sysvinit, busybox), then
/// systemd itself for images that install it without the `/sbin/init` link (Debian's
/// `systemd` package without `systemd-sysv`).
const INITS: &[&str] = &[
    "/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
];

struct Boot {
    args: BootArgs,
    stages: Vec<StageTime>,
    /// The boot's agent secret (`banger_guest_proto::auth`), empty when the host sent none.
    secret: Vec<u8>,
    /// Whether the image's init will mark its readiness (`ready`).
    wait_for_init: bool,
}

impl Boot {
    fn reached(&mut self, stage: GuestStage) {
        self.stages.push(StageTime {
            stage,
            uptime_ms: sys::boottime_ms(),
        });
    }
}

/// Runs the guest: boot, then serve (or hand PID 1 over and serve as its child).
pub fn main() -> ! {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if pid != 1 {
        eprintln!(
            "banger-agent: this is the init of banger's guests and runs only as PID 1 inside \
             a VM (this process is {pid}); nothing done"
        );
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| log!("panic: {info}")));
    let mut boot = match std::panic::catch_unwind(early) {
        Ok(Ok(boot)) => boot,
        Ok(Err(e)) => fatal(&e.to_string()),
        Err(_) => fatal("panic during boot (see the line above)"),
    };
    let init = hand_over(&mut boot);
    match init {
        InitMode::Agent => pid1::environment(),
        _ => {
            if boot.wait_for_init && ready::wait() {
                boot.reached(GuestStage::InitReady);
            }
        }
    }
    let err = match std::panic::catch_unwind(move || serve(boot, init)) {
        Ok(e) => e,
        Err(_) => "panic while serving (see the line above)".into(),
    };
    fatal(&err)
}

fn early() -> Result<Boot, BootError> {
    // First, while PID 1 is the only process: the secret leaves the file system.
    let secret = take_secret();
    mounts::pseudo_filesystems()?;
    ensure_std_fds();
    let mut boot = Boot {
        args: BootArgs::parse("").0,
        stages: Vec::new(),
        secret,
        wait_for_init: false,
    };
    if boot.secret.is_empty() {
        log!(
            "no agent secret at {}: the host will refuse this agent",
            auth::SECRET_PATH
        );
    }
    boot.reached(GuestStage::AgentStarted);
    let cmdline =
        std::fs::read_to_string("/proc/cmdline").context(|| "reading /proc/cmdline".into())?;
    let (args, warnings) = BootArgs::parse(&cmdline);
    for w in warnings {
        log!("kernel command line: {w}");
    }
    if let Some(secs) = args.clock
        && let Err(e) = sys::set_realtime(u128::from(secs) * 1_000_000_000)
    {
        log!("setting the clock to {secs}: {e}");
    }
    boot.args = args;

    modules::load_all(Path::new(MODULES));
    boot.reached(GuestStage::ModulesLoaded);
    mounts::wait_for_disks(boot.args.modules)?;
    mounts::assemble_root()?;
    boot.reached(GuestStage::RootAssembled);
    mounts::mount_work()?;
    mounts::native_dirs();
    boot.reached(GuestStage::WorkMounted);
    mounts::switch_root()?;
    mounts::terminals()?;
    pid1::dev_links();
    if boot.args.modules {
        modules::attach_disk();
    }
    configure::apply(&boot.args);
    boot.reached(GuestStage::Configured);
    Ok(boot)
}

/// Reads and deletes the per-boot secret the host appended to the initramfs. Nothing
/// else can have read it: this runs before any other process exists, and the initramfs
/// is out of reach once the root is switched.
fn take_secret() -> Vec<u8> {
    let secret = std::fs::read(auth::SECRET_PATH).unwrap_or_default();
    let _ = std::fs::remove_file(auth::SECRET_PATH);
    secret
}

/// Opens the console (else `/dev/null`) on any of fds 0–2 the kernel left closed (no
/// `/dev/console` in the initramfs), so later fds are never mistaken for stdio.
fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        for dev in [c"/dev/console", c"/dev/null"] {
            // SAFETY: a valid C string; no CLOEXEC on purpose (children inherit stdio).
            let got = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
            if got < 0 {
                continue;
            }
            if got != fd {
                // SAFETY: both fds are ours; dup2 then close the spare.
                unsafe {
                    libc::dup2(got, fd);
                    libc::close(got);
                }
            }
            break;
        }
    }
}

fn executable(path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Decides who is PID 1. With `image` the process forks: the parent execs the image's
/// init, the child returns and serves. Returns the mode in effect for the caller.
fn hand_over(boot: &mut Boot) -> InitMode {
    let init = INITS.iter().copied().find(|p| executable(p));
    let has_init = init.is_some();
    let mode = match boot.args.init {
        InitMode::Agent => InitMode::Agent,
        InitMode::Auto if has_init => InitMode::Image,
        InitMode::Auto => InitMode::Agent,
        InitMode::Image if has_init => InitMode::Image,
        InitMode::Image => {
            log!(
                "banger.init=image but none of {} is an executable file; the agent stays PID 1",
                INITS.join(", ")
            );
            InitMode::Agent
        }
    };
    let Some(init) = init.filter(|_| mode == InitMode::Image) else {
        return InitMode::Agent;
    };
    boot.reached(GuestStage::InitHandedOver);
    boot.wait_for_init = ready::is_systemd(init) && ready::prepare(boot.args.ready);
    // SAFETY: single-threaded here (no runtime yet), so fork is unrestricted.
    match unsafe { libc::fork() } {
        -1 => {
            log!(
                "fork for {init}: {}; the agent stays PID 1",
                std::io::Error::last_os_error()
            );
            boot.stages.pop();
            InitMode::Agent
        }
        0 => {
            // SAFETY: the child leaves init's session; no preconditions.
            unsafe { libc::setsid() };
            InitMode::Image
        }
        _ => exec_init(init),
    }
}

/// PID 1 becomes the image's init. If that fails, it stays a bare reaper so the guest
/// keeps running and the agent (already forked) keeps serving.
fn exec_init(init: &str) -> ! {
    // SAFETY: restoring the default disposition Rust's runtime changed; exec keeps
    // ignored signals, and an init with SIGPIPE ignored would pass that on.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match std::ffi::CString::new(init) {
        Ok(path) => {
            let argv = [path.as_ptr(), std::ptr::null()];
            // SAFETY: a valid C string path and a NULL-terminated argv of valid C strings.
            unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
            log!(
                "exec {init}: {}; PID 1 now only reaps zombies",
                std::io::Error::last_os_error()
            );
        }
        Err(_) => log!("init path {init:?} has a NUL byte; PID 1 now only reaps zombies"),
    }
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int to fill.
        if unsafe { libc::waitpid(-1, &mut status, 0) } < 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Serves forever; returns only the error that made serving impossible.
fn serve(boot: Boot, init: InitMode) -> String {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("starting the runtime: {e}"),
    };
    rt.block_on(async move {
        let mut cfg = AgentConfig::new("/", init, Machine::Guest);
        cfg.stages = boot.stages;
        cfg.secret = boot.secret;
        match Agent::new(cfg) {
            Ok(agent) => transport::serve_forever(agent, boot.args.channel).await,
            Err(e) => format!("starting the reaper: {e}"),
        }
    })
}

/// Prints the fatal line on the console, waits a second for it to be seen, reboots.
fn fatal(what: &str) -> ! {
    let line = format!("banger-agent: FATAL: {what}\n");
    let console = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console");
    let written = console.and_then(|mut c| std::io::Write::write_all(&mut c, line.as_bytes()));
    if written.is_err() {
        eprint!("{line}");
    }
    std::thread::sleep(Duration::from_secs(1));
    power::reboot();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
