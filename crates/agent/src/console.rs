//! Messages for the guest console. The agent's stderr is `/dev/console` (the kernel opens it
//! for init; the boot code makes sure fds 0–2 exist), and the host keeps the console's tail
//! for `vm logs` and failure reports, so every line starts with `banger-agent:`.

use std::io::Write;

/// Writes one `banger-agent: …` line to stderr in a single `write`, so lines from the
/// agent and its children do not interleave mid-line.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let line = format!("banger-agent: {args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `log!("fmt", args…)`: a console line, see [`write_line`].
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::write_line(format_args!($($arg)*))
    };
}
pub(crate) use log;
