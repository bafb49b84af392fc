//! The `vm.exec` stream between a client and the guest agent: the client speaks the
//! daemon's public framing (`banger_api::exec`, documented in docs/api.md), the agent the
//! guest protocol (`banger_guest_proto::frame`); each frame is translated here, so neither
//! side sees the other's encoding. Both inputs are untrusted: every frame is bounded and a
//! malformed one ends the exec with an `error` message, never a panic.

use banger_api::exec::{
    ClientControl, ClientFrame, DaemonControl, DaemonFrame, ExecErrorCode, ExitStatus, FrameReader,
};
use banger_guest_proto::frame::{self, FrameBuffer, MAX_CHUNK};
use banger_guest_proto::{ExecInput, ExecOutput, StartFailureKind, TtySize};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::agent::PendingResponse;

/// Relays one exec until the agent's final frame, or until the client goes away (which
/// drops the agent stream: the agent kills the guest process).
pub async fn relay<S>(client: S, to_agent: mpsc::Sender<Bytes>, from_agent: PendingResponse)
where
    S: AsyncRead + AsyncWrite,
{
    let (from_client, mut to_client) = tokio::io::split(client);
    let ended = {
        let inbound = client_to_agent(from_client, to_agent);
        let outbound = agent_to_client(from_agent, &mut to_client);
        tokio::select! {
            () = outbound => None,
            client = inbound => Some(client),
        }
    };
    match ended {
        None => tracing::info!("exec finished"),
        Some(None) => tracing::info!("exec client went away; the guest process is stopped"),
        Some(Some(message)) => {
            tracing::warn!(%message, "exec client sent a bad frame; the guest process is stopped");
            let error = error_frame(ExecErrorCode::BadFrame, message);
            let _ = to_client.write_all(&error).await;
        }
    }
    let _ = to_client.shutdown().await;
}

/// Reads client frames and forwards them to the agent until the client closes (`None`) or
/// sends something unreadable (`Some(why)`).
async fn client_to_agent<R: AsyncRead + Unpin>(
    mut from_client: R,
    to_agent: mpsc::Sender<Bytes>,
) -> Option<String> {
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 << 10];
    // Once the agent takes no more input (the process closed its stdin), further input is
    // dropped, but the client is still read so its hang-up is noticed.
    let mut agent_takes_input = true;
    loop {
        loop {
            let frame = match reader.next_client() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Some(e.to_string()),
            };
            for bytes in to_guest(frame) {
                if agent_takes_input && to_agent.send(bytes).await.is_err() {
                    agent_takes_input = false;
                }
            }
        }
        match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => reader.push(&buf[..n]),
        }
    }
}

/// A client frame as guest-protocol frames (stdin is re-chunked to the guest's limit).
fn to_guest(frame: ClientFrame) -> Vec<Bytes> {
    let inputs = match frame {
        ClientFrame::Stdin(data) => data
            .chunks(MAX_CHUNK)
            .map(|c| ExecInput::Stdin(c.to_vec()))
            .collect(),
        ClientFrame::StdinEof => vec![ExecInput::StdinEof],
        ClientFrame::Control(ClientControl::Resize { rows, cols }) => {
            vec![ExecInput::Resize(TtySize { rows, cols })]
        }
        ClientFrame::Control(ClientControl::Signal { signal }) => vec![ExecInput::Signal(signal)],
        ClientFrame::Control(ClientControl::Unknown) => Vec::new(),
    };
    inputs
        .iter()
        .filter_map(|input| frame::encode(input).ok())
        .collect()
}

/// Writes the agent's output to the client as public frames, ending with exactly one
/// `exit` or `error` control message.
async fn agent_to_client<W: AsyncWrite + Unpin>(from_agent: PendingResponse, to_client: &mut W) {
    let last = match forward_output(from_agent, to_client).await {
        Ok(Some(last)) => last,
        Ok(None) => error_frame(
            ExecErrorCode::ExecFailed,
            "the guest agent's stream ended before the command's exit status (did the VM stop?)"
                .into(),
        ),
        Err(Forward::ClientGone) => return,
        Err(Forward::Agent(message)) => error_frame(ExecErrorCode::ExecFailed, message),
    };
    let _ = to_client.write_all(&last).await;
    let _ = to_client.flush().await;
}

enum Forward {
    ClientGone,
    Agent(String),
}

