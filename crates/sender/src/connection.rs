//! One SMTP connection driven step by step through lettre's
//! `AsyncSmtpConnection`, so every error knows its step.
//!
//! We open the TCP stream ourselves with `TCP_NODELAY` (lettre's own
//! connections do not set it and stall ~40 ms per message on Nagle and
//! delayed ACK) and hand it to `connect_with_transport`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{
    ClientId, Extension, MailBodyParameter, MailParameter, RcptParameter,
};
use tokio::net::TcpStream;
use tracing::debug;
use uuid::Uuid;

use crate::error::{Reply, SendError, SmtpStep};
use crate::relay::{Relay, TlsMode};
use crate::tls::{self, TlsSetup};

/// What the relay offered in its (last) EHLO, beyond what lettre records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 3461 delivery status notifications.
    pub dsn: bool,
    /// RFC 2920 command pipelining.
    pub pipelining: bool,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
}

impl Capabilities {
    fn from_ehlo(reply: &lettre::transport::smtp::response::Response) -> Self {
        let mut caps = Capabilities::default();
        // The first line is the server's name and greeting.
        for line in reply.message().skip(1) {
            match line
                .split_whitespace()
                .next()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                Some("DSN") => caps.dsn = true,
                Some("PIPELINING") => caps.pipelining = true,
                Some("8BITMIME") => caps.eight_bit_mime = true,
                Some("SMTPUTF8") => caps.smtputf8 = true,
                _ => {}
            }
        }
        caps
    }
}

/// One open, greeted (and, as configured, secured and authenticated)
/// connection.
pub(crate) struct Connection {
    inner: AsyncSmtpConnection,
    pub caps: Capabilities,
    /// Messages accepted over this connection.
    pub sent: u32,
    /// False while a transaction may be open (after MAIL was sent and before
    /// the reply to the final dot): the next send starts with RSET.
    clean: bool,
    /// The relay is in a state we cannot bring back (see
    /// `envelope_pipelined`): close instead of reusing.
    pub poisoned: bool,
}

/// Commands already rendered (a pipelined batch).
struct Raw<'a>(&'a str);

impl std::fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The DATA block for `body`: dot-stuffed (RFC 5321 4.5.2: a line that
/// starts with "." gets another, a line being the start of the body or what
/// follows a CRLF, the same rule as lettre's codec) and ended with
/// CRLF.CRLF, ready for one write.
fn data_block(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + body.len() / 256 + 8);
    if body.starts_with('.') {
        out.push('.');
    }
    let mut start = 0;
    for i in memchr::memmem::find_iter(body.as_bytes(), b"\r\n.") {
        // i + 2 is just after an ASCII LF: a char boundary.
        out.push_str(&body[start..i + 2]);
        out.push('.');
        start = i + 2;
    }
    out.push_str(&body[start..]);
    out.push_str("\r\n.\r\n");
    out
}

/// Maps a lettre error at `step` to ours: a reply is quoted, anything else
/// means the connection is gone.
fn lettre_err(step: SmtpStep, host: &str, e: &lettre::transport::smtp::Error) -> SendError {
    match Reply::from_error(e) {
        Some(reply) => SendError::Refused {
            step,
            host: host.to_owned(),
            reply,
        },
        None => SendError::ConnectionLost {
            step,
            host: host.to_owned(),
            detail: error_chain(e),
        },
    }
}

async fn timed<T>(
    step: SmtpStep,
    host: &str,
    after: Duration,
    fut: impl Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    tokio::time::timeout(after, fut).await.unwrap_or_else(|_| {
        Err(SendError::Timeout {
            step,
            host: host.to_owned(),
            after,
        })
    })
}

pub(crate) fn client_id(relay: &Relay) -> ClientId {
    match &relay.options.ehlo_name {
        Some(name) => ClientId::Domain(name.clone()),
        None => ClientId::default(),
    }
}

