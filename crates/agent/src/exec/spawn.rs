//! Turning an [`ExecRequest`] into a running child.
//!
//! Everything that can be checked is checked before forking ([`plan`]): the user, the
//! working directory and the program (`PATH` is searched here, so "command not found" is
//! an answer, not a child that exits 127). What can only fail in the child (`chdir` as the
//! user, `execve` itself: a bad interpreter, a format error) is reported through a
//! `CLOEXEC` pipe: the child writes `(step, errno)` and `_exit`s; a pipe closed with
//! nothing in it means `execve` succeeded.
//!
//! Own `clone`/`execve` rather than `std::process::Command`: Command changes directory and
//! drops privileges before `pre_exec` runs and reports child errors as a bare errno, so a
//! failed `chdir` would be indistinguishable from a missing program. The child is started
//! the way `posix_spawn` starts one ([`clone_child`]: it shares the agent's memory until its
//! `execve`, while the calling thread sleeps), so it only makes raw syscalls on data
//! prepared beforehand (no allocation, no locks, no glibc `set*id` wrappers). It relies on
//! fds 0–2 being open in the agent (the boot code guarantees it), so the fds it `dup2`s from
//! are ≥ 3, and on every other fd of the agent being `CLOEXEC`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use banger_guest_proto::{ExecRequest, StartFailure, StartFailureKind};
use tokio::sync::oneshot;

use crate::reaper::{self, WaitStatus};
use crate::sys;
use crate::users::{self, Identity};

/// `LANG` as the image configures it (`/etc/locale.conf`, Debian's `/etc/default/locale`),
/// else `C.UTF-8` (glibc ≥ 2.35 has it built in): what a login on that image would get.
pub fn default_lang(root: &Path) -> String {
    for file in ["etc/locale.conf", "etc/default/locale"] {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        let lang = text.lines().find_map(|l| {
            let v = l.trim().strip_prefix("LANG=")?;
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            (!v.is_empty() && v.len() < 64 && !v.contains(char::is_whitespace))
                .then(|| v.to_string())
        });
        if let Some(lang) = lang {
            return lang;
        }
    }
    "C.UTF-8".into()
}

/// `PATH` when the request sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A request made concrete: every string the child needs, as C strings.
#[derive(Debug)]
pub struct Plan {
    prog: String,
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    id: Identity,
}

fn fail(kind: StartFailureKind, message: String) -> StartFailure {
    StartFailure { kind, message }
}

fn other(message: String) -> StartFailure {
    fail(StartFailureKind::Other, message)
}

fn c(s: &str, what: &str) -> Result<CString, StartFailure> {
    sys::cstring(s).map_err(|_| other(format!("{what} contains a NUL byte: {s:?}")))
}

/// Whether `id` may execute a file with this metadata (the kernel's rule: root needs
/// any x bit, others the bit of the class they fall in).
fn executable_by(meta: &std::fs::Metadata, id: &Identity) -> bool {
    let mode = meta.permissions().mode();
    if id.uid == 0 {
        return mode & 0o111 != 0;
    }
    if meta.uid() == id.uid {
        mode & 0o100 != 0
    } else if id.groups.contains(&meta.gid()) || meta.gid() == id.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

enum Candidate {
    Runnable,
    NotExecutable,
    Missing,
}

fn check(path: &Path, id: &Identity) -> Candidate {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && executable_by(&m, id) => Candidate::Runnable,
        Ok(_) => Candidate::NotExecutable,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Candidate::NotExecutable,
        Err(_) => Candidate::Missing,
    }
}

