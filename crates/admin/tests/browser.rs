//! The dashboard in a real browser: headless Chromium (Debian's `chromium`)
//! driven over WebDriver by `chromedriver` (Debian's `chromium-driver`),
//! which each test starts itself on a free loopback port. The dashboard runs
//! on SQLite with the `serve` scheduler sending a real campaign over SMTP to
//! our sink on loopback.
//!
//! What a person would do, asserted on what the page shows: log in with the
//! keyboard only (Tab, Enter), watch a campaign reach 100 % while pausing and
//! resuming it with the page's buttons, release a held prune, find a
//! subscriber and read its audit trail, and every page laid out without
//! horizontal scrolling at 375 px and 1440 px. Screenshots (PNG) go to
//! `target/browser-artefacts/` (the path is printed).
//!
//! Missing `chromium` or `chromedriver` fails the test with what to install:
//! `apt-get install chromium chromium-driver` (`.ci/run` does). Other
//! binaries: `RUNDBRIEF_CHROMIUM`, `RUNDBRIEF_CHROMEDRIVER`.

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use rundbrief_admin::{AdminOptions, AdminState};
use rundbrief_app::sending::SendOptions;
use rundbrief_app::{App, NoObserver};
use rundbrief_core::{Actor, Address, CampaignState, Config, Secret};
use rundbrief_smtpd::sink::{Rule, Sink, SinkConfig, SinkStats, SinkTls};
use rundbrief_store::{ConnectConfig, NewCampaign, NewDomainPrune, PruneState, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery staple";
/// Recipients of the campaign that is sent during the test, and the rate
/// (messages per second) that makes the send last long enough to pause it.
const RECIPIENTS: usize = 48;
const RATE: u32 = 4;

// ---------------------------------------------------------------- browser

/// `chromedriver` on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots and the chromedriver log go: `browser-artefacts/` in
/// the target directory this test was built into.
fn artefacts() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        // target/debug/deps/browser-HASH
        None => std::env::current_exe()
            .unwrap()
            .ancestors()
            .nth(3)
            .unwrap()
            .to_path_buf(),
    };
    let dir = target.join("browser-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `name` as found on PATH (or the path itself when it has a slash).
fn on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn chromium() -> PathBuf {
    let name = std::env::var("RUNDBRIEF_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    on_path(&name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: the dashboard's browser tests need headless Chromium. \
             Install Debian's packages: `apt-get install chromium chromium-driver` \
             (.ci/run does), or point RUNDBRIEF_CHROMIUM at a Chromium binary"
        )
    })
}

fn start_driver() -> Driver {
    let name = std::env::var("RUNDBRIEF_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let bin = on_path(&name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: the dashboard's browser tests drive Chromium over \
             WebDriver. Install Debian's package: `apt-get install chromium-driver` \
             (.ci/run does), or point RUNDBRIEF_CHROMEDRIVER at a chromedriver binary"
        )
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = artefacts().join(format!("chromedriver-{port}.log"));
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut driver = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return driver;
        }
        if let Some(status) = driver.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}) before it answered on port {port}; its log: {}",
                bin.display(),
                log.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not answer on port {port} within 20 s; its log: {}",
            bin.display(),
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A WebDriver session with headless Chromium.
async fn browser(driver: &Driver) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--hide-scrollbars",
                "--force-color-profile=srgb", "--window-size=1440,900",
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start {}: {e}. Install Debian's `chromium` \
                 (apt-get install chromium chromium-driver)",
                chromium().display()
            )
        })
}

