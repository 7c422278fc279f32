//! The recipient-domain check through the binary: `import --json`'s
//! `undeliverable` and `undeliverable_rows`, `sub ls --status
//! undeliverable`, `sub restore`, the skipped deliveries of `campaign send`
//! and `campaign status`, and `--no-dns-check`. Every lookup goes to
//! `rundbrief-dns`'s responder on a loopback port the test picks, named in
//! rundbrief.toml's `[dns] servers`; on SQLite, and on PostgreSQL when
//! `RUNDBRIEF_TEST_POSTGRES` is set.

mod common;

use common::{Env, endpoint_config, sending_config, spool_recipients, start_sink, stop};
use rundbrief_dns::responder::{Fault, Responder};
use serde_json::{Value, json};

/// The responder and the runtime its tasks run on.
struct Dns {
    responder: Responder,
    _rt: tokio::runtime::Runtime,
}

/// `good.example` has an MX, `nomail.example` a null MX, `broken.example`
/// answers SERVFAIL; every other name does not exist.
fn dns() -> Dns {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let responder = rt.block_on(Responder::start()).unwrap();
    responder.mx("good.example", 300, &[(10, "mx.good.example")]);
    responder.mx("nomail.example", 300, &[(0, ".")]);
    responder.exists("broken.example");
    responder.fault("broken.example", Some(Fault::ServFail));
    Dns { responder, _rt: rt }
}

/// A working directory whose rundbrief.toml points `[dns] servers` at the
/// responder (the check is on in the file `init` writes), plus the database
/// variables of the backend.
struct Case {
    e: Env,
    db: Vec<(String, String)>,
}

impl Case {
    fn new(dns: &Dns, postgres: Option<&str>) -> Self {
        let e = Env::new();
        endpoint_config(&e);
        sending_config(&e);
        let cfg = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
        assert!(cfg.contains("check = true"), "init writes the check on");
        let cfg = cfg.replace(
            "# servers = [\"127.0.0.1:5300\"]",
            &format!("servers = [\"{}\"]", dns.responder.addr()),
        );
        e.write("rundbrief.toml", cfg.as_bytes());
        let mut db = Vec::new();
        if let Some(url) = postgres {
            db.push(("DATABASE_URL".into(), url.to_string()));
            db.push((
                "RUNDBRIEF_DATABASE__SCHEMA".into(),
                format!("t_{}", uuid::Uuid::now_v7().simple()),
            ));
        }
        Case { e, db }
    }

    /// The binary with the file's `[dns]` in effect (the helpers switch the
    /// check off for every other test).
    fn cmd(&self) -> assert_cmd::Command {
        let mut c = self.e.cmd();
        c.env_remove("RUNDBRIEF_DNS__CHECK");
        for (k, v) in &self.db {
            c.env(k, v);
        }
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(&[args, &["--json"]].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }
}

fn backends() -> Vec<Option<String>> {
    let mut out = vec![None];
    if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
        out.push(Some(url));
    }
    out
}