/// Resolves user, environment, working directory and program; `root` holds the
/// `/etc/passwd` and `/etc/group` to use.
pub fn plan(req: &ExecRequest, root: &Path) -> Result<Plan, StartFailure> {
    let Some(prog) = req.argv.first() else {
        return Err(other("empty argv: nothing to run".into()));
    };
    if prog.is_empty() {
        return Err(fail(
            StartFailureKind::NotFound,
            "empty program name".into(),
        ));
    }
    let id = users::resolve(root, req.user.as_deref()).map_err(other)?;

    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), id.home.clone()),
        ("USER".into(), id.name.clone()),
        ("LOGNAME".into(), id.name.clone()),
        ("SHELL".into(), id.shell.clone()),
        ("LANG".into(), default_lang(root)),
    ];
    if req.tty.is_some() {
        let term = req.term.clone().unwrap_or_else(|| "xterm-256color".into());
        env.push(("TERM".into(), term));
    }
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') {
            return Err(other(format!("bad environment variable name {k:?}")));
        }
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }

    let cwd = match &req.cwd {
        Some(dir) => {
            let dir = Path::new(&id.home).join(dir); // absolute `dir` replaces home
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => dir,
                Ok(_) => return Err(other(format!("cwd {}: not a directory", dir.display()))),
                Err(e) => return Err(other(format!("cwd {}: {e}", dir.display()))),
            }
        }
        // A home that does not exist (nobody's /nonexistent) is not an error: use `/`.
        None => match std::fs::metadata(&id.home) {
            Ok(m) if m.is_dir() => PathBuf::from(&id.home),
            _ => PathBuf::from("/"),
        },
    };

    let path = if prog.contains('/') {
        let p = cwd.join(prog);
        match check(&p, &id) {
            Candidate::Runnable => p,
            Candidate::NotExecutable => {
                return Err(fail(
                    StartFailureKind::PermissionDenied,
                    format!("{prog}: permission denied (not an executable file)"),
                ));
            }
            Candidate::Missing => {
                return Err(fail(
                    StartFailureKind::NotFound,
                    format!("{prog}: no such file or directory"),
                ));
            }
        }
    } else {
        let search = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        let mut denied = None;
        let mut found = None;
        for dir in search.split(':') {
            // An empty entry means the working directory, as in execvp.
            let p = cwd.join(if dir.is_empty() { "." } else { dir }).join(prog);
            match check(&p, &id) {
                Candidate::Runnable => {
                    found = Some(p);
                    break;
                }
                Candidate::NotExecutable => {
                    denied.get_or_insert(p);
                }
                Candidate::Missing => {}
            }
        }
        match (found, denied) {
            (Some(p), _) => p,
            (None, Some(d)) => {
                return Err(fail(
                    StartFailureKind::PermissionDenied,
                    format!(
                        "{prog}: permission denied ({} is not executable)",
                        d.display()
                    ),
                ));
            }
            (None, None) => {
                return Err(fail(
                    StartFailureKind::NotFound,
                    format!("{prog}: command not found (PATH={search})"),
                ));
            }
        }
    };

    let argv = req
        .argv
        .iter()
        .map(|a| c(a, "argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| c(&format!("{k}={v}"), "environment"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan {
        prog: prog.clone(),
        path: sys::cpath(&path).map_err(|_| other(format!("{prog}: NUL byte in path")))?,
        argv,
        envp,
        cwd: sys::cpath(&cwd).map_err(|_| other("NUL byte in cwd".into()))?,
        id,
    })
}

/// What the child does, in order; the number is sent back when the step fails.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Step {
    Setsid = 1,
    Ctty,
    Dup,
    Groups,
    Gid,
    Uid,
    Chdir,
    Exec,
}

const STEPS: [&str; 9] = [
    "?",
    "setsid",
    "TIOCSCTTY",
    "dup2",
    "setgroups",
    "setgid",
    "setuid",
    "chdir",
    "execve",
];

/// The child's stdio: three fds (the same pty slave three times for a tty), and whether
/// that slave becomes the controlling terminal.
pub struct ChildIo<'a> {
    /// Becomes fd 0, 1 and 2.
    pub fds: [BorrowedFd<'a>; 3],
    /// Make `fds[0]` the controlling terminal (it is a pty slave).
    pub ctty: bool,
}

