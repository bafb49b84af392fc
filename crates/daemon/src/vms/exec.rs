//! `vm.exec`: opens an exec stream to the guest agent. The server relays frames between
//! the client's upgraded connection and this stream without decoding them.

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

/// An open exec: frames for the agent go into `input`; `output` is the agent's response
/// body of `ExecOutput` frames.
pub struct ExecSession {
    pub input: mpsc::Sender<Bytes>,
    pub output: hyper::body::Incoming,
}

impl Vms {
    pub async fn exec(self: &Arc<Self>, p: VmExecParams) -> Result<ExecSession, OpError> {
        if p.argv.is_empty() {
            return Err(OpError::BadRequest(
                "no command given; e.g. `banger vm exec NAME -- uname -a`".into(),
            ));
        }
        let row = self.find(&p.vm)?;
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
        Ok(ExecSession {
            input,
            output: response.into_body(),
        })
    }
}
