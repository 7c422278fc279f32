//! # rundbrief-bounce
//!
//! Turns the bytes of a message that arrived at rundbrief's bounce address into a
//! typed verdict: what kind of message it is (RFC 3464 DSN, non-standard bounce,
//! RFC 3834 auto-reply, RFC 5965 feedback report) and, for every recipient it names,
//! whether the address is dead (`hard`), troubled (`soft`), refused *us* (`block`),
//! complained (`complaint`) or needs nothing (`ignore`), with the rule that decided.
//!
//! **Owns:** MIME walking (`walk.rs`: mail-parser's message walker, trimmed to what
//! rundbrief reads and built on mail-parser's own stream, decoders and header value
//! parsers, so parts and values are the ones `mail_parser::MessageParser` gives),
//! the delivery-status and feedback-report field parsers, the heuristics for
//! non-standard bounces, the classification rule table ([`RULES`]) that the sender
//! also uses for synchronous SMTP replies ([`classify_reply`]).
//!
//! **Never does:** I/O, database access, SMTP, async, logging, or deciding what to do
//! with a subscriber (scoring and pruning live with the bounce endpoint). All entry
//! points are pure functions that never panic, whatever the input.
//!
//! **Start reading at** [`parse`] (the order in which a message is recognised), then
//! `rules.rs` (the table and why it is in that order), `dsn.rs` and `heuristic.rs`;
//! `walk.rs` and `mime.rs` for how a message becomes the text the recognisers read.
//!
//! **Cost** (`examples/parse_count.rs` under callgrind, fixture corpus, 2026-12-03):
//! ~132k instructions per message (128k before issue #16's phrase families, masked
//! local parts and list/JMRP/inline-ARF probes; 126k before per-recipient
//! evidence), about half of it the MIME walk. What keeps it
//! there: only the headers rundbrief reads are parsed (the rest are skipped with
//! `memchr`), a returned message is cut after its header block, bodies that are never
//! read (images, attachments, HTML next to a text part) are not decoded, ASCII text
//! skips the charset decoder, and whole-text phrase searches are skipped when headers
//! already decide.
//!
//! ```
//! let raw = b"From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\n\
//!             <gone@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 <gone@example.net>:\r\n\
//!             \x20   Recipient address rejected: User unknown (in reply to RCPT TO command)\r\n";
//! let b = rundbrief_bounce::parse(raw);
//! assert_eq!(b.class, rundbrief_bounce::BounceClass::Hard);
//! assert_eq!(b.recipients[0].address, "gone@example.net");
//! assert_eq!(b.recipients[0].status, "5.1.1");
//! ```

mod autoreply;
mod dsn;
mod fields;
mod heuristic;
mod mime;
mod model;
mod rules;
pub mod score;
mod ses;
mod status;
mod walk;

use mail_parser::Message;

pub use dsn::{DsnRecipient, DsnReport, parse_delivery_status};
pub use fields::{Field, parse_fields};
pub use model::{BounceClass, BounceKind, Evidence, ParsedBounce, Recipient};
pub use rules::{Cond, RULES, Rule, Stage, VETO_RULE, classify_reply, classify_reply_evidence};
pub use status::StatusCode;

use heuristic::Found;
use mime::View;
use rules::{Signal, Verdict, collapse, normalize, stage_of, verdict};

/// Only the first 4 MiB of a message are looked at; the rest is ignored (bounce
/// reports put their verdict first, the returned message last).
pub const MAX_INPUT: usize = 4 << 20;
/// At most this many recipients are reported per message; further ones are dropped.
pub const MAX_RECIPIENTS: usize = 1000;
/// At most this many fields are read from one delivery-status or feedback-report
/// body; the rest of the body is ignored.
pub const MAX_FIELDS: usize = 10_000;
/// A field value longer than this (after unfolding) is truncated.
pub const MAX_FIELD_VALUE: usize = 4096;
/// A recipient's `diagnostic` is truncated to this many bytes.
pub const MAX_DIAGNOSTIC: usize = 1024;
/// At most this much human-readable report text is searched by the heuristics.
pub const MAX_REPORT_TEXT: usize = 64 * 1024;
/// At most this many MIME parts of the top-level message are visited.
pub const MAX_PARTS: usize = 256;

