//! The rootless plumbing around any program (not only Firecracker): [`spawn`] starts it
//! inside a fresh user + network namespace holding [`TAP_NAME`](super::TAP_NAME) on
//! [`BRIDGE_NAME`](super::BRIDGE_NAME) and connects that namespace outward with pasta,
//! exactly as the Firecracker driver does. Used by the tests that boot a QEMU guest on
//! the TAP (a guest that can boot without KVM) to prove the plumbing end to end.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{BRIDGE_NAME, NetnsError};
use crate::config::PortForward;
use crate::files::RunFiles;
use crate::process::{self, ProcessRecord, ROLE_VMM};

/// How long the namespace set-up (lo, tap0, br0) may take before the program runs.
const SETUP_READY: Duration = Duration::from_secs(30);

/// What to run and how.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The program started inside the namespace (it gets the pid of the namespace).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Published ports (pasta's `-t`/`-u`).
    pub forwards: Vec<PortForward>,
    /// What the program may reach (see [`super::policy`]).
    pub policy: super::Policy,
    /// Where `pasta.log` goes.
    pub run_dir: PathBuf,
    /// The program's stdout and stderr.
    pub output: PathBuf,
    /// Run before every program (`unshare`, pasta, `nsenter`): e.g. `setpriv --reuid=…
    /// --regid=… --clear-groups --` to act as another, unprivileged user. Empty: as the
    /// caller.
    pub prefix: Vec<OsString>,
}

/// A program running in its own namespace, connected by pasta.
#[derive(Debug, Clone)]
pub struct Plumbed {
    /// The program ([`ROLE_VMM`]); its pid holds the namespace.
    pub vmm: ProcessRecord,
    /// pasta ([`ROLE_NET`](super::ROLE_NET)).
    pub net: ProcessRecord,
}

/// Why [`spawn`] failed. Whatever was started has been stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The plumbing's checks or pasta failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The program (through `unshare`) could not be started.
    #[error("cannot start {program} in a new namespace: {error}")]
    Start {
        /// The program.
        program: PathBuf,
        /// Why.
        error: String,
    },
    /// The namespace set-up did not finish (the program's output says why).
    #[error(
        "the namespace set-up (lo, tap0, br0) for {program} did not finish: {detail}; its output ({output}) ends with:\n{tail}"
    )]
    Setup {
        /// The program.
        program: PathBuf,
        /// What was observed.
        detail: String,
        /// The output file.
        output: PathBuf,
        /// Its last lines.
        tail: String,
    },
}

/// Starts `opts.program` inside a new user + network namespace with the TAP plumbing and
/// attaches pasta. Returns once pasta's interface is on the bridge.
pub fn spawn(opts: &SpawnOptions) -> Result<Plumbed, SpawnError> {
    let mut tools = super::check_for(&opts.forwards, &opts.policy)?;
    tools.prefix = opts.prefix.clone();
    let files = RunFiles::new(&opts.run_dir);
    let start_err = |error: String| SpawnError::Start {
        program: opts.program.clone(),
        error,
    };
    let out = std::fs::File::create(&opts.output)
        .map_err(|e| start_err(format!("cannot create {}: {e}", opts.output.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| start_err(format!("cannot duplicate a file descriptor: {e}")))?;
    let rules = super::write_rules(&opts.policy, &opts.forwards, &files)?;
    let mut cmd = super::wrap(
        &tools,
        &opts.program,
        &opts.args,
        &opts.forwards,
        rules.as_deref(),
    );
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let spawned = process::spawn_detached(&mut cmd, ROLE_VMM, |_| {})
        .map_err(|e| start_err(e.to_string()))?;
    let vmm = spawned.record;
    let setup_err = |detail: String| {
        vmm.kill_now();
        SpawnError::Setup {
            program: opts.program.clone(),
            detail,
            output: opts.output.clone(),
            tail: crate::qemu::tail(&opts.output),
        }
    };
    let deadline = Instant::now() + SETUP_READY;
    while !super::has_interface(vmm.pid, BRIDGE_NAME) {
        if let Ok(status) = spawned.exit.try_recv() {
            return Err(setup_err(format!("it exited ({status})")));
        }
        if Instant::now() >= deadline {
            return Err(setup_err(format!(
                "no {BRIDGE_NAME} in process {}'s namespace within {SETUP_READY:?}",
                vmm.pid
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match super::attach(&tools, &vmm, &opts.forwards, &opts.policy, &files) {
        Ok(a) => Ok(Plumbed { vmm, net: a.pasta }),
        Err(e) => {
            vmm.kill_now();
            Err(e.into())
        }
    }
}

impl Plumbed {
    /// Stops both as the driver's teardown does: the program (SIGKILL), then pasta
    /// (SIGTERM, then SIGKILL). True when both are gone within `timeout` each.
    pub fn stop(&self, timeout: Duration) -> bool {
        let _ = self.vmm.signal(libc::SIGKILL);
        let vmm_gone = self.vmm.wait_gone(timeout);
        let _ = self.net.signal(libc::SIGTERM);
        let net_gone = self.net.wait_gone(timeout) || {
            let _ = self.net.signal(libc::SIGKILL);
            self.net.wait_gone(timeout)
        };
        vmm_gone && net_gone
    }
}
