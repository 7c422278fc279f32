//! Non-standard bounces: recognising them and finding, in their prose, which
//! addresses failed and what the remote server said about each.
//!
//! The shapes are few: the failed address starts a line (`  user@example.org`,
//! `<user@example.org>:`, `user@example.org: reason`, `user@example.org on <date>`)
//! and the reason follows on that line or the next indented ones (Exim, qmail,
//! Postfix without DSN, Gmail, Yahoo, Exchange, Domino, OpenSMTPD, Courier …); or it
//! is named inside a sentence (`error delivering your mail to <user@example.org>`).

use crate::MAX_RECIPIENTS;
use crate::mime::View;

/// A failed address and the report text that belongs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The address as written.
    pub address: String,
    /// Lines of the report about this address (raw, joined with `\n`).
    pub text: String,
}

const LOCAL_CHARS: &[u8] = b"!#$%&'*+-/=?^_`{|}~.";

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || LOCAL_CHARS.contains(&b)
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// Every address-like token in `s`: (start, end) byte offsets.
pub fn find_addresses(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'@') {
        let at = i + off;
        let mut st = at;
        while st > 0 && is_local(b[st - 1]) {
            st -= 1;
        }
        // local part must not start with a dot, quote or slash
        while st < at && matches!(b[st], b'.' | b'\'' | b'/' | b'=') {
            st += 1;
        }
        let mut en = at + 1;
        while en < b.len() && is_domain(b[en]) {
            en += 1;
        }
        while en > at + 1 && matches!(b[en - 1], b'.' | b'-') {
            en -= 1;
        }
        if st < at && en > at + 1 && s[at + 1..en].contains('.') {
            out.push((st, en));
            if out.len() >= 4 * MAX_RECIPIENTS {
                break;
            }
        }
        i = en.max(at + 1);
    }
    out
}

/// Phrases that name the failed address inside a sentence.
const INLINE_TRIGGERS: &[&str] = &[
    "delivering your mail to",
    "deliver your message to",
    "delivery to",
    "could not be delivered to",
    "couldn't be delivered to",
    "not delivered to",
    "failed to deliver to",
    "unable to deliver to",
    "undeliverable to",
    "message to",
    "mail to",
    "recipient:",
    "recipient address:",
    "original-recipient:",
    "failed recipient",
    "addressed to",
    "rcpt to:",
];

/// Lower-cased words that, when the line before an address ends with them, mean
/// the address is the sender, not a recipient.
const SENDER_LEADS: &[&str] = &[
    "sent by",
    "from:",
    "sender:",
    "from",
    "return-path:",
    "contact",
    "envelope-from",
];

/// ASCII case-insensitive `ends_with` (`suffix` is lower-case ASCII).
fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn clean_addr(a: &str) -> String {
    a.trim_matches(['<', '>', '"', '\'', ':', ',', ';', '.', '(', ')', '[', ']'])
        .to_string()
}