/// Parses and classifies one inbound message. Never panics and never fails: a
/// message that is not recognised comes back with kind `unknown`, class `ignore`
/// and rule `not-a-bounce`.
///
/// Recognition order (first match wins):
///
/// 1. **ARF** (`multipart/report; report-type=feedback-report` or a
///    `message/feedback-report` part) → kind `arf`, class `complaint` (`not-spam`
///    reports are `ignore`); the recipients are the `Original-Rcpt-To` /
///    `Removal-Recipient` fields, else the To of the returned message. Apple Mail's
///    `X-Apple-Unsubscribe: true` requests count as `arf`/`opt-out` too.
/// 2. **Provider notifications** in JSON (Amazon SES via SNS) → kind `heuristic`.
/// 3. **DSN** (`message/delivery-status` part, or DSN fields written inline) →
///    kind `dsn`; every recipient block is classified by [`RULES`] from its Status
///    and Diagnostic-Code. `Action: delivered/relayed/expanded` → `ignore`;
///    `Action: delayed` → `soft` (the mailbox or its host is in trouble now: counted
///    a little, never pruned at once; DESIGN.md said `ignore`, see
///    docs/architecture.md) unless the reason is `block` (a sender problem worth
///    knowing about even before the final failure).
/// 4. **Non-standard bounce** (daemon sender or bounce subject, with bounce prose or
///    `X-Failed-Recipients`) → kind `heuristic`, same rules, same delay policy.
/// 5. **Mailing list refusal** (a list manager's notice that only members may post,
///    from a `-owner`/`-request`/`-admin`/`owner-`/LISTSERV-style address) → kind
///    `heuristic`, same rules (`text-mailing-list-refused`: the list is alive).
/// 6. **Auto-reply** (RFC 3834 `Auto-Submitted: auto-replied`, `X-Autoreply`,
///    `X-Autorespond`, `Precedence: auto_reply/junk`, out-of-office subjects) → kind
///    `auto-reply`, class `ignore`. Checked after bounces because some MTAs mark their
///    bounces `auto-replied`.
pub fn parse(raw: &[u8]) -> ParsedBounce {
    let raw = &raw[..raw.len().min(MAX_INPUT)];
    parse_at_depth(cut_returned_message(raw), 0)
}

/// At most this much of a returned original message is kept (its header block).
pub const MAX_RETURNED_MESSAGE: usize = 64 * 1024;

/// Reports put the returned original message last (RFC 6522) and rundbrief reads
/// only its header block (Message-ID, To). So the input is cut after the header
/// block of the message that follows the first `Content-Type: message/rfc822` (or
/// `text/rfc822-headers`) line, and at most [`MAX_RETURNED_MESSAGE`] bytes after
/// that line: the body of the returned message (often the whole newsletter, with
/// attachments) is never decoded.
fn cut_returned_message(raw: &[u8]) -> &[u8] {
    for i in memchr::memmem::find_iter(raw, b"822") {
        if i < 4 || !raw[i - 4..i].eq_ignore_ascii_case(b"/rfc") {
            continue;
        }
        let line_start = raw[..i]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let line = raw[line_start..i].trim_ascii_start();
        if line.len() < 13 || !line[..13].eq_ignore_ascii_case(b"content-type:") {
            continue;
        }
        let limit = raw.len().min(i + MAX_RETURNED_MESSAGE);
        let Some(mut body) = after_blank_line(raw, i) else {
            return &raw[..limit];
        };
        while body < raw.len() && matches!(raw[body], b'\r' | b'\n') {
            body += 1;
        }
        return match after_blank_line(raw, body) {
            Some(end) => &raw[..end.min(limit)],
            None => &raw[..limit],
        };
    }
    raw
}

/// Index just past the first empty line at or after `from`.
fn after_blank_line(raw: &[u8], from: usize) -> Option<usize> {
    let hay = raw.get(from..)?;
    let lf = memchr::memmem::find(hay, b"\n\n").map(|p| p + 2);
    let crlf = memchr::memmem::find(hay, b"\n\r\n").map(|p| p + 3);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(from + a.min(b)),
        (a, b) => a.or(b).map(|p| from + p),
    }
}

/// How many times a bounce forwarded inline (as the text body of another message)
/// is unwrapped.
const MAX_FORWARD_DEPTH: u8 = 2;

