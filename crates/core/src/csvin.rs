//! Streaming CSV rows for `rundbrief import`.
//!
//! [`read_rows`] takes any [`Read`] and yields one [`Row`] per record, never
//! holding more than one bounded record in memory:
//!
//! - the header row maps `email` (required), `name`, and every other column to
//!   an attribute; column names are matched case-insensitively;
//! - UTF-8 with or without a byte-order mark; `,`, `;` or TAB as delimiter,
//!   detected from the header line;
//! - line numbers are physical lines, as an editor shows them, whether lines
//!   end in `\n`, `\r\n` (Excel) or `\r`, and a record is numbered by the
//!   line it starts on;
//! - a bad row becomes [`Row::Invalid`] with its line number and a reason that
//!   says what to do, and reading goes on: nothing valid is lost because of it;
//! - a record longer than the limit is cut off at the limit, the rest of it
//!   skipped up to its line break, and the record reported invalid, so a
//!   broken file cannot exhaust memory;
//! - a quote that is never closed, or a quoted value longer than the limit,
//!   stops the reading with an error naming the lines it swallowed: the rows
//!   inside it were read as one value, and where the rows after it begin
//!   cannot be trusted.

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
    /// The file is UTF-16 (a byte-order mark, or NUL bytes in the header).
    #[error(
        "the file is UTF-16 (as Excel's \"Unicode Text\" saves it), not UTF-8: \
         convert it with `iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8.csv` and import that"
    )]
    Utf16,
    /// A quoted value is still open at the end of the input: every line from
    /// `line` to `last` was read as part of it.
    #[error(
        "line {line}: a quote opened here is never closed{}; the import stops here. \
         Close the quote or remove it, then import again (rows already imported are recognised)",
        swallowed(*line, *last)
    )]
    UnclosedQuote { line: u64, last: u64 },
    /// A quoted value runs past the record limit; it closes on line `closes`.
    #[error(
        "line {line}: a quoted value opened here runs past {limit} bytes and closes only on line {closes}, \
         so lines {line}–{closes} were read as one value: is a quote missing or extra on line {line}? \
         The import stops here. Fix the quotes (or raise import.max_line_bytes if the value is really \
         that long), then import again (rows already imported are recognised)"
    )]
    QuotedTooLong {
        line: u64,
        closes: u64,
        limit: usize,
    },
    /// Reading the input failed.
    #[error("reading the file failed near line {line}: {source}")]
    Io { line: u64, source: io::Error },
}

fn swallowed(line: u64, last: u64) -> String {
    if last > line {
        format!("; it swallowed lines {line}–{last}, to the end of the file")
    } else {
        String::new()
    }
}

/// Opens a CSV stream: reads the header line (at most `max_line_bytes`),
/// detects BOM and delimiter, and maps the columns. `max_line_bytes` bounds
/// every record (all its lines together, for a quoted value with line
/// breaks), so memory stays bounded whatever the input.
///
/// # Errors
/// [`CsvError`] when there is no usable header; bad data rows are not errors
/// but [`Row::Invalid`] items of the iterator.
pub fn read_rows<R: Read>(mut input: R, max_line_bytes: usize) -> Result<CsvRows<R>, CsvError> {
    // Read until the end of the header line, keeping every byte read.
    let mut prefix = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(pos) = prefix.iter().position(|&b| is_term(b)) {
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
    if prefix.starts_with(b"\xFF\xFE")
        || prefix.starts_with(b"\xFE\xFF")
        || prefix[..header_end].contains(&0)
    {
        return Err(CsvError::Utf16);
    }
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

    let limited = RecordGuard::new(Cursor::new(prefix).chain(input), delimiter, max_line_bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(limited);
    let headers = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(reader
                .get_mut()
                .fatal
                .take()
                .unwrap_or_else(|| csv_error(e, 1)));
        }
    };
    if reader
        .get_mut()
        .spans
        .pop_front()
        .is_some_and(|header| header.overlong)
    {
        return Err(CsvError::HeaderTooLong {
            limit: max_line_bytes,
        });
    }
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
        last_line: 1,
        done: false,
    })
}

