//! The typed result of [`crate::parse`]: what kind of message it was, what it means
//! for each recipient, and which rule decided.
//!
//! These types serialize to the `rundbrief bounce parse FILE.eml --json` contract:
//!
//! ```json
//! {"kind":"dsn","class":"hard","rule":"status-x.1.x-bad-address",
//!  "recipients":[{"address":"a@example.org","status":"5.1.1","action":"failed",
//!                 "class":"hard","diagnostic":"550 5.1.1 user unknown","rule":"…"}]}
//! ```
//!
//! Field names are relied upon outside this crate: add fields, never rename them.

use serde::Serialize;

/// How the message was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BounceKind {
    /// An RFC 3464 delivery status notification (`message/delivery-status` part, or
    /// its fields written inline in the text by a non-conforming MTA).
    Dsn,
    /// A non-standard bounce recognised by its shape (Exim, qmail, Postfix without
    /// DSN, Exchange, Gmail, …) or a provider notification (Amazon SES JSON).
    Heuristic,
    /// An RFC 3834 automatic reply (vacation, out of office). Never a bounce.
    AutoReply,
    /// An RFC 5965 feedback report, or an unsubscribe request sent by a mail client
    /// on the user's behalf (Apple Mail's `X-Apple-Unsubscribe`).
    Arf,
    /// Nothing above: not recognised as a bounce at all.
    Unknown,
}

/// What a recipient's result means for rundbrief.
///
/// The severity order used to pick a message's overall class is
/// `hard > complaint > block > soft > ignore > unknown` (see [`BounceClass::severity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BounceClass {
    /// The address is dead (no such user or domain, account disabled, null MX):
    /// prune the subscriber at once.
    Hard,
    /// The mailbox or its host has a possibly passing problem (full, temporary
    /// failure, expired in the queue): add to the decaying bounce score.
    Soft,
    /// The receiver refused *us* (policy, spam, reputation, authentication, rate,
    /// size): never prune the address; count it as a sender problem.
    Block,
    /// Nothing to do: delivered or delayed notices, auto-replies, non-bounces.
    Ignore,
    /// A feedback-loop complaint or opt-out: unsubscribe the complainer.
    Complaint,
    /// Recognised as a bounce but no recipient could be classified.
    Unknown,
}

impl BounceClass {
    /// Rank used to pick the most severe class of several recipients:
    /// hard (5) > complaint (4) > block (3) > soft (2) > ignore (1) > unknown (0).
    pub const fn severity(self) -> u8 {
        match self {
            BounceClass::Hard => 5,
            BounceClass::Complaint => 4,
            BounceClass::Block => 3,
            BounceClass::Soft => 2,
            BounceClass::Ignore => 1,
            BounceClass::Unknown => 0,
        }
    }

    /// The contract's lower-case name (`"hard"`, `"soft"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            BounceClass::Hard => "hard",
            BounceClass::Soft => "soft",
            BounceClass::Block => "block",
            BounceClass::Ignore => "ignore",
            BounceClass::Complaint => "complaint",
            BounceClass::Unknown => "unknown",
        }
    }

    /// The most severe of `classes`, or [`BounceClass::Unknown`] when empty.
    pub fn most_severe(classes: impl IntoIterator<Item = BounceClass>) -> BounceClass {
        classes
            .into_iter()
            .max_by_key(|c| c.severity())
            .unwrap_or(BounceClass::Unknown)
    }
}

impl BounceKind {
    /// The contract's name (`"dsn"`, `"auto-reply"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            BounceKind::Dsn => "dsn",
            BounceKind::Heuristic => "heuristic",
            BounceKind::AutoReply => "auto-reply",
            BounceKind::Arf => "arf",
            BounceKind::Unknown => "unknown",
        }
    }
}

