//! `parse` must never panic: arbitrary bytes, and corpus files with random edits.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for d in fs::read_dir(root).expect("fixtures").flatten() {
        if let Ok(rd) = fs::read_dir(d.path()) {
            for f in rd.flatten() {
                if f.path().extension().is_some_and(|e| e == "eml") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// One edit of a corpus file: overwrite, insert, delete or truncate.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    Just(b'\n'),
                    Just(b':'),
                    Just(b'-'),
                    Just(b'<'),
                    Just(b'@'),
                    Just(b';'),
                    any::<u8>()
                ],
                0..64
            )
        )
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 0usize..512).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut raw: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = raw.len().max(1);
        match e {
            Edit::Set(i, b) => {
                if let Some(x) = raw.get_mut(i % len) {
                    *x = *b;
                }
            }
            Edit::Insert(i, v) => {
                let at = (i % len).min(raw.len());
                raw.splice(at..at, v.iter().copied());
            }
            Edit::Delete(i, n) => {
                let at = (i % len).min(raw.len());
                let end = (at + n).min(raw.len());
                raw.drain(at..end);
            }
            Edit::Truncate(i) => raw.truncate(i % len),
        }
    }
    raw
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        let b = rundbrief_bounce::parse(&raw);
        prop_assert!(b.recipients.len() <= rundbrief_bounce::MAX_RECIPIENTS);
    }

    #[test]
    fn mutated_corpus_never_panics(idx in any::<usize>(), edits in prop::collection::vec(edit(), 1..8)) {
        let files = corpus();
        prop_assume!(!files.is_empty());
        let raw = fs::read(&files[idx % files.len()]).expect("fixture");
        let b = rundbrief_bounce::parse(&apply(raw, &edits));
        prop_assert!(b.recipients.len() <= rundbrief_bounce::MAX_RECIPIENTS);
    }

    #[test]
    fn classify_reply_never_panics(code in any::<u16>(), enh in proptest::option::of("[0-9.]{0,12}"), text in ".{0,300}") {
        let _ = rundbrief_bounce::classify_reply(code, enh.as_deref(), &text);
    }
}

/// Inputs shaped to hit the limits: many recipients, huge fields, deep nesting.
#[test]
fn hostile_shapes_are_bounded() {
    let mut many = String::from(
        "From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n",
    );
    for i in 0..5000 {
        many.push_str(&format!(
            "Final-Recipient: rfc822; u{i}@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        ));
    }
    many.push_str("--B--\r\n");
    let b = rundbrief_bounce::parse(many.as_bytes());
    assert_eq!(b.recipients.len(), rundbrief_bounce::MAX_RECIPIENTS);

    let mut nested = String::new();
    for i in 0..200 {
        nested.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    let _ = rundbrief_bounce::parse(nested.as_bytes());

    let long_line = format!("Subject: x\r\n\r\n{}", "a@b.example ".repeat(200_000));
    let b = rundbrief_bounce::parse(long_line.as_bytes());
    assert!(b.recipients.len() <= rundbrief_bounce::MAX_RECIPIENTS);

    let big = vec![b'x'; rundbrief_bounce::MAX_INPUT + 10];
    let _ = rundbrief_bounce::parse(&big);
}
