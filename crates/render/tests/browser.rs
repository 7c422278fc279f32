//! Issue #20 point 1: the shipped layout in a real browser. Renders a
//! campaign with a long code line, a long URL, a wide image and a wide
//! table, opens its HTML part in headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`) at a 375 px wide window, light and dark, and
//! asserts that nothing is wider than the screen
//! (`document.documentElement.scrollWidth <= 375`). Without Chromium the
//! test fails: it is part of CI, not optional.
//!
//! `RUNDBRIEF_CHROMIUM` names another binary. The measured widths are
//! printed (`cargo test -p rundbrief-render --test browser -- --nocapture`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use mail_parser::MessageParser;
use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, Renderer, TransferEncoding,
};

const WIDTH: u32 = 375;

fn content() -> String {
    let long_line = format!(
        "let configuration = load(\"{}\").expect(\"the configuration file must exist and parse\");",
        "/etc/rundbrief/".repeat(6)
    );
    let url = format!(
        "https://example.org/{}?utm_source=newsletter&utm_medium=email&utm_campaign=issue-12",
        "a-very-long-path-segment/".repeat(8)
    );
    let svg = "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSIxMjAwIiBoZWlnaHQ9IjQwIj48cmVjdCB3aWR0aD0iMTIwMCIgaGVpZ2h0PSI0MCIgZmlsbD0iIzI1NjNlYiIvPjwvc3ZnPg==";
    format!(
        "# Issue 12\n\nHello {{{{default subscriber.name \"reader\"}}}}, the first paragraph.\n\n\
         ```rust\n{long_line}\n```\n\nRead it at {url} or [here]({url}).\n\n\
         ![wide]({svg})\n\n\
         | column one | column two | column three | column four | column five |\n\
         |---|---|---|---|---|\n\
         | Donaudampfschifffahrtsgesellschaft | Kapitänsmützenabzeichen | {url} | x | y |\n"
    )
}

fn html_part() -> String {
    let renderer = Renderer::new(CampaignTemplate {
        subject: "Issue 12".into(),
        content: content(),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "News <news@example.org>".into(),
        reply_to: None,
        list_id: "news.example.org".into(),
        list_name: "Rundbrief News".into(),
        campaign_id: "c1".into(),
        message_id_domain: "example.org".into(),
        time_zone: chrono_tz::UTC,
        transfer_encoding: TransferEncoding::Base64,
        postal_address: Some("Rundbrief GmbH, Domstraße 1, 50667 Köln".into()),
    })
    .expect("compiles");
    let raw = renderer
        .render(
            &Recipient {
                email: "anna@example.org".into(),
                name: Some("Anna".into()),
                unsubscribe_url: "https://example.org/u/t".into(),
                unsubscribe_mailto: "mailto:u-t@example.org".into(),
                view_url: Some("https://example.org/v/t".into()),
                ..Recipient::default()
            },
            Utc.with_ymd_and_hms(2026, 1, 6, 8, 0, 0)
                .single()
                .expect("date"),
        )
        .expect("renders");
    let msg = MessageParser::default().parse(&raw).expect("parses");
    msg.body_html(0).expect("html part").into_owned()
}

/// The page Chromium opens: the message's HTML in an iframe exactly
/// [`WIDTH`] px wide (a headless window cannot be narrower than 500 px),
/// and a script that writes what we measure into the DOM Chromium dumps.
/// `srcdoc` keeps the frame same-origin, so the script can look inside.
fn page(html: &str) -> String {
    let srcdoc = html.replace('&', "&amp;").replace('"', "&quot;");
    format!(
        r#"<!DOCTYPE html><html><body style="margin:0">
<iframe id="mail" style="width:{WIDTH}px;height:800px;border:0" srcdoc="{srcdoc}"></iframe>
<script>
window.addEventListener("load", function () {{
  var f = document.getElementById("mail");
  var d = f.contentDocument, w = f.contentWindow;
  document.body.setAttribute("data-probe", JSON.stringify({{
    scrollWidth: d.documentElement.scrollWidth,
    innerWidth: w.innerWidth,
    dark: w.matchMedia("(prefers-color-scheme: dark)").matches,
    cardBackground: w.getComputedStyle(d.querySelector(".card")).backgroundColor,
  }}));
}});
</script></body></html>"#
    )
}

#[derive(Debug)]
struct Probe {
    scroll_width: u64,
    inner_width: u64,
    dark: bool,
    card_background: String,
}

fn chromium() -> String {
    std::env::var("RUNDBRIEF_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

fn measure(html: &str, dir: &Path, dark: bool) -> Probe {
    let page = dir.join(if dark { "dark.html" } else { "light.html" });
    std::fs::write(&page, self::page(html)).expect("write page");
    let profile = dir.join(if dark {
        "profile-dark"
    } else {
        "profile-light"
    });
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--window-size=800,900",
        &format!("--user-data-dir={}", profile.display()),
        // Only the page itself: nothing leaves the machine.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=2000",
    ]);
    if dark {
        cmd.args([
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ]);
    }
    cmd.arg("--dump-dom")
        .arg(format!("file://{}", page.display()));
    let out = run_bounded(cmd, Duration::from_secs(60));
    let dom = String::from_utf8_lossy(&out);
    let start = dom
        .find("data-probe=\"")
        .unwrap_or_else(|| panic!("no probe in Chromium's DOM dump:\n{dom}"))
        + "data-probe=\"".len();
    let end = dom[start..].find('"').expect("attribute ends") + start;
    let json = dom[start..end].replace("&quot;", "\"");
    let v: serde_json::Value = serde_json::from_str(&json).expect("probe JSON");
    Probe {
        scroll_width: v["scrollWidth"].as_u64().expect("scrollWidth"),
        inner_width: v["innerWidth"].as_u64().expect("innerWidth"),
        dark: v["dark"].as_bool().expect("dark"),
        card_background: v["cardBackground"].as_str().unwrap_or_default().to_owned(),
    }
}

/// Runs Chromium with a deadline; its stdout.
fn run_bounded(mut cmd: Command, limit: Duration) -> Vec<u8> {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): install Debian's `chromium` (.ci/run does) or set RUNDBRIEF_CHROMIUM",
                chromium()
            )
        });
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("reader")
}

#[test]
fn issue_20_shipped_layout_fits_375_px_in_light_and_dark_mode() {
    let html = html_part();
    let dir = tempfile::tempdir().expect("tempdir");
    let light = measure(&html, dir.path(), false);
    let dark = measure(&html, dir.path(), true);
    println!("375 px window: light {light:?}, dark {dark:?}");
    assert_eq!(light.inner_width, u64::from(WIDTH), "{light:?}");
    assert!(!light.dark, "light run saw dark mode: {light:?}");
    assert!(dark.dark, "dark mode was not emulated: {dark:?}");
    assert_ne!(
        light.card_background, dark.card_background,
        "the dark variant must change the card's colours"
    );
    for p in [&light, &dark] {
        assert!(
            p.scroll_width <= u64::from(WIDTH),
            "the page is {} px wide in a {WIDTH} px window: {p:?}",
            p.scroll_width
        );
    }
}