/// Finds recipients in a report text.
pub fn extract(report: &str, view: &View) -> Vec<Found> {
    let lines: Vec<&str> = report.lines().take(4000).collect();
    // (line index, address, rest of line after the address)
    let mut heads: Vec<(usize, String, String, bool)> = Vec::new();
    let mut prev_nonblank = "";
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim_end_matches('\r');
        let t = line.trim_start();
        let t = t.trim_start_matches(['*', '-', '>', '•', '\u{a0}', ' ', '\t']);
        if t.is_empty() {
            continue;
        }
        let addrs = find_addresses(t);
        let prev = prev_nonblank.trim();
        prev_nonblank = line;
        let Some(&(st, en)) = addrs.first() else {
            continue;
        };
        let lead = &t[..st];
        // Sendmail's per-recipient summary: `550 <user@example.org>... User unknown`
        let sendmail = lead.len() == 5
            && lead.as_bytes()[..3].iter().all(u8::is_ascii_digit)
            && matches!(lead.as_bytes()[0], b'4' | b'5')
            && lead.ends_with(" <")
            && t[en..].starts_with(">...");
        let lead_ok = sendmail
            || lead.is_empty()
            || lead
                .chars()
                .all(|c| matches!(c, '<' | '"' | '\'' | '(' | '['));
        let addr = clean_addr(&t[st..en]);
        let low_addr = addr.to_ascii_lowercase();
        if view.is_own(&low_addr)
            || heads
                .last()
                .is_some_and(|h| h.1.eq_ignore_ascii_case(&addr))
        {
            continue;
        }
        if lead_ok && SENDER_LEADS.iter().any(|s| ends_with_ci(prev, s)) {
            continue;
        }
        if lead_ok {
            let rest = t[en..].trim_start_matches(['>', '"', '\'', ')', ']']);
            let rest = if sendmail {
                format!("{} {}", &lead[..3], rest.trim_start_matches('.').trim())
            } else {
                rest.to_string()
            };
            // `addr<mailto:addr>` (Outlook) and `addr on <date>` keep the line a head
            heads.push((i, addr, rest, sendmail));
            continue;
        }
        let lower = t.to_ascii_lowercase();
        if INLINE_TRIGGERS
            .iter()
            .any(|p| lower[..st.min(lower.len())].contains(p))
            && !lower.starts_with("to:")
        {
            let rest = t[en..].trim_start_matches(['>', '"', '\'', ')', ']', '.']);
            heads.push((i, addr, rest.to_string(), false));
        }
    }

    let mut out: Vec<Found> = Vec::new();
    for (k, (i, addr, rest, single)) in heads.iter().enumerate() {
        let next = heads
            .iter()
            .skip(k + 1)
            .find(|h| !h.1.eq_ignore_ascii_case(addr))
            .map_or(lines.len(), |h| h.0);
        let mut text = String::new();
        let rest = rest.trim_start_matches(':').trim();
        let rest = rest
            .strip_prefix("<mailto:")
            .map_or(rest, |r| r.split_once('>').map_or("", |x| x.1));
        if !rest.is_empty() {
            text.push_str(rest);
        }
        let mut taken = 0;
        for l in lines.iter().take(next).skip(i + 1) {
            let lt = l.trim();
            if is_separator(lt) && !text.trim().is_empty() {
                break;
            }
            if *single || taken >= 15 || text.len() > crate::MAX_DIAGNOSTIC {
                break;
            }
            if lt.is_empty() || is_transcript_noise(lt) {
                continue;
            }
            text.push('\n');
            text.push_str(lt);
            taken += 1;
        }
        let text = text.trim().to_string();
        if let Some(f) = out
            .iter_mut()
            .find(|f| f.address.eq_ignore_ascii_case(addr))
        {
            if !text.trim().is_empty() && f.text.len() < crate::MAX_DIAGNOSTIC {
                f.text.push('\n');
                f.text.push_str(&text);
            }
        } else if out.len() < MAX_RECIPIENTS {
            out.push(Found {
                address: addr.clone(),
                text,
            });
        }
    }
    out
}

/// A line of an SMTP session transcript that says nothing about the failure: a
/// positive reply (2xx/3xx, also after Sendmail's `<<<`) or the client's
/// EHLO/HELO/QUIT. MDaemon, Sendmail and others quote whole sessions under the
/// failed address; skipping these keeps the line budget for the refusal itself.
fn is_transcript_noise(l: &str) -> bool {
    let l = l.trim_start_matches(['<', '>', ' ']);
    let b = l.as_bytes();
    if b.len() >= 4
        && matches!(b[0], b'2' | b'3')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && matches!(b[3], b' ' | b'-')
    {
        return true;
    }
    let head = &b[..b.len().min(5)];
    head.eq_ignore_ascii_case(b"ehlo ")
        || head.eq_ignore_ascii_case(b"helo ")
        || l.eq_ignore_ascii_case("quit")
}

fn is_separator(l: &str) -> bool {
    l.len() >= 5
        && l.bytes()
            .all(|b| matches!(b, b'-' | b'=' | b'*' | b'_' | b'#' | b' '))
}

