//! Method dispatch: JSON params in, JSON result or [`OpError`] out. Transport-free, so it
//! is the one place that knows which methods exist.

use std::sync::Arc;

use banger_api::image::{CachePruneParams, ImageList, ImageRef, ImageRegisterParams};
use banger_api::kernel::{
    KernelDeleteParams, KernelImportParams, KernelList, KernelPullParams, KernelPushParams,
    KernelRef,
};
use banger_api::methods;
use banger_api::pull::ImagePullParams;
use banger_api::system::{Empty, PingResult, VersionInfo};
use banger_api::vm::{VmCreateParams, VmDeleteParams, VmLogsParams, VmRef, VmStartParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::OpError;
use crate::progress::OpContext;
use crate::state::DaemonState;

/// Every method this daemon answers, for `unknown_method` messages.
pub const KNOWN_METHODS: &[&str] = &[
    methods::PING,
    methods::VERSION,
    methods::DAEMON_SHUTDOWN,
    methods::IMAGE_REGISTER,
    methods::IMAGE_LIST,
    methods::IMAGE_SHOW,
    methods::IMAGE_DELETE,
    methods::IMAGE_PULL,
    methods::IMAGE_CACHE_PRUNE,
    methods::KERNEL_IMPORT,
    methods::KERNEL_LIST,
    methods::KERNEL_SHOW,
    methods::KERNEL_DELETE,
    methods::KERNEL_PUSH,
    methods::KERNEL_PULL,
    methods::VM_CREATE,
    methods::VM_START,
    methods::VM_STOP,
    methods::VM_KILL,
    methods::VM_DELETE,
    methods::VM_LIST,
    methods::VM_SHOW,
    methods::VM_LOGS,
    methods::VM_EXEC,
    methods::VM_PORTS,
    methods::VM_CP_PUT,
    methods::VM_CP_GET,
    methods::VM_PROXY,
    methods::SSH_CONFIG,
];

/// Methods that can stream progress events (`Accept: application/x-ndjson`).
pub fn is_streaming(method: &str) -> bool {
    matches!(
        method,
        methods::IMAGE_PULL
            | methods::KERNEL_PULL
            | methods::KERNEL_PUSH
            | methods::VM_CREATE
            | methods::VM_START
            | methods::VM_LOGS
    )
}

/// Runs one method. `ctx` carries progress and cancellation for long operations.
pub async fn dispatch(
    state: Arc<DaemonState>,
    method: &str,
    params: Value,
    ctx: OpContext,
) -> Result<Value, OpError> {
    match method {
        methods::PING => {
            let _: Empty = parse(method, params)?;
            to_value(PingResult {
                ok: true,
                pid: std::process::id(),
                uptime_seconds: state.started.elapsed().as_secs(),
            })
        }
        methods::VERSION => {
            let _: Empty = parse(method, params)?;
            to_value(VersionInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                api_version: banger_api::API_VERSION,
                pid: std::process::id(),
                state_dir: state.layout.state_dir.display().to_string(),
                cache_dir: state.layout.cache_dir.display().to_string(),
                socket_path: state.layout.socket_path().display().to_string(),
            })
        }
        methods::DAEMON_SHUTDOWN => {
            let _: Empty = parse(method, params)?;
            tracing::info!("shutdown requested over the API");
            state.shutdown.notify_one();
            Ok(serde_json::json!({ "stopping": true }))
        }
        methods::IMAGE_REGISTER => {
            let p: ImageRegisterParams = parse(method, params)?;
            blocking(state, move |s| s.images.register(p)).await
        }
        methods::IMAGE_LIST => {
            let _: Empty = parse(method, params)?;
            blocking(state, |s| {
                s.images.list().map(|images| ImageList { images })
            })
            .await
        }
        methods::IMAGE_SHOW => {
            let p: ImageRef = parse(method, params)?;
            blocking(state, move |s| s.images.details(&p.image)).await
        }
        methods::IMAGE_DELETE => {
            let p: ImageRef = parse(method, params)?;
            blocking(state, move |s| s.images.delete(&p.image)).await
        }
        methods::IMAGE_PULL => {
            let p: ImagePullParams = parse(method, params)?;
            blocking(state, move |s| {
                // A `--kernel-ref` that is not local comes from the kernel source, if any.
                if p.kernel_path.is_none() {
                    s.kernels.ensure_local(p.kernel_ref.as_deref(), &ctx)?;
                }
                s.puller.pull(&s.images, p, &ctx)
            })
            .await
        }
        methods::IMAGE_CACHE_PRUNE => {
            let p: CachePruneParams = parse(method, params)?;
            blocking(state, move |s| s.puller.prune_cache(p.dry_run)).await
        }
        methods::KERNEL_IMPORT => {
            let p: KernelImportParams = parse(method, params)?;
            blocking(state, move |s| s.kernels.import(p)).await
        }
        methods::KERNEL_LIST => {
            let _: Empty = parse(method, params)?;
            blocking(state, |s| {
                s.kernels.list().map(|kernels| KernelList { kernels })
            })
            .await
        }
        methods::KERNEL_SHOW => {
            let p: KernelRef = parse(method, params)?;
            blocking(state, move |s| s.kernels.show(&p.kernel)).await
        }
        methods::KERNEL_DELETE => {
            let p: KernelDeleteParams = parse(method, params)?;
            blocking(state, move |s| s.kernels.delete(&p.kernel, p.force)).await
        }
        methods::KERNEL_PUSH => {
            let p: KernelPushParams = parse(method, params)?;
            blocking(state, move |s| s.kernels.push(p, &ctx)).await
        }
        methods::KERNEL_PULL => {
            let p: KernelPullParams = parse(method, params)?;
            blocking(state, move |s| s.kernels.pull(p, &ctx)).await
        }
        methods::VM_CREATE => {
            let p: VmCreateParams = parse(method, params)?;
            to_value(state.vms.create(p, &ctx).await?)
        }
        methods::VM_START => {
            let p: VmStartParams = parse(method, params)?;
            to_value(state.vms.start(p, &ctx).await?)
        }
        methods::VM_STOP => {
            let p: VmRef = parse(method, params)?;
            to_value(state.vms.stop(p).await?)
        }
        methods::VM_KILL => {
            let p: VmRef = parse(method, params)?;
            to_value(state.vms.kill(p).await?)
        }
        methods::VM_DELETE => {
            let p: VmDeleteParams = parse(method, params)?;
            to_value(state.vms.delete(p).await?)
        }
        methods::VM_LIST => {
            let _: Empty = parse(method, params)?;
            to_value(state.vms.list()?)
        }
        methods::VM_SHOW => {
            let p: VmRef = parse(method, params)?;
            to_value(state.vms.show(&p.vm)?)
        }
        methods::VM_LOGS => {
            let p: VmLogsParams = parse(method, params)?;
            to_value(state.vms.logs(p, &ctx).await?)
        }
        methods::VM_PORTS => {
            let p: VmRef = parse(method, params)?;
            to_value(state.vms.ports(p).await?)
        }
        methods::SSH_CONFIG => {
            let _: Empty = parse(method, params)?;
            blocking(state, |s| s.vms.ssh_info()).await
        }
        methods::VM_EXEC | methods::VM_CP_PUT | methods::VM_CP_GET | methods::VM_PROXY => {
            Err(OpError::BadRequest(format!(
                "{method} needs an upgraded connection (`Connection: Upgrade`, `Upgrade: banger-exec` or `banger-stream`); see docs/api.md"
            )))
        }
        other => Err(OpError::UnknownMethod(format!(
            "unknown method {other:?}; this daemon knows: {}",
            KNOWN_METHODS.join(", ")
        ))),
    }
}

fn parse<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, OpError> {
    serde_json::from_value(params)
        .map_err(|e| OpError::BadRequest(format!("invalid params for {method}: {e}")))
}

fn to_value<T: Serialize>(v: T) -> Result<Value, OpError> {
    serde_json::to_value(v).map_err(|e| OpError::Failed(format!("cannot encode result: {e}")))
}

/// Runs filesystem and database work off the async workers.
async fn blocking<T, F>(state: Arc<DaemonState>, f: F) -> Result<Value, OpError>
where
    T: Serialize,
    F: FnOnce(&DaemonState) -> Result<T, OpError> + Send + 'static,
    T: Send + 'static,
{
    let out = tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| OpError::Failed(format!("operation aborted: {e}")))??;
    to_value(out)
}
