//! The resolver, the domain check, the cache and provider grouping against
//! a DNS server started on loopback ([`Responder`]); never the internet.

use rundbrief_core::config::Config;
use rundbrief_dns::responder::{Fault, Responder};
use rundbrief_dns::{
    Basis, DomainCheck, ManualClock, Providers, REASON_NO_MX_OR_A, REASON_NULL_MX, REASON_NXDOMAIN,
    Resolver,
};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

/// The configuration a user writes: `[dns] servers = ["127.0.0.1:PORT"]`.
fn config(dns: &Responder, extra: &str) -> Config {
    let text = format!(
        "[dns]\nservers = [\"{}\"]\ntimeout_secs = 1\nattempts = 1\n{extra}",
        dns.addr()
    );
    let cfg: Config = toml::from_str(&text).expect("test config parses");
    cfg.validate().expect("test config is valid");
    cfg
}

async fn setup(extra: &str) -> (Responder, Resolver, Arc<ManualClock>, Config) {
    let dns = Responder::start().await.unwrap();
    let cfg = config(&dns, extra);
    let clock = Arc::new(ManualClock::new());
    let resolver = Resolver::with_clock(&cfg.dns, clock.clone()).unwrap();
    (dns, resolver, clock, cfg)
}

fn undeliverable(reason: &str) -> DomainCheck {
    DomainCheck::Undeliverable {
        reason: reason.into(),
    }
}

#[tokio::test]
async fn domain_check_reads_mx_null_mx_address_and_nxdomain() {
    let (dns, r, _, _) = setup("").await;
    dns.mx(
        "mail.example",
        300,
        &[(20, "mx2.mail.example"), (10, "MX1.mail.example")],
    );
    dns.mx("nomail.example", 300, &[(0, ".")]);
    dns.a("direct.example", 300, &[Ipv4Addr::new(192, 0, 2, 1)]);
    dns.aaaa("v6only.example", 300, &[Ipv6Addr::LOCALHOST]);
    dns.exists("empty.example");
    let cases = [
        (
            "mail.example",
            DomainCheck::Deliverable {
                mx: vec!["mx1.mail.example".into(), "mx2.mail.example".into()],
            },
        ),
        ("Mail.Example.", r.check_domain("mail.example").await),
        ("nomail.example", undeliverable(REASON_NULL_MX)),
        ("direct.example", DomainCheck::Deliverable { mx: vec![] }),
        ("v6only.example", DomainCheck::Deliverable { mx: vec![] }),
        ("empty.example", undeliverable(REASON_NO_MX_OR_A)),
        ("gone.example", undeliverable(REASON_NXDOMAIN)),
        ("[192.0.2.7]", DomainCheck::Deliverable { mx: vec![] }),
    ];
    for (domain, want) in cases {
        assert_eq!(r.check_domain(domain).await, want, "{domain}");
    }
    assert_eq!(REASON_NXDOMAIN, "no MX or A (NXDOMAIN)");
    assert_eq!(REASON_NULL_MX, "null MX (RFC 7505)");
}

#[tokio::test]
async fn aliases_are_followed_and_cached_for_the_shortest_ttl() {
    let (dns, r, clock, _) = setup("").await;
    dns.mx("mail.example", 300, &[(10, "mx.mail.example")]);
    dns.cname("alias.example", 30, "mail.example");
    dns.a("host.example", 300, &[Ipv4Addr::new(192, 0, 2, 3)]);
    dns.cname("www.alias.example", 300, "host.example");
    dns.cname("dangling.example", 300, "nowhere.example");
    let mail = DomainCheck::Deliverable {
        mx: vec!["mx.mail.example".into()],
    };
    assert_eq!(r.check_domain("alias.example").await, mail);
    assert_eq!(
        r.check_domain("www.alias.example").await,
        DomainCheck::Deliverable { mx: vec![] }
    );
    assert_eq!(
        r.check_domain("dangling.example").await,
        undeliverable(REASON_NXDOMAIN)
    );
    // The alias's 30 s bound the cached MX answer, not the target's 300 s.
    dns.cname("alias.example", 30, "other.example");
    dns.mx("other.example", 300, &[(10, "mx.other.example")]);
    clock.advance(Duration::from_secs(29));
    assert_eq!(r.check_domain("alias.example").await, mail);
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        r.check_domain("alias.example").await,
        DomainCheck::Deliverable {
            mx: vec!["mx.other.example".into()]
        }
    );
}

