//! A second, separate figure: the classifier on real bounces that are not in the dev
//! corpus, flufl.bounce's test messages, with our own labels
//! (`tests/extra/flufl-labels.jsonl`; `tests/extra/README.md` says where the LGPL
//! messages come from and why they are not copied here). Runs only when
//! `RUNDBRIEF_FLUFL_DIR` points at flufl.bounce's `flufl/bounce/tests/data/`; fails on
//! a false prune (a message not labelled `hard` read as `hard`).

use std::fs;
use std::path::Path;

use serde_json::Value;

#[test]
fn flufl_bounce_messages() {
    let Some(dir) = std::env::var_os("RUNDBRIEF_FLUFL_DIR") else {
        println!(
            "RUNDBRIEF_FLUFL_DIR is not set: flufl.bounce figure skipped (tests/extra/README.md)"
        );
        return;
    };
    let labels = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/extra/flufl-labels.jsonl");
    let text = fs::read_to_string(&labels).expect("tests/extra/flufl-labels.jsonl must exist");
    let (mut n, mut ok) = (0usize, 0usize);
    let mut misses = Vec::new();
    let mut false_prunes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let e: Value = serde_json::from_str(line).expect("label line is JSON");
        let file = e["file"].as_str().expect("file");
        let want = e["class"].as_str().expect("class");
        let path = Path::new(&dir).join(file);
        let raw = fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let got = rundbrief_bounce::parse(&raw);
        n += 1;
        if got.class.as_str() == want {
            ok += 1;
        } else {
            misses.push(format!(
                "{file}: want {want}, got {} ({})",
                got.class.as_str(),
                got.rule
            ));
            if got.class == rundbrief_bounce::BounceClass::Hard {
                false_prunes.push(file.to_string());
            }
        }
    }
    assert!(n > 0, "no labels");
    println!(
        "flufl.bounce (extra, not dev): class accuracy {ok}/{n} = {:.2}%, false prunes {}",
        ok as f64 * 100.0 / n as f64,
        false_prunes.len()
    );
    println!("misses:\n  {}", misses.join("\n  "));
    assert!(false_prunes.is_empty(), "false prunes: {false_prunes:?}");
}

/// DSNs written by real MTAs (`tests/gen/postfix.sh`, `tests/gen/exim.sh`), committed
/// with their labels in `tests/gen/<mta>/labels.jsonl`: every one must get its label.
#[test]
fn generated_mta_dsns() {
    let mut n = 0usize;
    let mut misses = Vec::new();
    for mta in ["postfix", "exim"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/gen")
            .join(mta);
        let text = fs::read_to_string(dir.join("labels.jsonl"))
            .unwrap_or_else(|err| panic!("tests/gen/{mta}/labels.jsonl: {err}"));
        let mut here = 0usize;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let e: Value = serde_json::from_str(line).expect("label line is JSON");
            let file = e["file"].as_str().expect("file");
            let want = e["class"].as_str().expect("class");
            let raw = fs::read(dir.join(file)).unwrap_or_else(|err| panic!("{mta}/{file}: {err}"));
            let got = rundbrief_bounce::parse(&raw);
            here += 1;
            if got.class.as_str() != want {
                misses.push(format!(
                    "{mta}/{file}: want {want}, got {} ({})",
                    got.class.as_str(),
                    got.rule
                ));
            }
        }
        assert!(here > 0, "no generated DSNs for {mta}");
        n += here;
    }
    println!(
        "generated MTA DSNs (extra, not dev): {}/{n} right",
        n - misses.len()
    );
    assert!(misses.is_empty(), "misses:\n  {}", misses.join("\n  "));
}