/// Forks and execs `plan`. Ok: the child runs the program (its pid and where its wait
/// status will arrive). Err: it never started.
pub fn spawn(
    plan: &Plan,
    io: &ChildIo<'_>,
) -> Result<(libc::pid_t, oneshot::Receiver<WaitStatus>), StartFailure> {
    let start_err = |what: &str, e: io::Error| other(format!("{}: {what}: {e}", plan.prog));
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = plan.id.groups.clone();
    let (report_r, report_w) = sys::pipe().map_err(|e| start_err("pipe", e))?;
    let fds = io.fds.map(|f| f.as_raw_fd());
    let child = ChildArgs {
        path: plan.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: plan.cwd.as_ptr(),
        groups: &groups,
        uid: plan.id.uid,
        gid: plan.id.gid,
        fds,
        ctty: io.ctty,
        report: report_w.as_raw_fd(),
    };

    let mut stack = vec![0u8; CHILD_STACK];
    let (pid, exit) = reaper::spawn_registered(|| {
        // SAFETY: `child` and everything it points at live in this frame, which outlives
        // the call; `stack` is the child's alone.
        unsafe { clone_child(&child, &mut stack) }
    })
    .map_err(|e| start_err("clone", e))?;
    drop(report_w);

    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let n = unsafe {
            libc::read(
                report_r.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(start_err("reading the child's report", e));
                }
            }
        }
    }
    if got == 0 {
        return Ok((pid, exit));
    }
    // The child _exits; the reaper collects it and the dropped receiver discards that.
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let err = io::Error::from_raw_os_error(errno);
    let step_name = STEPS.get(step).copied().unwrap_or("?");
    Err(match (step, errno) {
        (s, libc::ENOENT) if s == Step::Exec as usize => fail(
            StartFailureKind::NotFound,
            format!("{}: {err} (a missing interpreter or loader?)", plan.prog),
        ),
        (s, libc::EACCES) if s == Step::Exec as usize => fail(
            StartFailureKind::PermissionDenied,
            format!("{}: {err}", plan.prog),
        ),
        (s, _) if s == Step::Chdir as usize => {
            other(format!("cwd {}: {err}", plan.cwd.to_string_lossy()))
        }
        _ => other(format!("{}: {step_name}: {err}", plan.prog)),
    })
}

/// The child's stack: it makes a dozen syscalls on prepared data, then execs.
const CHILD_STACK: usize = 64 << 10;

