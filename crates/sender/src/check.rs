//! `rundbrief smtp check`: the troubleshooting checklist as one dialogue,
//! driven step by step so each step is timed and reported with the server's
//! reply and a hint for the usual causes. It sends no message: it stops
//! after MAIL (and RCPT when asked) and QUITs. The `starttls` step carries a
//! summary of the server's certificate ([`CertSummary`]), also when the
//! handshake failed because of it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
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
    /// STARTTLS after EHLO when the server offers it (a relay with
    /// `?tls=opportunistic`); plain text otherwise.
    Opportunistic,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub host: String,
    pub port: u16,
    pub tls: CheckTls,
    /// AUTH with this user and password: PLAIN where offered, else LOGIN.
    /// Only sent when the server advertises AUTH (never blind, so a
    /// password does not go to a server that did not ask for one).
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
    /// What usually causes this failure, and what to try. On a passing
    /// step, a warning worth knowing (a self-signed certificate accepted
    /// with `--insecure`, one that expires soon); else empty.
    pub hint: String,
    /// The server's certificate, on the `starttls` step (STARTTLS or
    /// implicit TLS), also when the handshake failed because of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<CertSummary>,
}

/// The peer certificate, summarised for the `starttls` step. Field names
/// are a contract like the rest of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertSummary {
    /// The subject's distinguished name, e.g. `CN=smtp.example.com`.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The end of validity (not-after), RFC 3339 in UTC.
    pub not_after: String,
    /// The certificate is valid for the host name we connected to (its
    /// subject alternative names, as TLS verification checks them).
    pub matches_host: bool,
    /// Subject and issuer are the same: nobody vouches for it.
    pub self_signed: bool,
    /// The not-after date has passed.
    pub expired: bool,
}

impl CertSummary {
    /// Summarises a DER certificate; `None` when it does not parse.
    pub fn from_der(der: &[u8], host: &str) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let not_after = cert.validity().not_after.timestamp();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let der = CertificateDer::from(der);
        let matches_host = match (
            ServerName::try_from(host),
            rustls::server::ParsedCertificate::try_from(&der),
        ) {
            (Ok(name), Ok(parsed)) => rustls::client::verify_server_name(&parsed, &name).is_ok(),
            _ => false,
        };
        Some(CertSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: chrono::DateTime::from_timestamp(not_after, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| not_after.to_string()),
            matches_host,
            self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
            expired: not_after < now,
        })
    }

    /// One line for the step's reply.
    fn describe(&self, host: &str) -> String {
        format!(
            "subject {}; issuer {}{}; expires {}{}; {} `{host}`",
            self.subject,
            self.issuer,
            if self.self_signed {
                " (self-signed)"
            } else {
                ""
            },
            self.not_after,
            if self.expired { " (EXPIRED)" } else { "" },
            if self.matches_host {
                "valid for"
            } else {
                "NOT valid for"
            },
        )
    }

    /// What is worth knowing about a certificate that was accepted anyway
    /// (`--insecure`), or why it was refused. Empty for a sound one.
    fn hint(&self, host: &str) -> String {
        if self.self_signed {
            "the certificate is self-signed: fine for a test server (the sink's is), \
             but a real relay needs one from a public CA; for a test server pass --insecure"
                .into()
        } else if self.expired {
            "the server's certificate has expired: its operator must renew it".into()
        } else if !self.matches_host {
            format!(
                "the certificate is not issued for `{host}`: connect with the name it was issued for ({})",
                self.subject
            )
        } else {
            String::new()
        }
    }
}

/// The certificate verifier of `smtp check`: remembers the end-entity
/// certificate, so it can be summarised even when the handshake fails
/// because of it, then verifies as usual (webpki roots) or, with
/// `--insecure`, accepts it. Handshake signatures are always checked.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    accept_any: bool,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl Recorder {
    fn take(&self) -> Option<CertificateDer<'static>> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(end_entity.clone().into_owned());
        if self.accept_any {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A connector whose verifier records the peer certificate.
fn recording_connector(
    accept_any: bool,
) -> Result<(tokio_rustls::TlsConnector, Arc<Recorder>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    });
    let inner = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| e.to_string())?;
    let recorder = Arc::new(Recorder {
        inner,
        accept_any,
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&recorder) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), recorder))
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
    /// The text's lines, for EHLO's extension list.
    lines: Vec<String>,
}