fn parse_at_depth(raw: &[u8], depth: u8) -> ParsedBounce {
    let Some(walked) = walk::parse(raw) else {
        return ParsedBounce::empty(BounceKind::Unknown, BounceClass::Ignore, "not-a-bounce");
    };
    let view = View::build(&walked);
    let msg = &walked.msg;

    if view.report_type.as_deref() == Some("feedback-report") || view.feedback_report.is_some() {
        return arf(&view);
    }
    if header_text(msg, "x-apple-unsubscribe")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        let mut b =
            ParsedBounce::empty(BounceKind::Arf, BounceClass::Complaint, "apple-unsubscribe");
        b.feedback_type = Some("opt-out".to_string());
        b.recipients.push(plain_recipient(
            &view.from_addr,
            BounceClass::Complaint,
            "apple-unsubscribe",
        ));
        return b;
    }
    if let Some(address) = jmrp_recipient(raw) {
        let rule = "jmrp-original-recipient";
        let mut b = ParsedBounce::empty(BounceKind::Arf, BounceClass::Complaint, rule);
        b.feedback_type = Some("abuse".to_string());
        b.original_message_id = view.original_message_id.clone();
        b.recipients
            .push(plain_recipient(&address, BounceClass::Complaint, rule));
        return b;
    }
    if let Some(text) = view.first_text
        && let Some(b) = ses::parse(text)
    {
        return b;
    }

    if depth < MAX_FORWARD_DEPTH
        && let Some(inner) = view.first_text.filter(|t| looks_like_message(t))
    {
        let b = parse_at_depth(inner.trim_start().as_bytes(), depth + 1);
        if matches!(
            b.kind,
            BounceKind::Dsn | BounceKind::Heuristic | BounceKind::Arf
        ) {
            return b;
        }
    }

    // Found lazily: DSN recipients need the prose only when their fields are thin.
    let mut found: Option<Vec<Found>> = None;
    let mut report_stage: Option<rules::Stage> = None;
    let mut refusal = ReportRefusal::default();

    // DSN: a delivery-status part, or its fields inline in the text.
    let mut reports: Vec<DsnReport> = view
        .delivery_status
        .iter()
        .map(|t| parse_delivery_status(t))
        .collect();
    if reports.iter().all(|r| r.recipients.is_empty())
        && let Some(inline) = dsn::inline_fields(&view.full_text)
    {
        reports.push(parse_delivery_status(inline));
    }
    if reports.iter().any(|r| !r.recipients.is_empty()) {
        let mut b = ParsedBounce::empty(
            BounceKind::Dsn,
            BounceClass::Unknown,
            "dsn-without-recipient",
        );
        for rep in &reports {
            b.reporting_mta = b.reporting_mta.take().or_else(|| rep.reporting_mta.clone());
            b.original_envelope_id = b
                .original_envelope_id
                .take()
                .or_else(|| rep.original_envelope_id.clone());
            for r in &rep.recipients {
                if b.recipients.len() >= MAX_RECIPIENTS {
                    break;
                }
                b.recipients.push(dsn_recipient(
                    r,
                    &mut found,
                    &mut report_stage,
                    &mut refusal,
                    &view,
                ));
            }
        }
        b.original_message_id = view.original_message_id.clone();
        b.settle("dsn-without-recipient");
        return b;
    }

    if let Some(text) = inline_feedback_report(&view.full_text) {
        return arf_fields(&view, text);
    }

    let x_failed = header_text(msg, "x-failed-recipients");
    let report_lower = normalize(&view.report);
    if heuristic::looks_like_bounce(&view, x_failed.is_some(), &report_lower) {
        let found = found.unwrap_or_else(|| heuristic::extract(&view.report, &view));
        return heuristic_bounce(&view, &found, x_failed.as_deref(), &report_lower);
    }

    if heuristic::is_list_refusal(&view, &report_lower) {
        // Recipients from the returned message only: the notice's prose names the
        // list's own command addresses, not ours.
        return heuristic_bounce(&view, &[], x_failed.as_deref(), &report_lower);
    }

    if let Some(rule) = autoreply::detect(msg, &view) {
        let mut b = ParsedBounce::empty(BounceKind::AutoReply, BounceClass::Ignore, rule);
        b.recipients
            .push(plain_recipient(&view.from_addr, BounceClass::Ignore, rule));
        b.original_message_id = first_message_id(msg, "in-reply-to");
        return b;
    }
    ParsedBounce::empty(BounceKind::Unknown, BounceClass::Ignore, "not-a-bounce")
}

