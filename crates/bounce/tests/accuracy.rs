//! Accuracy over the copied corpus (`tests/fixtures/manifest.jsonl`): class of the
//! whole message and first recipient's status code, against the manifest's
//! expectations (sisimai's results mapped to rundbrief's classes). Prints the figures
//! and fails under the floors below, which sit just under what the parser reaches,
//! so that a regression shows.
//!
//! Known, deliberate differences from the manifest: delayed DSNs are `ignore` here
//! (DESIGN: delays are not bounces; the final failure will come), the manifest says
//! `soft`; sisimai's provider-specific readings (e.g. Japanese carriers' "550 : User
//! unknown" as a filter) are not copied.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

/// Class accuracy must stay at or above this share.
const CLASS_FLOOR: f64 = 0.87;
/// First-recipient status exact match (where the manifest knows a status).
const STATUS_FLOOR: f64 = 0.79;

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

#[test]
fn accuracy_against_manifest() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifest.jsonl");
    let text = fs::read_to_string(&manifest).expect("tests/fixtures/manifest.jsonl must exist");
    let (mut n, mut ok, mut st_known, mut st_ok) = (0usize, 0usize, 0usize, 0usize);
    let mut confusion: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut misses = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let e: Value = serde_json::from_str(line).expect("manifest line is JSON");
        let file = e["file"].as_str().expect("file");
        let path = fixture_path(file).expect("corpus file name has a number");
        let raw = fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let got = rundbrief_bounce::parse(&raw);
        let want_class = e["class"].as_str().unwrap_or("");
        let got_class = got.class.as_str();
        n += 1;
        if want_class == got_class {
            ok += 1;
        } else {
            misses.push(format!(
                "{file}: want {want_class}, got {got_class} ({})",
                got.rule
            ));
        }
        *confusion
            .entry((want_class.to_string(), got_class.to_string()))
            .or_default() += 1;
        let want_status = e["expect"][0]["status"].as_str().unwrap_or("");
        if !want_status.is_empty() {
            st_known += 1;
            if got
                .recipients
                .first()
                .is_some_and(|r| r.status == want_status)
            {
                st_ok += 1;
            }
        }
    }
    assert!(n > 0, "empty manifest");
    let class_acc = ok as f64 / n as f64;
    let status_acc = st_ok as f64 / st_known.max(1) as f64;
    println!("class accuracy: {ok}/{n} = {:.2}%", class_acc * 100.0);
    println!(
        "status exact match (first recipient): {st_ok}/{st_known} = {:.2}%",
        status_acc * 100.0
    );
    println!("confusion (expected -> predicted):");
    for ((w, g), c) in &confusion {
        println!("  {w:>9} -> {g:<9} {c}");
    }
    println!("misses:\n  {}", misses.join("\n  "));
    assert!(
        class_acc >= CLASS_FLOOR,
        "class accuracy {class_acc:.4} fell under {CLASS_FLOOR}"
    );
    assert!(
        status_acc >= STATUS_FLOOR,
        "status accuracy {status_acc:.4} fell under {STATUS_FLOOR}"
    );
}
