//! A minimal HTTP/1.1 client for Firecracker's API on its Unix socket: one request per
//! connection, JSON bodies, responses framed by `Content-Length`.
//!
//! Std-only on purpose: [`crate::Vmm::launch`] is blocking (the caller runs it in a
//! blocking task), a launch sends about ten small requests, and Firecracker's server
//! (`micro_http`) always frames its responses with `Content-Length` (none for `204`). A
//! hyper client would need a runtime inside that blocking call and three more crates for
//! the same ten requests.
//!
//! # Invariants
//! - Every read and write has a deadline ([`IO_TIMEOUT`]); a stuck Firecracker is an
//!   error, never a hang.
//! - A response body is at most [`MAX_BODY`] bytes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one request may take to be written and answered.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body accepted (Firecracker's are a few hundred bytes).
const MAX_BODY: u64 = 1 << 20;

/// Why a call to Firecracker's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API socket does not accept connections.
    #[error(
        "cannot connect to Firecracker's API socket {socket}: {source}: check that its \
         firecracker process still runs"
    )]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be sent or its answer read.
    #[error(
        "{method} {path} on Firecracker's API socket {socket} failed: {source}: the \
         firecracker process may have exited; its log is in the run directory"
    )]
    Io {
        /// `PUT`, `GET`.
        method: &'static str,
        /// The API path.
        path: String,
        /// The socket.
        socket: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not HTTP as Firecracker speaks it.
    #[error(
        "{method} {path}: Firecracker's answer is not understood ({detail}): is {socket} \
         really a Firecracker API socket?"
    )]
    BadResponse {
        /// The method.
        method: &'static str,
        /// The API path.
        path: String,
        /// The socket.
        socket: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Firecracker refused the request; `fault_message` is its own explanation.
    #[error(
        "Firecracker refused {method} {path} (HTTP {status}): {fault_message} (request \
         body: {body}): fix what it names (a configuration value, or the VM's state: a \
         snapshot needs a paused VM)"
    )]
    Rejected {
        /// The method.
        method: &'static str,
        /// The API path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Firecracker's `fault_message` (or the raw body when it has none).
        fault_message: String,
        /// The JSON body that was sent.
        body: String,
    },
}

/// A response: status and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Sends one request and returns a 2xx response; other statuses become
/// [`ApiError::Rejected`] with Firecracker's `fault_message`.
pub(crate) fn call(
    socket: &Path,
    method: &'static str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Response, ApiError> {
    let body_text = body.map(serde_json::Value::to_string);
    let resp = send(socket, method, path, body_text.as_deref())?;
    if (200..300).contains(&resp.status) {
        return Ok(resp);
    }
    Err(ApiError::Rejected {
        method,
        path: path.to_string(),
        status: resp.status,
        fault_message: fault_message(&resp.body),
        body: body_text.unwrap_or_else(|| "(none)".into()),
    })
}

/// `{"fault_message": "…"}` → the message; anything else → the body as text.
fn fault_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Fault {
        fault_message: String,
    }
    match serde_json::from_slice::<Fault>(body) {
        Ok(f) => f.fault_message,
        Err(_) if body.is_empty() => "(no explanation given)".into(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

fn send(
    socket: &Path,
    method: &'static str,
    path: &str,
    body: Option<&str>,
) -> Result<Response, ApiError> {
    let stream = UnixStream::connect(socket).map_err(|source| ApiError::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    let io = |source| ApiError::Io {
        method,
        path: path.to_string(),
        socket: socket.to_path_buf(),
        source,
    };
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    (&stream).write_all(req.as_bytes()).map_err(io)?;
    read_response(BufReader::new(&stream)).map_err(|e| match e {
        ReadError::Io(source) => io(source),
        ReadError::Bad(detail) => ApiError::BadResponse {
            method,
            path: path.to_string(),
            socket: socket.to_path_buf(),
            detail,
        },
    })
}

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Bad(String),
}

/// Status line, headers, then `Content-Length` bytes of body (none without the header).
fn read_response(mut r: impl BufRead) -> Result<Response, ReadError> {
    let mut line = String::new();
    read_line(&mut r, &mut line)?;
    let status = parse_status(&line)
        .ok_or_else(|| ReadError::Bad(format!("status line {:?}", line.trim_end())))?;
    let mut length: u64 = 0;
    loop {
        line.clear();
        read_line(&mut r, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value
                .trim()
                .parse()
                .map_err(|_| ReadError::Bad(format!("header {header:?}")))?;
        }
    }
    if length > MAX_BODY {
        return Err(ReadError::Bad(format!(
            "a body of {length} bytes (at most {MAX_BODY} expected)"
        )));
    }
    let mut body = Vec::new();
    r.take(length)
        .read_to_end(&mut body)
        .map_err(ReadError::Io)?;
    if body.len() as u64 != length {
        return Err(ReadError::Bad(format!(
            "the body ended after {} of {length} bytes",
            body.len()
        )));
    }
    Ok(Response { status, body })
}

fn read_line(r: &mut impl BufRead, line: &mut String) -> Result<(), ReadError> {
    // Bounded: a header line longer than 8 KiB is not Firecracker's.
    let n = r.take(8192).read_line(line).map_err(ReadError::Io)?;
    if n == 0 {
        return Err(ReadError::Bad("the connection closed mid-response".into()));
    }
    Ok(())
}

/// `HTTP/1.1 204 No Content` → 204.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn responses_are_framed_by_content_length() {
        let r = read_response(
            &b"HTTP/1.1 400 Bad Request\r\nServer: Firecracker API\r\nContent-Length: 21\r\n\r\n\
               {\"fault_message\":\"x\"}trailing"[..],
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(fault_message(&r.body), "x");
        let r = read_response(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        assert!(matches!(
            read_response(&b"SSH-2.0\r\n\r\n"[..]),
            Err(ReadError::Bad(_))
        ));
        assert!(matches!(
            read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"[..]),
            Err(ReadError::Bad(_))
        ));
        assert_eq!(fault_message(b"oops"), "oops");
    }

    #[test]
    fn a_refusal_carries_the_fault_message_and_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                if l == "\r\n" {
                    break;
                }
                head.push_str(&l);
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let msg = br#"{"fault_message":"The kernel file cannot be opened"}"#;
            write!(
                s,
                "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n",
                msg.len()
            )
            .unwrap();
            s.write_all(msg).unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        let body = serde_json::json!({"kernel_image_path": "/nope"});
        let e = call(&sock, "PUT", "/boot-source", Some(&body)).unwrap_err();
        let (head, sent) = server.join().unwrap();
        assert!(head.starts_with("PUT /boot-source HTTP/1.1\r\n"), "{head}");
        assert_eq!(sent, r#"{"kernel_image_path":"/nope"}"#);
        let text = e.to_string();
        assert!(
            matches!(&e, ApiError::Rejected { status: 400, fault_message, .. }
                if fault_message == "The kernel file cannot be opened"),
            "{e:?}"
        );
        assert!(
            text.contains("/nope") && text.contains("PUT /boot-source"),
            "{text}"
        );

        let gone = dir.path().join("gone.sock");
        assert!(matches!(
            call(&gone, "GET", "/", None),
            Err(ApiError::Connect { .. })
        ));
    }
}
