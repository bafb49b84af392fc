//! A minimal client of QEMU's machine protocol (QMP): JSON lines over a Unix socket.
//!
//! Used to learn that QEMU finished initialising (`query-status` answers only once its
//! main loop runs, after every device was realised) and to ask for an ACPI power-down.
//!
//! # Invariants
//! - Every read and write has a deadline; a QEMU that stops answering is an error, never a
//!   hang.
//! - Asynchronous events between a command and its answer are skipped.
//! - QEMU serves one QMP client at a time: a [`Qmp`] is dropped (the connection closed)
//!   as soon as its caller is done.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// A QMP exchange that failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected.
    #[error("cannot connect to QMP socket {path}: {source}: is the VM running?")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed, or QEMU closed the connection.
    #[error("QMP socket {path}: {source}: the VMM may have exited, see its stderr")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The IO error (`UnexpectedEof` when QEMU closed it).
        #[source]
        source: std::io::Error,
    },
    /// QEMU sent something that is not QMP.
    #[error("QMP socket {path}: unexpected message {message}: is this a QEMU QMP socket?")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// The message (truncated).
        message: String,
    },
    /// QEMU refused a command.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// One QMP connection, past the capabilities negotiation.
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode; each read and write may take
    /// up to `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let io = |source| QmpError::Io {
            path: path.to_path_buf(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Qmp {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.protocol(&greeting));
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    /// Runs `command` (no arguments) and returns its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<Value, QmpError> {
        self.execute_with(command, Value::Null)
    }

    /// Runs `command` with `arguments` (an object; `Null` for none) and returns its
    /// `return` value.
    pub fn execute_with(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let request = if arguments.is_null() {
            serde_json::json!({ "execute": command })
        } else {
            serde_json::json!({ "execute": command, "arguments": arguments })
        };
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let msg = self.read_message()?;
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let field = |k: &str| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                };
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            if msg.get("event").is_none() {
                return Err(self.protocol(&msg));
            }
        }
    }

    /// The run state (`"running"`, `"paused"`, `"shutdown"`, …).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let ret = self.execute("query-status")?;
        match ret.get("status").and_then(Value::as_str) {
            Some(s) => Ok(s.to_string()),
            None => Err(self.protocol(&ret)),
        }
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Io {
                path: self.path.clone(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
            path: self.path.clone(),
            message: truncate(&line),
        })
    }

    fn protocol(&self, msg: &Value) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            message: truncate(&msg.to_string()),
        }
    }
}

fn truncate(s: &str) -> String {
    s.trim().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU answering one scripted exchange.
    fn serve(script: Vec<(&'static str, &'static str)>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            for (expect, answer) in script {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                assert!(line.contains(expect), "{line}");
                w.write_all(answer.as_bytes()).unwrap();
            }
        });
        (dir, path)
    }

    #[test]
    fn status_skips_events_and_errors_are_typed() {
        let (_dir, path) = serve(vec![
            ("qmp_capabilities", "{\"return\": {}}\n"),
            (
                "query-status",
                "{\"event\": \"RESUME\"}\n{\"return\": {\"status\": \"running\", \"running\": true}}\n",
            ),
            (
                "system_powerdown",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
            ),
        ]);
        let mut q = Qmp::connect(&path, Duration::from_secs(10)).unwrap();
        assert_eq!(q.status().unwrap(), "running");
        let e = q.execute("system_powerdown").unwrap_err();
        assert!(e.to_string().contains("GenericError: nope"), "{e}");
        // The fake closed the connection: EOF is an IO error, not a hang.
        assert!(matches!(q.status(), Err(QmpError::Io { .. })));
    }
}
