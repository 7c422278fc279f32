//! Sender msgs/s to Postfix's `smtp-sink`, compared in the same run with
//! Postfix's own client `smtp-source` against the same sink: with `-d`
//! (each session keeps its connection, as our pool does) and without (one
//! connection per message).

use crate::postfix::{SmtpSink, smtp_source};
use crate::{Args, Figure};
use rundbrief_core::{Secret, Signer, Verp};
use rundbrief_sender::{Delivery, Outcome, Relay, Sender};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// A plain-text message of about `size` bytes, CRLF line ends.
pub(crate) fn message(size: usize) -> Arc<[u8]> {
    let mut m = String::from(
        "From: News <news@example.org>\r\nTo: reader@example.net\r\nSubject: Bench\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    while m.len() + line.len() <= size {
        m.push_str(line);
    }
    Arc::from(m.into_bytes())
}

/// Sends `count` copies of `msg` (each with its own VERP envelope) through
/// one `Sender` with `pool` connections; returns msgs/s and failures.
pub(crate) fn sender_rate(
    addr: SocketAddr,
    pool: usize,
    msg: &Arc<[u8]>,
    count: usize,
) -> anyhow::Result<(f64, usize)> {
    let msg = Arc::clone(msg);
    sender_rate_with(addr, pool, count, move |_| Ok(Arc::clone(&msg)))
}

/// Like [`sender_rate`], with message `i` made by `make(i)` inside the
/// sending task (e.g. rendered per recipient).
pub(crate) fn sender_rate_with(
    addr: SocketAddr,
    pool: usize,
    count: usize,
    make: impl Fn(usize) -> anyhow::Result<Arc<[u8]>> + Send + Sync + 'static,
) -> anyhow::Result<(f64, usize)> {
    let make = Arc::new(make);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut relay = Relay::parse(&format!("smtp://{addr}"))?;
        relay.options.pool_size = pool;
        relay.options.max_messages_per_connection = 100_000;
        let verp = Verp::new(
            Signer::new(Secret::new("k".repeat(40)), None),
            "b",
            "bounce.example.org",
        );
        let sender = Arc::new(Sender::new(relay, verp)?);
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..pool {
            let (sender, next, failed, make) = (
                Arc::clone(&sender),
                Arc::clone(&next),
                Arc::clone(&failed),
                Arc::clone(&make),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let d = Delivery {
                        id: uuid::Uuid::now_v7(),
                        to: "reader@example.net".into(),
                        message: make(i)?,
                        per_connection: None,
                    };
                    if !matches!(sender.send(d).await, Outcome::Sent { .. }) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        sender.shutdown().await;
        anyhow::Ok((count as f64 / secs, failed.load(Ordering::Relaxed)))
    })
}

pub(crate) fn run(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let sink = SmtpSink::start()?;
    let count = if args.quick { 5_000 } else { 20_000 };
    let sizes: &[usize] = if args.quick {
        &[5 * 1024]
    } else {
        &[5 * 1024, 50 * 1024]
    };
    for &size in sizes {
        let kb = size / 1024;
        // Large messages: fewer of them, the same order of wall time.
        let count = if size > 10 * 1024 { count / 4 } else { count };
        let msg = message(size);
        for pool in [1usize, 8, 32] {
            eprintln!("send: {count} × {kb} KB, pool {pool}, Sender and smtp-source -d …");
            let cpu0 = sink.cpu_secs();
            let t0 = Instant::now();
            let (ours, failed) = sender_rate(sink.addr, pool, &msg, count)?;
            let sink_cpu = (sink.cpu_secs() - cpu0) / t0.elapsed().as_secs_f64();
            let theirs = smtp_source(sink.addr, pool, count, size, true)?;
            figures.push(Figure::new(
                format!("send {kb} KB to smtp-sink, pool {pool}"),
                ours,
                "msg/s",
                format!(
                    "{count} messages, {failed} failed; smtp-sink used {:.0} % of a core",
                    sink_cpu * 100.0
                ),
            ));
            figures.push(Figure::new(
                format!("smtp-source -d, {kb} KB, {pool} sessions"),
                theirs,
                "msg/s",
                "reference: Postfix's client, kept connections",
            ));
            figures.push(Figure::new(
                format!("send / smtp-source -d, {kb} KB, pool {pool}"),
                ours / theirs,
                "ratio",
                "target ≥ 0.9",
            ));
            if pool == 8 {
                let per_msg = smtp_source(sink.addr, 8, count, size, false)?;
                figures.push(Figure::new(
                    format!("smtp-source (connection per message), {kb} KB, 8 sessions"),
                    per_msg,
                    "msg/s",
                    "reference: Postfix's client, one connection per message",
                ));
                figures.push(Figure::new(
                    format!("send / smtp-source per message, {kb} KB, pool 8"),
                    ours / per_msg,
                    "ratio",
                    "",
                ));
            }
        }
    }
    drop(sink);
    Ok(())
}
