//! Builds RFC 3464 delivery status notifications (pure: bytes in, bytes out).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::handler::{Envelope, Recipient};
use crate::reply::{EnhancedStatus, Reply};

/// Returned headers are cut at this size.
const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// One failed recipient in a DSN.
#[derive(Debug, Clone)]
pub struct FailedRecipient {
    /// The recipient as given at RCPT (with its ORCPT, if any).
    pub recipient: Recipient,
    /// `Status:`.
    pub status: EnhancedStatus,
    /// Quoted in `Diagnostic-Code: smtp; …`.
    pub diagnostic: Reply,
}

/// A `multipart/report; report-type=delivery-status` message: a text part,
/// a `message/delivery-status` part (Reporting-MTA, Original-Envelope-Id when
/// known, Arrival-Date, then per recipient Final-Recipient, Original-Recipient
/// when known, Action: failed, Status, Diagnostic-Code) and the original
/// headers as `text/rfc822-headers`. CRLF line ends throughout.
///
/// `unique` makes the boundary and Message-ID distinct per DSN.
pub fn build_dsn(
    reporting_mta: &str,
    envelope: &Envelope,
    failed: &[FailedRecipient],
    original: &[u8],
    arrival: SystemTime,
    unique: &str,
) -> Vec<u8> {
    let boundary = format!("=_rundbrief_dsn_{unique}");
    let now = rfc5322_date(SystemTime::now());
    let to = &envelope.mail_from.address;
    let mut m = String::with_capacity(2048);
    let mut line = |s: &str| {
        m.push_str(s);
        m.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    ));
    line(&format!("To: <{to}>"));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {now}"));
    line(&format!("Message-ID: <dsn.{unique}@{reporting_mta}>"));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Description: Notification");
    line("");
    line(&format!("This is the mail system at host {reporting_mta}."));
    line("");
    line("Your message could not be delivered to one or more recipients.");
    line("");
    for f in failed {
        line(&format!("<{}>: {}", f.recipient.address, f.diagnostic));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("Content-Description: Delivery report");
    line("");
    line(&format!("Reporting-MTA: dns; {reporting_mta}"));
    if let Some(envid) = &envelope.mail_from.env_id {
        line(&format!("Original-Envelope-Id: {}", one_line(envid)));
    }
    line(&format!("Arrival-Date: {}", rfc5322_date(arrival)));
    for f in failed {
        line("");
        line(&format!(
            "Final-Recipient: rfc822; {}",
            one_line(&f.recipient.address)
        ));
        if let Some(orcpt) = &f.recipient.orcpt {
            line(&format!("Original-Recipient: rfc822; {}", one_line(orcpt)));
        }
        line("Action: failed");
        line(&format!("Status: {}", f.status));
        line(&format!(
            "Diagnostic-Code: smtp; {}",
            one_line(&f.diagnostic.to_string())
        ));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("Content-Description: Undelivered Message Headers");
    line("");
    let mut out = m.into_bytes();
    let headers = header_block(original);
    out.extend_from_slice(headers);
    if !headers.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

pub(crate) fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// The header block of a message (up to the first empty line), capped.
pub(crate) fn header_block(message: &[u8]) -> &[u8] {
    let end = find(message, b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| find(message, b"\n\n").map(|i| i + 1))
        .unwrap_or(message.len());
    let end = end.min(MAX_RETURNED_HEADERS);
    &message[..end]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Mon, 23 Nov 2026 18:45:02 +0000`.
pub(crate) fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WD[days.rem_euclid(7) as usize];
    let mon = MO[(mo as usize).saturating_sub(1).min(11)];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::MailFrom;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_459_502);
        assert_eq!(rfc5322_date(t), "Mon, 23 Nov 2026 18:45:02 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn dsn_shape() {
        let env = Envelope {
            mail_from: MailFrom {
                address: "b-tok@bounce.example".into(),
                env_id: Some("ENV1".into()),
                ..MailFrom::default()
            },
            recipients: vec![],
        };
        let failed = [FailedRecipient {
            recipient: Recipient {
                address: "u@dead.example".into(),
                ..Recipient::default()
            },
            status: EnhancedStatus::new(5, 1, 1),
            diagnostic: Reply::with_status(550, (5, 1, 1), "User unknown"),
        }];
        let dsn = build_dsn(
            "sink.test",
            &env,
            &failed,
            b"Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n",
            UNIX_EPOCH,
            "1",
        );
        let text = String::from_utf8(dsn).expect("ascii");
        for needle in [
            "report-type=delivery-status",
            "Reporting-MTA: dns; sink.test\r\n",
            "Original-Envelope-Id: ENV1\r\n",
            "Final-Recipient: rfc822; u@dead.example\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n",
            "Content-Type: text/rfc822-headers\r\nContent-Description: Undelivered Message Headers\r\n\r\nSubject: hi\r\nFrom: a@b\r\n\r\n--",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("body"));
    }
}
