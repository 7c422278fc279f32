//! The dashboard and the API over real HTTP on loopback, on SQLite and (when
//! `RUNDBRIEF_TEST_POSTGRES` is set) PostgreSQL: authentication, CSRF,
//! scopes, the status object, escaping, the login rate limit.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use rundbrief_admin::{AdminOptions, AdminState};
use rundbrief_app::{App, NoObserver};
use rundbrief_core::{Actor, Address, CampaignState, Config};
use rundbrief_store::{NewCampaign, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery staple";
const XSS_SUBJECT: &str = "<script>alert('subject')</script> News";
const XSS_NAME: &str = "<img src=x onerror=alert(1)>";
const XSS_LIST: &str = "<script>alert('list')</script>";

struct Server {
    port: u16,
    app: App,
    read_key: String,
    write_key: String,
    stop: CancellationToken,
    _db: common::TestDb,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A seeded store (a list, a subscriber, a running and a draft campaign,
/// admin `ann`, a read and a write key) served on a free loopback port.
async fn servers(opts: AdminOptions) -> Vec<Server> {
    let mut out = Vec::new();
    for db in common::stores().await {
        let store = db.store.clone();
        seed(&store).await;
        let mut config = Config {
            secret: Some(rundbrief_core::Secret::generate()),
            ..Default::default()
        };
        config.sending.public_url = Some("https://news.example.org".into());
        config.sending.bounce_domain = Some("bounce.example.org".into());
        config.sending.from = Some("News <news@example.org>".into());
        // No domain check: these tests never ask a resolver.
        config.dns.check = false;
        let app = App::new(
            config,
            store.clone(),
            Arc::new(rundbrief_scheduler::SystemClock),
            Arc::new(NoObserver),
        );
        assert!(
            store
                .create_admin_user("ann", &rundbrief_admin::hash_password(PASSWORD).unwrap())
                .await
                .unwrap()
        );
        assert!(
            !store.create_admin_user("ann", "x").await.unwrap(),
            "{}: a name is taken once",
            db.backend
        );
        let (read_key, write_key) = (
            rundbrief_admin::new_api_key(),
            rundbrief_admin::new_api_key(),
        );
        for (name, scope, key) in [
            ("reader", "read", &read_key),
            ("writer", "write", &write_key),
        ] {
            assert!(
                store
                    .create_admin_key(name, scope, &rundbrief_admin::key_hash(key))
                    .await
                    .unwrap()
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        let state = AdminState::new(app.clone(), opts.clone());
        let s = stop.clone();
        tokio::spawn(async move {
            rundbrief_admin::serve(listener, state, s.cancelled_owned())
                .await
                .unwrap();
        });
        out.push(Server {
            port,
            app,
            read_key,
            write_key,
            stop,
            _db: db,
        });
    }
    out
}

async fn seed(store: &Store) {
    store.create_list("news", Some(XSS_LIST)).await.unwrap();
    let addr = Address::parse("ann@example.org").unwrap();
    store
        .add_subscriber(
            &addr,
            "news",
            Some(XSS_NAME),
            Default::default(),
            false,
            Actor::Cli,
            "test",
        )
        .await
        .unwrap();
    for (name, subject) in [("spring", XSS_SUBJECT), ("draft1", "Draft")] {
        store
            .create_campaign(&NewCampaign {
                name: name.into(),
                lists: vec!["news".into()],
                subject: subject.into(),
                content: "Hello".into(),
                content_kind: "markdown".parse().unwrap(),
                layout: None,
                from: None,
                relay: None,
            })
            .await
            .unwrap();
    }
    let c = store.campaign("spring").await.unwrap();
    store.materialise_deliveries(c.campaign.id).await.unwrap();
    store
        .transition_campaign("spring", CampaignState::Running)
        .await
        .unwrap();
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// `NAME=VALUE` of a cookie set by this reply.
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .into_iter()
            .filter_map(|c| c.split(';').next())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }
    /// The value of the first form's CSRF field.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field")
            + 19;
        self.body[at..].split('"').next().unwrap().to_string()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if method == "POST" {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("the server answers within 20 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Logs in as `ann` through the form; returns the session cookie pair.
async fn login(port: u16) -> String {
    let page = request(port, "GET", "/login", &[], "").await;
    let cookie = page.cookie("rb_login").unwrap();
    let r = request(
        port,
        "POST",
        "/login",
        &[("Cookie", &cookie)],
        &form(&[
            ("username", "ann"),
            ("password", PASSWORD),
            ("csrf", &page.csrf()),
        ]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    r.cookie("rb_session").expect("a session cookie")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_the_login_page_redirects_and_401s() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        for path in [
            "/",
            "/campaigns/spring",
            "/subscribers/ann%40example.org",
            "/subscribers?email=ann%40example.org",
            "/bounces",
        ] {
            let r = request(p, "GET", path, &[], "").await;
            assert_eq!(
                (r.status, r.header("location")),
                (303, Some("/login")),
                "{path}"
            );
            assert!(!r.body.contains("spring"), "{path}");
        }
        for (method, path) in [
            ("GET", "/api/v1/campaigns"),
            ("GET", "/api/v1/campaigns/spring"),
            ("POST", "/api/v1/campaigns/spring/pause"),
            ("GET", "/api/v1/openapi.json"),
            ("GET", "/api/v1/subscribers/ann@example.org"),
            ("GET", "/no/such/page"),
        ] {
            let r = request(p, method, path, &[], "").await;
            assert_eq!(r.status, 401, "{method} {path}");
            assert!(r.json()["error"].is_string(), "{path}");
            assert!(!r.body.contains("spring"));
        }
        let r = request(
            p,
            "GET",
            "/api/v1/campaigns",
            &[("Authorization", "Bearer rbk_wrong")],
            "",
        )
        .await;
        assert_eq!(
            (r.status, r.header("www-authenticate")),
            (401, Some("Bearer"))
        );
        let r = request(p, "POST", "/campaigns/spring/pause", &[], "csrf=x").await;
        assert_eq!(r.status, 401);
        let state = s.app.store.campaign("spring").await.unwrap().campaign.state;
        assert_eq!(state, CampaignState::Running, "nothing changed");

        let r = request(p, "GET", "/login", &[], "").await;
        assert_eq!(r.status, 200);
        for field in ["name=\"username\"", "name=\"password\"", "name=\"csrf\""] {
            assert!(r.body.contains(field), "{field}");
        }
        assert_eq!(
            r.header("content-security-policy"),
            Some(rundbrief_admin::CSP)
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            r.header("strict-transport-security"),
            None,
            "no HSTS over plain HTTP"
        );
        let c = r.cookies().join(" | ");
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_cookie_and_forms_need_the_csrf_token() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let page = request(p, "GET", "/login", &[], "").await;
        let login_cookie = page.cookie("rb_login").unwrap();
        let csrf = page.csrf();
        let post = |pairs: Vec<(&'static str, String)>, cookie: String| async move {
            let body = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            request(p, "POST", "/login", &[("Cookie", &cookie)], &body).await
        };
        // A login form from elsewhere (no matching token): refused.
        let r = post(
            vec![
                ("username", "ann".into()),
                ("password", PASSWORD.into()),
                ("csrf", "forged".into()),
            ],
            login_cookie.clone(),
        )
        .await;
        assert_eq!(r.status, 403);
        assert!(r.cookie("rb_session").is_none());
        let r = post(
            vec![
                ("username", "ann".into()),
                ("password", "wrong password!".into()),
                ("csrf", csrf.clone()),
            ],
            login_cookie.clone(),
        )
        .await;
        assert_eq!(r.status, 401);
        assert!(r.cookie("rb_session").is_none());
        assert!(r.body.contains("Wrong user name or password"));
        let r = post(
            vec![
                ("username", "nobody".into()),
                ("password", PASSWORD.into()),
                ("csrf", csrf.clone()),
            ],
            login_cookie.clone(),
        )
        .await;
        assert_eq!(r.status, 401);

        let r = post(
            vec![
                ("username", "ann".into()),
                ("password", PASSWORD.into()),
                ("csrf", csrf.clone()),
            ],
            login_cookie.clone(),
        )
        .await;
        assert_eq!((r.status, r.header("location")), (303, Some("/")));
        let set = r
            .cookies()
            .into_iter()
            .find(|c| c.starts_with("rb_session="))
            .unwrap()
            .to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(!set.contains("Secure"), "plain HTTP: {set}");
        let session = r.cookie("rb_session").unwrap();

        let r = request(p, "GET", "/", &[("Cookie", &session)], "").await;
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains("spring") && r.body.contains("news"),
            "{}",
            r.body
        );
        assert!(r.body.contains(">ann<"), "the admin's name is shown");

        let r = request(
            p,
            "GET",
            "/subscribers?email=ann%40example.org",
            &[("Cookie", &session)],
            "",
        )
        .await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/subscribers/ann%40example.org")),
            "the overview's search goes to the subscriber's page"
        );
        let r = request(
            p,
            "GET",
            "/subscribers/ann%40example.org",
            &[("Cookie", &session)],
            "",
        )
        .await;
        assert!(
            r.status == 200 && r.body.contains("ann@example.org") && r.body.contains("subscribed")
        );
        let r = request(
            p,
            "GET",
            "/subscribers/nobody%40example.org",
            &[("Cookie", &session)],
            "",
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.body);

        let r = request(p, "GET", "/campaigns/spring", &[("Cookie", &session)], "").await;
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains("action=\"/campaigns/spring/pause\""),
            "{}",
            r.body
        );
        let token = r.csrf();

        let r = request(
            p,
            "POST",
            "/campaigns/spring/pause",
            &[("Cookie", &session)],
            "csrf=forged",
        )
        .await;
        assert_eq!(r.status, 403);
        let r = request(
            p,
            "POST",
            "/campaigns/spring/pause",
            &[("Cookie", &session)],
            "",
        )
        .await;
        assert_eq!(r.status, 403, "a form without a token");
        let state = || async { s.app.store.campaign("spring").await.unwrap().campaign.state };
        assert_eq!(state().await, CampaignState::Running);

        let r = request(
            p,
            "POST",
            "/campaigns/spring/pause",
            &[("Cookie", &session)],
            &form(&[("csrf", &token)]),
        )
        .await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/campaigns/spring"))
        );
        assert_eq!(state().await, CampaignState::Paused);
        let r = request(p, "GET", "/campaigns/spring", &[("Cookie", &session)], "").await;
        assert!(r.body.contains("action=\"/campaigns/spring/resume\""));
        let r = request(
            p,
            "POST",
            "/campaigns/spring/resume",
            &[("Cookie", &session)],
            &form(&[("csrf", &token)]),
        )
        .await;
        assert_eq!(r.status, 303);
        assert_eq!(state().await, CampaignState::Running);
        // A transition the campaign's life does not allow: 409, said on the page.
        let r = request(
            p,
            "POST",
            "/campaigns/draft1/pause",
            &[("Cookie", &session)],
            &form(&[("csrf", &token)]),
        )
        .await;
        assert_eq!(r.status, 409, "{}", r.body);

        let audit = s.app.store.admin_actions(10).await.unwrap();
        let seen: Vec<_> = audit
            .iter()
            .map(|a| (a.actor.as_str(), a.action.as_str(), a.target.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("ann", "campaign-resume", "spring"),
                ("ann", "campaign-pause", "spring")
            ],
            "newest first, with the admin's name"
        );

        let r = request(
            p,
            "POST",
            "/logout",
            &[("Cookie", &session)],
            &form(&[("csrf", &token)]),
        )
        .await;
        assert_eq!(r.status, 303);
        let r = request(p, "GET", "/", &[("Cookie", &session)], "").await;
        assert_eq!(r.status, 303, "the session ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_returns_the_cli_objects_and_read_keys_cannot_act() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let read = format!("Bearer {}", s.read_key);
        let write = format!("Bearer {}", s.write_key);
        let get = |path: &'static str, auth: String| async move {
            request(p, "GET", path, &[("Authorization", &auth)], "").await
        };

        let r = get("/api/v1/campaigns/spring", read.clone()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let store = &s.app.store;
        let c = store.campaign("spring").await.unwrap();
        let expected = rundbrief_app::campaigns::status(&s.app, &c)
            .await
            .unwrap();
        assert_eq!(
            r.json(),
            expected,
            "exactly `campaign status spring --json`"
        );
        assert_eq!(r.json()["total"], 1);

        let r = get("/api/v1/campaigns", read.clone()).await;
        assert_eq!(
            r.json(),
            serde_json::to_value(store.campaigns().await.unwrap()).unwrap()
        );
        let r = get("/api/v1/lists", read.clone()).await;
        assert_eq!(
            r.json(),
            serde_json::to_value(store.list_summaries().await.unwrap()).unwrap(),
            "exactly `list ls --json`"
        );
        for action in ["cancel", "retry-failed", "resume"] {
            let path = format!("/api/v1/campaigns/spring/{action}");
            let r = request(p, "POST", &path, &[("Authorization", &read)], "").await;
            assert_eq!(r.status, 403, "{action}");
        }

        let r = request(
            p,
            "POST",
            "/api/v1/campaigns/spring/pause",
            &[("Authorization", &read)],
            "",
        )
        .await;
        assert_eq!(r.status, 403);
        assert!(r.json()["error"].as_str().unwrap().contains("read scope"));
        assert_eq!(
            store.campaign("spring").await.unwrap().campaign.state,
            CampaignState::Running
        );

        let r = request(
            p,
            "POST",
            "/api/v1/campaigns/spring/pause",
            &[("Authorization", &write)],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json(),
            serde_json::json!({"campaign": "spring", "from": "running", "state": "paused"})
        );
        assert_eq!(
            store.campaign("spring").await.unwrap().campaign.state,
            CampaignState::Paused
        );
        let r = request(
            p,
            "POST",
            "/api/v1/campaigns/spring/resume",
            &[("Authorization", &write)],
            "",
        )
        .await;
        assert_eq!(r.json()["state"], "running");
        assert_eq!(
            store.campaign("spring").await.unwrap().campaign.state,
            CampaignState::Running
        );
        let audit = store.admin_actions(1).await.unwrap();
        assert_eq!(
            (audit[0].actor.as_str(), audit[0].action.as_str()),
            ("key:writer", "campaign-resume")
        );

        // Errors: their kind's status and {"error"}.
        let r = request(
            p,
            "POST",
            "/api/v1/campaigns/draft1/resume",
            &[("Authorization", &write)],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "a draft may start: {}", r.body);
        let r = request(
            p,
            "POST",
            "/api/v1/campaigns/draft1/pause",
            &[("Authorization", &write)],
            "",
        )
        .await;
        assert_eq!(r.status, 200);
        store
            .transition_campaign("draft1", CampaignState::Cancelled)
            .await
            .unwrap();
        let r = request(
            p,
            "POST",
            "/api/v1/campaigns/draft1/resume",
            &[("Authorization", &write)],
            "",
        )
        .await;
        assert_eq!(r.status, 409, "{}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains("cancelled"),
            "{}",
            r.body
        );
        let r = get("/api/v1/campaigns/nope", read.clone()).await;
        assert_eq!(r.status, 404);
        assert!(r.json()["error"].as_str().unwrap().contains("nope"));

        let r = get("/api/v1/subscribers/ann%40example.org", read.clone()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let detail = store
            .subscriber_detail(&Address::parse("ann@example.org").unwrap())
            .await
            .unwrap();
        assert_eq!(
            r.json(),
            serde_json::to_value(detail).unwrap(),
            "exactly `sub show --json`"
        );
        assert_eq!(
            get("/api/v1/subscribers/bob@example.org", read.clone())
                .await
                .status,
            404
        );
        assert_eq!(
            get("/api/v1/subscribers/not-an-address", read.clone())
                .await
                .status,
            422
        );

        // The OpenAPI document lists every route, and every route it lists is served.
        let doc = get("/api/v1/openapi.json", read.clone()).await.json();
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path) in rundbrief_admin::api::ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
            let real = path
                .replace("{name}", "spring")
                .replace("{email}", "ann@example.org");
            let r = request(
                p,
                &method.to_uppercase(),
                &real,
                &[("Authorization", &write)],
                "",
            )
            .await;
            assert_eq!(r.status, 200, "{method} {real}: {}", r.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_subjects_are_escaped_everywhere() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let session = login(p).await;
        for path in ["/", "/campaigns/spring", "/subscribers/ann%40example.org"] {
            let r = request(p, "GET", path, &[("Cookie", &session)], "").await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            for raw in ["<script>alert", "<img src=x"] {
                assert!(!r.body.contains(raw), "{path} contains {raw}: {}", r.body);
            }
            assert!(
                r.body.contains("&lt;script&gt;") || r.body.contains("&lt;img src=x"),
                "{path} shows the escaped text"
            );
        }
        let r = request(
            p,
            "GET",
            "/subscribers/ann%40example.org",
            &[("Cookie", &session)],
            "",
        )
        .await;
        assert!(
            r.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{}",
            r.body
        );
        // And in JSON the text is data, exactly as stored.
        let auth = format!("Bearer {}", s.read_key);
        let r = request(
            p,
            "GET",
            "/api/v1/campaigns",
            &[("Authorization", &auth)],
            "",
        )
        .await;
        assert!(
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["subject"] == XSS_SUBJECT)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_logins_are_slowed_with_429() {
    let opts = AdminOptions {
        login_per_minute: 3,
        ..Default::default()
    };
    for s in servers(opts).await {
        let p = s.port;
        let page = request(p, "GET", "/login", &[], "").await;
        let cookie = page.cookie("rb_login").unwrap();
        let csrf = page.csrf();
        let mut statuses = Vec::new();
        for i in 0..5 {
            let pw = if i == 4 {
                PASSWORD.to_string()
            } else {
                format!("guess {i}")
            };
            let r = request(
                p,
                "POST",
                "/login",
                &[("Cookie", &cookie)],
                &form(&[("username", "ann"), ("password", &pw), ("csrf", &csrf)]),
            )
            .await;
            if r.status == 429 {
                let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=61).contains(&wait), "{wait}");
                assert!(r.cookie("rb_session").is_none());
            }
            statuses.push(r.status);
        }
        assert_eq!(
            statuses,
            vec![401, 401, 401, 429, 429],
            "even the right password waits"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_prunes_are_released_or_discarded_by_the_admin() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let spring = store.campaign("spring").await.unwrap().campaign.id;
        for email in ["bob@blocked.example", "cid@other.example"] {
            let addr = Address::parse(email).unwrap();
            store
                .add_subscriber(
                    &addr,
                    "news",
                    None,
                    Default::default(),
                    false,
                    Actor::Cli,
                    "test",
                )
                .await
                .unwrap();
            let id = store.subscriber_detail(&addr).await.unwrap().subscriber.id;
            store
                .record_domain_prune(&rundbrief_store::NewDomainPrune {
                    campaign_id: spring,
                    domain: email.split('@').nth(1).unwrap(),
                    subscriber_id: id,
                    email,
                    reason: "bounce 1: hard 5.1.1 (rule x)",
                    state: rundbrief_store::PruneState::Held,
                    at: chrono_now(),
                })
                .await
                .unwrap();
        }
        let session = login(p).await;
        let page = request(p, "GET", "/campaigns/spring", &[("Cookie", &session)], "").await;
        assert!(page.body.contains("blocked.example") && page.body.contains("/held/release"));
        let token = page.csrf();
        let status = |email: &'static str| async move {
            let d = store
                .subscriber_detail(&Address::parse(email).unwrap())
                .await
                .unwrap();
            (d.subscriber.status.as_str().to_string(), d.audit)
        };

        let r = request(
            p,
            "POST",
            "/campaigns/spring/held/release",
            &[("Cookie", &session)],
            &form(&[("csrf", "forged"), ("domain", "blocked.example")]),
        )
        .await;
        assert_eq!(r.status, 403);
        assert_eq!(status("bob@blocked.example").await.0, "active");

        let r = request(
            p,
            "POST",
            "/campaigns/spring/held/release",
            &[("Cookie", &session)],
            &form(&[("csrf", &token), ("domain", "blocked.example")]),
        )
        .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let (st, audit) = status("bob@blocked.example").await;
        assert_eq!(st, "bounced");
        let last = audit.last().unwrap();
        assert_eq!(last.actor, Actor::Admin);
        assert!(
            last.reason.contains("released by admin ann"),
            "{}",
            last.reason
        );

        let page = request(p, "GET", "/bounces", &[("Cookie", &session)], "").await;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("other.example") && !page.body.contains("bob@blocked.example"),
            "only what is still held"
        );
        assert!(page.body.contains("action=\"/bounces/held/discard\""));
        assert!(page.body.contains("None stored."));
        let r = request(
            p,
            "POST",
            "/bounces/held/discard",
            &[("Cookie", &session)],
            &form(&[("csrf", &token), ("domain", "other.example")]),
        )
        .await;
        assert_eq!((r.status, r.header("location")), (303, Some("/bounces")));
        assert_eq!(status("cid@other.example").await.0, "active");
        assert!(s.app.bounces().held(None).await.unwrap().is_empty());
        let actions: Vec<_> = store
            .admin_actions(2)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.actor, a.action, a.target))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("ann".into(), "held-discard".into(), "other.example".into()),
                (
                    "ann".into(),
                    "held-release".into(),
                    "blocked.example".into()
                ),
            ]
        );
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_pages_refresh_retry_failed_resets_and_cancel_needs_confirmation() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let session = login(p).await;
        let cookie = [("Cookie", session.as_str())];
        let c = store.campaign("spring").await.unwrap().campaign;
        let d = store.deliveries(c.id).await.unwrap()[0].delivery_id;
        store
            .record_delivery(
                d,
                rundbrief_core::DeliveryState::Failed,
                Some("DATA: 554 no"),
            )
            .await
            .unwrap();

        let page = request(p, "GET", "/campaigns/spring", &cookie, "").await;
        assert!(
            page.body.contains("http-equiv=\"refresh\""),
            "a running campaign's page reloads"
        );
        assert!(page.body.contains("DATA: 554 no"), "the top error is shown");
        assert!(page.body.contains("/retry-failed") && page.body.contains("/cancel"));
        assert!(
            request(p, "GET", "/", &cookie, "")
                .await
                .body
                .contains("http-equiv=\"refresh\"")
        );
        let token = page.csrf();

        let r = request(
            p,
            "POST",
            "/campaigns/spring/retry-failed",
            &cookie,
            "csrf=forged",
        )
        .await;
        assert_eq!(r.status, 403);
        let r = request(
            p,
            "POST",
            "/campaigns/spring/retry-failed",
            &cookie,
            &form(&[("csrf", &token)]),
        )
        .await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(store.campaign_counts(c.id).await.unwrap().failed, 0);
        assert_eq!(store.campaign_counts(c.id).await.unwrap().pending, 1);

        let state = || async { store.campaign("spring").await.unwrap().campaign.state };
        let r = request(
            p,
            "POST",
            "/campaigns/spring/cancel",
            &cookie,
            &form(&[("csrf", &token)]),
        )
        .await;
        assert_eq!(r.status, 422, "not confirmed");
        assert_eq!(state().await, CampaignState::Running);
        let r = request(
            p,
            "POST",
            "/campaigns/spring/cancel",
            &cookie,
            &form(&[("csrf", &token), ("confirm", "yes")]),
        )
        .await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(state().await, CampaignState::Cancelled);
        let page = request(p, "GET", "/campaigns/spring", &cookie, "").await;
        assert!(
            !page.body.contains("http-equiv=\"refresh\""),
            "a cancelled campaign stays still"
        );
        assert!(
            !page.body.contains("/cancel\""),
            "nothing to cancel any more"
        );

        let actions: Vec<_> = store
            .admin_actions(2)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.actor, a.action, a.detail))
            .collect();
        assert_eq!(
            actions,
            vec![
                (
                    "ann".into(),
                    "campaign-cancel".into(),
                    "running -> cancelled".into()
                ),
                (
                    "ann".into(),
                    "campaign-retry-failed".into(),
                    "deliveries pending again: 1".into()
                ),
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_actions_are_confirmed_and_audited_with_the_admin() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let session = login(p).await;
        let cookie = [("Cookie", session.as_str())];
        let page = request(p, "GET", "/subscribers/ann%40example.org", &cookie, "").await;
        assert!(page.body.contains("/unsubscribe\"") && page.body.contains("/blocklist\""));
        let token = page.csrf();
        let ann = || async {
            store
                .subscriber_detail(&Address::parse("ann@example.org").unwrap())
                .await
                .unwrap()
        };
        let sess = session.clone();
        let post = move |action: &'static str, body: String| {
            let path = format!("/subscribers/ann%40example.org/{action}");
            let sess = sess.clone();
            async move { request(p, "POST", &path, &[("Cookie", sess.as_str())], &body).await }
        };

        assert_eq!(post("unsubscribe", "csrf=forged".into()).await.status, 403);
        assert_eq!(ann().await.subscriber.status.as_str(), "active");
        assert_eq!(
            post("restore", form(&[("csrf", &token)])).await.status,
            409,
            "not bounced"
        );
        assert_eq!(post("delete", form(&[("csrf", &token)])).await.status, 404);

        let r = post("unsubscribe", form(&[("csrf", &token)])).await;
        assert_eq!(r.status, 303, "{}", r.body);
        let d = ann().await;
        assert_eq!(d.subscriber.status.as_str(), "unsubscribed");
        let last = d.audit.last().unwrap();
        assert_eq!(last.actor, Actor::Admin);
        assert!(last.reason.contains("by admin ann"), "{}", last.reason);

        assert_eq!(
            post("blocklist", form(&[("csrf", &token)])).await.status,
            422
        );
        assert_eq!(ann().await.subscriber.status.as_str(), "unsubscribed");
        let r = post("blocklist", form(&[("csrf", &token), ("confirm", "yes")])).await;
        assert_eq!(r.status, 303);
        assert_eq!(ann().await.subscriber.status.as_str(), "blocklisted");
        let a = store.admin_actions(1).await.unwrap();
        assert_eq!(
            (
                a[0].actor.as_str(),
                a[0].action.as_str(),
                a[0].target.as_str()
            ),
            ("ann", "subscriber-blocklist", "ann@example.org")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_tls_cookies_are_secure_and_hsts_is_sent() {
    let opts = AdminOptions {
        secure_cookies: true,
        ..Default::default()
    };
    for s in servers(opts).await {
        let p = s.port;
        let page = request(p, "GET", "/login", &[], "").await;
        assert_eq!(
            page.header("strict-transport-security"),
            Some("max-age=31536000")
        );
        assert!(page.cookies().iter().all(|c| c.contains("; Secure")));
        let r = request(
            p,
            "POST",
            "/login",
            &[("Cookie", &page.cookie("rb_login").unwrap())],
            &form(&[
                ("username", "ann"),
                ("password", PASSWORD),
                ("csrf", &page.csrf()),
            ]),
        )
        .await;
        assert_eq!(r.status, 303);
        let set = r
            .cookies()
            .into_iter()
            .find(|c| c.starts_with("rb_session="))
            .unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("; Secure"),
            "{set}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_locked_out_after_failed_logins_in_a_row() {
    let opts = AdminOptions {
        login_per_minute: 100,
        lockout_after: 3,
        ..Default::default()
    };
    for s in servers(opts).await {
        let p = s.port;
        let page = request(p, "GET", "/login", &[], "").await;
        let cookie = page.cookie("rb_login").unwrap();
        let csrf = page.csrf();
        let attempt = |pw: &'static str| {
            let (cookie, csrf) = (cookie.clone(), csrf.clone());
            async move {
                request(
                    p,
                    "POST",
                    "/login",
                    &[("Cookie", &cookie)],
                    &form(&[("username", "ann"), ("password", pw), ("csrf", &csrf)]),
                )
                .await
            }
        };
        assert_eq!(attempt("guess 1").await.status, 401);
        assert_eq!(
            attempt(PASSWORD).await.status,
            303,
            "a success starts the count over"
        );
        let mut statuses = Vec::new();
        for pw in ["guess 2", "guess 3", "guess 4", PASSWORD] {
            let r = attempt(pw).await;
            if r.status == 429 {
                assert!(r.body.contains("locked"), "{}", r.body);
                assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 60);
            }
            statuses.push(r.status);
        }
        assert_eq!(
            statuses,
            vec![401, 401, 401, 429],
            "locked: even the right password waits"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_preview_is_sandboxed() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let r = request(p, "GET", "/campaigns/spring/preview", &[], "").await;
        assert_eq!(r.status, 303, "strangers see no preview");
        let session = login(p).await;
        let cookie = [("Cookie", session.as_str())];
        let page = request(p, "GET", "/campaigns/spring", &cookie, "").await;
        assert!(
            page.body
                .contains("<iframe sandbox=\"\" src=\"/campaigns/spring/preview\""),
            "{}",
            page.body
        );
        assert!(
            page.header("content-security-policy")
                .unwrap()
                .contains("frame-src 'self'")
        );
        let r = request(p, "GET", "/campaigns/spring/preview", &cookie, "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains("Hello"),
            "the campaign's content: {}",
            r.body
        );
        assert!(
            r.body.contains("https://news.example.org/u/"),
            "its signed unsubscribe link"
        );
        assert_eq!(
            r.header("content-security-policy"),
            Some(rundbrief_admin::pages::PREVIEW_CSP)
        );
        assert!(rundbrief_admin::pages::PREVIEW_CSP.starts_with("sandbox;"));
        assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
        let r = request(p, "GET", "/campaigns/nope/preview", &cookie, "").await;
        assert_eq!(r.status, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_subscriber_is_restored_from_its_page() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let ann = Address::parse("ann@example.org").unwrap();
        let marked = store
            .mark_undeliverable(
                &[rundbrief_store::UndeliverableMark {
                    key: ann.key(),
                    reason: "example.org: null MX (RFC 7505)".into(),
                }],
                Actor::Import,
            )
            .await
            .unwrap();
        assert_eq!(marked, 1);
        let session = login(p).await;
        let cookie = [("Cookie", session.as_str())];
        let page = request(p, "GET", "/subscribers/ann%40example.org", &cookie, "").await;
        assert!(
            page.body.contains("undo the domain check") && page.body.contains("null MX"),
            "{}",
            page.body
        );
        let token = page.csrf();
        let r = request(
            p,
            "POST",
            "/subscribers/ann%40example.org/restore",
            &cookie,
            &form(&[("csrf", &token)]),
        )
        .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let d = store.subscriber_detail(&ann).await.unwrap();
        assert_eq!(d.subscriber.status.as_str(), "active");
        assert_eq!(d.audit.last().unwrap().actor, Actor::Admin);
    }
}
