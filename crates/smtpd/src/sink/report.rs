//! Builds the other mail a receiving system sends back (pure: bytes in, bytes
//! out): RFC 3834 automatic replies (`--auto-reply`) and RFC 5965 ARF feedback
//! reports (`--complain`). Both go to the message's return path, like the
//! DSNs of [`super::dsn`]. CRLF line ends throughout.

use std::net::IpAddr;
use std::time::SystemTime;

use super::dsn::{header_block, one_line, rfc5322_date};
use crate::handler::{Envelope, Recipient};

/// A header value copied from the original message is cut at this length.
const MAX_COPIED_VALUE: usize = 200;

/// An out-of-office reply from `recipient` to the return path: `Auto-Submitted:
/// auto-replied` (RFC 3834 §5), a subject that starts with `Auto:` and says
/// "Out of office", and `In-Reply-To`/`References` naming the original
/// Message-ID. Send it with the null reverse path (RFC 3834 §3.3).
pub fn build_auto_reply(
    hostname: &str,
    envelope: &Envelope,
    recipient: &Recipient,
    original: &[u8],
    unique: &str,
) -> Vec<u8> {
    let headers = header_block(original);
    let subject = original_header(headers, "subject");
    let message_id = original_header(headers, "message-id");
    let mut m = String::with_capacity(1024);
    let mut line = |s: &str| {
        m.push_str(s);
        m.push_str("\r\n");
    };
    line(&format!("From: <{}>", one_line(&recipient.address)));
    line(&format!("To: <{}>", one_line(&envelope.mail_from.address)));
    line(&format!(
        "Subject: Auto: Out of office{}",
        subject.map(|s| format!(" (Re: {s})")).unwrap_or_default()
    ));
    line(&format!("Date: {}", rfc5322_date(SystemTime::now())));
    line(&format!("Message-ID: <auto.{unique}@{hostname}>"));
    if let Some(id) = &message_id {
        line(&format!("In-Reply-To: {id}"));
        line(&format!("References: {id}"));
    }
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Transfer-Encoding: 7bit");
    line("");
    line("Hello,");
    line("");
    line("I am out of the office and will read your message when I am back.");
    line("");
    line(&format!(
        "(An automatic reply, sent by the test mail server {hostname}.)"
    ));
    m.into_bytes()
}

