//! Messages rendered by the real renderer, signed by [`DkimSigner`] and checked
//! by mail-auth's verifier against the published TXT record, with the DNS
//! answer served from a cache (no network). Issue #9, "DKIM and DNS".

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use mail_auth::common::cache::NoCache;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MX, MessageAuthenticator, Parameters, RecordSet,
    ResolverCache, Txt,
};
use rundbrief_dkim::{Algorithm, DkimError, DkimRecord, DkimSigner, generate_key};
use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, Renderer, TransferEncoding,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn rendered(encoding: TransferEncoding) -> Vec<u8> {
    let renderer = Renderer::new(CampaignTemplate {
        subject: "Ausgabe 12 für {{default subscriber.name \"Sie\"}}".into(),
        content: "# Neues\n\nHallo {{default subscriber.name \"Leserin\"}}, grüße aus Köln. 📬\n"
            .into(),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "Rundbrief Redaktion <news@example.org>".into(),
        reply_to: Some("Redaktion <editors@example.org>".into()),
        list_id: "news.lists.example.org".into(),
        list_name: "Rundbrief News".into(),
        campaign_id: "issue-12".into(),
        message_id_domain: "example.org".into(),
        time_zone: chrono_tz_berlin(),
        transfer_encoding: encoding,
        postal_address: None,
    })
    .expect("the test campaign renders");
    renderer
        .render(
            &Recipient {
                email: "anna@example.net".into(),
                name: Some("Anna Müller".into()),
                unsubscribe_url: "https://news.example.org/u/tok123".into(),
                unsubscribe_mailto: "mailto:u-tok123@bounce.example.org".into(),
                ..Recipient::default()
            },
            Utc.with_ymd_and_hms(2026, 1, 6, 8, 0, 0).unwrap(),
        )
        .expect("the test recipient renders")
}

fn chrono_tz_berlin() -> rundbrief_render::Tz {
    rundbrief_render::parse_time_zone("Europe/Berlin").expect("a known zone")
}

/// The TXT answers the verifier gets instead of asking DNS.
#[derive(Default)]
struct Txts(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for Txts {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// Verification parameters with no caches; the TXT cache is added per call.
type UncachedParameters<'x> = Parameters<
    'x,
    &'x AuthenticatedMessage<'x>,
    NoCache<Box<str>, Txt>,
    NoCache<Box<str>, RecordSet<MX>>,
    NoCache<Box<str>, RecordSet<Ipv4Addr>>,
    NoCache<Box<str>, RecordSet<Ipv6Addr>>,
    NoCache<IpAddr, RecordSet<Box<str>>>,
>;

/// mail-auth's verdict on `signed`, with `record` as the only DNS data.
async fn verify(signed: &[u8], record: &DkimRecord) -> DkimResult {
    let txts = Txts::default();
    let key = DomainKey::parse(record.value.as_bytes()).expect("our record parses as a DKIM key");
    txts.insert(
        format!("{}.", record.name).into(),
        Txt::from(key),
        Instant::now() + Duration::from_secs(3600),
    );
    let auth = MessageAuthenticator::new_cloudflare().expect("resolver object (never queried)");
    let msg = AuthenticatedMessage::parse(signed).expect("signed message parses");
    let params: UncachedParameters<'_> = Parameters::new(&msg);
    let out = auth.verify_dkim(params.with_txt_cache(&txts)).await;
    assert_eq!(out.len(), 1, "exactly one signature");
    out[0].result().clone()
}

fn signer(file: &str) -> DkimSigner {
    DkimSigner::from_file(&fixture(file), "rb2026", "example.org").expect("fixture key loads")
}

fn header_value<'a>(signed: &'a str, name: &str) -> &'a str {
    let start = signed.find(&format!("{name}: ")).expect("header present");
    let rest = &signed[start..];
    let end = rest.find("\r\n").unwrap();
    &rest[..end]
}

#[tokio::test]
async fn rsa_and_ed25519_signatures_of_a_rendered_message_verify() {
    for (file, alg, public) in [
        ("rsa2048-pkcs1.pem", Algorithm::Rsa, "rsa2048.pub.b64"),
        ("rsa2048-pkcs8.pem", Algorithm::Rsa, "rsa2048.pub.b64"),
        ("ed25519-pkcs8.pem", Algorithm::Ed25519, "ed25519.pub.b64"),
    ] {
        let s = signer(file);
        assert_eq!(s.algorithm(), alg, "{file}");
        let record = s.dns_record();
        assert_eq!(record.name, "rb2026._domainkey.example.org");
        // The public key is exactly what OpenSSL derives from the same file.
        let openssl = std::fs::read_to_string(fixture(public)).unwrap();
        assert_eq!(
            record.value,
            format!("v=DKIM1; k={}; p={}", alg.dns_tag(), openssl.trim()),
            "{file}"
        );
        for enc in [TransferEncoding::EightBit, TransferEncoding::Base64] {
            let message = rendered(enc);
            let signed = s.sign(&message).unwrap();
            assert!(signed.starts_with(b"DKIM-Signature: "), "{file}");
            assert!(
                signed.ends_with(&message),
                "the message itself is unchanged"
            );
            assert_eq!(
                verify(&signed, &record).await,
                DkimResult::Pass,
                "{file} {enc:?}"
            );
        }
    }
}

