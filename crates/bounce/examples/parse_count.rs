//! Instruction counts of `parse` under callgrind (repeatable on a loaded machine,
//! unlike wall-clock figures): every file given is parsed once to warm up (lazy
//! automata, allocator), then once more inside `measured`, the only function counted.
//!
//! ```sh
//! cargo build --release -p rundbrief-bounce --example parse_count
//! cd crates/bounce/tests/fixtures
//! valgrind --tool=callgrind --toggle-collect='parse_count::measured' \
//!     $CARGO_TARGET_DIR/release/examples/parse_count */*.eml
//! ```
//!
//! "Collected" divided by the number of files is the instructions per message.

use std::hint::black_box;

#[inline(never)]
fn measured(raw: &[u8]) -> usize {
    black_box(rundbrief_bounce::parse(black_box(raw)))
        .recipients
        .len()
}

fn main() {
    let mut files = Vec::new();
    for path in std::env::args_os().skip(1) {
        match std::fs::read(&path) {
            Ok(raw) => files.push(raw),
            Err(e) => {
                eprintln!("{}: {e}", path.to_string_lossy());
                std::process::exit(1);
            }
        }
    }
    for f in &files {
        black_box(rundbrief_bounce::parse(f));
    }
    let mut recipients = 0;
    for f in &files {
        recipients += measured(f);
    }
    println!("{} messages, {recipients} recipients", files.len());
}
