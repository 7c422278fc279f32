//! The accept loop: a permit before each accept (so at most
//! `http.max_connections` connections are served and a full server simply
//! stops accepting), HTTP/1.1 connections with a header read timeout
//! (slow-loris clients are cut off), and shutdown given in as a future.

use crate::{AppState, ClientAddr, router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
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
    let app = router(state.clone());
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let header_timeout = Duration::from_secs(cfg.request_timeout_secs);
    let evict_every = Duration::from_secs(60);
    let mut evict = tokio::time::interval(evict_every);
    tokio::pin!(shutdown);
    tracing::info!(addr = ?listener.local_addr().ok(), "HTTP endpoint listening");
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = evict.tick() => {
                state.0.limits.evict_idle();
                continue;
            }
            _ = &mut shutdown => break,
        };
        let _ = sock.set_nodelay(true);
        let svc = TowerToHyperService::new(AddExtension::new(app.clone(), ClientAddr(peer)));
        let stop = stop.clone();
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
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        tracing::warn!("HTTP connections still open after the drain deadline");
    }
    state.finish_outbox(DRAIN).await;
    Ok(())
}