impl Connection {
    /// DNS, TCP (nodelay), implicit TLS, banner + EHLO, STARTTLS, EHLO again
    /// to learn the extensions lettre does not record (DSN, PIPELINING),
    /// AUTH.
    pub async fn open(relay: &Relay, tls: &TlsSetup, hello: &ClientId) -> Result<Self, SendError> {
        let host = relay.host();
        let o = &relay.options;
        let tcp = timed(
            SmtpStep::Connect,
            host,
            o.connect_timeout,
            connect_tcp(host, relay.port()),
        )
        .await?;
        let stream: Box<dyn AsyncTokioStream> = if relay.tls() == TlsMode::Implicit {
            Box::new(
                timed(
                    SmtpStep::Tls,
                    host,
                    o.command_timeout,
                    tls::wrap(tls, host, tcp),
                )
                .await?,
            )
        } else {
            Box::new(tcp)
        };
        let mut inner = timed(SmtpStep::Greeting, host, o.command_timeout, async {
            AsyncSmtpConnection::connect_with_transport(stream, hello)
                .await
                .map_err(|e| lettre_err(SmtpStep::Greeting, host, &e))
        })
        .await?;

        match relay.tls() {
            TlsMode::Required | TlsMode::Opportunistic if inner.can_starttls() => {
                timed(SmtpStep::Tls, host, o.command_timeout, async {
                    inner
                        .starttls(tls.starttls.clone(), hello)
                        .await
                        .map_err(|e| match Reply::from_error(&e) {
                            Some(reply) => SendError::Refused {
                                step: SmtpStep::Tls,
                                host: host.to_owned(),
                                reply,
                            },
                            None => SendError::Tls {
                                host: host.to_owned(),
                                detail: error_chain(&e),
                            },
                        })
                })
                .await?;
            }
            TlsMode::Required => {
                return Err(SendError::TlsNotOffered {
                    host: host.to_owned(),
                });
            }
            _ => {}
        }

        let caps = timed(SmtpStep::Greeting, host, o.command_timeout, async {
            let reply = inner
                .command(Ehlo::new(hello.clone()))
                .await
                .map_err(|e| lettre_err(SmtpStep::Greeting, host, &e))?;
            Ok(Capabilities::from_ehlo(&reply))
        })
        .await?;

        if let (Some(user), Some(password)) = (relay.user(), relay.password()) {
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            if inner
                .server_info()
                .get_auth_mechanism(&mechanisms)
                .is_none()
            {
                let hint = if inner.is_encrypted() {
                    ""
                } else {
                    "; many relays offer AUTH only after STARTTLS (use ?tls=required)"
                };
                return Err(SendError::AuthUnsupported {
                    host: host.to_owned(),
                    hint,
                });
            }
            let creds = Credentials::new(
                user.to_owned(),
                String::from_utf8_lossy(password.expose()).into_owned(),
            );
            timed(SmtpStep::Auth, host, o.command_timeout, async {
                inner
                    .auth(&mechanisms, &creds)
                    .await
                    .map_err(|e| lettre_err(SmtpStep::Auth, host, &e))
            })
            .await?;
        }
        debug!(relay = %relay, dsn = caps.dsn, pipelining = caps.pipelining, tls = inner.is_encrypted(), "connected");
        Ok(Connection {
            inner,
            caps,
            sent: 0,
            clean: true,
            poisoned: false,
        })
    }

