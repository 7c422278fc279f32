//! A minimal SMTP client for the sink's DSN delivery (and tests): plain TCP,
//! no TLS, no AUTH, one command at a time, smtp-proto's reply parser, a
//! timeout on every step and errors that name the step and quote the reply.
//!
//! Why not lettre: lettre stays inside the `sender` crate (STYLE.md), and a
//! DSN to a loopback sink needs five commands, not a pool and TLS stack.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Largest reply we read (a long EHLO list fits easily).
const MAX_REPLY: usize = 16 * 1024;

/// The dialogue step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientStep {
    /// TCP connect.
    Connect,
    /// The 220 banner.
    Banner,
    /// EHLO.
    Ehlo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA (the 354).
    Data,
    /// The message and final dot.
    Message,
    /// QUIT.
    Quit,
}

impl fmt::Display for ClientStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Banner => "banner",
            Self::Ehlo => "EHLO",
            Self::Mail => "MAIL",
            Self::Rcpt => "RCPT",
            Self::Data => "DATA",
            Self::Message => "message",
            Self::Quit => "QUIT",
        })
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered `step` with an unexpected reply.
    #[error("{step} refused by {addr}: {code} {text}")]
    Rejected {
        /// Failed step.
        step: ClientStep,
        /// Server address.
        addr: SocketAddr,
        /// Reply code.
        code: u16,
        /// Reply text (enhanced status included when sent).
        text: String,
    },
    /// No (complete) answer to `step` within the timeout.
    #[error("{step} timed out after {after:?} on {addr}")]
    Timeout {
        /// Failed step.
        step: ClientStep,
        /// Server address.
        addr: SocketAddr,
        /// The step's timeout.
        after: Duration,
    },
    /// Socket error or a reply smtp-proto cannot parse during `step`.
    #[error("{step} failed on {addr}: {reason}")]
    Io {
        /// Failed step.
        step: ClientStep,
        /// Server address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
}

impl ClientError {
    /// 4xx replies, timeouts and socket errors: worth a retry.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Rejected { code, .. } => (400..500).contains(code),
            Self::Timeout { .. } | Self::Io { .. } => true,
        }
    }
}

/// One reply as read by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReply {
    /// Reply code.
    pub code: u16,
    /// Enhanced status, `[0, 0, 0]` when absent.
    pub esc: [u8; 3],
    /// Text, lines joined with `\n`.
    pub text: String,
}

/// An open SMTP client connection.
pub struct Client {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
    step_timeout: Duration,
}

impl Client {
    /// Connects and reads the banner; each step (connect, every reply) is
    /// bounded by `step_timeout`.
    ///
    /// # Errors
    /// [`ClientError`] with step `Connect` or `Banner`.
    pub async fn connect(addr: SocketAddr, step_timeout: Duration) -> Result<Self, ClientError> {
        let stream = match timeout(step_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(ClientError::Io {
                    step: ClientStep::Connect,
                    addr,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    step: ClientStep::Connect,
                    addr,
                    after: step_timeout,
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let mut client = Self {
            stream,
            addr,
            buf: Vec::with_capacity(1024),
            step_timeout,
        };
        client.expect(ClientStep::Banner, 220).await?;
        Ok(client)
    }

    /// Sends raw bytes (one or more command lines).
    ///
    /// # Errors
    /// [`ClientError::Io`] / [`ClientError::Timeout`] for `step`.
    pub async fn send(&mut self, step: ClientStep, bytes: &[u8]) -> Result<(), ClientError> {
        match timeout(self.step_timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Io {
                step,
                addr: self.addr,
                reason: e.to_string(),
            }),
            Err(_) => Err(ClientError::Timeout {
                step,
                addr: self.addr,
                after: self.step_timeout,
            }),
        }
    }

    /// Reads one (possibly multi-line) reply.
    ///
    /// # Errors
    /// Timeout, socket error, over-long or unparsable reply.
    pub async fn read_reply(&mut self, step: ClientStep) -> Result<ClientReply, ClientError> {
        let addr = self.addr;
        let io = |reason: String| ClientError::Io { step, addr, reason };
        let mut receiver = ResponseReceiver::default();
        let mut chunk = [0u8; 4096];
        loop {
            if !self.buf.is_empty() {
                let mut iter = self.buf.iter();
                let res = receiver.parse(&mut iter);
                let consumed = self.buf.len() - iter.as_slice().len();
                self.buf.drain(..consumed);
                match res {
                    Ok(r) => {
                        return Ok(ClientReply {
                            code: r.code,
                            esc: r.esc,
                            text: r.message,
                        });
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => return Err(io(format!("bad reply: {e:?}"))),
                }
            }
            let n = match timeout(self.step_timeout, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err(io("connection closed".to_owned())),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(io(e.to_string())),
                Err(_) => {
                    return Err(ClientError::Timeout {
                        step,
                        addr,
                        after: self.step_timeout,
                    });
                }
            };
            if self.buf.len() + n > MAX_REPLY {
                return Err(io("reply too long".to_owned()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn expect(&mut self, step: ClientStep, code: u16) -> Result<ClientReply, ClientError> {
        let reply = self.read_reply(step).await?;
        if reply.code == code {
            Ok(reply)
        } else {
            Err(ClientError::Rejected {
                step,
                addr: self.addr,
                code: reply.code,
                text: reply.text,
            })
        }
    }

    /// Sends a command line (CRLF added) and expects `code`.
    ///
    /// # Errors
    /// As [`Client::read_reply`], or [`ClientError::Rejected`].
    pub async fn command(
        &mut self,
        step: ClientStep,
        line: &str,
        code: u16,
    ) -> Result<ClientReply, ClientError> {
        self.send(step, format!("{line}\r\n").as_bytes()).await?;
        self.expect(step, code).await
    }

    /// Delivers one message: EHLO, MAIL, RCPT, DATA, the dot-stuffed message,
    /// QUIT. `from` may be empty (the null reverse path).
    ///
    /// # Errors
    /// The first failing step.
    pub async fn deliver(
        &mut self,
        helo: &str,
        from: &str,
        to: &str,
        message: &[u8],
    ) -> Result<(), ClientError> {
        self.command(ClientStep::Ehlo, &format!("EHLO {helo}"), 250)
            .await?;
        self.command(ClientStep::Mail, &format!("MAIL FROM:<{from}>"), 250)
            .await?;
        self.command(ClientStep::Rcpt, &format!("RCPT TO:<{to}>"), 250)
            .await?;
        self.command(ClientStep::Data, "DATA", 354).await?;
        let body = dot_stuff(message);
        self.send(ClientStep::Message, &body).await?;
        self.expect(ClientStep::Message, 250).await?;
        // The message is accepted; a failing QUIT changes nothing.
        let _ = self.command(ClientStep::Quit, "QUIT", 221).await;
        Ok(())
    }
}

/// Dot-stuffs `message` (RFC 5321 §4.5.2), normalises bare LF to CRLF and
/// appends the terminating `.` line.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::dot_stuff;

    #[test]
    fn stuffs_dots_and_terminates() {
        assert_eq!(dot_stuff(b".a\r\nb\n.c"), b"..a\r\nb\r\n..c\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\r\n"), b"x\r\n.\r\n");
    }
}
