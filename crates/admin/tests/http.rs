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
        let expected = rundbrief_app::campaigns::status(&s.app, &c).await.unwrap();
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
                .replace("{list}", "news")
                .replace("{email}", "ann@example.org");
            let body = if *method == "post" && path.ends_with("/members") {
                r#"{"email": "ann@example.org"}"#
            } else {
                ""
            };
            let r = request(
                p,
                &method.to_uppercase(),
                &real,
                &[("Authorization", &write)],
                body,
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

/// The `<figure id="ID">…</figure>` of a page (a chart), or panics.
fn figure<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let end = body[start..].find("</figure>").expect("a closed figure") + start;
    &body[start..end]
}

/// A chunked body as its bytes (the CSV export streams).
fn dechunk(r: &Reply) -> String {
    if r.header("transfer-encoding") != Some("chunked") {
        return r.body.clone();
    }
    let (mut rest, mut out) = (r.body.as_str(), String::new());
    for _ in 0..10_000 {
        let (size, tail) = rest.split_once("\r\n").expect("a chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    panic!("too many chunks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_show_the_recorded_sends_and_bounces() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let c = store.campaign("spring").await.unwrap().campaign;
        let d = store.deliveries(c.id).await.unwrap()[0].delivery_id;
        store
            .record_outcomes(&[rundbrief_store::DeliveryOutcome {
                delivery_id: d,
                campaign_id: c.id,
                state: rundbrief_core::DeliveryState::Sent,
                error: None,
                next_attempt_at: None,
            }])
            .await
            .unwrap();
        let since = chrono_now() - chrono::Duration::hours(1);
        let stats = store.send_stats(None, since).await.unwrap();
        assert_eq!(stats.iter().map(|b| b.sent).sum::<u64>(), 1, "{stats:?}");
        let b = store
            .insert_bounce(&rundbrief_store::NewBounce {
                source: rundbrief_core::BounceSource::Smtp,
                peer: None,
                mail_from: Some(String::new()),
                rcpt: Some("b-x@bounce.example.org".into()),
                delivery_id: Some(d),
                raw: b"Subject: bounce\r\n\r\nno",
            })
            .await
            .unwrap();
        store
            .record_bounce_parse(b, "dsn", "hard", serde_json::json!({}))
            .await
            .unwrap();

        let session = login(p).await;
        let cookie = [("Cookie", session.as_str())];
        let overview = request(p, "GET", "/", &cookie, "").await;
        for id in ["chart-sends", "chart-sends-daily"] {
            let f = figure(&overview.body, id);
            assert!(f.contains("data-total=\"2\""), "{id}: {f}");
            assert!(f.contains(": 1 sent</title>"), "{id}: {f}");
            assert!(f.contains(": 1 bounces</title>"), "{id}: {f}");
            assert!(f.contains("<desc"), "a text alternative");
        }
        assert!(overview.body.contains("href=\"/lists\""));

        let page = request(p, "GET", "/campaigns/spring", &cookie, "").await;
        let f = figure(&page.body, "chart-send-rate");
        assert!(
            f.contains(": 1 sent</title>") && f.contains("data-total=\"1\""),
            "{f}"
        );
        let f = figure(&page.body, "chart-campaign-bounces");
        assert!(f.contains("<title>hard: 1</title>"), "{f}");
        assert!(page.body.contains("id=\"providers\"") && page.body.contains("id=\"due\""));

        let page = request(p, "GET", "/bounces", &cookie, "").await;
        let f = figure(&page.body, "chart-bounce-classes");
        assert!(
            f.contains(": 1 hard</title>") && f.contains("data-total=\"1\""),
            "{f}"
        );
        let f = figure(&page.body, "bounce-domains");
        assert!(f.contains("<title>example.org: 1</title>"), "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaign_page_shows_suspended_providers_and_the_breakers_reason() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let c = store.campaign("spring").await.unwrap().campaign;
        store
            .suspend_provider(c.id, "example.org", "<b>5.7.1</b> blocked", chrono_now())
            .await
            .unwrap();
        assert!(
            store
                .pause_campaign_because(c.id, "complaints <script>x</script>")
                .await
                .unwrap()
        );
        let session = login(p).await;
        let page = request(p, "GET", "/campaigns/spring", &[("Cookie", &session)], "").await;
        let at = page
            .body
            .find("id=\"providers\"")
            .expect("the providers section");
        let section = &page.body[at..];
        assert!(
            section.contains("<tr class=\"suspended\" data-provider=\"example.org\">"),
            "{section}"
        );
        assert!(
            section.contains("&lt;b&gt;5.7.1&lt;/b&gt; blocked"),
            "{section}"
        );
        assert!(section.contains("lifts the suspension"));
        let reason = &page.body[page
            .body
            .find("id=\"paused-reason\"")
            .expect("the breaker's reason")..];
        assert!(
            reason.contains("complaints &lt;script&gt;x&lt;/script&gt;"),
            "{reason}"
        );
        assert!(!page.body.contains("<script>x"));
        // The API's status object carries the same fields.
        let v = request(
            p,
            "GET",
            "/api/v1/campaigns/spring",
            &[("Authorization", &format!("Bearer {}", s.read_key))],
            "",
        )
        .await
        .json();
        assert_eq!(v["providers"][0]["state"], "suspended");
        assert_eq!(v["paused_reason"], "complaints <script>x</script>");
        assert!(v["due"].is_array() && v.get("local_time").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_pages_count_members_and_export_csv() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let mut attrs = serde_json::Map::new();
        attrs.insert("city".into(), "@SUM(1)".into());
        for (email, name) in [("bob@example.org", "=1+1"), ("carol@example.org", "Carol")] {
            store
                .add_subscriber(
                    &Address::parse(email).unwrap(),
                    "news",
                    Some(name),
                    attrs.clone(),
                    false,
                    Actor::Cli,
                    "test",
                )
                .await
                .unwrap();
        }
        store
            .unsubscribe(
                &Address::parse("carol@example.org").unwrap(),
                Some("news"),
                Actor::Cli,
                "test",
            )
            .await
            .unwrap();
        store.create_list(XSS_LIST, None).await.unwrap();

        let page = request(p, "GET", "/lists", &[], "").await;
        assert_eq!(page.status, 303, "strangers are sent to the login");
        let session = login(p).await;
        let cookie = [("Cookie", session.as_str())];
        let page = request(p, "GET", "/lists", &cookie, "").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let row = &page.body[page.body.find("data-list=\"news\"").expect("news")..];
        assert!(row.contains("data-status=\"subscribed\">2<"), "{row}");
        assert!(row.contains("data-status=\"unsubscribed\">1<"), "{row}");
        assert!(
            !page.body.contains("<script>alert"),
            "escaped: {}",
            page.body
        );
        assert!(page.body.contains("&lt;script&gt;alert"));

        let xss = request(
            p,
            "GET",
            "/lists/%3Cscript%3Ealert('list')%3C%2Fscript%3E",
            &cookie,
            "",
        )
        .await;
        assert_eq!(xss.status, 200, "{}", xss.body);
        assert!(!xss.body.contains("<script>alert") && xss.body.contains("&lt;script&gt;alert"));

        let page = request(p, "GET", "/lists/news", &cookie, "").await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.body
                .contains("data-status=\"subscribed\"><dt>subscribed</dt><dd>2</dd>"),
            "{}",
            page.body
        );
        let f = figure(&page.body, "list-growth");
        assert!(f.contains(": 3 joined</title>"), "{f}");
        assert!(f.contains(": 1 unsubscribed</title>"), "{f}");
        assert!(page.body.contains("href=\"/lists/news/export.csv\""));
        assert_eq!(
            request(p, "GET", "/lists/nope", &cookie, "").await.status,
            404
        );

        let csv = request(p, "GET", "/lists/news/export.csv", &[], "").await;
        assert_eq!(csv.status, 401, "the export needs a session");
        let csv = request(p, "GET", "/lists/news/export.csv", &cookie, "").await;
        assert_eq!(csv.status, 200);
        assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
        assert!(
            csv.header("content-disposition")
                .unwrap()
                .contains("news.csv")
        );
        let body = dechunk(&csv);
        let mut lines: Vec<&str> = body.lines().collect();
        lines[1..].sort_unstable();
        assert_eq!(
            lines,
            vec![
                "email,name,city",
                // The seed's name starts with `<`: not a formula.
                &format!("ann@example.org,{XSS_NAME},"),
                "bob@example.org,'=1+1,'@SUM(1)",
            ],
            "subscribed members only, formulas neutralised"
        );
        let all =
            dechunk(&request(p, "GET", "/lists/news/export.csv?status=all", &cookie, "").await);
        assert!(all.contains("carol@example.org,Carol,'@SUM(1)"), "{all}");
        let bad = request(
            p,
            "GET",
            "/lists/news/export.csv?status=nonsense",
            &cookie,
            "",
        )
        .await;
        assert_eq!(bad.status, 422);
        assert_eq!(
            request(p, "GET", "/lists/nope/export.csv", &cookie, "")
                .await
                .status,
            404
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_adds_and_removes_list_members_with_write_keys() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let (read, write) = (
            format!("Bearer {}", s.read_key),
            format!("Bearer {}", s.write_key),
        );
        let post = |auth: Option<String>, list: &'static str, body: &'static str| async move {
            let h: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            request(
                p,
                "POST",
                &format!("/api/v1/lists/{list}/members"),
                &h,
                body,
            )
            .await
        };
        let dan = r#"{"email": "dan@example.org", "name": "Dan", "attributes": {"city": "Bonn"}}"#;
        assert_eq!(post(None, "news", dan).await.status, 401);
        let r = post(Some(read.clone()), "news", dan).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("read scope"));
        let r = post(
            Some(write.clone()),
            "news",
            r#"{"email": "not an address"}"#,
        )
        .await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("not an e-mail address"),
            "{}",
            r.body
        );
        let r = post(Some(write.clone()), "news", r#"{"mail": "x"}"#).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(post(Some(write.clone()), "nope", dan).await.status, 404);

        let r = post(Some(write.clone()), "news", dan).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        assert_eq!(v["email"], "dan@example.org");
        assert_eq!(v["status"], "subscribed");
        assert_eq!(v["outcome"]["created"], true);
        let d = store
            .subscriber_detail(&Address::parse("dan@example.org").unwrap())
            .await
            .unwrap();
        assert_eq!(d.subscriber.name.as_deref(), Some("Dan"));
        assert_eq!(d.subscriber.attributes["city"], "Bonn");
        assert_eq!(
            post(Some(write.clone()), "news", dan).await.status,
            200,
            "already subscribed"
        );

        store
            .blocklist(
                &Address::parse("eve@example.org").unwrap(),
                Actor::Cli,
                "test",
            )
            .await
            .ok();
        store
            .add_subscriber(
                &Address::parse("eve@example.org").unwrap(),
                "news",
                None,
                Default::default(),
                false,
                Actor::Cli,
                "t",
            )
            .await
            .ok();
        store
            .blocklist(
                &Address::parse("eve@example.org").unwrap(),
                Actor::Cli,
                "test",
            )
            .await
            .unwrap();
        let r = post(
            Some(write.clone()),
            "news",
            r#"{"email": "eve@example.org"}"#,
        )
        .await;
        assert_eq!(r.status, 409, "{}", r.body);

        let list = request(
            p,
            "GET",
            "/api/v1/lists/news",
            &[("Authorization", &read)],
            "",
        )
        .await;
        assert_eq!(list.status, 200, "{}", list.body);
        assert_eq!(list.json()["counts"]["subscribed"], 2);

        let del = |auth: Option<String>, email: &'static str| async move {
            let h: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            request(
                p,
                "DELETE",
                &format!("/api/v1/lists/news/members/{email}"),
                &h,
                "",
            )
            .await
        };
        assert_eq!(del(None, "dan@example.org").await.status, 401);
        assert_eq!(del(Some(read.clone()), "dan@example.org").await.status, 403);
        assert_eq!(del(Some(write.clone()), "not-an-address").await.status, 422);
        let r = del(Some(write.clone()), "dan@example.org").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["changed"], true);
        let d = store
            .subscriber_detail(&Address::parse("dan@example.org").unwrap())
            .await
            .unwrap();
        assert_eq!(d.memberships[0].status.as_str(), "unsubscribed");
        let last = d.audit.last().unwrap();
        assert_eq!(last.actor, Actor::Admin);
        assert!(last.reason.contains("key writer"), "{}", last.reason);
        let actions: Vec<_> = store
            .admin_actions(2)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.actor, a.action))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("key:writer".to_string(), "member-unsubscribe".to_string()),
                ("key:writer".to_string(), "member-add".to_string()),
            ]
        );
    }
}