/// Microsoft's Junk Mail Reporting Program (Outlook.com, Hotmail) sends a complaint
/// as the complained-about message with an `X-HmXmrOriginalRecipient: <address>`
/// header added, and no feedback-report part: the address of that header.
fn jmrp_recipient(raw: &[u8]) -> Option<String> {
    const NAME: &[u8] = b"X-HmXmrOriginalRecipient:";
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(NAME));
    let at = FINDER.find(raw)?;
    // a header name starts a line
    if at > 0 && raw[at - 1] != b'\n' {
        return None;
    }
    let rest = &raw[at + NAME.len()..];
    let line = &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())];
    let line = String::from_utf8_lossy(line);
    let (a, b) = heuristic::find_addresses(&line).into_iter().next()?;
    Some(line[a..b].to_string())
}

/// Whether a text body starts with header fields (a message forwarded inline).
fn looks_like_message(text: &str) -> bool {
    let mut lines = text.trim_start().lines();
    let first = lines.next().unwrap_or("").to_ascii_lowercase();
    [
        "return-path:",
        "received:",
        "from:",
        "delivered-to:",
        "x-original-to:",
        "date:",
        "message-id:",
    ]
    .iter()
    .any(|h| first.starts_with(h))
}

/// Value of the first header called `name` (case-insensitive), as text.
fn header_text(msg: &Message<'_>, name: &str) -> Option<String> {
    debug_assert!(
        walk::NEEDED
            .iter()
            .any(|(h, _)| h.eq_ignore_ascii_case(name)),
        "{name} must be in walk::NEEDED"
    );
    msg.headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| match h.value() {
            mail_parser::HeaderValue::Text(t) => t.to_string(),
            mail_parser::HeaderValue::TextList(l) => l.join(", "),
            _ => msg
                .raw_message()
                .get(h.offset_start() as usize..h.offset_end() as usize)
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default(),
        })
}

fn first_message_id(msg: &Message<'_>, name: &str) -> Option<String> {
    let v = header_text(msg, name)?;
    let id = v
        .split_whitespace()
        .next()?
        .trim_matches(['<', '>'])
        .to_string();
    (!id.is_empty()).then_some(id)
}

fn plain_recipient(address: &str, class: BounceClass, rule: &'static str) -> Recipient {
    Recipient {
        address: address.to_string(),
        status: String::new(),
        action: String::new(),
        class,
        diagnostic: String::new(),
        reply_code: None,
        remote_mta: None,
        rule,
        evidence: None,
    }
}

/// Applies the action policy around [`rules::classify`].
fn decide(action: &str, s: &Signal<'_>) -> Verdict {
    let fixed = |class, rule| Verdict {
        class,
        rule,
        group: None,
    };
    match action {
        "delivered" => fixed(BounceClass::Ignore, "action-delivered"),
        "relayed" => fixed(BounceClass::Ignore, "action-relayed"),
        "expanded" => fixed(BounceClass::Ignore, "action-expanded"),
        "delayed" => match verdict(s) {
            v if v.class == BounceClass::Block => v,
            _ => fixed(BounceClass::Soft, "action-delayed"),
        },
        _ => verdict(s),
    }
}

/// The evidence for `v`: the codes of `s` and the words the deciding rule matched,
/// cut from `diagnostic` (the same text as `s.text`, white space collapsed the same
/// way but not lower-cased, so the byte offsets agree) where it was not truncated.
pub(crate) fn evidence(s: &Signal<'_>, v: &Verdict, diagnostic: &str) -> Evidence {
    let phrase = v
        .group
        .and_then(|g| rules::first_match(s.text, g))
        .map(|(a, b)| whole_words(s.text.as_bytes(), a, b))
        .and_then(|(a, b)| diagnostic.get(a..b).or_else(|| s.text.get(a..b)))
        .map(str::to_string);
    Evidence {
        status: s.status.map(|c| c.to_string()),
        reply_code: s.reply,
        phrase,
        stage: s.stage.name(),
    }
}

/// The status to report: the Status field, unless it is generic (x.y.0) and the
/// diagnostic carries a more precise code of the same class.
fn pick_status(field: Option<StatusCode>, diag: Option<StatusCode>) -> Option<StatusCode> {
    match (field, diag) {
        (None, d) => d,
        (Some(f), Some(d)) if f.is_generic() && d.class >= f.class && d != f => Some(d),
        (f, _) => f,
    }
}

fn signal_parts(norm: &str) -> (Option<u16>, Option<StatusCode>) {
    let (reply, st) = status::find_reply(norm);
    (
        reply,
        st.or_else(|| status::find_status_codes(norm).map(|(_, c)| c).next()),
    )
}

