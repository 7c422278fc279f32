//! `rundbrief dns records` and `rundbrief dkim keygen`: what an operator
//! publishes in DNS so that receivers accept rundbrief's mail, and the key
//! behind the DKIM record. See docs/deliverability.md.

use crate::args::{DkimAlgorithm, DkimCmd, DnsRecordsArgs};
use crate::output;
use anyhow::{Context, bail};
use rundbrief_core::Config;
use rundbrief_dkim::{Algorithm, DkimSigner};
use serde::Serialize;
use std::process::ExitCode;

/// One record of `rundbrief dns records --json`:
/// `{"name":"…","type":"TXT|MX","value":"…","why":"…"}`. `value` is the
/// record's data as one string (TXT values unsplit, MX as `PREF HOST.`).
#[derive(Debug, Serialize)]
pub struct Record {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: String,
    pub why: String,
}

/// The records, in the order an operator should publish them.
///
/// # Errors
/// A missing `sending.from`, `sending.bounce_domain` or `[dkim]` key, named
/// with how to set it; a DKIM key that cannot be loaded.
pub fn build(cfg: &Config, a: &DnsRecordsArgs) -> anyhow::Result<Vec<Record>> {
    let from = cfg.sending.from.as_deref().context(
        "`sending.from` is not set: the SPF and DMARC records are for the From domain \
         (set it in rundbrief.toml or RUNDBRIEF_SENDING__FROM)",
    )?;
    let from_domain = rundbrief_app::preflight::from_domain(from)?;
    let bounce_domain = cfg.sending.bounce_domain.as_deref().context(
        "`sending.bounce_domain` is not set: it is the VERP return-path domain whose MX and SPF \
         records are needed (set it in rundbrief.toml or RUNDBRIEF_SENDING__BOUNCE_DOMAIN)",
    )?;
    let signer = DkimSigner::from_config(cfg)?.context(
        "`dkim.key_file` is not set: the DKIM record publishes the public half of that key. \
         Run `rundbrief dkim keygen --out dkim.pem`, then set dkim.key_file, dkim.selector and \
         dkim.domain in rundbrief.toml (or RUNDBRIEF_DKIM__KEY_FILE, …__SELECTOR, …__DOMAIN)",
    )?;

    // `relay` may name a [relays.NAME]: its URL holds the host.
    let relay_url = cfg
        .relay
        .as_deref()
        .map(|r| cfg.relays.get(r).map_or(r, |named| named.url.as_str()));
    let (spf, spf_hint) = match (&a.spf, relay_host(relay_url)) {
        (Some(m), _) => (m.trim().to_owned(), String::new()),
        (None, Some(host)) => (
            format!("a:{host}"),
            format!(
                " `a:{host}` authorises the relay's own address; if your relay provider \
                 documents an SPF include, use that instead (--spf)."
            ),
        ),
        (None, None) => (
            "ip4:<your relay's public IP>".to_owned(),
            " Replace the placeholder with your relay's `include:` or `ip4:` (--spf).".to_owned(),
        ),
    };
    let mx_host = a
        .mx_host
        .as_deref()
        .map(|h| h.trim_end_matches('.').to_owned())
        .unwrap_or_else(|| "<host running rundbrief bounce serve>".to_owned());
    let rua = a
        .dmarc_rua
        .clone()
        .unwrap_or_else(|| format!("dmarc-reports@{from_domain}"));
    let spf_aligned = rundbrief_app::preflight::aligned(&from_domain, bounce_domain);

    let spf_from = Record {
        name: from_domain.clone(),
        kind: "TXT",
        value: format!("v=spf1 {spf} -all"),
        why: "SPF for the From domain: the big mailbox providers expect it, and it covers \
              mail sent with this domain as MAIL FROM. If the domain already has an SPF \
              record, add the mechanisms to it: two SPF records are an error."
            .to_owned(),
    };
    let mut records = Vec::with_capacity(5);
    // When the From domain is the bounce domain, one SPF record serves both.
    if from_domain != bounce_domain {
        records.push(spf_from);
    }
    // One TXT record per key (RSA and Ed25519 when dual-signing).
    for key in signer.keys() {
        let dkim = key.dns_record();
        let aligned = rundbrief_app::preflight::aligned(&from_domain, key.domain());
        records.push(Record {
            name: dkim.name.clone(),
            kind: "TXT",
            value: dkim.value.clone(),
            why: format!(
                "DKIM: the public key receivers check every message's signature with \
                 ({} key from {}, selector {}). {}",
                key.algorithm(),
                key.key_file().display(),
                key.selector(),
                if aligned {
                    format!(
                        "d={} aligns with the From domain {from_domain}, so this signature \
                         passes DMARC.",
                        key.domain()
                    )
                } else {
                    format!(
                        "Warning: d={} does not align with the From domain {from_domain}; \
                         DMARC will not count this signature (set dkim.domain to {from_domain}).",
                        key.domain()
                    )
                }
            ),
        });
    }
    records.extend([
        Record {
            name: format!("_dmarc.{from_domain}"),
            kind: "TXT",
            value: format!("v=DMARC1; p=none; rua=mailto:{rua}; adkim=r; aspf=r"),
            why: format!(
                "DMARC: required of bulk senders. p=none only asks for reports (to {rua}), \
                 which show whether all your mail passes aligned SPF or DKIM; once it does, \
                 tighten to p=quarantine, then p=reject."
            ),
        },
        Record {
            name: bounce_domain.to_owned(),
            kind: "MX",
            value: format!("10 {mx_host}."),
            why: format!(
                "Bounces and unsubscribe mails to …@{bounce_domain} are delivered to rundbrief's \
                 bounce endpoint on port 25 of this host (it also needs an A/AAAA record); \
                 without it dead addresses are never pruned."
            ),
        },
        Record {
            name: bounce_domain.to_owned(),
            kind: "TXT",
            value: format!("v=spf1 {spf} -all"),
            why: format!(
                "SPF for the bounce domain: every message's MAIL FROM is b-TOKEN@{bounce_domain}, \
                 and SPF checks that domain, so this record must authorise your relay.{spf_hint}{}",
                if spf_aligned {
                    format!(" It is within {from_domain}, so SPF aligns under DMARC too.")
                } else {
                    format!(
                        " It is not under the From domain {from_domain}: SPF passes but does \
                         not align; DMARC then rests on DKIM alone."
                    )
                }
            ),
        },
    ]);
    Ok(records)
}

