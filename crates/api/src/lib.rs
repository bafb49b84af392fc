//! The contract between `bangerd` and its clients.
//!
//! Transport: HTTP/1.1 over a Unix socket. Every method is `POST /v1/<method>` with the
//! params as a JSON body (an empty body means `{}`). Success is `200` with the result as the
//! body; failure is a non-2xx status with an [`ErrorBody`]. Streaming methods (pulls, VM starts, followed logs) answer
//! `application/x-ndjson` lines of [`StreamLine`](event::StreamLine) when the request says
//! `Accept: application/x-ndjson`. Each method is a type in [`methods`] naming its params
//! and result, so the daemon's handlers and the CLI's calls are checked against one
//! declaration. `vm.exec` upgrades the connection to the daemon's own stream framing,
//! [`exec`] (language-neutral: a type byte, a length, raw data or JSON; docs/api.md).
//!
//! This crate holds only data (and [`text`], the one rule for printing untrusted text, and
//! [`exec`]'s frame encoder and decoder, pure functions over bytes): no
//! I/O beyond reading environment variables and checking directories for [`layout`], and
//! reading the configuration file's `[daemon]` table for [`config`].

pub mod config;
pub mod error;
pub mod event;
pub mod exec;
pub mod image;
pub mod kernel;
pub mod layout;
pub mod methods;
pub mod names;
pub mod pull;
pub mod snapshot;
pub mod system;
pub mod text;
pub mod time;
pub mod vm;

pub use error::{ApiError, ErrorBody, ErrorCode};

/// Version of the wire protocol; bumped on incompatible changes.
pub const API_VERSION: u32 = 1;

/// Header carrying the operation id of each request, also logged by the daemon.
pub const OPERATION_ID_HEADER: &str = "x-banger-operation-id";

/// Path prefix of every RPC.
pub const RPC_PREFIX: &str = "/v1/";

/// Media type of streamed responses.
pub const NDJSON: &str = "application/x-ndjson";