/// One recipient's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// The recipient address as the report gives it (for ARF: the complainer; for
    /// an auto-reply: the address that replied).
    pub address: String,
    /// RFC 3463 enhanced status code (`"5.1.1"`), `""` when none is known.
    pub status: String,
    /// RFC 3464 action, lower-cased (`failed`, `delayed`, `delivered`, `relayed`,
    /// `expanded`); heuristics say `failed` or `delayed`; `""` for ARF/auto-replies.
    pub action: String,
    /// What this result means for the subscriber.
    pub class: BounceClass,
    /// The remote server's words (Diagnostic-Code without its type, or the text the
    /// heuristics found), whitespace collapsed, at most [`crate::MAX_DIAGNOSTIC`] bytes.
    pub diagnostic: String,
    /// The SMTP reply code found in the diagnostic, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<u16>,
    /// `Remote-MTA` of the DSN (without its `dns;` type), if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    /// Name of the rule that decided `class` (see [`crate::RULES`] and the
    /// detection rules documented on [`crate::parse`]).
    pub rule: &'static str,
    /// Why `rule` decided: the codes it saw and the words of `diagnostic` that
    /// matched. `None` for complaints and auto-replies (nothing was classified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// The evidence behind one recipient's verdict, so an operator can see *why* an
/// address was pruned or kept: `{"status":"5.1.1","reply_code":550,
/// "phrase":"User unknown","stage":"rcpt"}`. Every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The RFC 3463 enhanced status code the rules read (`"5.1.1"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The SMTP reply code the rules read (`550`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<u16>,
    /// The words of the diagnostic that decided, as the server wrote them (white
    /// space collapsed): the phrase the deciding rule matched, or for a vetoed
    /// recipient verdict the policy words that vetoed it. Absent when a code alone
    /// decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phrase: Option<String>,
    /// The SMTP step the rejection answered, when the report says it: `connect`,
    /// `mail-from`, `rcpt` or `data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
}

/// Everything [`crate::parse`] learnt from one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedBounce {
    /// How the message was recognised.
    pub kind: BounceKind,
    /// Most severe class of the recipients; see [`BounceClass::severity`]. A message
    /// that is not a bounce at all is `ignore` (rule `not-a-bounce`); a bounce whose
    /// recipients could not be found is `unknown`.
    pub class: BounceClass,
    /// Per-recipient results, at most [`crate::MAX_RECIPIENTS`].
    pub recipients: Vec<Recipient>,
    /// The rule that decided the top-level class.
    pub rule: &'static str,
    /// `Original-Envelope-Id` of the DSN (the ENVID we sent), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_envelope_id: Option<String>,
    /// `Message-ID` of the returned original message (without `<>`), to find the
    /// delivery when the VERP token is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_message_id: Option<String>,
    /// ARF `Feedback-Type` (`abuse`, `opt-out`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_type: Option<String>,
    /// `Reporting-MTA` of the DSN (without its `dns;` type), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_mta: Option<String>,
}

impl ParsedBounce {
    /// A result with no recipients.
    pub(crate) fn empty(kind: BounceKind, class: BounceClass, rule: &'static str) -> Self {
        ParsedBounce {
            kind,
            class,
            recipients: Vec::new(),
            rule,
            original_envelope_id: None,
            original_message_id: None,
            feedback_type: None,
            reporting_mta: None,
        }
    }

    /// Sets `class` and `rule` from the most severe recipient (first one wins ties).
    pub(crate) fn settle(&mut self, empty_rule: &'static str) {
        let mut best: Option<&Recipient> = None;
        for r in &self.recipients {
            if best.is_none_or(|b| r.class.severity() > b.class.severity()) {
                best = Some(r);
            }
        }
        match best {
            Some(r) => {
                self.class = r.class;
                self.rule = r.rule;
            }
            None => {
                self.class = BounceClass::Unknown;
                self.rule = empty_rule;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order_matches_contract() {
        let order = [
            BounceClass::Hard,
            BounceClass::Complaint,
            BounceClass::Block,
            BounceClass::Soft,
            BounceClass::Ignore,
            BounceClass::Unknown,
        ];
        for w in order.windows(2) {
            assert!(
                w[0].severity() > w[1].severity(),
                "{:?} !> {:?}",
                w[0],
                w[1]
            );
        }
        assert_eq!(
            BounceClass::most_severe([BounceClass::Soft, BounceClass::Hard, BounceClass::Block]),
            BounceClass::Hard
        );
        assert_eq!(BounceClass::most_severe([]), BounceClass::Unknown);
    }

    #[test]
    fn serializes_contract_names() {
        let json = serde_json::to_string(&(BounceKind::AutoReply, BounceClass::Complaint))
            .unwrap_or_default();
        assert_eq!(json, r#"["auto-reply","complaint"]"#);
    }
}
