//! The real `rundbrief` binary against a temporary SQLite file per test.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

#[test]
fn init_writes_a_private_config_with_a_secret() {
    let e = Env::new();
    e.cmd().arg("init").assert().success();
    let text = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
    let secret_line = text.lines().find(|l| l.starts_with("secret = ")).unwrap();
    assert!(secret_line.len() > 40, "{secret_line}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(e.path("rundbrief.toml"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    assert!(e.fails(&["init"]).contains("--force"));
    e.cmd().args(["init", "--force"]).assert().success();
    assert_ne!(
        std::fs::read_to_string(e.path("rundbrief.toml")).unwrap(),
        text,
        "a new secret each time"
    );

    let shown = e.json(&["config", "show"]);
    assert_eq!(shown["file"], "rundbrief.toml");
    assert_eq!(shown["config"]["secret"], "<redacted>");
    assert!(!e.ok(&["config", "show"]).contains(&secret_line[10..30]));
}

#[test]
fn config_errors_name_key_and_source() {
    let e = Env::new();
    e.write("rundbrief.toml", b"[import]\nbatch_size = 0\n");
    let err = e.fails(&["list", "ls"]);
    assert!(err.contains("import.batch_size"), "{err}");
    e.write("rundbrief.toml", b"[import]\nbatch_sise = 10\n");
    let err = e.fails(&["list", "ls"]);
    assert!(
        err.contains(
            "`import.batch_sise` (rundbrief.toml): unknown key `batch_sise`; \
                      expected `batch_size` or `max_line_bytes`"
        ),
        "{err}"
    );
    std::fs::remove_file(e.path("rundbrief.toml")).unwrap();
    let err = e
        .cmd()
        .args(["list", "ls"])
        .env("RUNDBRIEF_IMPORT__BATCH_SIZE", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8(err.stderr).unwrap();
    assert!(
        err.contains("batch_size") && err.contains("RUNDBRIEF_"),
        "{err}"
    );
    assert!(
        e.fails(&["--config", "missing.toml", "list", "ls"])
            .contains("does not exist")
    );
    // Variables of the test suite and the bench are not configuration keys.
    for var in ["RUNDBRIEF_BENCH_POSTGRES", "RUNDBRIEF_TEST_POSTGRES"] {
        e.cmd()
            .args(["list", "ls"])
            .env(var, "postgres://postgres@127.0.0.1:1/nothing")
            .assert()
            .success();
    }
    // DATABASE_URL is honoured, and --database-url beats it.
    e.cmd()
        .args(["list", "create", "x"])
        .env("DATABASE_URL", "sqlite://env.db?mode=rwc")
        .assert()
        .success();
    assert!(e.path("env.db").exists());
    e.cmd()
        .args(["--database-url", "flag.db", "list", "create", "x"])
        .env("DATABASE_URL", "sqlite://env.db?mode=rwc")
        .assert()
        .success();
    assert!(e.path("flag.db").exists());
}

/// Issue #20 point 6: a list name that cannot become a List-Id is refused
/// at `list create`, saying why and what to do; one that can gets a label.
#[test]
fn issue_20_list_create_gives_a_list_id_label_or_says_what_to_do() {
    let e = Env::new();
    let created = e.json(&["list", "create", "Team News"]);
    assert_eq!(created["label"], "team-news");
    let err = e.fails(&["list", "create", "bücher"]);
    assert!(
        err.contains("List-Id") && err.contains("--label buecher"),
        "{err}"
    );
    let err = e.fails(&["list", "create", "bücher", "--label", "Bücher"]);
    assert!(err.contains("cannot be a List-Id label"), "{err}");
    let created = e.json(&["list", "create", "bücher", "--label", "buecher"]);
    assert_eq!(created["label"], "buecher");
}

#[test]
fn lists_and_subscribers_from_the_command_line() {
    let e = Env::new();
    let created = e.json(&["list", "create", "news", "--description", "Monthly news"]);
    assert_eq!(created["name"], "news");
    assert!(
        e.path("rundbrief.db").exists(),
        "the embedded default is created in the working directory"
    );
    assert!(
        e.fails(&["list", "create", "news"])
            .contains("already exists")
    );

    let added = e.json(&[
        "sub",
        "add",
        "Anna@Example.ORG",
        "--list",
        "news",
        "--name",
        "Anna",
        "--attr",
        "city=Köln",
    ]);
    assert_eq!(added["email"], "Anna@example.org");
    assert_eq!(added["outcome"]["created"], true);
    // Adding again says whether it changed the name or attributes.
    let again = e.ok(&[
        "sub",
        "add",
        "anna@example.org",
        "--list",
        "news",
        "--attr",
        "city=Köln",
    ]);
    assert!(
        again.starts_with("already subscribed:") && !again.contains("updated"),
        "{again}"
    );
    let again = e.ok(&[
        "sub",
        "add",
        "anna@example.org",
        "--list",
        "news",
        "--attr",
        "city=Bonn",
    ]);
    assert!(again.contains("(name or attributes updated)"), "{again}");
    let again = e.json(&[
        "sub",
        "add",
        "anna@example.org",
        "--list",
        "news",
        "--attr",
        "city=Köln",
    ]);
    assert_eq!(again["outcome"]["updated"], true, "{again}");
    e.ok(&["sub", "add", "bob@example.org", "--list", "news"]);
    // email and name are columns of their own, never attributes.
    for attr in ["Email=x@example.org", "NAME=X"] {
        let err = e.fails(&[
            "sub",
            "add",
            "bob@example.org",
            "--list",
            "news",
            "--attr",
            attr,
        ]);
        assert!(err.contains("is not an attribute"), "{err}");
    }
    assert!(
        e.fails(&["sub", "add", "not-an-address", "--list", "news"])
            .contains("no `@`")
    );
    assert!(
        e.fails(&["sub", "add", "c@example.org", "--list", "nope"])
            .contains("no list named `nope`")
    );
    assert!(
        e.fails(&[
            "sub",
            "add",
            "c@example.org",
            "--list",
            "news",
            "--attr",
            "oops"
        ])
        .contains("KEY=VALUE")
    );

    let ls = e.json(&["sub", "ls", "--list", "news"]);
    assert_eq!(ls.as_array().unwrap().len(), 2);
    assert_eq!(ls[0]["membership"], "subscribed");
    let table = e.ok(&["sub", "ls", "--list", "news"]);
    assert!(
        table.starts_with("EMAIL") && table.contains("Anna@example.org"),
        "{table}"
    );

    e.ok(&[
        "sub",
        "unsubscribe",
        "bob@example.org",
        "--list",
        "news",
        "--reason",
        "asked by phone",
    ]);
    e.ok(&["sub", "blocklist", "troll@example.net"]);
    let show = e.json(&["sub", "show", "BOB@example.org"]);
    assert_eq!(show["memberships"][0]["status"], "unsubscribed");
    let last = show["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["reason"].as_str()),
        (Some("unsubscribed"), Some("asked by phone"))
    );
    let human = e.ok(&["sub", "show", "bob@example.org"]);
    assert!(
        human.contains("history") && human.contains("asked by phone"),
        "{human}"
    );

    let news = e.json(&["list", "show", "news"]);
    assert_eq!(news["counts"]["subscribed"], 1);
    assert_eq!(news["counts"]["unsubscribed"], 1);
    assert_eq!(
        e.json(&["sub", "ls", "--status", "blocklisted"])[0]["email"],
        "troll@example.net"
    );
    assert!(
        e.fails(&["sub", "ls", "--status", "gone"])
            .contains("expected one of")
    );

    assert!(e.fails(&["list", "rm", "news"]).contains("--force"));
    e.ok(&["sub", "rm", "bob@example.org"]);
    assert!(
        e.fails(&["sub", "show", "bob@example.org"])
            .contains("no subscriber")
    );
    e.ok(&["list", "rm", "news", "--force"]);
    assert_eq!(e.json(&["list", "ls"]), serde_json::json!([]));

    let status = e.json(&["migrate", "status"]);
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["applied"] == true),
        "{status}"
    );
}

/// `sub ls --json` is what scripts read: it must not stop at the table's
/// default of 100 rows (the table's own hint sends people to --json for all).
#[test]
fn sub_ls_json_lists_every_row_unless_limited() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    let mut csv = String::from("email\n");
    for i in 0..150 {
        csv.push_str(&format!("p{i:03}@example.org\n"));
    }
    e.write("many.csv", csv.as_bytes());
    assert_eq!(import(&e, "many.csv", &[])["imported"], 150);

    let all = e.json(&["sub", "ls"]);
    assert_eq!(all.as_array().unwrap().len(), 150, "--json is complete");
    let listed = e.json(&["sub", "ls", "--list", "news"]);
    assert_eq!(listed.as_array().unwrap().len(), 150);
    assert_eq!(listed[149]["email"], "p149@example.org");
    let some = e.json(&["sub", "ls", "--limit", "10"]);
    assert_eq!(
        some.as_array().unwrap().len(),
        10,
        "an explicit --limit holds"
    );

    // The table stops at 100 by default and says so on stderr.
    let out = e.cmd().args(["sub", "ls"]).output().unwrap();
    assert!(out.status.success());
    let rows = String::from_utf8(out.stdout).unwrap().lines().count();
    assert_eq!(rows, 101, "a header and 100 rows");
    let hint = String::from_utf8(out.stderr).unwrap();
    assert!(hint.contains("showing 100 of 150"), "{hint}");
    let help = e.ok(&["sub", "ls", "--help"]);
    assert!(help.contains("every row unless"), "{help}");
}

fn import(e: &Env, file: &str, extra: &[&str]) -> Value {
    let mut args = vec!["import", file, "--list", "news"];
    args.extend_from_slice(extra);
    e.json(&args)
}