/// `rundbrief dns records [--json]`.
pub fn records(cfg: &Config, a: &DnsRecordsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let records = build(cfg, a)?;
    if json {
        output::json(&serde_json::json!({ "records": records }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("; Publish these records (zone-file syntax). docs/deliverability.md explains each.");
    for r in &records {
        println!();
        println!("; {}", r.why);
        let value = if r.kind == "TXT" {
            rundbrief_dkim::DkimRecord {
                name: r.name.clone(),
                value: r.value.clone(),
            }
            .value_split()
        } else {
            r.value.clone()
        };
        println!("{}.\t3600\tIN\t{}\t{}", r.name, r.kind, value);
    }
    Ok(ExitCode::SUCCESS)
}

/// `rundbrief dkim …`.
pub fn dkim(cmd: &DkimCmd, json: bool) -> anyhow::Result<ExitCode> {
    let DkimCmd::Keygen {
        out,
        selector,
        algorithm,
        force,
    } = cmd;
    if out.exists() && !force {
        bail!(
            "{} exists already; pass --force to replace it (mail signed with the old key stops \
             verifying once its DNS record is replaced: rotate with a new selector instead)",
            out.display()
        );
    }
    let algorithm = match algorithm {
        DkimAlgorithm::Rsa => Algorithm::Rsa,
        DkimAlgorithm::Ed25519 => Algorithm::Ed25519,
    };
    let selector = selector
        .clone()
        .unwrap_or_else(|| chrono::Utc::now().format("rb%Y%m").to_string());
    let pem = rundbrief_dkim::generate_key(algorithm)?;
    write_private(out, pem.as_bytes())?;
    // Load it back: proves the file works and gives the public key.
    let signer = DkimSigner::from_file(out, &selector, "example.org")?;
    let record = signer.dns_record();
    let txt_name = format!("{selector}._domainkey.<dkim.domain>");
    if json {
        output::json(&serde_json::json!({
            "key_file": out,
            "algorithm": algorithm.dns_tag(),
            "selector": selector,
            "record": { "name": txt_name, "type": "TXT", "value": record.value },
        }))?;
    } else {
        eprintln!(
            "wrote a new {algorithm} key to {} (readable by you only).",
            out.display()
        );
        println!(
            "# rundbrief.toml\n[dkim]\nkey_file = \"{}\"\nselector = \"{selector}\"\n\
             domain = \"example.org\"   # your From domain (or a parent of it)\n\n\
             # then publish (or see `rundbrief dns records`):\n{txt_name}.\tIN\tTXT\t{}",
            out.display(),
            record.value_split()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a private key readable by the owner only (created that way, so it
/// is never briefly world-readable).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The host of a relay URL (`smtp://user@relay.example:587?tls=required` →
/// `relay.example`), unless it is a loopback or literal address, which SPF
/// cannot name by `a:`.
fn relay_host(relay: Option<&str>) -> Option<String> {
    let rest = relay?.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = host_port.split(':').next()?.trim();
    let literal = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    (!host.is_empty() && host.contains('.') && !literal && host != "localhost")
        .then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_hosts() {
        for (url, want) in [
            ("smtp://relay.example.com:2525", Some("relay.example.com")),
            (
                "smtp://me@Relay.Example.com:587?tls=required",
                Some("relay.example.com"),
            ),
            ("smtps://smtp.example.net", Some("smtp.example.net")),
            ("smtp://127.0.0.1:2525", None),
            ("smtp://localhost:25", None),
            ("not a url", None),
        ] {
            assert_eq!(relay_host(Some(url)).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn from_domains() {
        assert_eq!(
            rundbrief_app::preflight::from_domain("news@Example.org").unwrap(),
            "example.org"
        );
        assert_eq!(
            rundbrief_app::preflight::from_domain("\"Rundbrief, News\" <news@mail.example.org>")
                .unwrap(),
            "mail.example.org"
        );
        assert!(rundbrief_app::preflight::from_domain("Rundbrief").is_err());
    }
}
