//! Issue #20 points 4 and 5: several keys sign every message (RSA and
//! Ed25519 together), `Feedback-ID` is signed, `From`, `Subject`,
//! `List-Unsubscribe` and `List-Unsubscribe-Post` are over-signed, and an
//! independent implementation agrees: dkimpy (Python, Debian's
//! `python3-dkim` with `python3-nacl` for Ed25519; `.ci/run` installs both)
//! verifies each signature against the TXT record our code derives, fed to
//! it through its `dnsfunc` (no DNS). mail-auth's verifier checks the same
//! messages. Without python3 or dkimpy the test fails: CI has them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{TimeZone, Utc};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, DkimResult};
use rundbrief_dkim::{Algorithm, DkimRecord, DkimSigner, KeySigner, warnings};
use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, Renderer, TransferEncoding,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn rendered() -> Vec<u8> {
    Renderer::new(CampaignTemplate {
        subject: "Grüße  aus Köln für {{default subscriber.name \"Sie\"}}".into(),
        content: "# Neues\n\nHallo {{default subscriber.name \"Leserin\"}}. 📬\n\n```\nfn main() {}\n```\n".into(),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "Rundbrief Redaktion <news@example.org>".into(),
        reply_to: None,
        list_id: "news.example.org".into(),
        list_name: "Rundbrief News".into(),
        campaign_id: "issue-12".into(),
        message_id_domain: "example.org".into(),
        time_zone: rundbrief_render::Tz::UTC,
        transfer_encoding: TransferEncoding::Base64,
        postal_address: Some("Rundbrief GmbH, Domstraße 1, 50667 Köln".into()),
    })
    .expect("compiles")
    .render(
        &Recipient {
            email: "anna@example.net".into(),
            name: Some("Anna Müller".into()),
            unsubscribe_url: "https://news.example.org/u/tok123".into(),
            unsubscribe_mailto: "mailto:u-tok123@bounce.example.org".into(),
            ..Recipient::default()
        },
        Utc.with_ymd_and_hms(2026, 1, 6, 8, 0, 0).single().expect("date"),
    )
    .expect("renders")
}

fn key(file: &str, selector: &str) -> KeySigner {
    KeySigner::from_file(&fixture(file), selector, "example.org").expect("fixture key loads")
}

/// The `DKIM-Signature` headers of `signed`, unfolded.
fn signatures(signed: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in signed
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\r\n")
    {
        if line.starts_with("DKIM-Signature:") {
            out.push(line.to_owned());
        } else if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push_str(line.trim());
            }
        } else if !out.is_empty() && !line.starts_with("DKIM-Signature:") {
            break;
        }
    }
    out
}

fn tag<'a>(sig: &'a str, name: &str) -> &'a str {
    sig.split_once(':')
        .map_or("", |(_, v)| v)
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {sig}"))
}

