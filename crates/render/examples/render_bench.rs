//! Render + MIME throughput on one core for a ~20 KB personalised newsletter.
//!
//! ```sh
//! cargo run --release -p rundbrief-render --example render_bench [-- MESSAGES [base64|eightbit|quotedprintable]]
//! ```
//!
//! Prints one line per transfer encoding: messages/s, µs per message and the
//! sizes of the HTML part and of the whole message. The loop count is bounded
//! (default 20,000 per encoding); nothing here asserts on timing.

use std::time::Instant;

use chrono::Utc;
use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, Renderer, TransferEncoding,
};
use serde_json::json;

fn content() -> String {
    let mut md = String::from(
        "# Rundbrief {{format_date date \"%B %Y\"}}\n\nHello {{default subscriber.name \"reader\"}}, \
         this month's news for **{{default subscriber.attributes.city \"your town\"}}**.\n\n",
    );
    let mut n = 0;
    while md.len() < 13_500 {
        n += 1;
        md.push_str(&format!(
            "## Story {n}: what happened in the quarter\n\n\
             Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut \
             labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco \
             laboris nisi ut aliquip ex ea commodo consequat — with ümlauts, «quotes» and a [link](https://example.org/story/{n}?utm_campaign=bench).\n\n\
             - Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore\n\
             - Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia\n\n"
        ));
    }
    md.push_str("See you next month, {{default subscriber.attributes.first_name \"friend\"}}!\n");
    md
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000)
        .clamp(1, 1_000_000);
    let base = CampaignTemplate {
        subject: "Rundbrief für {{default subscriber.attributes.city \"dich\"}}".into(),
        content: content(),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "Rundbrief <news@example.org>".into(),
        reply_to: None,
        list_id: "news.lists.example.org".into(),
        list_name: "Rundbrief News".into(),
        campaign_id: "bench".into(),
        message_id_domain: "mail.example.org".into(),
        time_zone: chrono_tz::Europe::Berlin,
        transfer_encoding: TransferEncoding::Base64,
        postal_address: None,
    };
    let cities = ["Köln", "Wien", "Zürich", "Berlin", "Graz"];
    let recipients: Vec<Recipient> = (0..1000)
        .map(|i| {
            let mut attributes = serde_json::Map::new();
            attributes.insert("city".into(), json!(cities[i % cities.len()]));
            attributes.insert("first_name".into(), json!(format!("Leser {i}")));
            Recipient {
                email: format!("reader{i}@example.org"),
                name: Some(format!("Leserin Nummer {i}")),
                attributes,
                unsubscribe_url: format!("https://lists.example.org/u/tok{i:08}"),
                unsubscribe_mailto: format!("mailto:u-tok{i:08}@lists.example.org"),
                view_url: Some(format!("https://lists.example.org/v/tok{i:08}")),
                message_id: None,
            }
        })
        .collect();

    let only = std::env::args().nth(2);
    for enc in [
        TransferEncoding::Base64,
        TransferEncoding::EightBit,
        TransferEncoding::QuotedPrintable,
    ] {
        if only
            .as_deref()
            .is_some_and(|o| !format!("{enc:?}").eq_ignore_ascii_case(o))
        {
            continue;
        }
        let t0 = Instant::now();
        let renderer = Renderer::new(CampaignTemplate {
            transfer_encoding: enc,
            ..base.clone()
        })?;
        let compile = t0.elapsed();
        let now = Utc::now();
        let sample = renderer.render(&recipients[0], now)?;
        let html_len = renderer.html_template().len();
        let n = if enc == TransferEncoding::QuotedPrintable {
            (count / 10).max(1)
        } else {
            count
        };
        let start = Instant::now();
        let mut bytes = 0usize;
        for i in 0..n {
            bytes += renderer
                .render(&recipients[i % recipients.len()], now)?
                .len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{:<16} {:>8.0} msg/s  {:>6.1} µs/msg  html template {:>6} B  message {:>6} B  ({n} messages, compile {:.1} ms, {:.1} MB out)",
            format!("{enc:?}"),
            n as f64 / secs,
            secs * 1e6 / n as f64,
            html_len,
            sample.len(),
            compile.as_secs_f64() * 1e3,
            bytes as f64 / 1e6,
        );
    }
    Ok(())
}