#[test]
fn import_reports_exact_counts_and_is_idempotent() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    e.ok(&["sub", "blocklist", "blocked@example.org"]);
    let csv = e.write(
        "people.csv",
        "\u{feff}Email;Name;City\nanna@example.org;Anna;Köln\nnot-an-address;X;\nbob@example.org;Bob;\nANNA@Example.org;;Bonn\nblocked@example.org;B;\n;Nobody;\n".as_bytes(),
    );
    let dry = import(&e, &csv, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        e.json(&["list", "show", "news"])["counts"]["subscribed"],
        0,
        "dry run wrote nothing"
    );

    let first = import(&e, &csv, &[]);
    assert_eq!(
        (
            first["imported"].as_u64(),
            first["updated"].as_u64(),
            first["skipped"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{first}"
    );
    let invalid: Vec<(u64, String)> = first["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["line"].as_u64().unwrap(),
                i["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        invalid.iter().map(|i| i.0).collect::<Vec<_>>(),
        [3, 7],
        "{first}"
    );
    assert!(invalid[1].1.contains("empty"), "{invalid:?}");
    assert_eq!(dry["imported"], first["imported"]);
    assert_eq!(dry["skipped"], first["skipped"]);
    assert!(first.get("dry_run").is_none());

    let anna = e.json(&["sub", "show", "anna@example.org"]);
    assert_eq!(anna["attributes"]["City"], "Bonn");
    assert_eq!(anna["name"], "Anna");
    let blocked = e.json(&["sub", "show", "blocked@example.org"]);
    assert_eq!(blocked["status"], "blocklisted");
    assert_eq!(blocked["memberships"], serde_json::json!([]));

    let again = import(&e, &csv, &[]);
    assert_eq!(
        (
            again["imported"].as_u64(),
            again["updated"].as_u64(),
            again["skipped"].as_u64()
        ),
        (Some(0), Some(3), Some(1))
    );
    assert_eq!(e.json(&["list", "show", "news"])["counts"]["subscribed"], 2);

    // Export, then import the export into another list: the same people and attributes.
    let exported = e.ok(&["export", "--list", "news"]);
    assert_eq!(
        exported.lines().next(),
        Some("email,name,City"),
        "{exported}"
    );
    e.write("export.csv", exported.as_bytes());
    e.ok(&["list", "create", "copy"]);
    let copy = e.json(&["import", "export.csv", "--list", "copy"]);
    assert_eq!(
        (
            copy["updated"].as_u64(),
            copy["invalid"].as_array().unwrap().len()
        ),
        (Some(2), 0),
        "{copy}"
    );
    let exported_copy = e.ok(&["export", "--list", "copy"]);
    assert_eq!(exported_copy, exported);

    // Who left a list is not exported by default, so importing the export
    // elsewhere cannot subscribe them again; --status all shows everyone.
    e.ok(&["sub", "unsubscribe", "anna@example.org", "--list", "news"]);
    let exported = e.ok(&["export", "--list", "news"]);
    assert!(!exported.contains("anna@example.org"), "{exported}");
    assert_eq!(exported.lines().count(), 2, "{exported}");
    let everyone = e.ok(&["export", "--list", "news", "--status", "all"]);
    assert!(everyone.contains("anna@example.org"), "{everyone}");
    assert_eq!(everyone.lines().count(), 3, "{everyone}");
}

/// Excel writes CRLF, and csv's own line count is one record late there:
/// an invalid row on line 4 was reported as "line 3" and the audit trail
/// said `p5.csv:2` for a row on line 3. Both now name the physical line,
/// also after a quoted value that spans lines and in CR-only files.
#[test]
fn import_names_physical_lines_in_crlf_files() {
    for (file, end) in [("p5.csv", "\r\n"), ("cr.csv", "\r")] {
        let e = Env::new();
        e.ok(&["list", "create", "news"]);
        let lines = [
            "email,name,note",            // 1
            "first@example.org,First,",   // 2
            "anna@example.org,Anna,",     // 3
            "not-an-address,X,",          // 4
            "",                           // 5
            "bob@example.org,Bob,\"two",  // 6
            "lines\"",                    // 7
            ",Nobody,",                   // 8
            "cleo@example.org,\"Cleo\",", // 9
        ];
        let csv = e.write(file, (lines.join(end) + end).as_bytes());
        let r = import(&e, &csv, &[]);
        let invalid: Vec<u64> = r["invalid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["line"].as_u64().unwrap())
            .collect();
        assert_eq!(invalid, [4, 8], "{file}: {r}");
        for (who, line) in [("anna", 3), ("bob", 6), ("cleo", 9)] {
            let show = e.json(&["sub", "show", &format!("{who}@example.org")]);
            let last = show["audit"].as_array().unwrap().last().unwrap().clone();
            let why = last["reason"].as_str().unwrap();
            assert!(
                why.ends_with(&format!("{file}:{line}")),
                "{file} {who}: {why}"
            );
        }
        let bob = e.json(&["sub", "show", "bob@example.org"]);
        assert_eq!(bob["attributes"]["note"], format!("two{end}lines"));
    }
}

/// One stray quote swallowed the rest of the file and the import said
/// "1 invalid row — a line break in `name`". It now stops there, keeps the
/// rows before it and names the lines the quote swallowed.
#[test]
fn import_stops_at_an_unclosed_quote_and_names_the_lines_it_swallowed() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    let mut csv =
        String::from("email,name\r\nbefore@example.org,B\r\nuu@example.org,\"unterminated\r\n");
    for i in 0..100_000 {
        csv.push_str(&format!("p{i}@example.org,P{i}\r\n"));
    }
    let file = e.write("quote.csv", csv.as_bytes());
    let out = e
        .cmd()
        .args(["import", &file, "--list", "news", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("line 3: a quote opened here is never closed; it swallowed lines 3–100003")
            && err.contains("Close the quote or remove it")
            && err.contains("up to line 2"),
        "{err}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            r["imported"].as_u64(),
            r["invalid"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0)),
        "{r}"
    );
    assert_eq!(e.json(&["list", "show", "news"])["counts"]["subscribed"], 1);
}

#[test]
fn import_bad_input_is_explained_and_loses_nothing_valid() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);

    let err = e.fails(&[
        "import",
        &e.write("nomail.csv", b"mail,name\na@example.org,A\n"),
        "--list",
        "news",
    ]);
    assert!(
        err.contains("no `email` column") && err.contains("`mail`"),
        "{err}"
    );
    let err = e.fails(&["import", &e.write("empty.csv", b""), "--list", "news"]);
    assert!(err.contains("empty"), "{err}");
    let err = e.fails(&["import", "missing.csv", "--list", "news"]);
    assert!(err.contains("cannot open missing.csv"), "{err}");
    let err = e.fails(&[
        "import",
        &e.write("ok.csv", b"email\na@example.org\n"),
        "--list",
        "nope",
    ]);
    assert!(err.contains("no list named"), "{err}");

    // Latin-1: the rows with non-UTF-8 bytes are reported, the others imported.
    let latin = e.write(
        "latin1.csv",
        b"email,name\njose@example.org,Jos\xe9\nplain@example.org,Plain\nm\xfcller@example.org,M\n",
    );
    let r = import(&e, &latin, &[]);
    assert_eq!(r["imported"], 1, "{r}");
    let inv = r["invalid"].as_array().unwrap();
    assert_eq!(
        inv.iter()
            .map(|i| i["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 4]
    );
    assert!(inv[0]["reason"].as_str().unwrap().contains("iconv"), "{r}");

    // A 10 MB single line: reported with its line number, rows around it kept.
    let mut big = b"email,name\nbefore@example.org,B\nhuge@example.org,".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10 << 20));
    big.extend_from_slice(b"\nafter@example.org,A\n");
    let r = import(&e, &e.write("big.csv", &big), &[]);
    assert_eq!(r["imported"], 2, "{r}");
    assert_eq!(r["invalid"][0]["line"], 3);
    assert!(
        r["invalid"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{r}"
    );

    // A file that is one 10 MB line without a break: not a CSV at all.
    let err = e.fails(&[
        "import",
        &e.write("oneline.csv", &vec![b'a'; 10 << 20]),
        "--list",
        "news",
    ]);
    assert!(
        err.contains("line 1") && err.contains("longer than"),
        "{err}"
    );

    let human = e.ok(&[
        "import",
        &e.write("mixed.csv", b"email\nx\ny@example.org\n"),
        "--list",
        "news",
    ]);
    assert!(
        human.contains("1 new subscriber") && human.contains("line 2:"),
        "{human}"
    );
}

#[test]
fn completions_and_help_explain() {
    let e = Env::new();
    let bash = e.ok(&["completions", "bash"]);
    assert!(
        bash.contains("rundbrief") && bash.contains("import"),
        "{}",
        &bash[..200.min(bash.len())]
    );
    let help = e.ok(&["import", "--help"]);
    assert!(
        help.contains("--resubscribe-bounced") && help.contains("idempotent")
            || help.contains("converges"),
        "{help}"
    );
    // The endpoint exists: the help must not say it "comes later".
    let bounce = e.ok(&["bounce", "--help"]);
    assert!(
        !bounce.contains("later")
            && ["serve", "ingest", "reprocess", "parse"]
                .iter()
                .all(|c| bounce.contains(c)),
        "{bounce}"
    );
    let top = e.ok(&["--help"]);
    assert!(!top.contains("comes later"), "{top}");
    assert!(
        !Path::new(&e.path("rundbrief.db")).exists(),
        "help and completions do not touch the database"
    );
}

/// A reader that stops early (`rundbrief completions powershell | head -2`)
/// ends the command quietly and successfully, like any Unix filter: no
/// panic, no backtrace, no "Broken pipe" error.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    // More than export's buffers hold, so a row's write fails too, not
    // only the final flush.
    let rows: String = (0..3000)
        .map(|i| format!("reader{i}@example.org\n"))
        .collect();
    e.write("subs.csv", format!("email\n{rows}").as_bytes());
    e.ok(&["import", "subs.csv", "--list", "news"]);
    for args in [
        &["completions", "powershell"][..],
        &["completions", "bash"],
        &["export", "--list", "news"],
        &["list", "ls", "--json"],
        // Tables and summaries, printed with println!.
        &["list", "ls"],
        &["sub", "ls", "--limit", "0"],
        &["list", "show", "news"],
    ] {
        // The reading end is closed before the command runs: its first
        // write fails with EPIPE, every time.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("rundbrief"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNDBRIEF_") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUNDBRIEF_DNS__CHECK", "false");
        let out = cmd
            .current_dir(e.dir.path())
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn logs_go_to_stderr_and_json_logs_parse() {
    let e = Env::new();
    let out = e
        .cmd()
        .args(["--log-format", "json", "list", "ls", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let first = stderr
        .lines()
        .next()
        .expect("the first run logs the migration");
    let log: Value = serde_json::from_str(first).unwrap();
    assert_eq!(log["fields"]["message"], "database migrated");
}

#[cfg(unix)]
#[test]
fn an_interrupted_import_keeps_its_batches_and_a_rerun_completes_it() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    let rows = 60_000u64;
    let mut csv = String::from("email,name\n");
    for i in 0..rows {
        csv.push_str(&format!("p{i}@example.org,P{i}\n"));
    }
    let file = e.write("many.csv", csv.as_bytes());
    let bin = assert_cmd::cargo::cargo_bin("rundbrief");
    let child = std::process::Command::new(&bin)
        .current_dir(e.dir.path())
        .env("RUNDBRIEF_DNS__CHECK", "false")
        .env("RUNDBRIEF_IMPORT__BATCH_SIZE", "50")
        .args(["import", &file, "--list", "news", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until some batches are committed, then interrupt.
    let mut seen = 0;
    for _ in 0..400 {
        seen = e.json(&["list", "show", "news"])["counts"]["subscribed"]
            .as_u64()
            .unwrap();
        if seen > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(seen > 0, "the import never committed a batch");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "expected an interrupted import, got {:?}: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("interrupted") && stderr.contains("Run the same command again"),
        "{stderr}"
    );
    let partial: Value = serde_json::from_slice(&out.stdout).unwrap();
    let saved = partial["imported"].as_u64().unwrap();
    assert!(saved > 0 && saved < rows, "{partial}");
    assert_eq!(
        e.json(&["list", "show", "news"])["counts"]["subscribed"]
            .as_u64()
            .unwrap(),
        saved,
        "reported = committed"
    );

    let rest = import(&e, &file, &[]);
    assert_eq!(
        rest["imported"].as_u64().unwrap() + rest["updated"].as_u64().unwrap(),
        rows,
        "{rest}"
    );
    assert_eq!(
        rest["updated"].as_u64().unwrap(),
        saved,
        "the rerun recognises what was saved"
    );
    assert_eq!(
        e.json(&["list", "show", "news"])["counts"]["subscribed"]
            .as_u64()
            .unwrap(),
        rows
    );
}

#[test]
fn bounce_parse_prints_the_json_contract() {
    let e = Env::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bounce/tests/fixtures");
    let dsn = fixtures.join("rfc3464/03.eml");
    let v = e.json(&["bounce", "parse", dsn.to_str().unwrap()]);
    for key in ["kind", "class", "recipients"] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["kind"], "dsn", "{v}");
    let r = &v["recipients"][0];
    for key in ["address", "status", "action", "class", "diagnostic"] {
        assert!(r.get(key).is_some(), "recipient misses {key}: {v}");
    }
    let arf = e.json(&[
        "bounce",
        "parse",
        fixtures.join("arf/11.eml").to_str().unwrap(),
    ]);
    assert_eq!(
        (arf["kind"].as_str(), arf["class"].as_str()),
        (Some("arf"), Some("complaint"))
    );
    let human = e.ok(&["bounce", "parse", dsn.to_str().unwrap()]);
    assert!(
        human.contains("kind   dsn") && human.contains("RECIPIENT"),
        "{human}"
    );
    assert!(
        e.fails(&["bounce", "parse", "nope.eml"])
            .contains("cannot open nope.eml")
    );
    assert!(
        !e.path("rundbrief.db").exists(),
        "bounce parse touches no database"
    );
}

/// Creates campaign `name` on the list `news` through the store API (the
/// delivery ledger comes with campaigns) and returns its deliveries.
fn campaign_with_deliveries(e: &Env, name: &str) -> Vec<rundbrief_store::DeliveryTarget> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("sqlite://{}?mode=rwc", e.path("rundbrief.db").display());
        let store = rundbrief_store::Store::connect(&rundbrief_store::ConnectConfig::new(url))
            .await
            .unwrap();
        let campaign = store
            .create_campaign(&rundbrief_store::NewCampaign {
                name: name.into(),
                lists: vec!["news".into()],
                subject: "s".into(),
                content: "c".into(),
                content_kind: rundbrief_core::ContentKind::Markdown,
                layout: None,
                from: None,
                relay: None,
            })
            .await
            .unwrap();
        store.materialise_deliveries(campaign.id).await.unwrap();
        let deliveries = store.deliveries(campaign.id).await.unwrap();
        store.close().await.unwrap();
        deliveries
    })
}

/// A bad rule stops the sink before it listens, and the flag and rule are
/// named once (the rule's error names them; no context repeats them).
#[test]
fn sink_rule_errors_name_the_flag_and_rule_once() {
    let e = Env::new();
    for (flag, spec) in [
        ("--reject", "x*"),
        ("--defer", "x*"),
        ("--defer-once", "x*"),
        ("--bounce", "x*"),
        ("--auto-reply", "a b"),
        ("--complain", "a b"),
    ] {
        let err = e.fails(&["sink", "--listen", "127.0.0.1:0", flag, spec]);
        let named = format!("{flag} `{spec}`: ");
        assert!(
            err.starts_with(&format!("error: {named}")) && err.matches(&named).count() == 1,
            "{err}"
        );
    }
}

#[cfg(unix)]
#[test]
fn sink_stores_the_envelope_applies_rules_and_bounces() {
    let e = Env::new();
    // The second sink plays the bounce endpoint: it receives the DSNs.
    let (mut endpoint, endpoint_port) = start_sink(&e, &["--dir", "dsns"]);
    let bounce_to = format!("127.0.0.1:{endpoint_port}");
    let (sink, port) = start_sink(
        &e,
        &[
            "--dir",
            "spool",
            "--reject",
            "*@dead.example=550 5.1.1 User unknown",
            "--bounce",
            "gone@*=5.1.1",
            "--bounce-to",
            &bounce_to,
        ],
    );
    let replies = smtp(
        port,
        "b-token@bounce.example.org",
        &["ok@example.org", "x@dead.example", "gone@example.net"],
        "Subject: hi\r\n\r\nhello",
    );
    assert!(
        replies.iter().any(|l| l.starts_with("550 5.1.1")),
        "{replies:?}"
    );
    assert!(
        replies.iter().filter(|l| l.starts_with("250")).count() >= 5,
        "{replies:?}"
    );

    std::process::Command::new("kill")
        .args(["-INT", &sink.id().to_string()])
        .status()
        .unwrap();
    let out = sink.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            summary["messages"].as_u64(),
            summary["recipients"].as_u64(),
            summary["rejected"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{summary}"
    );
    assert_eq!(summary["bounces_sent"], 1, "{summary}");

    let stored: Vec<_> = std::fs::read_dir(e.path("spool"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1);
    let text = std::fs::read_to_string(&stored[0]).unwrap();
    assert!(
        text.starts_with("Return-Path: <b-token@bounce.example.org>\r\nDelivered-To: <ok@example.org>\r\nDelivered-To: <gone@example.net>\r\n"),
        "{text}"
    );

    // The DSN reached the endpoint sink, addressed to the VERP return path, and parses as a hard bounce.
    std::process::Command::new("kill")
        .args(["-INT", &endpoint.id().to_string()])
        .status()
        .unwrap();
    assert!(endpoint.wait().unwrap().success());
    let dsns: Vec<_> = std::fs::read_dir(e.path("dsns"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(dsns.len(), 1);
    let dsn = std::fs::read_to_string(&dsns[0]).unwrap();
    assert!(
        dsn.contains("Delivered-To: <b-token@bounce.example.org>"),
        "{dsn}"
    );
    let parsed = e.json(&["bounce", "parse", dsns[0].to_str().unwrap()]);
    assert_eq!(
        (parsed["kind"].as_str(), parsed["class"].as_str()),
        (Some("dsn"), Some("hard")),
        "{parsed}"
    );
    assert_eq!(parsed["recipients"][0]["address"], "gone@example.net");
    assert_eq!(parsed["recipients"][0]["status"], "5.1.1");
}

#[test]
fn template_check_reports_positions() {
    let e = Env::new();
    e.write("good.md", b"# Hi {{default subscriber.name \"friend\"}}\n");
    e.write("bad.md", b"line one\nHi {{subscriber.nmae}}\n");
    e.ok(&["template", "check", "good.md"]);
    let err = e.fails(&["template", "check", "good.md", "bad.md"]);
    assert!(err.contains("bad.md:2:"), "{err}");
    assert!(err.contains("subscriber.nmae"), "{err}");
    let v = e
        .cmd()
        .args(["template", "check", "bad.md", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v[0]["ok"], false);
}

#[test]
fn render_needs_the_secret_and_keeps_subscriber_data_out_of_headers() {
    let e = Env::new();
    e.write(
        "issue.md",
        b"# Hello {{default subscriber.name \"friend\"}}\n\n[Unsubscribe]({{unsubscribe_url}})\n",
    );
    let args = [
        "render",
        "--content",
        "issue.md",
        "--subject",
        "News for {{subscriber.attributes.city}}",
        "--to",
        "anna@example.org",
        "--list",
        "news",
    ];
    let err = e.fails(&args);
    assert!(
        err.contains("no secret") && err.contains("rundbrief init"),
        "{err}"
    );

    e.cmd().arg("init").assert().success();
    let cfg = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
    let cfg = cfg
        .replace(
            "# from = \"Newsletter <news@example.org>\"",
            "from = \"Newsletter <news@example.org>\"",
        )
        .replace(
            "# bounce_domain = \"bounce.example.org\"",
            "bounce_domain = \"bounce.example.org\"",
        )
        .replace(
            "# public_url = \"https://news.example.org\"",
            "public_url = \"https://news.example.org\"",
        );
    e.write("rundbrief.toml", cfg.as_bytes());
    e.ok(&["list", "create", "news"]);
    // A multi-line quoted CSV value carrying a header injection attempt.
    e.write(
        "p.csv",
        b"email,name,city\nanna@example.org,Anna,\"K\xc3\xb6ln\r\nBcc: victim@example.org\"\n",
    );
    assert_eq!(import(&e, "p.csv", &[])["imported"], 1);
    let msg = e.ok(&args);
    let head = msg.split("\r\n\r\n").next().unwrap();
    assert!(
        !head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{head}"
    );
    assert!(
        head.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{head}"
    );
    assert!(
        head.contains("<mailto:unsub-") && head.contains("@bounce.example.org>"),
        "{head}"
    );
    assert!(head.contains("https://news.example.org/u/"), "{head}");
    assert!(head.contains("To: Anna <anna@example.org>"), "{head}");

    e.ok(&[&args[..], &["--out", "anna.eml"]].concat());
    assert!(
        std::fs::read(e.path("anna.eml"))
            .unwrap()
            .starts_with(b"From: Newsletter <news@example.org>\r\n")
    );
}

#[cfg(unix)]
#[test]
fn bounce_endpoint_takes_only_signed_addresses_and_stores_before_250() {
    let e = Env::new();
    let verp = endpoint_config(&e);
    let (endpoint, port) = start_endpoint(&e, &["--max-size", "4000"]);

    // Forged token, unknown local part, and a foreign domain are refused at RCPT.
    let delivery = uuid::Uuid::now_v7();
    let good = verp.address(delivery);
    let mut forged = good.clone().into_bytes();
    forged[5] = if forged[5] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    for (rcpt, want) in [
        (forged.as_str(), "550 5.1.1"),
        ("b-nosuchtoken@bounce.example.org", "550 5.1.1"),
        ("victim@example.net", "550 5.7.1"),
    ] {
        let replies = smtp(port, "", &[rcpt], "Subject: x\r\n\r\nx");
        assert!(
            replies.iter().any(|l| l.starts_with(want)),
            "{rcpt}: {replies:?}"
        );
        assert!(
            !replies
                .iter()
                .any(|l| l.starts_with("250 2.0.0") || l.contains("queued")),
            "{rcpt}: {replies:?}"
        );
    }
    // Over the size limit: 552, nothing stored.
    let big = format!("Subject: big\r\n\r\n{}", "x".repeat(5000));
    assert!(
        smtp(port, "", &[&good], &big)
            .iter()
            .any(|l| l.starts_with("552"))
    );

    // A real DSN, produced by the sink's --bounce rule for a message whose
    // return path is the VERP address, arrives, is stored and parsed.
    let (sink, sink_port) = start_sink(
        &e,
        &[
            "--bounce",
            "gone@*=5.1.1",
            "--bounce-to",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let replies = smtp(
        sink_port,
        &good,
        &["gone@example.net"],
        "Subject: newsletter\r\nMessage-ID: <m1@example.org>\r\n\r\nhello",
    );
    assert!(
        replies.iter().filter(|l| l.starts_with("250")).count() >= 3,
        "{replies:?}"
    );
    let sink_summary = stop_output(sink); // drains its DSN queue before exiting
    wait_for_parsed(&e, 1);
    let stored = e.json(&["bounce", "ls", "--state", "parsed"]);
    stop(endpoint, "-INT");
    let all = e.json(&["bounce", "ls"]);
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "only the signed DSN is stored: {all}; sink: {sink_summary}"
    );
    let b = &stored[0];
    assert_eq!(
        (b["state"].as_str(), b["kind"].as_str(), b["class"].as_str()),
        (Some("parsed"), Some("dsn"), Some("hard")),
        "{b}"
    );
    assert_eq!(
        b["delivery_id"],
        delivery.to_string(),
        "the token names the delivery"
    );
    assert_eq!(b["parsed"]["recipients"][0]["address"], "gone@example.net");
    let shown = e.json(&["bounce", "show", b["id"].as_str().unwrap(), "--raw"]);
    assert!(
        shown["raw"].as_str().unwrap().contains("multipart/report"),
        "{shown}"
    );
}

#[cfg(unix)]
#[test]
fn a_bounce_stored_before_a_crash_is_parsed_by_reprocess() {
    let e = Env::new();
    let verp = endpoint_config(&e);
    // Store only (no parse worker), then kill -9 as if the process died right after the 250.
    let (endpoint, port) = start_endpoint(&e, &["--parse-workers", "0"]);
    let dsn = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../bounce/tests/fixtures/rfc3464/03.eml"),
    )
    .unwrap();
    let dsn = dsn.replace('\n', "\r\n").replace("\r\n.", "\r\n..");
    let replies = smtp(
        port,
        "",
        &[&verp.address(uuid::Uuid::now_v7())],
        dsn.trim_end(),
    );
    assert!(
        replies
            .iter()
            .any(|l| l.starts_with("250") && l.contains("queued"))
            || replies.iter().filter(|l| l.starts_with("250")).count() >= 3,
        "{replies:?}"
    );
    stop(endpoint, "-KILL");
    let pending = e.json(&["bounce", "ls", "--state", "pending"]);
    assert_eq!(
        pending.as_array().unwrap().len(),
        1,
        "stored before the 250: {pending}"
    );
    let r = e.json(&["bounce", "reprocess"]);
    assert_eq!(r["parsed"], 1, "{r}");
    let parsed = e.json(&["bounce", "ls", "--state", "parsed"]);
    assert_eq!(parsed[0]["kind"], "dsn", "{parsed}");
    // Reprocessing everything again is idempotent.
    assert_eq!(e.json(&["bounce", "reprocess"])["parsed"], 1);
    assert_eq!(e.json(&["bounce", "ls"]).as_array().unwrap().len(), 1);
}

#[test]
fn bounce_ls_json_lists_every_message_unless_limited() {
    let e = Env::new();
    let dir = e.path("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..55 {
        std::fs::write(
            dir.join(format!("{i:02}.eml")),
            format!("From: a@example.net\r\nSubject: note {i}\r\n\r\nhello {i}\r\n"),
        )
        .unwrap();
    }
    assert_eq!(
        e.json(&["bounce", "ingest", dir.to_str().unwrap()])["stored"],
        55
    );
    let all = e.json(&["bounce", "ls"]);
    assert_eq!(all.as_array().unwrap().len(), 55, "--json is complete");
    let some = e.json(&["bounce", "ls", "--limit", "3"]);
    assert_eq!(
        some.as_array().unwrap().len(),
        3,
        "an explicit --limit holds"
    );
    // The table shows the newest 50 and says so on stderr.
    let out = e.cmd().args(["bounce", "ls"]).output().unwrap();
    assert!(out.status.success());
    let rows = String::from_utf8(out.stdout).unwrap().lines().count();
    assert_eq!(rows, 51, "a header and 50 rows");
    let hint = String::from_utf8(out.stderr).unwrap();
    assert!(hint.contains("the newest 50"), "{hint}");
}

#[test]
fn bounce_ingest_stores_and_parses_files() {
    let e = Env::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bounce/tests/fixtures/arf");
    let r = e.json(&["bounce", "ingest", dir.to_str().unwrap()]);
    let n = r["stored"].as_u64().unwrap();
    let emls = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count();
    assert_eq!(n, emls as u64, "only the .eml files of a directory: {r}");
    assert_eq!(r["parsed"], n);
    let complaints = e.json(&["bounce", "ls", "--class", "complaint"]);
    assert_eq!(
        complaints.as_array().unwrap().len() as u64,
        n,
        "{complaints}"
    );
    assert!(e.fails(&["bounce", "ingest"]).contains("nothing to ingest"));
}

#[cfg(unix)]
#[test]
fn a_verified_hard_bounce_prunes_only_its_own_subscriber() {
    let e = Env::new();
    let verp = endpoint_config(&e);
    e.ok(&["list", "create", "news"]);
    for who in ["anna", "bob", "cleo"] {
        e.ok(&[
            "sub",
            "add",
            &format!("{who}@example.org"),
            "--list",
            "news",
        ]);
    }
    // The delivery ledger comes with campaigns; here the store API makes one.
    let deliveries = campaign_with_deliveries(&e, "issue-1");
    assert_eq!(deliveries.len(), 3);
    let id_of = |who: &str| {
        deliveries
            .iter()
            .find(|d| d.email.starts_with(who))
            .unwrap()
            .delivery_id
    };
    assert!(
        e.fails(&["list", "rm", "news"]).contains("issue-1"),
        "campaigns keep their lists"
    );

    let (endpoint, port) = start_endpoint(&e, &[]);
    let bounce_to = format!("127.0.0.1:{port}");
    let (sink, sink_port) = start_sink(
        &e,
        &[
            "--bounce",
            "anna@*=5.1.1",
            "--bounce",
            "bob@*=5.7.1",
            "--bounce",
            "cleo@*=5.1.1",
            "--bounce-to",
            &bounce_to,
        ],
    );
    // anna: hard. bob: the receiver blocked us. A hard bounce for cleo sent to
    // bob's return path: a forgery as far as bob's delivery is concerned.
    for (from, to) in [
        (verp.address(id_of("anna")), "anna@example.org"),
        (verp.address(id_of("bob")), "bob@example.org"),
        (verp.address(id_of("bob")), "cleo@example.org"),
    ] {
        let replies = smtp(sink_port, &from, &[to], "Subject: issue 1\r\n\r\nhello");
        assert!(
            replies.iter().filter(|l| l.starts_with("250")).count() >= 3,
            "{replies:?}"
        );
    }
    stop(sink, "-INT");
    wait_for_parsed(&e, 3);
    stop(endpoint, "-INT");
    assert_eq!(
        e.json(&["bounce", "ls", "--state", "parsed"])
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let status = |who: &str| {
        e.json(&["sub", "show", &format!("{who}@example.org")])["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("anna"), "bounced");
    assert_eq!(status("bob"), "active", "a block never prunes");
    assert_eq!(
        status("cleo"),
        "active",
        "a report at bob's token cannot prune cleo"
    );
    let anna = e.json(&["sub", "show", "anna@example.org"]);
    let last = anna["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("bounced"), Some("bounce")),
        "{anna}"
    );
    let why = last["reason"].as_str().unwrap();
    assert!(
        why.contains("hard 5.1.1") && why.contains("score 5.0"),
        "{why}"
    );

    // The operator undoes it.
    e.ok(&["sub", "restore", "anna@example.org"]);
    assert_eq!(status("anna"), "active");
}

#[cfg(unix)]
#[test]
fn smtp_check_walks_the_dialogue_and_explains_failures() {
    let e = Env::new();
    let (sink, port) = start_sink(&e, &["--reject", "nobody@*=550 5.1.1 User unknown"]);
    let target = format!("127.0.0.1:{port}");
    let steps = |v: &Value| {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    let ok = e.json(&["smtp", "check", &target, "--to", "someone@example.org"]);
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(
        steps(&ok),
        ["dns", "connect", "banner", "ehlo", "mail", "rcpt", "quit"],
        "{ok}"
    );
    for s in ok["steps"].as_array().unwrap() {
        assert!(
            s["ms"].is_u64() && s["hint"].is_string() && s["reply"].is_string(),
            "{s}"
        );
    }
    assert!(
        ok["steps"][3]["reply"]
            .as_str()
            .unwrap()
            .contains("STARTTLS"),
        "EHLO lists the extensions: {ok}"
    );

    // STARTTLS with the sink's self-signed certificate: refused with a hint, accepted with --insecure.
    let out = e
        .cmd()
        .args(["smtp", "check", &target, "--starttls", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tls = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "starttls")
        .unwrap();
    assert_eq!(tls["ok"], false);
    assert!(
        tls["hint"].as_str().unwrap().contains("self-signed"),
        "{tls}"
    );
    let insecure = e.json(&["smtp", "check", &target, "--starttls", "--insecure"]);
    assert_eq!(
        steps(&insecure),
        [
            "dns", "connect", "banner", "ehlo", "starttls", "ehlo", "mail", "quit"
        ],
        "{insecure}"
    );

    // A refused recipient: rcpt fails with the server's reply, quit still runs.
    let out = e
        .cmd()
        .args([
            "smtp",
            "check",
            &target,
            "--to",
            "nobody@example.org",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rcpt = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "rcpt")
        .unwrap();
    assert!(
        rcpt["reply"].as_str().unwrap().starts_with("550 5.1.1"),
        "{rcpt}"
    );
    assert_eq!(steps(&v).last().map(String::as_str), Some("quit"));
    stop(sink, "-INT");

    // A closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = e
        .cmd()
        .args(["smtp", "check", &closed.to_string(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(steps(&v), ["dns", "connect"]);
    assert!(
        v["steps"][1]["hint"]
            .as_str()
            .unwrap()
            .contains("nothing listens"),
        "{v}"
    );

    // A server that accepts but never greets.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let holder = std::thread::spawn(move || {
        silent
            .accept()
            .map(|(_conn, _)| std::thread::sleep(std::time::Duration::from_secs(3)))
            .ok()
    });
    let out = e
        .cmd()
        .args(["smtp", "check", &addr, "--timeout", "1", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let banner = &v["steps"][2];
    assert_eq!(
        (banner["step"].as_str(), banner["ok"].as_bool()),
        (Some("banner"), Some(false)),
        "{v}"
    );
    assert!(banner["hint"].as_str().unwrap().contains("--tls"), "{v}");
    let _ = holder.join();
}

#[cfg(unix)]
#[test]
fn a_campaign_is_sent_once_and_its_dead_addresses_are_pruned() {
    let e = Env::new();
    let verp = endpoint_config(&e);
    sending_config(&e);
    e.ok(&["list", "create", "news"]);
    e.write(
        "people.csv",
        b"email,name\nok1@example.org,Ada\nok2@example.org,Bea\ndead1@example.org,Dan\ngone1@example.org,Gus\nblk1@example.org,Bo\n",
    );
    assert_eq!(import(&e, "people.csv", &[])["imported"], 5);
    e.write(
        "issue.md",
        b"# Hello {{default subscriber.name \"friend\"}}\n\nNews.\n",
    );
    e.ok(&[
        "campaign",
        "create",
        "issue-1",
        "--list",
        "news",
        "--subject",
        "Hi {{subscriber.name}}",
        "--content",
        "issue.md",
    ]);

    let (endpoint, endpoint_port) = start_endpoint(&e, &[]);
    let (sink, sink_port) = start_sink(
        &e,
        &[
            "--dir",
            "spool",
            "--reject",
            "dead*=550 5.1.1 User unknown",
            "--reject",
            "blk*=550 5.7.1 Message rejected due to local policy",
            "--bounce",
            "gone*=5.1.1",
            "--bounce-to",
            &format!("127.0.0.1:{endpoint_port}"),
        ],
    );
    // A preview before sending: the exact message, personalised.
    let preview = e.ok(&["campaign", "preview", "issue-1", "--to", "ok1@example.org"]);
    assert!(
        preview.contains("Subject: Hi Ada\r\n") && preview.contains("To: Ada <ok1@example.org>"),
        "{preview}"
    );
    assert!(
        e.fails(&[
            "campaign",
            "preview",
            "issue-1",
            "--to",
            "stranger@example.org"
        ])
        .contains("not a subscriber")
    );
    let relay = format!("smtp://127.0.0.1:{sink_port}");
    let sent = e.json(&["campaign", "send", "issue-1", "--relay", &relay]);
    // The DSN for gone1 may already be back: it moves one from sent to bounced.
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        (
            n(&sent, "total"),
            n(&sent, "rejected"),
            n(&sent, "sent") + n(&sent, "bounced")
        ),
        (5, 2, 5),
        "{sent}"
    );
    assert_eq!(sent["state"], "finished", "{sent}");

    // A finished campaign is not sent again.
    assert!(
        e.fails(&["campaign", "send", "issue-1", "--relay", &relay])
            .contains("finished")
    );
    stop(sink, "-INT");
    wait_for_parsed(&e, 1);
    stop(endpoint, "-INT");

    // Three messages stored, each with its own verifiable return path and personalisation.
    let mut files: Vec<_> = std::fs::read_dir(e.path("spool"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3);
    let mut ids = std::collections::HashSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let rp = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("Return-Path: <")
            .trim_end_matches('>');
        ids.insert(
            verp.delivery(rp)
                .unwrap_or_else(|err| panic!("{rp}: {err}")),
        );
        let to = text.lines().nth(1).unwrap();
        let name = match to {
            "Delivered-To: <ok1@example.org>" => "Ada",
            "Delivered-To: <ok2@example.org>" => "Bea",
            "Delivered-To: <gone1@example.org>" => "Gus",
            other => panic!("unexpected {other}"),
        };
        assert!(text.contains(&format!("Subject: Hi {name}")), "{text}");
    }
    assert_eq!(ids.len(), 3, "distinct deliveries");
    // After the send, the preview uses the real delivery: the same Message-ID as the stored message.
    let ada = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .find(|t| t.contains("<ok1@example.org>"))
        .unwrap();
    let mid = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Message-ID:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        mid(&e.ok(&["campaign", "preview", "issue-1", "--to", "ok1@example.org"])),
        mid(&ada)
    );

    let status = |who: &str| {
        e.json(&["sub", "show", &format!("{who}@example.org")])["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("dead1"), "bounced", "5.1.1 at RCPT prunes");
    assert_eq!(
        status("gone1"),
        "bounced",
        "a DSN at its VERP address prunes"
    );
    assert_eq!(status("blk1"), "active", "5.7.1 is a block: nobody pruned");
    assert_eq!(
        (status("ok1"), status("ok2")),
        ("active".into(), "active".into())
    );
    let s = e.json(&["campaign", "status", "issue-1"]);
    for key in [
        "state", "total", "sent", "deferred", "failed", "bounced", "pending",
    ] {
        assert!(s.get(key).is_some(), "campaign status misses {key}: {s}");
    }
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["bounced"].as_u64(),
            s["rejected"].as_u64(),
            s["pending"].as_u64()
        ),
        (Some(2), Some(3), Some(2), Some(0)),
        "{s}"
    );
}

#[test]
fn an_ingested_dsn_finds_its_delivery_by_envid_or_message_id() {
    let e = Env::new();
    endpoint_config(&e);
    e.ok(&["list", "create", "news"]);
    for who in ["anna", "bob"] {
        e.ok(&[
            "sub",
            "add",
            &format!("{who}@example.org"),
            "--list",
            "news",
        ]);
    }
    let deliveries = campaign_with_deliveries(&e, "c");
    let id_of = |who: &str| {
        deliveries
            .iter()
            .find(|d| d.email.starts_with(who))
            .unwrap()
            .delivery_id
    };
    let dsn = |who: &str, envid: &str, message_id: &str| {
        format!(
            "From: MAILER-DAEMON@mx.example.org\r\nTo: postmaster@bounce.example.org\r\nSubject: Undelivered Mail\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
             --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n{envid}\r\n\
             Final-Recipient: rfc822; {who}@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n\
             --b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{message_id}@example.org>\r\nSubject: Hi\r\n\r\n--b--\r\n"
        )
    };
    // anna's by ENVID, bob's by the returned Message-ID; a third names anna but carries bob's id.
    e.write(
        "anna.eml",
        dsn(
            "anna",
            &format!("Original-Envelope-Id: {}", id_of("anna")),
            "other",
        )
        .as_bytes(),
    );
    e.write(
        "bob.eml",
        dsn("bob", "", &id_of("bob").simple().to_string()).as_bytes(),
    );
    let r = e.json(&["bounce", "ingest", "anna.eml", "bob.eml"]);
    assert_eq!(r["parsed"], 2, "{r}");
    let status = |who: &str| {
        e.json(&["sub", "show", &format!("{who}@example.org")])["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (status("anna"), status("bob")),
        ("bounced".into(), "bounced".into())
    );

    e.ok(&["sub", "restore", "anna@example.org"]);
    e.write(
        "forged.eml",
        dsn(
            "anna",
            &format!("Original-Envelope-Id: {}", id_of("bob")),
            "x",
        )
        .as_bytes(),
    );
    e.ok(&["bounce", "ingest", "forged.eml"]);
    assert_eq!(
        status("anna"),
        "active",
        "a report naming anna under bob's delivery changes nothing"
    );
}

/// Turns bounce.auto_prune off in the endpoint configuration: bounces are
/// scored, and `rundbrief clean` prunes.
fn auto_prune_off(e: &Env) {
    let cfg = std::fs::read_to_string(e.path("rundbrief.toml"))
        .unwrap()
        .replace("auto_prune = true", "auto_prune = false");
    assert!(cfg.contains("auto_prune = false"), "{cfg}");
    e.write("rundbrief.toml", cfg.as_bytes());
}

/// Ingests an RFC 3464 DSN reporting `status` for `email`, matched to
/// `delivery` through its Original-Envelope-Id (as `bounce ingest` does).
fn ingest_dsn(e: &Env, delivery: uuid::Uuid, email: &str, status: &str) {
    let file = format!("dsn-{}.eml", uuid::Uuid::now_v7());
    e.write(
        &file,
        format!(
            "From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\n\
             Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\nOriginal-Envelope-Id: {delivery}\r\n\r\n\
             Final-Recipient: rfc822; {email}\r\nAction: failed\r\nStatus: {status}\r\n\r\n--b--\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(e.json(&["bounce", "ingest", &file])["parsed"], 1);
}

#[test]
fn with_auto_prune_off_clean_prunes_what_the_scores_say() {
    let e = Env::new();
    endpoint_config(&e);
    auto_prune_off(&e);
    e.ok(&["list", "create", "news"]);
    e.ok(&["sub", "add", "anna@example.org", "--list", "news"]);
    let delivery = campaign_with_deliveries(&e, "c")[0].delivery_id;
    ingest_dsn(&e, delivery, "anna@example.org", "5.1.1");
    let hard = e.json(&["bounce", "ls"])[0].clone();
    assert_eq!(hard["class"], "hard", "{hard}");
    // A block afterwards does not count, so it is not the bounce behind the score.
    ingest_dsn(&e, delivery, "anna@example.org", "5.7.1");
    assert_eq!(e.json(&["bounce", "ls"])[0]["class"], "block");
    let status = || {
        e.json(&["sub", "show", "anna@example.org"])["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status(), "active", "auto_prune is off");
    let dry = e.json(&["clean", "--dry-run"]);
    assert_eq!(dry["subscribers"][0]["email"], "anna@example.org", "{dry}");
    let behind = dry["subscribers"][0]["last_bounce"].as_str().unwrap();
    assert!(
        behind.starts_with(&format!(
            "bounce {}: hard 5.1.1",
            hard["id"].as_str().unwrap()
        )),
        "{dry}"
    );
    assert_eq!(status(), "active", "a dry run changes nothing");
    let done = e.json(&["clean"]);
    assert_eq!(done["pruned"], 1, "{done}");
    assert_eq!(status(), "bounced");
    let last = e.json(&["sub", "show", "anna@example.org"])["audit"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    // Like the endpoint's own prune, it names the bounce: id, class,
    // status, rule, score.
    let rule = hard["parsed"]["recipients"][0]["rule"].as_str().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("bounced"), Some("cli")),
        "{last}"
    );
    assert_eq!(
        last["reason"].as_str().unwrap(),
        format!(
            "clean: bounce score 5.0 >= threshold 5.0; last counted: bounce {}: hard 5.1.1 (rule {rule}, score 5.0)",
            hard["id"].as_str().unwrap()
        ),
        "{last}"
    );
    assert_eq!(
        e.json(&["clean", "--dry-run"])["subscribers"],
        serde_json::json!([]),
        "pruned ones are not listed again"
    );
}

/// `clean --dry-run --json` said `"pruned": 0` while listing whom it would
/// prune; like `import --dry-run --json`, it reports what would be done.
#[test]
fn clean_dry_run_json_counts_whom_it_would_prune() {
    let e = Env::new();
    endpoint_config(&e);
    auto_prune_off(&e);
    e.ok(&["list", "create", "news"]);
    for who in ["anna", "bob", "cleo", "dora"] {
        e.ok(&[
            "sub",
            "add",
            &format!("{who}@example.org"),
            "--list",
            "news",
        ]);
    }
    for d in campaign_with_deliveries(&e, "c") {
        if !d.email.starts_with("dora") {
            ingest_dsn(&e, d.delivery_id, &d.email, "5.1.1");
        }
    }
    let text = e.ok(&["clean", "--dry-run"]);
    assert!(text.contains("3 subscriber(s) would be pruned"), "{text}");
    let dry = e.json(&["clean", "--dry-run"]);
    assert_eq!(
        (&dry["dry_run"], &dry["pruned"]),
        (&serde_json::json!(true), &serde_json::json!(3)),
        "{dry}"
    );
    assert_eq!(dry["subscribers"].as_array().unwrap().len(), 3, "{dry}");
    assert_eq!(
        e.json(&["sub", "ls", "--status", "active"])
            .as_array()
            .unwrap()
            .len(),
        4,
        "a dry run prunes nobody"
    );
    let done = e.json(&["clean"]);
    assert_eq!(
        (&done["dry_run"], &done["pruned"]),
        (&serde_json::json!(false), &serde_json::json!(3)),
        "{done}"
    );
    let active = e.json(&["sub", "ls", "--status", "active"]);
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    assert_eq!(active[0]["email"], "dora@example.org");
    let again = e.json(&["clean", "--dry-run"]);
    assert_eq!(again["pruned"], 0, "{again}");
}

#[cfg(unix)]
#[test]
fn pause_and_resume_send_everybody_exactly_once() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    e.ok(&["list", "create", "news"]);
    let mut csv = String::from("email\n");
    for i in 0..30 {
        csv.push_str(&format!("r{i:02}@example.org\n"));
    }
    e.write("people.csv", csv.as_bytes());
    e.ok(&["import", "people.csv", "--list", "news"]);
    e.write("issue.md", b"Hello\n");
    e.ok(&[
        "campaign",
        "create",
        "slow",
        "--list",
        "news",
        "--subject",
        "Hi",
        "--content",
        "issue.md",
    ]);
    assert!(
        e.fails(&["campaign", "pause", "slow"])
            .contains("is draft; it cannot become paused")
    );

    let (sink, port) = start_sink(&e, &["--dir", "spool", "--latency", "20"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let sender = std::process::Command::new(assert_cmd::cargo::cargo_bin("rundbrief"))
        .current_dir(e.dir.path())
        .env("RUNDBRIEF_DNS__CHECK", "false")
        .args([
            "campaign", "send", "slow", "--relay", &relay, "--pool", "1", "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sent = || {
        e.json(&["campaign", "status", "slow"])["sent"]
            .as_u64()
            .unwrap()
    };
    for _ in 0..400 {
        if sent() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    e.ok(&["campaign", "pause", "slow"]);
    let out = sender.wait_with_output().unwrap();
    assert!(out.status.success());
    let paused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paused["state"], "paused", "{paused}");
    let at_pause = paused["sent"].as_u64().unwrap();
    assert!(at_pause > 0 && at_pause < 30, "{paused}");
    assert!(
        e.fails(&["campaign", "send", "slow", "--relay", &relay])
            .contains("campaign resume")
    );

    let done = e.json(&[
        "campaign", "resume", "slow", "--relay", &relay, "--pool", "4",
    ]);
    assert_eq!(
        (done["state"].as_str(), done["sent"].as_u64()),
        (Some("finished"), Some(30)),
        "{done}"
    );
    stop(sink, "-INT");
    let mut rcpts: Vec<String> = std::fs::read_dir(e.path("spool"))
        .unwrap()
        .map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect();
    rcpts.sort();
    rcpts.dedup();
    assert_eq!(rcpts.len(), 30, "everybody once");
    assert_eq!(
        std::fs::read_dir(e.path("spool")).unwrap().count(),
        30,
        "nobody twice"
    );
    assert!(
        e.fails(&["campaign", "resume", "slow"])
            .contains("finished")
    );
    e.ok(&[
        "campaign",
        "create",
        "other",
        "--list",
        "news",
        "--subject",
        "Hi",
        "--content",
        "issue.md",
    ]);
    e.ok(&["campaign", "cancel", "other"]);
    assert!(
        e.fails(&["campaign", "send", "other", "--relay", &relay])
            .contains("cancelled")
    );
}

#[cfg(unix)]
#[test]
fn a_complaint_at_the_abuse_address_unsubscribes_the_complainer() {
    let e = Env::new();
    endpoint_config(&e);
    let cfg = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
    e.write(
        "rundbrief.toml",
        cfg.replace(
            "# abuse_address = \"fbl@bounce.example.org\"",
            "abuse_address = \"fbl@bounce.example.org\"",
        )
        .as_bytes(),
    );
    e.ok(&["list", "create", "news"]);
    e.ok(&["sub", "add", "anna@example.org", "--list", "news"]);
    let delivery = campaign_with_deliveries(&e, "c")[0].delivery_id;
    let (endpoint, port) = start_endpoint(&e, &[]);
    let arf = format!(
        "From: feedback@provider.example\r\nTo: fbl@bounce.example.org\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n\
         --b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: Provider/1.0\r\nVersion: 1\r\n\
         Original-Rcpt-To: anna@example.org\r\n\r\n\
         --b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@example.org\r\nTo: anna@example.org\r\n\
         Message-ID: <{}@example.org>\r\nSubject: Hi\r\n\r\n--b--",
        delivery.simple()
    );
    let replies = smtp(port, "", &["FBL@bounce.example.org"], &arf);
    assert!(
        replies.iter().filter(|l| l.starts_with("250")).count() >= 3,
        "{replies:?}"
    );
    let other = smtp(
        port,
        "",
        &["abuse@bounce.example.org"],
        "Subject: x\r\n\r\nx",
    );
    assert!(
        other.iter().any(|l| l.starts_with("550 5.1.1")),
        "only the configured address: {other:?}"
    );
    stop(endpoint, "-INT");
    let anna = e.json(&["sub", "show", "anna@example.org"]);
    assert_eq!(anna["status"], "unsubscribed", "{anna}");
    let last = anna["audit"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["reason"].as_str().unwrap().starts_with("complaint:"),
        "{last}"
    );
    assert_eq!(
        e.json(&["bounce", "ls", "--class", "complaint"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A list `news` of `n` subscribers r000@example.org… and a draft campaign `c`.
#[cfg(unix)]
fn news_campaign(e: &Env, n: usize, extra_env: &[(&str, &str)]) {
    let run = |args: &[&str]| {
        let out = e
            .cmd()
            .envs(extra_env.iter().copied())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["list", "create", "news"]);
    let mut csv = String::from("email\n");
    for i in 0..n {
        csv.push_str(&format!("r{i:03}@example.org\n"));
    }
    e.write("people.csv", csv.as_bytes());
    run(&["import", "people.csv", "--list", "news"]);
    e.write("issue.md", b"Hello\n");
    run(&[
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
}

/// In-flight window of `campaign send --pool P`: 2P sends in flight, plus
/// finished ones not yet recorded (at most 2 × 64: one group being written,
/// one waiting; see docs/architecture.md and `RunConfig::unrecorded_window`).
#[cfg(unix)]
fn in_flight_window(pool: usize) -> usize {
    2 * pool + 2 * 64
}

#[cfg(unix)]
#[test]
fn a_send_killed_mid_campaign_is_finished_by_the_next_with_duplicates_inside_the_window() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    news_campaign(&e, 200, &[]);
    let (sink, port) = start_sink(&e, &["--dir", "spool", "--latency", "40"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("rundbrief"))
        .current_dir(e.dir.path())
        .env("RUNDBRIEF_DNS__CHECK", "false")
        .env("RUNDBRIEF_SENDING__LEASE_SECS", "1")
        .args(["campaign", "send", "c", "--relay", &relay, "--pool", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if spool_recipients(&e.path("spool")).len() >= 20 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    first.kill().unwrap(); // SIGKILL: no chance to record or release anything
    first.wait().unwrap();
    let before = spool_recipients(&e.path("spool")).len();
    assert!(
        (20..200).contains(&before),
        "killed mid-campaign after {before}"
    );

    let out = e
        .cmd()
        .env("RUNDBRIEF_SENDING__LEASE_SECS", "1")
        .args([
            "campaign", "send", "c", "--relay", &relay, "--pool", "2", "--wait", "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (done["state"].as_str(), done["sent"].as_u64()),
        (Some("finished"), Some(200)),
        "{done}"
    );
    stop(sink, "-INT");
    let all = spool_recipients(&e.path("spool"));
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 200, "every recipient got the message");
    let duplicates = all.len() - unique.len();
    eprintln!("duplicates after SIGKILL: {duplicates}");
    assert!(
        duplicates <= in_flight_window(2),
        "{duplicates} duplicates > in-flight window {}",
        in_flight_window(2)
    );
}

#[cfg(unix)]
#[test]
fn two_workers_split_a_campaign_without_duplicates() {
    // On the configured PostgreSQL (FOR UPDATE SKIP LOCKED), else SQLite.
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    let mut db_env: Vec<(String, String)> = Vec::new();
    if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
        db_env.push(("DATABASE_URL".into(), url));
        db_env.push((
            "RUNDBRIEF_DATABASE__SCHEMA".into(),
            format!("t_{}", uuid::Uuid::now_v7().simple()),
        ));
    }
    let envs: Vec<(&str, &str)> = db_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    news_campaign(&e, 200, &envs);
    let (sink, port) = start_sink(&e, &["--dir", "spool", "--latency", "20"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("rundbrief"));
            c.current_dir(e.dir.path())
                .env("RUNDBRIEF_DNS__CHECK", "false")
                .envs(envs.iter().copied())
                .args([
                    "campaign", "send", "c", "--relay", &relay, "--pool", "2", "--wait", "--json",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut done_here = Vec::new();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        done_here.push(v["done_here"].as_u64().unwrap());
    }
    stop(sink, "-INT");
    let all = spool_recipients(&e.path("spool"));
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 200, "union = every recipient");
    assert_eq!(all.len(), 200, "no crash, so no duplicate at all");
    assert_eq!(done_here.iter().sum::<u64>(), 200, "{done_here:?}");
    assert!(
        done_here.iter().all(|n| *n > 0),
        "both workers sent: {done_here:?}"
    );
}

/// `campaign create` and `edit` refuse what would only fail at send time, or
/// later: an empty subject, a From that is no address, a name with `@` (the
/// separator of recurring runs), and an edit that changes nothing.
#[test]
fn campaign_create_and_edit_refuse_bad_input_when_it_is_given() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    e.write("issue.md", b"Hello\n");
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "campaign",
            "create",
            name,
            "--list",
            "news",
            "--content",
            "issue.md",
        ];
        args.extend_from_slice(extra);
        e.fails(&args)
    };
    let err = create("c", &["--subject", "  "]);
    assert!(err.contains("the subject is empty"), "{err}");
    let err = create("c", &["--subject", "Hi", "--from", "not an address"]);
    assert!(err.contains("not an address"), "{err}");
    let err = create("bad name@x", &["--subject", "Hi"]);
    assert!(err.contains("no @"), "{err}");
    // A subject is one line (#21): a line break would show as one to readers.
    let err = create("c", &["--subject", "Hello\r\nBcc: x@example.org"]);
    assert!(err.contains("line break"), "{err}");
    assert!(
        e.json(&["campaign", "ls"]).as_array().unwrap().is_empty(),
        "nothing stored"
    );
    e.ok(&[
        "campaign",
        "create",
        "c",
        "--list",
        "news",
        "--content",
        "issue.md",
        "--subject",
        "Hi",
        "--from",
        "News <news@example.org>",
    ]);
    let err = e.fails(&["campaign", "edit", "c"]);
    assert!(err.contains("nothing to change"), "{err}");
    let err = e.fails(&["campaign", "edit", "c", "--subject", ""]);
    assert!(err.contains("the subject is empty"), "{err}");
}

/// Scheduling again keeps the zone and the window unless given (`--window
/// none` removes it), and `unschedule` takes a scheduled campaign back to
/// draft so it can be edited.
#[test]
fn rescheduling_keeps_zone_and_window_and_unschedule_allows_edits() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    e.ok(&["list", "create", "news"]);
    e.write("issue.md", b"Hello\n");
    e.ok(&[
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
    e.ok(&[
        "campaign",
        "schedule",
        "c",
        "--at",
        "2031-01-15 09:00",
        "--tz",
        "Europe/Berlin",
        "--window",
        "08:00-20:00",
    ]);
    let said = e.ok(&["campaign", "schedule", "c", "--at", "2031-01-16 09:00"]);
    assert!(said.contains("08:00-20:00 Europe/Berlin (kept"), "{said}");
    // Shown on the zone's wall clock, to the minute.
    let shown = e.ok(&["campaign", "show", "c"]);
    assert!(
        shown.contains("once at 2031-01-16 09:00 CET (Europe/Berlin)")
            && shown.contains("next run  2031-01-16 09:00 CET"),
        "{shown}"
    );
    let s = e.json(&["campaign", "show", "c"])["schedule"].clone();
    assert_eq!(
        (
            s["tz"].as_str(),
            s["window_start"].as_str(),
            s["send_at"].as_str()
        ),
        (
            Some("Europe/Berlin"),
            Some("08:00"),
            Some("2031-01-16T08:00:00Z")
        ),
        "{s}"
    );
    e.ok(&[
        "campaign",
        "schedule",
        "c",
        "--at",
        "2031-01-16 09:00",
        "--window",
        "none",
    ]);
    let s = e.json(&["campaign", "show", "c"])["schedule"].clone();
    assert!(s["window_start"].is_null(), "{s}");
    assert!(
        e.fails(&["campaign", "edit", "c", "--subject", "New"])
            .contains("scheduled")
    );
    e.ok(&["campaign", "unschedule", "c"]);
    e.ok(&["campaign", "edit", "c", "--subject", "New"]);
    let c = e.json(&["campaign", "show", "c"]);
    assert_eq!(
        (c["state"].as_str(), c["subject"].as_str()),
        (Some("draft"), Some("New")),
        "{c}"
    );
}

/// `campaign resume` returns like `send` when only later retries are left
/// (it used to wait for them, up to the max age: days); `--wait` stays.
#[cfg(unix)]
#[test]
fn resume_returns_when_only_later_retries_are_left() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    news_campaign(&e, 4, &[]);
    let (sink, port) = start_sink(&e, &["--defer", "r000@*=451 4.7.1 Try later"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let v = e.json(&["campaign", "send", "c", "--relay", &relay]);
    assert_eq!(
        (v["sent"].as_u64(), v["deferred"].as_u64()),
        (Some(3), Some(1)),
        "{v}"
    );
    e.ok(&["campaign", "pause", "c"]);
    let mut resume = std::process::Command::new(assert_cmd::cargo::cargo_bin("rundbrief"))
        .current_dir(e.dir.path())
        .env("RUNDBRIEF_DNS__CHECK", "false")
        .env("RUNDBRIEF_SENDING__RETRY_BASE_SECS", "600")
        .args(["campaign", "resume", "c", "--relay", &relay, "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut returned = false;
    for _ in 0..200 {
        if resume.try_wait().unwrap().is_some() {
            returned = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !returned {
        let _ = resume.kill();
    }
    let out = resume.wait_with_output().unwrap();
    stop(sink, "-INT");
    assert!(returned, "resume waited for a later retry");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["deferred"].as_u64()),
        (Some("running"), Some(1)),
        "{v}"
    );
    // What a cancelled campaign leaves is never sent, and says so.
    e.ok(&["campaign", "cancel", "c"]);
    let status = e.ok(&["campaign", "status", "c"]);
    assert!(status.contains("never sent (cancelled)"), "{status}");
}

#[cfg(unix)]
#[test]
fn deferred_past_max_age_fail_and_retry_failed_sends_only_them() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    news_campaign(&e, 12, &[]);
    let (sink, port) = start_sink(
        &e,
        &[
            "--defer",
            "r000@*=451 4.7.1 Try later",
            "--defer",
            "r001@*=451 4.7.1 Try later",
            "--defer",
            "r002@*=451 4.7.1 Try later",
        ],
    );
    let relay = format!("smtp://127.0.0.1:{port}");
    let out = e
        .cmd()
        .env("RUNDBRIEF_SENDING__RETRY_BASE_SECS", "1")
        .env("RUNDBRIEF_SENDING__MAX_AGE_SECS", "1")
        .args([
            "campaign", "send", "c", "--relay", &relay, "--wait", "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            v["state"].as_str(),
            v["sent"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some("finished"), Some(9), Some(3)),
        "{v}"
    );
    stop(sink, "-INT");
    let (sink, port) = start_sink(&e, &["--dir", "spool2"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let v = e.json(&["campaign", "retry-failed", "c", "--send", "--relay", &relay]);
    assert_eq!(
        (
            v["retried"].as_u64(),
            v["sent"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some(3), Some(12), Some(0)),
        "{v}"
    );
    stop(sink, "-INT");
    let mut got = spool_recipients(&e.path("spool2"));
    got.sort();
    assert_eq!(
        got,
        ["r000", "r001", "r002"].map(|r| format!("Delivered-To: <{r}@example.org>")),
        "only the failed ones again"
    );
    assert_eq!(e.json(&["campaign", "status", "c"])["state"], "finished");
}

#[cfg(unix)]
#[test]
fn serve_starts_a_due_campaign_exports_metrics_and_drains_on_sigterm() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    news_campaign(&e, 25, &[]);
    // Schedules are validated in their time zone.
    assert!(
        e.fails(&[
            "campaign",
            "schedule",
            "c",
            "--at",
            "2026-03-29 02:30",
            "--tz",
            "Europe/Berlin"
        ])
        .contains("does not exist")
    );
    assert!(
        e.fails(&["campaign", "schedule", "c", "--cron", "0 9 * * XYZ"])
            .contains("cron")
    );
    let weekly = e.json(&[
        "campaign",
        "schedule",
        "c",
        "--cron",
        "0 9 * * TUE",
        "--tz",
        "Europe/Berlin",
        "--window",
        "08:00-20:00",
    ]);
    assert_eq!(weekly["state"], "scheduled");
    let show = e.json(&["campaign", "show", "c"]);
    assert_eq!(show["schedule"]["cron"], "0 9 * * TUE", "{show}");
    assert_eq!(show["schedule"]["window_start"], "08:00", "{show}");
    assert!(show["next_run"].is_string(), "{show}");
    // Now a one-off in the past, without the window (scheduling again keeps
    // it otherwise): `serve` starts it at once.
    let past = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    e.ok(&[
        "campaign", "schedule", "c", "--at", &past, "--window", "none",
    ]);
    let (sink, port) = start_sink(&e, &["--dir", "spool"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    // serve announces only the metrics port: the endpoint gets a free one here.
    let bounce_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bounce_listen = format!("127.0.0.1:{bounce_port}");
    let (serve, metrics_port) = start_server(
        &e,
        &[
            "serve",
            "--relay",
            &relay,
            "--tick",
            "1",
            "--bounce-listen",
            &bounce_listen,
            "--http-listen",
            "off",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let mut state = String::new();
    for _ in 0..300 {
        state = e.json(&["campaign", "status", "c"])["state"]
            .as_str()
            .unwrap()
            .to_string();
        if state == "finished" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(state, "finished");
    // Two SMTP sessions at the bounce endpoint: greeting, QUIT.
    for _ in 0..2 {
        use std::io::{BufRead, Write};
        let s = std::net::TcpStream::connect(&bounce_listen).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut greeting = String::new();
        r.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("220"), "{greeting}");
        (&s).write_all(b"QUIT\r\n").unwrap();
        let mut bye = String::new();
        r.read_line(&mut bye).unwrap();
        assert!(bye.starts_with("221"), "{bye}");
    }
    let metrics = http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains(r#"rundbrief_messages_total{domain="example.org",outcome="sent"} 25"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("rundbrief_endpoint_connections_total 2"),
        "{metrics}"
    );
    stop(serve, "-TERM");
    stop(sink, "-INT");
    assert_eq!(spool_recipients(&e.path("spool")).len(), 25);
}

#[cfg(unix)]
#[test]
fn sent_mail_is_dkim_signed_and_strict_preflight_refuses_without_dkim() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    news_campaign(&e, 3, &[]);
    let (sink, port) = start_sink(&e, &["--dir", "spool"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let refused = e.fails(&["campaign", "send", "c", "--relay", &relay, "--strict"]);
    assert!(
        refused.contains("pre-flight") && refused.contains("DKIM"),
        "{refused}"
    );
    e.ok(&[
        "dkim",
        "keygen",
        "--algorithm",
        "ed25519",
        "--selector",
        "rb1",
        "--out",
        "dkim.pem",
    ]);
    let dkim = [
        ("RUNDBRIEF_DKIM__KEY_FILE", "dkim.pem"),
        ("RUNDBRIEF_DKIM__SELECTOR", "rb1"),
        ("RUNDBRIEF_DKIM__DOMAIN", "example.org"),
    ];
    // An Ed25519 key alone is a pre-flight problem too (#20): many
    // receivers cannot verify it.
    let out = e
        .cmd()
        .envs(dkim)
        .env(
            "RUNDBRIEF_SENDING__POSTAL_ADDRESS",
            "Example GmbH, Domstraße 1, 50667 Köln",
        )
        .args(["campaign", "send", "c", "--relay", &relay, "--strict"])
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && refused.contains("Ed25519") && !refused.contains("postal"),
        "{refused}"
    );
    let out = e
        .cmd()
        .envs(dkim)
        .args(["campaign", "send", "c", "--relay", &relay, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(sink, "-INT");
    let files: Vec<_> = std::fs::read_dir(e.path("spool")).unwrap().collect();
    assert_eq!(files.len(), 3);
    for f in files {
        let m = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let sig = m
            .lines()
            .find(|l| l.starts_with("DKIM-Signature:"))
            .unwrap_or_else(|| panic!("not signed:\n{m}"));
        assert!(
            sig.contains("a=ed25519-sha256")
                && sig.contains("d=example.org")
                && sig.contains("s=rb1"),
            "{sig}"
        );
    }
}

#[cfg(unix)]
#[test]
fn outside_its_send_window_a_campaign_waits() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    news_campaign(&e, 4, &[]);
    // A window that opens in two hours (UTC) and closes an hour later.
    let now = chrono::Utc::now();
    let window = format!(
        "{}-{}",
        (now + chrono::Duration::hours(2)).format("%H:00"),
        (now + chrono::Duration::hours(3)).format("%H:00")
    );
    let in_a_day = (now + chrono::Duration::days(1)).to_rfc3339();
    e.ok(&[
        "campaign", "schedule", "c", "--at", &in_a_day, "--window", &window,
    ]);
    let (sink, port) = start_sink(&e, &["--dir", "spool"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let v = e.json(&["campaign", "send", "c", "--relay", &relay]);
    assert_eq!(
        (
            v["state"].as_str(),
            v["sent"].as_u64(),
            v["pending"].as_u64()
        ),
        (Some("running"), Some(0), Some(4)),
        "{v}"
    );
    stop(sink, "-INT");
    assert!(
        spool_recipients(&e.path("spool")).is_empty(),
        "nothing sent outside the window"
    );
}

#[test]
fn a_campaigns_relay_is_checked_when_it_is_stored_not_at_send_time() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    let cfg = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
    e.write(
        "rundbrief.toml",
        format!("{cfg}\n[relays.bulk]\nurl = \"smtp://127.0.0.1:2525\"\n").as_bytes(),
    );
    e.ok(&["list", "create", "news"]);
    e.write("issue.md", b"Hello\n");
    let create = |name: &str, relay: &str| {
        vec![
            "campaign",
            "create",
            name,
            "--list",
            "news",
            "--subject",
            "Hi",
            "--content",
            "issue.md",
            "--relay",
            relay,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let args = create("typo", "bulkk");
    let refused = e.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        refused.contains("bulkk") && refused.contains("bulk"),
        "{refused}"
    );
    assert!(
        e.json(&["campaign", "ls"]).as_array().unwrap().is_empty(),
        "nothing stored"
    );
    let args = create("bad-url", "smtp://");
    e.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // A password in the URL is refused, and not printed while saying so.
    let args = create("pw", "smtp://u:hunter2@127.0.0.1:25253");
    let refused = e.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        refused.contains("--relay: relay `smtp://u:***@127.0.0.1:25253`: do not put the password")
            && !refused.contains("hunter2"),
        "{refused}"
    );
    // Nor does showing the configuration print one.
    e.write(
        "rundbrief.toml",
        format!("{cfg}\n[relays.bulk]\nurl = \"smtp://u:hunter3@127.0.0.1:2525\"\n").as_bytes(),
    );
    for args in [&["config", "show"][..], &["config", "show", "--json"]] {
        let out = e
            .cmd()
            .args(args)
            .env("RUNDBRIEF_RELAY", "smtp://u:hunter2@127.0.0.1:2525")
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && shown.contains("smtp://u:***@127.0.0.1:2525")
                && !shown.contains("hunter"),
            "{args:?}: {shown}"
        );
    }
    e.write(
        "rundbrief.toml",
        format!("{cfg}\n[relays.bulk]\nurl = \"smtp://127.0.0.1:2525\"\n").as_bytes(),
    );
    for (name, relay) in [("named", "bulk"), ("url", "smtp://127.0.0.1:2526")] {
        let args = create(name, relay);
        e.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let refused = e.fails(&["campaign", "edit", "named", "--relay", "nope"]);
    assert!(refused.contains("nope"), "{refused}");
    assert_eq!(e.json(&["campaign", "show", "named"])["relay"], "bulk");
}

#[cfg(unix)]
#[test]
fn campaign_test_sends_one_marked_copy_and_edit_changes_only_drafts() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    news_campaign(&e, 2, &[]);
    e.ok(&["campaign", "edit", "c", "--subject", "Issue 7 edited"]);
    let (sink, port) = start_sink(&e, &["--dir", "spool"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let t = e.json(&[
        "campaign",
        "test",
        "c",
        "--to",
        "editor@example.net",
        "--relay",
        &relay,
    ]);
    assert_eq!(t["outcome"], "sent", "{t}");
    // A blocklisted address gets nothing, not even a test.
    e.ok(&["sub", "blocklist", "editor@example.net"]);
    let refused = e.fails(&[
        "campaign",
        "test",
        "c",
        "--to",
        "editor@example.net",
        "--relay",
        &relay,
    ]);
    assert!(refused.contains("is blocklisted"), "{refused}");
    // Not a delivery: the ledger is untouched and the campaign still a draft.
    let st = e.json(&["campaign", "status", "c"]);
    assert_eq!(
        (st["state"].as_str(), st["total"].as_u64()),
        (Some("draft"), Some(0)),
        "{st}"
    );
    e.ok(&["campaign", "send", "c", "--relay", &relay]);
    let refused = e.fails(&["campaign", "edit", "c", "--subject", "too late"]);
    assert!(
        refused.contains("is finished: only drafts can be edited"),
        "{refused}"
    );
    stop(sink, "-INT");
    let mails: Vec<String> = std::fs::read_dir(e.path("spool"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 3);
    let test: Vec<_> = mails
        .iter()
        .filter(|m| m.contains("X-Rundbrief-Test: yes"))
        .collect();
    assert_eq!(test.len(), 1);
    assert!(
        test[0].contains("Delivered-To: <editor@example.net>"),
        "{}",
        test[0]
    );
    assert!(test[0].contains("Subject: [TEST] Issue"), "{}", test[0]);
    assert!(
        mails.iter().all(|m| m.contains("edited")),
        "the edited subject went out"
    );
}

/// A loopback port nobody listens on (bound, then closed again).
#[cfg(unix)]
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[cfg(unix)]
fn stdout_of(e: &Env, envs: &[(&str, &str)], args: &[&str]) -> String {
    let out = e
        .cmd()
        .envs(envs.iter().copied())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(unix)]
#[test]
fn campaign_send_and_status_say_why_deliveries_failed_or_wait() {
    // Found by an audit: failed sends were silent without -v.
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    e.cmd().args(["list", "create", "news"]).assert().success();
    e.write(
        "people.csv",
        b"email,zip\nhas@example.org,12345\nno1@example.org,\nno2@example.org,\nno3@example.org,\nno4@example.org,\n",
    );
    e.cmd()
        .args(["import", "people.csv", "--list", "news"])
        .assert()
        .success();
    e.write("issue.md", b"Your zip: {{subscriber.attributes.zip}}\n");
    e.cmd()
        .args([
            "campaign",
            "create",
            "c",
            "--list",
            "news",
            "--subject",
            "Hi",
            "--content",
            "issue.md",
        ])
        .assert()
        .success();
    let envs = [("RUNDBRIEF_SENDING__RETRY_BASE_SECS", "1")];

    // Nobody listens: the one renderable message waits, the rest fail.
    let closed = format!("smtp://127.0.0.1:{}", closed_port());
    let text = stdout_of(&e, &envs, &["campaign", "send", "c", "--relay", &closed]);
    assert!(
        text.contains("0 sent, 0 rejected, 4 failed, 1 still deferred"),
        "{text}"
    );
    assert!(
        text.contains("  4 failed: render: ")
            && text.contains("missing `subscriber.attributes.zip`"),
        "{text}"
    );
    assert!(
        !text.contains("no1@example.org"),
        "one line for all four: {text}"
    );
    assert!(
        text.contains("  1 deferred: CONNECT to 127.0.0.1:") && text.contains("refused"),
        "{text}"
    );
    assert!(text.contains("rundbrief campaign status c"), "{text}");

    let status = stdout_of(&e, &[], &["campaign", "status", "c"]);
    assert!(status.contains("  4 failed: render: "), "{status}");
    assert!(
        status.contains("  1 deferred: CONNECT to 127.0.0.1:"),
        "{status}"
    );
    let v = e.json(&["campaign", "status", "c"]);
    for field in [
        "state", "total", "sent", "deferred", "failed", "bounced", "pending",
    ] {
        assert!(v.get(field).is_some(), "contract field {field}: {v}");
    }
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    assert_eq!(
        (errors[0]["state"].as_str(), errors[0]["count"].as_u64()),
        (Some("failed"), Some(4))
    );
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("subscriber.attributes.zip"),
        "{v}"
    );
    assert_eq!(
        (errors[1]["state"].as_str(), errors[1]["count"].as_u64()),
        (Some("deferred"), Some(1))
    );
    assert!(
        errors[1]["error"].as_str().unwrap().contains("CONNECT"),
        "{v}"
    );

    // A relay that answers: the deferred one goes out; only the render
    // failures are left as reasons, in --json too.
    let (sink, port) = start_sink(&e, &["--dir", "spool"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let out = stdout_of(
        &e,
        &envs,
        &[
            "campaign", "send", "c", "--relay", &relay, "--wait", "--json",
        ],
    );
    stop(sink, "-INT");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["state"].as_str(),
            v["sent"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some("finished"), Some(1), Some(4)),
        "{v}"
    );
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(
        (errors[0]["state"].as_str(), errors[0]["count"].as_u64()),
        (Some("failed"), Some(4))
    );
    assert_eq!(
        spool_recipients(&e.path("spool")),
        ["Delivered-To: <has@example.org>"]
    );
}

#[cfg(unix)]
#[test]
fn campaign_retry_failed_send_sends_what_a_plain_retry_left_pending() {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    news_campaign(&e, 3, &[]);
    let envs = [
        ("RUNDBRIEF_SENDING__RETRY_BASE_SECS", "1"),
        ("RUNDBRIEF_SENDING__MAX_AGE_SECS", "1"),
    ];
    let closed = format!("smtp://127.0.0.1:{}", closed_port());
    let v: Value = serde_json::from_str(&stdout_of(
        &e,
        &envs,
        &[
            "campaign", "send", "c", "--relay", &closed, "--wait", "--json",
        ],
    ))
    .unwrap();
    assert_eq!(
        (v["state"].as_str(), v["failed"].as_u64()),
        (Some("finished"), Some(3)),
        "{v}"
    );
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("maximum age"),
        "{v}"
    );

    // A plain retry-failed only resets them.
    let text = stdout_of(&e, &[], &["campaign", "retry-failed", "c"]);
    assert!(
        text.contains("3 failed deliveries are pending again"),
        "{text}"
    );

    // --send afterwards has nothing to reset, but sends what is pending.
    let (sink, port) = start_sink(&e, &["--dir", "spool"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let v = e.json(&["campaign", "retry-failed", "c", "--send", "--relay", &relay]);
    stop(sink, "-INT");
    assert_eq!(
        (
            v["retried"].as_u64(),
            v["sent"].as_u64(),
            v["pending"].as_u64(),
            v["state"].as_str()
        ),
        (Some(0), Some(3), Some(0), Some("finished")),
        "{v}"
    );
    assert_eq!(spool_recipients(&e.path("spool")).len(), 3);
}

/// #21: terminal escape sequences from CSV attributes and names are shown as
/// escapes in human output (`sub show`, tables), never sent to the terminal;
/// JSON keeps the exact value.
#[test]
fn human_output_escapes_control_characters_and_json_keeps_them() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    e.write(
        "people.csv",
        "email,name,city,note\nanna@example.org,Anna,\"K\u{1b}[2J\",\"\u{1b}]0;pwned\u{7}\"\n"
            .as_bytes(),
    );
    let r = e.json(&["import", "people.csv", "--list", "news"]);
    assert_eq!(r["imported"], 1, "{r}");
    let shown = e.ok(&["sub", "show", "anna@example.org"]);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "{shown:?}"
    );
    assert!(shown.contains("K\\u{1b}[2J"), "{shown}");
    assert!(shown.contains("\\u{1b}]0;pwned\\u{7}"), "{shown}");
    let v = e.json(&["sub", "show", "anna@example.org"]);
    assert_eq!(v["attributes"]["city"], "K\u{1b}[2J");
    assert_eq!(v["attributes"]["note"], "\u{1b}]0;pwned\u{7}");
}
