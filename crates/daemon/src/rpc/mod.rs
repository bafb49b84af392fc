//! Method dispatch: JSON params in, JSON result (or an upgraded stream) or [`OpError`]
//! out. Transport-free. Handlers are registered by method type (`banger_api::methods`),
//! one file per resource, so the names this daemon answers, and which of them stream or
//! upgrade, come from the registrations alone.

mod images;
mod kernels;
mod system;
mod vms;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

/// What [`kind`] answers (re-exported for callers that do not name `banger_api`).
pub use banger_api::methods::Kind;
use banger_api::methods::{Call, Method, Upgrade};
use serde::Serialize;
use serde_json::Value;

use crate::error::OpError;
use crate::progress::OpContext;
use crate::state::DaemonState;
use crate::vms::StreamSession;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type CallFn = Box<
    dyn Fn(Arc<DaemonState>, Value, OpContext) -> BoxFuture<Result<Value, OpError>> + Send + Sync,
>;
type UpgradeFn =
    Box<dyn Fn(Arc<DaemonState>, Value) -> BoxFuture<Result<StreamSession, OpError>> + Send + Sync>;

enum Handler {
    Call(CallFn),
    Upgrade(UpgradeFn),
}

struct Entry {
    name: &'static str,
    kind: Kind,
    handler: Handler,
}

/// Every method this daemon answers, in registration order.
pub struct Table {
    entries: Vec<Entry>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let mut table = Table {
        entries: Vec::new(),
    };
    system::register(&mut table);
    images::register(&mut table);
    kernels::register(&mut table);
    vms::register(&mut table);
    table
});

impl Table {
    /// An async handler, run on the request's task.
    fn call<M, F, Fut>(&mut self, f: F)
    where
        M: Call,
        F: Fn(Arc<DaemonState>, M::Params, OpContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, OpError>> + Send + 'static,
    {
        let handler: CallFn = Box::new(move |state, params, ctx| {
            let run = parse::<M>(params).map(|p| f(state, p, ctx));
            Box::pin(async move { to_value(run?.await?) })
        });
        self.push::<M>(Handler::Call(handler));
    }

    /// A handler doing filesystem or database work: run on the blocking pool, off the
    /// async workers.
    fn blocking<M, F>(&mut self, f: F)
    where
        M: Call,
        F: Fn(&DaemonState, M::Params, &OpContext) -> Result<M::Result, OpError>
            + Send
            + Sync
            + 'static,
    {
        let f = Arc::new(f);
        self.call::<M, _, _>(move |state, params, ctx| {
            let f = f.clone();
            async move {
                tokio::task::spawn_blocking(move || f(&state, params, &ctx))
                    .await
                    .map_err(|e| OpError::Failed(format!("operation aborted: {e}")))?
            }
        });
    }

    /// A handler that opens a byte stream to the guest, relayed once the connection is
    /// upgraded.
    fn upgrade<M, F, Fut>(&mut self, f: F)
    where
        M: Upgrade,
        F: Fn(Arc<DaemonState>, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StreamSession, OpError>> + Send + 'static,
    {
        let handler: UpgradeFn = Box::new(move |state, params| {
            let run = parse::<M>(params).map(|p| f(state, p));
            Box::pin(async move { run?.await })
        });
        self.push::<M>(Handler::Upgrade(handler));
    }

    fn push<M: Method>(&mut self, handler: Handler) {
        self.entries.push(Entry {
            name: M::NAME,
            kind: M::KIND,
            handler,
        });
    }

    fn get(&self, method: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == method)
    }
}

/// How `method` answers; `None` for a method this daemon does not know.
pub fn kind(method: &str) -> Option<Kind> {
    TABLE.get(method).map(|e| e.kind)
}

/// Every method this daemon answers, for `unknown_method` messages.
pub fn known_methods() -> Vec<&'static str> {
    TABLE.entries.iter().map(|e| e.name).collect()
}

/// Runs one plain or streaming method. `ctx` carries progress and cancellation for long
/// operations.
pub async fn dispatch(
    state: Arc<DaemonState>,
    method: &str,
    params: Value,
    ctx: OpContext,
) -> Result<Value, OpError> {
    match TABLE.get(method).map(|e| &e.handler) {
        Some(Handler::Call(f)) => f(state, params, ctx).await,
        Some(Handler::Upgrade(_)) => Err(OpError::BadRequest(format!(
            "{method} needs an upgraded connection (`Connection: Upgrade`, `Upgrade: banger-exec/2` or `banger-stream`); see docs/api.md"
        ))),
        None => Err(unknown(method)),
    }
}

/// Runs the request half of an upgrade method: what it returns is relayed over the
/// upgraded connection.
pub async fn open(
    state: Arc<DaemonState>,
    method: &str,
    params: Value,
) -> Result<StreamSession, OpError> {
    match TABLE.get(method).map(|e| &e.handler) {
        Some(Handler::Upgrade(f)) => f(state, params).await,
        Some(Handler::Call(_)) => Err(OpError::BadRequest(format!(
            "{method} does not upgrade the connection; call it without `Upgrade`"
        ))),
        None => Err(unknown(method)),
    }
}

fn unknown(method: &str) -> OpError {
    OpError::UnknownMethod(format!(
        "unknown method {method:?}; this daemon knows: {}",
        known_methods().join(", ")
    ))
}

fn parse<M: Method>(params: Value) -> Result<M::Params, OpError> {
    serde_json::from_value(params)
        .map_err(|e| OpError::BadRequest(format!("invalid params for {}: {e}", M::NAME)))
}

fn to_value<T: Serialize>(v: T) -> Result<Value, OpError> {
    serde_json::to_value(v).map_err(|e| OpError::Failed(format!("cannot encode result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_registered_once() {
        let mut names = known_methods();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a method is registered twice");
    }

    #[test]
    fn kinds_come_from_the_method_types() {
        use banger_api::methods::{image, system, vm};
        assert_eq!(kind(image::Pull::NAME), Some(Kind::Streaming));
        assert_eq!(kind(system::Ping::NAME), Some(Kind::Plain));
        assert_eq!(
            kind(vm::Exec::NAME),
            Some(Kind::Upgrade(banger_api::vm::EXEC_UPGRADE))
        );
        assert_eq!(kind("image.frobnicate"), None);
    }
}
