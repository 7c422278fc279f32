//! `rundbrief-bench`: the figures the issues ask for, printed as one table.
//!
//! It measures the real `rundbrief` binary (built next to this one: run
//! `cargo build --release -p rundbrief -p rundbrief-bench` first) as a child
//! process, so peak RSS is the child's own (`wait4` rusage), and compares
//! with the practical ceilings named in the issues: psql's `\copy` for the
//! import, Postfix's `smtp-source` for sending, a private Postfix instance's
//! intake for the bounce endpoint. Library-level figures (bounce parsing,
//! rendering, the sender) run in-process. docs/benchmarks.md has the latest
//! table and what each group measures.
//!
//! Nothing here is a test: it prints numbers, it asserts nothing.
//!
//! Every server it starts (Postfix `smtp-sink`, a private Postfix instance,
//! `rundbrief bounce serve`) listens on 127.0.0.1 only and is stopped when
//! the figure that needed it is done, also when that figure fails.

mod campaign;
mod dashboard;
mod endpoint;
mod eta;
mod import_dns;
mod postfix;
mod render;
mod send;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Run rundbrief's benchmarks and print the figures")]
struct Args {
    #[command(subcommand)]
    what: What,
    /// Smaller inputs so that everything finishes in under two minutes.
    #[arg(long, global = true)]
    quick: bool,
    /// PostgreSQL server to benchmark on (a scratch database is created and dropped).
    #[arg(
        long,
        global = true,
        env = "RUNDBRIEF_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// Skip the PostgreSQL figures.
    #[arg(long, global = true)]
    no_postgres: bool,
    /// Where inputs and scratch databases go.
    #[arg(long, global = true, default_value = "/tmp/rundbrief-bench")]
    work: PathBuf,
}

#[derive(Subcommand)]
enum What {
    /// Everything below.
    All,
    /// CSV import rows/s and peak RSS on SQLite and PostgreSQL, vs psql \copy.
    Import {
        /// Rows in the generated CSV (default 1,000,000; 100,000 with --quick).
        #[arg(long)]
        rows: Option<u64>,
    },
    /// Bounce parsing messages/s on one core over the fixture corpus.
    BounceParse,
    /// Render + MIME messages/s on one core (the render_bench newsletter).
    Render,
    /// Sender msgs/s to Postfix smtp-sink vs smtp-source against the same sink.
    Send,
    /// DSNs/s through `rundbrief bounce serve` (durable storage), 8 senders,
    /// on SQLite and PostgreSQL, vs a private Postfix instance's intake.
    Endpoint {
        /// Messages per sender connection (default 1,000; 250 with --quick).
        #[arg(long)]
        per_sender: Option<usize>,
    },
    /// An N-recipient campaign to a loopback smtp-sink: materialisation,
    /// end-to-end msgs/s and peak RSS of `campaign send`.
    Campaign {
        /// Recipients (default 1,000,000; 20,000 with --quick).
        #[arg(long)]
        recipients: Option<u64>,
        /// Skip the SQLite run (PostgreSQL only).
        #[arg(long)]
        no_sqlite: bool,
    },
    /// Import rows/s with the recipient-domain check on and off, against a
    /// loopback DNS responder (SQLite, PostgreSQL).
    ImportDns {
        /// Rows (default 1,000,000; 100,000 with --quick).
        #[arg(long)]
        rows: Option<u64>,
        /// Distinct domains (default 50,000).
        #[arg(long)]
        domains: Option<u64>,
    },
    /// How far `campaign status`'s ETA is from the real finish at 25, 50 and
    /// 75 % of a throttled campaign to `rundbrief sink` (SQLite, PostgreSQL).
    Eta {
        /// Recipients (default 20,000).
        #[arg(long)]
        recipients: Option<u64>,
    },
    /// Dashboard latency (p50/p95/max per route) on PostgreSQL with N
    /// subscribers and a finished N-delivery campaign, while `rundbrief
    /// serve` sends another campaign to `rundbrief sink`. Not part of `all`.
    Dashboard {
        /// Subscribers and deliveries of the finished campaign (default
        /// 1,000,000; 100,000 with --quick).
        #[arg(long)]
        subscribers: Option<u64>,
        /// Recipients of the campaign sent during the measurements (default
        /// 100,000, at most --subscribers).
        #[arg(long)]
        live: Option<u64>,
        /// Requests per route.
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
}

/// One figure group: appends its rows to the table.
type Group<'a> = dyn Fn(&mut Vec<Figure>) -> anyhow::Result<()> + 'a;

/// One row of the table.
pub(crate) struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub note: String,
}