/// The iterator returned by [`read_rows`].
pub struct CsvRows<R: Read> {
    reader: csv::Reader<RecordGuard<std::io::Chain<Cursor<Vec<u8>>, R>>>,
    record: csv::ByteRecord,
    email_col: usize,
    name_col: Option<usize>,
    attr_cols: Vec<(usize, String)>,
    columns: usize,
    limit: usize,
    /// Last line of the previous record.
    last_line: u64,
    /// Reading stopped with an error: nothing more is returned.
    done: bool,
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
        // Only spaces around a value are dropped (a hand-written `a, b`);
        // every other byte is kept as imported: a leading TAB or CR is part
        // of the value, and dropping it would turn a harmless `\t=1+1` into
        // a live spreadsheet formula on export (#21). The address is
        // trimmed of all white space: none of it can belong to one.
        let field = |i: usize, col: &str| -> Result<&str, String> {
            let raw = rec.get(i).unwrap_or_default();
            let bytes = if i == self.email_col {
                raw.trim_ascii()
            } else {
                trim_spaces(raw)
            };
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

/// `b` without the spaces (only U+0020) at either end.
fn trim_spaces(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b' ').map_or(start, |e| e + 1);
    &b[start..end]
}

/// Characters that make a spreadsheet read a cell as a formula when they
/// come first (OWASP "CSV Injection"): `=`, `+`, `-`, `@`, TAB and CR.
pub const FORMULA_STARTS: &[char] = &['=', '+', '-', '@', '\t', '\r'];

/// `value` made safe to open in a spreadsheet: a value that starts with one
/// of [`FORMULA_STARTS`] gets a `'` in front (OWASP's rule), so Excel,
/// LibreOffice and Google Sheets show it as text instead of evaluating
/// `=HYPERLINK(…)` or `=cmd|…`. Everything else is returned unchanged.
/// `rundbrief export` applies it to every cell unless `--raw`.
pub fn neutralise_formula(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(FORMULA_STARTS) {
        std::borrow::Cow::Owned(format!("'{value}"))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

impl<R: Read> Iterator for CsvRows<R> {
    type Item = Result<Row, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    self.done = true;
                    let guard = self.reader.get_mut();
                    let line = guard.line;
                    return Some(Err(guard
                        .fatal
                        .take()
                        .unwrap_or_else(|| csv_error(e, line))));
                }
            }
            // Every record csv returns began with a byte the guard saw; the
            // fallback only keeps the numbers going should that ever differ.
            let span = self.reader.get_mut().spans.pop_front().unwrap_or(Span {
                start: self.last_line + 1,
                end: self.last_line + 1,
                overlong: false,
            });
            self.last_line = span.end;
            if span.overlong {
                return Some(Ok(Row::Invalid(InvalidRow {
                    line: span.start,
                    reason: format!(
                        "the record is longer than {} bytes; the rest of it was skipped. Is a quote missing, \
                         or is this not a CSV file? (the limit is import.max_line_bytes)",
                        self.limit
                    ),
                })));
            }
            if self.record.iter().all(|f| f.trim_ascii().is_empty()) {
                continue; // a blank or delimiter-only line
            }
            let mut row = self.build(span.start);
            if let Row::Invalid(i) = &mut row
                && span.end > span.start
            {
                i.reason.push_str(&format!(
                    " (this record runs from line {} to line {} because a quoted value holds line breaks: \
                     if that is not intended, a quote is missing or extra on line {})",
                    span.start, span.end, span.start
                ));
            }
            return Some(Ok(row));
        }
    }
}

/// csv's own errors; its positions are not used, see [`RecordGuard`].
fn csv_error(e: csv::Error, line: u64) -> CsvError {
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

/// Where csv-core's state machine stands, mirrored over the bytes passed on
/// to it (default dialect: `"` quotes, `""` escapes, `\r`, `\n` or `\r\n`
/// ends a record, a quote opens a quoted field only at the start of a field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records: line breaks here are blank lines, which csv skips.
    StartRecord,
    StartField,
    Unquoted,
    Quoted,
    /// A `"` inside a quoted field: the closing quote, or the first of `""`.
    QuoteInQuoted,
}

/// The physical lines one record of csv's spans, in the order csv returns them.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    /// Longer than the record limit: the rest of it was dropped.
    overlong: bool,
}

