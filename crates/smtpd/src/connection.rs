//! The only code that owns a socket: reads command lines and DATA through
//! smtp-proto's receivers, buffers replies (flushed whenever we would wait for
//! the peer, which is what PIPELINING needs), upgrades to TLS, and drives a
//! [`Session`] with a [`Handler`].

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, RequestReceiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use crate::config::ServerConfig;
use crate::handler::{DataDecision, Decision, Handler};
use crate::reply::Reply;
use crate::session::{Session, Step};

/// Bytes read from the socket at a time; also the most a DATA body can
/// overshoot the size limit before we notice.
const READ_CHUNK: usize = 16 * 1024;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only during the STARTTLS hand-over, or after a failed one.
    Gone,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf).await,
            Self::Tls(s) => s.read(buf).await,
            Self::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.write_all(buf).await,
            Self::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Self::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Self::Plain(s) => s.shutdown().await,
            Self::Tls(s) => s.shutdown().await,
            Self::Gone => Ok(()),
        };
    }
}

/// How waiting for the peer ended, when it did not deliver what we wanted.
enum Stop {
    /// Peer closed or the socket failed.
    Closed,
    /// The deadline passed.
    Timeout,
    /// The server is stopping.
    Shutdown,
}

enum Command {
    Request(smtp_proto::Request<String>),
    ParseError(smtp_proto::Error),
}

enum Data {
    Complete(Vec<u8>),
    TooBig,
}

/// Socket, input buffer and pending replies of one session.
struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    requests: RequestReceiver,
    /// Set after an over-long or half-parsed line: skip input up to the next LF.
    discard_line: bool,
    /// Bytes of the current, unfinished command line handed to `requests`.
    partial_line: usize,
    max_line: usize,
    write_timeout: Duration,
}

impl Connection {
    fn new(stream: TcpStream, write_timeout: Duration, max_line: usize) -> Self {
        Self {
            stream: Stream::Plain(stream),
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            out: Vec::with_capacity(512),
            requests: RequestReceiver::default(),
            discard_line: false,
            partial_line: 0,
            max_line,
            write_timeout,
        }
    }

    fn queue(&mut self, reply: &Reply) {
        trace!(smtp.code = reply.code(), reply = %reply, "reply");
        reply.write_to(&mut self.out);
    }

