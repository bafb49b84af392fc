//! What a streaming method (an image or kernel pull or push, a VM's start, a followed log,
//! a lease) reports while it runs, and the NDJSON line framing those reports travel in.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a long operation is doing (a pull or push's progress, a VM's boot stages, console
/// output, a lease), streamed to the client as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpEvent {
    Resolving {
        reference: String,
    },
    Resolved {
        manifest_digest: String,
        platform: String,
        layers: usize,
        /// Compressed bytes of all layers.
        total_bytes: u64,
    },
    /// Download progress of one layer (`index` counts from the base layer, 0).
    Layer {
        index: usize,
        digest: String,
        done_bytes: u64,
        total_bytes: u64,
        cached: bool,
    },
    /// The root filesystem is being written (entries and file bytes so far). Progress is
    /// `compressed_done` of `compressed_total`: layer blob bytes consumed, a total known
    /// before the first entry (0 from daemons that do not report it).
    Writing {
        entries: u64,
        bytes: u64,
        #[serde(default)]
        compressed_done: u64,
        #[serde(default)]
        compressed_total: u64,
    },
    /// An identical digest was converted before: its rootfs is reused.
    Reused {
        from_image: String,
    },
    StagingKernel,
    /// `image pull --kernel-ref NAME` found no local kernel NAME and fetches it from the
    /// configured kernel source first.
    FetchingKernel {
        name: String,
        reference: String,
    },
    /// `kernel push`: packing the kernel's files into one layer.
    Packing,
    /// `kernel push`: bytes of a blob sent to the registry (restarts at 0 on a retry).
    Uploading {
        digest: String,
        done_bytes: u64,
        total_bytes: u64,
    },
    Publishing,
    /// A VM reached a readiness stage (`vm.create`, `vm.start`).
    VmStage {
        stage: String,
        /// Milliseconds since the start began.
        elapsed_ms: u64,
    },
    /// Console output of a VM (`vm.logs --follow`).
    Log {
        text: String,
    },
    Done {
        elapsed_ms: u64,
    },
    /// `vm.hold`: the lease is held from now on; pass `id` as `vm.create`'s `lease`.
    Lease {
        id: String,
    },
}

/// One line of an `application/x-ndjson` response: events, then exactly one `result` or
/// `error` line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamLine {
    Event(OpEvent),
    Result(serde_json::Value),
    Error(ApiError),
}
