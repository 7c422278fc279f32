//! Printing: JSON on stdout for `--json`, aligned tables otherwise.

use anyhow::Context;
use comfy_table::{Table, presets};
use serde::Serialize;
use std::io::Write;

/// Prints `value` as pretty JSON on stdout.
///
/// # Errors
/// A value that does not serialize, or stdout that cannot be written
/// (`main` ends quietly when its reader has gone, where `println!` would
/// panic).
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("writing JSON to stdout")?;
    Ok(())
}

/// A plain table: a header row, then the rows, columns padded.
pub fn table<I, R>(header: &[&str], rows: I) -> String
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = String>,
{
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    for r in rows {
        t.add_row(
            r.into_iter()
                .map(|c| safe(&c).into_owned())
                .collect::<Vec<_>>(),
        );
    }
    // comfy-table pads every column with one space on each side; trim the
    // left edge so the output starts at column 0.
    t.to_string()
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A timestamp for humans: UTC, to the second.
pub fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Text from subscribers, CSV files or bounces, made safe for a terminal:
/// control characters (ESC, BEL, CR, …) and the bidirectional overrides
/// that reorder what is shown are printed as `\u{..}` escapes, so an
/// attribute cannot clear the screen, retitle the window or disguise
/// itself. JSON output stays exact; this is for human output only.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_are_shown_not_obeyed() {
        assert_eq!(safe("Anna Köln"), "Anna Köln");
        assert_eq!(safe("\u{1b}]0;pwned\u{7}x"), "\\u{1b}]0;pwned\\u{7}x");
        assert_eq!(safe("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(safe("evil\u{202e}gnp.exe"), "evil\\u{202e}gnp.exe");
        let t = table(&["name"], [[String::from("\u{1b}[31mred")]]);
        assert!(!t.contains('\u{1b}'), "{t:?}");
        assert!(t.contains("\\u{1b}[31mred"), "{t:?}");
    }
}