    /// Writes the pending replies. Bounded by the write timeout.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let res = timeout(self.write_timeout, self.stream.write_all(&out)).await;
        self.out = out;
        self.out.clear();
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Closed),
            Err(_) => Err(Stop::Timeout),
        }
    }

    /// Flushes replies, then reads more bytes, racing `deadline` and `cancel`.
    ///
    /// # Cancel safety
    /// Only called from this connection's own task; not used in `select!`.
    async fn fill(&mut self, deadline: Instant, cancel: &CancellationToken) -> Result<(), Stop> {
        self.flush().await?;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Stop::Shutdown),
            r = timeout_at(deadline, self.stream.read(&mut self.buf[self.end..])) => match r {
                Err(_) => return Err(Stop::Timeout),
                Ok(Err(_)) | Ok(Ok(0)) => return Err(Stop::Closed),
                Ok(Ok(n)) => n,
            },
        };
        self.end += n;
        Ok(())
    }

    /// The next command line. Idle sessions give way to `stop` at once.
    async fn read_command(
        &mut self,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<Command, Stop> {
        loop {
            if self.discard_line && self.start < self.end {
                let avail = &self.buf[self.start..self.end];
                match avail.iter().position(|&b| b == b'\n') {
                    Some(pos) => {
                        self.start += pos + 1;
                        self.discard_line = false;
                    }
                    None => self.start = self.end,
                }
            }
            if !self.discard_line && self.start < self.end {
                let avail = &self.buf[self.start..self.end];
                let lf = avail.iter().position(|&b| b == b'\n');
                let segment = lf.map_or(avail.len(), |p| p + 1);
                if self.partial_line + segment > self.max_line {
                    // Over-long line: never hand it to the parser.
                    self.start += segment;
                    self.discard_line = lf.is_none();
                    self.partial_line = 0;
                    self.requests = RequestReceiver::default();
                    return Ok(Command::ParseError(smtp_proto::Error::ResponseTooLong));
                }
                let mut iter = avail.iter();
                let res = self
                    .requests
                    .ingest(&mut iter)
                    .map(smtp_proto::Request::into_owned);
                let consumed = avail.len() - iter.as_slice().len();
                let ends_line = consumed > 0 && avail[consumed - 1] == b'\n';
                self.start += consumed;
                match res {
                    Ok(req) => {
                        self.partial_line = 0;
                        return Ok(Command::Request(req));
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => self.partial_line += consumed,
                    Err(e) => {
                        self.partial_line = 0;
                        if !ends_line {
                            self.discard_line = true;
                        }
                        self.requests = RequestReceiver::default();
                        return Ok(Command::ParseError(e));
                    }
                }
            }
            if stop.is_cancelled() {
                return Err(Stop::Shutdown);
            }
            self.fill(deadline, stop).await?;
        }
    }

    /// A DATA body up to the final dot. Past `max` bytes the rest is read and
    /// thrown away. `drain` cuts it short only at the shutdown drain deadline.
    async fn read_data(
        &mut self,
        max: usize,
        deadline: Instant,
        drain: &CancellationToken,
    ) -> Result<Data, Stop> {
        let mut receiver = DataReceiver::new();
        let mut message = Vec::with_capacity(READ_CHUNK.min(max));
        let mut discard: Option<DummyDataReceiver> = None;
        loop {
            if self.start < self.end {
                let avail = &self.buf[self.start..self.end];
                let mut iter = avail.iter();
                let done = match discard.as_mut() {
                    Some(d) => d.ingest(&mut iter),
                    None => receiver.ingest(&mut iter, &mut message),
                };
                self.start += avail.len() - iter.as_slice().len();
                if discard.is_none() && message.len() > max {
                    discard = Some(DummyDataReceiver::new_data(&receiver));
                    message = Vec::new();
                }
                if done {
                    return Ok(if discard.is_some() {
                        Data::TooBig
                    } else {
                        Data::Complete(message)
                    });
                }
            }
            self.fill(deadline, drain).await?;
        }
    }

    /// Throws away `n` bytes (an unsolicited BDAT chunk).
    async fn skip(
        &mut self,
        n: usize,
        deadline: Instant,
        drain: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut skipper = DummyDataReceiver::new_bdat(n);
        loop {
            if self.start < self.end || n == 0 {
                let avail = &self.buf[self.start..self.end];
                let mut iter = avail.iter();
                let done = skipper.ingest(&mut iter);
                self.start += avail.len() - iter.as_slice().len();
                if done || n == 0 {
                    return Ok(());
                }
            }
            self.fill(deadline, drain).await?;
        }
    }

    /// STARTTLS: buffered clear-text input is dropped (no command injection
    /// across the upgrade), then the handshake runs under its own timeout.
    async fn upgrade(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> Result<(), Stop> {
        self.flush().await?;
        self.start = 0;
        self.end = 0;
        self.requests = RequestReceiver::default();
        self.discard_line = false;
        self.partial_line = 0;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(Stop::Closed);
        };
        match timeout(limit, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.stream = Stream::Tls(Box::new(tls));
                Ok(())
            }
            Ok(Err(e)) => {
                debug!(error = %e, "TLS handshake failed");
                Err(Stop::Closed)
            }
            Err(_) => Err(Stop::Timeout),
        }
    }

    async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = timeout(self.write_timeout, self.stream.shutdown()).await;
    }
}

/// Calls the handler under the handler timeout; a timeout becomes `fallback`.
async fn bounded<T>(limit: Duration, fut: impl Future<Output = T>, fallback: T) -> T {
    match timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => {
            warn!(after = ?limit, "handler timed out");
            fallback
        }
    }
}

fn tempfail() -> Reply {
    Reply::with_status(451, (4, 3, 0), "Temporary failure, try again later")
}

/// Everything a session task needs besides its socket.
pub(crate) struct Shared<H> {
    pub cfg: ServerConfig,
    pub handler: Arc<H>,
    pub tls: Option<TlsAcceptor>,
    /// Fired when the server stops: idle sessions leave with 421.
    pub stop: CancellationToken,
    /// Fired at the drain deadline: sessions mid-message leave too.
    pub drain: CancellationToken,
}

