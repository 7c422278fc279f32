//! Golden fixtures: every `tests/fixtures/<origin>/NN.eml` must parse to exactly
//! `NN.json`, with LF and with CRLF line endings. On a mismatch the actual output is
//! written to `NN.actual.json` and the test fails. `UPDATE_GOLDEN=1` rewrites the
//! `.json` files instead (review the diff before committing).

use std::fs;
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Every `.eml` under the fixtures folder, sorted.
fn emls() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dirs = fs::read_dir(fixtures_dir()).expect("tests/fixtures must exist");
    for d in dirs.flatten() {
        if !d.path().is_dir() {
            continue;
        }
        for f in fs::read_dir(d.path())
            .expect("readable fixture folder")
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "eml") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn to_lf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

fn render(raw: &[u8]) -> String {
    let mut s = serde_json::to_string_pretty(&rundbrief_bounce::parse(raw))
        .expect("ParsedBounce serializes");
    s.push('\n');
    s
}

#[test]
fn golden_fixtures_lf_and_crlf() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut seen = 0;
    let mut failures = Vec::new();
    for eml in emls() {
        let raw = fs::read(&eml).expect("readable fixture");
        let lf = render(&to_lf(&raw));
        let crlf = render(&to_crlf(&raw));
        let golden = eml.with_extension("json");
        let actual = eml.with_extension("actual.json");
        if lf != crlf {
            fs::write(&actual, format!("{lf}\n// CRLF gave:\n{crlf}")).expect("write actual");
            failures.push(format!("{}: LF and CRLF differ", eml.display()));
            seen += 1;
            continue;
        }
        if update {
            fs::write(&golden, &lf).expect("write golden");
        } else {
            let want = fs::read_to_string(&golden).unwrap_or_default();
            if want != lf {
                fs::write(&actual, &lf).expect("write actual");
                failures.push(format!(
                    "{}: differs from {}",
                    eml.display(),
                    golden.display()
                ));
            } else if actual.exists() {
                let _ = fs::remove_file(&actual);
            }
        }
        seen += 1;
    }
    assert!(
        seen > 0,
        "no fixtures found under {}",
        fixtures_dir().display()
    );
    assert!(
        failures.is_empty(),
        "{} of {seen} fixtures failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