#[tokio::test]
async fn server_failures_are_unknown_and_remembered_briefly() {
    let (dns, r, clock, _) = setup("failure_ttl_secs = 60\n").await;
    dns.mx("broken.example", 300, &[(10, "mx.broken.example")]);
    dns.fault("broken.example", Some(Fault::ServFail));
    dns.mx("refusing.example", 300, &[(10, "mx.refusing.example")]);
    dns.fault("refusing.example", Some(Fault::Refused));
    let got = r.check_domain("broken.example").await;
    assert!(
        matches!(&got, DomainCheck::Unknown { reason } if reason.contains("SERVFAIL")),
        "{got:?}"
    );
    let got = r.check_domain("refusing.example").await;
    assert!(
        matches!(&got, DomainCheck::Unknown { reason } if reason.contains("REFUSED")),
        "{got:?}"
    );
    assert!(!got.is_undeliverable());
    // The zone is repaired: within failure_ttl_secs the failure stands,
    // unasked; after it, the next check asks again and sees the repair.
    dns.fault("broken.example", None);
    let asked = dns.queries();
    assert!(matches!(
        r.check_domain("broken.example").await,
        DomainCheck::Unknown { .. }
    ));
    assert!(matches!(
        r.cached_check("broken.example"),
        Some(DomainCheck::Unknown { .. })
    ));
    assert_eq!(
        dns.queries(),
        asked,
        "a remembered failure is not asked again"
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        r.check_domain("broken.example").await,
        DomainCheck::Deliverable {
            mx: vec!["mx.broken.example".into()]
        }
    );
}

#[tokio::test]
async fn a_silent_server_is_unknown_after_the_timeout() {
    let (dns, r, _, _) = setup("").await;
    dns.mx("slow.example", 300, &[(10, "mx.slow.example")]);
    dns.fault("slow.example", Some(Fault::Silent));
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(20), r.check_domain("slow.example"))
        .await
        .expect("the resolver's own timeout ends the lookup");
    assert!(matches!(got, DomainCheck::Unknown { .. }), "{got:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    eprintln!("a silent server took {took:?} to give up (timeout 1 s, 1 try)");
}

#[tokio::test]
async fn truncated_udp_answers_fall_back_to_tcp() {
    let (dns, r, _, _) = setup("").await;
    dns.mx("big.example", 300, &[(10, "mx.big.example")]);
    dns.fault("big.example", Some(Fault::TruncateUdp));
    assert_eq!(
        r.check_domain("big.example").await,
        DomainCheck::Deliverable {
            mx: vec!["mx.big.example".into()]
        }
    );
    assert!(dns.udp_queries() >= 1 && dns.tcp_queries() >= 1);
}