fn dsn_recipient(
    r: &DsnRecipient,
    found: &mut Option<Vec<Found>>,
    report_stage: &mut Option<rules::Stage>,
    refusal: &mut ReportRefusal,
    view: &View<'_>,
) -> Recipient {
    fn found_now<'f>(found: &'f mut Option<Vec<Found>>, view: &View<'_>) -> &'f [Found] {
        found.get_or_insert_with(|| heuristic::extract(&view.report, view))
    }
    let mut address = r.address().to_string();
    if address.is_empty()
        && let Some(f) = found_now(found, view).first()
    {
        address = f.address.clone();
    }
    let status_field = StatusCode::parse_field(&r.status);
    let mut diag_raw = r.diagnostic.clone();
    if diag_raw.trim().is_empty() && status_field.is_none_or(|s| s.is_generic()) {
        let fs = found_now(found, view);
        let ctx = fs
            .iter()
            .find(|f| f.address.eq_ignore_ascii_case(&address))
            .or_else(|| if fs.len() == 1 { fs.first() } else { None });
        if let Some(f) = ctx {
            diag_raw = f.text.clone();
        }
    }
    let norm = normalize(&diag_raw);
    let (reply, diag_status) = signal_parts(&norm);
    let status = pick_status(status_field, diag_status);
    let mut signal = Signal::new(status, reply, &norm);
    if signal.stage == rules::Stage::Unknown
        && needs_stage(&verdict(&signal))
        && *report_stage.get_or_insert_with(|| stage_of(&normalize(&view.report)))
            != rules::Stage::Unknown
    {
        // A rejection that only came after DATA (or before RCPT) is not about the
        // address; Postfix and others name the SMTP step in the prose part only.
        if let Some(f) = found_now(found, view)
            .iter()
            .find(|f| f.address.eq_ignore_ascii_case(&address))
        {
            signal = signal.with_stage(stage_of(&normalize(&f.text)));
        }
    }
    let action = if r.action.is_empty() {
        "failed"
    } else {
        r.action.as_str()
    };
    let v = decide(action, &signal);
    let diagnostic = collapse(&diag_raw, MAX_DIAGNOSTIC);
    let (v, evidence) = match refusal.for_verdict(&v, view, None) {
        Some(found) => found,
        None => (v, evidence(&signal, &v, &diagnostic)),
    };
    Recipient {
        address,
        status: status.map(|s| s.to_string()).unwrap_or_default(),
        action: action.to_string(),
        class: v.class,
        evidence: Some(evidence),
        diagnostic,
        reply_code: reply,
        remote_mta: (!r.remote_mta.is_empty()).then(|| r.remote_mta.clone()),
        rule: v.rule,
    }
}

/// A failure that nothing in its own diagnostic explains (only the last rule,
/// `unclassified-failure`, held) takes a `block` verdict from the whole report when
/// the report's prose says the receiver refused us: AOL's "they are not accepting
/// mail from <sender>" above a list of bare addresses, an X.400 gateway whose
/// Diagnostic-Code is "Unable-To-Transfer" while its prose quotes "5.7.1 Unable to
/// relay". Only the rules of [`rules::REFUSED_US`] are taken: other words elsewhere
/// in a report may be about another recipient ("user unknown"), so they never decide
/// for this one. The report is read once per message, when the first unexplained
/// recipient asks.
#[derive(Default)]
struct ReportRefusal(Option<Option<(Verdict, Evidence)>>);

impl ReportRefusal {
    fn for_verdict(
        &mut self,
        v: &Verdict,
        view: &View<'_>,
        report_lower: Option<&str>,
    ) -> Option<(Verdict, Evidence)> {
        if v.rule != "unclassified-failure" {
            return None;
        }
        self.0
            .get_or_insert_with(|| {
                let owned;
                let norm = match report_lower {
                    Some(n) => n,
                    None => {
                        owned = normalize(&view.report);
                        &owned
                    }
                };
                let (reply, status) = signal_parts(norm);
                let s = Signal::new(status, reply, norm);
                let r = verdict(&s);
                rules::REFUSED_US.contains(&r.rule).then(|| {
                    let text = collapse(&view.report, MAX_REPORT_TEXT);
                    (r, evidence(&s, &r, &text))
                })
            })
            .clone()
    }
}

