//! Prints the `rundbrief bounce parse FILE.eml --json` output for one file:
//! `cargo run -p rundbrief-bounce --example parse -- FILE.eml`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: parse FILE.eml");
        return ExitCode::from(2);
    };
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("{}: {e}", path.to_string_lossy());
            return ExitCode::from(1);
        }
    };
    let parsed = rundbrief_bounce::parse(&raw);
    match serde_json::to_string(&parsed) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot serialize: {e}");
            ExitCode::from(1)
        }
    }
}
