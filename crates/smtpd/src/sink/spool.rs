//! The sink's spool: one `.eml` per message, envelope prepended, written to a
//! hidden temporary name, fsynced, renamed, directory fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::handler::Envelope;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The bytes prepended to a stored message, the contract of `rundbrief sink
/// --dir`: `Return-Path: <MAIL FROM>` (`<>` for the null sender), then one
/// `Delivered-To: <RCPT>` line per accepted recipient in RCPT order, CRLF ends.
pub fn envelope_header(envelope: &Envelope) -> Vec<u8> {
    let mut out = format!("Return-Path: <{}>\r\n", clean(&envelope.mail_from.address));
    for r in &envelope.recipients {
        out.push_str(&format!("Delivered-To: <{}>\r\n", clean(&r.address)));
    }
    out.into_bytes()
}

fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// A unique name stem: time, process id and a sequence number.
pub(crate) fn unique_stem() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.{:09}.{}.{seq}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    )
}

/// Stores one message durably and returns its path. Blocking: run it on the
/// blocking pool.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn store(dir: &Path, envelope: &Envelope, message: &[u8]) -> io::Result<PathBuf> {
    let stem = unique_stem();
    let tmp = dir.join(format!(".{stem}.tmp"));
    let path = dir.join(format!("{stem}.eml"));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(&envelope_header(envelope))?;
        f.write_all(message)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{MailFrom, Recipient};

    #[test]
    fn header_contract() {
        let env = Envelope {
            mail_from: MailFrom {
                address: "b-x@bounce.example".into(),
                ..MailFrom::default()
            },
            recipients: vec![
                Recipient {
                    address: "a@x.example".into(),
                    ..Recipient::default()
                },
                Recipient {
                    address: "b@y.example".into(),
                    ..Recipient::default()
                },
            ],
        };
        assert_eq!(
            envelope_header(&env),
            b"Return-Path: <b-x@bounce.example>\r\nDelivered-To: <a@x.example>\r\nDelivered-To: <b@y.example>\r\n"
        );
        let null = Envelope::default();
        assert_eq!(envelope_header(&null), b"Return-Path: <>\r\n");
    }
}