/// Sits between the file and csv: counts physical lines (`\n`, `\r\n` and a
/// lone `\r` each end one, so the numbers match what an editor shows), notes
/// the lines each record spans, and bounds a record to `limit` bytes.
///
/// csv's own line count cannot be used: with `\r\n` it counts the `\n` as part
/// of the next record, one record late. This reader follows csv's state
/// machine over exactly the bytes csv sees, so its record boundaries are
/// csv's.
///
/// An over-long record outside quotes is cut at the limit and the rest of it
/// dropped up to its line break; the record is then reported invalid. A
/// quoted value over the limit, or still open at the end of the input, is an
/// unclosed (or stray) quote: the input is scanned on, without keeping it, to
/// find out how many lines it swallowed, and reading stops with
/// [`CsvError::UnclosedQuote`] or [`CsvError::QuotedTooLong`].
struct RecordGuard<R> {
    inner: R,
    delimiter: u8,
    limit: usize,
    /// Physical line of the byte just looked at.
    line: u64,
    /// The last byte ended a line (`\n`), or was a `\r` that may be followed
    /// by the `\n` of the same break.
    after_lf: bool,
    after_cr: bool,
    state: State,
    /// Bytes of the current record passed on.
    in_record: usize,
    /// Dropping the rest of an over-long record up to its line break.
    skipping: bool,
    /// Line where the quoted field now open began.
    quote_line: u64,
    /// Records seen but not yet taken by the iterator; at most those in
    /// csv's read-ahead buffer.
    spans: VecDeque<Span>,
    /// Why reading stopped; every read after it fails.
    fatal: Option<CsvError>,
}

fn is_term(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

impl<R: Read> RecordGuard<R> {
    fn new(inner: R, delimiter: u8, limit: usize) -> Self {
        RecordGuard {
            inner,
            delimiter,
            limit,
            line: 1,
            after_lf: false,
            after_cr: false,
            state: State::StartRecord,
            in_record: 0,
            skipping: false,
            quote_line: 1,
            spans: VecDeque::new(),
            fatal: None,
        }
    }

    /// Moves `line` to the line of `b`, the next byte of the input.
    fn advance_line(&mut self, b: u8) {
        if self.after_lf || (self.after_cr && b != b'\n') {
            self.line += 1;
        }
        self.after_lf = b == b'\n';
        self.after_cr = b == b'\r';
    }

    /// Does `b` end the current record?
    fn ends_record(&self, b: u8) -> bool {
        matches!(
            self.state,
            State::StartField | State::Unquoted | State::QuoteInQuoted
        ) && is_term(b)
    }

    /// Feeds one byte that csv will see through the state machine.
    fn step(&mut self, b: u8) {
        if self.state == State::StartRecord {
            if is_term(b) {
                return; // a blank line
            }
            self.spans.push_back(Span {
                start: self.line,
                end: self.line,
                overlong: false,
            });
            self.in_record = 1; // this byte; the caller counts the next ones
            self.state = State::StartField;
        }
        self.state = match (self.state, b) {
            (State::StartField, b'"') => {
                self.quote_line = self.line;
                State::Quoted
            }
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) => State::Quoted,
            (State::QuoteInQuoted, b'"') => State::Quoted,
            (_, b) if b == self.delimiter => State::StartField,
            (_, b) if is_term(b) => {
                if let Some(s) = self.spans.back_mut() {
                    s.end = self.line;
                }
                State::StartRecord
            }
            _ => State::Unquoted,
        };
    }

    /// The limit was hit inside a quoted value, at byte `b`, with `rest` of
    /// the buffer after it: reads on, keeping nothing, until the quote closes
    /// or the input ends, and says which.
    fn scan_quote(&mut self, b: u8, rest: &[u8]) -> io::Result<CsvError> {
        // The last byte was a `"` that closes the value unless a second one follows.
        let mut closing = b == b'"';
        if let Some(closes) = self.scan_bytes(rest, &mut closing) {
            return Ok(self.quoted_too_long(closes));
        }
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Ok(if closing {
                    self.quoted_too_long(self.line)
                } else {
                    CsvError::UnclosedQuote {
                        line: self.quote_line,
                        last: self.line,
                    }
                });
            }
            if let Some(closes) = self.scan_bytes(&chunk[..n], &mut closing) {
                return Ok(self.quoted_too_long(closes));
            }
        }
    }

    /// Counts lines through `data` inside a quoted value; the line of the
    /// closing quote once it is found.
    fn scan_bytes(&mut self, data: &[u8], closing: &mut bool) -> Option<u64> {
        for &c in data {
            self.advance_line(c);
            if c == b'"' {
                *closing = !*closing;
            } else if *closing {
                return Some(self.line); // a `"` is never a line break: same line
            }
        }
        None
    }

    fn quoted_too_long(&self, closes: u64) -> CsvError {
        CsvError::QuotedTooLong {
            line: self.quote_line,
            closes,
            limit: self.limit,
        }
    }
}

