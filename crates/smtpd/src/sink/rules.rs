//! The sink's rules, parsed from the command-line strings
//! `PATTERN=550 5.1.1 User unknown` (`--reject`), `PATTERN=451 4.7.1 Try
//! later` (`--defer`, and `--defer-once` which defers each recipient only its
//! first N times), `N:PATTERN=550 5.7.1 …` (`--reject-after`,
//! `--defer-after`: the first N recipients matching the pattern are let
//! through, every later one refused, as a provider that starts blocking a
//! sender mid-campaign), `PATTERN=5.1.1` (`--bounce`), and a bare `PATTERN`
//! (`--auto-reply`, `--complain`).

use std::fmt;

use crate::reply::{EnhancedStatus, Reply};

/// A rule string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} `{input}`: {reason} (expected {example})")]
#[non_exhaustive]
pub struct RuleError {
    /// The flag without dashes: `reject`, `defer`, `defer-once`, `bounce`,
    /// `auto-reply` or `complain`.
    pub flag: &'static str,
    /// The rule as given.
    pub input: String,
    /// What is wrong.
    pub reason: String,
    /// A well-formed example for this flag.
    pub example: &'static str,
}

/// What a matching rule does to a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuleAction {
    /// Refuse at RCPT with this 5xx reply.
    Reject(Reply),
    /// Refuse at RCPT with this 4xx reply.
    Defer(Reply),
    /// Refuse at RCPT with this 4xx reply the first `times` times a recipient
    /// is tried (counted per rule and address, case-insensitively); after
    /// that the rule no longer matches that recipient, so a later rule or
    /// the default (accept) decides: "deferred, then delivered".
    DeferFirst {
        /// The 4xx reply.
        reply: Reply,
        /// How many times each recipient is deferred (at least 1).
        times: u32,
    },
    /// Let the first `after` recipients matching the pattern through
    /// (counted per rule, over all addresses), then refuse every later one
    /// at RCPT with this reply (5xx: `--reject-after`, 4xx: `--defer-after`).
    RefuseAfter {
        /// The 4xx or 5xx reply.
        reply: Reply,
        /// How many matching recipients pass first.
        after: u64,
    },
    /// Accept, then send an RFC 3464 DSN to the message's return path.
    Bounce {
        /// `Status:` of the DSN (5.x.x).
        status: EnhancedStatus,
        /// The reply quoted in `Diagnostic-Code: smtp; …`.
        diagnostic: Reply,
    },
    /// Accept, then send an RFC 3834 automatic reply (`Auto-Submitted:
    /// auto-replied`, an out-of-office subject) from the recipient to the
    /// message's return path.
    AutoReply,
    /// Accept, then send an RFC 5965 ARF feedback report (`Feedback-Type:
    /// abuse`, the original headers attached) to the message's return path,
    /// as a mailbox provider's feedback loop does when a user clicks "spam".
    Complain,
}

/// A recipient glob and what happens to recipients it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pattern: String,
    action: RuleAction,
}

const REJECT_EXAMPLE: &str = "'*@dead.example=550 5.1.1 User unknown'";
const DEFER_EXAMPLE: &str = "'*@slow.example=451 4.7.1 Try later'";
const BOUNCE_EXAMPLE: &str = "'user1*@*=5.1.1' or '*@gone.example=5.2.1 Mailbox disabled'";
const REJECT_AFTER_EXAMPLE: &str = "'20:*@blocky.example=550 5.7.1 Blocked for spam'";
const DEFER_AFTER_EXAMPLE: &str = "'20:*@blocky.example=421 4.7.0 Try again later'";
const AUTO_REPLY_EXAMPLE: &str = "'away*@*'";
const COMPLAIN_EXAMPLE: &str = "'grumpy*@*'";

impl Rule {
    /// `--reject PATTERN=CODE [X.Y.Z] [TEXT]`; the code must be 5xx.
    ///
    /// # Errors
    /// [`RuleError`] naming the flag, the input and the problem.
    pub fn reject(spec: &str) -> Result<Self, RuleError> {
        Self::parse_with(spec, "reject", REJECT_EXAMPLE, |rhs| {
            let reply = Reply::parse(rhs).map_err(|e| e.to_string())?;
            if !reply.is_permanent() {
                return Err("a reject needs a 5xx code; use --defer for 4xx".to_owned());
            }
            Ok(RuleAction::Reject(with_default_text(reply, "User unknown")))
        })
    }

