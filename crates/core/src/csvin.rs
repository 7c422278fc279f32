//! Streaming CSV rows for `rundbrief import`.
//!
//! [`read_rows`] takes any [`Read`] and yields one [`Row`] per record, never
//! holding more than one record (and one bounded line) in memory:
//!
//! - the header row maps `email` (required), `name`, and every other column to
//!   an attribute; column names are matched case-insensitively;
//! - UTF-8 with or without a byte-order mark; `,`, `;` or TAB as delimiter,
//!   detected from the header line;
//! - a bad row becomes [`Row::Invalid`] with its line number and a reason that
//!   says what to do, and reading goes on: nothing valid is lost because of it;
//! - a physical line longer than the limit is cut off at the limit, the rest of
//!   it skipped, and the record reported invalid, so a broken file cannot
//!   exhaust memory.

use crate::address::Address;
use crate::model::Attributes;
use std::collections::VecDeque;
use std::io::{self, Cursor, Read};

/// A row that will be imported.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRow {
    /// Line in the file where the record starts (1 = the header).
    pub line: u64,
    pub address: Address,
    pub name: Option<String>,
    /// Non-empty values of the other columns, as strings.
    pub attributes: Attributes,
}

/// A row that will not be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvalidRow {
    pub line: u64,
    pub reason: String,
}

/// One record of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Valid(ImportRow),
    Invalid(InvalidRow),
}

/// A problem that stops the whole import (before or while reading), as
/// opposed to one bad row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    /// No header row at all.
    #[error("the file is empty: expected a header row naming the columns, one of them `email`")]
    Empty,
    /// The header has no `email` column.
    #[error(
        "line 1: the header has no `email` column (found: {found}). \
         Name the column that holds the addresses `email`; `name` and any other columns are optional"
    )]
    NoEmailColumn { found: String },
    /// The header names a column twice.
    #[error("line 1: the header names the column `{name}` twice; rename one of them")]
    DuplicateColumn { name: String },
    /// The first line is over the line limit.
    #[error(
        "line 1 (the header) is longer than {limit} bytes without a line break: \
         is this really a CSV file? (the limit is import.max_line_bytes)"
    )]
    HeaderTooLong { limit: usize },
    /// The header is not UTF-8.
    #[error(
        "line 1 (the header) is not valid UTF-8. The file is probably Latin-1 or Windows-1252: \
         convert it with `iconv -f WINDOWS-1252 -t UTF-8 FILE > FILE.utf8.csv` and import that"
    )]
    HeaderNotUtf8,
    /// Reading the input failed.
    #[error("reading the file failed near line {line}: {source}")]
    Io { line: u64, source: io::Error },
}

