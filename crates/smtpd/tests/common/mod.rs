//! Test helpers: a raw-bytes SMTP peer, a recording handler, server start-up.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rundbrief_smtpd::{
    CancellationToken, DataDecision, Decision, Envelope, Handler, Recipient, Reply, ServerConfig,
    SessionInfo, SmtpdError, TlsAcceptor,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A peer speaking raw protocol bytes.
pub struct Peer<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Peer<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Hands the socket over (for STARTTLS); nothing may be buffered.
    pub fn into_inner(self) -> TcpStream {
        assert!(
            self.buf.is_empty(),
            "unread bytes before TLS: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.stream
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write timeout")
            .expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// One complete (possibly multi-line) reply, or `None` on EOF.
    pub async fn try_reply(&mut self) -> Option<String> {
        let mut reply = String::new();
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                reply.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] == b' ' || line.len() == 5 {
                    return Some(reply);
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            // A reset connection counts as EOF.
            let n: usize = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("reply timeout")
                .unwrap_or_default();
            if n == 0 {
                assert!(
                    reply.is_empty() && self.buf.is_empty(),
                    "EOF inside a reply: {reply:?}"
                );
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn reply(&mut self) -> String {
        self.try_reply()
            .await
            .expect("connection closed, expected a reply")
    }

    /// Reads a reply and checks its start (code, maybe enhanced code).
    pub async fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply().await;
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    pub async fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.expect(prefix).await
    }

    pub async fn expect_eof(&mut self) {
        if let Some(r) = self.try_reply().await {
            panic!("expected EOF, got {r:?}");
        }
    }
}

/// A handler that records what it accepts. Recipients starting with
/// `reject` are refused with 550 5.1.1.
#[derive(Default)]
pub struct Recorder {
    pub messages: Mutex<Vec<(SessionInfo, Envelope, Vec<u8>)>>,
    count: Option<watch::Sender<usize>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            messages: Mutex::new(Vec::new()),
            count: Some(watch::channel(0).0),
        })
    }

    pub async fn wait_messages(&self, n: usize) {
        let mut rx = self.count.as_ref().expect("made by new()").subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= n))
            .await
            .expect("message wait timeout")
            .expect("watch");
    }

    pub fn taken(&self) -> Vec<(SessionInfo, Envelope, Vec<u8>)> {
        self.messages.lock().expect("lock").clone()
    }
}

impl Handler for Recorder {
    async fn rcpt(&self, _info: &SessionInfo, _tx: &Envelope, rcpt: &Recipient) -> Decision {
        if rcpt.address.starts_with("reject") {
            Decision::Reject(Reply::with_status(550, (5, 1, 1), "User unknown"))
        } else {
            Decision::Accept
        }
    }

    async fn data(&self, info: &SessionInfo, tx: &Envelope, message: Vec<u8>) -> DataDecision {
        let n = {
            let mut m = self.messages.lock().expect("lock");
            m.push((info.clone(), tx.clone(), message));
            m.len()
        };
        if let Some(c) = &self.count {
            c.send_replace(n);
        }
        DataDecision::accept()
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub handle: JoinHandle<Result<(), SmtpdError>>,
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("server did not stop")
            .expect("join")
            .expect("run");
    }
}

pub async fn start<H: Handler>(
    cfg: ServerConfig,
    handler: Arc<H>,
    tls: Option<TlsAcceptor>,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let handle = tokio::spawn(rundbrief_smtpd::run(
        listener,
        cfg,
        handler,
        tls,
        stop.clone(),
    ));
    Running { addr, stop, handle }
}

/// EHLO and return the capability reply.
pub async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Peer<S>) -> String {
    p.cmd("EHLO client.test", "250").await
}