/// The text the page shows (`innerText` of the body).
async fn page_text(b: &Client) -> String {
    b.execute("return document.body.innerText", vec![])
        .await
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Waits (bounded) until the page shows `needle`; returns its text.
async fn wait_for_text(b: &Client, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = page_text(b).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {needle:?} within {within:?}; it shows:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `<h1>`'s text (e.g. `spring running`).
async fn heading(b: &Client) -> String {
    let h1 = b.find(Locator::Css("h1")).await.unwrap();
    h1.text().await.unwrap()
}

/// The submit button labelled `label` (inside `scope` when given).
async fn button(b: &Client, label: &str) -> Element {
    let xpath = format!("//button[normalize-space()='{label}']");
    match b.find(Locator::XPath(&xpath)).await {
        Ok(e) => e,
        Err(e) => panic!("no button {label:?}: {e}\n{}", page_text(b).await),
    }
}

/// Clicks the button `label` and waits for the page it leads to.
async fn press(b: &Client, label: &str) {
    let old = b.find(Locator::Css("html")).await.unwrap();
    button(b, label).await.click().await.unwrap();
    // The form's POST answers with a redirect: a new document replaces `old`.
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "{label:?} led nowhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(done, total)` from the campaign page's "N% done (D of T)".
fn done_of(text: &str) -> (u64, u64) {
    let at = text.find("% done (").expect("a progress line") + 8;
    let mut it = text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let done = it.next().unwrap().parse().unwrap();
    let total = it.next().unwrap().parse().unwrap();
    (done, total)
}

/// Sets the window to `width` px (CSS pixels, the viewport's width), opens
/// `path`, checks that nothing is wider than the window and saves a
/// screenshot of the page (up to 2400 px tall) as `name`.
async fn check_layout(b: &Client, base: &str, path: &str, width: u32, name: &str) {
    b.set_window_size(width, 900).await.unwrap();
    b.goto(&format!("{base}{path}")).await.unwrap();
    let v = b
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth, \
             document.documentElement.scrollHeight]",
            vec![],
        )
        .await
        .unwrap();
    let n = |i: usize| v[i].as_u64().unwrap();
    let (inner, scroll, height) = (n(0), n(1), n(2));
    assert_eq!(
        inner,
        u64::from(width),
        "{path}: the viewport is {width} px"
    );
    assert!(
        scroll <= inner,
        "{path} at {width} px scrolls sideways: scrollWidth {scroll} > innerWidth {inner}"
    );
    // Tall enough for the whole page (up to 2400 px): measured again once
    // resized, as the layout may change with the height.
    let mut height = height;
    for _ in 0..3 {
        b.set_window_size(width, height.clamp(600, 2400) as u32)
            .await
            .unwrap();
        let h = b
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap();
        if h <= height {
            break;
        }
        height = h;
    }
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let file = artefacts().join(format!("{name}-{width}.png"));
    std::fs::write(&file, png).unwrap();
    eprintln!("screenshot: {}", file.display());
}

// ---------------------------------------------------------------- server

struct Dashboard {
    base: String,
    app: App,
    sink: Arc<SinkStats>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A SQLite store with admin `ann`, the list `news` of [`RECIPIENTS`]
/// people (two of whom the sink refuses as unknown), the draft campaign
/// `spring`, and two held prunes of earlier members on the list `old`;
/// the dashboard on a free loopback port, our SMTP sink on another.
/// `serve`'s scheduler sends to the sink once [`Dashboard::run_scheduler`].
async fn dashboard() -> Dashboard {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&ConnectConfig::new(url)).await.unwrap();
    store.migrate().await.unwrap();
    let stop = CancellationToken::new();

    let sink = Sink::new(SinkConfig {
        rules: vec![Rule::reject("nobody*@*=550 5.1.1 User unknown").unwrap()],
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .unwrap();
    let stats = sink.stats();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    tokio::spawn(sink.run(relay, Default::default(), stop.clone()));

    let mut config = Config {
        secret: Some(Secret::generate()),
        ..Default::default()
    };
    config.sending.public_url = Some("https://news.example.org".into());
    config.sending.bounce_domain = Some("bounce.example.org".into());
    config.sending.from = Some("News <news@example.org>".into());
    config.relay = Some(format!("smtp://{relay_addr}"));
    config.sending.rate = RATE;
    config.sending.domain_rate = RATE;
    config.dns.check = false;
    let app = App::new(
        config,
        store.clone(),
        Arc::new(rundbrief_scheduler::SystemClock),
        Arc::new(NoObserver),
    );

    let hash = rundbrief_admin::hash_password(PASSWORD).unwrap();
    assert!(store.create_admin_user("ann", &hash).await.unwrap());
    store
        .create_list("news", Some("Monthly news"))
        .await
        .unwrap();
    store.create_list("old", None).await.unwrap();
    let add = |email: String, list: &'static str| {
        let store = store.clone();
        async move {
            store
                .add_subscriber(
                    &Address::parse(&email).unwrap(),
                    list,
                    Some("Reader"),
                    Default::default(),
                    false,
                    Actor::Cli,
                    "test",
                )
                .await
                .unwrap();
        }
    };
    // The two the sink refuses come first: their errors show early.
    for email in ["nobody1@example.net", "nobody2@example.net"] {
        add(email.into(), "news").await;
    }
    for i in 0..RECIPIENTS - 2 {
        add(format!("reader{i}@example.org"), "news").await;
    }
    store
        .create_campaign(&NewCampaign {
            name: "spring".into(),
            lists: vec!["news".into()],
            subject: "Spring news: what is new in the garden".into(),
            content: "# Spring\n\nHello {{subscriber.name}}, the garden is waking up.".into(),
            content_kind: "markdown".parse().unwrap(),
            layout: None,
            from: None,
            relay: None,
        })
        .await
        .unwrap();
    let spring = store.campaign("spring").await.unwrap().campaign.id;
    for email in ["bob@blocked.example", "cid@other.example"] {
        add(email.into(), "old").await;
        let id = store
            .subscriber_detail(&Address::parse(email).unwrap())
            .await
            .unwrap()
            .subscriber
            .id;
        store
            .record_domain_prune(&NewDomainPrune {
                campaign_id: spring,
                domain: email.split('@').nth(1).unwrap(),
                subscriber_id: id,
                email,
                reason: "bounce: hard 5.7.1 blocked (a block, not a bad address?)",
                state: PruneState::Held,
                at: chrono::Utc::now(),
            })
            .await
            .unwrap();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AdminState::new(app.clone(), AdminOptions::default());
    let s = stop.clone();
    tokio::spawn(async move {
        rundbrief_admin::serve(listener, state, s.cancelled_owned())
            .await
            .unwrap();
    });
    Dashboard {
        base,
        app,
        sink: stats,
        stop,
        _dir: dir,
    }
}

impl Dashboard {
    /// Starts `spring` (as `campaign start` does) and `serve`'s scheduler,
    /// which sends it to the sink.
    async fn start_sending(&self) {
        let store = &self.app.store;
        let c = store.campaign("spring").await.unwrap();
        store.materialise_deliveries(c.campaign.id).await.unwrap();
        store
            .transition_campaign("spring", CampaignState::Running)
            .await
            .unwrap();
        let (app, stop) = (self.app.clone(), self.stop.clone());
        tokio::spawn(async move {
            let opts = SendOptions {
                pool: Some(1),
                no_dns_check: true,
                ..SendOptions::default()
            };
            rundbrief_app::serve::supervise(&app, &opts, Duration::from_millis(200), &stop).await;
        });
    }

    async fn state(&self) -> CampaignState {
        self.app
            .store
            .campaign("spring")
            .await
            .unwrap()
            .campaign
            .state
    }

    async fn subscriber_status(&self, email: &str) -> String {
        let d = self
            .app
            .store
            .subscriber_detail(&Address::parse(email).unwrap())
            .await
            .unwrap();
        d.subscriber.status.as_str().to_string()
    }
}

/// Logs in as `ann` with the keyboard only: the form's user name field has
/// the focus, Tab moves to the password, Enter submits.
async fn keyboard_login(b: &Client, base: &str) {
    b.goto(&format!("{base}/login")).await.unwrap();
    let focused = b.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("username"),
        "the login form has the focus"
    );
    focused
        .send_keys(&format!("ann{}", Key::Tab))
        .await
        .unwrap();
    let focused = b.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("password"),
        "Tab moves to the password"
    );
    focused
        .send_keys(&format!("{PASSWORD}{}", Key::Enter))
        .await
        .unwrap();
    wait_for_text(b, "Overview", Duration::from_secs(20)).await;
    assert_eq!(b.current_url().await.unwrap().path(), "/");
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_is_watched_paused_and_resumed_to_100_percent() {
    let driver = start_driver();
    let d = dashboard().await;
    let b = browser(&driver).await;
    let base = &d.base;

    // A wrong password, typed and clicked: the form says so.
    b.goto(&format!("{base}/login")).await.unwrap();
    b.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("ann")
        .await
        .unwrap();
    b.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("not the password")
        .await
        .unwrap();
    press(&b, "Log in").await;
    wait_for_text(&b, "Wrong user name or password", Duration::from_secs(20)).await;
    assert_eq!(b.current_url().await.unwrap().path(), "/login");

    keyboard_login(&b, base).await;
    let text = page_text(&b).await;
    assert!(text.contains("spring") && text.contains("draft"), "{text}");

    d.start_sending().await;
    b.goto(&format!("{base}/campaigns/spring")).await.unwrap();
    assert_eq!(heading(&b).await, "spring running");

    // Pause while it sends: the page says so, and it stays paused.
    press(&b, "Pause").await;
    assert_eq!(heading(&b).await, "spring paused");
    assert_eq!(d.state().await, CampaignState::Paused);
    let (done, total) = done_of(&page_text(&b).await);
    assert_eq!(total, RECIPIENTS as u64);
    assert!(done < total, "paused before the end: {done} of {total}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.refresh().await.unwrap();
    let (later, _) = done_of(&page_text(&b).await);
    assert!(
        later < total,
        "nothing sends while paused: {later} of {total}"
    );
    let sent_while_paused = d.sink.messages();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        d.sink.messages(),
        sent_while_paused,
        "the sink hears nothing"
    );

    // Resume; the page reloads itself while the campaign runs.
    press(&b, "Resume").await;
    assert_eq!(heading(&b).await, "spring running");
    let text = wait_for_text(&b, "100% done", Duration::from_secs(60)).await;
    assert_eq!(done_of(&text), (total, total), "{text}");
    assert_eq!(heading(&b).await, "spring finished");
    assert!(text.contains("User unknown"), "the top errors: {text}");
    assert_eq!(d.state().await, CampaignState::Finished);
    assert_eq!(
        d.sink.messages(),
        RECIPIENTS as u64 - 2,
        "every message reached the sink once, but the two unknown"
    );
    let png = b.screenshot().await.unwrap();
    std::fs::write(artefacts().join("campaign-finished.png"), png).unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_prune_is_released_and_the_subscriber_shows_its_audit_trail() {
    let driver = start_driver();
    let d = dashboard().await;
    let b = browser(&driver).await;
    let base = &d.base;
    keyboard_login(&b, base).await;

    b.goto(&format!("{base}/bounces")).await.unwrap();
    let text = page_text(&b).await;
    assert!(
        text.contains("bob@blocked.example") && text.contains("cid@other.example"),
        "{text}"
    );
    // The Release button of the domain blocked.example.
    let release = b
        .find(Locator::XPath(
            "//form[contains(@action,'/release')][input[@name='domain' and @value='blocked.example']]//button",
        ))
        .await
        .unwrap();
    release.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = page_text(&b).await;
        if !text.contains("bob@blocked.example") {
            assert!(text.contains("cid@other.example"), "the other stays held");
            break;
        }
        assert!(Instant::now() < deadline, "still held: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.current_url().await.unwrap().path(), "/bounces");
    assert_eq!(d.subscriber_status("bob@blocked.example").await, "bounced");
    assert_eq!(d.subscriber_status("cid@other.example").await, "active");

    // Search from the overview (typed, submitted with Enter).
    b.goto(&format!("{base}/")).await.unwrap();
    b.find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(&format!("bob@blocked.example{}", Key::Enter))
        .await
        .unwrap();
    wait_for_text(&b, "released by admin ann", Duration::from_secs(10)).await;
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/subscribers/bob"),
        "the search leads to the subscriber's page"
    );
    assert_eq!(heading(&b).await, "bob@blocked.example");
    let rows = b.find_all(Locator::Css("table tbody tr")).await.unwrap();
    let mut trail = Vec::new();
    for r in rows {
        trail.push(r.text().await.unwrap());
    }
    let release_row = trail
        .iter()
        .find(|r| r.contains("released by admin ann"))
        .unwrap_or_else(|| panic!("no release in the audit trail: {trail:#?}"));
    assert!(release_row.contains("admin"), "the actor: {release_row}");
    assert!(
        trail.len() >= 2,
        "the subscription and the prune: {trail:#?}"
    );
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_375_and_1440_pixels_without_sideways_scrolling() {
    let driver = start_driver();
    let d = dashboard().await;
    let b = browser(&driver).await;
    let base = &d.base;
    // Something to show: part of the campaign sent (with a failure), paused.
    d.start_sending().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.sink.messages() < 12 {
        assert!(Instant::now() < deadline, "the scheduler sends");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.app
        .store
        .transition_campaign("spring", CampaignState::Paused)
        .await
        .unwrap();

    b.set_window_size(375, 812).await.unwrap();
    b.goto(&format!("{base}/login")).await.unwrap();
    let png = b.screenshot().await.unwrap();
    std::fs::write(artefacts().join("login-375.png"), png).unwrap();
    keyboard_login(&b, base).await;
    eprintln!("browser artefacts: {}", artefacts().display());
    for width in [375, 1440] {
        for (path, name) in [
            ("/", "overview"),
            ("/campaigns/spring", "campaign"),
            ("/bounces", "bounces"),
            ("/subscribers/nobody1%40example.net", "subscriber"),
        ] {
            check_layout(&b, base, path, width, name).await;
        }
    }
    b.close().await.unwrap();
}