/// Issue 19: the overview's member counts come from a snapshot counted in
/// the background (a full join at 1M members), shown with its age; a
/// request never counts, the lists page stays exact.
#[tokio::test]
async fn issue_19_overview_member_counts_are_a_background_snapshot() {
    for s in servers(AdminOptions::default()).await {
        let p = s.port;
        let store = &s.app.store;
        let session = login(p).await;
        let cookie = [("Cookie", session.as_str())];
        let counts = store.list_summary("news").await.unwrap().counts;
        let line = format!(
            "<strong>{}</strong> subscribed · {} unconfirmed",
            counts.subscribed, counts.unconfirmed
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let overview = loop {
            let r = request(p, "GET", "/", &cookie, "").await;
            if r.body.contains("Member counts as of") {
                break r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no snapshot: {}",
                r.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(overview.body.contains(&line), "{line} in {}", overview.body);

        store
            .add_subscriber(
                &Address::parse("bob@example.org").unwrap(),
                "news",
                None,
                Default::default(),
                false,
                Actor::Cli,
                "test",
            )
            .await
            .unwrap();
        let after = store.list_summary("news").await.unwrap().counts;
        assert_ne!(after, counts, "the new member counts somewhere");
        let again = request(p, "GET", "/", &cookie, "").await;
        assert!(
            again.body.contains(&line),
            "still the snapshot: {}",
            again.body
        );
    }
}
