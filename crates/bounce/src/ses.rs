//! Amazon SES notifications delivered by mail (SNS to e-mail): JSON, not prose.
//! <https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html>

use serde_json::Value;

use crate::model::{BounceClass, BounceKind, Evidence, ParsedBounce, Recipient};
use crate::rules::{Signal, normalize};
use crate::status::StatusCode;
use crate::{MAX_DIAGNOSTIC, MAX_RECIPIENTS, decide, evidence, rules::collapse, signal_parts};

/// At most this much text is handed to the JSON parser.
const MAX_JSON: usize = 256 * 1024;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Parses an SES notification if `text` is one.
pub(crate) fn parse(text: &str) -> Option<ParsedBounce> {
    let t = text.trim_start();
    if !t.starts_with('{')
        || t.len() > MAX_JSON
        || !(t.contains("notificationType") || t.contains("eventType"))
    {
        return None;
    }
    // SNS wraps the notification in a JSON string; a trailing footer may follow.
    let end = t.rfind('}')?;
    // Mail transport may fold long lines, breaking JSON strings: retry unfolded.
    let json = |s: &str| -> Option<Value> {
        serde_json::from_str(s).ok().or_else(|| {
            let unfolded: String = s.chars().filter(|c| *c != '\n' && *c != '\r').collect();
            serde_json::from_str(&unfolded).ok()
        })
    };
    let outer = json(&t[..=end])?;
    let inner: Value = match outer.get("Message").and_then(Value::as_str) {
        Some(m) => json(m)?,
        None => outer,
    };
    let typ = match s(&inner, "notificationType") {
        "" => s(&inner, "eventType"),
        t => t,
    };
    let mut b = ParsedBounce::empty(
        BounceKind::Heuristic,
        BounceClass::Unknown,
        "ses-notification",
    );
    b.original_message_id = inner
        .get("mail")
        .and_then(|m| m.get("commonHeaders"))
        .map(|h| s(h, "messageId").trim_matches(['<', '>']).to_string())
        .filter(|x| !x.is_empty());
    match typ {
        "Bounce" => {
            let bounce = inner.get("bounce")?;
            let btype = s(bounce, "bounceType");
            let sub = s(bounce, "bounceSubType");
            b.reporting_mta =
                Some(crate::fields::strip_type(s(bounce, "reportingMTA")).to_string())
                    .filter(|x| !x.is_empty());
            for r in bounce
                .get("bouncedRecipients")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .take(MAX_RECIPIENTS)
            {
                let diag = s(r, "diagnosticCode");
                let diag = diag
                    .split_once(';')
                    .filter(|(t, _)| t.len() <= 8 && !t.contains(' '))
                    .map_or(diag, |x| x.1)
                    .trim();
                let norm = normalize(diag);
                let (reply, dst) = signal_parts(&norm);
                let status = StatusCode::parse_field(s(r, "status")).or(dst);
                let action = match s(r, "action") {
                    "" => "failed",
                    a => a,
                };
                let diagnostic = collapse(diag, MAX_DIAGNOSTIC);
                let mut ev = None;
                let (class, rule) = if status.is_some() || reply.is_some() || !norm.is_empty() {
                    let signal = Signal::new(status, reply, &norm);
                    let v = decide(action, &signal);
                    ev = Some(evidence(&signal, &v, &diagnostic));
                    (v.class, v.rule)
                } else {
                    match (btype, sub) {
                        (_, "Suppressed" | "OnAccountSuppressionList" | "NoEmail") => {
                            (BounceClass::Hard, "ses-suppressed")
                        }
                        (_, "MailboxFull") => (BounceClass::Soft, "ses-mailbox-full"),
                        (_, "MessageTooLarge" | "ContentRejected" | "AttachmentRejected") => {
                            (BounceClass::Block, "ses-content-rejected")
                        }
                        ("Permanent", _) => (BounceClass::Hard, "ses-permanent"),
                        _ => (BounceClass::Soft, "ses-transient"),
                    }
                };
                b.recipients.push(Recipient {
                    address: s(r, "emailAddress").to_string(),
                    status: status.map(|x| x.to_string()).unwrap_or_default(),
                    action: action.to_string(),
                    class,
                    diagnostic,
                    reply_code: reply,
                    remote_mta: None,
                    rule,
                    evidence: ev.or_else(|| {
                        Some(Evidence {
                            phrase: Some(format!("{btype}/{sub}")).filter(|p| p != "/"),
                            ..Evidence::default()
                        })
                    }),
                });
            }
        }
        "Complaint" => {
            let c = inner.get("complaint")?;
            b.kind = BounceKind::Arf;
            b.feedback_type = Some(s(c, "complaintFeedbackType"))
                .filter(|x| !x.is_empty())
                .map(str::to_string);
            for r in c
                .get("complainedRecipients")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .take(MAX_RECIPIENTS)
            {
                b.recipients.push(crate::plain_recipient(
                    s(r, "emailAddress"),
                    BounceClass::Complaint,
                    "ses-complaint",
                ));
            }
        }
        "Delivery" => {
            let d = inner.get("delivery")?;
            let resp = s(d, "smtpResponse");
            let status = StatusCode::parse_field(resp.get(4..).unwrap_or(""));
            for r in d
                .get("recipients")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .take(MAX_RECIPIENTS)
            {
                let mut rc = crate::plain_recipient(
                    r.as_str().unwrap_or(""),
                    BounceClass::Ignore,
                    "ses-delivery",
                );
                rc.action = "delivered".to_string();
                rc.status = status.map(|x| x.to_string()).unwrap_or_default();
                rc.diagnostic = collapse(resp, MAX_DIAGNOSTIC);
                b.recipients.push(rc);
            }
        }
        _ => return None,
    }
    b.settle("ses-notification");
    Some(b)
}
