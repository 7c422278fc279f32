//! Benchmark: the domain check of 50,000 distinct recipient domains (an
//! import of 1M subscribers) against a DNS server on loopback, with bounded
//! concurrency. Prints lookups/s and domains/s, cold and from the cache.
//!
//! ```text
//! cargo run --release -p rundbrief-dns --example lookups -- [DOMAINS] [CONCURRENCY]
//! ```
//!
//! The responder runs in the same process and on the same runtime as the
//! resolver, so both share the machine's cores: the figure is a floor for
//! a resolver on another host.

use rundbrief_core::config::DnsConfig;
use rundbrief_dns::responder::Responder;
use rundbrief_dns::{DomainCheck, Resolver};
use std::net::Ipv4Addr;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let domains: usize = args.next().map_or(Ok(50_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(64), |a| a.parse())?;

    let dns = Responder::start().await?;
    // The mix of a real list: most domains with MX, some with only an
    // address, a few null MX, a few that do not exist.
    let names: Vec<String> = (0..domains)
        .map(|i| format!("d{i}.bench.example"))
        .collect();
    for (i, d) in names.iter().enumerate() {
        match i % 20 {
            0 => dns.a(d, 3600, &[Ipv4Addr::new(192, 0, 2, 1)]),
            1 => dns.mx(d, 3600, &[(0, ".")]),
            2 => {} // NXDOMAIN
            _ => dns.mx(
                d,
                3600,
                &[(10, "mx1.bench.example"), (20, "mx2.bench.example")],
            ),
        }
    }
    let cfg = DnsConfig {
        servers: vec![dns.addr().to_string()],
        concurrency,
        ..DnsConfig::default()
    };
    let resolver = Resolver::new(&cfg)?;

    let t = Instant::now();
    let results = resolver.check_domains(&names).await;
    let cold = t.elapsed().as_secs_f64();
    let stats = resolver.stats();
    let (mut ok, mut undeliverable, mut unknown) = (0, 0, 0);
    for r in results.values() {
        match r {
            DomainCheck::Deliverable { .. } => ok += 1,
            DomainCheck::Undeliverable { .. } => undeliverable += 1,
            DomainCheck::Unknown { .. } => unknown += 1,
        }
    }
    println!(
        "cold:   {domains} domains, {} lookups in {cold:.2} s: {:.0} lookups/s, {:.0} domains/s \
         (concurrency {concurrency}, max in flight {})",
        stats.queries,
        stats.queries as f64 / cold,
        domains as f64 / cold,
        stats.max_in_flight
    );
    println!(
        "        deliverable {ok}, undeliverable {undeliverable}, unknown {unknown}; \
         server saw {} UDP + {} TCP queries",
        dns.udp_queries(),
        dns.tcp_queries()
    );
    let t = Instant::now();
    let again = resolver.check_domains(&names).await;
    let warm = t.elapsed().as_secs_f64();
    assert_eq!(again.len(), domains);
    println!(
        "cached: {domains} domains in {warm:.3} s: {:.0} domains/s ({} new lookups)",
        domains as f64 / warm,
        resolver.stats().queries - stats.queries
    );
    Ok(())
}
