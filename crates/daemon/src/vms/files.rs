//! `vm.cp.put`, `vm.cp.get` and `vm.proxy`: raw byte streams between the client's upgraded
//! connection and the agent (tar archives one way or the other, or a TCP connection).

use std::sync::Arc;

use banger_api::vm::{VmCpGetParams, VmCpPutParams, VmProxyParams};
use banger_guest_proto::{Connect, GetFiles, PutFiles, paths};

use super::exec::{RelayMode, SessionOutput, StreamSession};
use super::{Vms, agent};
use crate::error::OpError;

impl Vms {
    pub async fn cp_put(self: &Arc<Self>, p: VmCpPutParams) -> Result<StreamSession, OpError> {
        require_absolute(&p.dest)?;
        let (row, conn) = self.agent_of(&p.vm).await?;
        let params = PutFiles {
            dest: p.dest,
            owner: p.owner,
        };
        let (input, response) = conn
            .stream(paths::FILES_PUT, &params)
            .map_err(|e| OpError::Failed(format!("copy into VM {}: {e}", row.name)))?;
        Ok(StreamSession {
            input,
            output: SessionOutput::Agent(response),
            mode: RelayMode::Upload,
            busy: self.live(&row.id).map(|l| l.busy()),
        })
    }

    pub async fn cp_get(self: &Arc<Self>, p: VmCpGetParams) -> Result<StreamSession, OpError> {
        require_absolute(&p.path)?;
        let (row, conn) = self.agent_of(&p.vm).await?;
        let (input, response) = conn
            .stream(
                paths::FILES_GET,
                &GetFiles {
                    path: p.path.clone(),
                },
            )
            .map_err(|e| OpError::Failed(format!("copy from VM {}: {e}", row.name)))?;
        let response =
            ready_or_refused(response, &row.name, &format!("{}:{}", row.name, p.path)).await?;
        Ok(StreamSession {
            input,
            output: SessionOutput::Agent(Box::pin(async move { Ok(response) })),
            mode: RelayMode::HalfClose,
            busy: self.live(&row.id).map(|l| l.busy()),
        })
    }

    pub async fn proxy(self: &Arc<Self>, p: VmProxyParams) -> Result<StreamSession, OpError> {
        let name = p.vm.strip_suffix(".vm").unwrap_or(&p.vm).to_string();
        let (row, conn) = self.agent_of(&name).await?;
        if p.port == 22 {
            // OpenSSH is about to check the host key: learn the guest's current keys first.
            self.refresh_known_hosts(&row.name, &conn).await;
        }
        let (input, response) = conn
            .stream(paths::CONNECT, &Connect { port: p.port })
            .map_err(|e| OpError::Failed(format!("proxy to VM {}: {e}", row.name)))?;
        let what = format!("port {} of VM {}", p.port, row.name);
        let response = ready_or_refused(response, &row.name, &what).await?;
        Ok(StreamSession {
            input,
            output: SessionOutput::Agent(Box::pin(async move { Ok(response) })),
            mode: RelayMode::HalfClose,
            busy: self.live(&row.id).map(|l| l.busy()),
        })
    }
}

fn require_absolute(path: &str) -> Result<(), OpError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(OpError::BadRequest(format!(
            "guest path {path:?} must be absolute (e.g. /root/{path})"
        )))
    }
}

/// Awaits the agent's answer; a refusal becomes a clear error before the client upgrades.
async fn ready_or_refused(
    response: impl std::future::Future<
        Output = Result<hyper::Response<hyper::body::Incoming>, agent::AgentCallError>,
    >,
    vm: &str,
    what: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, OpError> {
    let response = agent::within(what, agent::CALL_TIMEOUT, response)
        .await
        .map_err(|e| OpError::Failed(format!("VM {vm}: {e}")))?;
    let status = response.status();
    if status == hyper::StatusCode::OK {
        return Ok(response);
    }
    let body = agent::error_body(response.into_body()).await;
    let message = agent::refused(what, &body).to_string();
    Err(match status {
        hyper::StatusCode::NOT_FOUND => OpError::NotFound(format!("{what}: {message}")),
        hyper::StatusCode::BAD_REQUEST => OpError::BadRequest(format!("{what}: {message}")),
        _ => OpError::Failed(format!("{what}: {message}")),
    })
}
