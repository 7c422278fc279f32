//! Messages per second through `Sender` to a loopback `rundbrief sink`
//! (no spool directory), 5 KB and 50 KB messages, each with its own VERP
//! envelope, at pool sizes 1, 8 and 32, with and without PIPELINING;
//! lettre's own pooled
//! `AsyncSmtpTransport` at pool size 8 for comparison.
//!
//! `cargo run --release -p rundbrief-sender --example send_bench [COUNT]`
//! (COUNT messages per run, default 2000). Sender and sink share one tokio
//! runtime and the machine's cores, so the figures are a floor.
//!
//! `SEND_BENCH_TARGET=127.0.0.1:PORT` sends to that server instead (e.g.
//! Postfix's `smtp-sink`, to compare with `smtp-source` on the same sink);
//! lettre's pool is then skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rundbrief_core::{Secret, Signer, Verp};
use rundbrief_sender::{Delivery, Outcome, Relay, Sender};
use rundbrief_smtpd::sink::{Sink, SinkConfig, SinkTls};
use rundbrief_smtpd::{CancellationToken, Limits};
use tokio::net::TcpListener;
use uuid::Uuid;

fn message(size: usize) -> Arc<[u8]> {
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

fn verp() -> Verp {
    Verp::new(
        Signer::new(Secret::new("k".repeat(40)), None),
        "b",
        "bounce.example.org",
    )
}

async fn run_sender(
    addr: std::net::SocketAddr,
    pool: usize,
    pipelining: bool,
    msg: &Arc<[u8]>,
    count: usize,
) -> (f64, usize) {
    let mut relay = Relay::parse(&format!("smtp://{addr}")).expect("url");
    relay.options.pool_size = pool;
    relay.options.max_messages_per_connection = 10_000;
    relay.options.pipelining = pipelining;
    let sender = Arc::new(Sender::new(relay, verp()).expect("sender"));
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..pool {
        let (sender, next, failed, msg) = (
            Arc::clone(&sender),
            Arc::clone(&next),
            Arc::clone(&failed),
            Arc::clone(msg),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let d = Delivery {
                    id: Uuid::now_v7(),
                    to: "reader@example.net".into(),
                    message: Arc::clone(&msg),
                    per_connection: None,
                };
                if !matches!(sender.send(d).await, Outcome::Sent { .. }) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let secs = start.elapsed().as_secs_f64();
    sender.shutdown().await;
    (count as f64 / secs, failed.load(Ordering::Relaxed))
}

async fn run_lettre_pool(
    addr: std::net::SocketAddr,
    pool: u32,
    msg: &Arc<[u8]>,
    count: usize,
) -> f64 {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .pool_config(PoolConfig::new().max_size(pool))
        .timeout(Some(Duration::from_secs(30)))
        .build();
    let transport = Arc::new(transport);
    let verp = Arc::new(verp());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..pool {
        let (t, next, msg, verp) = (
            Arc::clone(&transport),
            Arc::clone(&next),
            Arc::clone(msg),
            Arc::clone(&verp),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let from = verp.address(Uuid::now_v7()).parse().ok();
                let to = "reader@example.net".parse().expect("address");
                let env = lettre::address::Envelope::new(from, vec![to]).expect("envelope");
                let _ = t.send_raw(&env, &msg).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let target: Option<std::net::SocketAddr> = std::env::var("SEND_BENCH_TARGET")
        .ok()
        .map(|t| t.parse().expect("SEND_BENCH_TARGET must be HOST:PORT"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = target.unwrap_or(listener.local_addr().expect("addr"));
    let sink = Sink::new(SinkConfig {
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .expect("sink");
    let stats = sink.stats();
    let stop = CancellationToken::new();
    let server = tokio::spawn(sink.run(listener, Limits::default(), stop.clone()));

    println!(
        "{:>6} {:>5} {:>7} {:>10} {:>7}  mode",
        "size", "pool", "count", "msgs/s", "failed"
    );
    for size in [5 * 1024, 50 * 1024] {
        let msg = message(size);
        for pipelining in [true, false] {
            let mode = if pipelining {
                "Sender, PIPELINING"
            } else {
                "Sender, one command per round trip"
            };
            for pool in [1, 8, 32] {
                let (rate, failed) = run_sender(addr, pool, pipelining, &msg, count).await;
                println!(
                    "{:>5}K {pool:>5} {count:>7} {rate:>10.0} {failed:>7}  {mode}",
                    size / 1024
                );
            }
        }
        if target.is_some() {
            continue;
        }
        let small = (count / 10).max(50);
        let rate = run_lettre_pool(addr, 8, &msg, small).await;
        println!(
            "{:>5}K {:>5} {small:>7} {rate:>10.0} {:>7}  lettre AsyncSmtpTransport pool",
            size / 1024,
            8,
            "-"
        );
    }
    println!("sink counted {} messages", stats.messages());
    stop.cancel();
    let _ = server.await;
}
