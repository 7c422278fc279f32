//! The accept loop: a permit before each accept (so at most
//! `http.max_connections` connections are served), HTTP/1.1 connections with
//! a header read timeout (slow-loris clients are cut off), a per-IP cap, and
//! shutdown given in as a future.
//!
//! Idle keep-alive connections cannot keep real requests out: when every
//! slot is taken, the idle connection open longest is closed to make room
//! (a connection is idle while no request of it is being answered). Only
//! when every connection is busy with a request does the next one wait, and
//! requests are bounded by `http.request_timeout_secs`.

use crate::{AppState, ClientAddr, router};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::add_extension::AddExtension;

/// How long connections in flight get to finish after `shutdown`, and the
/// confirmation-mail queue after them.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops
/// accepting, lets requests in flight finish (idle keep-alive connections
/// are closed), sends the confirmation mails still queued and returns. Each
/// step of the drain is bounded by 10 s.
///
/// Every request carries the connection's peer as a [`ClientAddr`]
/// extension (the rate limit's client IP unless `http.trust_forwarded_for`).
///
/// # Errors
/// Only when the listener itself fails persistently; a failed accept
/// (e.g. out of file descriptors) is logged and retried after a pause.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let cfg = state.config().clone();
    let shape = Shape {
        name: "HTTP endpoint",
        max_connections: cfg.max_connections,
        max_per_ip: if cfg.trust_forwarded_for {
            0
        } else {
            cfg.max_connections_per_ip
        },
        header_timeout: Duration::from_secs(cfg.request_timeout_secs),
    };
    let tick = {
        let state = state.clone();
        move || state.0.limits.evict_idle()
    };
    serve_router(listener, router(state.clone()), shape, tick, shutdown).await?;
    state.finish_outbox(DRAIN).await;
    Ok(())
}

/// The limits of one HTTP listener (the public endpoint, the dashboard).
#[derive(Clone, Debug)]
pub struct Shape {
    /// Named in the log lines.
    pub name: &'static str,
    /// Connections served at once; when all are taken the longest-idle one
    /// is closed to make room, and only when all are busy does the next wait.
    pub max_connections: usize,
    /// Connections one client IP may hold (0: no cap); more are answered 503.
    pub max_per_ip: usize,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
}

/// The accept loop every HTTP listener of rundbrief shares: serves `app` on
/// `listener` with the limits of `shape` until `shutdown` resolves, calling
/// `tick` once a minute (to evict idle rate-limit entries, expired sessions).
/// On shutdown it stops accepting and lets requests in flight finish,
/// bounded by 10 s.
///
/// Every request carries the connection's peer as a [`ClientAddr`] extension.
///
/// # Errors
/// None so far: a failed accept (e.g. out of file descriptors) is logged and
/// retried after a pause.
pub async fn serve_router(
    listener: TcpListener,
    app: axum::Router,
    shape: Shape,
    mut tick: impl FnMut() + Send,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let name = shape.name;
    let app = app.layer(axum::middleware::from_fn(track_busy));
    let slots = Arc::new(Semaphore::new(shape.max_connections.max(1)));
    let conns = Arc::new(Registry::default());
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut evict = tokio::time::interval(Duration::from_secs(60));
    tokio::pin!(shutdown);
    tracing::info!(addr = ?listener.local_addr().ok(), "{name} listening");
    loop {
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: make room by closing the longest-idle connection,
                // then wait for its slot (or any other). While every
                // connection is busy, look again every 50 ms: one that has
                // answered its request and waits for the next is idle.
                let mut asked = conns.evict_idle();
                let permit = loop {
                    tokio::select! {
                        p = Arc::clone(&slots).acquire_owned() => {
                            break Some(p.expect("the semaphore is never closed"));
                        }
                        _ = tokio::time::sleep(Duration::from_millis(50)), if !asked => {
                            asked = conns.evict_idle();
                        }
                        _ = &mut shutdown => break None,
                    }
                };
                match permit {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "{name}: accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = evict.tick() => {
                tick();
                continue;
            }
            _ = &mut shutdown => break,
        };
        let _ = sock.set_nodelay(true);
        let Some(entry) = Registry::enter(&conns, peer.ip(), shape.max_per_ip) else {
            tracing::info!(%peer, "{name}: too many connections from this address; answering 503");
            tasks.spawn(async move {
                let mut sock = sock;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    sock.write_all(TOO_MANY).await?;
                    sock.shutdown().await
                })
                .await;
                drop(permit);
            });
            continue;
        };
        let svc = TowerToHyperService::new(AddExtension::new(
            AddExtension::new(app.clone(), ClientAddr(peer)),
            Busy(Arc::clone(&entry.busy)),
        ));
        let stop = stop.clone();
        let header_timeout = shape.header_timeout;
        tasks.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(sock), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "{name}: connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                _ = entry.evict.cancelled() => {
                    tracing::debug!(%peer, "{name}: idle connection closed to make room");
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(entry);
            drop(permit);
        });
    }
    drop(listener);
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        tracing::warn!("{name}: connections still open after the drain deadline");
    }
    Ok(())
}