impl Figure {
    pub fn new(
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        note: impl Into<String>,
    ) -> Self {
        Figure {
            name: name.into(),
            value,
            unit,
            note: note.into(),
        }
    }
}

/// Bytes as MiB.
pub(crate) fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let mut figures = Vec::new();
    match &args.what {
        What::All => {
            // One failing group must not lose the others' figures.
            let groups: [(&str, &Group); 6] = [
                ("import", &|f| import(&args, None, f)),
                ("bounce-parse", &|f| bounce_parse(&args, f)),
                ("render", &|f| render::run(&args, f)),
                ("send", &|f| send::run(&args, f)),
                ("endpoint", &|f| endpoint::run(&args, None, f)),
                ("campaign", &|f| campaign::run(&args, None, false, f)),
            ];
            for (name, run) in groups {
                if let Err(e) = run(&mut figures) {
                    eprintln!("{name}: failed: {e:#}");
                    figures.push(Figure {
                        name: format!("{name} (failed)"),
                        value: f64::NAN,
                        unit: "",
                        note: format!("{e:#}").lines().next().unwrap_or("").to_string(),
                    });
                }
            }
        }
        What::Import { rows } => import(&args, *rows, &mut figures)?,
        What::BounceParse => bounce_parse(&args, &mut figures)?,
        What::Render => render::run(&args, &mut figures)?,
        What::Send => send::run(&args, &mut figures)?,
        What::Endpoint { per_sender } => endpoint::run(&args, *per_sender, &mut figures)?,
        What::Campaign {
            recipients,
            no_sqlite,
        } => campaign::run(&args, *recipients, *no_sqlite, &mut figures)?,
        What::ImportDns { rows, domains } => {
            import_dns::run(&args, *rows, *domains, &mut figures)?;
        }
        What::Eta { recipients } => eta::run(&args, *recipients, &mut figures)?,
        What::Dashboard {
            subscribers,
            live,
            requests,
        } => dashboard::run(&args, *subscribers, *live, *requests, &mut figures)?,
    }
    println!("\n{:<60} {:>10} {:<7} note", "figure", "value", "unit");
    for f in &figures {
        let decimals = match f.unit {
            "ratio" => 2,
            "ms" => 1,
            "msg/s" | "rows/s" | "DSN/s" if f.value >= 100.0 => 0,
            _ => 1,
        };
        println!(
            "{:<60} {:>10.decimals$} {:<7} {}",
            f.name, f.value, f.unit, f.note
        );
    }
    Ok(())
}

