//! `rundbrief smtp check`: the troubleshooting checklist as one dialogue,
//! driven step by step so each step is timed and reported with the server's
//! reply and a hint for the usual causes. It sends no message: it stops
//! after MAIL (and RCPT when asked) and QUITs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How to secure the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckTls {
    /// Plain SMTP (STARTTLS is still reported when offered).
    None,
    /// STARTTLS after EHLO, required.
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub host: String,
    pub port: u16,
    pub tls: CheckTls,
    /// AUTH PLAIN with this user and password.
    pub auth: Option<(String, String)>,
    /// MAIL FROM (empty: the null sender `<>`).
    pub from: String,
    /// RCPT TO, when set.
    pub to: Option<String>,
    pub ehlo_name: String,
    /// Limit for each step.
    pub step_timeout: Duration,
    /// Accept any certificate (self-signed test servers). Dangerous.
    pub dangerous_accept_invalid_certs: bool,
}

/// One step of the report. Field names are a contract (DESIGN.md).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckStep {
    /// `dns`, `connect`, `banner`, `ehlo`, `starttls`, `auth`, `mail`, `rcpt` or `quit`.
    pub step: &'static str,
    pub ok: bool,
    pub ms: u64,
    /// The server's reply, or what happened (addresses, the TLS result).
    pub reply: String,
    /// What usually causes this failure, and what to try; empty when ok.
    pub hint: String,
}

/// The whole report: `ok` when every step passed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub steps: Vec<CheckStep>,
}

/// The connection, before and after TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Between taking the plain stream and getting the TLS one back.
    Upgrading,
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Upgrading => Err(std::io::Error::other(
                "connection lost during the TLS upgrade",
            )),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(bytes).await,
            Conn::Tls(s) => s.write_all(bytes).await,
            Conn::Upgrading => Err(std::io::Error::other(
                "connection lost during the TLS upgrade",
            )),
        }
    }
}

struct Dialogue {
    io: Conn,
    buf: Vec<u8>,
    step_timeout: Duration,
}

impl Dialogue {
    /// Upgrades the plain connection to TLS.
    async fn upgrade(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: ServerName<'static>,
    ) -> Result<(), String> {
        let Conn::Plain(tcp) = std::mem::replace(&mut self.io, Conn::Upgrading) else {
            return Err("the connection is not plain".into());
        };
        match timeout(self.step_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => {
                self.io = Conn::Tls(Box::new(tls));
                self.buf.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no TLS handshake within {:?}", self.step_timeout)),
        }
    }
}

/// A reply: code and text (lines joined with a space).
struct Answer {
    code: u16,
    text: String,
}

impl Dialogue {
    async fn read(&mut self) -> Result<Answer, String> {
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
                        let esc = if r.esc[0] > 0 {
                            format!("{}.{}.{} ", r.esc[0], r.esc[1], r.esc[2])
                        } else {
                            String::new()
                        };
                        return Ok(Answer {
                            code: r.code,
                            text: format!("{} {esc}{}", r.code, r.message.replace('\n', " ")),
                        });
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => return Err(format!("unreadable reply: {e:?}")),
                }
            }
            match timeout(self.step_timeout, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err("the server closed the connection".into()),
                Ok(Ok(n)) if self.buf.len() + n <= 64 * 1024 => {
                    self.buf.extend_from_slice(&chunk[..n])
                }
                Ok(Ok(_)) => return Err("reply longer than 64 KiB".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("no reply within {:?}", self.step_timeout)),
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<Answer, String> {
        match timeout(
            self.step_timeout,
            self.io.write_all(format!("{line}\r\n").as_bytes()),
        )
        .await
        {
            Ok(Ok(())) => self.read().await,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("could not send within {:?}", self.step_timeout)),
        }
    }
}

struct Steps {
    steps: Vec<CheckStep>,
}

impl Steps {
    fn push(
        &mut self,
        step: &'static str,
        started: Instant,
        result: Result<String, (String, String)>,
    ) -> bool {
        let ms = started.elapsed().as_millis() as u64;
        let ok = result.is_ok();
        let (reply, hint) = match result {
            Ok(reply) => (reply, String::new()),
            Err((reply, hint)) => (reply, hint),
        };
        self.steps.push(CheckStep {
            step,
            ok,
            ms,
            reply,
            hint,
        });
        ok
    }
}

/// Expects `want` from a reply; otherwise the reply text and `hint(code)`.
fn expect(
    answer: Result<Answer, String>,
    want: u16,
    hint: impl Fn(u16, &str) -> String,
) -> Result<String, (String, String)> {
    match answer {
        Ok(a) if a.code == want => Ok(a.text),
        Ok(a) => {
            let h = hint(a.code, &a.text);
            Err((a.text, h))
        }
        Err(e) => {
            let h = hint(0, &e);
            Err((e, h))
        }
    }
}

