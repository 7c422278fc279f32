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
        t.add_row(r.into_iter().collect::<Vec<_>>());
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