/// Widens `a..b` to whole words (a needle such as `polic` shows as `policy`).
fn whole_words(t: &[u8], mut a: usize, mut b: usize) -> (usize, usize) {
    while a > 0
        && t[a - 1].is_ascii_alphanumeric()
        && t.get(a).is_some_and(u8::is_ascii_alphanumeric)
    {
        a -= 1;
    }
    while b < t.len() && t[b].is_ascii_alphanumeric() && b > 0 && t[b - 1].is_ascii_alphanumeric() {
        b += 1;
    }
    (a, b)
}

/// Whether the SMTP step matters to a verdict, so that a step named only in the
/// report's prose (Postfix, Sendmail transcripts) is worth looking up: a `hard` or
/// `soft` reading that a DATA-time or pre-RCPT rejection would turn into `block`,
/// and recipient words that only the RCPT step can confirm.
fn needs_stage(v: &Verdict) -> bool {
    matches!(v.class, BounceClass::Hard | BounceClass::Soft)
        || v.rule == "text-user-unknown-unconfirmed"
}

fn heuristic_bounce(
    view: &View,
    found: &[Found],
    x_failed: Option<&str>,
    report_lower: &str,
) -> ParsedBounce {
    let mut b = ParsedBounce::empty(
        BounceKind::Heuristic,
        BounceClass::Unknown,
        "bounce-without-recipient",
    );
    b.original_message_id = view.original_message_id.clone();
    let action = if heuristic::is_success(view, report_lower) {
        "delivered"
    } else if heuristic::is_delay(view, report_lower) {
        "delayed"
    } else {
        "failed"
    };
    let mut refusal = ReportRefusal::default();

    let mut items: Vec<(String, String)> = found
        .iter()
        .map(|f| (f.address.clone(), f.text.clone()))
        .collect();
    if items.is_empty() {
        let mut addrs: Vec<String> = Vec::new();
        if let Some(x) = x_failed {
            for (s, e) in heuristic::find_addresses(x) {
                addrs.push(x[s..e].to_string());
            }
        }
        if addrs.is_empty() {
            addrs = view
                .original_to
                .iter()
                .filter(|a| !view.is_own(a))
                .cloned()
                .collect();
        }
        if addrs.is_empty() {
            addrs.push(String::new());
        }
        items = addrs
            .into_iter()
            .take(MAX_RECIPIENTS)
            .map(|a| (a, String::new()))
            .collect();
    }
    for (address, text) in items {
        let from_report = text.trim().is_empty();
        let text = if from_report {
            view.report.as_ref()
        } else {
            text.as_str()
        };
        // `report_lower` is `normalize(&view.report)` already.
        let owned;
        let norm: &str = if from_report {
            report_lower
        } else {
            owned = normalize(text);
            &owned
        };
        let (reply, status) = signal_parts(norm);
        let signal = Signal::new(status, reply, norm);
        let v = decide(action, &signal);
        let diagnostic = collapse(text, MAX_DIAGNOSTIC);
        let from_prose = if from_report {
            None
        } else {
            refusal.for_verdict(&v, view, Some(report_lower))
        };
        let (v, evidence) = match from_prose {
            Some(found) => found,
            None => (v, evidence(&signal, &v, &diagnostic)),
        };
        b.recipients.push(Recipient {
            address,
            status: status.map(|s| s.to_string()).unwrap_or_default(),
            action: action.to_string(),
            class: v.class,
            evidence: Some(evidence),
            diagnostic,
            reply_code: reply,
            remote_mta: None,
            rule: v.rule,
        });
    }
    b.settle("bounce-without-recipient");
    b
}

fn arf(view: &View) -> ParsedBounce {
    arf_fields(view, view.feedback_report.as_deref().unwrap_or(""))
}

/// Where a feedback report's fields are written inline in a text part (no
/// `message/feedback-report` part; some providers' loops forward reports as plain
/// text), the text from the first field on: a `Feedback-Type:` line and one of the
/// other two fields RFC 5965 requires (`User-Agent:`, `Version:`) at line starts.
fn inline_feedback_report(text: &str) -> Option<&str> {
    use crate::mime::starts_with_ci;
    static NEEDLE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"eedback-"));
    // Cheap rejection: nearly every message lacks the word.
    NEEDLE.find(text.as_bytes())?;
    let (mut pos, mut start, mut typ, mut other) = (0, None, false, false);
    for line in text.split_inclusive('\n') {
        let l = line.trim_start();
        let is_type = starts_with_ci(l, "feedback-type:");
        let is_other = starts_with_ci(l, "user-agent:") || starts_with_ci(l, "version:");
        if is_type || is_other {
            start.get_or_insert(pos);
            typ |= is_type;
            other |= is_other;
        }
        pos += line.len();
    }
    (typ && other).then(|| start.map(|s| &text[s..])).flatten()
}