    /// `--defer PATTERN=CODE [X.Y.Z] [TEXT]`; the code must be 4xx.
    ///
    /// # Errors
    /// [`RuleError`] naming the flag, the input and the problem.
    pub fn defer(spec: &str) -> Result<Self, RuleError> {
        Self::parse_with(spec, "defer", DEFER_EXAMPLE, |rhs| {
            let reply = Reply::parse(rhs).map_err(|e| e.to_string())?;
            if !reply.is_transient() {
                return Err("a defer needs a 4xx code; use --reject for 5xx".to_owned());
            }
            Ok(RuleAction::Defer(with_default_text(
                reply,
                "Try again later",
            )))
        })
    }

    /// `--defer-once PATTERN=CODE [X.Y.Z] [TEXT]` (with `times` from
    /// `--defer-times`, default 1); the code must be 4xx and `times` ≥ 1.
    ///
    /// # Errors
    /// [`RuleError`] naming the flag, the input and the problem.
    pub fn defer_first(spec: &str, times: u32) -> Result<Self, RuleError> {
        if times == 0 {
            return Err(RuleError {
                flag: "defer-once",
                input: spec.to_owned(),
                reason: "--defer-times must be at least 1".to_owned(),
                example: DEFER_EXAMPLE,
            });
        }
        let mut rule = Self::defer(spec).map_err(|e| RuleError {
            flag: "defer-once",
            ..e
        })?;
        if let RuleAction::Defer(reply) = rule.action {
            rule.action = RuleAction::DeferFirst { reply, times };
        }
        Ok(rule)
    }

    /// `--reject-after N:PATTERN=CODE [X.Y.Z] [TEXT]` (5xx) or, with
    /// `defer`, `--defer-after` (4xx): the first N matching recipients
    /// pass, later ones are refused.
    ///
    /// # Errors
    /// [`RuleError`] naming the flag, the input and the problem.
    pub fn refuse_after(spec: &str, defer: bool) -> Result<Self, RuleError> {
        let (flag, example) = if defer {
            ("defer-after", DEFER_AFTER_EXAMPLE)
        } else {
            ("reject-after", REJECT_AFTER_EXAMPLE)
        };
        let err = |reason: String| RuleError {
            flag,
            input: spec.to_owned(),
            reason,
            example,
        };
        let (n, rest) = spec
            .split_once(':')
            .ok_or_else(|| err("missing `N:` before the pattern".to_owned()))?;
        let after: u64 = n
            .trim()
            .parse()
            .map_err(|_| err(format!("`{}` is not a number of recipients", n.trim())))?;
        let inner = if defer {
            Self::defer(rest)
        } else {
            Self::reject(rest)
        }
        .map_err(|e| RuleError {
            flag,
            example,
            input: spec.to_owned(),
            ..e
        })?;
        let reply = match inner.action {
            RuleAction::Reject(r) | RuleAction::Defer(r) => r,
            _ => unreachable!("reject and defer build Reject and Defer"),
        };
        Ok(Self {
            pattern: inner.pattern,
            action: RuleAction::RefuseAfter { reply, after },
        })
    }

    /// `--auto-reply PATTERN`: the whole argument is the pattern.
    ///
    /// # Errors
    /// [`RuleError`] for an empty pattern or one with spaces.
    pub fn auto_reply(pattern: &str) -> Result<Self, RuleError> {
        Self::bare(
            pattern,
            "auto-reply",
            AUTO_REPLY_EXAMPLE,
            RuleAction::AutoReply,
        )
    }

    /// `--complain PATTERN`: the whole argument is the pattern.
    ///
    /// # Errors
    /// [`RuleError`] for an empty pattern or one with spaces.
    pub fn complain(pattern: &str) -> Result<Self, RuleError> {
        Self::bare(pattern, "complain", COMPLAIN_EXAMPLE, RuleAction::Complain)
    }

