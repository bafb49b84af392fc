//! `vm.logs`: the guest's serial console, kept in the VM's directory across boots.
//! With `follow`, new output streams until the VM stops or the client leaves.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use banger_api::pull::PullEvent;
use banger_api::vm::{VmLogs, VmLogsParams, VmState};

use super::start::tail;
use super::{Vms, state_of};
use crate::error::OpError;
use crate::progress::OpContext;

/// The console log's file name in a VM's directory.
pub const CONSOLE_LOG: &str = "console.log";

impl Vms {
    pub async fn logs(
        self: &Arc<Self>,
        p: VmLogsParams,
        ctx: &OpContext,
    ) -> Result<VmLogs, OpError> {
        let row = self.find(&p.vm)?;
        let path = std::path::Path::new(&row.dir).join(CONSOLE_LOG);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(OpError::io(format!("reading {}", path.display()), e)),
        };
        let mut offset = bytes.len() as u64;
        let text = String::from_utf8_lossy(&bytes).replace('\r', "");
        let text = match p.tail_lines {
            Some(n) => {
                let mut t = tail(&text, n);
                if !t.is_empty() {
                    t.push('\n');
                }
                t
            }
            None => text,
        };
        if !p.follow {
            return Ok(VmLogs { text });
        }
        ctx.emit(PullEvent::Log { text });
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            if ctx.is_cancelled() {
                return Err(OpError::Cancelled);
            }
            if let Ok(mut f) = std::fs::File::open(&path) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len < offset {
                    offset = 0; // a new boot truncated the log
                }
                if len > offset && f.seek(SeekFrom::Start(offset)).is_ok() {
                    let mut chunk = Vec::new();
                    if f.take(len - offset).read_to_end(&mut chunk).is_ok() {
                        offset += chunk.len() as u64;
                        ctx.emit(PullEvent::Log {
                            text: String::from_utf8_lossy(&chunk).replace('\r', ""),
                        });
                    }
                }
            }
            let running = self.store.find_vm(&row.id)?.is_some_and(|r| {
                matches!(
                    state_of(&r),
                    VmState::Running | VmState::Starting | VmState::Stopping
                )
            });
            if !running {
                return Ok(VmLogs {
                    text: String::new(),
                });
            }
        }
    }
}