/// Opens a CSV stream: reads the header line (at most `max_line_bytes`),
/// detects BOM and delimiter, and maps the columns.
///
/// # Errors
/// [`CsvError`] when there is no usable header; bad data rows are not errors
/// but [`Row::Invalid`] items of the iterator.
pub fn read_rows<R: Read>(mut input: R, max_line_bytes: usize) -> Result<CsvRows<R>, CsvError> {
    // Read until the end of the header line, keeping every byte read.
    let mut prefix = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(pos) = prefix.iter().position(|&b| b == b'\n') {
            break pos;
        }
        if prefix.len() > max_line_bytes + 3 {
            return Err(CsvError::HeaderTooLong {
                limit: max_line_bytes,
            });
        }
        let n = input
            .read(&mut chunk)
            .map_err(|source| CsvError::Io { line: 1, source })?;
        if n == 0 {
            break prefix.len();
        }
        prefix.extend_from_slice(&chunk[..n]);
    };
    let bom = if prefix.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let header_line = &prefix[bom..header_end];
    if header_line.len() > max_line_bytes {
        return Err(CsvError::HeaderTooLong {
            limit: max_line_bytes,
        });
    }
    if header_line.iter().all(u8::is_ascii_whitespace) {
        return Err(CsvError::Empty);
    }
    let delimiter = detect_delimiter(header_line);
    prefix.drain(..bom);

    let limited = LineLimit::new(Cursor::new(prefix).chain(input), max_line_bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(limited);
    let headers = reader.byte_headers().map_err(|e| csv_error(e, 1))?.clone();
    let mut names = Vec::with_capacity(headers.len());
    for field in headers.iter() {
        names.push(
            std::str::from_utf8(field)
                .map_err(|_| CsvError::HeaderNotUtf8)?
                .trim()
                .to_string(),
        );
    }
    let find = |wanted: &str| names.iter().position(|n| n.eq_ignore_ascii_case(wanted));
    let email_col = find("email").ok_or_else(|| CsvError::NoEmailColumn {
        found: names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let name_col = find("name");
    let mut attr_cols = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if names[..i].iter().any(|m| m.eq_ignore_ascii_case(n)) && !n.is_empty() {
            return Err(CsvError::DuplicateColumn { name: n.clone() });
        }
        if i != email_col && Some(i) != name_col && !n.is_empty() {
            attr_cols.push((i, n.clone()));
        }
    }
    Ok(CsvRows {
        reader,
        record: csv::ByteRecord::new(),
        email_col,
        name_col,
        attr_cols,
        columns: names.len(),
        limit: max_line_bytes,
    })
}

/// The iterator returned by [`read_rows`].
pub struct CsvRows<R: Read> {
    reader: csv::Reader<LineLimit<std::io::Chain<Cursor<Vec<u8>>, R>>>,
    record: csv::ByteRecord,
    email_col: usize,
    name_col: Option<usize>,
    attr_cols: Vec<(usize, String)>,
    columns: usize,
    limit: usize,
}

impl<R: Read> CsvRows<R> {
    /// The attribute column names, in file order.
    pub fn attribute_columns(&self) -> impl Iterator<Item = &str> {
        self.attr_cols.iter().map(|(_, n)| n.as_str())
    }

    /// Bytes consumed from the input so far (for progress display).
    pub fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }

    fn build(&self, line: u64) -> Row {
        let rec = &self.record;
        let invalid = |reason: String| Row::Invalid(InvalidRow { line, reason });
        if rec.len() > self.columns {
            return invalid(format!(
                "has {} fields but the header has {}: a stray delimiter, or a value containing the delimiter that is not quoted?",
                rec.len(),
                self.columns
            ));
        }
        let field = |i: usize, col: &str| -> Result<&str, String> {
            let bytes = rec.get(i).unwrap_or_default().trim_ascii();
            std::str::from_utf8(bytes).map_err(|e| {
                let bad = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
                format!(
                    "column `{col}` is not valid UTF-8 (byte 0x{bad:02X}). The file is probably Latin-1 or \
                     Windows-1252: convert it with `iconv -f WINDOWS-1252 -t UTF-8 FILE > FILE.utf8.csv` and import that"
                )
            })
        };
        let email = match field(self.email_col, "email") {
            Ok(e) => e,
            Err(reason) => return invalid(reason),
        };
        if email.is_empty() {
            return invalid("the `email` column is empty".into());
        }
        let address = match Address::parse(email) {
            Ok(a) => a,
            Err(e) => return invalid(e.to_string()),
        };
        let name = match self.name_col.map(|i| field(i, "name")).transpose() {
            Ok(n) => n.filter(|n| !n.is_empty()),
            Err(reason) => return invalid(reason),
        };
        if name.is_some_and(|n| n.chars().any(char::is_control)) {
            return invalid(
                "the `name` column contains a line break or another control character".into(),
            );
        }
        let mut attributes = Attributes::new();
        for (i, col) in &self.attr_cols {
            match field(*i, col) {
                Ok("") => {}
                Ok(v) => {
                    attributes.insert(col.clone(), serde_json::Value::String(v.to_string()));
                }
                Err(reason) => return invalid(reason),
            }
        }
        Row::Valid(ImportRow {
            line,
            address,
            name: name.map(str::to_string),
            attributes,
        })
    }
}