/// Starts the child with `clone(CLONE_VM | CLONE_VFORK)`, as glibc's `posix_spawn` does: no
/// copy of the agent's page tables and no copy-on-write faults after it (under emulation a
/// `fork` cost the first command of a VM tens of milliseconds). This thread sleeps until
/// the child has exec'd or exited; every signal is blocked meanwhile, so no handler of the
/// agent runs on the child's stack before [`child_exec`] resets them.
///
/// # Safety
/// `a` points at valid prepared data that outlives the call; `stack` is used by the child
/// only. The child shares this process's memory until `execve`: [`child_exec`] only makes
/// raw syscalls on `a`'s data.
unsafe fn clone_child(a: &ChildArgs<'_>, stack: &mut [u8]) -> io::Result<libc::pid_t> {
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `ChildArgs` that clone_child was given, alive while the
        // parent sleeps.
        unsafe { child_exec(&*(arg as *const ChildArgs<'_>)) }
    }
    // SAFETY: plain signal-mask calls on local sets; clone gets a stack top inside
    // `stack` (16-byte aligned, it grows down) and a pointer `entry` reads as ChildArgs.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let end = stack.as_mut_ptr().add(stack.len()) as usize;
        let top = (end & !15) as *mut libc::c_void;
        let pid = libc::clone(
            entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            a as *const ChildArgs<'_> as *mut libc::c_void,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 { Err(err) } else { Ok(pid) }
    }
}

/// Raw pointers into the parent's prepared data, for the child.
struct ChildArgs<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    groups: &'a [libc::gid_t],
    uid: u32,
    gid: u32,
    fds: [libc::c_int; 3],
    ctty: bool,
    report: libc::c_int,
}

/// Tells the parent which step failed (with errno) and ends the child.
///
/// # Safety
/// The child of [`clone_child`] only; `report` is the write end of the report pipe.
unsafe fn die(report: libc::c_int, step: Step) -> ! {
    // SAFETY: errno is thread-local and always valid; write and _exit are
    // async-signal-safe and take a valid 8-byte buffer.
    unsafe {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// The child between clone and exec. Raw syscalls only: it shares the agent's memory.
///
/// # Safety
/// Must run only in the child of [`clone_child`], with `a` pointing at valid prepared data.
unsafe fn child_exec(a: &ChildArgs<'_>) -> ! {
    // SAFETY: plain syscalls on prepared, NUL-terminated data; the process image is
    // replaced or ends with _exit, it never returns into Rust code.
    unsafe {
        // Rust ignores SIGPIPE and tokio installs handlers; exec keeps ignored signals,
        // so restore defaults, then unblock everything (clone_child blocked it) for the
        // new program.
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());

        if libc::setsid() < 0 {
            die(a.report, Step::Setsid);
        }
        if a.ctty && libc::ioctl(a.fds[0], libc::TIOCSCTTY, 0) < 0 {
            die(a.report, Step::Ctty);
        }
        for (target, &fd) in a.fds.iter().enumerate() {
            let target = target as libc::c_int;
            if fd == target {
                // Already in place: just let it survive exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    die(a.report, Step::Dup);
                }
            } else if libc::dup2(fd, target) < 0 {
                die(a.report, Step::Dup);
            }
        }
        // Raw syscalls: glibc's wrappers would apply them to every thread of the process,
        // which this child, sharing the agent's memory, would take for the agent's.
        if libc::syscall(libc::SYS_setgroups, a.groups.len(), a.groups.as_ptr()) < 0 {
            die(a.report, Step::Groups);
        }
        if libc::syscall(libc::SYS_setgid, a.gid) < 0 {
            die(a.report, Step::Gid);
        }
        if libc::syscall(libc::SYS_setuid, a.uid) < 0 {
            die(a.report, Step::Uid);
        }
        if libc::chdir(a.cwd) < 0 {
            die(a.report, Step::Chdir);
        }
        libc::execve(a.path, a.argv, a.envp);
        die(a.report, Step::Exec)
    }
}

/// A fresh pipe for one stdio stream: (parent's end, child's end); the parent reads when
/// `child_writes`.
pub fn stdio_pipe(child_writes: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = sys::pipe()?;
    Ok(if child_writes { (r, w) } else { (w, r) })
}

#[cfg(test)]
mod lang_tests {
    use super::default_lang;

    #[test]
    fn lang_follows_the_image_else_c_utf8() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(default_lang(root.path()), "C.UTF-8");
        std::fs::create_dir_all(root.path().join("etc/default")).unwrap();
        std::fs::write(
            root.path().join("etc/default/locale"),
            "# comment\nLANG=\"de_DE.UTF-8\"\n",
        )
        .unwrap();
        assert_eq!(default_lang(root.path()), "de_DE.UTF-8");
        std::fs::write(root.path().join("etc/locale.conf"), "LANG=en_GB.UTF-8\n").unwrap();
        assert_eq!(default_lang(root.path()), "en_GB.UTF-8");
        std::fs::write(root.path().join("etc/locale.conf"), "LANG=\"a b\"\n").unwrap();
        assert_eq!(
            default_lang(root.path()),
            "de_DE.UTF-8",
            "a bad value is skipped"
        );
    }
}
