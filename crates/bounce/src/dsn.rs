//! RFC 3464 `message/delivery-status` bodies: one per-message block, then one block
//! per recipient. Real reports bend this (no blank line between recipients, fields
//! inline in the text part, per-message fields missing), so a recipient starts at a
//! new block with recipient fields or at a second `Final-Recipient` in one block.

use crate::MAX_RECIPIENTS;
use crate::fields::{Field, address_value, parse_fields, strip_type};

/// The per-message fields rundbrief keeps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DsnReport {
    /// `Reporting-MTA`, type stripped.
    pub reporting_mta: Option<String>,
    /// `Original-Envelope-Id`.
    pub original_envelope_id: Option<String>,
    /// Recipient blocks in order, at most [`MAX_RECIPIENTS`].
    pub recipients: Vec<DsnRecipient>,
}

/// The per-recipient fields rundbrief keeps (raw values, types stripped).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// `Final-Recipient` address.
    pub final_recipient: String,
    /// `Original-Recipient` address.
    pub original_recipient: String,
    /// `X-Actual-Recipient` address (Sendmail).
    pub actual_recipient: String,
    /// `Action`, lower-cased first word.
    pub action: String,
    /// `Status` value as written.
    pub status: String,
    /// `Diagnostic-Code` without its type (several are joined with a space).
    pub diagnostic: String,
    /// `Remote-MTA`, type stripped.
    pub remote_mta: String,
    block: usize,
}

impl DsnRecipient {
    /// The best address: Final-Recipient, else Original-Recipient, else
    /// X-Actual-Recipient; one with an `@` is preferred.
    pub fn address(&self) -> &str {
        let cands = [
            &self.final_recipient,
            &self.original_recipient,
            &self.actual_recipient,
        ];
        cands
            .iter()
            .find(|a| a.contains('@'))
            .or_else(|| cands.iter().find(|a| !a.is_empty()))
            .map_or("", |a| a.as_str())
    }

    fn is_empty(&self) -> bool {
        self.final_recipient.is_empty()
            && self.original_recipient.is_empty()
            && self.action.is_empty()
            && self.status.is_empty()
            && self.diagnostic.is_empty()
    }
}

const RECIPIENT_FIELDS: &[&str] = &[
    "final-recipient",
    "original-recipient",
    "x-actual-recipient",
    "action",
    "status",
    "diagnostic-code",
    "remote-mta",
];

/// Parses the fields of a delivery-status body (or of text holding DSN fields).
pub fn parse_delivery_status(text: &str) -> DsnReport {
    let fields = parse_fields(text);
    interpret(&fields)
}