/// The SASL mechanisms of an EHLO reply's `AUTH` line, upper-cased.
fn auth_mechanisms(answer: &Answer) -> Vec<String> {
    answer
        .lines
        .iter()
        .skip(1)
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            (first.eq_ignore_ascii_case("AUTH") || first.eq_ignore_ascii_case("AUTH="))
                .then(|| words.map(str::to_ascii_uppercase).collect())
        })
        .unwrap_or_default()
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
                            lines: r.message.lines().map(str::to_owned).collect(),
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
            cert: None,
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

    let connector = match recording_connector(req.dangerous_accept_invalid_certs) {
        Ok(c) => c,
        Err(e) => {
            s.push(
                "starttls",
                Instant::now(),
                Err((e, "the TLS set-up failed before connecting".into())),
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
    let mut mechanisms = answer.as_ref().map(auth_mechanisms).unwrap_or_default();
    if !s.push(
        "ehlo",
        t,
        expect(answer, 250, |_, _| {
            "EHLO was refused: check the EHLO name (a FQDN) or try HELO-only servers".into()
        }),
    ) {
        return quit(d, s).await;
    }

    if req.tls == CheckTls::StartTls || (req.tls == CheckTls::Opportunistic && offered_starttls) {
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
        let answer = d.command(&ehlo).await;
        mechanisms = answer.as_ref().map(auth_mechanisms).unwrap_or_default();
        if !s.push(
            "ehlo",
            t,
            expect(answer, 250, |_, _| "EHLO after STARTTLS was refused".into()),
        ) {
            return quit(d, s).await;
        }
    }

    if let Some((user, password)) = &req.auth {
        let t = Instant::now();
        let encrypted = matches!(d.io, Conn::Tls(_));
        let result = if mechanisms.is_empty() {
            let hint = if !encrypted && offered_starttls {
                "the server offers AUTH only after STARTTLS: add --starttls (587) or --tls (465)"
            } else {
                "the server offers no AUTH on this port (there is none on port 25): use the submission port 587 with --starttls, or 465 with --tls"
            };
            Err((
                "AUTH not offered in EHLO; the password was not sent".to_owned(),
                hint.to_owned(),
            ))
        } else if mechanisms.iter().any(|m| m == "PLAIN") {
            auth_plain(&mut d, user, password).await
        } else if mechanisms.iter().any(|m| m == "LOGIN") {
            auth_login(&mut d, user, password).await
        } else {
            Err((
                format!(
                    "AUTH offers {} but neither PLAIN nor LOGIN",
                    mechanisms.join(" ")
                ),
                "rundbrief speaks AUTH PLAIN and LOGIN only".into(),
            ))
        };
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

/// What an AUTH failure usually means, by reply code.
fn auth_hint(code: u16, _: &str) -> String {
    match code {
        530 | 538 => "the server wants TLS before AUTH: add --starttls (587) or --tls (465)".into(),
        535 => "wrong user name or password".into(),
        534 => "the server wants a stronger mechanism or an app password".into(),
        502 | 504 => {
            "this AUTH mechanism is not offered here (no AUTH on port 25; use the submission port)"
                .into()
        }
        _ => "authentication failed".into(),
    }
}

/// AUTH PLAIN with the initial response (RFC 4616).
async fn auth_plain(
    d: &mut Dialogue,
    user: &str,
    password: &str,
) -> Result<String, (String, String)> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    expect(
        d.command(&format!("AUTH PLAIN {token}")).await,
        235,
        auth_hint,
    )
    .map(|text| format!("{text} (AUTH PLAIN as {user})"))
}

/// AUTH LOGIN: the user and the password each after a 334 prompt.
async fn auth_login(
    d: &mut Dialogue,
    user: &str,
    password: &str,
) -> Result<String, (String, String)> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    expect(d.command("AUTH LOGIN").await, 334, auth_hint)?;
    expect(d.command(&b64(user)).await, 334, auth_hint)?;
    expect(d.command(&b64(password)).await, 235, auth_hint)
        .map(|text| format!("{text} (AUTH LOGIN as {user})"))
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
    (connector, recorder): &(tokio_rustls::TlsConnector, Arc<Recorder>),
    name: Option<ServerName<'static>>,
    t: Instant,
    implicit: bool,
) -> bool {
    let Some(name) = name else {
        let what = format!("`{}` is not a valid TLS server name", req.host);
        return s.push("starttls", t, Err((what, String::new())));
    };
    let upgraded = d.upgrade(connector, name).await;
    let cert = recorder
        .take()
        .and_then(|der| CertSummary::from_der(&der, &req.host));
    let described = cert
        .as_ref()
        .map(|c| format!("; {}", c.describe(&req.host)))
        .unwrap_or_default();
    let ok = match upgraded {
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
            let ok = s.push("starttls", t, Ok(format!("{what}; {how}{described}")));
            if let (Some(c), Some(step)) = (&cert, s.steps.last_mut()) {
                step.hint = c.hint(&req.host);
                if step.hint.is_empty() {
                    step.hint = expiry_warning(c);
                }
            }
            ok
        }
        Err(e) => {
            let hint = if implicit && e.starts_with("no TLS handshake") {
                "this port may not speak implicit TLS: try --starttls on 587".to_string()
            } else {
                match cert.as_ref().map(|c| c.hint(&req.host)) {
                    Some(h) if !h.is_empty() => h,
                    _ => tls_hint(&req.host, &e),
                }
            };
            s.push("starttls", t, Err((format!("{e}{described}"), hint)))
        }
    };
    if let Some(step) = s.steps.last_mut() {
        step.cert = cert;
    }
    ok
}

/// A warning for a sound certificate that expires within 14 days.
fn expiry_warning(c: &CertSummary) -> String {
    let left = chrono::DateTime::parse_from_rfc3339(&c.not_after)
        .map(|t| t.timestamp() - chrono::Utc::now().timestamp())
        .unwrap_or(i64::MAX);
    if left < 14 * 24 * 3600 {
        format!(
            "the certificate expires in {} days: remind the relay's operator",
            left / 86400
        )
    } else {
        String::new()
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
