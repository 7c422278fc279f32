//! A list's members as CSV (`rundbrief export --list NAME`, the
//! dashboard's `GET /lists/NAME/export.csv`): email, name and one column per
//! attribute, in a form `rundbrief import` reads back. Two keyset-paged
//! passes (attribute names, then rows), so memory does not grow with the
//! list: [`Export::open`] makes the first, [`Export::next_page`] the second,
//! one page of CSV bytes at a time.
//!
//! Subscriber data comes from strangers (the subscribe form, imported
//! files), and the file is often opened in a spreadsheet: unless `raw`,
//! every cell that a spreadsheet would evaluate as a formula is written
//! with a `'` in front ([`rundbrief_core::csvin::neutralise_formula`]).

use crate::{AppError, ErrorKind, Result};
use rundbrief_core::StatusFilter;
use rundbrief_core::csvin::neutralise_formula;
use rundbrief_store::{Store, SubscriberQuery};
use std::collections::BTreeSet;

/// Subscribers read per page.
const PAGE: u64 = 1000;

/// An export in progress: the header is known, rows come page by page.
pub struct Export {
    store: Store,
    query: SubscriberQuery,
    columns: Vec<String>,
    raw: bool,
    header_done: bool,
    done: bool,
    rows: u64,
}

impl Export {
    /// Starts exporting `list`'s members with `status` (None: every
    /// member, whatever their status); reads the attribute names.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a list that does not exist; store failures.
    pub async fn open(
        store: &Store,
        list: &str,
        status: Option<StatusFilter>,
        raw: bool,
    ) -> Result<Export> {
        store.list(list).await?;
        let query = SubscriberQuery {
            list: Some(list.to_string()),
            status,
            after: None,
            limit: PAGE,
        };
        let mut columns = BTreeSet::new();
        let mut q = query.clone();
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
        Ok(Export {
            store: store.clone(),
            query,
            columns: columns.into_iter().collect(),
            raw,
            header_done: false,
            done: false,
            rows: 0,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn cell<'a>(&self, c: &'a str) -> std::borrow::Cow<'a, str> {
        if self.raw {
            c.into()
        } else {
            neutralise_formula(c)
        }
    }

    /// The next piece of the file: the header line first, then one page of
    /// rows at a time; None at the end.
    ///
    /// # Errors
    /// Store failures.
    pub async fn next_page(&mut self) -> Result<Option<Vec<u8>>> {
        let mut out = csv::Writer::from_writer(Vec::new());
        let bad = |e: csv::Error| AppError::wrap(ErrorKind::Unavailable, e);
        if !self.header_done {
            self.header_done = true;
            let mut header = vec!["email".to_string(), "name".to_string()];
            header.extend(self.columns.iter().map(|c| self.cell(c).into_owned()));
            out.write_record(&header).map_err(bad)?;
            return out.into_inner().map(Some).map_err(|e| {
                AppError::unavailable(format!("writing the CSV header: {}", e.error()))
            });
        }
        if self.done {
            return Ok(None);
        }
        let rows = self.store.subscribers(&self.query).await?;
        let Some(last) = rows.last() else {
            self.done = true;
            return Ok(None);
        };
        self.query.after = Some(last.subscriber.email.to_lowercase());
        for r in &rows {
            let s = &r.subscriber;
            let mut record = vec![s.email.clone(), s.name.clone().unwrap_or_default()];
            record.extend(self.columns.iter().map(|c| match s.attributes.get(c) {
                Some(serde_json::Value::String(v)) => v.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            }));
            let record: Vec<String> = record
                .iter()
                .map(|cell| self.cell(cell).into_owned())
                .collect();
            out.write_record(&record).map_err(bad)?;
            self.rows += 1;
        }
        out.into_inner()
            .map(Some)
            .map_err(|e| AppError::unavailable(format!("writing CSV rows: {}", e.error())))
    }
}