const DAEMON_LOCALS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "mail-daemon",
    "maildaemon",
    "mailerdaemon",
    "mailer_daemon",
    "mail.daemon",
    "bounce",
    "bounces",
    "mdaemon",
];
const DAEMON_NAMES: &[&str] = &[
    "mail delivery",
    "mailer-daemon",
    "mailer daemon",
    "postmaster",
    "mail system",
    "delivery subsystem",
    "system administrator",
    "mail administrator",
    "mail service",
];
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered",
    "delivery status notification",
    "delivery failure",
    "failure notice",
    "delivery failed",
    "mail delivery",
    "returned mail",
    "returned to sender",
    "could not be delivered",
    "non-delivery",
    "nondelivery",
    "non delivery",
    "nondeliverable",
    "non-deliverable",
    "non remis",
    "unzustellbar",
    "delivery notification",
    "mail system error",
    "mail failure",
    "delivery problem",
    "delivery report",
    "not delivered",
    "warning: message",
    "delivery delayed",
    "delayed mail",
    "failed delivery",
    "bounce",
    "error sending",
    "unable to deliver",
    "delivery has failed",
    "delivery notice",
    "returned message",
    "nicht zustellbar",
    "no se pudo entregar",
    "non recapitabile",
    "message status",
];
const BOUNCE_BODY: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "undeliverable",
    "delivery has failed",
    "delivery to the following recipient",
    "permanent error",
    "permanent fatal error",
    "unable to deliver",
    "wasn't able to deliver",
    "was not delivered",
    "did not reach the following",
    "error delivering",
    "transcript of session",
    "this is the mail system at",
    "qmail-send",
    "failed permanently",
    "delivery failed",
    "not be delivered",
    "could not deliver",
    "failed to deliver",
    "rejected by",
    "returned to sender",
    "following address",
    "following recipient",
    "has not yet been delivered",
    "delivery is delayed",
    "non-delivery",
    "mail delivery software",
    "delivery status notification",
    "remote host said",
    "did not like our",
    "the following addresses had",
    "not delivered to",
    "delivery to",
    "failed:",
    "error occurred while trying to deliver",
    "message could not be",
    "address(es) failed",
    "unable to be delivered",
    "was rejected",
    "recipient(s) failed",
    "delivery failure",
    "did not reach some or all",
    "could not be delivered to",
    "no such user",
    "user unknown",
    "unknown user",
];
const DELAY_MARKS: &[&str] = &[
    "has not yet been delivered",
    "will be retried",
    "will continue to try",
    "still trying",
    "delivery is delayed",
    "has been delayed",
    "warning message only",
    "no action is required on your part",
    "delayed",
    "will retry",
    "delivery attempts will continue",
    "not yet been delivered",
    "temporary failure",
    "delivery has been delayed",
    "warning only",
    "do not need to resend",
];
/// "Warning:" alone is no delay: MDaemon and others title permanent failures
/// "Warning: <address> - User unknown!"; Sendmail's and Exim's delay subjects name
/// the delay ("could not send message for past 4 hours", "message … delayed").
const DELAY_SUBJECTS: &[&str] = &[
    "delay",
    "(warning)",
    "delivery status notification (delay)",
    "could not send message for past",
];
const FAILURE_MARKS: &[&str] = &[
    "failed permanently",
    "permanent error",
    "permanent failure",
    "given up",
    "giving up",
    "could not be delivered",
    "fatal error",
    "gave up",
];

/// Local-part endings and starts of the addresses list managers send their notices
/// from: Mailman (`-owner`, `-bounces`, `-request`), Majordomo and ezmlm (`owner-`,
/// `-help`), fml (`-admin`, `-ctl`), and the managers' own names (LISTSERV, Sympa).
const LIST_SENDER_ENDS: &[&str] = &["-admin", "-owner", "-request", "-bounces", "-ctl", "-help"];
const LIST_SENDER_STARTS: &[&str] = &[
    "owner-",
    "listserv",
    "majordomo",
    "mailman",
    "sympa",
    "ezmlm",
    "listproc",
];
/// A list manager refusing a post because the poster is not a member: Mailman
/// ("Post by non-member to a members-only list", "You are not allowed to post to
/// this mailing list"), ezmlm ("Sorry, only subscribers may post"), LISTSERV ("You
/// are not authorized to send mail to the … list"), Sympa, fml ("You are not a member
/// of this mailing list"). Lower-case; searched in the subject and the text.
const LIST_REFUSAL: &[&str] = &[
    "not a member",
    "are not member",
    "non-member",
    "nonmember",
    "members-only",
    "members only",
    "only subscribers",
    "only members",
    "not a subscriber",
    "not subscribed",
    "not allowed to post",
    "not authorized to post",
    "not authorised to post",
    "not authorized to send mail to",
];