/// dkimpy's verdict for each signature of `signed` (index 0 = top), with
/// `records` as the only DNS data.
fn dkimpy(signed: &[u8], records: &[DkimRecord]) -> Vec<bool> {
    const SCRIPT: &str = r#"
import json, sys, dkim
records = json.loads(sys.argv[1])
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    value = records.get(name.rstrip("."))
    return value.encode() if value is not None else None
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
n = len([h for h in d.headers if h[0].lower() == b"dkim-signature"])
print(json.dumps([bool(d.verify(idx=i, dnsfunc=dnsfunc)) for i in range(n)]))
"#;
    let map: serde_json::Map<String, serde_json::Value> = records
        .iter()
        .map(|r| (r.name.clone(), serde_json::Value::String(r.value.clone())))
        .collect();
    let mut child = Command::new(python_with_dkimpy())
        .args(["-c", SCRIPT, &serde_json::Value::Object(map).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (CI has it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(signed)
        .expect("write");
    let out = child.wait_with_output().expect("python3 runs");
    assert!(
        out.status.success(),
        "dkimpy failed (install python3-dkim and python3-nacl; .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dkimpy's verdicts as JSON")
}

/// The first Python that imports dkimpy and PyNaCl: `RUNDBRIEF_PYTHON`,
/// `python3` on the PATH (pip's `dkimpy`), or Debian's `/usr/bin/python3`
/// (`python3-dkim`, `python3-nacl`; a pyenv `python3` first on the PATH does
/// not see those).
fn python_with_dkimpy() -> String {
    let candidates = std::env::var("RUNDBRIEF_PYTHON")
        .into_iter()
        .chain(["python3".to_owned(), "/usr/bin/python3".to_owned()]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import dkim, nacl"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py;
        }
    }
    panic!(
        "no Python with dkimpy and PyNaCl: install Debian's python3-dkim and python3-nacl \
         (.ci/run does) or `pip install dkimpy pynacl`, or set RUNDBRIEF_PYTHON"
    );
}

/// mail-auth's verdicts, with `records` as the only DNS data.
async fn mail_auth(signed: &[u8], records: &[DkimRecord]) -> Vec<DkimResult> {
    use mail_auth::{MessageAuthenticator, Parameters, ResolverCache, Txt};
    use std::time::{Duration, Instant};
    #[derive(Default)]
    struct Txts(std::sync::Mutex<std::collections::HashMap<Box<str>, Txt>>);
    impl ResolverCache<Box<str>, Txt> for Txts {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.lock().unwrap().get(name).cloned()
        }
        fn remove<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.lock().unwrap().remove(name)
        }
        fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
            self.0.lock().unwrap().insert(key, value);
        }
    }
    let txts = Txts::default();
    for r in records {
        let key = DomainKey::parse(r.value.as_bytes()).expect("our record parses");
        txts.insert(
            format!("{}.", r.name).into(),
            Txt::from(key),
            Instant::now() + Duration::from_secs(3600),
        );
    }
    let auth = MessageAuthenticator::new_cloudflare().expect("resolver object (never queried)");
    let msg = AuthenticatedMessage::parse(signed).expect("parses");
    type P<'x> = Parameters<
        'x,
        &'x AuthenticatedMessage<'x>,
        mail_auth::common::cache::NoCache<Box<str>, Txt>,
        mail_auth::common::cache::NoCache<Box<str>, mail_auth::RecordSet<mail_auth::MX>>,
        mail_auth::common::cache::NoCache<Box<str>, mail_auth::RecordSet<std::net::Ipv4Addr>>,
        mail_auth::common::cache::NoCache<Box<str>, mail_auth::RecordSet<std::net::Ipv6Addr>>,
        mail_auth::common::cache::NoCache<std::net::IpAddr, mail_auth::RecordSet<Box<str>>>,
    >;
    let params: P<'_> = Parameters::new(&msg);
    auth.verify_dkim(params.with_txt_cache(&txts))
        .await
        .iter()
        .map(|o| o.result().clone())
        .collect()
}

#[tokio::test]
async fn issue_20_rsa_ed25519_and_dual_signatures_verify_in_dkimpy_and_mail_auth() {
    let message = rendered();
    let cases: Vec<(&str, DkimSigner)> = vec![
        ("rsa", DkimSigner::from(key("rsa2048-pkcs1.pem", "rb2026r"))),
        (
            "ed25519",
            DkimSigner::from(key("ed25519-pkcs8.pem", "rb2026e")),
        ),
        (
            "dual",
            DkimSigner::from_keys(vec![
                key("rsa2048-pkcs8.pem", "rb2026r"),
                key("ed25519-pkcs8.pem", "rb2026e"),
            ]),
        ),
    ];
    for (what, signer) in cases {
        let signed = signer.sign(&message).expect("signs");
        assert!(signed.ends_with(&message), "{what}: message unchanged");
        let records = signer.dns_records();
        let text = String::from_utf8_lossy(&signed);
        let sigs = signatures(&text);
        assert_eq!(sigs.len(), signer.keys().len(), "{what}");
        for (sig, k) in sigs.iter().zip(signer.keys()) {
            assert_eq!(tag(sig, "s"), k.selector(), "{what}");
            let a = match k.algorithm() {
                Algorithm::Rsa => "rsa-sha256",
                Algorithm::Ed25519 => "ed25519-sha256",
            };
            assert_eq!(tag(sig, "a"), a, "{what}");
        }
        let py = dkimpy(&signed, &records);
        println!("{what}: dkimpy {py:?}");
        assert_eq!(py, vec![true; sigs.len()], "{what}: dkimpy");
        let ma = mail_auth(&signed, &records).await;
        println!("{what}: mail-auth {ma:?}");
        assert_eq!(ma, vec![DkimResult::Pass; sigs.len()], "{what}: mail-auth");

        // A tampered Subject fails in both.
        let tampered = text.replacen("Subject: ", "Subject: X", 1);
        assert_eq!(
            dkimpy(tampered.as_bytes(), &records),
            vec![false; sigs.len()],
            "{what}: tampered"
        );
    }
}