fn arf_fields(view: &View, text: &str) -> ParsedBounce {
    let fields = parse_fields(text);
    let feedback_type = fields
        .iter()
        .find(|f| f.is("feedback-type"))
        .map(|f| f.value.trim().to_ascii_lowercase());
    let (class, rule) = match feedback_type.as_deref() {
        Some("not-spam") => (BounceClass::Ignore, "arf-not-spam"),
        _ => (BounceClass::Complaint, "arf-feedback-report"),
    };
    let mut addrs: Vec<String> = fields
        .iter()
        .filter(|f| f.is("original-rcpt-to"))
        .map(|f| fields::address_value(&f.value).to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.is_empty() {
        addrs = fields
            .iter()
            .filter(|f| f.is("removal-recipient"))
            .map(|f| fields::address_value(&f.value).to_string())
            .filter(|a| !a.is_empty())
            .collect();
    }
    if addrs.is_empty() {
        addrs = view
            .original_to
            .iter()
            .filter(|a| a.contains('@'))
            .cloned()
            .collect();
    }
    if addrs.is_empty() {
        addrs.push(String::new());
    }
    let mut b = ParsedBounce::empty(BounceKind::Arf, class, rule);
    b.feedback_type = feedback_type;
    b.original_message_id = view.original_message_id.clone();
    for a in addrs.into_iter().take(MAX_RECIPIENTS) {
        b.recipients.push(plain_recipient(&a, class, rule));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_bounce() {
        for raw in [
            &b""[..],
            b"\0\0\0",
            b"Subject: hi\r\n\r\nhello",
            b"\xff\xfe",
        ] {
            let b = parse(raw);
            assert_eq!(b.kind, BounceKind::Unknown, "{raw:?}");
            assert_eq!(b.class, BounceClass::Ignore);
        }
    }

    #[test]
    fn dsn_minimal() {
        let raw = b"From: MAILER-DAEMON@mx.example.org\r\nTo: b-abc@bounce.example.com\r\nSubject: Delivery Status Notification (Failure)\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"XX\"\r\n\r\n\
--XX\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n\
--XX\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\nOriginal-Envelope-Id: env-1\r\n\r\n\
Final-Recipient: rfc822; gone@example.net\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; 550-5.7.1 blocked using zen.spamhaus.org\r\n\r\n\
Final-Recipient: rfc822; later@example.net\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n\
--XX\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <m1@example.com>\r\nTo: gone@example.net\r\n\r\n--XX--\r\n";
        let b = parse(raw);
        assert_eq!(b.kind, BounceKind::Dsn);
        assert_eq!(b.class, BounceClass::Block);
        assert_eq!(b.original_envelope_id.as_deref(), Some("env-1"));
        assert_eq!(b.original_message_id.as_deref(), Some("m1@example.com"));
        assert_eq!(b.recipients.len(), 2);
        assert_eq!(b.recipients[0].status, "5.7.1");
        assert_eq!(b.recipients[1].class, BounceClass::Soft);
        assert_eq!(b.recipients[1].rule, "action-delayed");
    }

    #[test]
    fn a_delivery_notice_in_prose_is_ignored() {
        let raw = b"From: postmaster@example.net\r\nTo: b-abc@bounce.example.com\r\nSubject: Delivered: Weekly\r\n\r\n\
Your message has been delivered to the following recipients:\r\n\r\nkim@example.net\r\n\r\nSubject: Weekly\r\n";
        let b = parse(raw);
        assert_eq!(
            (b.kind, b.class),
            (BounceKind::Heuristic, BounceClass::Ignore)
        );
        assert_eq!(b.recipients[0].action, "delivered");
    }

    #[test]
    fn a_microsoft_jmrp_report_is_a_complaint() {
        let raw = b"From: staff@hotmail.com\r\nTo: fbl@example.com\r\nSubject: complaint about message from 192.0.2.1\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\nX-HmXmrOriginalRecipient: <kim@hotmail.example>\r\nFrom: news@example.com\r\n\
To: kim@hotmail.example\r\nSubject: Weekly\r\n\r\nHello\r\n--b--\r\n";
        let b = parse(raw);
        assert_eq!((b.kind, b.class), (BounceKind::Arf, BounceClass::Complaint));
        assert_eq!(b.recipients[0].address, "kim@hotmail.example");
    }

    #[test]
    fn a_feedback_report_written_inline_is_a_complaint() {
        let raw = b"From: fbl@isp.example\r\nTo: b-abc@bounce.example.com\r\nSubject: Abuse report\r\n\r\n\
This is an email abuse report.\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\n\
Original-Rcpt-To: kim@isp.example\r\n";
        let b = parse(raw);
        assert_eq!((b.kind, b.class), (BounceKind::Arf, BounceClass::Complaint));
        assert_eq!(b.recipients[0].address, "kim@isp.example");
        assert_eq!(b.feedback_type.as_deref(), Some("abuse"));
        // The word alone in prose is not a report.
        let raw = b"From: kim@example.net\r\nSubject: hi\r\n\r\nFeedback-Type: is a field name I like.\r\n";
        assert_eq!(parse(raw).kind, BounceKind::Unknown);
    }

    #[test]
    fn an_unexplained_failure_takes_a_refusal_from_the_report() {
        let raw = b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\r\nTo: news@example.com\r\nSubject: Mail Delivery Problem\r\n\r\n\
Your mail to the following recipients could not be delivered because they are not accepting mail from news@example.com:\r\n\r\n\
\tkim@example.net\r\n\tscreenname\r\n";
        let b = parse(raw);
        assert_eq!(
            (b.class, b.rule),
            (BounceClass::Block, "text-sender-rejected")
        );
        assert_eq!(b.recipients[0].address, "kim@example.net");
        // Recipient words elsewhere in the report never decide for another address.
        let raw = b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\n\r\n\
Delivery to the following recipients failed.\r\n\r\n\
kim@example.net: 550 user unknown (in reply to RCPT TO command)\r\n\
lee@example.net: 550 transaction failed somehow\r\n";
        let b = parse(raw);
        assert_eq!(b.recipients[1].address, "lee@example.net");
        assert_ne!(b.recipients[1].class, BounceClass::Hard);
    }

    #[test]
    fn a_list_manager_refusing_our_post_is_block() {
        // Mailman's and ezmlm's wording, not from the dev corpus.
        for raw in [
            &b"From: news-owner@lists.example.net\r\nTo: b-abc@bounce.example.com\r\nSubject: Your message to News awaits moderator approval\r\n\r\n\
Your mail to 'News' with the subject\r\n\r\n    Weekly\r\n\r\nIs being held until the list moderator can review it for approval.\r\n\r\n\
The reason it is being held:\r\n\r\n    Post by non-member to a members-only list\r\n"[..],
            b"From: news-help@lists.example.net\r\nSubject: failure notice\r\nTo: b-abc@bounce.example.com\r\n\r\n\
Sorry, only subscribers may post. If you are a subscriber, please forward this message to news-owner@lists.example.net\r\n",
        ] {
            let b = parse(raw);
            assert_eq!((b.kind, b.class), (BounceKind::Heuristic, BounceClass::Block));
            assert_eq!(b.rule, "text-mailing-list-refused");
        }
        // The same words from anybody else are not a list's notice.
        let raw = b"From: kim@example.net\r\nSubject: members only\r\n\r\nOnly members may post here.\r\n";
        assert_eq!(parse(raw).kind, BounceKind::Unknown);
    }

    #[test]
    fn auto_reply_is_ignored_but_a_dsn_marked_auto_is_not() {
        let raw = b"From: Kim <kim@example.net>\r\nSubject: Out of Office: news\r\nAuto-Submitted: auto-replied\r\n\r\nI am away.";
        let b = parse(raw);
        assert_eq!(
            (b.kind, b.class),
            (BounceKind::AutoReply, BounceClass::Ignore)
        );
        assert_eq!(b.recipients[0].address, "kim@example.net");
        let raw = b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nSubject: Mail delivery failed\r\nAuto-Submitted: auto-replied\r\n\r\n\
A message that you sent could not be delivered to one or more of its recipients.\r\n\r\n  kim@example.net\r\n    550 5.1.1 user unknown\r\n";
        let b = parse(raw);
        assert_eq!(
            (b.kind, b.class),
            (BounceKind::Heuristic, BounceClass::Hard)
        );
    }
}