static LIST_REFUSAL_SET: std::sync::LazyLock<aho_corasick::AhoCorasick> =
    std::sync::LazyLock::new(|| automaton(LIST_REFUSAL));

/// Whether the message is a mailing list manager's notice that it refused our post
/// (the list is alive; we may not post to it): sent from a list manager's address,
/// with refusal words in the subject or the text. Not a bounce in form (no daemon
/// sender, no bounce prose), so [`looks_like_bounce`] does not see it.
pub fn is_list_refusal(view: &View, report_lower: &str) -> bool {
    let local = view.from_local();
    let list_sender = LIST_SENDER_ENDS.iter().any(|e| local.ends_with(e))
        || LIST_SENDER_STARTS.iter().any(|s| local.starts_with(s));
    list_sender
        && (LIST_REFUSAL_SET.is_match(&view.subject) || LIST_REFUSAL_SET.is_match(report_lower))
}

/// One automaton per needle list that is searched in the whole report text (up to
/// 64 KiB): one pass instead of one `contains` per needle.
fn automaton(needles: &[&str]) -> aho_corasick::AhoCorasick {
    aho_corasick::AhoCorasick::new(needles)
        .expect("a few dozen short literal needles: always a valid automaton")
}

static BOUNCE_BODY_SET: std::sync::LazyLock<aho_corasick::AhoCorasick> =
    std::sync::LazyLock::new(|| automaton(BOUNCE_BODY));
static DELAY_MARKS_SET: std::sync::LazyLock<aho_corasick::AhoCorasick> =
    std::sync::LazyLock::new(|| automaton(DELAY_MARKS));
static FAILURE_MARKS_SET: std::sync::LazyLock<aho_corasick::AhoCorasick> =
    std::sync::LazyLock::new(|| automaton(FAILURE_MARKS));

/// Evidence, from headers and text, that the message is a bounce.
pub fn looks_like_bounce(view: &View, x_failed: bool, report_lower: &str) -> bool {
    if x_failed {
        return true;
    }
    let local = view.from_local();
    let daemon = view.from_addr.is_empty()
        || DAEMON_LOCALS
            .iter()
            .any(|d| local == *d || local.starts_with("mailer-daemon"))
        || DAEMON_NAMES.iter().any(|d| view.from_name.contains(d));
    let subject = BOUNCE_SUBJECTS.iter().any(|s| view.subject.contains(s));
    // `(daemon && (subject || body)) || (subject && body) || (body && has_original)`,
    // with the text searched only when the headers do not decide.
    if daemon && subject {
        return true;
    }
    (daemon || subject || view.has_original) && BOUNCE_BODY_SET.is_match(report_lower)
}

/// Delivery (success) notices written as prose: Exchange's "Delivered:" subject and
/// "Delivery to these recipients or groups is complete", Microsoft's "Delivery to
/// the following recipients was successful", "… has been delivered to …".
const SUCCESS_SUBJECTS: &[&str] = &["delivered:", "(success)", "(relay)", "relayed:"];
const SUCCESS_MARKS: &[&str] = &[
    "delivery to the following recipients was successful",
    "delivery to these recipients or groups is complete",
    "successfully delivered",
    "has been delivered to",
    "was delivered to the following",
    "relayed to the following",
];

static SUCCESS_MARKS_SET: std::sync::LazyLock<aho_corasick::AhoCorasick> =
    std::sync::LazyLock::new(|| automaton(SUCCESS_MARKS));

/// Whether a heuristic "bounce" is a delivery notice: a success subject or success
/// words, and no word of failure anywhere (a report that lists delivered and failed
/// recipients is a bounce).
pub fn is_success(view: &View, report_lower: &str) -> bool {
    if view.subject.contains("fail")
        || view.subject.contains("undeliver")
        || [
            "fail",
            "undeliver",
            "not delivered",
            "not be delivered",
            "reject",
            "error",
        ]
        .iter()
        .any(|w| report_lower.contains(w))
    {
        return false;
    }
    SUCCESS_SUBJECTS.iter().any(|s| view.subject.contains(s))
        || SUCCESS_MARKS_SET.is_match(report_lower)
}