/// An ARF report (`multipart/report; report-type=feedback-report`) saying that
/// `recipient` marked the message as spam: a text part, the
/// `message/feedback-report` part (Feedback-Type: abuse, User-Agent, Version,
/// Original-Mail-From, Original-Rcpt-To, Arrival-Date, Reporting-MTA,
/// Source-IP) and the original headers as `text/rfc822-headers`.
pub fn build_feedback_report(
    hostname: &str,
    envelope: &Envelope,
    recipient: &Recipient,
    source_ip: IpAddr,
    original: &[u8],
    arrival: SystemTime,
    unique: &str,
) -> Vec<u8> {
    let boundary = format!("=_rundbrief_arf_{unique}");
    let headers = header_block(original);
    let subject = original_header(headers, "subject").unwrap_or_default();
    let arrival = rfc5322_date(arrival);
    let rcpt = one_line(&recipient.address);
    let mut m = String::with_capacity(2048);
    let mut line = |s: &str| {
        m.push_str(s);
        m.push_str("\r\n");
    };
    line(&format!("From: Feedback Loop <fbl@{hostname}>"));
    line(&format!("To: <{}>", one_line(&envelope.mail_from.address)));
    line(&format!("Subject: Complaint about a message: {subject}"));
    line(&format!("Date: {}", rfc5322_date(SystemTime::now())));
    line(&format!("Message-ID: <arf.{unique}@{hostname}>"));
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=feedback-report; boundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Description: Notification");
    line("");
    line(&format!(
        "This is an email abuse report for a message received from IP {source_ip} on {arrival}."
    ));
    line("The recipient marked it as spam.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/feedback-report");
    line("");
    line("Feedback-Type: abuse");
    line(&format!(
        "User-Agent: rundbrief-sink/{}",
        env!("CARGO_PKG_VERSION")
    ));
    line("Version: 1");
    line(&format!(
        "Original-Mail-From: <{}>",
        one_line(&envelope.mail_from.address)
    ));
    line(&format!("Original-Rcpt-To: <{rcpt}>"));
    line(&format!("Arrival-Date: {arrival}"));
    line(&format!("Reporting-MTA: dns; {hostname}"));
    line(&format!("Source-IP: {source_ip}"));
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("Content-Description: Headers of the reported message");
    line("");
    let mut out = m.into_bytes();
    out.extend_from_slice(headers);
    if !headers.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The first header `name` (case-insensitive) of a header block, unfolded,
/// without control characters, cut at [`MAX_COPIED_VALUE`] characters.
fn original_header(block: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(block);
    let mut value: Option<String> = None;
    for l in text.split('\n') {
        let l = l.trim_end_matches('\r');
        if let Some(v) = value.as_mut() {
            if l.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(l.trim());
                continue;
            }
            break;
        }
        if let Some((n, v)) = l.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
        .map(|v| {
            one_line(&v)
                .chars()
                .take(MAX_COPIED_VALUE)
                .collect::<String>()
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::MailFrom;
    use std::time::UNIX_EPOCH;

    const ORIGINAL: &[u8] = b"From: News <news@list.example>\r\nSubject: Issue 7:\r\n  the long\r\n one\r\nMessage-ID: <m1@list.example>\r\n\r\nsecret body\r\n";

    fn env() -> (Envelope, Recipient) {
        let rcpt = Recipient {
            address: "kim@x.example".into(),
            ..Recipient::default()
        };
        let env = Envelope {
            mail_from: MailFrom {
                address: "b-tok@bounce.example".into(),
                ..MailFrom::default()
            },
            recipients: vec![rcpt.clone()],
        };
        (env, rcpt)
    }

    #[test]
    fn header_values_are_unfolded() {
        let h = header_block(ORIGINAL);
        assert_eq!(
            original_header(h, "SUBJECT").as_deref(),
            Some("Issue 7: the long one")
        );
        assert_eq!(
            original_header(h, "message-id").as_deref(),
            Some("<m1@list.example>")
        );
        assert_eq!(original_header(h, "x-missing"), None);
    }

    #[test]
    fn auto_reply_shape() {
        let (env, rcpt) = env();
        let text = String::from_utf8(build_auto_reply("mx.test", &env, &rcpt, ORIGINAL, "7"))
            .expect("ascii");
        for needle in [
            "From: <kim@x.example>\r\n",
            "To: <b-tok@bounce.example>\r\n",
            "Subject: Auto: Out of office (Re: Issue 7: the long one)\r\n",
            "In-Reply-To: <m1@list.example>\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "Message-ID: <auto.7@mx.test>\r\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("secret body"));
    }

    #[test]
    fn feedback_report_shape() {
        let (env, rcpt) = env();
        let raw = build_feedback_report(
            "mx.test",
            &env,
            &rcpt,
            "127.0.0.1".parse().expect("ip"),
            ORIGINAL,
            UNIX_EPOCH,
            "9",
        );
        let text = String::from_utf8(raw).expect("ascii");
        for needle in [
            "report-type=feedback-report",
            "Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n",
            "Version: 1\r\n",
            "Original-Mail-From: <b-tok@bounce.example>\r\n",
            "Original-Rcpt-To: <kim@x.example>\r\n",
            "Arrival-Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n",
            "Source-IP: 127.0.0.1\r\n",
            "Content-Type: text/rfc822-headers\r\n",
            "Message-ID: <m1@list.example>\r\n\r\n--=_rundbrief_arf_9--\r\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("secret body"));
    }
}