fn interpret(fields: &[Field<'_>]) -> DsnReport {
    let mut rep = DsnReport::default();
    let mut cur: Option<DsnRecipient> = None;
    for f in fields {
        if f.is("reporting-mta") {
            rep.reporting_mta
                .get_or_insert_with(|| strip_type(&f.value).to_string());
            continue;
        }
        if f.is("original-envelope-id") {
            rep.original_envelope_id
                .get_or_insert_with(|| f.value.trim().to_string());
            continue;
        }
        if !RECIPIENT_FIELDS.iter().any(|n| f.is(n)) {
            continue;
        }
        let starts_new = match &cur {
            None => true,
            Some(c) => {
                (f.block != c.block && !c.is_empty())
                    || (f.is("final-recipient") && !c.final_recipient.is_empty())
                    || (f.is("original-recipient")
                        && (!c.original_recipient.is_empty()
                            || (!c.final_recipient.is_empty() && !c.status.is_empty())))
                    || (f.is("action") && !c.action.is_empty())
            }
        };
        if starts_new {
            if let Some(done) = cur.take()
                && !done.is_empty()
            {
                if rep.recipients.len() >= MAX_RECIPIENTS {
                    return rep;
                }
                rep.recipients.push(done);
            }
            cur = Some(DsnRecipient {
                block: f.block,
                ..DsnRecipient::default()
            });
        }
        let Some(c) = cur.as_mut() else { continue };
        let set = |slot: &mut String, v: &str| {
            if slot.is_empty() {
                *slot = v.to_string();
            }
        };
        if f.is("final-recipient") {
            set(&mut c.final_recipient, address_value(&f.value));
        } else if f.is("original-recipient") {
            set(&mut c.original_recipient, address_value(&f.value));
        } else if f.is("x-actual-recipient") {
            set(&mut c.actual_recipient, address_value(&f.value));
        } else if f.is("action") {
            let a = f
                .value
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches([';', ',']);
            set(&mut c.action, &a.to_ascii_lowercase());
        } else if f.is("status") {
            set(&mut c.status, f.value.trim());
        } else if f.is("diagnostic-code") {
            let d = strip_type(&f.value);
            if c.diagnostic.is_empty() {
                c.diagnostic = d.to_string();
            } else if c.diagnostic.len() + d.len() < crate::MAX_DIAGNOSTIC {
                c.diagnostic.push(' ');
                c.diagnostic.push_str(d);
            }
        } else if f.is("remote-mta") {
            set(&mut c.remote_mta, strip_type(&f.value));
        }
    }
    if let Some(done) = cur
        && !done.is_empty()
        && rep.recipients.len() < MAX_RECIPIENTS
    {
        rep.recipients.push(done);
    }
    rep
}

/// Where DSN fields are written inline in a text part (no delivery-status part),
/// the text from the first such field on; `None` when there are none.
pub fn inline_fields(report: &str) -> Option<&str> {
    use crate::mime::starts_with_ci;
    let mut pos = 0;
    let mut start = None;
    let mut hits = 0;
    for line in report.split_inclusive('\n') {
        let l = line.trim_start();
        let strong = starts_with_ci(l, "final-recipient:") || starts_with_ci(l, "status:");
        if strong
            || starts_with_ci(l, "original-recipient:")
            || starts_with_ci(l, "action:")
            || starts_with_ci(l, "reporting-mta:")
        {
            start.get_or_insert(pos);
            hits += usize::from(strong);
        }
        pos += line.len();
    }
    if hits >= 2 {
        start.map(|s| &report[s..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(r: &DsnReport) -> Vec<(&str, &str, &str)> {
        r.recipients
            .iter()
            .map(|x| (x.address(), x.action.as_str(), x.status.as_str()))
            .collect()
    }

    #[test]
    fn table() {
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str, &'static str)],
        );
        let cases: &[Case] = &[
            // standard: per-message block, two recipients
            (
                "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n\nFinal-Recipient: rfc822; b@x.example\nAction: delayed\nStatus: 4.4.7\n",
                &[
                    ("a@x.example", "failed", "5.1.1"),
                    ("b@x.example", "delayed", "4.4.7"),
                ],
            ),
            // no blank line between recipients
            (
                "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\nFinal-Recipient: rfc822; b@x.example\nAction: failed\nStatus: 5.2.2\n",
                &[
                    ("a@x.example", "failed", "5.1.1"),
                    ("b@x.example", "failed", "5.2.2"),
                ],
            ),
            // Original-Recipient first, then Final-Recipient in the same block
            (
                "Original-Recipient: rfc822;A@x.example\nFinal-Recipient: rfc822;a@x.example\nAction: failed (bad)\nStatus: 5.0.0\n",
                &[("a@x.example", "failed", "5.0.0")],
            ),
            // per-message and recipient fields in one block, CRLF
            (
                "Reporting-MTA: dns; mx\r\nFinal-Recipient: rfc822; a@x.example\r\nAction: FAILED\r\nStatus: 5.7.1\r\n",
                &[("a@x.example", "failed", "5.7.1")],
            ),
            // Action first, Original-Recipient after Final-Recipient (Amazon SES inbound)
            (
                "Action: failed\nFinal-Recipient: rfc822; a@x.example\nOriginal-Recipient: rfc822; a@x.example\nStatus: 5.1.1\n",
                &[("a@x.example", "failed", "5.1.1")],
            ),
            // no recipient address at all
            (
                "Action: failed\nStatus: 5.0.0\n",
                &[("", "failed", "5.0.0")],
            ),
            // nothing
            ("Reporting-MTA: dns; mx\n\n\n", &[]),
            ("", &[]),
        ];
        for (text, want) in cases {
            let rep = parse_delivery_status(text);
            assert_eq!(addrs(&rep), want.to_vec(), "{text:?}");
        }
    }

    #[test]
    fn per_message_fields_and_diagnostic() {
        let rep = parse_delivery_status(
            "Reporting-MTA: dns; mx.example.org\nOriginal-Envelope-Id: abc123\n\nFinal-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.x.example\nDiagnostic-Code: smtp; 550 5.1.1 <a@x.example>:\n  User unknown\n",
        );
        assert_eq!(rep.reporting_mta.as_deref(), Some("mx.example.org"));
        assert_eq!(rep.original_envelope_id.as_deref(), Some("abc123"));
        let r = &rep.recipients[0];
        assert_eq!(r.diagnostic, "550 5.1.1 <a@x.example>: User unknown");
        assert_eq!(r.remote_mta, "mx.x.example");
    }

    #[test]
    fn bounded_recipients() {
        let text =
            "Final-Recipient: rfc822; a@x.example\nAction: failed\n\n".repeat(MAX_RECIPIENTS + 20);
        assert_eq!(
            parse_delivery_status(&text).recipients.len(),
            MAX_RECIPIENTS
        );
    }

    #[test]
    fn inline() {
        assert!(inline_fields("Hello\nFinal-Recipient: rfc822; a@b\nStatus: 5.1.1\n").is_some());
        assert!(inline_fields("Hello\nStatus: nothing\n").is_none());
    }
}
