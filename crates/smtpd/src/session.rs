//! The SMTP session as a pure state machine: a parsed
//! [`smtp_proto::Request`] goes in, a [`Step`] (a reply and what to do next)
//! comes out. No socket, no clock, no handler calls: when the handler must be
//! asked, the step says so and the connection feeds the answer back.

use smtp_proto::{
    EXT_8BIT_MIME, EXT_DSN, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS, EhloResponse, Request,
};

use crate::config::ServerConfig;
use crate::handler::{
    Body, DataDecision, Decision, Envelope, MailFrom, Notify, Recipient, Ret, SessionInfo,
};
use crate::reply::Reply;

/// What the connection does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the reply and read the next command.
    Reply(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
    /// Ask [`crate::Handler::mail`], then call [`Session::mail_decided`].
    AskMail(MailFrom),
    /// Ask [`crate::Handler::rcpt`], then call [`Session::rcpt_decided`].
    AskRcpt(Recipient),
    /// Send this `354`, receive the message, then call
    /// [`Session::data_received`] or [`Session::data_too_big`].
    ReceiveData(Reply),
    /// Send this `220`, drop any buffered input, do the TLS handshake, then
    /// call [`Session::tls_started`].
    StartTls(Reply),
    /// Discard `chunk_size` bytes of an unsolicited BDAT chunk, then send the reply.
    SkipChunk {
        /// Bytes to discard.
        chunk_size: usize,
        /// Reply sent after the chunk.
        reply: Reply,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Banner sent, no EHLO/HELO yet.
    Connected,
    /// Greeted, no transaction.
    Ready,
    /// MAIL accepted; recipients may follow.
    Mail,
}

/// One SMTP session's protocol state.
#[derive(Debug)]
pub struct Session {
    info: SessionInfo,
    hostname: String,
    tls_offered: bool,
    advertise_dsn: bool,
    max_message_size: usize,
    max_recipients: usize,
    max_errors: u32,
    max_junk: u32,
    phase: Phase,
    esmtp: bool,
    tx: Envelope,
    errors: u32,
    /// NOOP/VRFY/HELP/RSET since the last accepted message.
    junk: u32,
}

fn r(code: u16, st: (u8, u16, u16), text: &str) -> Reply {
    Reply::with_status(code, st, text)
}

impl Session {
    /// A session for a new connection. `tls_offered`: STARTTLS is possible.
    pub fn new(info: SessionInfo, cfg: &ServerConfig, tls_offered: bool) -> Self {
        Self {
            info,
            hostname: cfg.hostname.clone(),
            tls_offered,
            advertise_dsn: cfg.advertise_dsn,
            max_message_size: cfg.limits.max_message_size,
            max_recipients: cfg.limits.max_recipients,
            max_errors: cfg.limits.max_errors,
            max_junk: cfg.limits.max_junk_commands,
            phase: Phase::Connected,
            esmtp: false,
            tx: Envelope::default(),
            errors: 0,
            junk: 0,
        }
    }

    /// What the handler sees about this session.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The transaction so far.
    pub fn envelope(&self) -> &Envelope {
        &self.tx
    }

    /// Protocol errors counted so far.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// The 220 banner.
    pub fn greeting(&self) -> Reply {
        Reply::new(220, None, format!("{} ESMTP rundbrief", self.hostname))
    }

    /// `421 4.4.2` for a peer that went quiet.
    pub fn idle_timeout() -> Reply {
        r(421, (4, 4, 2), "Idle timeout, closing connection")
    }

    /// `421 4.4.2` for a session past [`crate::Limits::max_session_duration`].
    pub fn too_long() -> Reply {
        r(421, (4, 4, 2), "Session too long, closing connection")
    }

    /// `421 4.3.2` when the server stops.
    pub fn shutting_down() -> Reply {
        r(421, (4, 3, 2), "Server shutting down, try again later")
    }

    /// Counts a protocol error; over the budget the reply becomes a 421 close.
    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors > self.max_errors {
            Step::Close(r(421, (4, 7, 0), "Too many errors, closing connection"))
        } else {
            Step::Reply(reply)
        }
    }

    /// Counts a command that moves no mail; too many close the session.
    fn junk(&mut self, reply: Reply) -> Step {
        self.junk += 1;
        if self.junk > self.max_junk {
            Step::Close(r(
                421,
                (4, 7, 0),
                "Too many commands without mail, closing connection",
            ))
        } else {
            Step::Reply(reply)
        }
    }

    fn reset_tx(&mut self) {
        self.tx = Envelope::default();
        if self.phase == Phase::Mail {
            self.phase = Phase::Ready;
        }
    }

    /// A line smtp-proto could not parse.
    pub fn on_parse_error(&mut self, err: &smtp_proto::Error) -> Step {
        use smtp_proto::Error as E;
        let reply = match err {
            E::UnknownCommand => r(500, (5, 5, 1), "Unknown command"),
            E::InvalidSenderAddress => r(501, (5, 1, 7), "Bad sender address syntax"),
            E::InvalidRecipientAddress => r(501, (5, 1, 3), "Bad recipient address syntax"),
            E::SyntaxError { syntax } => {
                r(501, (5, 5, 2), &format!("Syntax error, expected: {syntax}"))
            }
            E::InvalidParameter { param } => {
                r(501, (5, 5, 4), &format!("Invalid parameter {param}"))
            }
            E::UnsupportedParameter { param } => {
                let p: String = param
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(32)
                    .collect();
                r(504, (5, 5, 4), &format!("Unsupported parameter {p}"))
            }
            E::ResponseTooLong => r(500, (5, 5, 2), "Line too long"),
            E::NeedsMoreData { .. } | E::InvalidResponse { .. } => {
                r(500, (5, 5, 2), "Syntax error")
            }
        };
        self.error(reply)
    }

    /// The next command.
    pub fn on_request(&mut self, req: Request<String>) -> Step {
        match req {
            Request::Ehlo { host } => self.helo(host, true),
            Request::Helo { host } => self.helo(host, false),
            Request::Lhlo { .. } => self.error(r(502, (5, 5, 1), "LMTP not supported")),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat { chunk_size, .. } => {
                self.reset_tx();
                self.errors += 1;
                let reply = r(502, (5, 5, 1), "CHUNKING not offered, use DATA");
                if self.errors > self.max_errors {
                    Step::Close(r(421, (4, 7, 0), "Too many errors, closing connection"))
                } else {
                    Step::SkipChunk { chunk_size, reply }
                }
            }
            Request::Auth { .. } => self.error(r(502, (5, 5, 1), "AUTH not supported")),
            Request::Noop { .. } => self.junk(r(250, (2, 0, 0), "Ok")),
            Request::Vrfy { .. } => self.junk(r(
                252,
                (2, 5, 0),
                "Cannot VRFY user, but will accept message",
            )),
            Request::Expn { .. } => self.error(r(502, (5, 5, 1), "EXPN not supported")),
            Request::Help { .. } => self.junk(r(214, (2, 0, 0), "See RFC 5321")),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.error(r(502, (5, 5, 1), "Command not implemented"))
            }
            Request::StartTls => self.starttls(),
            Request::Rset => {
                self.reset_tx();
                self.junk(r(250, (2, 0, 0), "Ok"))
            }
            Request::Quit => Step::Close(r(221, (2, 0, 0), "Bye")),
        }
    }

    fn helo(&mut self, host: String, esmtp: bool) -> Step {
        // A repeated greeting moves no mail: it counts like NOOP.
        if self.info.helo.is_some() {
            self.junk += 1;
            if self.junk > self.max_junk {
                return Step::Close(r(
                    421,
                    (4, 7, 0),
                    "Too many commands without mail, closing connection",
                ));
            }
        }
        self.tx = Envelope::default();
        self.phase = Phase::Ready;
        self.esmtp = esmtp;
        self.info.helo = Some(
            host.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(255)
                .collect(),
        );
        if !esmtp {
            return Step::Reply(Reply::new(250, None, self.hostname.clone()));
        }
        let mut ehlo = EhloResponse::new(self.hostname.as_str());
        ehlo.capabilities =
            EXT_PIPELINING | EXT_8BIT_MIME | EXT_SMTP_UTF8 | EXT_SIZE | EXT_ENHANCED_STATUS_CODES;
        if self.tls_offered && !self.info.tls {
            ehlo.capabilities |= EXT_START_TLS;
        }
        if self.advertise_dsn {
            ehlo.capabilities |= EXT_DSN;
        }
        ehlo.size = self.max_message_size;
        let mut wire = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = ehlo.write(&mut wire);
        // smtp-proto renders "250-host you had me at EHLO" + one line per
        // extension; keep its extension lines, use our own first line.
        let text = String::from_utf8_lossy(&wire);
        let mut lines = vec![format!(
            "{} greets {}",
            self.hostname,
            self.info.helo.as_deref().unwrap_or("")
        )];
        lines.extend(
            text.lines()
                .skip(1)
                .map(|l| l.get(4..).unwrap_or("").to_owned()),
        );
        Step::Reply(Reply::new(250, None, lines.join("\n")))
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Step {
        match self.phase {
            Phase::Connected => return self.error(r(503, (5, 5, 1), "Send EHLO or HELO first")),
            Phase::Mail => return self.error(r(503, (5, 5, 1), "Nested MAIL command")),
            Phase::Ready => {}
        }
        if from.size > self.max_message_size {
            return Step::Reply(r(
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            ));
        }
        let mail = MailFrom {
            address: from.address,
            size: (from.size > 0).then_some(from.size),
            body: if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
                Body::EightBitMime
            } else {
                Body::SevenBit
            },
            smtputf8: from.flags & smtp_proto::MAIL_SMTPUTF8 != 0,
            ret: if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
                Some(Ret::Headers)
            } else if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
                Some(Ret::Full)
            } else {
                None
            },
            env_id: from.env_id,
        };
        Step::AskMail(mail)
    }

    /// The handler's answer to [`Step::AskMail`].
    pub fn mail_decided(&mut self, from: MailFrom, decision: Decision) -> Step {
        match decision {
            Decision::Accept => {
                self.tx = Envelope {
                    mail_from: from,
                    recipients: Vec::new(),
                };
                self.phase = Phase::Mail;
                Step::Reply(r(250, (2, 1, 0), "Sender ok"))
            }
            Decision::Reject(reply) => self.refused(reply),
        }
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> Step {
        if self.phase != Phase::Mail {
            return self.error(r(503, (5, 5, 1), "Need MAIL before RCPT"));
        }
        if self.tx.recipients.len() >= self.max_recipients {
            return Step::Reply(r(452, (4, 5, 3), "Too many recipients"));
        }
        let f = to.flags;
        let any = smtp_proto::RCPT_NOTIFY_SUCCESS
            | smtp_proto::RCPT_NOTIFY_FAILURE
            | smtp_proto::RCPT_NOTIFY_DELAY
            | smtp_proto::RCPT_NOTIFY_NEVER;
        let notify = (f & any != 0).then_some(Notify {
            success: f & smtp_proto::RCPT_NOTIFY_SUCCESS != 0,
            failure: f & smtp_proto::RCPT_NOTIFY_FAILURE != 0,
            delay: f & smtp_proto::RCPT_NOTIFY_DELAY != 0,
            never: f & smtp_proto::RCPT_NOTIFY_NEVER != 0,
        });
        Step::AskRcpt(Recipient {
            address: to.address,
            orcpt: to.orcpt,
            notify,
        })
    }

    /// The handler's answer to [`Step::AskRcpt`].
    pub fn rcpt_decided(&mut self, rcpt: Recipient, decision: Decision) -> Step {
        match decision {
            Decision::Accept => {
                self.tx.recipients.push(rcpt);
                Step::Reply(r(250, (2, 1, 5), "Recipient ok"))
            }
            Decision::Reject(reply) => self.refused(reply),
        }
    }

    fn data(&mut self) -> Step {
        match self.phase {
            Phase::Connected => self.error(r(503, (5, 5, 1), "Send EHLO or HELO first")),
            Phase::Ready => self.error(r(503, (5, 5, 1), "Need MAIL command")),
            // Not a protocol error: with PIPELINING a client sends DATA before
            // it learns that every RCPT was refused (RFC 2920 §3.1).
            Phase::Mail if self.tx.recipients.is_empty() => {
                Step::Reply(r(554, (5, 5, 1), "No valid recipients"))
            }
            Phase::Mail => {
                Step::ReceiveData(Reply::new(354, None, "End data with <CR><LF>.<CR><LF>"))
            }
        }
    }

    /// The DATA body grew past the size limit (it was read to the end and discarded).
    pub fn data_too_big(&mut self) -> Step {
        self.reset_tx();
        Step::Reply(r(552, (5, 3, 4), "Message too big"))
    }

    /// The handler's answer to a complete message; ends the transaction.
    pub fn data_received(&mut self, decision: DataDecision) -> Step {
        self.reset_tx();
        match decision {
            DataDecision::Accept { queue_id, close } => {
                self.info.messages = self.info.messages.saturating_add(1);
                // Budgets count since the last accepted message.
                self.junk = 0;
                self.errors = 0;
                let text = match queue_id {
                    Some(id) => format!("Ok: queued as {id}"),
                    None => "Ok".to_owned(),
                };
                let reply = r(250, (2, 0, 0), &text);
                if close {
                    Step::Close(reply)
                } else {
                    Step::Reply(reply)
                }
            }
            DataDecision::Reject(reply) => refusal(reply),
        }
    }

    fn starttls(&mut self) -> Step {
        if self.info.tls {
            return self.error(r(503, (5, 5, 1), "TLS already active"));
        }
        if !self.tls_offered {
            return self.error(r(502, (5, 5, 1), "STARTTLS not offered"));
        }
        Step::StartTls(r(220, (2, 0, 0), "Ready to start TLS"))
    }

    /// TLS is up: forget everything learnt in clear text (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.info.tls = true;
        self.info.helo = None;
        self.esmtp = false;
        self.tx = Envelope::default();
        self.phase = Phase::Connected;
    }
}