    /// One transaction: (RSET), MAIL, RCPT, DATA, body. `from` is the VERP
    /// return path, `env_id` goes into `ENVID=` where the relay offers DSN.
    ///
    /// # Errors
    /// A [`SendError`] naming the step. After an error other than a refusal,
    /// the connection must be dropped.
    pub async fn send(
        &mut self,
        relay: &Relay,
        from: &Address,
        to: &Address,
        env_id: Uuid,
        message: &[u8],
    ) -> Result<Reply, SendError> {
        let host = relay.host();
        let t = relay.options.command_timeout;
        let mut mail_params = Vec::new();
        let mut rcpt_params = Vec::new();
        if self.caps.dsn {
            mail_params.push(MailParameter::Other {
                keyword: "RET".into(),
                value: Some("HDRS".into()),
            });
            mail_params.push(MailParameter::Other {
                keyword: "ENVID".into(),
                value: Some(env_id.to_string()),
            });
            rcpt_params.push(RcptParameter::Other {
                keyword: "NOTIFY".into(),
                value: Some("FAILURE,DELAY".into()),
            });
            rcpt_params.push(RcptParameter::Other {
                keyword: "ORCPT".into(),
                value: Some(format!("rfc822;{to}")),
            });
        }
        if !message.is_ascii()
            && (self.caps.eight_bit_mime
                || self
                    .inner
                    .server_info()
                    .supports_feature(Extension::EightBitMime))
        {
            mail_params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        if !(AsRef::<str>::as_ref(from).is_ascii() && AsRef::<str>::as_ref(to).is_ascii())
            && self.caps.smtputf8
        {
            mail_params.push(MailParameter::SmtpUtfEight);
        }
        let mail = Mail::new(Some(from.clone()), mail_params);
        let rcpt = Rcpt::new(to.clone(), rcpt_params);

        if self.caps.pipelining && relay.options.pipelining {
            self.envelope_pipelined(host, t, mail, rcpt).await?;
        } else {
            if !self.clean {
                timed(SmtpStep::Rset, host, t, async {
                    self.inner
                        .command(Rset)
                        .await
                        .map_err(|e| lettre_err(SmtpStep::Rset, host, &e))
                })
                .await?;
                self.clean = true;
            }
            self.clean = false;
            timed(SmtpStep::Mail, host, t, async {
                self.inner
                    .command(mail)
                    .await
                    .map_err(|e| lettre_err(SmtpStep::Mail, host, &e))
            })
            .await?;
            timed(SmtpStep::Rcpt, host, t, async {
                self.inner
                    .command(rcpt)
                    .await
                    .map_err(|e| lettre_err(SmtpStep::Rcpt, host, &e))
            })
            .await?;
            timed(SmtpStep::Data, host, t, async {
                self.inner
                    .command(Data)
                    .await
                    .map_err(|e| lettre_err(SmtpStep::Data, host, &e))
            })
            .await?;
        }
        // CRLF.CRLF follows the body: drop one trailing CRLF so the stored
        // message does not grow an empty line.
        let body = message.strip_suffix(b"\r\n").unwrap_or(message);
        let reply = timed(SmtpStep::Data, host, relay.options.data_timeout, async {
            match std::str::from_utf8(body) {
                // The whole DATA block in one write (lettre's `message`
                // stuffs byte by byte, then writes the final dot apart).
                Ok(text) => self.inner.command(Raw(&data_block(text))).await,
                Err(_) => self.inner.message(body).await,
            }
            .map_err(|e| lettre_err(SmtpStep::Data, host, &e))
        })
        .await;
        // After the reply to the final dot, good or bad, the transaction is over.
        if matches!(reply, Ok(_) | Err(SendError::Refused { .. })) {
            self.clean = true;
        }
        let reply = reply?;
        self.sent = self.sent.saturating_add(1);
        Ok(Reply::from_response(&reply))
    }

    /// RFC 2920: (RSET,) MAIL, RCPT and DATA in one write, then their
    /// replies in order. The first negative reply decides the error and its
    /// step; the later replies are still read so the connection stays in
    /// step. A relay that answers DATA with 354 after refusing the only
    /// recipient is waiting for a body we will not send: the connection is
    /// marked for closing.
    async fn envelope_pipelined(
        &mut self,
        host: &str,
        t: Duration,
        mail: Mail,
        rcpt: Rcpt,
    ) -> Result<(), SendError> {
        let rset = !self.clean;
        let batch = format!("{}{mail}{rcpt}{Data}", if rset { "RSET\r\n" } else { "" });
        let steps: &[SmtpStep] = if rset {
            &[
                SmtpStep::Rset,
                SmtpStep::Mail,
                SmtpStep::Rcpt,
                SmtpStep::Data,
            ]
        } else {
            &[SmtpStep::Mail, SmtpStep::Rcpt, SmtpStep::Data]
        };
        self.clean = false;
        let mut first_error = None;
        for (i, &step) in steps.iter().enumerate() {
            let reply = timed(step, host, t, async {
                let r = if i == 0 {
                    self.inner.command(Raw(&batch)).await
                } else {
                    self.inner.read_response().await
                };
                r.map_err(|e| lettre_err(step, host, &e))
            })
            .await;
            match reply {
                Ok(_) if step == SmtpStep::Data && first_error.is_some() => self.poisoned = true,
                Ok(_) => {}
                Err(e @ SendError::Refused { .. }) => {
                    first_error.get_or_insert(e);
                }
                // Timeout or broken connection: nothing more to read.
                Err(e) => return Err(first_error.unwrap_or(e)),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// QUIT, best effort, then close.
    pub async fn quit(mut self, after: Duration) {
        let _ = tokio::time::timeout(after, self.inner.quit()).await;
    }
}

/// Resolves (unless `host` is an IP address) and connects to the first
/// address that answers, with `TCP_NODELAY`.
async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, SendError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| SendError::Resolve {
                host: host.to_owned(),
                detail: e.to_string(),
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(SendError::Resolve {
            host: host.to_owned(),
            detail: "no addresses".into(),
        });
    }
    let mut last = String::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true).map_err(|e| SendError::Connect {
                    host: host.to_owned(),
                    port,
                    detail: format!("TCP_NODELAY: {e}"),
                })?;
                return Ok(s);
            }
            // The address only when it says more than the host already does.
            Err(e) if addr.ip().to_string() == host => last = e.to_string(),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(SendError::Connect {
        host: host.to_owned(),
        port,
        detail: last,
    })
}

/// `e` and its sources, `: `-separated, each said once.
///
/// lettre's errors print their source after their own words *and* return
/// it from `source()`, and a failed STARTTLS is a connection error wrapping
/// another ("Connection error: Connection error: invalid peer
/// certificate: UnknownIssuer"). So each layer contributes only the words
/// in front of its source's text, and a layer repeating the one above it
/// is dropped: "Connection error: invalid peer certificate: UnknownIssuer".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut layers = vec![e.to_string()];
    let mut cur = e.source();
    // Bounded: a chain longer than this is cut rather than walked forever.
    while let Some(c) = cur.filter(|_| layers.len() < 16) {
        layers.push(c.to_string());
        cur = c.source();
    }
    let mut parts: Vec<&str> = Vec::new();
    for (i, text) in layers.iter().enumerate() {
        let own = match layers.get(i + 1) {
            Some(inner) if !inner.is_empty() => text
                .strip_suffix(inner.as_str())
                .map_or(text.as_str(), |own| own.trim_end().trim_end_matches(':'))
                .trim_end(),
            _ => text.as_str(),
        };
        let said = parts.iter().any(|p| p.contains(own));
        if !own.is_empty() && !said {
            parts.push(own);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error shaped like lettre's: its own words, then `: ` and its
    /// source's text, and the source from `source()` as well.
    #[derive(Debug)]
    struct Wraps(&'static str, Option<Box<dyn std::error::Error + 'static>>);

    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)?;
            match &self.1 {
                Some(s) => write!(f, ": {s}"),
                None => Ok(()),
            }
        }
    }

    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn error_chains_say_each_layer_once() {
        let tls_cause = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid peer certificate: UnknownIssuer",
            )
        };
        // A failed STARTTLS: lettre wraps its connection error in another.
        let starttls = Wraps(
            "Connection error",
            Some(Box::new(Wraps(
                "Connection error",
                Some(Box::new(tls_cause())),
            ))),
        );
        assert_eq!(
            error_chain(&starttls),
            "Connection error: invalid peer certificate: UnknownIssuer"
        );
        // A layer that does not print its source still gets it appended.
        #[derive(Debug)]
        struct Quiet(std::io::Error);
        impl std::fmt::Display for Quiet {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("handshake failed")
            }
        }
        impl std::error::Error for Quiet {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            error_chain(&Quiet(tls_cause())),
            "handshake failed: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(error_chain(&Wraps("network error", None)), "network error");
    }

    /// The rule said line by line: every CRLF-delimited line that starts
    /// with "." gets another.
    fn stuffed_by_lines(body: &str) -> String {
        let lines: Vec<String> = body
            .split("\r\n")
            .map(|l| {
                if l.starts_with('.') {
                    format!(".{l}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        format!("{}\r\n.\r\n", lines.join("\r\n"))
    }

    #[test]
    fn data_block_stuffs_dots_at_line_starts_only() {
        for body in [
            "",
            ".",
            "..",
            ".hidden\r\nline",
            "a\r\n.b\r\n..c\r\n.",
            "bare\n.lf is no line start",
            "cr\r.not either",
            "\r\r\n.after a stray CR",
            "ü\r\n.ü",
        ] {
            assert_eq!(data_block(body), stuffed_by_lines(body), "{body:?}");
        }
        assert_eq!(data_block("a\r\n.b"), "a\r\n..b\r\n.\r\n");
        // Every string over a small alphabet up to length 7.
        let alphabet = ['.', '\r', '\n', 'a', 'ü'];
        let mut n = 0;
        for len in 0..=7u32 {
            for mut k in 0..alphabet.len().pow(len) {
                let mut s = String::new();
                for _ in 0..len {
                    s.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                assert_eq!(data_block(&s), stuffed_by_lines(&s), "{s:?}");
                n += 1;
            }
        }
        assert_eq!(n, 97_656);
    }

    #[test]
    fn capabilities_from_ehlo_lines() {
        let r: lettre::transport::smtp::response::Response =
            "250-sink.localhost Hello\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-dsn\r\n250 8BITMIME\r\n".parse().expect("valid reply");
        let c = Capabilities::from_ehlo(&r);
        assert_eq!(
            c,
            Capabilities {
                dsn: true,
                pipelining: true,
                eight_bit_mime: true,
                smtputf8: false
            }
        );
        let r: lettre::transport::smtp::response::Response =
            "250 DSN.example\r\n".parse().expect("valid reply");
        assert!(
            !Capabilities::from_ehlo(&r).dsn,
            "the greeting line is not an extension"
        );
    }
}
