//! `vm.exec`: opens an exec stream to the guest agent, which [`super::exec_relay`] joins
//! to the client's upgraded connection.

use std::sync::Arc;
use std::time::Duration;

use banger_api::vm::{VmExecParams, VmState};
use banger_guest_proto::{ExecRequest, TtySize, frame};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Vms, state_of};
use crate::error::OpError;

/// How long an exec waits for the agent (it redials within a second of a daemon restart).
const AGENT_WAIT: Duration = Duration::from_secs(30);

pub use super::agent::PendingResponse;

/// How the relay treats the client closing its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Exec: frames are translated between the public and the guest framing; the client
    /// going away ends the stream (and kills the guest process).
    Exec,
    /// Files and proxy: the client's EOF ends the input; the output still flows to the end.
    HalfClose,
    /// An upload: as `HalfClose`, and a refusal is turned into a `PutResult` error.
    Upload,
}

/// What a stream answers the client with.
pub enum SessionOutput {
    /// The agent's response, whose body is relayed (see [`RelayMode`]).
    Agent(PendingResponse),
    /// The daemon's own answer, once the input has ended (an upload to the host).
    Host(std::pin::Pin<Box<dyn std::future::Future<Output = Bytes> + Send>>),
}

/// An open stream: bytes from the client go into `input`; `output` is what goes back.
pub struct StreamSession {
    pub input: mpsc::Sender<Bytes>,
    pub output: SessionOutput,
    pub mode: RelayMode,
    /// Keeps the VM from counting as idle while the session is relayed.
    pub busy: Option<super::live::Busy>,
}

impl Vms {
    pub async fn exec(self: &Arc<Self>, p: VmExecParams) -> Result<StreamSession, OpError> {
        if p.argv.is_empty() {
            return Err(OpError::BadRequest(
                "no command given; e.g. `banger vm exec NAME -- uname -a`".into(),
            ));
        }
        let (row, conn) = self.agent_of(&p.vm).await?;
        let request = ExecRequest {
            argv: p.argv,
            env: p.env,
            cwd: p.cwd,
            user: p.user,
            tty: p.tty.map(|(rows, cols)| TtySize { rows, cols }),
            term: p.term,
        };
        let first = frame::encode(&request)
            .map_err(|e| OpError::Failed(format!("encoding the exec request: {e}")))?;
        let (input, response) = conn
            .exec(first)
            .await
            .map_err(|e| OpError::Failed(format!("exec in VM {}: {e}", row.name)))?;
        Ok(StreamSession {
            input,
            output: SessionOutput::Agent(Box::pin(async move { Ok(response) })),
            mode: RelayMode::Exec,
            busy: self.live(&row.id).map(|l| l.busy()),
        })
    }

    /// The agent connection of a running VM, waiting briefly for a reconnect.
    pub(super) async fn agent_of(
        &self,
        vm: &str,
    ) -> Result<(crate::store::VmRow, super::agent::AgentConn), OpError> {
        let row = self.find(vm)?;
        if state_of(&row) == VmState::Paused {
            return Err(OpError::NotRunning(format!(
                "VM {} is paused; resume it with `banger vm resume {}`",
                row.name, row.name
            )));
        }
        if state_of(&row) != VmState::Running {
            return Err(OpError::NotRunning(format!(
                "VM {} is not running (it is {}); start it with `banger vm start {}`",
                row.name, row.state, row.name
            )));
        }
        let live = self.live(&row.id).ok_or_else(|| {
            OpError::NotRunning(format!("VM {} has no running processes", row.name))
        })?;
        let conn = live.agent(AGENT_WAIT).await?;
        Ok((row, conn))
    }
}
