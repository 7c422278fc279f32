//! Render + MIME messages/s on one core: the same ~20 KB personalised
//! newsletter as `crates/render/examples/render_bench.rs` (Markdown through
//! the shipped layout, handlebars per recipient, base64 or 8bit bodies).

use crate::{Args, Figure};
use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, Renderer, TransferEncoding,
};
use std::time::Instant;

/// The newsletter: ~13.5 KB of Markdown with three personalised fields.
pub(crate) fn content() -> String {
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
    md.push_str("See you next month, {{default subscriber.attributes.city \"friend\"}}!\n");
    md
}

pub(crate) fn recipients() -> Vec<Recipient> {
    let cities = ["Köln", "Wien", "Zürich", "Berlin", "Graz"];
    (0..1000)
        .map(|i| {
            let mut attributes = serde_json::Map::new();
            attributes.insert("city".into(), cities[i % cities.len()].into());
            attributes.insert("first_name".into(), format!("Leser {i}").into());
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
        .collect()
}

pub(crate) fn run(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let count = if args.quick { 5_000 } else { 20_000 };
    let recipients = recipients();
    let now = chrono::Utc::now();
    for (enc, label) in [
        (TransferEncoding::Base64, "base64"),
        (TransferEncoding::EightBit, "8bit"),
    ] {
        eprintln!("render: {count} messages, {label} …");
        let renderer = Renderer::new(CampaignTemplate {
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
            transfer_encoding: enc,
            postal_address: None,
        })?;
        let size = renderer.render(&recipients[0], now)?.len();
        let started = Instant::now();
        let mut bytes = 0usize;
        for i in 0..count {
            bytes += renderer
                .render(std::hint::black_box(&recipients[i % recipients.len()]), now)?
                .len();
        }
        let secs = started.elapsed().as_secs_f64();
        std::hint::black_box(bytes);
        figures.push(Figure::new(
            format!("render + MIME, one core, {label}"),
            count as f64 / secs,
            "msg/s",
            format!(
                "target ≥ 20,000; {:.1} KB messages, {count} rendered",
                size as f64 / 1024.0
            ),
        ));
    }
    Ok(())
}