impl Session {
    /// A handler's refusal of `MAIL` or `RCPT`: answered as the handler
    /// says, and counted against the error budget, so probing addresses
    /// that are refused cannot hold a slot for ever.
    fn refused(&mut self, reply: Reply) -> Step {
        match refusal(reply) {
            Step::Reply(reply) => self.error(reply),
            close => close,
        }
    }
}

/// A handler refusal; 421 closes, anything positive is an error on our side.
fn refusal(reply: Reply) -> Step {
    if reply.code() == 421 {
        Step::Close(reply)
    } else if reply.is_positive() || reply.code() < 400 {
        Step::Reply(r(451, (4, 3, 0), "Temporary failure"))
    } else {
        Step::Reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    fn session(max_errors: u32) -> Session {
        let info = SessionInfo {
            id: 1,
            peer: "127.0.0.1:1".parse().expect("literal"),
            local: "127.0.0.1:2".parse().expect("literal"),
            helo: None,
            tls: false,
            messages: 0,
        };
        let cfg = ServerConfig {
            limits: Limits {
                max_errors,
                max_recipients: 2,
                ..Limits::default()
            },
            ..ServerConfig::default()
        };
        Session::new(info, &cfg, true)
    }

    fn feed(s: &mut Session, line: &str) -> Step {
        let bytes = line.as_bytes().to_vec();
        let mut it = bytes.iter();
        match Request::parse(&mut it) {
            Ok(req) => s.on_request(req.into_owned()),
            Err(e) => s.on_parse_error(&e),
        }
    }

    fn code(step: &Step) -> u16 {
        match step {
            Step::Reply(r) | Step::Close(r) | Step::ReceiveData(r) | Step::StartTls(r) => r.code(),
            Step::AskMail(_) | Step::AskRcpt(_) => 0,
            Step::SkipChunk { reply, .. } => reply.code(),
        }
    }

    #[test]
    fn sequence_table() {
        let mut s = session(100);
        let table: &[(&str, u16)] = &[
            ("MAIL FROM:<a@b>\r\n", 503),
            ("DATA\r\n", 503),
            ("EHLO client.example\r\n", 250),
            ("RCPT TO:<x@y>\r\n", 503),
            ("MAIL FROM:<a@b> SIZE=999999999999\r\n", 552),
            ("MAIL FROM:<a@b>\r\n", 0),
            ("FOO\r\n", 500),
            ("NOOP\r\n", 250),
            ("STARTTLS\r\n", 220),
            ("QUIT\r\n", 221),
        ];
        for (line, want) in table {
            let step = feed(&mut s, line);
            if let Step::AskMail(from) = &step {
                let next = s.mail_decided(from.clone(), Decision::Accept);
                assert_eq!(code(&next), 250);
            }
            assert_eq!(code(&step), *want, "{line}");
        }
    }

    #[test]
    fn recipients_limit_and_data() {
        let mut s = session(100);
        feed(&mut s, "EHLO c\r\n");
        let Step::AskMail(from) = feed(&mut s, "MAIL FROM:<>\r\n") else {
            panic!("MAIL")
        };
        assert!(from.is_null());
        s.mail_decided(from, Decision::Accept);
        assert_eq!(code(&feed(&mut s, "DATA\r\n")), 554);
        for i in 0..2 {
            let Step::AskRcpt(rcpt) = feed(&mut s, &format!("RCPT TO:<u{i}@x> NOTIFY=NEVER\r\n"))
            else {
                panic!("RCPT")
            };
            assert_eq!(rcpt.notify.map(|n| n.never), Some(true));
            assert_eq!(code(&s.rcpt_decided(rcpt, Decision::Accept)), 250);
        }
        assert_eq!(code(&feed(&mut s, "RCPT TO:<u3@x>\r\n")), 452);
        assert_eq!(code(&feed(&mut s, "DATA\r\n")), 354);
        assert_eq!(code(&s.data_received(DataDecision::accept())), 250);
        assert_eq!(s.info().messages, 1);
        assert!(s.envelope().recipients.is_empty());
    }

    #[test]
    fn junk_commands_are_bounded_and_reset_by_mail() {
        let mut s = session(100);
        s.max_junk = 3;
        feed(&mut s, "EHLO c\r\n");
        for _ in 0..3 {
            assert!(matches!(feed(&mut s, "NOOP\r\n"), Step::Reply(_)));
        }
        let Step::AskMail(from) = feed(&mut s, "MAIL FROM:<a@b>\r\n") else {
            panic!("MAIL")
        };
        s.mail_decided(from, Decision::Accept);
        let Step::AskRcpt(rcpt) = feed(&mut s, "RCPT TO:<c@d>\r\n") else {
            panic!("RCPT")
        };
        s.rcpt_decided(rcpt, Decision::Accept);
        s.data_received(DataDecision::accept());
        for _ in 0..3 {
            assert!(matches!(feed(&mut s, "RSET\r\n"), Step::Reply(_)));
        }
        assert!(matches!(feed(&mut s, "NOOP\r\n"), Step::Close(ref r) if r.code() == 421));
    }

    #[test]
    fn garbage_never_panics() {
        let mut s = session(u32::MAX);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut line = Vec::new();
            for _ in 0..(seed % 60) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                line.push((seed % 256) as u8);
            }
            let prefixes: [&[u8]; 6] = [
                b"MAIL FROM:<",
                b"RCPT TO:<",
                b"EHLO ",
                b"",
                b"DATA",
                b"BDAT ",
            ];
            let mut input = prefixes[(seed % 6) as usize].to_vec();
            input.extend_from_slice(&line);
            input.extend_from_slice(b"\r\n");
            let mut it = input.iter();
            let step = match Request::parse(&mut it) {
                Ok(req) => s.on_request(req.into_owned()),
                Err(e) => s.on_parse_error(&e),
            };
            match step {
                Step::AskMail(f) => drop(s.mail_decided(f, Decision::Accept)),
                Step::AskRcpt(r) => drop(s.rcpt_decided(r, Decision::Accept)),
                Step::ReceiveData(_) => drop(s.data_received(DataDecision::accept())),
                _ => {}
            }
        }
    }

    #[test]
    fn error_budget_closes() {
        let mut s = session(2);
        assert!(matches!(feed(&mut s, "BAD\r\n"), Step::Reply(_)));
        assert!(matches!(feed(&mut s, "BAD\r\n"), Step::Reply(_)));
        assert!(matches!(feed(&mut s, "BAD\r\n"), Step::Close(ref r) if r.code() == 421));
    }

    #[test]
    fn ehlo_advertises_extensions() {
        let mut s = session(2);
        let Step::Reply(reply) = feed(&mut s, "EHLO c\r\n") else {
            panic!("EHLO")
        };
        let wire = reply.to_wire();
        for ext in [
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "SIZE 26214400",
            "ENHANCEDSTATUSCODES",
            "STARTTLS",
        ] {
            assert!(
                wire.contains(&format!("250-{ext}\r\n"))
                    || wire.contains(&format!("250 {ext}\r\n")),
                "{ext} in {wire}"
            );
        }
        assert!(!wire.contains("AUTH"));
        s.tls_started();
        let Step::Reply(reply) = feed(&mut s, "EHLO c\r\n") else {
            panic!("EHLO")
        };
        assert!(!reply.to_wire().contains("STARTTLS"));
    }

    #[test]
    fn handler_421_closes_and_positive_refusal_is_tempfail() {
        let mut s = session(2);
        feed(&mut s, "EHLO c\r\n");
        let Step::AskMail(from) = feed(&mut s, "MAIL FROM:<a@b>\r\n") else {
            panic!("MAIL")
        };
        assert!(
            matches!(s.mail_decided(from.clone(), Decision::Reject(Reply::new(250, None, "x"))), Step::Reply(ref r) if r.code() == 451)
        );
        assert!(matches!(
            s.mail_decided(from, Decision::Reject(Reply::new(421, None, "x"))),
            Step::Close(_)
        ));
    }
}