#[tokio::test]
async fn the_cache_honours_ttls_positive_and_negative() {
    let (dns, r, clock, _) = setup("negative_ttl_secs = 50\n").await;
    dns.mx("ttl.example", 60, &[(10, "old.ttl.example")]);
    dns.set_negative_ttl(30);
    let old = DomainCheck::Deliverable {
        mx: vec!["old.ttl.example".into()],
    };
    assert_eq!(r.cached_check("ttl.example"), None, "nothing cached yet");
    assert_eq!(r.check_domain("ttl.example").await, old);
    assert_eq!(r.cached_check("TTL.example."), Some(old.clone()));
    let asked = dns.queries();
    dns.mx("ttl.example", 60, &[(10, "new.ttl.example")]);
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        r.check_domain("ttl.example").await,
        old,
        "cached within the TTL"
    );
    assert_eq!(dns.queries(), asked, "no query within the TTL");
    clock.advance(Duration::from_secs(2));
    assert_eq!(r.cached_check("ttl.example"), None, "expired");
    assert_eq!(
        r.check_domain("ttl.example").await,
        DomainCheck::Deliverable {
            mx: vec!["new.ttl.example".into()]
        },
        "asked again after the TTL"
    );
    assert_eq!(dns.queries(), asked + 1);

    dns.a("addr.example", 60, &[Ipv4Addr::new(192, 0, 2, 9)]);
    let implicit = DomainCheck::Deliverable { mx: vec![] };
    assert_eq!(r.check_domain("addr.example").await, implicit);
    assert_eq!(r.cached_check("addr.example"), Some(implicit));

    // NXDOMAIN is kept for the SOA minimum (30 s here).
    assert_eq!(
        r.check_domain("later.example").await,
        undeliverable(REASON_NXDOMAIN)
    );
    dns.mx("later.example", 60, &[(10, "mx.later.example")]);
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        r.check_domain("later.example").await,
        undeliverable(REASON_NXDOMAIN)
    );
    clock.advance(Duration::from_secs(2));
    assert!(!r.check_domain("later.example").await.is_undeliverable());

    // A longer SOA minimum is capped by negative_ttl_secs (50).
    dns.set_negative_ttl(100_000);
    assert!(r.check_domain("capped.example").await.is_undeliverable());
    dns.mx("capped.example", 60, &[(10, "mx.capped.example")]);
    clock.advance(Duration::from_secs(49));
    assert!(r.check_domain("capped.example").await.is_undeliverable());
    clock.advance(Duration::from_secs(2));
    assert!(!r.check_domain("capped.example").await.is_undeliverable());
    assert!(r.stats().cache_hits >= 3);
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let (dns, r, _, _) = setup("cache_size = 50\n").await;
    for i in 0..300 {
        dns.mx(&format!("d{i}.example"), 3600, &[(10, "mx.example")]);
    }
    let all = r
        .check_domains((0..300).map(|i| format!("d{i}.example")))
        .await;
    assert_eq!(all.len(), 300);
    let held = r.cache_len();
    assert!(held <= 50, "cache holds {held} entries, cache_size 50");
}