/// Whether a heuristic bounce is only a delay warning.
pub fn is_delay(view: &View, report_lower: &str) -> bool {
    // `(delay subject or delay text) and not failed`, cheapest tests first: a failure
    // mark usually comes early in a report, the absence of a delay mark needs the
    // whole text.
    if view.subject.contains("fail")
        || view.subject.contains("undeliver")
        || FAILURE_MARKS_SET.is_match(report_lower)
    {
        return false;
    }
    DELAY_SUBJECTS.iter().any(|s| view.subject.contains(s))
        || DELAY_MARKS_SET.is_match(report_lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(own: &[&str]) -> View<'static> {
        View {
            own_addrs: own.iter().map(|s| s.to_string()).collect(),
            ..View::default()
        }
    }

    #[test]
    fn addresses_in_text() {
        let s = "to <a.b+c@example.org>: host mx[1.2.3.4]; also x@y and kijitora@example.jp.";
        let got: Vec<&str> = find_addresses(s)
            .into_iter()
            .map(|(a, b)| &s[a..b])
            .collect();
        assert_eq!(got, vec!["a.b+c@example.org", "kijitora@example.jp"]);
    }

    #[test]
    fn shapes() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            // Exim
            (
                "The following address(es) failed:\n\n  kijitora@example.com\n    host mx [192.0.2.1]\n    SMTP error from remote mail server after RCPT TO:<kijitora@example.com>:\n    550 5.1.1 User unknown\n",
                &[(
                    "kijitora@example.com",
                    "host mx [192.0.2.1]\nSMTP error from remote mail server after RCPT TO:<kijitora@example.com>:\n550 5.1.1 User unknown",
                )],
            ),
            // qmail, two recipients
            (
                "<a@example.jp>:\nRemote host said: 550 5.1.1 User Unknown\n\n<b@example.jp>:\nRemote host said: 552 5.2.2 Mailbox Full\n",
                &[
                    ("a@example.jp", "Remote host said: 550 5.1.1 User Unknown"),
                    ("b@example.jp", "Remote host said: 552 5.2.2 Mailbox Full"),
                ],
            ),
            // Postfix without DSN
            (
                "<a@example.jp>: host mx.example.jp[192.0.2.2] said: 550 5.1.1 <a@example.jp>:\n    User unknown (in reply to RCPT TO command)\n",
                &[(
                    "a@example.jp",
                    "host mx.example.jp[192.0.2.2] said: 550 5.1.1 <a@example.jp>:\nUser unknown (in reply to RCPT TO command)",
                )],
            ),
            // sentence, sender excluded
            (
                "A message sent by\n  <me@example.net>\ncould not be delivered.\nThere was an error delivering your mail to <x@example.org>.\nmx did not like our RCPT TO:\n550 no\n",
                &[("x@example.org", "mx did not like our RCPT TO:\n550 no")],
            ),
        ];
        for (text, want) in cases {
            let got: Vec<(String, String)> = extract(text, &view(&[]))
                .into_iter()
                .map(|f| (f.address, f.text))
                .collect();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(got, want, "{text}");
        }
        // own addresses never count
        assert!(extract("  me@example.net\n", &view(&["me@example.net"])).is_empty());
        // a session transcript keeps the refusal, not the positive replies
        let got = extract(
            "> kim@example.net\n--- Session Transcript ---\n220 mx ESMTP ready\nEHLO a.example\n250-mx Hello\n250 SIZE 1000\nMAIL From:<me@example.com>\n250 Sender ok\nRCPT To:<kim@example.net>\n552 Message for <kim@example.net> would exceed mailbox quota\nQUIT\n",
            &view(&[]),
        );
        assert_eq!(
            got[0].text,
            "--- Session Transcript ---\nMAIL From:<me@example.com>\nRCPT To:<kim@example.net>\n552 Message for <kim@example.net> would exceed mailbox quota"
        );
    }
}