    fn bare(
        spec: &str,
        flag: &'static str,
        example: &'static str,
        action: RuleAction,
    ) -> Result<Self, RuleError> {
        let pattern = spec.trim();
        let reason = if pattern.is_empty() {
            "empty pattern"
        } else if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "the pattern must not contain spaces"
        } else {
            return Ok(Self {
                pattern: pattern.to_owned(),
                action,
            });
        };
        Err(RuleError {
            flag,
            input: spec.to_owned(),
            reason: reason.to_owned(),
            example,
        })
    }

    /// `--bounce PATTERN=X.Y.Z [TEXT]` (or `PATTERN=5NN X.Y.Z [TEXT]`); the
    /// status must be permanent (5.x.x): the DSN says `Action: failed`.
    ///
    /// # Errors
    /// [`RuleError`] naming the flag, the input and the problem.
    pub fn bounce(spec: &str) -> Result<Self, RuleError> {
        Self::parse_with(spec, "bounce", BOUNCE_EXAMPLE, |rhs| {
            let rhs = rhs.trim();
            let starts_with_code = rhs.len() >= 3
                && rhs.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                && rhs.as_bytes().get(3).is_none_or(|b| *b == b' ');
            let reply = if starts_with_code {
                Reply::parse(rhs).map_err(|e| e.to_string())?
            } else {
                let (st, text) = rhs.split_once(' ').unwrap_or((rhs, ""));
                let status: EnhancedStatus = st
                    .parse()
                    .map_err(|e: crate::ReplyParseError| e.to_string())?;
                let code = match (status.subject, status.detail) {
                    (2, 2) | (3, 4) => 552,
                    _ => 550,
                };
                let text = if text.trim().is_empty() {
                    default_text(status)
                } else {
                    text.trim()
                };
                Reply::new(code, Some(status), text)
            };
            let Some(status) = reply.status() else {
                return Err("a bounce needs an enhanced status such as 5.1.1".to_owned());
            };
            if status.class != 5 {
                return Err("a bounce needs a permanent status (5.x.x)".to_owned());
            }
            Ok(RuleAction::Bounce {
                status,
                diagnostic: reply,
            })
        })
    }

    /// Splits at the first `=` after which the right-hand side parses, so a
    /// pattern may itself contain `=` (VERP addresses do).
    fn parse_with(
        spec: &str,
        flag: &'static str,
        example: &'static str,
        parse_rhs: impl Fn(&str) -> Result<RuleAction, String>,
    ) -> Result<Self, RuleError> {
        let err = |reason: String| RuleError {
            flag,
            input: spec.to_owned(),
            reason,
            example,
        };
        let mut last_reason = "missing `=` between pattern and reply".to_owned();
        for (i, _) in spec.match_indices('=') {
            let pattern = spec[..i].trim();
            if pattern.is_empty() {
                last_reason = "empty pattern".to_owned();
                continue;
            }
            if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err("the pattern must not contain spaces".to_owned()));
            }
            match parse_rhs(&spec[i + 1..]) {
                Ok(action) => {
                    return Ok(Self {
                        pattern: pattern.to_owned(),
                        action,
                    });
                }
                Err(reason) => last_reason = reason,
            }
        }
        Err(err(last_reason))
    }

    /// The glob as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// What the rule does.
    pub fn action(&self) -> &RuleAction {
        &self.action
    }

    /// Case-insensitive glob match of the whole address: `*` matches any run
    /// of characters (also none), `?` exactly one.
    pub fn matches(&self, address: &str) -> bool {
        glob(&self.pattern, address)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            RuleAction::Reject(r) => write!(f, "reject {} with {r}", self.pattern),
            RuleAction::Defer(r) => write!(f, "defer {} with {r}", self.pattern),
            RuleAction::DeferFirst { reply, times } => {
                write!(
                    f,
                    "defer {} with {reply} the first {times} time(s)",
                    self.pattern
                )
            }
            RuleAction::RefuseAfter { reply, after } => {
                write!(f, "refuse {} with {reply} after {after}", self.pattern)
            }
            RuleAction::Bounce { status, .. } => write!(f, "bounce {} with {status}", self.pattern),
            RuleAction::AutoReply => write!(f, "auto-reply to mail for {}", self.pattern),
            RuleAction::Complain => write!(f, "complain about mail for {}", self.pattern),
        }
    }
}

fn with_default_text(reply: Reply, text: &str) -> Reply {
    if reply.text().is_empty() {
        Reply::new(reply.code(), reply.status(), text)
    } else {
        reply
    }
}

/// The usual wording for common permanent statuses.
pub(crate) fn default_text(status: EnhancedStatus) -> &'static str {
    match (status.subject, status.detail) {
        (1, 1) => "User unknown",
        (1, 2) => "Domain not found",
        (1, 10) => "Recipient address has null MX",
        (2, 1) => "Mailbox disabled",
        (2, 2) => "Mailbox full",
        (3, 4) => "Message too big",
        (4, 4) => "Unable to route",
        (7, 1) => "Delivery not authorized, message refused",
        _ => "Delivery failed",
    }
}