/// The answer to a connection over `http.max_connections_per_ip`.
const TOO_MANY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 41\r\nRetry-After: 10\r\nConnection: close\r\n\r\n\
Too many connections from your address.\r\n";

/// Requests of one connection being answered right now, put on each
/// request so [`track_busy`] can count them.
#[derive(Clone)]
struct Busy(Arc<AtomicUsize>);

/// Counts the request as in progress on its connection while it is
/// answered: a connection with none is idle and may be closed to make room.
async fn track_busy(req: Request, next: Next) -> Response {
    let busy = req.extensions().get::<Busy>().cloned();
    if let Some(b) = &busy {
        b.0.fetch_add(1, Ordering::SeqCst);
    }
    let guard = BusyGuard(busy);
    let r = next.run(req).await;
    drop(guard);
    r
}

struct BusyGuard(Option<Busy>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The open connections: per IP counts (for the cap) and, for eviction,
/// each one's busy counter and the token that closes it. At most
/// `http.max_connections` entries: each holds a slot.
#[derive(Default)]
struct Registry {
    inner: Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    next: u64,
    per_ip: HashMap<IpAddr, usize>,
    open: HashMap<u64, (Arc<AtomicUsize>, tokio_util::sync::CancellationToken)>,
}

/// One registered connection; dropping it unregisters.
struct Entry {
    owner: Arc<Registry>,
    id: u64,
    ip: IpAddr,
    busy: Arc<AtomicUsize>,
    evict: CancellationToken,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection from `ip`, or `None` when `ip` already holds
    /// `cap` of them (0: no cap).
    fn enter(this: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Entry> {
        let mut c = this.lock();
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if cap > 0 && n >= cap {
            return None;
        }
        c.per_ip.insert(ip, n + 1);
        c.next += 1;
        let id = c.next;
        let busy = Arc::new(AtomicUsize::new(0));
        let evict = CancellationToken::new();
        c.open.insert(id, (Arc::clone(&busy), evict.clone()));
        Some(Entry {
            owner: Arc::clone(this),
            id,
            ip,
            busy,
            evict,
        })
    }

    /// Asks the idle connection open longest (the lowest id) to close.
    /// Returns whether there was one.
    fn evict_idle(&self) -> bool {
        let c = self.lock();
        let oldest = c
            .open
            .iter()
            .filter(|(_, (busy, evict))| busy.load(Ordering::SeqCst) == 0 && !evict.is_cancelled())
            .min_by_key(|(id, _)| **id);
        match oldest {
            Some((_, (_, evict))) => {
                evict.cancel();
                true
            }
            None => false,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut c = self.owner.lock();
        c.open.remove(&self.id);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}