#[tokio::test]
async fn concurrent_callers_of_one_domain_share_one_query() {
    let (dns, r, _, _) = setup("").await;
    dns.mx("popular.example", 300, &[(10, "mx.popular.example")]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let r = r.clone();
        tasks.spawn(async move { r.check_domain("popular.example").await });
    }
    while let Some(done) = tasks.join_next().await {
        assert!(matches!(done.unwrap(), DomainCheck::Deliverable { .. }));
    }
    assert_eq!(dns.queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_check_is_bounded_and_asks_each_domain_once() {
    let (dns, r, _, _) = setup("concurrency = 8\n").await;
    let mut input = Vec::new();
    for i in 0..2000 {
        let d = format!("b{i}.example");
        match i % 4 {
            0 | 1 => dns.mx(&d, 300, &[(10, "mx.example")]),
            2 => dns.a(&d, 300, &[Ipv4Addr::new(192, 0, 2, 1)]),
            _ => {} // NXDOMAIN
        }
        // Every domain three times, in two spellings.
        input.push(d.clone());
        input.push(d.to_uppercase());
        input.push(format!("{d}."));
    }
    let all = r.check_domains(&input).await;
    assert_eq!(all.len(), 2000);
    for i in 0..2000 {
        let got = &all[&format!("b{i}.example")];
        match i % 4 {
            0..=2 => assert!(
                matches!(got, DomainCheck::Deliverable { .. }),
                "{i}: {got:?}"
            ),
            _ => assert_eq!(got, &undeliverable(REASON_NXDOMAIN)),
        }
    }
    let s = r.stats();
    // One MX query per domain, one A query for the 500 without MX.
    assert_eq!(s.queries, 2500);
    assert_eq!(dns.queries(), 2500);
    assert!(s.max_in_flight <= 8, "{s:?}");
    assert!(s.max_in_flight > 1, "lookups ran concurrently: {s:?}");
}

#[tokio::test]
async fn providers_by_name_and_by_mx_suffix() {
    let extra =
        "[shaping.providers.hoster]\nmx_suffixes = [\"mx.hoster.example\"]\nconnections = 2\n";
    let (dns, r, _, cfg) = setup(extra).await;
    dns.mx(
        "company.example",
        300,
        &[(1, "aspmx.l.google.com"), (5, "alt1.aspmx.l.google.com")],
    );
    dns.mx(
        "firm.example",
        300,
        &[(0, "firm-example.mail.protection.outlook.com")],
    );
    dns.mx("club.example", 300, &[(10, "mx-aol.mail.gm0.yahoodns.net")]);
    dns.mx("family.example", 300, &[(10, "mx01.mail.icloud.com")]);
    dns.mx("verein.example", 300, &[(10, "mx00.web.de")]);
    dns.mx("shop.example", 300, &[(10, "in1.mx.hoster.example")]);
    dns.mx("self.example", 300, &[(10, "mail.self.example")]);
    dns.mx("notgoogle.example", 300, &[(10, "mx.notgoogle.com")]);
    dns.fault("broken.example", Some(Fault::ServFail));
    let p = Providers::new(&cfg.shaping, r.clone());

    // Well-known domains need no DNS.
    for (domain, want) in [
        ("gmail.com", "google"),
        ("hotmail.co.uk", "microsoft"),
        ("aol.com", "yahoo"),
    ] {
        let got = p.provider_of(domain).await;
        assert_eq!((&*got.name, &got.basis), (want, &Basis::Domain), "{domain}");
    }
    assert_eq!(dns.queries(), 0, "no lookups for well-known domains");

    for (domain, want) in [
        ("company.example", "google"),
        ("firm.example", "microsoft"),
        ("club.example", "yahoo"),
        ("family.example", "apple"),
        ("verein.example", "gmx"),
        ("shop.example", "hoster"),
    ] {
        let got = p.provider_of(domain).await;
        assert_eq!(&*got.name, want, "{domain}: {got:?}");
        assert!(
            matches!(got.basis, Basis::Mx { .. }) && got.is_group(),
            "{got:?}"
        );
    }
    let got = p.provider_of("company.example").await;
    assert_eq!(
        got.basis,
        Basis::Mx {
            host: "aspmx.l.google.com".into()
        }
    );
    for domain in ["self.example", "notgoogle.example", "nowhere.example"] {
        let got = p.provider_of(domain).await;
        assert_eq!((&*got.name, &got.basis), (domain, &Basis::Own));
    }
    let got = p.provider_of("broken.example").await;
    assert_eq!(&*got.name, "broken.example");
    assert!(matches!(got.basis, Basis::Unresolved { .. }), "{got:?}");
    assert_eq!(
        p.table().group("hoster").unwrap().limits.connections,
        Some(2)
    );
    // The MX answers came from the shared cache the second time.
    assert_eq!(
        &*p.cached_provider_of("family.example").unwrap().name,
        "apple"
    );
    assert_eq!(&*p.cached_provider_of("gmail.com").unwrap().name, "google");
    assert_eq!(p.cached_provider_of("unseen.example"), None);
    let asked = dns.queries();
    assert_eq!(&*p.provider_of("firm.example").await.name, "microsoft");
    assert!(matches!(
        r.check_domain("firm.example").await,
        DomainCheck::Deliverable { .. }
    ));
    assert_eq!(dns.queries(), asked);
}