/// Forwards frames until the agent's final one, returned encoded (unsent); `None` when the
/// agent's body ended without one.
async fn forward_output<W: AsyncWrite + Unpin>(
    from_agent: PendingResponse,
    to_client: &mut W,
) -> Result<Option<Vec<u8>>, Forward> {
    let response = from_agent
        .await
        .map_err(|e| Forward::Agent(e.to_string()))?;
    let mut body = response.into_body();
    let mut frames = FrameBuffer::default();
    while let Some(chunk) = body.frame().await {
        let chunk = chunk.map_err(|e| Forward::Agent(format!("the guest agent's stream: {e}")))?;
        let Ok(data) = chunk.into_data() else {
            continue;
        };
        frames.push(&data);
        while let Some(output) = frames
            .next::<ExecOutput>()
            .map_err(|e| Forward::Agent(format!("the guest agent sent a bad frame: {e}")))?
        {
            let (frame, last) = to_client_frame(output);
            let bytes = frame
                .encode()
                .map_err(|e| Forward::Agent(format!("the guest agent sent a bad frame: {e}")))?;
            if last {
                return Ok(Some(bytes));
            }
            to_client
                .write_all(&bytes)
                .await
                .map_err(|_| Forward::ClientGone)?;
        }
        to_client.flush().await.map_err(|_| Forward::ClientGone)?;
    }
    Ok(None)
}

/// A guest frame as a public one, and whether it is the last.
fn to_client_frame(output: ExecOutput) -> (DaemonFrame, bool) {
    match output {
        ExecOutput::Started { pid } => {
            (DaemonFrame::Control(DaemonControl::Started { pid }), false)
        }
        ExecOutput::Stdout(data) => (DaemonFrame::Stdout(data), false),
        ExecOutput::Stderr(data) => (DaemonFrame::Stderr(data), false),
        ExecOutput::Exited(status) => {
            let status = match status {
                banger_guest_proto::ExitStatus::Code(c) => ExitStatus::Code(c),
                banger_guest_proto::ExitStatus::Signal(s) => ExitStatus::Signal(s),
            };
            (DaemonFrame::Control(DaemonControl::exit(status)), true)
        }
        ExecOutput::FailedToStart(failure) => {
            let code = match failure.kind {
                StartFailureKind::NotFound => ExecErrorCode::CommandNotFound,
                StartFailureKind::PermissionDenied => ExecErrorCode::PermissionDenied,
                StartFailureKind::Other => ExecErrorCode::StartFailed,
            };
            let message = failure.message;
            (
                DaemonFrame::Control(DaemonControl::Error { code, message }),
                true,
            )
        }
    }
}

fn error_frame(code: ExecErrorCode, message: String) -> Vec<u8> {
    DaemonFrame::Control(DaemonControl::Error { code, message })
        .encode()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_guest_proto::StartFailure;

    #[test]
    fn client_frames_become_guest_frames() {
        let decode = |bytes: &Bytes| {
            let mut fb = FrameBuffer::default();
            fb.push(bytes);
            fb.next::<ExecInput>().expect("decode").expect("a frame")
        };
        let big = to_guest(ClientFrame::Stdin(vec![1; MAX_CHUNK * 2 + 1]));
        assert_eq!(big.len(), 3, "re-chunked to the guest's limit");
        assert_eq!(
            decode(&to_guest(ClientFrame::StdinEof)[0]),
            ExecInput::StdinEof
        );
        assert_eq!(
            decode(&to_guest(ClientFrame::Control(ClientControl::Signal { signal: 2 }))[0]),
            ExecInput::Signal(2)
        );
        assert_eq!(
            decode(
                &to_guest(ClientFrame::Control(ClientControl::Resize {
                    rows: 24,
                    cols: 80
                }))[0]
            ),
            ExecInput::Resize(TtySize { rows: 24, cols: 80 })
        );
        assert!(to_guest(ClientFrame::Control(ClientControl::Unknown)).is_empty());
    }

    #[test]
    fn guest_outcomes_become_exit_or_error() {
        let (frame, last) = to_client_frame(ExecOutput::Exited(
            banger_guest_proto::ExitStatus::Signal(9),
        ));
        assert!(last);
        assert_eq!(
            frame,
            DaemonFrame::Control(DaemonControl::Exit {
                code: None,
                signal: Some(9)
            })
        );
        let (frame, last) = to_client_frame(ExecOutput::FailedToStart(StartFailure {
            kind: StartFailureKind::NotFound,
            message: "nosuch: not found".into(),
        }));
        assert!(last);
        assert_eq!(
            frame,
            DaemonFrame::Control(DaemonControl::Error {
                code: ExecErrorCode::CommandNotFound,
                message: "nosuch: not found".into()
            })
        );
        assert!(!to_client_frame(ExecOutput::Started { pid: 1 }).1);
    }
}
