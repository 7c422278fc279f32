//! `rundbrief import FILE --list NAME`: a reader thread parses the CSV into
//! batches (bounded channel of 2, so at most three batches exist at once);
//! this task writes each batch in its own transaction and reports progress.
//! Ctrl-C stops after the batch in flight: everything reported is committed.

use crate::args::ImportArgs;
use crate::output;
use anyhow::Context;
use rundbrief_app::domains::{DomainChecker, UndeliverableRow};
use rundbrief_core::Config;
use rundbrief_core::csvin::{CsvError, ImportRow, InvalidRow, Row, read_rows};
use rundbrief_store::{BatchReport, ImportOptions, Store};
use std::io::{BufReader, IsTerminal, Read};
use std::process::ExitCode;
use std::time::Instant;

/// Invalid rows kept for the report; beyond this only their number is kept
/// (`invalid_total`), so a file of garbage cannot exhaust memory.
const MAX_INVALID_REPORTED: usize = 10_000;

/// The `--json` output. Field names are a contract (DESIGN.md): extend, never rename.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    imported: u64,
    updated: u64,
    skipped: u64,
    invalid: Vec<InvalidRow>,
    /// Present only when `invalid` was cut at [`MAX_INVALID_REPORTED`].
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid_total: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
    /// Rows whose domain cannot receive mail (the domain check): they are
    /// imported (and counted in `imported`, `updated` or `skipped`) and
    /// their active subscribers marked `undeliverable`.
    undeliverable: u64,
    /// Those rows, at most [`MAX_INVALID_REPORTED`]:
    /// `{"line": L, "email": "…", "reason": "…"}`.
    undeliverable_rows: Vec<UndeliverableRow>,
    /// Whether the domain check ran (off: `--no-dns-check` or `[dns] check = false`).
    dns_check: bool,
}

impl Report {
    fn add(&mut self, b: BatchReport) {
        self.imported += b.imported;
        self.updated += b.updated;
        self.skipped += b.skipped;
    }

    fn add_invalid(&mut self, rows: Vec<InvalidRow>) {
        let total = self.invalid_total.unwrap_or(self.invalid.len() as u64) + rows.len() as u64;
        for r in rows {
            if self.invalid.len() < MAX_INVALID_REPORTED {
                self.invalid.push(r);
            }
        }
        if total > self.invalid.len() as u64 {
            self.invalid_total = Some(total);
        }
    }

    fn add_undeliverable(&mut self, rows: Vec<UndeliverableRow>) {
        self.undeliverable += rows.len() as u64;
        for r in rows {
            if self.undeliverable_rows.len() < MAX_INVALID_REPORTED {
                self.undeliverable_rows.push(r);
            }
        }
    }

    fn rows(&self) -> u64 {
        self.imported
            + self.updated
            + self.skipped
            + self.invalid_total.unwrap_or(self.invalid.len() as u64)
    }
}

enum Msg {
    Batch {
        rows: Vec<ImportRow>,
        invalid: Vec<InvalidRow>,
        bytes: u64,
        last_line: u64,
    },
    Fatal(CsvError),
}

