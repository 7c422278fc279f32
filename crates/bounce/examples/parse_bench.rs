//! Throughput of `parse` on one core: loads every fixture `.eml` into memory and
//! parses them all for a fixed number of rounds, then prints messages per second.
//!
//! `cargo run --release -p rundbrief-bounce --example parse_bench [-- ROUNDS]`
//! (default 200 rounds, at most 10,000).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200)
        .clamp(1, 10_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    let Ok(dirs) = std::fs::read_dir(&root) else {
        eprintln!("no fixtures at {}", root.display());
        std::process::exit(2);
    };
    for d in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.path().extension().is_some_and(|e| e == "eml")
                && let Ok(raw) = std::fs::read(f.path())
            {
                msgs.push(raw);
            }
        }
    }
    if msgs.is_empty() {
        eprintln!("no fixtures at {}", root.display());
        std::process::exit(2);
    }
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    // warm-up
    for m in &msgs {
        black_box(rundbrief_bounce::parse(m));
    }
    let start = Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        for m in &msgs {
            black_box(rundbrief_bounce::parse(black_box(m)));
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} messages ({} distinct, {:.1} KiB avg) in {:.3} s: {:.0} msg/s, {:.1} MiB/s on one core",
        n,
        msgs.len(),
        bytes as f64 / msgs.len() as f64 / 1024.0,
        secs,
        n as f64 / secs,
        (bytes * rounds) as f64 / secs / (1024.0 * 1024.0)
    );
}