#[tokio::test]
async fn generated_keys_sign_and_verify() {
    for alg in [Algorithm::Rsa, Algorithm::Ed25519] {
        let pem = generate_key(alg).unwrap();
        let s = DkimSigner::from_pem(pem.as_bytes(), Path::new("new.pem"), "gen", "example.org")
            .unwrap();
        assert_eq!(s.algorithm(), alg);
        let signed = s.sign(&rendered(TransferEncoding::Base64)).unwrap();
        assert_eq!(
            verify(&signed, &s.dns_record()).await,
            DkimResult::Pass,
            "{alg}"
        );
    }
}

#[tokio::test]
async fn the_list_headers_are_signed() {
    let s = signer("rsa2048-pkcs1.pem");
    let signed = String::from_utf8(s.sign(&rendered(TransferEncoding::EightBit)).unwrap()).unwrap();
    // The DKIM-Signature header is folded; unfold it to read h=.
    let mut lines = signed.split("\r\n");
    let mut header = lines.next().unwrap().to_owned();
    for line in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        header.push_str(line.trim());
    }
    let h = header
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix("h="))
        .expect("h= tag")
        .to_ascii_lowercase();
    let signed_names: Vec<&str> = h.split(':').map(str::trim).collect();
    for name in [
        "from",
        "reply-to",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(signed_names.contains(&name), "{name} not in h={h}");
    }
    assert!(
        header.contains("d=example.org") && header.contains("s=rb2026"),
        "{header}"
    );
    assert!(header.contains("c=relaxed/relaxed"), "{header}");
    assert!(!header_value(&signed, "List-Unsubscribe-Post").is_empty());
}

#[tokio::test]
async fn a_changed_body_or_subject_fails_verification() {
    for file in ["rsa2048-pkcs8.pem", "ed25519-pkcs8.pem"] {
        let s = signer(file);
        let record = s.dns_record();
        let signed =
            String::from_utf8(s.sign(&rendered(TransferEncoding::EightBit)).unwrap()).unwrap();
        assert_eq!(verify(signed.as_bytes(), &record).await, DkimResult::Pass);

        let body_changed = signed.replacen("Köln", "Bonn", 1);
        assert_ne!(body_changed, signed);
        // mail-auth reports a body hash mismatch as "neutral" with this
        // error; either way it is not a pass, so DMARC does not count it.
        assert_eq!(
            verify(body_changed.as_bytes(), &record).await,
            DkimResult::Neutral(mail_auth::Error::Dkim(
                mail_auth::dkim::DkimError::FailedBodyHashMatch
            )),
            "{file}: a changed body must not verify"
        );

        let subject = header_value(&signed, "Subject");
        let subject_changed = signed.replacen(subject, "Subject: You won", 1);
        assert!(
            matches!(
                verify(subject_changed.as_bytes(), &record).await,
                DkimResult::Fail(_)
            ),
            "{file}: a changed subject must fail"
        );

        // Verified against another key, the signature fails too.
        let other = signer(if file.starts_with("rsa") {
            "ed25519-pkcs8.pem"
        } else {
            "rsa2048-pkcs1.pem"
        });
        assert!(!matches!(
            verify(signed.as_bytes(), &other.dns_record()).await,
            DkimResult::Pass
        ));
    }
}

#[test]
fn key_errors_name_the_file() {
    let missing = fixture("no-such-key.pem");
    let err = DkimSigner::from_file(&missing, "s", "example.org").unwrap_err();
    assert!(matches!(err, DkimError::ReadKey { .. }));
    assert!(err.to_string().contains("no-such-key.pem"), "{err}");

    let weak = DkimSigner::from_file(&fixture("rsa1024.pem"), "s", "example.org").unwrap_err();
    assert!(matches!(weak, DkimError::InvalidKey { .. }));
    let msg = weak.to_string();
    assert!(msg.contains("rsa1024.pem") && msg.contains("2048"), "{msg}");

    let not_a_key = DkimSigner::from_file(&fixture("rsa2048.pub.b64"), "s", "example.org")
        .unwrap_err()
        .to_string();
    assert!(
        not_a_key.contains("rsa2048.pub.b64") && not_a_key.contains("keygen"),
        "{not_a_key}"
    );
}

#[test]
fn from_config_is_none_without_dkim_and_loads_the_key_with_it() {
    let mut cfg = rundbrief_core::Config::default();
    assert!(DkimSigner::from_config(&cfg).unwrap().is_none());

    cfg.dkim.key_file = Some(fixture("ed25519-pkcs8.pem"));
    let err = DkimSigner::from_config(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("dkim.selector") && err.contains("RUNDBRIEF_DKIM__SELECTOR"),
        "{err}"
    );

    cfg.dkim.selector = Some("rb2026".into());
    cfg.dkim.domain = Some("example.org".into());
    let s = DkimSigner::from_config(&cfg).unwrap().expect("configured");
    assert_eq!((s.selector(), s.domain()), ("rb2026", "example.org"));
    assert_eq!(s.algorithm(), Algorithm::Ed25519);
}
