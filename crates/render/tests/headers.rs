//! Issue #20 point 2: encoded headers decode to exactly what was rendered,
//! in two independent decoders: mail-parser and Python's `email` package
//! (`policy.default`, the one that follows RFC 2047 §6.2 strictly). A test
//! that needs `python3` fails when it is missing: CI has it.

use std::io::Write as _;
use std::process::{Command, Stdio};

use chrono::{TimeZone, Utc};
use mail_parser::MessageParser;
use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, Renderer, TransferEncoding,
};

fn campaign(subject: &str, list_name: &str) -> CampaignTemplate {
    CampaignTemplate {
        subject: subject.into(),
        content: "Hallo.".into(),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "Redaktion Köln-Süd <news@example.org>".into(),
        reply_to: None,
        list_id: "news.example.org".into(),
        list_name: list_name.into(),
        campaign_id: "c1".into(),
        message_id_domain: "example.org".into(),
        time_zone: chrono_tz::UTC,
        transfer_encoding: TransferEncoding::Base64,
        postal_address: None,
    }
}

fn recipient(name: &str) -> Recipient {
    Recipient {
        email: "anna@example.org".into(),
        name: Some(name.into()),
        unsubscribe_url: "https://example.org/u/t".into(),
        unsubscribe_mailto: "mailto:u-t@example.org".into(),
        ..Recipient::default()
    }
}

/// (subject template, what it renders to, list name, display name)
const CASES: &[(&str, &str, &str, &str)] = &[
    ("Grüße  Köln", "Grüße  Köln", "News", "Anna"),
    (
        "für {{default subscriber.attributes.x \"\"}} — Ausgabe",
        "für  — Ausgabe",
        "Bücher  & Co",
        "Anna Müller",
    ),
    (
        "Ein sehr langer Betreff über die Straßenbahn in Köln, Düsseldorf und Mönchengladbach mit Umlauten",
        "Ein sehr langer Betreff über die Straßenbahn in Köln, Düsseldorf und Mönchengladbach mit Umlauten",
        "Rundbrief für Freundinnen und Freunde der Straßenbahn",
        "Maximiliane Friederike von und zu Hohenzollern-Sigmaringen Müller-Lüdenscheidt",
    ),
    (
        "日本語のニュースレター 第十二号 「東京」と「大阪」からの便り",
        "日本語のニュースレター 第十二号 「東京」と「大阪」からの便り",
        "ニュース",
        "山田 太郎",
    ),
    (
        "plain ASCII, with =?odd?= words",
        "plain ASCII, with =?odd?= words",
        "News",
        "Doe, John",
    ),
];

fn rendered(subject: &str, list: &str, name: &str) -> Vec<u8> {
    Renderer::new(campaign(subject, list))
        .expect("compiles")
        .render(
            &recipient(name),
            Utc.with_ymd_and_hms(2026, 1, 6, 8, 0, 0)
                .single()
                .expect("date"),
        )
        .expect("renders")
}

fn header_block(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

#[test]
fn issue_20_encoded_headers_round_trip_through_mail_parser() {
    for (subject, want, list, name) in CASES {
        let raw = rendered(subject, list, name);
        let head = header_block(&raw);
        for line in head.split("\r\n") {
            assert!(line.len() <= 998, "{line}");
        }
        let msg = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(msg.subject(), Some(*want), "{head}");
        let to = msg.to().and_then(|a| a.first()).expect("To");
        assert_eq!(to.name(), Some(*name), "{head}");
        assert_eq!(to.address(), Some("anna@example.org"));
        let from = msg.from().and_then(|a| a.first()).expect("From");
        assert_eq!(from.name(), Some("Redaktion Köln-Süd"), "{head}");
    }
}

#[test]
fn issue_20_encoded_headers_round_trip_through_python_email() {
    const SCRIPT: &str = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
print(json.dumps({
    "subject": str(m["subject"]),
    "to": m["to"].addresses[0].display_name,
    "from": m["from"].addresses[0].display_name,
    "list_id": str(m["list-id"]),
    "defects": [str(d) for h in ("subject", "to", "from", "list-id") for d in m[h].defects],
}))
"#;
    for (subject, want, list, name) in CASES {
        let raw = rendered(subject, list, name);
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed (CI installs it)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&raw)
            .expect("write");
        let out = child.wait_with_output().expect("python3 runs");
        assert!(out.status.success(), "python3 failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let head = header_block(&raw);
        assert_eq!(v["subject"], *want, "{head}");
        assert_eq!(v["to"], *name, "{head}");
        assert_eq!(v["from"], "Redaktion Köln-Süd", "{head}");
        let list_id = v["list_id"].as_str().unwrap_or_default();
        assert!(
            list_id.starts_with(&format!("{list} <"))
                || list_id.starts_with(&format!("\"{list}\" <")),
            "{list_id} / {head}"
        );
        assert_eq!(v["defects"], serde_json::json!([]), "{head}");
    }
}
