//! The dashboard's latency on a big database, as issue 19 asks: PostgreSQL
//! with N subscribers (default 1,000,000) on one list, a finished campaign
//! `done` with N deliveries (bulk-inserted with `generate_series`: 97 % sent,
//! 2 % failed, 1 % bounced), and a second campaign `live` that `rundbrief
//! serve` sends to `rundbrief sink` on loopback during the measurements.
//! The dashboard is the one inside that `serve` (`--admin-listen`), as in
//! production. Each route is requested `requests` times one after the other
//! (after 5 warm-up requests), logged in (pages) or with a read API key
//! (`/api/v1/…`); the figures are p50, p95 and max of the wall time from
//! connect to the last byte of the answer. Goal: p95 ≤ 100 ms.

use crate::endpoint::{bench_secret, write_config};
use crate::{Args, Figure, ScratchDb, psql, rundbrief};
use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench password 1234";
/// Messages per second `serve` sends the live campaign at: steady load
/// while the pages are measured.
const LIVE_RATE: u32 = 200;
/// Time one route may take to sample: a slow page gets fewer requests.
const ROUTE_BUDGET: Duration = Duration::from_secs(90);

/// The statements behind the campaign page and the status API (crates/store:
/// `campaign_counts`, `campaign_errors`, `campaign_domain_counts` via
/// `provider_queues`, `pending_by_due`, `outcomes_since`) and the overview's
/// list counts, for the finished campaign `done`: each is timed once with
/// EXPLAIN ANALYZE after the measurements, to say which one is slow.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "campaign_counts (kept counts, migration 18)",
        "SELECT CAST(SUM(queued) AS BIGINT), CAST(SUM(sent) AS BIGINT), CAST(SUM(failed) AS BIGINT), \
         CAST(SUM(rejected) AS BIGINT), CAST(SUM(bounced) AS BIGINT), CAST(SUM(skipped) AS BIGINT), \
         COUNT(*), COUNT(DISTINCT domain) FROM delivery_domain_counts WHERE campaign_id = $C",
    ),
    (
        "campaign_counts: sending and deferred (index)",
        "SELECT state, COUNT(*) AS n FROM deliveries \
         WHERE campaign_id = $C AND state IN ('sending', 'deferred') GROUP BY state",
    ),
    (
        "campaign_counts (scan, before migration 18)",
        "SELECT state, COUNT(*) AS n FROM deliveries WHERE campaign_id = $C GROUP BY state",
    ),
    (
        "campaign_errors",
        "SELECT state, last_error, COUNT(*) AS n FROM deliveries WHERE campaign_id = $C \
         AND state IN ('failed', 'deferred', 'rejected', 'skipped') \
         GROUP BY state, last_error ORDER BY n DESC, state, last_error LIMIT 10",
    ),
    (
        "campaign_domain_counts (kept counts, migration 18)",
        "SELECT domain, CAST(SUM(queued) AS BIGINT) AS pending, CAST(SUM(sent) AS BIGINT) AS sent, \
         CAST(SUM(COUNT(*)) OVER () AS BIGINT) AS deltas \
         FROM delivery_domain_counts WHERE campaign_id = $C GROUP BY domain \
         HAVING SUM(total) <> 0 ORDER BY SUM(total) DESC, domain LIMIT 10",
    ),
    (
        "campaign_domain_counts (scan, before migration 18)",
        "SELECT split_part(email, '@', 2) AS domain, \
         SUM(CASE WHEN state IN ('pending','sending','deferred') THEN 1 ELSE 0 END) AS pending, \
         SUM(CASE WHEN state = 'sent' THEN 1 ELSE 0 END) AS sent \
         FROM deliveries WHERE campaign_id = $C GROUP BY split_part(email, '@', 2) \
         ORDER BY COUNT(*) DESC, split_part(email, '@', 2) LIMIT 10",
    ),
    (
        "pending_by_due",
        "SELECT next_attempt_at AS t, COUNT(*) AS n FROM deliveries WHERE campaign_id = $C \
         AND state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at < now()) \
         GROUP BY next_attempt_at",
    ),
    (
        "outcomes_since (five-second buckets, migration 17)",
        "SELECT CAST(SUM(outcomes) AS BIGINT) AS n, MIN(first_at) AS first FROM delivery_pace \
         WHERE campaign_id = $C AND at >= now() - interval '65 seconds'",
    ),
    (
        "list member counts (overview: counted in the background)",
        "SELECT list_id, status, COUNT(*) FROM memberships GROUP BY list_id, status",
    ),
];