impl<R: Read> Read for RecordGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.fatal.is_some() {
                return Err(io::Error::other("the CSV input cannot be split into rows"));
            }
            let n = self.inner.read(buf)?;
            if n == 0 {
                match self.state {
                    State::Quoted => {
                        self.fatal = Some(CsvError::UnclosedQuote {
                            line: self.quote_line,
                            last: self.line,
                        });
                        continue;
                    }
                    State::StartRecord => {}
                    _ => {
                        if let Some(s) = self.spans.back_mut() {
                            s.end = self.line;
                        }
                        self.state = State::StartRecord;
                    }
                }
                return Ok(0);
            }
            let mut w = 0;
            for i in 0..n {
                let b = buf[i];
                self.advance_line(b);
                if self.skipping {
                    if !is_term(b) {
                        continue;
                    }
                    self.skipping = false; // the line break ends the record
                } else if self.state != State::StartRecord && !self.ends_record(b) {
                    self.in_record += 1;
                    if self.in_record > self.limit {
                        if self.state == State::Quoted {
                            self.fatal = Some(self.scan_quote(b, &buf[i + 1..n])?);
                            break;
                        }
                        self.skipping = true;
                        if let Some(s) = self.spans.back_mut() {
                            s.overlong = true;
                        }
                        continue;
                    }
                }
                self.step(b);
                buf[w] = b;
                w += 1;
            }
            if w > 0 {
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

    /// #21.4: a leading TAB or CR is part of the value (only spaces are
    /// trimmed), and export neutralises what a spreadsheet would evaluate.
    #[test]
    fn issue_21_values_are_kept_and_formulas_neutralised() {
        let got = rows(
            "email,a,b,c,d\nx@example.org,\"\t=1+1\",\"\r=2\", plain ,\"=HYPERLINK(\"\"x\"\")\"\n"
                .as_bytes(),
        );
        let r = valid(&got[0]);
        assert_eq!(r.attributes.get("a").unwrap(), "\t=1+1");
        assert_eq!(r.attributes.get("b").unwrap(), "\r=2");
        assert_eq!(r.attributes.get("c").unwrap(), "plain");
        assert_eq!(r.attributes.get("d").unwrap(), "=HYPERLINK(\"x\")");
        for (v, want) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1+1", "'\t=1+1"),
            ("\r=1", "'\r=1"),
            ("Köln", "Köln"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(neutralise_formula(v), want, "{v:?}");
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
    fn a_utf16_file_is_named_as_such() {
        let text = "email,name\nanna@example.org,Anna\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for (what, bytes) in [
            ("LE with BOM", [&[0xFF, 0xFE][..], &le].concat()),
            ("BE with BOM", [&[0xFE, 0xFF][..], &be].concat()),
            ("LE without BOM", le),
        ] {
            let err = read_rows(&bytes[..], 1 << 20).err().unwrap();
            assert!(matches!(err, CsvError::Utf16), "{what}: {err}");
            assert!(err.to_string().contains("iconv -f UTF-16"), "{what}: {err}");
        }
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

    fn line_of(row: &Row) -> u64 {
        match row {
            Row::Valid(v) => v.line,
            Row::Invalid(i) => i.line,
        }
    }

    /// Reads `input` to the end: the rows, then the error that stopped it.
    fn read_all(input: &[u8], limit: usize) -> (Vec<Row>, Option<CsvError>) {
        let mut got = Vec::new();
        let mut it = read_rows(input, limit).unwrap();
        for item in it.by_ref() {
            match item {
                Ok(r) => got.push(r),
                Err(e) => {
                    assert!(it.next().is_none(), "nothing after the error");
                    return (got, Some(e));
                }
            }
        }
        (got, None)
    }

    /// Excel writes `\r\n`: csv's own line count is one record late there,
    /// so every row after the first was reported a line early.
    #[test]
    fn line_numbers_are_physical_lines_for_every_line_ending() {
        let lines = [
            "email,name",               // 1
            "a@example.org,A",          // 2
            "not-an-address,X",         // 3
            "",                         // 4
            "b@example.org,\"two",      // 5
            "lines\"",                  // 6
            ",Empty",                   // 7
            "c@example.org,\"x\"\"y\"", // 8
            "d@example.org,D,extra",    // 9
            "e@example.org,E",          // 10
        ];
        for end in ["\n", "\r\n", "\r"] {
            for final_break in [true, false] {
                let mut input = lines.join(end);
                if final_break {
                    input.push_str(end);
                }
                let got = rows(input.as_bytes());
                let numbers: Vec<u64> = got.iter().map(line_of).collect();
                assert_eq!(numbers, [2, 3, 5, 7, 8, 9, 10], "{end:?} {final_break}");
                let two = &invalid(&got[2]).reason;
                assert!(
                    two.contains("line break") && two.contains("from line 5 to line 6"),
                    "{end:?}: {two}"
                );
                assert_eq!(valid(&got[4]).name.as_deref(), Some("x\"y"));
                assert_eq!(valid(&got[6]).address.as_str(), "e@example.org");
            }
        }
    }

    #[test]
    fn an_overlong_crlf_line_keeps_the_numbers_after_it() {
        let mut input = b"email,name\r\na@example.org,A\r\nb@example.org,".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend_from_slice(b"\r\n\r\nbad,C\r\nd@example.org,D\r\n");
        let got = rows(&input);
        assert_eq!(got.iter().map(line_of).collect::<Vec<_>>(), [2, 3, 5, 6]);
        assert!(invalid(&got[1]).reason.contains("longer than 1024 bytes"));
        assert!(invalid(&got[2]).reason.contains("`@`"));
    }

    /// The audit's file: one stray quote on line 2, then 100,000 good rows,
    /// all read as one 2 MB value and reported as "a line break in `name`".
    #[test]
    fn an_unclosed_quote_stops_with_the_lines_it_swallowed() {
        for (end, limit) in [("\n", 1 << 20), ("\r\n", 1 << 20), ("\r\n", 1 << 22)] {
            let mut input =
                format!("email,name{end}ok@example.org,Ok{end}uu@example.org,\"unterminated{end}");
            for i in 0..100_000 {
                input.push_str(&format!("p{i}@example.org,P{i}{end}"));
            }
            let (got, err) = read_all(input.as_bytes(), limit);
            assert_eq!(got.len(), 1, "the row before it is kept");
            assert_eq!(valid(&got[0]).line, 2);
            let err = err.expect("must stop");
            assert!(
                matches!(
                    err,
                    CsvError::UnclosedQuote {
                        line: 3,
                        last: 100_003
                    }
                ),
                "{end:?} {limit}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.starts_with(
                    "line 3: a quote opened here is never closed; it swallowed lines 3–100003"
                ) && msg.contains("stops here")
                    && msg.contains("Close the quote or remove it"),
                "{msg}"
            );
        }
        // On the last line it swallowed nothing else, and says so.
        let (got, err) = read_all(b"email,name\na@example.org,\"Bo\n", 1024);
        assert!(got.is_empty());
        let msg = err.expect("must stop").to_string();
        assert!(
            msg.starts_with("line 2: a quote opened here is never closed;")
                && !msg.contains("swallowed"),
            "{msg}"
        );
    }

    /// The limit bounds a whole record, not each of its lines.
    #[test]
    fn a_quoted_value_over_the_limit_stops_even_when_it_closes() {
        let mut input = b"email,name\r\na@example.org,A\r\nb@example.org,\"".to_vec();
        for _ in 0..100 {
            input.extend_from_slice(b"short line\r\n");
        }
        input.extend_from_slice(b"end\"\r\nc@example.org,C\r\n");
        let (got, err) = read_all(&input, 1024);
        assert_eq!(got.iter().map(line_of).collect::<Vec<_>>(), [2]);
        let err = err.expect("must stop");
        assert!(
            matches!(
                err,
                CsvError::QuotedTooLong {
                    line: 3,
                    closes: 103,
                    limit: 1024
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("lines 3–103"), "{err}");

        // The same value under the limit is one (multi-line) value.
        let (got, err) = read_all(&input, 4096);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got.iter().map(line_of).collect::<Vec<_>>(), [2, 3, 104]);
    }

    #[test]
    fn delimiter_detection() {
        assert_eq!(detect_delimiter(b"email,name"), b',');
        assert_eq!(detect_delimiter(b"email;name;\"a,b,c\""), b';');
        assert_eq!(detect_delimiter(b"email\tname"), b'\t');
        assert_eq!(detect_delimiter(b"email"), b',');
    }
}
