//! A scripted submission relay for AUTH tests, on 127.0.0.1: it offers
//! STARTTLS (a fresh self-signed certificate for `localhost`), and AUTH
//! (PLAIN, LOGIN or both) only once TLS is up unless told otherwise; MAIL
//! before a successful AUTH gets `530 5.7.0`. It records what happened
//! (mechanism, user, whether TLS was on) so tests can assert on it.
//!
//! Plain threads and rustls' blocking API, so both the sender's tokio tests
//! and the binary's synchronous tests can use it (the CLI tests include this
//! file with `#[path]`). Only ever for tests: our own `smtpd` has no AUTH
//! (the bounce endpoint must never ask for one).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConnection, StreamOwned};

/// How the relay behaves.
#[derive(Debug, Clone)]
pub struct Script {
    pub user: String,
    pub password: String,
    /// Offered in EHLO, in this order: "PLAIN", "LOGIN".
    pub mechanisms: Vec<&'static str>,
    /// Offer (and accept) AUTH on the plain connection too.
    pub auth_before_tls: bool,
}

impl Script {
    pub fn new(user: &str, password: &str) -> Self {
        Script {
            user: user.into(),
            password: password.into(),
            mechanisms: vec!["PLAIN", "LOGIN"],
            auth_before_tls: false,
        }
    }
}

/// A running relay: its port and the log of what happened.
pub struct AuthRelay {
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl AuthRelay {
    /// Lines such as `AUTH PLAIN news ok tls`, `AUTH LOGIN news failed tls`,
    /// `MAIL <…>`, `DATA 123 bytes`.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// At most this many connections are served; then the listener stops.
const MAX_CONNECTIONS: usize = 32;
/// Longest line read from the client.
const MAX_LINE: usize = 4096;

/// Starts the relay on a free loopback port.
pub fn start(script: Script) -> AuthRelay {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("rcgen makes a certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let tls = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("rustls takes rcgen's certificate"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (script, shared_log) = (Arc::new(script), Arc::clone(&log));
    std::thread::spawn(move || {
        for conn in listener.incoming().take(MAX_CONNECTIONS) {
            let Ok(tcp) = conn else { continue };
            let (script, tls, log) = (
                Arc::clone(&script),
                Arc::clone(&tls),
                Arc::clone(&shared_log),
            );
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = serve(tcp, &script, &tls, &log);
            });
        }
    });
    AuthRelay { port, log }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    fn write(&mut self, text: &str) -> std::io::Result<()> {
        let bytes = format!("{text}\r\n");
        match self {
            Stream::Plain(s) => s.write_all(bytes.as_bytes()),
            Stream::Tls(s) => {
                s.write_all(bytes.as_bytes())?;
                s.flush()
            }
        }
    }

    /// One line without its CRLF; `None` at end of stream.
    fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = match self {
                Stream::Plain(s) => s.read(&mut byte)?,
                Stream::Tls(s) => s.read(&mut byte)?,
            };
            if n == 0 {
                return Ok(None);
            }
            if byte[0] == b'\n' {
                break;
            }
            if out.len() >= MAX_LINE {
                return Err(std::io::Error::other("line too long"));
            }
            out.push(byte[0]);
        }
        if out.last() == Some(&b'\r') {
            out.pop();
        }
        Ok(Some(String::from_utf8_lossy(&out).into_owned()))
    }
}

fn serve(
    tcp: TcpStream,
    script: &Script,
    tls: &Arc<rustls::ServerConfig>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let note = |s: String| log.lock().unwrap_or_else(PoisonError::into_inner).push(s);
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |s: &str| {
        b64.decode(s.trim())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let mut io = Stream::Plain(tcp);
    let mut authed = false;
    io.write("220 relay.test ESMTP scripted")?;
    while let Some(line) = io.line()? {
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_owned();
        let encrypted = matches!(io, Stream::Tls(_));
        let auth_here = encrypted || script.auth_before_tls;
        match verb.as_str() {
            "EHLO" | "HELO" => {
                let mut lines = vec!["relay.test".to_owned()];
                if !encrypted {
                    lines.push("STARTTLS".into());
                }
                if auth_here {
                    lines.push(format!("AUTH {}", script.mechanisms.join(" ")));
                }
                lines.push("ENHANCEDSTATUSCODES".into());
                let n = lines.len();
                for (i, l) in lines.iter().enumerate() {
                    io.write(&format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))?;
                }
            }
            "STARTTLS" if !encrypted => {
                io.write("220 2.0.0 Ready to start TLS")?;
                let Stream::Plain(tcp) = io else {
                    unreachable!("checked above")
                };
                let conn = ServerConnection::new(Arc::clone(tls)).map_err(std::io::Error::other)?;
                io = Stream::Tls(Box::new(StreamOwned::new(conn, tcp)));
                authed = false;
            }
            "AUTH" if !auth_here => io.write("530 5.7.0 Must issue a STARTTLS command first")?,
            "AUTH" => {
                let mut words = line.split_whitespace().skip(1);
                let mech = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                if !script.mechanisms.contains(&mech.as_str()) {
                    io.write("504 5.5.4 Unrecognized authentication type")?;
                    continue;
                }
                let (user, password) = if mech == "PLAIN" {
                    let token = match initial {
                        Some(t) => t,
                        None => {
                            io.write("334 ")?;
                            io.line()?.unwrap_or_default()
                        }
                    };
                    let plain = decode(&token);
                    let mut parts = plain.split('\0').skip(1);
                    (
                        parts.next().unwrap_or("").to_owned(),
                        parts.next().unwrap_or("").to_owned(),
                    )
                } else {
                    io.write("334 VXNlcm5hbWU6")?;
                    let user = decode(&io.line()?.unwrap_or_default());
                    io.write("334 UGFzc3dvcmQ6")?;
                    (user, decode(&io.line()?.unwrap_or_default()))
                };
                let how = if encrypted { "tls" } else { "plain" };
                if user == script.user && password == script.password {
                    authed = true;
                    note(format!("AUTH {mech} {user} ok {how}"));
                    io.write("235 2.7.0 Authentication successful")?;
                } else {
                    note(format!("AUTH {mech} {user} failed {how}"));
                    io.write("535 5.7.8 Error: authentication failed: bad credentials")?;
                }
            }
            "MAIL" if !authed => io.write("530 5.7.0 Authentication required")?,
            "MAIL" => {
                note(line.clone());
                io.write("250 2.1.0 Ok")?;
            }
            "RCPT" => io.write("250 2.1.5 Ok")?,
            "DATA" => {
                io.write("354 End data with <CR><LF>.<CR><LF>")?;
                let mut bytes = 0;
                while let Some(l) = io.line()? {
                    if l == "." {
                        break;
                    }
                    bytes += l.len() + 2;
                }
                note(format!("DATA {bytes} bytes"));
                io.write("250 2.0.0 Ok: queued")?;
            }
            "RSET" | "NOOP" => io.write("250 2.0.0 Ok")?,
            "QUIT" => {
                io.write("221 2.0.0 Bye")?;
                break;
            }
            _ => io.write("502 5.5.2 Error: command not recognized")?,
        }
    }
    Ok(())
}