pub async fn run(
    store: &Store,
    cfg: &Config,
    a: &ImportArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let from_stdin = a.file.as_os_str() == "-";
    let source = if from_stdin {
        "stdin".to_string()
    } else {
        a.file.display().to_string()
    };
    let (input, total): (Box<dyn Read + Send>, Option<u64>) = if from_stdin {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(&a.file).with_context(|| format!("cannot open {source}"))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let opts = ImportOptions {
        resubscribe_bounced: a.resubscribe_bounced,
        dry_run: a.dry_run,
        source: source.clone(),
    };
    let checker = if a.no_dns_check {
        None
    } else {
        DomainChecker::from_config(cfg)?
    };
    let mut import = store.begin_import(&a.list, opts).await?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(2);
    let batch_size = cfg.import.batch_size;
    let max_line = cfg.import.max_line_bytes;
    let reader = std::thread::spawn(move || {
        read_batches(
            BufReader::with_capacity(1 << 16, input),
            max_line,
            batch_size,
            &tx,
        )
    });

    let bar = progress_bar(total, json);
    let started = Instant::now();
    let mut report = Report {
        dry_run: a.dry_run,
        dns_check: checker.is_some(),
        ..Report::default()
    };
    let mut last_committed_line = 1;
    let mut fatal = None;
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            biased;
            _ = &mut ctrl_c => { interrupted = true; break; }
            msg = rx.recv() => match msg {
                None => break,
                Some(Msg::Fatal(e)) => { fatal = Some(e); break; }
                Some(Msg::Batch { rows, invalid, bytes, last_line }) => {
                    // DNS first (it needs no database), then the batch, then
                    // the marks: an interrupted import run again checks and
                    // marks the same rows, so it converges.
                    let undeliverable = match &checker {
                        Some(c) => c.check_rows(&rows).await,
                        None => Vec::new(),
                    };
                    let batch = import.write_batch(rows).await
                        .with_context(|| format!("writing the rows up to line {last_line} of {source}"))?;
                    if !a.dry_run && let Some(c) = &checker {
                        c.mark_rows(store, &undeliverable).await.with_context(|| {
                            format!("marking undeliverable subscribers up to line {last_line} of {source}")
                        })?;
                    }
                    report.add(batch);
                    report.add_undeliverable(undeliverable);
                    report.add_invalid(invalid);
                    last_committed_line = last_line;
                    if let Some(bar) = &bar {
                        bar.set_position(bytes);
                        bar.set_message(format!("{} rows", report.rows()));
                    }
                }
            }
        }
    }
    drop(rx); // a reader still sending sees the channel closed and stops
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    import.finish().await?;
    let _ = reader.join();
    let elapsed = started.elapsed();
    tracing::debug!(
        rows = report.rows(),
        seconds = elapsed.as_secs_f64(),
        rows_per_s = report.rows() as f64 / elapsed.as_secs_f64().max(1e-9),
        "import finished"
    );

    if let Some(e) = fatal {
        if report.rows() == 0 {
            return Err(e).with_context(|| format!("cannot import {source}"));
        }
        print_report(&report, &a.list, json)?;
        return Err(e).with_context(|| {
            format!("{source}: stopped; the rows reported above (up to line {last_committed_line}) are saved")
        });
    }
    print_report(&report, &a.list, json)?;
    if interrupted {
        eprintln!(
            "interrupted: the rows up to line {last_committed_line} are saved. Run the same command again to \
             finish; rows already imported are recognised, nothing is duplicated."
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs on its own thread: parses the CSV and sends batches of `batch_size`
/// rows (valid and invalid counted together).
fn read_batches<R: Read>(
    input: R,
    max_line: usize,
    batch_size: usize,
    tx: &tokio::sync::mpsc::Sender<Msg>,
) {
    let mut rows = match read_rows(input, max_line) {
        Ok(rows) => rows,
        Err(e) => {
            let _ = tx.blocking_send(Msg::Fatal(e));
            return;
        }
    };
    let mut valid = Vec::with_capacity(batch_size);
    let mut invalid = Vec::new();
    let mut last_line = 1;
    let flush = |valid: &mut Vec<ImportRow>, invalid: &mut Vec<InvalidRow>, bytes, last_line| {
        let msg = Msg::Batch {
            rows: std::mem::replace(valid, Vec::with_capacity(batch_size)),
            invalid: std::mem::take(invalid),
            bytes,
            last_line,
        };
        tx.blocking_send(msg).is_ok()
    };
    while let Some(item) = rows.next() {
        match item {
            Ok(Row::Valid(r)) => {
                last_line = r.line;
                valid.push(r);
            }
            Ok(Row::Invalid(i)) => {
                last_line = i.line;
                invalid.push(i);
            }
            Err(e) => {
                if flush(&mut valid, &mut invalid, rows.bytes_read(), last_line) {
                    let _ = tx.blocking_send(Msg::Fatal(e));
                }
                return;
            }
        }
        if valid.len() + invalid.len() >= batch_size
            && !flush(&mut valid, &mut invalid, rows.bytes_read(), last_line)
        {
            return;
        }
    }
    if !valid.is_empty() || !invalid.is_empty() {
        flush(&mut valid, &mut invalid, rows.bytes_read(), last_line);
    }
}

/// A progress bar on stderr, only when a person is watching.
fn progress_bar(total: Option<u64>, json: bool) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    Some(bar)
}

fn print_report(r: &Report, list: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(r);
    }
    let verb = if r.dry_run {
        "dry run, nothing written: would import"
    } else {
        "imported"
    };
    let invalid = r.invalid_total.unwrap_or(r.invalid.len() as u64);
    println!(
        "{verb} {} new subscriber(s) into {list}, updated {}, skipped {} (blocklisted, bounced, unsubscribed, undeliverable or left the list), {invalid} invalid row(s)",
        r.imported, r.updated, r.skipped
    );
    const SHOWN: usize = 20;
    if r.undeliverable > 0 {
        let what = if r.dry_run {
            "would be marked"
        } else {
            "marked"
        };
        println!(
            "{} row(s) on a domain that cannot receive mail, {what} undeliverable (`sub restore` undoes it):",
            r.undeliverable
        );
        for u in r.undeliverable_rows.iter().take(SHOWN) {
            println!("  line {}: {}: {}", u.line, u.email, u.reason);
        }
        if r.undeliverable > SHOWN as u64 {
            println!(
                "  … and {} more (use --json to see them all)",
                r.undeliverable - SHOWN as u64
            );
        }
    }
    for i in r.invalid.iter().take(SHOWN) {
        println!("  line {}: {}", i.line, i.reason);
    }
    if invalid > SHOWN as u64 {
        println!(
            "  … and {} more (use --json to see them all)",
            invalid - SHOWN as u64
        );
    }
    Ok(())
}
