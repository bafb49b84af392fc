//! `bangerd` as a library: the binary is a one-line `main` over [`cli::main`].
//!
//! Request path: [`server`] (socket, peer check, HTTP) → [`rpc`] (method dispatch) →
//! operation modules such as [`images`] → [`store`] (SQLite) and the filesystem.

pub mod claims;
pub mod cli;
pub mod error;
pub mod fsutil;
pub mod ids;
pub mod images;
pub mod kernels;
pub mod lock;
pub mod logging;
pub mod oci_client;
pub mod origin;
pub mod paths;
pub mod progress;
pub mod pull;
pub mod recovery;
pub mod rpc;
pub mod run;
pub mod server;
pub mod state;
pub mod store;
pub mod uploads;
pub mod vms;