#[test]
fn issue_20_feedback_id_is_signed_and_reader_headers_are_over_signed() {
    let message = rendered();
    let signer = DkimSigner::from(key("rsa2048-pkcs1.pem", "rb2026r"));
    let signed = String::from_utf8(signer.sign(&message).expect("signs")).expect("utf-8");
    let sig = &signatures(&signed)[0];
    let h: Vec<String> = tag(sig, "h")
        .split(':')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let head = String::from_utf8_lossy(&message);
    let head = head
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let occurs = |name: &str| {
        head.split("\r\n")
            .filter(|l| l.starts_with(&format!("{name}:")))
            .count()
    };
    assert!(h.contains(&"feedback-id".to_owned()), "{h:?}");
    assert_eq!(occurs("feedback-id"), 1);
    for name in [
        "from",
        "subject",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        let listed = h.iter().filter(|n| *n == name).count();
        assert_eq!(occurs(name), 1, "{name}");
        assert_eq!(
            listed,
            occurs(name) + 1,
            "{name} must be over-signed: {h:?}"
        );
    }

    // An added second Subject breaks the signature (dkimpy).
    let injected = signed.replacen("\r\nSubject: ", "\r\nSubject: Win a prize\r\nSubject: ", 1);
    assert_eq!(
        dkimpy(injected.as_bytes(), &signer.dns_records()),
        vec![false]
    );
}

#[test]
fn issue_20_only_ed25519_keys_get_a_warning() {
    assert_eq!(warnings(&[]), Vec::<String>::new());
    assert!(warnings(&[Algorithm::Rsa]).is_empty());
    assert!(warnings(&[Algorithm::Rsa, Algorithm::Ed25519]).is_empty());
    let w = warnings(&[Algorithm::Ed25519]);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("Ed25519") && w[0].contains("RSA"), "{w:?}");
    let ed = DkimSigner::from(key("ed25519-pkcs8.pem", "e"));
    assert_eq!(ed.warnings().len(), 1);
}

#[test]
fn several_keys_from_config() {
    let mut cfg = rundbrief_core::Config::default();
    cfg.dkim.key_file = Some(fixture("rsa2048-pkcs1.pem"));
    cfg.dkim.selector = Some("r".into());
    cfg.dkim.domain = Some("example.org".into());
    cfg.dkim.keys.push(rundbrief_core::config::DkimKeyConfig {
        key_file: fixture("ed25519-pkcs8.pem"),
        selector: "e".into(),
        domain: "example.org".into(),
    });
    let s = DkimSigner::from_config(&cfg)
        .expect("loads")
        .expect("configured");
    let algs: Vec<_> = s.keys().iter().map(KeySigner::algorithm).collect();
    assert_eq!(algs, [Algorithm::Rsa, Algorithm::Ed25519]);
    assert_eq!(s.dns_records().len(), 2);
    assert!(s.warnings().is_empty());
    // The old single form alone still works.
    cfg.dkim.keys.clear();
    let s = DkimSigner::from_config(&cfg)
        .expect("loads")
        .expect("configured");
    assert_eq!(s.keys().len(), 1);
}
