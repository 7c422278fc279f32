//! `rundbrief export --list NAME [--status S|all] > out.csv`: email, name and
//! one column per attribute, in a form `rundbrief import` reads back. By
//! default the list's subscribed members only.
//! Two keyset-paged passes (attribute names, then rows), so memory does not
//! grow with the list.
//!
//! Subscriber data comes from strangers (the subscribe form, imported
//! files), and the file is often opened in a spreadsheet: unless `--raw`,
//! every cell that a spreadsheet would evaluate as a formula is written
//! with a `'` in front ([`rundbrief_core::csvin::neutralise_formula`]).

use crate::args::ExportArgs;
use anyhow::Context;
use rundbrief_core::StatusFilter;
use rundbrief_core::csvin::neutralise_formula;
use rundbrief_store::{Store, SubscriberQuery};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;

const PAGE: u64 = 1000;

pub async fn run(store: &Store, a: &ExportArgs) -> anyhow::Result<ExitCode> {
    // By default only who is subscribed to the list: an export of everyone
    // imported into another list would subscribe the people who left.
    let status: Option<StatusFilter> = match a.status.as_deref() {
        None => Some("subscribed".parse()?),
        Some("all") => None,
        Some(s) => Some(s.parse()?),
    };
    let base = SubscriberQuery {
        list: Some(a.list.clone()),
        status,
        after: None,
        limit: PAGE,
    };

    let mut columns = BTreeSet::new();
    let mut q = base.clone();
    loop {
        let rows = store.subscribers(&q).await?;
        let Some(last) = rows.last() else { break };
        q.after = Some(last.subscriber.email.to_lowercase());
        for r in &rows {
            columns.extend(r.subscriber.attributes.keys().cloned());
        }
    }
    columns.remove("email");
    columns.remove("name");

    let stdout = std::io::stdout();
    let mut out = csv::Writer::from_writer(std::io::BufWriter::new(stdout.lock()));
    let mut header = vec!["email".to_string(), "name".to_string()];
    header.extend(columns.iter().map(|c| {
        if a.raw {
            c.clone()
        } else {
            neutralise_formula(c).into_owned()
        }
    }));
    out.write_record(&header)?;
    let mut q = base;
    let mut n = 0u64;
    loop {
        let rows = store.subscribers(&q).await?;
        let Some(last) = rows.last() else { break };
        q.after = Some(last.subscriber.email.to_lowercase());
        for r in &rows {
            let s = &r.subscriber;
            let mut record = vec![s.email.clone(), s.name.clone().unwrap_or_default()];
            record.extend(columns.iter().map(|c| match s.attributes.get(c) {
                Some(serde_json::Value::String(v)) => v.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            }));
            if !a.raw {
                for cell in &mut record {
                    if let std::borrow::Cow::Owned(safe) = neutralise_formula(cell) {
                        *cell = safe;
                    }
                }
            }
            out.write_record(&record).context("writing CSV to stdout")?;
            n += 1;
        }
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .context("writing CSV to stdout")?
        .flush()?;
    tracing::info!(rows = n, list = %a.list, "export finished");
    Ok(ExitCode::SUCCESS)
}
