//! Text that came from a guest, an image or a registry: made safe to print and bounded in
//! size.
//!
//! Such text can hold terminal control sequences (OSC 52 writes the user's clipboard, others
//! retitle the window, hide lines or forge hyperlinks). Every front end prints it through
//! [`visible`]; the daemon bounds what it quotes with [`cut`]. Byte streams the user asked
//! for raw (`vm exec`, `vm ssh`, `vm logs --raw`) are the only exception.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character made visible: C0 controls (but `\n` and `\t`), DEL
/// and the C1 range are written as `\x1b`-style escapes (`\u{9b}` for C1), and a backslash
/// stays itself. Text without controls is borrowed unchanged.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c) {
            if (c as u32) < 0x100 {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`visible`] for bytes that may not be UTF-8 (invalid sequences become U+FFFD).
pub fn visible_bytes(bytes: &[u8]) -> String {
    visible(&String::from_utf8_lossy(bytes)).into_owned()
}

fn needs_escape(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        // C0, DEL, C1; plus the bidi overrides and isolates that reorder what a terminal
        // shows (a file name could otherwise display as something it is not).
        c if c.is_control() => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The shortest suffix of `text` of at most `max` bytes that starts on a character
/// boundary (the newest part of a log).
pub fn cut_front(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Seconds as people write them: `7200` → `2h`, `90` → `1m30s`, `7260` → `2h1m`.
pub fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(visible("hello\tworld\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn osc52_and_csi_are_made_visible() {
        let osc = "\x1b]52;c;Y3VybCBldmlsfHNo\x07done";
        assert_eq!(visible(osc), "\\x1b]52;c;Y3VybCBldmlsfHNo\\x07done");
        assert_eq!(visible("a\u{9b}31mb"), "a\\x9b31mb");
        assert_eq!(visible("x\ry\x7f"), "x\\x0dy\\x7f");
        assert_eq!(visible("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert!(!visible(osc).contains('\x1b'));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        assert_eq!(visible_bytes(b"a\xff\x1bb"), "a\u{fffd}\\x1bb");
    }

    #[test]
    fn cuts_stay_on_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut_front("héllo", 4), "llo");
        assert_eq!(cut_front("héllo", 5), "éllo");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let h = human_duration;
        assert_eq!(
            [h(5), h(60), h(90), h(7200), h(7260)],
            ["5s", "1m", "1m30s", "2h", "2h1m"]
        );
    }
}
