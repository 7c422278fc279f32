//! Accuracy over the dev corpus: `tests/fixtures/manifest.jsonl`, a copy of the shared
//! corpus' manifest (sisimai's results mapped to rundbrief's classes), over the copied
//! `.eml` files. Prints, and fails on:
//!
//! * **false prunes**: a file the manifest does not call `hard` read as `hard`. Must
//!   be zero: `hard` prunes a live reader at once (issue #16).
//! * class accuracy and status exact match on real RFC 3463 codes, against floors
//!   just under what the parser reaches, so that a regression shows.
//!
//! Also prints, for every rule that decided a file: how many dev files and how many
//! distinct MTA families (the file name without `lhost-`/`rhost-` and its number,
//! `lhost-postfix-03.eml` → `postfix`) it decides, and how many rules decide exactly
//! one file. A rule that serves a single file is memorised, not learnt: generalise
//! it or remove it. Counted per file, on the rule of the top-level verdict.
//!
//! Known, deliberate differences from the manifest: recipient words that filters also
//! use ("User unknown", "mailbox unavailable") without a recipient-specific code or
//! the RCPT step are `block`, where the manifest sometimes says `hard` (see
//! docs/architecture.md, "Bounce classification").

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::Value;

/// Class accuracy must stay at or above this share.
const CLASS_FLOOR: f64 = 0.97;
/// First-recipient status exact match, where the manifest's status is a real
/// RFC 3463 code (not one of sisimai's private `x.0.9xx` codes).
const STATUS_FLOOR: f64 = 0.98;

fn fixture_path(file: &str) -> Option<std::path::PathBuf> {
    let stem = file.strip_suffix(".eml")?;
    let (origin, num) = stem.rsplit_once('-')?;
    Some(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(origin)
            .join(format!("{num}.eml")),
    )
}

/// `lhost-postfix-03.eml` → `postfix`, `rfc3464-09.eml` → `rfc3464`.
fn family(file: &str) -> String {
    let stem = file.strip_suffix(".eml").unwrap_or(file);
    let stem = stem.rsplit_once('-').map_or(stem, |(s, _)| s);
    stem.strip_prefix("lhost-")
        .or_else(|| stem.strip_prefix("rhost-"))
        .unwrap_or(stem)
        .to_string()
}

/// A real RFC 3463 code: `c.s.d` with class 2/4/5, subject 0–7 and no sisimai
/// private detail (`x.0.9xx`).
fn is_real_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    let [c, sub, d] = parts[..] else {
        return false;
    };
    let (Ok(sub), Ok(d)) = (sub.parse::<u16>(), d.parse::<u16>()) else {
        return false;
    };
    matches!(c, "2" | "4" | "5") && sub <= 7 && !(sub == 0 && d >= 900)
}

#[test]
fn real_status_codes() {
    assert!(is_real_status("5.1.1"));
    assert!(is_real_status("5.7.509"));
    assert!(is_real_status("4.0.0"));
    assert!(!is_real_status("5.0.910"));
    assert!(!is_real_status("4.0.947"));
    assert!(!is_real_status(""));
    assert_eq!(family("lhost-postfix-03.eml"), "postfix");
    assert_eq!(family("rhost-google-02.eml"), "google");
    assert_eq!(family("rfc3464-09.eml"), "rfc3464");
}

#[derive(Default)]
struct RuleUse {
    files: usize,
    right: usize,
    families: BTreeSet<String>,
}

#[test]
fn accuracy_against_manifest() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifest.jsonl");
    let text = fs::read_to_string(&manifest).expect("tests/fixtures/manifest.jsonl must exist");
    let (mut n, mut ok, mut st_known, mut st_ok) = (0usize, 0usize, 0usize, 0usize);
    let mut confusion: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut rules: BTreeMap<&'static str, RuleUse> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut false_prunes = Vec::new();
    let mut status_misses = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let e: Value = serde_json::from_str(line).expect("manifest line is JSON");
        let file = e["file"].as_str().expect("file");
        let path = fixture_path(file).expect("corpus file name has a number");
        let raw = fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let got = rundbrief_bounce::parse(&raw);
        let want_class = e["class"].as_str().unwrap_or("");
        let got_class = got.class.as_str();
        n += 1;
        let use_ = rules.entry(got.rule).or_default();
        use_.files += 1;
        use_.families.insert(family(file));
        if want_class == got_class {
            ok += 1;
            use_.right += 1;
        } else {
            let ev = got
                .recipients
                .iter()
                .find(|r| r.rule == got.rule)
                .and_then(|r| r.evidence.as_ref())
                .and_then(|ev| serde_json::to_string(ev).ok())
                .unwrap_or_default();
            misses.push(format!(
                "{file}: want {want_class}, got {got_class} ({}) {ev}",
                got.rule
            ));
            if got_class == "hard" {
                false_prunes.push(format!("{file}: {want_class} read as hard ({})", got.rule));
            }
        }
        *confusion
            .entry((want_class.to_string(), got_class.to_string()))
            .or_default() += 1;
        let want_status = e["expect"][0]["status"].as_str().unwrap_or("");
        if is_real_status(want_status) {
            st_known += 1;
            let got_status = got.recipients.first().map_or("", |r| r.status.as_str());
            if got_status == want_status {
                st_ok += 1;
            } else {
                status_misses.push(format!("{file}: want {want_status}, got {got_status:?}"));
            }
        }
    }
    assert!(n > 0, "empty manifest");
    let class_acc = ok as f64 / n as f64;
    let status_acc = st_ok as f64 / st_known.max(1) as f64;
    println!("class accuracy: {ok}/{n} = {:.2}%", class_acc * 100.0);
    println!(
        "status exact match (first recipient, real RFC 3463 codes): {st_ok}/{st_known} = {:.2}%",
        status_acc * 100.0
    );
    println!(
        "false prunes (not hard, read as hard): {}",
        false_prunes.len()
    );
    println!("confusion (expected -> predicted):");
    for ((w, g), c) in &confusion {
        println!("  {w:>9} -> {g:<9} {c}");
    }
    println!("rules (files decided, of them right, distinct MTA families):");
    for (rule, u) in &rules {
        println!(
            "  {rule:<40} {:>3} files {:>3} right {:>2} families  {}",
            u.files,
            u.right,
            u.families.len(),
            u.families.iter().cloned().collect::<Vec<_>>().join(",")
        );
    }
    let single: Vec<&str> = rules
        .iter()
        .filter(|(_, u)| u.files == 1)
        .map(|(r, _)| *r)
        .collect();
    println!(
        "rules deciding exactly one file: {} ({})",
        single.len(),
        single.join(", ")
    );
    println!("misses:\n  {}", misses.join("\n  "));
    println!("status misses:\n  {}", status_misses.join("\n  "));
    assert!(
        false_prunes.is_empty(),
        "false prunes on dev:\n  {}",
        false_prunes.join("\n  ")
    );
    assert!(
        class_acc >= CLASS_FLOOR,
        "class accuracy {class_acc:.4} fell under {CLASS_FLOOR}"
    );
    assert!(
        status_acc >= STATUS_FLOOR,
        "status accuracy {status_acc:.4} fell under {STATUS_FLOOR}"
    );
}
