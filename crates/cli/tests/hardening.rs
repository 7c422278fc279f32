//! Issue #21 through the binary: export neutralises spreadsheet formulas
//! (point 4), the database and the configuration file are private (point
//! 8), and lists are private until `list edit --public` (point 12).

mod common;

use common::Env;

#[test]
fn issue_21_export_neutralises_formulas_and_raw_is_exact() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    let csv = e.write(
        "in.csv",
        "email,name,note,link\n\
         ann@example.org,=cmd|' /C calc'!A0,\"\t=1+1\",\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"\n\
         bob@example.org,Bob,-2,@SUM(A1)\n"
            .as_bytes(),
    );
    let r = e.json(&["import", &csv, "--list", "news"]);
    assert_eq!(r["imported"], 2, "{r}");
    let ann = e.json(&["sub", "show", "ann@example.org"]);
    assert_eq!(ann["attributes"]["note"], "\t=1+1", "import keeps the TAB");

    let safe = e.ok(&["export", "--list", "news"]);
    let mut rows = csv::Reader::from_reader(safe.as_bytes());
    let cells: Vec<Vec<String>> = rows
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(
        cells[0],
        [
            "ann@example.org",
            "'=cmd|' /C calc'!A0",
            "'=HYPERLINK(\"http://x\",\"y\")",
            "'\t=1+1"
        ],
        "{safe}"
    );
    assert_eq!(cells[1], ["bob@example.org", "Bob", "'@SUM(A1)", "'-2"]);
    for row in &cells {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} in {safe}"
            );
        }
    }

    // --raw is exact and imports back to the same values.
    let raw = e.ok(&["export", "--list", "news", "--raw"]);
    assert!(
        raw.contains(",=cmd|") && raw.contains(",\t=1+1\n") && raw.contains(",@SUM(A1),-2"),
        "{raw}"
    );
    e.write("raw.csv", raw.as_bytes());
    e.ok(&["list", "create", "copy"]);
    e.json(&["import", "raw.csv", "--list", "copy"]);
    assert_eq!(e.ok(&["export", "--list", "copy", "--raw"]), raw);
}

#[cfg(unix)]
#[test]
fn issue_21_database_is_private_and_a_readable_config_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let e = Env::new();
    e.write("rundbrief.toml", b"[database]\nurl = \"rundbrief.db\"\n");
    let toml = e.path("rundbrief.toml");
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = e.cmd().args(["list", "create", "news"]).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("readable by other users") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    for f in ["rundbrief.db", "rundbrief.db-wal", "rundbrief.db-shm"] {
        let p = e.path(f);
        match std::fs::metadata(&p) {
            Ok(m) => assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}"),
            Err(_) => assert_ne!(f, "rundbrief.db", "the database exists"),
        }
    }
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = e.cmd().args(["list", "ls"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("readable by other users"));
}

#[test]
fn issue_21_lists_are_private_until_made_public() {
    let e = Env::new();
    e.ok(&["list", "create", "news"]);
    assert_eq!(e.json(&["list", "show", "news"])["public"], false);
    assert_eq!(
        e.json(&["list", "edit", "news", "--public"])["public"],
        true
    );
    assert_eq!(e.json(&["list", "show", "news"])["public"], true);
    assert_eq!(
        e.json(&["list", "edit", "news", "--private"])["public"],
        false
    );
    let out = e.cmd().args(["list", "edit", "news"]).output().unwrap();
    assert!(!out.status.success(), "--public or --private is required");
}