fn emails(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["email"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn import_lists_undeliverable_rows_with_lines_and_campaigns_skip_them() {
    let dns = dns();
    for pg in backends() {
        let c = Case::new(&dns, pg.as_deref());
        let b = if pg.is_some() { "postgres" } else { "sqlite" };
        c.ok(&["list", "create", "news"]);
        c.e.write(
            "people.csv",
            b"email,name\n\
              ann@good.example,Ann\n\
              bob@gone.example,Bob\n\
              cid@nomail.example,Cid\n\
              not an address,X\n\
              dan@broken.example,Dan\n\
              eve@Gone.Example,Eve\n",
        );
        let queries = dns.responder.queries();
        let report = c.json(&["import", "people.csv", "--list", "news"]);
        assert_eq!(report["imported"], 5, "{b}: {report}");
        assert_eq!(report["updated"], 0, "{b}");
        assert_eq!(report["skipped"], 0, "{b}");
        assert_eq!(report["invalid"][0]["line"], 5, "{b}");
        assert_eq!(report["undeliverable"], 3, "{b}: {report}");
        assert_eq!(
            report["undeliverable_rows"],
            json!([
                {"line": 3, "email": "bob@gone.example", "reason": "no MX or A (NXDOMAIN)"},
                {"line": 4, "email": "cid@nomail.example", "reason": "null MX (RFC 7505)"},
                {"line": 7, "email": "eve@gone.example", "reason": "no MX or A (NXDOMAIN)"},
            ]),
            "{b}: SERVFAIL (line 6) is never held against an address"
        );
        assert!(
            dns.responder.queries() > queries,
            "{b}: asked the responder"
        );

        let listed = c.json(&["sub", "ls", "--status", "undeliverable"]);
        assert_eq!(
            emails(&listed),
            ["bob@gone.example", "cid@nomail.example", "eve@gone.example"],
            "{b}"
        );
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "undeliverable"),
            "{b}: {listed}"
        );
        let cid = c.json(&["sub", "show", "cid@nomail.example"]);
        let last = cid["audit"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (
                last["action"].as_str(),
                last["actor"].as_str(),
                last["reason"].as_str()
            ),
            (
                Some("undeliverable"),
                Some("import"),
                Some("nomail.example: null MX (RFC 7505)")
            ),
            "{b}"
        );
        let human = c.ok(&["import", "people.csv", "--list", "news", "--dry-run"]);
        assert!(
            human.contains("line 4: cid@nomail.example: null MX (RFC 7505)"),
            "{b}: {human}"
        );

        // Reversible: restore, and the address is active again.
        c.ok(&["sub", "restore", "bob@gone.example"]);
        assert_eq!(
            c.json(&["sub", "show", "bob@gone.example"])["status"],
            "active",
            "{b}"
        );

        // --no-dns-check: nothing asked, nothing marked or listed.
        c.e.write("more.csv", b"email\nfay@gone.example\n");
        let queries = dns.responder.queries();
        let more = c.json(&["import", "more.csv", "--list", "news", "--no-dns-check"]);
        assert_eq!(
            (more["imported"].as_u64(), more["undeliverable"].as_u64()),
            (Some(1), Some(0)),
            "{b}"
        );
        assert_eq!(more["undeliverable_rows"], json!([]), "{b}");
        assert_eq!(dns.responder.queries(), queries, "{b}: no lookups");
        assert_eq!(
            c.json(&["sub", "show", "fay@gone.example"])["status"],
            "active",
            "{b}"
        );

        // Before the send the check runs again: bob (restored) and fay
        // (imported unchecked) are marked now; cid and eve were already.
        c.e.write("issue.md", b"Hello\n");
        c.ok(&[
            "campaign",
            "create",
            "c",
            "--list",
            "news",
            "--subject",
            "Hi",
            "--content",
            "issue.md",
        ]);
        let (sink, port) = start_sink(&c.e, &["--dir", "spool"]);
        let relay = format!("smtp://127.0.0.1:{port}");
        let sent = c.json(&["campaign", "send", "c", "--relay", &relay]);
        assert_eq!(sent["sent"], 2, "{b}: {sent}");
        assert_eq!(sent["skipped"], 4, "{b}: {sent}");
        assert_eq!(sent["bounced"], 0, "{b}: not a bounce");
        assert_eq!(sent["state"], "finished", "{b}");
        let mut got = spool_recipients(&c.e.path("spool"));
        got.sort();
        assert_eq!(
            got,
            [
                "Delivered-To: <ann@good.example>",
                "Delivered-To: <dan@broken.example>"
            ],
            "{b}"
        );
        let status = c.json(&["campaign", "status", "c"]);
        assert_eq!(
            (
                status["total"].as_u64(),
                status["skipped"].as_u64(),
                status["pending"].as_u64()
            ),
            (Some(6), Some(4), Some(0)),
            "{b}: {status}"
        );
        let skipped: u64 = status["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["state"] == "skipped")
            .map(|g| g["count"].as_u64().unwrap())
            .sum();
        assert_eq!(skipped, 4, "{b}: {status}");
        let human = c.ok(&["campaign", "status", "c"]);
        assert!(
            human.contains("gone.example: no MX or A (NXDOMAIN)"),
            "{b}: {human}"
        );
        let bob = c.json(&["sub", "show", "bob@gone.example"]);
        let last = bob["audit"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (bob["status"].as_str(), last["actor"].as_str()),
            (Some("undeliverable"), Some("scheduler")),
            "{b}"
        );

        // campaign send --no-dns-check: a new address on a dead domain is
        // sent to (the sink takes anything); the marked ones stay skipped.
        c.ok(&["sub", "add", "gus@gone.example", "--list", "news"]);
        c.ok(&[
            "campaign",
            "create",
            "c2",
            "--list",
            "news",
            "--subject",
            "Hi",
            "--content",
            "issue.md",
        ]);
        let sent = c.json(&[
            "campaign",
            "send",
            "c2",
            "--relay",
            &relay,
            "--no-dns-check",
        ]);
        assert_eq!(
            (sent["sent"].as_u64(), sent["skipped"].as_u64()),
            (Some(3), Some(4)),
            "{b}: {sent}"
        );
        // gus was sent to (the MX lookups that group domains into
        // providers for shaping may still ask the responder).
        // campaign start checks at once (serve sends what is left);
        // --no-dns-check asks nothing and is kept for serve.
        c.ok(&["sub", "add", "hal@gone.example", "--list", "news"]);
        for name in ["c3", "c4"] {
            c.ok(&[
                "campaign",
                "create",
                name,
                "--list",
                "news",
                "--subject",
                "Hi",
                "--content",
                "issue.md",
            ]);
        }
        let started = c.json(&["campaign", "start", "c3"]);
        assert_eq!(started["skipped"], 2, "{b}: gus and hal now: {started}");
        let status = c.json(&["campaign", "status", "c3"]);
        assert_eq!(
            (
                status["total"].as_u64(),
                status["skipped"].as_u64(),
                status["pending"].as_u64()
            ),
            (Some(8), Some(6), Some(2)),
            "{b}: {status}"
        );
        c.ok(&["sub", "add", "ivy@gone.example", "--list", "news"]);
        let queries = dns.responder.queries();
        let started = c.json(&["campaign", "start", "c4", "--no-dns-check"]);
        assert_eq!(started["state"], "running", "{b}");
        assert!(started.get("skipped").is_none(), "{b}: {started}");
        assert_eq!(dns.responder.queries(), queries, "{b}: no lookups");
        assert_eq!(
            c.json(&["sub", "show", "ivy@gone.example"])["status"],
            "active",
            "{b}"
        );
        stop(sink, "-INT");
    }
}

#[test]
fn check_false_in_the_config_turns_it_off() {
    let dns = dns();
    let c = Case::new(&dns, None);
    c.ok(&["list", "create", "news"]);
    c.e.write("people.csv", b"email\nbob@gone.example\n");
    let queries = dns.responder.queries();
    let out = c
        .cmd()
        .env("RUNDBRIEF_DNS__CHECK", "false")
        .args(["import", "people.csv", "--list", "news", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["undeliverable"], 0, "{report}");
    assert_eq!(report["dns_check"], false, "{report}");
    assert_eq!(dns.responder.queries(), queries);
    let shown = c.json(&["config", "show"]);
    assert_eq!(
        shown["config"]["dns"]["check"], true,
        "the file says true: {shown}"
    );
}
