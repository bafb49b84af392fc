//! Human output: aligned tables, sizes, and colour only where it helps (a TTY without
//! `NO_COLOR`).

use std::io::IsTerminal;

use banger_api::text::visible;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    Dim,
    Bold,
}

impl Style {
    /// Colour on stdout only when it is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            colour: !no_color && std::io::stdout().is_terminal(),
        }
    }

    pub fn plain() -> Self {
        Style { colour: false }
    }

    pub fn paint(&self, tone: Tone, text: &str) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31",
            Tone::Dim => "2",
            Tone::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// Renders rows under headers, columns padded to their widest cell. Cells are data (names,
/// addresses a guest reported): their control characters are made visible.
pub fn table(style: &Style, headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| visible(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    format!("{c}{}", " ".repeat(pad + 2))
                }
            })
            .collect::<String>()
    };
    let mut out = String::new();
    let header = line(headers.iter().map(|h| h.to_string()).collect());
    out.push_str(&style.paint(Tone::Bold, header.trim_end()));
    out.push('\n');
    for row in &rows {
        out.push_str(line(row.clone()).trim_end());
        out.push('\n');
    }
    out
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Prints a value as pretty JSON (the `--json` output).
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", json_string(value)?);
    Ok(())
}

/// The `--json` text of a value (what [`print_json`] prints, without the newline).
pub fn json_string<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

/// Makes a print to a closed pipe (`banger … | head`, `banger … 2>&1 | true`) end this
/// process the way SIGPIPE ends a Unix tool (status 141 in the shell) instead of with a
/// panic: Rust ignores SIGPIPE, so `println!`/`eprintln!` panic on EPIPE. Restoring
/// SIGPIPE's default up front instead would also let a daemon closing our socket kill us
/// silently mid-write. What a dead `vm run --rm` leaves, the daemon's lease removes.
pub fn end_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_broken_pipe_print(panic_message(info.payload())) {
            die_of_sigpipe();
        }
        default(info);
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("")
}

/// The standard library's panic of a failed `print!` family write to a closed pipe.
fn is_broken_pipe_print(message: &str) -> bool {
    message.starts_with("failed printing to std")
        && message.contains(&std::io::Error::from_raw_os_error(libc::EPIPE).to_string())
}

/// Ends the process by SIGPIPE, as the kernel would end a writer to a closed pipe.
pub fn die_of_sigpipe() -> ! {
    // SAFETY: restoring a signal's default disposition and raising it have no
    // preconditions; the process ends at the raise.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_print_to_a_closed_pipe_counts_as_one() {
        let epipe = std::io::Error::from_raw_os_error(libc::EPIPE);
        assert!(is_broken_pipe_print(&format!(
            "failed printing to stdout: {epipe}"
        )));
        assert!(is_broken_pipe_print(&format!(
            "failed printing to stderr: {epipe}"
        )));
        assert!(!is_broken_pipe_print(
            "failed printing to stdout: No space left on device"
        ));
        assert!(!is_broken_pipe_print("index out of bounds"));
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn table_aligns_columns_without_colour() {
        let t = table(
            &Style::plain(),
            &["NAME", "SIZE"],
            &[
                vec!["a".into(), "1 B".into()],
                vec!["longer".into(), "2 B".into()],
            ],
        );
        assert_eq!(t, "NAME    SIZE\na       1 B\nlonger  2 B\n");
    }

    #[test]
    fn table_cells_show_controls_escaped() {
        let t = table(
            &Style::plain(),
            &["ADDRESS"],
            &[vec!["\u{1b}]0;pwned\u{7}".into()]],
        );
        assert_eq!(t, "ADDRESS\n\\x1b]0;pwned\\x07\n");
    }
}