/// Serves one connection to its end. Never returns an error: everything that
/// goes wrong is answered on the wire (when possible) and logged.
pub(crate) async fn serve<H: Handler>(
    stream: TcpStream,
    mut session: Session,
    shared: Arc<Shared<H>>,
) {
    let limits = &shared.cfg.limits;
    let mut conn = Connection::new(stream, limits.write_timeout, limits.max_line_length);
    let handler = &*shared.handler;
    let delay = handler.reply_delay();

    match bounded(
        limits.handler_timeout,
        handler.connect(session.info()),
        Decision::Reject(tempfail()),
    )
    .await
    {
        Decision::Accept => {
            pause(delay, &shared.drain).await;
            conn.queue(&session.greeting());
        }
        Decision::Reject(reply) => {
            conn.queue(&reply);
            conn.close().await;
            return;
        }
    }

    // The session's whole life is bounded; each command restarts only the
    // idle timeout.
    let session_end = Instant::now() + limits.max_session_duration;
    loop {
        let idle_end = Instant::now() + limits.idle_timeout;
        let deadline = idle_end.min(session_end);
        let mut step = match conn.read_command(deadline, &shared.stop).await {
            Ok(Command::Request(req)) => {
                trace!(smtp.command = req.name(), "command");
                session.on_request(req)
            }
            Ok(Command::ParseError(e)) => session.on_parse_error(&e),
            Err(Stop::Timeout) if session_end <= idle_end => {
                debug!("session lifetime over");
                conn.queue(&Session::too_long());
                conn.close().await;
                return;
            }
            Err(stop) => return end(&mut conn, stop).await,
        };
        // One command may take several steps (ask the handler, receive DATA).
        loop {
            match step {
                Step::Reply(reply) => {
                    pause(delay, &shared.drain).await;
                    conn.queue(&reply);
                    break;
                }
                Step::Close(reply) => {
                    pause(delay, &shared.drain).await;
                    conn.queue(&reply);
                    conn.close().await;
                    return;
                }
                Step::AskMail(from) => {
                    let d = bounded(
                        limits.handler_timeout,
                        handler.mail(session.info(), &from),
                        Decision::Reject(tempfail()),
                    )
                    .await;
                    step = session.mail_decided(from, d);
                }
                Step::AskRcpt(rcpt) => {
                    let d = bounded(
                        limits.handler_timeout,
                        handler.rcpt(session.info(), session.envelope(), &rcpt),
                        Decision::Reject(tempfail()),
                    )
                    .await;
                    debug!(rcpt = %rcpt.address, accepted = matches!(d, Decision::Accept), "rcpt");
                    step = session.rcpt_decided(rcpt, d);
                }
                Step::ReceiveData(go_ahead) => {
                    pause(delay, &shared.drain).await;
                    conn.queue(&go_ahead);
                    let deadline = Instant::now() + limits.data_timeout;
                    match conn
                        .read_data(limits.max_message_size, deadline, &shared.drain)
                        .await
                    {
                        Ok(Data::Complete(message)) => {
                            let bytes = message.len();
                            let d = bounded(
                                limits.handler_timeout,
                                handler.data(session.info(), session.envelope(), message),
                                DataDecision::Reject(tempfail()),
                            )
                            .await;
                            debug!(
                                bytes,
                                accepted = matches!(d, DataDecision::Accept { .. }),
                                "message"
                            );
                            step = session.data_received(d);
                        }
                        Ok(Data::TooBig) => step = session.data_too_big(),
                        Err(Stop::Timeout) => {
                            conn.queue(&Reply::with_status(
                                421,
                                (4, 4, 2),
                                "DATA timeout, closing connection",
                            ));
                            conn.close().await;
                            return;
                        }
                        Err(stop) => return end(&mut conn, stop).await,
                    }
                }
                Step::StartTls(ready) => {
                    let Some(acceptor) = shared.tls.as_ref() else {
                        // The session only offers STARTTLS when an acceptor exists.
                        conn.queue(&Reply::with_status(454, (4, 7, 0), "TLS not available"));
                        break;
                    };
                    conn.queue(&ready);
                    if conn
                        .upgrade(acceptor, limits.tls_handshake_timeout)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    session.tls_started();
                    break;
                }
                Step::SkipChunk { chunk_size, reply } => {
                    let deadline = Instant::now() + limits.data_timeout;
                    if let Err(stop) = conn.skip(chunk_size, deadline, &shared.drain).await {
                        return end(&mut conn, stop).await;
                    }
                    step = Step::Reply(reply);
                }
            }
        }
    }
}

async fn end(conn: &mut Connection, stop: Stop) {
    match stop {
        Stop::Closed => debug!("peer closed the connection"),
        Stop::Timeout => {
            debug!("idle timeout");
            conn.queue(&Session::idle_timeout());
            conn.close().await;
        }
        Stop::Shutdown => {
            conn.queue(&Session::shutting_down());
            conn.close().await;
        }
    }
}

async fn pause(delay: Option<Duration>, drain: &CancellationToken) {
    if let Some(d) = delay {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = drain.cancelled() => {}
        }
    }
}

/// Answers a connection we will not serve, then closes it.
pub(crate) async fn refuse(mut stream: TcpStream, reply: Reply, write_timeout: Duration) {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = timeout(write_timeout, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}
