//! Prints one rendered campaign message (shipped layout, a typical Markdown
//! issue with a code block, links, a table and a quote) to stdout, for
//! checking it with outside tools: `scripts/spamassassin.sh` feeds it to
//! SpamAssassin. `cargo run -p rundbrief-render --example sample_message`.

use std::io::Write as _;

use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, Renderer, TransferEncoding,
};

const CONTENT: &str = r#"# Rundbrief 12: what changed in March

Hello {{default subscriber.name "reader"}}, here is what happened on the project this month.

## Faster sending

The sender now keeps its connections open between messages, so a campaign of
10,000 recipients goes out in under a minute on an ordinary relay. Read the
[benchmark notes](https://news.example.org/2026/03/benchmarks?utm_source=newsletter&utm_medium=email&utm_campaign=issue-12).

```toml
[sending]
rate = 100
domain_rate = 20
```

| setting | default | what it does |
|---|---|---|
| `rate` | 100 | messages per second in total |
| `domain_rate` | 20 | messages per second to one domain |

> "We moved our 40,000-subscriber list over in an afternoon." — a reader

Thanks for reading, and see you in April.
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let renderer = Renderer::new(CampaignTemplate {
        subject: "Rundbrief 12: what changed in March".into(),
        content: CONTENT.into(),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "Rundbrief <news@example.org>".into(),
        reply_to: None,
        list_id: "rundbrief-news.example.org".into(),
        list_name: "Rundbrief News".into(),
        campaign_id: "issue-12".into(),
        message_id_domain: "example.org".into(),
        time_zone: rundbrief_render::Tz::Europe__Berlin,
        transfer_encoding: TransferEncoding::Base64,
        postal_address: Some("Rundbrief GmbH, Domstraße 1, 50667 Köln, Germany".into()),
    })?;
    let msg = renderer.render(
        &Recipient {
            email: "anna.mueller@example.net".into(),
            name: Some("Anna Müller".into()),
            unsubscribe_url: "https://news.example.org/u/ab3kq7mzq2xw5e4r6t8y9u0i1o2p3a4s".into(),
            unsubscribe_mailto: "mailto:unsub-ab3kq7mzq2xw5e4r6t8y9u0i1o2p3a4s@bounce.example.org"
                .into(),
            view_url: None,
            message_id: Some("0193c0de7a1b7c2d8e9f0a1b2c3d4e5f".into()),
            ..Recipient::default()
        },
        chrono::Utc::now(),
    )?;
    std::io::stdout().write_all(&msg)?;
    Ok(())
}