/// Runs the checklist. Never panics; a failed step ends the dialogue (QUIT is
/// still attempted once connected).
pub async fn check(req: &CheckRequest) -> CheckReport {
    let mut s = Steps { steps: Vec::new() };
    let done = |s: Steps| CheckReport {
        ok: s.steps.iter().all(|x| x.ok),
        steps: s.steps,
    };

    // dns
    let t = Instant::now();
    let addrs: Vec<SocketAddr> = match timeout(
        req.step_timeout,
        tokio::net::lookup_host((req.host.as_str(), req.port)),
    )
    .await
    {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => {
            s.push(
                "dns",
                t,
                Err((
                    e.to_string(),
                    format!(
                        "`{}` does not resolve: check the spelling and your DNS",
                        req.host
                    ),
                )),
            );
            return done(s);
        }
        Err(_) => {
            s.push(
                "dns",
                t,
                Err((
                    "no answer".into(),
                    "the resolver did not answer: check /etc/resolv.conf".into(),
                )),
            );
            return done(s);
        }
    };
    let list = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if !s.push(
        "dns",
        t,
        if addrs.is_empty() {
            Err((
                "no addresses".into(),
                "the name has no A/AAAA record".into(),
            ))
        } else {
            Ok(list)
        },
    ) {
        return done(s);
    }

    // connect
    let t = Instant::now();
    let port = req.port;
    let tcp = match timeout(req.step_timeout, TcpStream::connect(&addrs[..])).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                format!(
                    "nothing listens on port {port}: wrong port (25 for MX, 587 submission with STARTTLS, 465 implicit TLS) or the service is down"
                )
            } else {
                "the host is unreachable: check routing and firewalls".into()
            };
            s.push("connect", t, Err((e.to_string(), hint)));
            return done(s);
        }
        Err(_) => {
            s.push("connect", t, Err((format!("no connection within {:?}", req.step_timeout), format!("port {port} is probably filtered: many providers block outgoing port 25; use your provider's relay on 587"))));
            return done(s);
        }
    };
    let _ = tcp.set_nodelay(true);
    s.push(
        "connect",
        t,
        Ok(tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default()),
    );

    let connector = match crate::tls::setup(&req.host, req.dangerous_accept_invalid_certs) {
        Ok(setup) => setup.implicit,
        Err(e) => {
            s.push(
                "starttls",
                Instant::now(),
                Err((
                    e.to_string(),
                    "the TLS set-up failed before connecting".into(),
                )),
            );
            return done(s);
        }
    };
    let name = ServerName::try_from(req.host.clone()).ok();
    let mut d = Dialogue {
        io: Conn::Plain(tcp),
        buf: Vec::new(),
        step_timeout: req.step_timeout,
    };
    if req.tls == CheckTls::Implicit
        && !tls_step(
            &mut d,
            &mut s,
            req,
            &connector,
            name.clone(),
            Instant::now(),
            true,
        )
        .await
    {
        return done(s);
    }

    // banner
    let t = Instant::now();
    let banner = expect(d.read().await, 220, |code, text| {
        if code == 0 && text.starts_with("no reply") {
            "connected but no greeting: an implicit-TLS port (465) waits for a TLS handshake first: try --tls".into()
        } else if code == 554 {
            "the server refuses this client (blocklisted IP or no PTR record?)".into()
        } else {
            "not an SMTP greeting".into()
        }
    });
    if !s.push("banner", t, banner) {
        return done(s);
    }

    // ehlo
    let ehlo = format!("EHLO {}", req.ehlo_name);
    let t = Instant::now();
    let answer = d.command(&ehlo).await;
    let offered_starttls = answer
        .as_ref()
        .is_ok_and(|a| a.text.to_ascii_uppercase().contains("STARTTLS"));
    if !s.push(
        "ehlo",
        t,
        expect(answer, 250, |_, _| {
            "EHLO was refused: check the EHLO name (a FQDN) or try HELO-only servers".into()
        }),
    ) {
        return quit(d, s).await;
    }

    if req.tls == CheckTls::StartTls {
        let t = Instant::now();
        if !offered_starttls {
            s.push("starttls", t, Err(("STARTTLS not offered".into(), "the server does not offer STARTTLS on this port: try --tls on 465, or a submission port".into())));
            return quit(d, s).await;
        }
        let answer = d.command("STARTTLS").await;
        if !matches!(answer, Ok(Answer { code: 220, .. })) {
            s.push(
                "starttls",
                t,
                expect(answer, 220, |_, _| "the server refused STARTTLS".into()),
            );
            return quit(d, s).await;
        }
        if !tls_step(&mut d, &mut s, req, &connector, name.clone(), t, false).await {
            return done(s);
        }
        let t = Instant::now();
        if !s.push(
            "ehlo",
            t,
            expect(d.command(&ehlo).await, 250, |_, _| {
                "EHLO after STARTTLS was refused".into()
            }),
        ) {
            return quit(d, s).await;
        }
    }

    if let Some((user, password)) = &req.auth {
        use base64::Engine as _;
        let t = Instant::now();
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let answer = d.command(&format!("AUTH PLAIN {token}")).await;
        let result = expect(answer, 235, |code, _| match code {
            530 | 538 => {
                "the server wants TLS before AUTH: add --starttls (587) or --tls (465)".into()
            }
            535 => "wrong user name or password".into(),
            502 | 504 => {
                "AUTH PLAIN is not offered here (no AUTH on port 25; use the submission port)"
                    .into()
            }
            _ => "authentication failed".into(),
        });
        if !s.push("auth", t, result) {
            return quit(d, s).await;
        }
    }

    let t = Instant::now();
    let from = format!("MAIL FROM:<{}>", req.from);
    if !s.push("mail", t, expect(d.command(&from).await, 250, |code, _| match code {
        530 => "the server wants authentication first: pass --auth USER (password in RUNDBRIEF_SMTP_PASSWORD)".into(),
        550 | 553 | 554 => "the relay does not accept this sender: is the bounce domain allowed to send through it?".into(),
        _ => "MAIL FROM was refused".into(),
    })) {
        return quit(d, s).await;
    }

    if let Some(to) = &req.to {
        let t = Instant::now();
        let result = expect(
            d.command(&format!("RCPT TO:<{to}>")).await,
            250,
            |code, text| {
                let lower = text.to_ascii_lowercase();
                if lower.contains("relay") {
                    "relay access denied: authenticate (--auth) or use the relay that is meant for you".into()
                } else if (550..=553).contains(&code) {
                    "the recipient is refused: unknown user, or the server verifies senders".into()
                } else {
                    "RCPT TO was refused".into()
                }
            },
        );
        if !s.push("rcpt", t, result) {
            return quit(d, s).await;
        }
    }
    quit(d, s).await
}