/// Iterative glob with single-star backtracking: O(len(p) × len(s)) worst case.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let s: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases = [
            ("*@dead.example", "bob@dead.example", true),
            ("*@dead.example", "bob@DEAD.example", true),
            ("*@dead.example", "bob@dead.example.org", false),
            ("user1*@*", "user12@x.org", true),
            ("user1*@*", "user2@x.org", false),
            ("a?c@x", "abc@x", true),
            ("*", "", true),
            ("**@*", "a@b", true),
            ("exact@x", "exact@x", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(glob(p, s), want, "{p} vs {s}");
        }
    }

    #[test]
    fn parses_rules() {
        let r = Rule::reject("*@dead.example=550 5.1.1 User unknown").expect("valid");
        assert_eq!(r.pattern(), "*@dead.example");
        assert!(
            matches!(r.action(), RuleAction::Reject(reply) if reply.code() == 550 && reply.text() == "User unknown")
        );
        let d = Rule::defer("*@slow.example=451 4.7.1 Try later").expect("valid");
        assert!(matches!(d.action(), RuleAction::Defer(reply) if reply.code() == 451));
        let b = Rule::bounce("user1*@*=5.1.1").expect("valid");
        assert!(
            matches!(b.action(), RuleAction::Bounce { status, diagnostic } if status.to_string() == "5.1.1" && diagnostic.code() == 550)
        );
        // A pattern containing '=' (VERP-style local parts).
        let v = Rule::reject("a=b*@x=550 5.1.1 gone").expect("valid");
        assert_eq!(v.pattern(), "a=b*@x");
    }

    #[test]
    fn parses_the_demo_rules() {
        let d = Rule::defer_first("grey*@*=450 4.2.0 Greylisted", 2).expect("valid");
        assert_eq!(d.pattern(), "grey*@*");
        assert!(
            matches!(d.action(), RuleAction::DeferFirst { reply, times: 2 } if reply.code() == 450 && reply.text() == "Greylisted")
        );
        let e = Rule::defer_first("*@x=550 5.1.1 no", 1).expect_err("5xx");
        assert_eq!(e.flag, "defer-once");
        // A bare pattern, '=' included (VERP-style local parts).
        let a = Rule::auto_reply(" away=1*@* ").expect("valid");
        assert_eq!(
            (a.pattern(), a.action()),
            ("away=1*@*", &RuleAction::AutoReply)
        );
        assert!(a.matches("AWAY=17@x.example"));
        let c = Rule::complain("grumpy*@*").expect("valid");
        assert_eq!(c.action(), &RuleAction::Complain);
        assert_eq!(c.to_string(), "complain about mail for grumpy*@*");
    }

    #[test]
    fn parses_refuse_after_rules() {
        let r = Rule::refuse_after("20:*@blocky.example=550 5.7.1 Blocked", false).expect("valid");
        assert_eq!(r.pattern(), "*@blocky.example");
        assert!(
            matches!(r.action(), RuleAction::RefuseAfter { reply, after: 20 } if reply.code() == 550)
        );
        let d = Rule::refuse_after("0:*@x=421 4.7.0 later", true).expect("valid");
        assert!(matches!(
            d.action(),
            RuleAction::RefuseAfter { after: 0, .. }
        ));
        for (res, needle, flag) in [
            (
                Rule::refuse_after("*@x=550 5.7.1 no", false),
                "N:",
                "reject-after",
            ),
            (
                Rule::refuse_after("x:*@x=550 5.7.1 no", false),
                "not a number",
                "reject-after",
            ),
            (
                Rule::refuse_after("3:*@x=421 4.7.0 later", false),
                "4xx",
                "reject-after",
            ),
            (
                Rule::refuse_after("3:*@x=550 5.7.1 no", true),
                "5xx",
                "defer-after",
            ),
        ] {
            let e = res.expect_err("must fail");
            assert_eq!(e.flag, flag);
            assert!(
                e.to_string().contains(needle),
                "{e} should mention {needle}"
            );
        }
    }

    #[test]
    fn rule_errors_are_clear() {
        let bad = [
            (Rule::reject("*@x=451 4.7.1 later"), "4xx"),
            (Rule::defer("*@x=550 5.1.1 no"), "5xx"),
            (Rule::reject("no-equals-sign"), "missing `=`"),
            (Rule::reject("=550 5.1.1 x"), "empty pattern"),
            (Rule::bounce("*@x=4.2.2"), "permanent"),
            (Rule::bounce("*@x=oops"), "enhanced status"),
            (Rule::reject("*@x=550 4.1.1 x"), "must match"),
            (Rule::defer_first("*@x=550 5.1.1 no", 1), "5xx"),
            (Rule::defer_first("*@x=451 4.7.1 later", 0), "at least 1"),
            (Rule::auto_reply(""), "empty pattern"),
            (Rule::complain("a b@x"), "spaces"),
        ];
        for (res, needle) in bad {
            let e = res.expect_err("must fail");
            assert!(
                e.to_string().contains(needle),
                "{e} should mention {needle}"
            );
        }
    }
}