/// "Execution Time" of EXPLAIN ANALYZE of each of [`EXPLAINED`], in ms,
/// with the plan's top line.
fn explain(url: &str, campaign: &str) -> anyhow::Result<Vec<(&'static str, f64, String)>> {
    let id = format!("(SELECT id FROM campaigns WHERE name = '{campaign}')");
    let mut out = Vec::new();
    for (name, sql) in EXPLAINED {
        let plan = psql(
            url,
            &format!("EXPLAIN (ANALYZE, BUFFERS) {}", sql.replace("$C", &id)),
        )?;
        let ms = plan
            .lines()
            .find_map(|l| l.trim().strip_prefix("Execution Time: "))
            .and_then(|t| t.trim_end_matches(" ms").parse().ok())
            .unwrap_or(f64::NAN);
        let top = plan
            .lines()
            .find(|l| {
                l.contains("Scan")
                    && [
                        " deliveries",
                        " memberships",
                        " delivery_pace",
                        " delivery_domain_counts",
                    ]
                    .iter()
                    .any(|t| l.contains(t))
            })
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push((*name, ms, top));
    }
    Ok(out)
}

/// A child process killed when dropped (also when the figure fails).
struct Running(Child, &'static str);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_listening(port: u16, child: &mut Running) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(st) = child.0.try_wait()? {
            bail!("{} exited ({st}) before listening on {port}", child.1);
        }
        if Instant::now() > deadline {
            bail!("{} does not listen on {port} after 60 s", child.1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn rb(dir: &Path, url: &str) -> anyhow::Result<Command> {
    let mut c = Command::new(rundbrief()?);
    c.current_dir(dir)
        .env("DATABASE_URL", url)
        .env("RUNDBRIEF_DNS__CHECK", "false")
        .env_remove("RUST_LOG");
    Ok(c)
}

fn ok(cmd: &mut Command, stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One HTTP/1.1 exchange on a fresh connection: (status, head, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
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
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a head")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an HTTP status")?;
    Ok((status, head.to_string(), body.to_string()))
}

/// The value of the cookie `name` set in `head`, as `name=value`.
fn cookie(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.trim().split(';').next())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// Logs in as `ann` through the form; returns the session cookie.
fn login(port: u16) -> anyhow::Result<String> {
    let (_, head, body) = http(port, "GET", "/login", &[], "")?;
    let pre = cookie(&head, "rb_login").context("no rb_login cookie")?;
    let at = body
        .find("name=\"csrf\" value=\"")
        .context("no CSRF field")?
        + 19;
    let csrf = body[at..].split('"').next().unwrap_or_default();
    let form = format!(
        "username=ann&password={}&csrf={csrf}",
        PASSWORD.replace(' ', "+")
    );
    let (status, head, body) = http(port, "POST", "/login", &[("Cookie", &pre)], &form)?;
    if status != 303 {
        bail!("login answered {status}: {body}");
    }
    cookie(&head, "rb_session").context("no session cookie after login")
}

/// Latencies of `n` sequential requests (fewer when they take more than
/// [`ROUTE_BUDGET`], at least 20), in ms, sorted.
fn sample(port: u16, path: &str, auth: (&str, &str), n: usize) -> anyhow::Result<Vec<f64>> {
    for _ in 0..5 {
        http(port, "GET", path, &[auth], "")?;
    }
    let mut ms = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        if i >= 20 && started.elapsed() > ROUTE_BUDGET {
            break;
        }
        let t = Instant::now();
        let (status, _, body) = http(port, "GET", path, &[auth], "")?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!(
                "GET {path} answered {status}: {}",
                &body[..body.len().min(300)]
            );
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// `sent` of a campaign by the API.
fn sent(port: u16, key: &str, name: &str) -> anyhow::Result<u64> {
    let (_, _, body) = http(
        port,
        "GET",
        &format!("/api/v1/campaigns/{name}"),
        &[("Authorization", key)],
        "",
    )?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["sent"].as_u64().unwrap_or(0))
}

pub(crate) fn run(
    args: &Args,
    subscribers: Option<u64>,
    live: Option<u64>,
    requests: usize,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    if args.no_postgres {
        bail!("the dashboard figure needs PostgreSQL (drop --no-postgres)");
    }
    let n = subscribers.unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let live = live.unwrap_or(100_000).min(n);
    let db = ScratchDb::new(&args.postgres, "dashboard")?;
    let url = db.url.clone();
    let dir = args.work.join("dashboard");
    let _ = std::fs::remove_dir_all(&dir);
    write_config(
        &dir,
        &bench_secret(),
        &url,
        &format!("rate = {LIVE_RATE}\ndomain_rate = {LIVE_RATE}\ndomain_concurrency = 16\n"),
    )?;
    std::fs::write(
        dir.join("news.md"),
        "# News\n\nHello {{subscriber.name}}.\n",
    )?;

    // The schema (any command migrates), the lists and the two campaigns.
    for args in [
        vec!["-q", "list", "create", "everyone"],
        vec!["-q", "list", "create", "live"],
    ] {
        ok(rb(&dir, &url)?.args(args), None)?;
    }
    for (name, list) in [("done", "everyone"), ("live", "live")] {
        ok(
            rb(&dir, &url)?.args([
                "-q",
                "campaign",
                "create",
                name,
                "--list",
                list,
                "--subject",
                "Monthly news",
                "--content",
                "news.md",
            ]),
            None,
        )?;
    }
    ok(
        rb(&dir, &url)?.args(["-q", "admin", "user", "add", "ann", "--password-stdin"]),
        Some(&format!("{PASSWORD}\n")),
    )?;
    let key: serde_json::Value = serde_json::from_str(&ok(
        rb(&dir, &url)?.args([
            "admin", "key", "create", "bench", "--scope", "read", "--json",
        ]),
        None,
    )?)?;
    let key = format!("Bearer {}", key["key"].as_str().context("no key printed")?);

    eprintln!("dashboard: inserting {n} subscribers, memberships, audit and deliveries …");
    let t = Instant::now();
    psql(
        &url,
        &format!(
            "BEGIN;
             INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at, updated_at)
               SELECT gen_random_uuid(), e, e, 'User ' || i, '{{}}', 'active', now(), now()
               FROM (SELECT i, 'user' || i || '@d' || (i % 997) || '.example.org' AS e
                     FROM generate_series(1, {n}) AS i) g;
             INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at)
               SELECT s.id, l.id, 'subscribed', now(), now()
               FROM subscribers s, lists l WHERE l.name = 'everyone';
             INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at)
               SELECT s.id, l.id, 'subscribed', now(), now()
               FROM (SELECT id FROM subscribers ORDER BY email_key LIMIT {live}) s, lists l
               WHERE l.name = 'live';
             INSERT INTO audit (id, subscriber_id, list_id, action, actor, reason, created_at)
               SELECT gen_random_uuid(), m.subscriber_id, m.list_id, 'subscribed', 'cli', 'import', now()
               FROM memberships m;
             INSERT INTO deliveries (id, campaign_id, subscriber_id, email, state, attempts,
                                     last_error, created_at, updated_at, first_attempt_at)
               SELECT gen_random_uuid(), c.id, s.id, s.email,
                      CASE WHEN r < 0.97 THEN 'sent' WHEN r < 0.99 THEN 'failed' ELSE 'bounced' END,
                      1,
                      CASE WHEN r < 0.97 THEN NULL
                           WHEN r < 0.99 THEN 'RCPT TO: 550 5.1.1 User unknown (' || (s.r * 1000)::int % 7 || ')'
                           ELSE 'bounce: hard 5.1.1' END,
                      now(), now(), now()
               FROM (SELECT id, email, random() AS r FROM subscribers) s, campaigns c
               WHERE c.name = 'done';
             UPDATE campaigns SET state = 'finished' WHERE name = 'done';
             COMMIT;"
        ),
    )?;
    // Its own command: VACUUM cannot run in the string's implicit transaction.
    psql(&url, "VACUUM ANALYZE")?;
    // VACUUM, not only ANALYZE: a campaign that finished in production had
    // each delivery updated twice (claim, outcome) and autovacuum has since
    // set the visibility map, which lets `campaign_errors` read its partial
    // index alone (index-only scan). A bulk load skips that; without it the
    // query reads 20,000 scattered heap rows (~100 ms here).
    let loaded = t.elapsed().as_secs_f64();
    eprintln!("dashboard: loaded in {loaded:.0} s; starting `live` ({live} recipients) …");
    ok(
        rb(&dir, &url)?.args(["-q", "campaign", "start", "live", "--no-dns-check"]),
        None,
    )?;

    let sink_port = free_port()?;
    let mut sink = Running(
        rb(&dir, &url)?
            .args([
                "sink",
                "--no-tls",
                "--listen",
                &format!("127.0.0.1:{sink_port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        "rundbrief sink",
    );
    wait_listening(sink_port, &mut sink)?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let mut serve = Running(
        rb(&dir, &url)?
            .args([
                "serve",
                "--relay",
                &format!("smtp://127.0.0.1:{sink_port}"),
                "--admin-listen",
                &format!("127.0.0.1:{port}"),
                "--bounce-listen",
                "off",
                "--http-listen",
                "off",
                "--metrics-listen",
                "off",
                "--tick",
                "1",
                "--no-dns-check",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
        "rundbrief serve",
    );
    wait_listening(port, &mut serve)?;
    let session = login(port)?;
    // Measure while `live` sends.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent(port, &key, "live")? == 0 {
        if Instant::now() > deadline {
            bail!(
                "`live` sent nothing within 60 s; see {}",
                dir.join("serve.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent_before = sent(port, &key, "live")?;
    let t = Instant::now();
    let someone = format!("user{}%40d{}.example.org", n / 2, (n / 2) % 997);
    let routes: Vec<(String, (&str, &str))> = vec![
        ("/".into(), ("Cookie", session.as_str())),
        ("/campaigns/done".into(), ("Cookie", session.as_str())),
        ("/campaigns/live".into(), ("Cookie", session.as_str())),
        (
            format!("/subscribers/{someone}"),
            ("Cookie", session.as_str()),
        ),
        ("/bounces".into(), ("Cookie", session.as_str())),
        (
            "/api/v1/campaigns/done".into(),
            ("Authorization", key.as_str()),
        ),
        (
            "/api/v1/campaigns/live".into(),
            ("Authorization", key.as_str()),
        ),
    ];
    let mut table = Vec::new();
    for (path, auth) in &routes {
        eprintln!("dashboard: {requests} × GET {path} …");
        let ms = sample(port, path, *auth, requests)?;
        table.push((
            path.clone(),
            ms.len(),
            pct(&ms, 0.5),
            pct(&ms, 0.95),
            ms[ms.len() - 1],
        ));
    }
    let secs = t.elapsed().as_secs_f64();
    let sent_during = sent(port, &key, "live")?.saturating_sub(sent_before);
    let explained = explain(&url, "done")?;
    drop(serve);
    drop(sink);

    println!(
        "\ndashboard latency, {n} subscribers, {requests} requests per route, \
         while `live` sent {sent_during} messages ({:.0} msg/s):",
        sent_during as f64 / secs
    );
    println!(
        "{:<50} {:>8} {:>9} {:>9} {:>9}",
        "route", "requests", "p50 ms", "p95 ms", "max ms"
    );
    for (path, count, p50, p95, max) in &table {
        println!("{path:<50} {count:>8} {p50:>9.1} {p95:>9.1} {max:>9.1}");
        let shown = path.replace(&someone, "EMAIL");
        figures.push(Figure::new(
            format!("dashboard {n}: GET {shown} p50"),
            *p50,
            "ms",
            "",
        ));
        figures.push(Figure::new(
            format!("dashboard {n}: GET {shown} p95"),
            *p95,
            "ms",
            format!(
                "max {max:.1} ms; target p95 ≤ 100{}",
                if *p95 > 100.0 { " (missed)" } else { "" }
            ),
        ));
    }
    println!("\nthe statements of the campaign page for `done` ({n} deliveries), EXPLAIN ANALYZE:");
    for (name, ms, top) in &explained {
        println!("{name:<32} {ms:>9.1} ms  {top}");
    }
    figures.push(Figure::new(
        format!("dashboard {n}: bulk load"),
        loaded,
        "s",
        "subscribers, memberships, audit, deliveries by SQL",
    ));
    drop(db);
    Ok(())
}