impl<R: Read> Iterator for CsvRows<R> {
    type Item = Result<Row, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => return Some(Err(csv_error(e, self.reader.position().line()))),
            }
            // csv reports a record's start as the end of the previous one (blank
            // lines in between are not counted), but its end position is exact:
            // count back the line breaks the record itself spans.
            let end = self.reader.position().clone();
            let inner = self.reader.get_ref();
            let unterminated = end.byte() == inner.emitted && inner.last != b'\n';
            let breaks = self
                .record
                .as_slice()
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            let next_start = end.line();
            let start = next_start
                .saturating_sub(breaks + u64::from(!unterminated))
                .max(2);
            if let Some(long) = self.reader.get_mut().take_overlong_before(next_start) {
                return Some(Ok(Row::Invalid(InvalidRow {
                    line: long.max(start),
                    reason: format!(
                        "the line is longer than {} bytes; the rest of it was skipped. Is a quote missing, \
                         or is this not a CSV file? (the limit is import.max_line_bytes)",
                        self.limit
                    ),
                })));
            }
            if self.record.iter().all(|f| f.trim_ascii().is_empty()) {
                continue; // a blank or delimiter-only line
            }
            return Some(Ok(self.build(start)));
        }
    }
}

fn csv_error(e: csv::Error, line: u64) -> CsvError {
    let line = e.position().map_or(line, csv::Position::line);
    match e.into_kind() {
        csv::ErrorKind::Io(source) => CsvError::Io { line, source },
        other => CsvError::Io {
            line,
            source: io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
        },
    }
}

/// Picks the delimiter that occurs most often outside quotes in the header.
fn detect_delimiter(header: &[u8]) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for &b in header {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            for c in &mut counts {
                if c.0 == b {
                    c.1 += 1;
                }
            }
        }
    }
    counts
        .iter()
        .fold((b',', 0), |best, c| if c.1 > best.1 { *c } else { best })
        .0
}

/// A reader that passes at most `limit` bytes of each physical line: the rest
/// of an over-long line is dropped (up to its `\n`) and its line number kept,
/// so the record it belonged to can be reported.
struct LineLimit<R> {
    inner: R,
    limit: usize,
    line: u64,
    in_line: usize,
    skipping: bool,
    overlong: VecDeque<u64>,
    /// Bytes passed on so far, and the last of them: tells whether the final
    /// record ended with a line break.
    emitted: u64,
    last: u8,
}

impl<R> LineLimit<R> {
    fn new(inner: R, limit: usize) -> Self {
        LineLimit {
            inner,
            limit,
            line: 1,
            in_line: 0,
            skipping: false,
            overlong: VecDeque::new(),
            emitted: 0,
            last: b'\n',
        }
    }

