//! The local terminal, for interactive commands (`vm exec -t`): raw mode that is undone on
//! every way out, and the window size.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use rustix::termios::{self, OptionalActions, Termios};

/// Stdin's terminal in raw mode (no echo, no line editing, no signals from keys: every key,
/// Ctrl-C included, reaches the reader as a byte) for as long as this lives. Dropping it
/// restores the settings found, also while a panic unwinds or an error returns.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Fails when stdin is not a terminal.
    pub fn enable() -> std::io::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// `(rows, cols)` of the terminal on stdout, stdin or stderr (the first that is one), if
/// any reports a usable size.
pub fn window_size() -> Option<(u16, u16)> {
    let size = |fd: std::os::fd::BorrowedFd<'_>, is_tty: bool| {
        if !is_tty {
            return None;
        }
        let ws = termios::tcgetwinsize(fd).ok()?;
        (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
    };
    let (stdout, stdin, stderr) = (std::io::stdout(), std::io::stdin(), std::io::stderr());
    size(stdout.as_fd(), stdout.is_terminal())
        .or_else(|| size(stdin.as_fd(), stdin.is_terminal()))
        .or_else(|| size(stderr.as_fd(), stderr.is_terminal()))
}
