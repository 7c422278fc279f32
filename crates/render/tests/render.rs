//! Whole-message tests: golden files, a round trip through mail-parser, header
//! injection, and template errors with positions.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, RenderError, Renderer, TransferEncoding,
    check_template,
};
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 6, 8, 0, 0)
        .single()
        .expect("valid fixed date")
}

const MARKDOWN: &str = r#"# Issue 12: {{list.name}}

Hello {{default subscriber.name "reader"}}, here is the news from **{{default subscriber.attributes.city "your town"}}**.

- first item, with a [link](https://example.org/a?b=1&c=2)
- second item: sent {{format_date date "%e %B %Y, %H:%M"}}

> Quoted text with ümlauts and an emoji 📬.
"#;

fn campaign() -> CampaignTemplate {
    CampaignTemplate {
        subject: "News for {{default subscriber.attributes.city \"you\"}} – Ausgabe 12".into(),
        content: MARKDOWN.into(),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "Rundbrief Redaktion <news@example.org>".into(),
        reply_to: Some("Redaktion <editors@example.org>".into()),
        list_id: "news.lists.example.org".into(),
        list_name: "Rundbrief News".into(),
        campaign_id: "issue-12".into(),
        message_id_domain: "mail.example.org".into(),
        time_zone: chrono_tz::Europe::Berlin,
        transfer_encoding: TransferEncoding::EightBit,
        postal_address: Some("Rundbrief GmbH, Domstraße 1, 50667 Köln".into()),
    }
}

fn recipient() -> Recipient {
    let mut attributes = serde_json::Map::new();
    attributes.insert("city".into(), json!("Köln"));
    Recipient {
        email: "anna@example.org".into(),
        name: Some("Anna Müller".into()),
        attributes,
        unsubscribe_url: "https://lists.example.org/u/tok123".into(),
        unsubscribe_mailto: "mailto:u-tok123@lists.example.org".into(),
        view_url: Some("https://lists.example.org/v/tok123".into()),
        message_id: None,
    }
}

fn render(c: CampaignTemplate, r: &Recipient) -> Result<Vec<u8>, RenderError> {
    Renderer::new(c)?.render(r, now())
}

/// Replace the values of Date and Message-ID (and the boundary derived from
/// the latter) so goldens do not depend on them.
fn normalise(msg: &str) -> String {
    let mut boundary = None;
    let mut out = String::new();
    for line in msg.split_inclusive("\r\n") {
        if line.starts_with("Date: ") {
            out.push_str("Date: DATE\r\n");
        } else if line.starts_with("Message-ID: ") {
            out.push_str("Message-ID: <ID>\r\n");
        } else {
            if boundary.is_none()
                && let Some(p) = line.find("boundary=\"")
            {
                let rest = &line[p + 10..];
                boundary = rest.find('"').map(|e| rest[..e].to_owned());
            }
            out.push_str(line);
        }
    }
    match boundary {
        Some(b) => out.replace(&b, "BOUNDARY"),
        None => out,
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compare with the golden file; on a mismatch write `NAME.actual` and fail.
/// `UPDATE_GOLDEN=1` rewrites the golden instead.
fn assert_golden(name: &str, got: &str) {
    let path = fixture(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if want != got {
        let actual = path.with_extension("actual.eml");
        std::fs::write(&actual, got).expect("write actual");
        panic!(
            "{} differs from the golden file; see {}",
            path.display(),
            actual.display()
        );
    }
}

#[test]
fn golden_markdown_in_shipped_layout_8bit() {
    let msg = render(campaign(), &recipient()).expect("renders");
    assert_golden(
        "markdown_shipped_8bit.eml",
        &normalise(&String::from_utf8(msg).expect("8bit is utf-8")),
    );
}

#[test]
fn golden_html_in_operator_layout_base64_text_from_html() {
    let layout = Layout::from_html(
        "operator",
        "<html><head><style>p { color: #333; } .btn { font-weight: bold; }</style></head>\
         <body>{{> header}}{{{content}}}<p><a class=\"btn\" href=\"{{unsubscribe_url}}\">Abmelden</a></p></body></html>",
    )
    .with_partial("header", "<p class=\"btn\">{{list.name}}</p>");
    let c = CampaignTemplate {
        content: "<p>Hallo {{subscriber.name}} &amp; willkommen!</p>".into(),
        content_kind: ContentKind::Html,
        layout,
        transfer_encoding: TransferEncoding::Base64,
        postal_address: None,
        reply_to: None,
        ..campaign()
    };
    let r = Recipient {
        message_id: Some("0190b3c2-delivery-1".into()),
        view_url: None,
        ..recipient()
    };
    let msg = render(c, &r).expect("renders");
    let msg = String::from_utf8(msg).expect("base64 message is ascii");
    assert!(msg.is_ascii());
    assert!(msg.contains("Message-ID: <0190b3c2-delivery-1@mail.example.org>\r\n"));
    assert_golden("html_operator_base64.eml", &normalise(&msg));
}

#[test]
fn css_is_inlined_once_into_the_compiled_template() {
    let r = Renderer::new(campaign()).expect("compiles");
    let html = r.html_template();
    assert!(
        !html.contains(".card p {"),
        "rules are inlined, not left in <style>"
    );
    assert!(html.contains("@media only screen"), "responsive rules stay");
    assert!(html.contains("style=\""), "styles are inline");
    assert!(
        html.contains("{{unsubscribe_url}}"),
        "expressions survive inlining"
    );
    assert!(
        html.contains("{{format_date date \"%e %B %Y, %H:%M\"}}"),
        "quotes inside expressions survive"
    );
}

#[test]
fn round_trip_through_mail_parser() {
    for enc in [
        TransferEncoding::Base64,
        TransferEncoding::EightBit,
        TransferEncoding::QuotedPrintable,
    ] {
        let c = CampaignTemplate {
            transfer_encoding: enc,
            ..campaign()
        };
        let raw = render(c, &recipient()).expect("renders");
        let msg = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(msg.subject(), Some("News for Köln – Ausgabe 12"), "{enc:?}");
        let to = msg.to().and_then(|a| a.first()).expect("To");
        assert_eq!(to.name(), Some("Anna Müller"));
        assert_eq!(to.address(), Some("anna@example.org"));
        let from = msg.from().and_then(|a| a.first()).expect("From");
        assert_eq!(from.address(), Some("news@example.org"));
        assert_eq!(
            msg.reply_to()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("editors@example.org")
        );
        let mid = msg.message_id().expect("Message-ID");
        assert!(
            mid.starts_with("issue-12.") && mid.ends_with("@mail.example.org"),
            "{mid}"
        );
        assert_eq!(
            msg.date().map(|d| d.to_timestamp()),
            Some(now().timestamp())
        );
        assert!(
            String::from_utf8_lossy(&raw).contains("\r\nDate: Tue, 06 Jan 2026 08:00:00 +0000\r\n")
        );

        let ct = msg.root_part().content_type().expect("content type");
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("alternative"))
        );
        assert_eq!(msg.text_body_count(), 1);
        assert_eq!(msg.html_body_count(), 1);
        let want_cte = match enc {
            TransferEncoding::Base64 => "base64",
            TransferEncoding::EightBit => "8bit",
            _ => "quoted-printable",
        };
        for part in [msg.text_part(0), msg.html_part(0)] {
            let part = part.expect("part");
            let ct = part.content_type().expect("part content type");
            assert_eq!(ct.attribute("charset"), Some("utf-8"));
            assert_eq!(part.content_transfer_encoding(), Some(want_cte), "{enc:?}");
        }
        let text = msg.body_text(0).expect("text");
        assert!(text.contains("Hello Anna Müller"), "{text}");
        assert!(text.contains("Unsubscribe: https://lists.example.org/u/tok123"));
        assert!(
            text.contains("6 January 2026, 09:00"),
            "date in Europe/Berlin: {text}"
        );
        let html = msg.body_html(0).expect("html");
        assert!(
            html.contains("<strong style=") || html.contains("<strong>Köln</strong>"),
            "{html}"
        );
        assert!(html.contains("Köln") && html.contains("📬"));
        assert!(html.contains("href=\"https://example.org/a?b=1&amp;c=2\""));
        assert!(html.contains("<title>News for Köln – Ausgabe 12</title>"));

        let raw_header = |n: &str| {
            msg.header_raw(n)
                .map(|v| v.replace("\r\n ", " ").trim().to_owned())
        };
        assert_eq!(
            raw_header("List-Id").as_deref(),
            Some("Rundbrief News <news.lists.example.org>")
        );
        assert_eq!(
            raw_header("List-Unsubscribe").as_deref(),
            Some("<https://lists.example.org/u/tok123>, <mailto:u-tok123@lists.example.org>")
        );
        assert_eq!(
            raw_header("List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        assert_eq!(
            raw_header("Feedback-ID").as_deref(),
            Some("issue-12:news.lists.example.org:rundbrief")
        );
        assert_eq!(raw_header("Precedence").as_deref(), Some("bulk"));
        assert_eq!(raw_header("MIME-Version").as_deref(), Some("1.0"));
    }
}

/// The header block of a raw message, and its header names in order.
fn header_names(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .filter(|l| !l.starts_with(' ') && !l.starts_with('\t'))
        .filter_map(|l| l.split(':').next().map(|n| n.to_ascii_lowercase()))
        .collect()
}

const EXPECTED_HEADERS: &[&str] = &[
    "from",
    "reply-to",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
    "precedence",
    "mime-version",
    "content-type",
];

#[test]
fn subscriber_data_never_becomes_a_header() {
    let evil: &[&str] = &[
        "x\r\nBcc: victim@example.org",
        "x\nBcc: victim@example.org",
        "x\rBcc: victim@example.org",
        "x\0\r\nBcc: victim@example.org",
        "\r\n\r\n<html>body injection",
        "Bcc: victim@example.org",
        "\"quoted\" <other@example.org>, victim@example.org",
        "=?utf-8?b?QmNjOiB2aWN0aW1AZXhhbXBsZS5vcmc=?=",
    ];
    for &payload in evil {
        // In the display name, in an attribute used by the subject, and in the subject via the name.
        let mut attributes = serde_json::Map::new();
        attributes.insert("city".into(), json!(payload));
        let r = Recipient {
            name: Some(payload.into()),
            attributes,
            ..recipient()
        };
        let c = CampaignTemplate {
            subject: "{{subscriber.name}} / {{subscriber.attributes.city}}".into(),
            ..campaign()
        };
        let raw = render(c, &r).expect("renders");
        let mut names = header_names(&raw);
        names.sort();
        let mut want: Vec<String> = EXPECTED_HEADERS.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(names, want, "payload {payload:?} changed the header set");
        let head = String::from_utf8_lossy(&raw);
        let head = head.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        assert!(!head.contains('\0'), "NUL in headers for {payload:?}");
        assert!(!head.to_ascii_lowercase().contains("\nbcc"), "{payload:?}");
        assert!(
            head.split("\r\n")
                .all(|l| !l.contains('\r') && !l.contains('\n')),
            "bare CR or LF in headers for {payload:?}"
        );

        let msg = MessageParser::default().parse(&raw).expect("parses");
        assert!(msg.bcc().is_none(), "{payload:?}");
        let to: Vec<_> = msg
            .to()
            .map(|a| a.iter().filter_map(|m| m.address()).collect())
            .unwrap_or_default();
        assert_eq!(to, vec!["anna@example.org"], "{payload:?}");
        if !payload.starts_with("=?") {
            let name = msg
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.name())
                .unwrap_or_default();
            assert_eq!(name, payload.trim(), "display name decodes to the input");
            // The subject is one line: line breaks and other control
            // characters from subscriber data are folded to a space (#21).
            let one_line = format!("{payload} / {payload}")
                .trim()
                .split(|c: char| c.is_control())
                .filter(|p| !p.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(
                msg.subject(),
                Some(one_line.as_str()),
                "subject decodes to the input, on one line"
            );
        }
    }
}

#[test]
fn recipient_values_that_cannot_be_encoded_are_rejected() {
    let cases: Vec<(&str, Recipient)> = vec![
        (
            "address with CRLF",
            Recipient {
                email: "a@example.org\r\nBcc: v@example.org".into(),
                ..recipient()
            },
        ),
        (
            "address with space",
            Recipient {
                email: "a b@example.org".into(),
                ..recipient()
            },
        ),
        (
            "http unsubscribe",
            Recipient {
                unsubscribe_url: "http://x.example.org/u".into(),
                ..recipient()
            },
        ),
        (
            "unsubscribe URL with CRLF",
            Recipient {
                unsubscribe_url: "https://x.example.org/u\r\nBcc: v@example.org".into(),
                ..recipient()
            },
        ),
        (
            "mailto with >",
            Recipient {
                unsubscribe_mailto: "mailto:a@x.org>, <https://evil".into(),
                ..recipient()
            },
        ),
        (
            "message id with CRLF",
            Recipient {
                message_id: Some("a\r\nBcc: v".into()),
                ..recipient()
            },
        ),
        (
            "view URL with space",
            Recipient {
                view_url: Some("https://x.org/a b".into()),
                ..recipient()
            },
        ),
    ];
    let renderer = Renderer::new(campaign()).expect("compiles");
    for (what, r) in cases {
        let err = renderer.render(&r, now()).expect_err(what);
        assert!(
            matches!(
                err,
                RenderError::Address { .. }
                    | RenderError::HeaderValue { .. }
                    | RenderError::ListId { .. }
            ),
            "{what}: {err}"
        );
    }
}

#[test]
fn campaign_settings_are_validated() {
    let cases: Vec<(&str, CampaignTemplate)> = vec![
        (
            "from",
            CampaignTemplate {
                from: "News <news@example.org>\r\nBcc: v@example.org".into(),
                ..campaign()
            },
        ),
        (
            "reply_to",
            CampaignTemplate {
                reply_to: Some("not an address".into()),
                ..campaign()
            },
        ),
        (
            "list id",
            CampaignTemplate {
                list_id: "news lists".into(),
                ..campaign()
            },
        ),
        (
            "list name",
            CampaignTemplate {
                list_name: "News\r\nBcc: v@example.org".into(),
                ..campaign()
            },
        ),
        (
            "campaign id",
            CampaignTemplate {
                campaign_id: "a:b".into(),
                ..campaign()
            },
        ),
        (
            "domain",
            CampaignTemplate {
                message_id_domain: "exa mple.org".into(),
                ..campaign()
            },
        ),
    ];
    for (what, c) in cases {
        let err = Renderer::new(c)
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert!(
            matches!(
                err,
                RenderError::Address { .. }
                    | RenderError::HeaderValue { .. }
                    | RenderError::ListId { .. }
            ),
            "{what}: {err}"
        );
    }
}

#[test]
fn template_errors_report_their_position() {
    // (source, line, column, words the message must contain)
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        (
            "unknown variable",
            "Hello\n  {{subscriber.nmae}}!",
            2,
            3,
            "subscriber.nmae",
        ),
        (
            "unknown helper",
            "Hi\n{{shout subscriber.name}}",
            2,
            1,
            "shout",
        ),
        (
            "unclosed block at the start",
            "{{#if view_url}}\n<a>view</a>\n",
            1,
            1,
            "`{{#if}}` opened here is never closed",
        ),
        // handlebars says "expected <grammar rules>" at the end; we name the
        // expression or block that is never closed, where it opens.
        (
            "unclosed expression",
            "line one\nline {{ two",
            2,
            6,
            "this `{{` is never closed",
        ),
        (
            "unclosed block",
            "Hi\n  {{#if subscriber.name}}\nx\n{{#each a}}{{/each}}\n",
            2,
            3,
            "`{{#if}}` opened here is never closed: add `{{/if}}`",
        ),
        (
            "other syntax error",
            "x {{#if}}{{/if}} {{.}}}",
            1,
            20,
            "invalid handlebars syntax",
        ),
        ("mismatched close", "{{#if a}}\nx\n{{/each}}", 3, 1, "each"),
        (
            "bad date format",
            "x {{format_date date \"%Q\"}}",
            1,
            3,
            "invalid format string",
        ),
    ];
    for (kind, src, line, col, word) in cases {
        let err = check_template("issue.md", src).expect_err(kind);
        let shown = err.to_string();
        assert!(
            matches!(err, RenderError::Template { .. }),
            "{kind}: {shown}"
        );
        assert_eq!(err.position(), Some((*line, *col)), "{kind}: {shown}");
        assert!(
            shown.starts_with(&format!("issue.md:{line}:{col}: ")),
            "{kind}: {shown}"
        );
        assert!(shown.contains(word), "{kind}: {shown}");
    }
    for ok in [
        "{{subscriber.attributes.anything}} {{default subscriber.attributes.x \"y\"}} {{#if view_url}}{{view_url}}{{/if}}",
        "{{> footer}} {{unsubscribe_url}} {{unsubscribe_mailto}} {{list.id}} {{campaign.id}} {{format_date date \"%F\"}}",
        "{{!-- a }} b --}} {{#each subscriber.attributes}}{{@key}}{{/each}}",
    ] {
        check_template("ok.md", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn renderer_new_reports_positions_in_the_operator_source() {
    let c = CampaignTemplate {
        subject: "Hi {{subscriber.nmae}}".into(),
        ..campaign()
    };
    let err = Renderer::new(c).expect_err("error");
    assert_eq!(
        err.to_string().split(": ").next(),
        Some("subject:1:4"),
        "{err}"
    );

    let c = CampaignTemplate {
        content: "# T\n\n{{#each x}}".into(),
        ..campaign()
    };
    let err = Renderer::new(c).expect_err("error");
    assert!(err.to_string().starts_with("content:"), "{err}");

    let c = CampaignTemplate {
        layout: Layout::from_html("mine", "<p>no slot</p>"),
        ..campaign()
    };
    assert!(matches!(
        Renderer::new(c),
        Err(RenderError::ContentSlot { .. })
    ));
}

#[test]
fn missing_attribute_fails_only_that_recipient() {
    let c = CampaignTemplate {
        subject: "For {{subscriber.attributes.city}}".into(),
        ..campaign()
    };
    let renderer = Renderer::new(c).expect("compiles: attributes are per subscriber");
    assert!(renderer.render(&recipient(), now()).is_ok());
    let r = Recipient {
        attributes: serde_json::Map::new(),
        ..recipient()
    };
    let err = renderer.render(&r, now()).expect_err("city missing");
    assert!(matches!(err, RenderError::Personalise { .. }), "{err}");
    assert!(err.to_string().contains("anna@example.org"), "{err}");
    // The ledger's version reads the same for every recipient and says
    // what is missing and how to give it a fallback.
    let summary = err.without_recipient();
    assert!(!summary.contains("anna@example.org"), "{summary}");
    assert!(
        summary.starts_with("subject")
            && summary.contains("missing `subscriber.attributes.city`")
            && summary.contains("{{default subscriber.attributes.city"),
        "{summary}"
    );
}

#[test]
fn operator_layout_directory() {
    let dir = std::env::temp_dir().join(format!("rundbrief-render-layout-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("partials")).expect("mkdir");
    std::fs::write(
        dir.join("layout.html.hbs"),
        "<html><body>{{> top}}{{{content}}}</body></html>",
    )
    .expect("write");
    std::fs::write(
        dir.join("layout.txt.hbs"),
        "{{{content}}}\n-- {{unsubscribe_url}}\n",
    )
    .expect("write");
    std::fs::write(dir.join("partials/top.hbs"), "<h1>{{list.name}}</h1>").expect("write");
    let layout = Layout::from_dir(&dir).expect("loads");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(layout.partials.len(), 1);
    let renderer = Renderer::new(CampaignTemplate {
        layout,
        ..campaign()
    })
    .expect("compiles");
    assert!(renderer.html_template().contains("<h1>{{list.name}}</h1>"));
    assert!(
        renderer
            .text_template()
            .ends_with("-- {{unsubscribe_url}}\r\n")
    );
    assert!(matches!(
        Layout::from_dir(Path::new("/nonexistent/layout")),
        Err(RenderError::LayoutIo { .. })
    ));
}

#[test]
fn markdown_keeps_expressions_intact() {
    let c = CampaignTemplate {
        content: "[view]({{view_url}}) *{{default subscriber.attributes.x \"a_b\"}}* \\{{literal}}"
            .into(),
        layout: Layout::from_html("bare", "{{{content}}}"),
        ..campaign()
    };
    let renderer = Renderer::new(c).expect("compiles");
    let msg = renderer.render(&recipient(), now()).expect("renders");
    let msg = MessageParser::default().parse(&msg).expect("parses");
    let html = msg.body_html(0).expect("html");
    assert!(
        html.contains("<a href=\"https://lists.example.org/v/tok123\">view</a>"),
        "{html}"
    );
    assert!(html.contains("<em>a_b</em>"), "{html}");
    assert!(html.contains("{{literal}}"), "{html}");
}

#[test]
fn expressions_between_table_rows_and_in_style() {
    let table = "<html><body><table>{{#if view_url}}<tr><td><a href=\"{{view_url}}\">web</a></td></tr>{{/if}}\
                 <tr><td>{{{content}}}</td></tr></table></body></html>";
    // CSS inlining keeps the row condition in place (it travels as an HTML comment).
    let with_text = Layout::from_html("table", table).with_text("{{{content}}}");
    let c = CampaignTemplate {
        layout: with_text,
        content_kind: ContentKind::Html,
        content: "<p>x</p>".into(),
        ..campaign()
    };
    let renderer = Renderer::new(c).expect("compiles");
    assert!(renderer.html_template().contains("<table>{{#if view_url}}<tbody><tr><td><a href=\"{{view_url}}\">web</a></td></tr>{{/if}}<tr>"), "{}", renderer.html_template());
    let msg = renderer
        .render(
            &Recipient {
                view_url: None,
                ..recipient()
            },
            now(),
        )
        .expect("renders");
    let msg = MessageParser::default().parse(&msg).expect("parses");
    assert!(!msg.body_html(0).expect("html").contains(">web<"));

    // html2text would move that condition out of the table: refused, with advice.
    let c = CampaignTemplate {
        layout: Layout::from_html("table", table),
        ..campaign()
    };
    let err = Renderer::new(c).expect_err("misplaced");
    assert!(matches!(err, RenderError::Misplaced { .. }), "{err}");
    assert!(
        err.to_string().contains("{{#if view_url}}") && err.to_string().contains("text layout"),
        "{err}"
    );

    // An expression inside <style> cannot survive inlining.
    let styled = "<html><head><style>p { color: {{subscriber.attributes.color}}; }</style></head><body>{{{content}}}</body></html>";
    let c = CampaignTemplate {
        layout: Layout::from_html("styled", styled).with_text("{{{content}}}"),
        ..campaign()
    };
    let err = Renderer::new(c).expect_err("misplaced");
    assert!(
        matches!(err, RenderError::Misplaced { ref stage, .. } if stage == "CSS inlining"),
        "{err}"
    );
}

/// Deterministic fuzzing of the display name and the subject with characters
/// chosen to break headers: whatever comes in, the header set stays the same.
#[test]
fn generated_hostile_names_keep_the_header_set() {
    const ALPHABET: &[&str] = &[
        "\r", "\n", "\r\n", "\0", "\t", " ", ":", ";", ",", "<", ">", "\"", "\\", "=?", "?=", "@",
        "Bcc", "To", "ü", "📬", "a", "\u{7f}", "\u{1b}", "(", ")",
    ];
    let renderer = Renderer::new(CampaignTemplate {
        subject: "{{subscriber.name}}{{subscriber.attributes.city}}".into(),
        ..campaign()
    })
    .expect("compiles");
    let mut want: Vec<String> = EXPECTED_HEADERS.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..500 {
        let mut name = String::new();
        for _ in 0..(round % 40 + 1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            name.push_str(ALPHABET[(seed % ALPHABET.len() as u64) as usize]);
        }
        let mut attributes = serde_json::Map::new();
        attributes.insert("city".into(), json!(name.clone()));
        let r = Recipient {
            name: Some(name.clone()),
            attributes,
            ..recipient()
        };
        let raw = renderer.render(&r, now()).expect("renders");
        let mut names = header_names(&raw);
        names.sort();
        assert_eq!(names, want, "name {name:?}");
        let msg = MessageParser::default().parse(&raw).expect("parses");
        let to: Vec<_> = msg
            .to()
            .map(|a| a.iter().filter_map(|m| m.address()).collect())
            .unwrap_or_default();
        assert_eq!(to, vec!["anna@example.org"], "name {name:?}");
    }
}

/// Issue #20 points 8 and 9: preheader (first paragraph, or front matter),
/// postal address and list name in the footer, the "-- " signature
/// separator, and a dark-mode variant.
#[test]
fn issue_20_shipped_layout_footer_preheader_and_dark_mode() {
    let raw = render(campaign(), &recipient()).expect("renders");
    let msg = MessageParser::default().parse(&raw).expect("parses");
    let text = msg.body_text(0).expect("text");
    assert!(
        text.contains("\r\n-- \r\n"),
        "signature separator: {text:?}"
    );
    assert!(text.contains("Rundbrief GmbH, Domstraße 1, 50667 Köln"));
    let html = msg.body_html(0).expect("html");
    assert!(html.contains("@media (prefers-color-scheme: dark)"));
    assert!(html.contains("<meta name=\"color-scheme\" content=\"light dark\">"));
    assert!(html.contains("subscribed to Rundbrief News."));
    assert!(html.contains(">Rundbrief GmbH, Domstraße 1, 50667 Köln</p>"));
    let pre = html.find("class=\"preheader\"").expect("preheader");
    assert!(
        html[pre..].contains(">Hello Anna Müller, here is the news from Köln."),
        "{html}"
    );

    let c = CampaignTemplate {
        content: format!(
            "---\npreheader: Neues für {{{{default subscriber.attributes.city \"dich\"}}}}\n---\n{MARKDOWN}"
        ),
        postal_address: None,
        ..campaign()
    };
    let raw = render(c, &recipient()).expect("renders");
    let msg = MessageParser::default().parse(&raw).expect("parses");
    let html = msg.body_html(0).expect("html");
    assert!(html.contains("class=\"preheader\""));
    assert!(html.contains(">Neues für Köln"), "{html}");
    assert!(!html.contains("preheader:"), "front matter leaked: {html}");
    assert!(!html.contains("Domstraße"));
}

/// #21: a line break that reaches the subject from subscriber data is folded
/// to a space: the subject stays one line, for the reader and for parsers.
#[test]
fn a_line_break_from_an_attribute_becomes_a_space_in_the_subject() {
    let mut r = recipient();
    r.attributes
        .insert("city".into(), json!("Köln\r\nBcc: victim@example.net\n"));
    let bytes = render(campaign(), &r).expect("renders");
    let text = String::from_utf8_lossy(&bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        !head.lines().any(|l| l.starts_with("Bcc:")),
        "a header line came from the attribute:\n{head}"
    );
    let msg = mail_parser::MessageParser::default()
        .parse(&bytes)
        .expect("parses");
    assert_eq!(
        msg.subject(),
        Some("News for Köln Bcc: victim@example.net – Ausgabe 12")
    );
}
