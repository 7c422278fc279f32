//! The listener: connection slots taken before accept, per-address caps, one
//! task per session, graceful shutdown with a drain deadline.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::ServerConfig;
use crate::connection::{Shared, refuse, serve};
use crate::error::SmtpdError;
use crate::handler::{Handler, SessionInfo};
use crate::reply::Reply;
use crate::session::Session;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// Runs an SMTP listener until `stop` is cancelled, then drains.
///
/// Connection handling: a slot is taken *before* `accept` (mini-redis). With
/// all [`crate::Limits::max_connections`] slots busy the server still accepts
/// and answers `421 4.3.2` from a small overflow pool; when that is full too
/// it stops accepting until a slot frees.
///
/// Shutdown: on `stop` the listener is closed, idle sessions get `421 4.3.2`
/// at once, sessions in the middle of a message finish it (and get their
/// 250) within [`crate::Limits::drain_timeout`]; past it they get `421` too.
/// Returns once every session task has ended (or one write timeout after the
/// drain deadline, leaving stragglers to the runtime).
///
/// # Errors
/// [`SmtpdError::Config`] for unusable limits; [`SmtpdError::Accept`] when
/// `accept` keeps failing.
pub async fn run<H: Handler>(
    listener: TcpListener,
    cfg: ServerConfig,
    handler: Arc<H>,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) -> Result<(), SmtpdError> {
    cfg.validate()?;
    let limits = cfg.limits.clone();
    let sessions = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(limits.overflow_replies));
    let per_ip = Arc::new(PerIp {
        max: limits.max_connections_per_ip,
        counts: Mutex::new(HashMap::new()),
    });
    let reserve = limits.effective_reserve();
    let drain = CancellationToken::new();
    let shared = Arc::new(Shared {
        cfg,
        handler,
        tls,
        stop: stop.clone(),
        drain: drain.clone(),
    });
    let tracker = TaskTracker::new();
    let local = listener.local_addr().map_err(SmtpdError::Accept)?;
    info!(%local, max_connections = limits.max_connections, "smtpd listening");

    let result = loop {
        let slot = tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(()),
            s = acquire(&sessions, &overflow) => s,
        };
        let Some(slot) = slot else { break Ok(()) };
        let (sock, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(()),
            r = accept(&listener) => match r {
                Ok(v) => v,
                Err(e) => break Err(SmtpdError::Accept(e)),
            },
        };
        // A session slot may have come free while we waited in accept.
        let slot = match slot {
            Slot::Overflow(p) => match sessions.clone().try_acquire_owned() {
                Ok(s) => Slot::Session(s),
                Err(_) => Slot::Overflow(p),
            },
            s => s,
        };
        let _ = sock.set_nodelay(true);
        match slot {
            Slot::Overflow(permit) => {
                warn!(%peer, "connection limit reached, answering 421");
                let wt = limits.write_timeout;
                tracker.spawn(async move {
                    refuse(
                        sock,
                        Reply::with_status(421, (4, 3, 2), "Too many connections, try again later"),
                        wt,
                    )
                    .await;
                    drop(permit);
                });
            }
            Slot::Session(permit) => {
                // Fewer than `reserve` slots left: only for addresses that
                // hold no session yet.
                let new_peers_only = sessions.available_permits() < reserve;
                let Some(ip_guard) = PerIp::enter(&per_ip, peer.ip(), new_peers_only) else {
                    warn!(%peer, "per-address connection limit reached, answering 421");
                    let wt = limits.write_timeout;
                    tracker.spawn(async move {
                        refuse(
                            sock,
                            Reply::with_status(
                                421,
                                (4, 7, 0),
                                "Too many connections from your address",
                            ),
                            wt,
                        )
                        .await;
                        drop(permit);
                    });
                    continue;
                };
                spawn_session(&tracker, sock, peer, local, &shared, permit, ip_guard);
            }
        }
    };

    drop(listener);
    tracker.close();
    info!(
        sessions = tracker.len(),
        "smtpd stopping, draining sessions"
    );
    if tokio::time::timeout(limits.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        drain.cancel();
        let grace = limits.write_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                sessions = tracker.len(),
                "sessions still running after the drain deadline"
            );
        }
    }
    drain.cancel();
    info!("smtpd stopped");
    result
}

fn spawn_session<H: Handler>(
    tracker: &TaskTracker,
    sock: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: &Arc<Shared<H>>,
    permit: OwnedSemaphorePermit,
    ip_guard: IpGuard,
) {
    let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let info = SessionInfo {
        id,
        peer,
        local,
        helo: None,
        tls: false,
        messages: 0,
    };
    let session = Session::new(info, &shared.cfg, shared.tls.is_some());
    let shared = Arc::clone(shared);
    let span = info_span!("session", %peer, session_id = id);
    tracker.spawn(
        async move {
            serve(sock, session, shared).await;
            drop(ip_guard);
            drop(permit);
        }
        .instrument(span),
    );
}

enum Slot {
    Session(OwnedSemaphorePermit),
    Overflow(OwnedSemaphorePermit),
}

/// A session slot if one is free now; otherwise whichever of a session slot
/// or an overflow (421) slot comes first. `None` if a semaphore was closed
/// (never happens: we own them).
async fn acquire(sessions: &Arc<Semaphore>, overflow: &Arc<Semaphore>) -> Option<Slot> {
    if let Ok(p) = sessions.clone().try_acquire_owned() {
        return Some(Slot::Session(p));
    }
    tokio::select! {
        p = sessions.clone().acquire_owned() => p.ok().map(Slot::Session),
        p = overflow.clone().acquire_owned() => p.ok().map(Slot::Overflow),
    }
}

/// `accept` with a short back-off on errors such as EMFILE; gives up after 6
/// failures in a row.
async fn accept(listener: &TcpListener) -> std::io::Result<(TcpStream, SocketAddr)> {
    let mut backoff = Duration::from_millis(1);
    let mut tries = 0;
    loop {
        match listener.accept().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tries += 1;
                if tries >= 6 {
                    return Err(e);
                }
                warn!(error = %e, "accept failed, backing off");
                tokio::time::sleep(backoff).await;
                backoff *= 4;
            }
        }
    }
}

/// Sessions per peer address. The map holds at most `max_connections` keys:
/// an entry is removed when its count drops to zero.
struct PerIp {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct IpGuard {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A guard counting one more session of `ip`, or `None` when `ip` is at
    /// its cap, or already holds a session and `new_only` says the free
    /// slots are kept for new addresses.
    fn enter(this: &Arc<Self>, ip: IpAddr, new_only: bool) -> Option<IpGuard> {
        let mut counts = this.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if (this.max > 0 && *n >= this.max) || (new_only && *n > 0) {
            if *n == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpGuard {
            owner: Arc::clone(this),
            ip,
        })
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}
