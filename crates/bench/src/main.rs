//! `rundbrief-bench`: the figures the issues ask for, printed as one table.
//!
//! It measures the real `rundbrief` binary (built next to this one: run
//! `cargo build --release --workspace` first) as a child process, so peak RSS
//! is the child's own (`wait4` rusage), and compares with the practical
//! ceilings named in the issues (psql's `\copy` for the import). Library-level
//! figures (bounce parsing) run in-process on one thread.
//!
//! Nothing here is a test: it prints numbers, it asserts nothing.

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
}

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    note: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let mut figures = Vec::new();
    match &args.what {
        What::All => {
            import(&args, None, &mut figures)?;
            bounce_parse(&args, &mut figures)?;
        }
        What::Import { rows } => import(&args, *rows, &mut figures)?,
        What::BounceParse => bounce_parse(&args, &mut figures)?,
    }
    println!("\n{:<44} {:>14} {:<8} note", "figure", "value", "unit");
    for f in &figures {
        let decimals = if f.unit == "ratio" { 2 } else { 1 };
        println!(
            "{:<44} {:>14.decimals$} {:<8} {}",
            f.name, f.value, f.unit, f.note
        );
    }
    Ok(())
}

/// The `rundbrief` binary next to this one.
fn rundbrief() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("rundbrief");
    if !bin.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release --workspace`",
            bin.display()
        );
    }
    Ok(bin)
}

/// A finished child: stdout, wall time, peak RSS in bytes.
struct Measured {
    stdout: String,
    elapsed: Duration,
    max_rss: u64,
}

/// Runs `cmd` to the end and reads its own peak RSS with `wait4`.
fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut err_pipe = child.stderr.take().context("stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
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
    let stderr = err_reader.join().unwrap_or_default();
    if rc < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (status {status}):\n{stderr}");
    }
    Ok(Measured {
        stdout,
        elapsed,
        max_rss: usage.ru_maxrss as u64 * 1024,
    })
}

fn generate_csv(path: &Path, rows: u64) -> anyhow::Result<()> {
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

fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
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
struct ScratchDb {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDb {
    fn new(admin: &str, tag: &str) -> anyhow::Result<Self> {
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
