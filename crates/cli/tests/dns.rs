//! `rundbrief dns records` and `rundbrief dkim keygen` through the real
//! binary, each test in its own directory. Issue #9, "DKIM and DNS".

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    rundbrief_in(dir)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = run(dir, args, envs);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = run(dir, args, envs);
    assert!(!out.status.success(), "{args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

const CONFIG: &str = r#"
relay = "smtp://relay.example.net:587"
[sending]
from = "Rundbrief <news@example.org>"
bounce_domain = "bounce.example.org"
[dkim]
key_file = "dkim.pem"
selector = "rb2026"
domain = "example.org"
"#;

#[test]
fn keygen_then_records_for_every_domain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(
        d,
        &[
            "dkim",
            "keygen",
            "--out",
            "dkim.pem",
            "--selector",
            "rb2026",
        ],
        &[],
    );
    assert!(out.contains("selector = \"rb2026\""), "{out}");
    let pem = std::fs::read_to_string(d.join("dkim.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("dkim.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key must be private, mode {mode:o}");
    }
    // A second keygen does not overwrite the key.
    let err = fails(d, &["dkim", "keygen", "--out", "dkim.pem"], &[]);
    assert!(err.contains("--force"), "{err}");

    std::fs::write(d.join("rundbrief.toml"), CONFIG).unwrap();
    let v: Value = serde_json::from_str(&ok(
        d,
        &["dns", "records", "--json", "--mx-host", "mx.example.org"],
        &[],
    ))
    .unwrap();
    let records = v["records"].as_array().unwrap();
    let find = |name: &str, kind: &str| -> &Value {
        records
            .iter()
            .find(|r| r["name"] == name && r["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} {name} in {v:#}"))
    };
    for r in records {
        assert!(
            r["why"]
                .as_str()
                .is_some_and(|w| w.len() > 20 && !w.contains('\n')),
            "{r}"
        );
    }
    assert_eq!(records.len(), 5, "{v:#}");
    let spf_from = find("example.org", "TXT")["value"].as_str().unwrap();
    assert_eq!(spf_from, "v=spf1 a:relay.example.net -all");
    let dkim = find("rb2026._domainkey.example.org", "TXT");
    let value = dkim["value"].as_str().unwrap();
    assert!(
        value.starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
        "{value}"
    );
    assert!(dkim["why"].as_str().unwrap().contains("aligns"), "{dkim}");
    let dmarc = find("_dmarc.example.org", "TXT")["value"].as_str().unwrap();
    assert!(
        dmarc.starts_with("v=DMARC1; p=none; rua=mailto:dmarc-reports@example.org"),
        "{dmarc}"
    );
    assert_eq!(
        find("bounce.example.org", "MX")["value"],
        "10 mx.example.org."
    );
    let spf_bounce = find("bounce.example.org", "TXT");
    assert_eq!(spf_bounce["value"], "v=spf1 a:relay.example.net -all");
    assert!(
        spf_bounce["why"].as_str().unwrap().contains("MAIL FROM"),
        "{spf_bounce}"
    );

    // Text: zone-file lines with the long DKIM value split into ≤255-character strings.
    let text = ok(
        d,
        &["dns", "records", "--spf", "include:_spf.relay.example"],
        &[],
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("rb2026._domainkey.example.org.\t"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("\" \""),
        "an RSA-2048 record is split: {line}"
    );
    assert!(
        text.contains("\"v=spf1 include:_spf.relay.example -all\""),
        "{text}"
    );
    assert!(
        text.contains("<host running rundbrief bounce serve>"),
        "placeholder: {text}"
    );
}

#[test]
fn ed25519_key_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(
        d,
        &[
            "dkim",
            "keygen",
            "--algorithm",
            "ed25519",
            "--out",
            "ed.pem",
            "--json",
        ],
        &[],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["algorithm"], "ed25519");
    let env = [
        ("RUNDBRIEF_SENDING__FROM", "news@mail.example.com"),
        ("RUNDBRIEF_SENDING__BOUNCE_DOMAIN", "bounce.example.com"),
        ("RUNDBRIEF_DKIM__KEY_FILE", "ed.pem"),
        ("RUNDBRIEF_DKIM__SELECTOR", "ed1"),
        ("RUNDBRIEF_DKIM__DOMAIN", "example.com"),
    ];
    let v: Value = serde_json::from_str(&ok(d, &["dns", "records", "--json"], &env)).unwrap();
    let dkim = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ed1._domainkey.example.com")
        .unwrap_or_else(|| panic!("{v:#}"));
    let value = dkim["value"].as_str().unwrap();
    assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
    assert_eq!(value.len(), "v=DKIM1; k=ed25519; p=".len() + 44, "{value}");
}

#[test]
fn missing_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(d, &["dns", "records"], &[]);
    assert!(
        err.contains("sending.from") && err.contains("RUNDBRIEF_SENDING__FROM"),
        "{err}"
    );

    let from = [("RUNDBRIEF_SENDING__FROM", "news@example.org")];
    let err = fails(d, &["dns", "records"], &from);
    assert!(err.contains("sending.bounce_domain"), "{err}");

    let both = [
        ("RUNDBRIEF_SENDING__FROM", "news@example.org"),
        ("RUNDBRIEF_SENDING__BOUNCE_DOMAIN", "bounce.example.org"),
    ];
    let err = fails(d, &["dns", "records"], &both);
    assert!(
        err.contains("dkim.key_file") && err.contains("dkim keygen"),
        "{err}"
    );

    // Half a [dkim] section is a configuration error naming the missing key.
    let half = [
        ("RUNDBRIEF_SENDING__FROM", "news@example.org"),
        ("RUNDBRIEF_SENDING__BOUNCE_DOMAIN", "bounce.example.org"),
        ("RUNDBRIEF_DKIM__KEY_FILE", "dkim.pem"),
    ];
    let err = fails(d, &["dns", "records"], &half);
    assert!(err.contains("dkim.selector"), "{err}");

    // An unreadable key is named.
    let all = [
        ("RUNDBRIEF_SENDING__FROM", "news@example.org"),
        ("RUNDBRIEF_SENDING__BOUNCE_DOMAIN", "bounce.example.org"),
        ("RUNDBRIEF_DKIM__KEY_FILE", "missing.pem"),
        ("RUNDBRIEF_DKIM__SELECTOR", "s1"),
        ("RUNDBRIEF_DKIM__DOMAIN", "example.org"),
    ];
    let err = fails(d, &["dns", "records"], &all);
    assert!(err.contains("missing.pem"), "{err}");
}
