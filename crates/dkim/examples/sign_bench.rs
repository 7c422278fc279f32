//! Signing cost per message: `cargo run --release -p rundbrief-dkim --example sign_bench`.
//! Signs a rendered ~10 kB newsletter with a fresh RSA-2048 and Ed25519 key
//! and prints messages per second on one core.

use rundbrief_dkim::{Algorithm, DkimSigner, generate_key};
use rundbrief_render::{CampaignTemplate, ContentKind, Layout, Recipient, Renderer};
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let renderer = Renderer::new(CampaignTemplate {
        subject: "Issue 12".into(),
        content: "# News\n\n".to_owned()
            + &"Some paragraph of news, with a [link](https://example.org/x).\n\n".repeat(60),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "News <news@example.org>".into(),
        reply_to: None,
        list_id: "news.example.org".into(),
        list_name: "News".into(),
        campaign_id: "12".into(),
        message_id_domain: "example.org".into(),
        time_zone: rundbrief_render::parse_time_zone("UTC")?,
        transfer_encoding: Default::default(),
        postal_address: None,
    })?;
    let message = renderer.render(
        &Recipient {
            email: "anna@example.net".into(),
            unsubscribe_url: "https://news.example.org/u/tok".into(),
            unsubscribe_mailto: "mailto:u-tok@bounce.example.org".into(),
            ..Recipient::default()
        },
        chrono::Utc::now(),
    )?;
    for alg in [Algorithm::Rsa, Algorithm::Ed25519] {
        let pem = generate_key(alg)?;
        let signer = DkimSigner::from_pem(pem.as_bytes(), Path::new("bench"), "s", "example.org")?;
        let n = 2000;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(signer.sign(&message)?);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{alg}: {} bytes/message, {:.0} messages/s on one core ({:.3} ms each)",
            message.len(),
            n as f64 / secs,
            secs * 1000.0 / n as f64
        );
    }
    Ok(())
}