    /// Removes the over-long lines numbered below `line` and returns the first.
    fn take_overlong_before(&mut self, line: u64) -> Option<u64> {
        let mut first = None;
        while self.overlong.front().is_some_and(|&l| l < line) {
            let l = self.overlong.pop_front();
            first = first.or(l);
        }
        first
    }
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut w = 0;
            for i in 0..n {
                let b = buf[i];
                if b == b'\n' {
                    self.line += 1;
                    self.in_line = 0;
                    self.skipping = false;
                } else if self.skipping {
                    continue;
                } else {
                    self.in_line += 1;
                    if self.in_line > self.limit {
                        self.skipping = true;
                        self.overlong.push_back(self.line);
                        continue;
                    }
                }
                buf[w] = b;
                w += 1;
            }
            if w > 0 {
                self.emitted += w as u64;
                self.last = buf[w - 1];
                return Ok(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: &[u8]) -> Vec<Row> {
        read_rows(input, 1024)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn valid(row: &Row) -> &ImportRow {
        match row {
            Row::Valid(r) => r,
            Row::Invalid(i) => panic!("expected a valid row, got {i:?}"),
        }
    }

    fn invalid(row: &Row) -> &InvalidRow {
        match row {
            Row::Invalid(i) => i,
            Row::Valid(r) => panic!("expected an invalid row, got {r:?}"),
        }
    }

    #[test]
    fn maps_columns_with_bom_and_semicolons() {
        let got = rows("\u{feff}Name;EMAIL;city;plan\nAnna;anna@Example.org; Köln ;\n\n\"Bo; B\";bo@example.org;Wien;pro".as_bytes());
        assert_eq!(got.len(), 2);
        let a = valid(&got[0]);
        assert_eq!(
            (a.line, a.address.as_str(), a.name.as_deref()),
            (2, "anna@example.org", Some("Anna"))
        );
        assert_eq!(a.attributes.get("city").unwrap(), "Köln");
        assert!(
            a.attributes.get("plan").is_none(),
            "empty values are not attributes"
        );
        let b = valid(&got[1]);
        assert_eq!((b.line, b.name.as_deref()), (4, Some("Bo; B")));
        assert_eq!(b.attributes.get("plan").unwrap(), "pro");
    }

    #[test]
    fn bad_rows_name_their_line_and_reading_goes_on() {
        let mut input =
            b"email,name\nnot-an-address,X\n,Empty\nok@example.org,\"multi\nline\"\n".to_vec();
        input.extend_from_slice(
            b"latin@example.org,Jos\xE9\nlast@example.org,Z,extra\nfine@example.org,Fine\n",
        );
        let got = rows(&input);
        let lines: Vec<u64> = got
            .iter()
            .map(|r| match r {
                Row::Valid(v) => v.line,
                Row::Invalid(i) => i.line,
            })
            .collect();
        assert_eq!(lines, vec![2, 3, 4, 6, 7, 8]);
        assert!(invalid(&got[0]).reason.contains("has no `@`"));
        assert!(invalid(&got[1]).reason.contains("`email` column is empty"));
        assert!(invalid(&got[2]).reason.contains("control character"));
        let latin = &invalid(&got[3]).reason;
        assert!(
            latin.contains("not valid UTF-8") && latin.contains("iconv"),
            "{latin}"
        );
        assert!(
            invalid(&got[4])
                .reason
                .contains("has 3 fields but the header has 2")
        );
        assert_eq!(valid(&got[5]).address.as_str(), "fine@example.org");
    }

    #[test]
    fn an_overlong_line_is_skipped_not_buffered() {
        let mut input = b"email,name\na@example.org,A\nb@example.org,".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend_from_slice(b"\nc@example.org,C\n");
        let got = rows(&input);
        assert_eq!(got.len(), 3);
        assert_eq!(valid(&got[0]).line, 2);
        let long = invalid(&got[1]);
        assert_eq!(long.line, 3);
        assert!(long.reason.contains("longer than 1024 bytes"));
        assert_eq!(valid(&got[2]).address.as_str(), "c@example.org");
    }

    #[test]
    fn header_problems_stop_the_import() {
        let err = |input: &[u8]| read_rows(input, 1024).err().expect("must fail").to_string();
        assert!(err(b"").contains("empty"));
        assert!(err(b"\xEF\xBB\xBF\n").contains("empty"));
        let e = err(b"mail,name\na@example.org,A\n");
        assert!(
            e.contains("no `email` column") && e.contains("`mail`"),
            "{e}"
        );
        assert!(err(&vec![b'a'; 5000]).contains("longer than 1024 bytes"));
        assert!(err(b"email,Email\n").contains("twice"));
        assert!(err(b"email,n\xE4me\n").contains("UTF-8"));
    }

    #[test]
    fn delimiter_detection() {
        assert_eq!(detect_delimiter(b"email,name"), b',');
        assert_eq!(detect_delimiter(b"email;name;\"a,b,c\""), b';');
        assert_eq!(detect_delimiter(b"email\tname"), b'\t');
        assert_eq!(detect_delimiter(b"email"), b',');
    }
}