/// The `rundbrief` binary next to this one.
pub(crate) fn rundbrief() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("rundbrief");
    if !bin.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p rundbrief -p rundbrief-bench`",
            bin.display()
        );
    }
    Ok(bin)
}

/// A finished child: stdout, wall time, peak RSS in bytes.
pub(crate) struct Measured {
    pub stdout: String,
    pub elapsed: Duration,
    pub max_rss: u64,
    /// CPU seconds (user + system) the child used, all its threads.
    pub cpu_secs: f64,
    /// Each stderr line with the time it arrived, counted from the spawn.
    pub stderr_lines: Vec<(Duration, String)>,
}

fn tv_secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Runs `cmd` to the end and reads its own peak RSS and CPU time with `wait4`.
pub(crate) fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let err_pipe = child.stderr.take().context("stderr")?;
    let err_reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(err_pipe).lines() {
            let Ok(line) = line else { break };
            lines.push((started.elapsed(), line));
        }
        lines
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_string(&mut stdout)?;
    let mut status = 0;
    // SAFETY: rusage is plain old data, zero is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for a child we spawned; pointers are valid for the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    let stderr_lines = err_reader.join().unwrap_or_default();
    if rc < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let tail: Vec<&str> = stderr_lines
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(|(_, l)| l.as_str())
            .collect();
        bail!("{cmd:?} failed (status {status}):\n{}", tail.join("\n"));
    }
    Ok(Measured {
        stdout,
        elapsed,
        max_rss: usage.ru_maxrss as u64 * 1024,
        cpu_secs: tv_secs(usage.ru_utime) + tv_secs(usage.ru_stime),
        stderr_lines,
    })
}

pub(crate) fn generate_csv(path: &Path, rows: u64) -> anyhow::Result<()> {
    if std::fs::metadata(path).is_ok() {
        return Ok(());
    }
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "email,name,city,plan")?;
    let cities = ["Berlin", "Köln", "Wien", "Zürich", "Hamburg"];
    for i in 0..rows {
        let plan = if i % 3 == 0 { "pro" } else { "free" };
        writeln!(
            w,
            "user{i}@d{}.example.org,User {i},{},{plan}",
            i % 997,
            cities[(i % 5) as usize]
        )?;
    }
    w.flush()?;
    Ok(())
}

/// `base` with its database name replaced by `db` (query string kept).
fn pg_url_for(base: &str, db: &str) -> String {
    let (base, query) = base
        .split_once('?')
        .map_or((base, None), |(b, q)| (b, Some(q)));
    let start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[start..].find('/').map_or(base.len(), |i| start + i);
    match query {
        Some(q) => format!("{}/{db}?{q}", &base[..host_end]),
        None => format!("{}/{db}", &base[..host_end]),
    }
}

pub(crate) fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A scratch PostgreSQL database, dropped at the end.
pub(crate) struct ScratchDb {
    admin: String,
    name: String,
    pub url: String,
}

impl ScratchDb {
    pub fn new(admin: &str, tag: &str) -> anyhow::Result<Self> {
        let name = format!("rb_bench_{tag}_{}", std::process::id());
        psql(admin, &format!("DROP DATABASE IF EXISTS {name}"))?;
        psql(admin, &format!("CREATE DATABASE {name}"))?;
        Ok(ScratchDb {
            admin: admin.to_string(),
            url: pg_url_for(admin, &name),
            name,
        })
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn run_import(bin: &Path, db_url: &str, csv: &Path, dir: &Path) -> anyhow::Result<Measured> {
    let base = || {
        let mut c = Command::new(bin);
        c.current_dir(dir)
            .env("DATABASE_URL", db_url)
            // No domain check: the generated domains are not real.
            .env("RUNDBRIEF_DNS__CHECK", "false")
            .env_remove("RUST_LOG")
            .arg("-q");
        c
    };
    measure(base().args(["list", "create", "bench"]))?;
    let m = measure(
        base()
            .args(["import"])
            .arg(csv)
            .args(["--list", "bench", "--json"]),
    )?;
    let report: serde_json::Value =
        serde_json::from_str(&m.stdout).context("import --json output")?;
    let imported = report["imported"].as_u64().unwrap_or(0);
    if imported == 0 {
        bail!("the import imported nothing: {report}");
    }
    Ok(m)
}

fn import(args: &Args, rows: Option<u64>, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let bin = rundbrief()?;
    let rows = rows.unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let csv = args.work.join(format!("import-{rows}.csv"));
    generate_csv(&csv, rows)?;
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);

    let dir = args.work.join("sqlite");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("import: {rows} rows into SQLite …");
    let m = run_import(&bin, "sqlite://bench.db?mode=rwc", &csv, &dir)?;
    let rate = rows as f64 / m.elapsed.as_secs_f64();
    figures.push(Figure {
        name: "import SQLite".into(),
        value: rate,
        unit: "rows/s",
        note: format!(
            "target ≥ 200,000; {rows} rows in {:.1} s",
            m.elapsed.as_secs_f64()
        ),
    });
    figures.push(Figure {
        name: "import SQLite peak RSS".into(),
        value: mb(m.max_rss),
        unit: "MiB",
        note: "target ≤ 100".into(),
    });
    if Command::new("python3").arg("--version").output().is_ok() {
        python_sqlite_reference(&bin, &args.work, &csv, rate, figures)?;
    } else {
        eprintln!("import: python3 not found, no Python sqlite3 reference");
    }

    if args.no_postgres {
        return Ok(());
    }
    eprintln!("import: {rows} rows into PostgreSQL …");
    let db = ScratchDb::new(&args.postgres, "import")?;
    let m = run_import(&bin, &db.url, &csv, &dir)?;
    let ours = rows as f64 / m.elapsed.as_secs_f64();
    figures.push(Figure {
        name: "import PostgreSQL".into(),
        value: ours,
        unit: "rows/s",
        note: format!("{rows} rows in {:.1} s", m.elapsed.as_secs_f64()),
    });
    figures.push(Figure {
        name: "import PostgreSQL peak RSS".into(),
        value: mb(m.max_rss),
        unit: "MiB",
        note: "target ≤ 100".into(),
    });
    drop(db);

    // The practical limit for this schema: psql \copy into an unlogged staging
    // table, then one set-based upsert for subscribers and one for memberships.
    eprintln!("import: {rows} rows with psql \\copy + INSERT … SELECT …");
    let db = ScratchDb::new(&args.postgres, "psql")?;
    measure(
        Command::new(&bin)
            .current_dir(&dir)
            .env("DATABASE_URL", &db.url)
            .args(["-q", "list", "create", "bench"]),
    )?;
    let list_id = psql(&db.url, "SELECT id FROM lists WHERE name = 'bench'")?;
    let script = args.work.join("psql-import.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE UNLOGGED TABLE staging (email text, name text, city text, plan text);\n\
             \\copy staging FROM '{csv}' WITH (FORMAT csv, HEADER true)\n\
             INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at, updated_at)\n\
               SELECT gen_random_uuid(), email, lower(email), name, jsonb_build_object('city', city, 'plan', plan), 'active', now(), now() FROM staging\n\
               ON CONFLICT (email_key) DO UPDATE SET name = excluded.name, attributes = excluded.attributes, updated_at = excluded.updated_at;\n\
             INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at)\n\
               SELECT s.id, '{list_id}', 'subscribed', now(), now() FROM staging st JOIN subscribers s ON s.email_key = lower(st.email)\n\
               ON CONFLICT DO NOTHING;\n",
            csv = csv.display()
        ),
    )?;
    let m = measure(
        Command::new("psql")
            .args([db.url.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-f"])
            .arg(&script),
    )?;
    let psql_rate = rows as f64 / m.elapsed.as_secs_f64();
    figures.push(Figure {
        name: "psql \\copy + set-based upserts".into(),
        value: psql_rate,
        unit: "rows/s",
        note: "the ceiling for this schema (no audit rows)".into(),
    });
    figures.push(Figure {
        name: "import PostgreSQL / psql".into(),
        value: ours / psql_rate,
        unit: "ratio",
        note: "target ≥ 0.7".into(),
    });
    Ok(())
}

/// The SQLite reference, measured here: Python's sqlite3 with batched
/// upserts into our schema (`scripts/sqlite_upserts.py`), once the way the
/// psql reference writes (subscribers and memberships) and once with the
/// audit entry per row that the importer writes too.
fn python_sqlite_reference(
    bin: &Path,
    work: &Path,
    csv: &Path,
    ours: f64,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sqlite_upserts.py");
    for audit in [false, true] {
        let dir = work.join("sqlite-python");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let base = || {
            let mut c = Command::new(bin);
            c.current_dir(&dir)
                .env("DATABASE_URL", "sqlite://bench.db?mode=rwc")
                .env_remove("RUST_LOG")
                .arg("-q");
            c
        };
        measure(base().args(["list", "create", "bench"]))?;
        let lists: serde_json::Value =
            serde_json::from_str(&measure(base().args(["list", "ls", "--json"]))?.stdout)
                .context("list ls --json output")?;
        let list_id = lists[0]["id"].as_str().context("the bench list's id")?;
        eprintln!(
            "import: Python sqlite3 batched upserts{} …",
            if audit { ", with audit entries" } else { "" }
        );
        let mut cmd = Command::new("python3");
        cmd.arg(&script);
        if !audit {
            cmd.arg("--no-audit");
        }
        let m = measure(cmd.arg(dir.join("bench.db")).arg(csv).arg(list_id))?;
        let out: serde_json::Value = serde_json::from_str(&m.stdout)
            .with_context(|| format!("sqlite_upserts.py output: {}", m.stdout))?;
        let rate = out["rows_per_s"].as_f64().context("rows_per_s")?;
        let (name, note) = if audit {
            (
                "Python sqlite3 upserts + audit",
                "same tables as the importer writes",
            )
        } else {
            (
                "Python sqlite3 upserts",
                "subscribers + memberships, as the psql reference (issue: ~170,000 on its machine)",
            )
        };
        figures.push(Figure {
            name: name.into(),
            value: rate,
            unit: "rows/s",
            note: note.into(),
        });
        figures.push(Figure {
            name: format!("import SQLite / {name}"),
            value: ours / rate,
            unit: "ratio",
            note: String::new(),
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn bounce_parse(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bounce/tests/fixtures");
    let mut messages = Vec::new();
    for dir in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let dir = dir?.path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir)? {
            let f = f?.path();
            if f.extension().is_some_and(|e| e == "eml") {
                messages.push(std::fs::read(&f)?);
            }
        }
    }
    if messages.is_empty() {
        bail!("no .eml fixtures under {}", root.display());
    }
    let rounds = if args.quick { 50 } else { 300 };
    let started = Instant::now();
    let mut recipients = 0usize;
    for _ in 0..rounds {
        for m in &messages {
            recipients += rundbrief_bounce::parse(std::hint::black_box(m))
                .recipients
                .len();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = (rounds * messages.len()) as f64;
    std::hint::black_box(recipients);
    figures.push(Figure {
        name: "bounce parse (one core)".into(),
        value: n / elapsed,
        unit: "msg/s",
        note: format!(
            "target ≥ 60,000; {} corpus messages × {rounds}",
            messages.len()
        ),
    });
    Ok(())
}
