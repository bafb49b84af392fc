//! banger's guest agent: `/init` (PID 1) of every banger VM, and the server the host
//! talks to over `banger-guest-proto`.
//!
//! Two halves, kept apart so the second can be tested on any host:
//! - [`boot`] (only meaningful as PID 1 in a guest): mounts, kernel modules, the overlay
//!   root and work disk, the switch to the new root, per-VM configuration, and the choice
//!   of who stays PID 1. Synchronous, before any thread exists.
//! - [`Agent`] (module `server`, with `exec`): the HTTP/2 service over one byte stream
//!   (`transport` in the guest, a socket pair in tests), the process engine behind
//!   the exec method, the file methods (`files`, `keys`) and port connections (`connect`). Tests start it with [`Agent::new`] and [`Agent::serve`].
//!
//! Crate-wide invariants:
//! - Every fd the agent opens is `CLOEXEC` (children inherit exactly their stdio), and
//!   fds 0–2 are always open.
//! - Only the `reaper` module waits for children, process-wide.
//! - The static binary does no NSS lookups: users come from the guest's files (`users`).
//! - Console lines start with `banger-agent:` (`console`).

pub mod boot;

mod body;
mod cmdline;
mod connect;
mod console;
mod exec;
mod fdio;
mod files;
mod hostkeys;
mod keys;
pub mod modprobe;
mod power;
mod reaper;
mod server;
mod sys;
mod transport;
mod users;

pub use server::{Agent, AgentConfig, Machine, MachineRequest};
pub use transport::dial_host_vsock;
