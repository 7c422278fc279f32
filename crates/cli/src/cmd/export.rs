//! `rundbrief export --list NAME [--status S|all] > out.csv`: email, name and
//! one column per attribute, in a form `rundbrief import` reads back. By
//! default the list's subscribed members only. The file is written by
//! [`rundbrief_app::export::Export`] (shared with the dashboard's export
//! link): two keyset-paged passes, so memory does not grow with the list,
//! and cells a spreadsheet would run as formulas get a `'` unless `--raw`.

use crate::args::ExportArgs;
use anyhow::Context;
use rundbrief_app::export::Export;
use rundbrief_core::StatusFilter;
use rundbrief_store::Store;
use std::io::Write;
use std::process::ExitCode;

pub async fn run(store: &Store, a: &ExportArgs) -> anyhow::Result<ExitCode> {
    // By default only who is subscribed to the list: an export of everyone
    // imported into another list would subscribe the people who left.
    let status: Option<StatusFilter> = match a.status.as_deref() {
        None => Some("subscribed".parse()?),
        Some("all") => None,
        Some(s) => Some(s.parse()?),
    };
    let mut export = Export::open(store, &a.list, status, a.raw).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while let Some(bytes) = export.next_page().await? {
        out.write_all(&bytes).context("writing CSV to stdout")?;
    }
    out.flush().context("writing CSV to stdout")?;
    tracing::info!(rows = export.rows(), list = %a.list, "export finished");
    Ok(ExitCode::SUCCESS)
}