async fn quit(mut d: Dialogue, mut s: Steps) -> CheckReport {
    let t = Instant::now();
    s.push(
        "quit",
        t,
        expect(d.command("QUIT").await, 221, |_, _| {
            "the server did not say goodbye (harmless)".into()
        }),
    );
    CheckReport {
        ok: s.steps.iter().all(|x| x.ok),
        steps: s.steps,
    }
}

/// Upgrades the dialogue to TLS and reports it as the `starttls` step.
/// Returns false when it failed (the step says why).
async fn tls_step(
    d: &mut Dialogue,
    s: &mut Steps,
    req: &CheckRequest,
    connector: &tokio_rustls::TlsConnector,
    name: Option<ServerName<'static>>,
    t: Instant,
    implicit: bool,
) -> bool {
    let Some(name) = name else {
        let what = format!("`{}` is not a valid TLS server name", req.host);
        return s.push("starttls", t, Err((what, String::new())));
    };
    match d.upgrade(connector, name).await {
        Ok(()) => {
            let how = if req.dangerous_accept_invalid_certs {
                "certificate NOT verified (--insecure)"
            } else {
                "certificate verified"
            };
            let what = if implicit {
                "implicit TLS established"
            } else {
                "TLS established"
            };
            s.push("starttls", t, Ok(format!("{what}; {how}")))
        }
        Err(e) => {
            let hint = if implicit && e.starts_with("no TLS handshake") {
                "this port may not speak implicit TLS: try --starttls on 587".to_string()
            } else {
                tls_hint(&req.host, &e)
            };
            s.push("starttls", t, Err((e, hint)))
        }
    }
}

/// What a TLS failure usually means.
fn tls_hint(host: &str, e: &str) -> String {
    if e.contains("UnknownIssuer") || e.contains("self-signed") || e.contains("SelfSigned") {
        "the certificate is not signed by a known authority (self-signed?): fix the server's certificate, or for a test server pass --insecure".into()
    } else if e.contains("NotValidForName") || e.contains("name") {
        format!(
            "the certificate is not valid for `{}`: connect with the name it was issued for",
            host
        )
    } else if e.contains("Expired") {
        "the server's certificate has expired".into()
    } else {
        "the TLS handshake failed: is this the right port for this TLS mode? (465 implicit TLS, 587 STARTTLS)".into()
    }
}
