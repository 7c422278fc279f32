//! `rundbrief demo`: the whole pipeline once, in-process, with nothing to
//! configure. A fresh directory gets an embedded SQLite database and a
//! rundbrief.toml with a generated secret; the test sink (playing the world)
//! and the bounce endpoint run on free loopback ports; a list of generated
//! subscribers, a known share of them dead, gets one Markdown issue; every
//! bounce comes back through the endpoint; the summary is checked against
//! the plan, so the demo doubles as an end-to-end check. A DNS responder on
//! loopback answers every lookup of the domain check: a couple of addresses
//! are on a domain that does not exist and one on a domain with a null MX,
//! so they are imported `undeliverable` and never sent to.
//!
//! The plan ([`Plan::for_subscribers`]) is the contract with
//! `crates/cli/tests/demo.rs`, which computes the same numbers on its own.

use crate::args::DemoArgs;
use crate::cmd::campaign::send_foreground;
use crate::output;
use anyhow::{Context, bail};
use rundbrief_app::App;
use rundbrief_app::domains::DomainChecker;
use rundbrief_app::endpoint::{EndpointOptions, start_endpoint};
use rundbrief_app::sending::SendOptions;
use rundbrief_core::csvin::ImportRow;
use rundbrief_core::{
    Address, Attributes, BounceState, CampaignState, Config, Secret, StatusFilter, SubscriberStatus,
};
use rundbrief_sender::Reply;
use rundbrief_smtpd::sink::{Rule, Sink, SinkConfig, SinkStats, SinkTls};
use rundbrief_smtpd::{CancellationToken, Limits};
use rundbrief_store::{BounceQuery, ImportOptions, NewCampaign, Store, SubscriberQuery};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The list the demo creates.
const LIST: &str = "demo";
/// The campaign the demo sends.
const CAMPAIGN: &str = "demo-issue-1";
/// The bounce domain: `.invalid` never resolves, so nothing can leak out.
const BOUNCE_DOMAIN: &str = "bounce.demo.invalid";
const PUBLIC_URL: &str = "https://demo.invalid";
const FROM: &str = "Rundbrief Demo <news@demo.invalid>";
/// Recipient domains, round-robin (RFC 2606 example domains).
const DOMAINS: [&str; 3] = ["example.com", "example.net", "example.org"];
/// How long the demo waits for the last bounce to come back and be processed.
const BOUNCE_WAIT: Duration = Duration::from_secs(30);
/// SMTP connections to the sink.
const POOL: usize = 4;
/// Fewest subscribers: one of each fate plus some live ones.
const MIN_SUBSCRIBERS: u64 = 12;
/// A domain the demo's DNS responder does not know: NXDOMAIN.
const NO_SUCH_DOMAIN: &str = "vanished.example";
/// A domain whose only MX is the null MX (RFC 7505).
const NULL_MX_DOMAIN: &str = "nomail.example";

/// The second part: a campaign to two providers, one of which starts
/// blocking us, so the circuit breaker suspends it.
const PROVIDER_LIST: &str = "demo-providers";
const PROVIDER_CAMPAIGN: &str = "demo-issue-1-providers";
/// A provider group of the demo's own (`[shaping.providers.blockmail]`).
const BLOCKING_PROVIDER: &str = "blockmail";
const BLOCKING_DOMAIN: &str = "blockmail.example";
/// The provider that keeps accepting.
const HEALTHY_DOMAIN: &str = "example.org";
/// Subscribers of each of the two providers.
const PER_PROVIDER: usize = 200;
/// Messages the blocking provider accepts before it refuses every later one.
const ACCEPTED_BEFORE_BLOCK: u64 = 20;

/// What the sink's rules make of an address; the local part starts with
/// [`Fate::prefix`], so a rule matches on `PREFIX*@*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Accepted, nothing comes back.
    Live,
    /// Refused at RCPT with 550 5.1.1: a synchronous hard bounce.
    Unknown,
    /// Accepted, then an RFC 3464 DSN with 5.1.1: an asynchronous hard bounce.
    Gone,
    /// Refused once with 450 4.2.0, accepted on the retry.
    Greylisted,
    /// Accepted, then an RFC 3834 out-of-office reply (ignored).
    Away,
    /// Accepted, then an ARF spam complaint (unsubscribes).
    Complains,
    /// Refused at RCPT by the receiver's policy (550 5.7.1, a blocklisted
    /// sender): a block, never a prune.
    Refused,
    /// Accepted, then a DSN from a spam filter (5.7.1): a block.
    Filtered,
    /// Accepted, then a DSN saying the mailbox is full (5.2.2): soft, counted
    /// towards the score but not pruned by one.
    Full,
    /// On a domain that does not exist: `undeliverable` at import, never sent.
    NoDomain,
    /// On a domain with a null MX: `undeliverable` at import, never sent.
    NullMx,
}

impl Fate {
    fn prefix(self) -> &'static str {
        match self {
            Fate::Live => "reader",
            Fate::Unknown => "nobody",
            Fate::Gone => "moved",
            Fate::Greylisted => "greylisted",
            Fate::Away => "away",
            Fate::Complains => "grumpy",
            Fate::Refused => "refused",
            Fate::Filtered => "filtered",
            Fate::Full => "full",
            Fate::NoDomain => "lost",
            Fate::NullMx => "nomx",
        }
    }

    /// The recipient domain the domain check marks, if any.
    fn dead_domain(self) -> Option<&'static str> {
        match self {
            Fate::NoDomain => Some(NO_SUCH_DOMAIN),
            Fate::NullMx => Some(NULL_MX_DOMAIN),
            _ => None,
        }
    }

    /// Pruned as dead (status `bounced`) once the demo is over.
    fn is_dead(self) -> bool {
        matches!(self, Fate::Unknown | Fate::Gone)
    }
}

/// How many subscribers meet each fate: 3 % unknown at RCPT, 2 % bounced by
/// DSN, 1 % greylisted, 1 % refused by policy at RCPT (at least one each),
/// one auto-reply, one complaint, one spam-filter DSN, one mailbox-full DSN;
/// two on a domain that does not exist and one on a null-MX domain
/// (undeliverable, never sent); the rest are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    subscribers: u64,
    unknown: u64,
    gone: u64,
    greylisted: u64,
    away: u64,
    complains: u64,
    refused: u64,
    filtered: u64,
    full: u64,
    no_domain: u64,
    null_mx: u64,
}

impl Plan {
    fn for_subscribers(n: u64) -> Plan {
        Plan {
            subscribers: n,
            unknown: (n * 3 / 100).max(1),
            gone: (n * 2 / 100).max(1),
            greylisted: (n / 100).max(1),
            away: 1,
            complains: 1,
            refused: (n / 100).max(1),
            filtered: 1,
            full: 1,
            no_domain: 2,
            null_mx: 1,
        }
    }

    /// Subscribers the domain check marks `undeliverable`.
    fn undeliverable(&self) -> u64 {
        self.no_domain + self.null_mx
    }

    /// The fate of every subscriber, in a fixed pseudo-random order (the
    /// same for the same `n`).
    fn fates(&self) -> Vec<Fate> {
        let mut v = Vec::with_capacity(self.subscribers as usize);
        for (fate, count) in [
            (Fate::Unknown, self.unknown),
            (Fate::Gone, self.gone),
            (Fate::Greylisted, self.greylisted),
            (Fate::Away, self.away),
            (Fate::Complains, self.complains),
            (Fate::Refused, self.refused),
            (Fate::Filtered, self.filtered),
            (Fate::Full, self.full),
            (Fate::NoDomain, self.no_domain),
            (Fate::NullMx, self.null_mx),
        ] {
            v.extend(std::iter::repeat_n(fate, count as usize));
        }
        v.resize(self.subscribers as usize, Fate::Live);
        // Fisher–Yates with a fixed 64-bit LCG: deterministic, no dependency.
        let mut state: u64 = 0x5eed_de30;
        for i in (1..v.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = ((state >> 33) % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }

    fn dead(&self) -> u64 {
        self.unknown + self.gone
    }
}

/// One generated subscriber.
struct Person {
    email: String,
    name: String,
    fate: Fate,
}

fn people(plan: &Plan) -> Vec<Person> {
    const FIRST: [&str; 16] = [
        "Ada", "Bea", "Carl", "Dana", "Emil", "Fay", "Gus", "Hanna", "Ivo", "Jule", "Kai", "Lea",
        "Mats", "Nora", "Otto", "Pia",
    ];
    const LAST: [&str; 8] = [
        "Berger", "Fischer", "Hoffmann", "Klein", "Lange", "Meyer", "Schulz", "Wolf",
    ];
    plan.fates()
        .into_iter()
        .enumerate()
        .map(|(i, fate)| Person {
            email: format!(
                "{}{:04}@{}",
                fate.prefix(),
                i + 1,
                fate.dead_domain().unwrap_or(DOMAINS[i % DOMAINS.len()])
            ),
            name: format!(
                "{} {}",
                FIRST[i % FIRST.len()],
                LAST[(i / FIRST.len()) % LAST.len()]
            ),
            fate,
        })
        .collect()
}

/// The sink's rules for the plan (first match wins).
fn sink_rules() -> anyhow::Result<Vec<Rule>> {
    Ok(vec![
        Rule::reject(&format!(
            "{}*@*=550 5.1.1 User unknown",
            Fate::Unknown.prefix()
        ))?,
        Rule::bounce(&format!(
            "{}*@*=5.1.1 The mailbox does not exist",
            Fate::Gone.prefix()
        ))?,
        Rule::defer_first(
            &format!(
                "{}*@*=450 4.2.0 Greylisted, try again in a moment",
                Fate::Greylisted.prefix()
            ),
            1,
        )?,
        Rule::reject(&format!(
            "{}*@*=550 5.7.1 Service unavailable; client host blocked by local policy",
            Fate::Refused.prefix()
        ))?,
        Rule::bounce(&format!(
            "{}*@*=5.7.1 Message rejected as spam by the content filter",
            Fate::Filtered.prefix()
        ))?,
        Rule::bounce(&format!(
            "{}*@*=5.2.2 Mailbox full: quota exceeded",
            Fate::Full.prefix()
        ))?,
        Rule::auto_reply(&format!("{}*@*", Fate::Away.prefix()))?,
        Rule::complain(&format!("{}*@*", Fate::Complains.prefix()))?,
    ])
}

const SUBJECT: &str = "Rundbrief demo, issue 1: hello {{subscriber.name}}";

const CONTENT: &str = r#"# Hello {{default subscriber.name "there"}}

This is issue 1 of the **rundbrief demo** newsletter. It went to every
subscriber of the list *demo* through a local test mail server that played
the rest of the world:

- a few addresses do not exist and were refused at once (550 5.1.1);
- some were accepted and bounced a moment later with a delivery status notification;
- a few were greylisted and got through on the second try;
- one reader is on vacation, and one thinks this is spam;
- one receiver refused us by policy, one spam filter bounced this, and one
  mailbox was full: those readers stay subscribed.

Every bounce came back to its own signed return path, was parsed and
classified, and the dead addresses were pruned from the list, each with an
audit entry saying why.

Thanks for reading!
"#;

/// What the demo found, as printed (`--json` keeps these names).
#[derive(Debug, serde::Serialize)]
struct Summary {
    /// Messages the relay (the sink) accepted.
    sent: u64,
    /// Hard, soft and block bounces: synchronous (refused at RCPT) plus DSNs.
    bounced: u64,
    /// Subscribers of the list now `bounced`.
    pruned: u64,
    /// Seconds the send took (retries of greylisted deliveries included).
    seconds: f64,
    /// `sent` per second of `seconds`.
    msgs_per_s: f64,
    subscribers: u64,
    deferred_then_delivered: u64,
    rejected_at_rcpt: u64,
    bounced_by_dsn: u64,
    bounced_by_class: std::collections::BTreeMap<&'static str, u64>,
    complained: u64,
    unsubscribed: u64,
    auto_replies_ignored: u64,
    /// Subscribers whose bounces were blocks (the receiver refused us) or
    /// soft (a full mailbox) and who were pruned anyway: 0 is right.
    pruned_by_block_or_soft: u64,
    /// Subscribers the domain check marked `undeliverable` at import (a
    /// domain that does not exist, or a null MX): not bounced, not sent.
    undeliverable: u64,
    /// The campaign's deliveries skipped for them.
    skipped: u64,
    /// Seconds from start to the last processed bounce.
    elapsed_seconds: f64,
    dir: String,
    /// The second campaign, to two providers: the one the circuit breaker
    /// suspended when it started refusing us (550 5.7.1), and why.
    suspended_provider: Option<String>,
    suspension_reason: Option<String>,
    /// Its deliveries that wait for `campaign resume … --provider`.
    held_by_breaker: u64,
    /// Messages the other provider accepted meanwhile (all of its).
    sent_to_healthy_provider: u64,
}

/// What the second campaign showed.
struct ProviderPart {
    suspended: Option<(String, String)>,
    held: u64,
    healthy_sent: u64,
    /// Subscribers of the blocking provider pruned (a block never prunes: 0).
    pruned: u64,
}

pub async fn run(a: &DemoArgs, json: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if a.subscribers < MIN_SUBSCRIBERS {
        bail!(
            "--subscribers must be at least {MIN_SUBSCRIBERS} (one of each fate and some live ones)"
        );
    }
    let dir = demo_dir(a.dir.as_deref())?;
    let say = |s: String| {
        if !json {
            eprintln!("{s}");
        }
    };
    say(format!("demo directory: {}", dir.display()));
    let secret = Secret::generate();
    write_config(&dir, &secret)?;
    // The world's DNS, on loopback: the demo never asks a real resolver.
    let dns = rundbrief_dns::responder::Responder::start()
        .await
        .context("starting the demo's DNS responder on 127.0.0.1")?;
    for d in DOMAINS {
        dns.mx(d, 3600, &[(10, &format!("mx.{d}"))]);
    }
    dns.mx(NULL_MX_DOMAIN, 3600, &[(0, ".")]);
    dns.mx(
        BLOCKING_DOMAIN,
        3600,
        &[(10, &format!("mx.{BLOCKING_DOMAIN}"))],
    );
    let mut cfg = demo_config(&dir, secret);
    cfg.dns.servers = vec![dns.addr().to_string()];
    cfg.dns.check = true;
    let app = crate::cmd::open_app(&cfg, Arc::new(rundbrief_app::NoObserver)).await?;
    let result = run_in(&app, &dir, a.subscribers, json, started, &say).await;
    app.store.close().await.context("closing the database")?;
    result
}

async fn run_in(
    app: &App,
    dir: &Path,
    subscribers: u64,
    json: bool,
    started: Instant,
    say: &impl Fn(String),
) -> anyhow::Result<ExitCode> {
    let (store, cfg) = (&app.store, app.config.as_ref());
    let plan = Plan::for_subscribers(subscribers);
    let people = people(&plan);

    // 1. The list and its subscribers, through the import path and its
    // domain check.
    let checker = app
        .domain_checker()?
        .context("the demo runs the domain check")?;
    import_people(store, cfg, &checker, &people).await?;
    say(format!(
        "list `{LIST}`: {} subscribers ({} unknown, {} that bounce later, {} greylisted, {} on vacation, {} who complain, {} on a domain that takes no mail)",
        plan.subscribers,
        plan.unknown,
        plan.gone,
        plan.greylisted,
        plan.away,
        plan.complains,
        plan.undeliverable()
    ));

    // 2. The bounce endpoint and the sink, on free loopback ports.
    let stop = CancellationToken::new();
    let endpoint = start_endpoint(
        app,
        &EndpointOptions {
            listen: "127.0.0.1:0".parse()?,
            max_size: 10 << 20,
            max_connections: Limits::default().max_connections,
            parse: false,
            starttls: false,
        },
        stop.clone(),
    )
    .await
    .context("starting the bounce endpoint on 127.0.0.1")?;
    let (endpoint_addr, stored) = (endpoint.addr, Arc::clone(&endpoint.stored));
    let sink = Sink::new(SinkConfig {
        rules: sink_rules()?,
        bounce_to: Some(endpoint_addr),
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })?;
    let sink_stats = sink.stats();
    let sink_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the sink on 127.0.0.1")?;
    let sink_addr = sink_listener.local_addr()?;
    let sink_task = tokio::spawn(sink.run(sink_listener, Limits::default(), stop.clone()));
    say(format!(
        "test sink (the world) on {sink_addr}, bounce endpoint on {endpoint_addr}"
    ));

    let outcome = async {
        // 3. The campaign: Markdown through the default layout.
        rundbrief_render::check_template("content", CONTENT)?;
        rundbrief_render::check_template("subject", SUBJECT)?;
        let campaign = store
            .create_campaign(&NewCampaign {
                name: CAMPAIGN.into(),
                lists: vec![LIST.into()],
                subject: SUBJECT.into(),
                content: CONTENT.into(),
                content_kind: rundbrief_core::ContentKind::Markdown,
                layout: None,
                from: None,
                relay: None,
            })
            .await?;
        say(format!("sending `{CAMPAIGN}` to {} subscribers…", plan.subscribers));
        let report = send_foreground(
            app,
            CAMPAIGN,
            &SendOptions {
                relay: Some(format!("smtp://{sink_addr}")),
                pool: Some(POOL),
                insecure: false,
                wait: true,
                strict: false,
                no_dns_check: false,
            },
            !json,
        )
        .await
        .context("sending the demo campaign")?;

        // 4. Wait until every report the sink sends has been stored and processed.
        let expected = plan.gone + plan.away + plan.complains + plan.filtered + plan.full;
        say(format!(
            "sent in {:.1} s; waiting for {expected} bounce(s), auto-replies and complaints to come back…",
            report.seconds
        ));
        wait_for_reports(app, &sink_stats, &stored, expected).await?;
        anyhow::Ok((campaign.id, report))
    }
    .await;
    stop.cancel();
    let sink_done = sink_task.await;
    let endpoint_done = endpoint.finish().await;
    let (campaign_id, report) = outcome?;
    sink_done.context("the sink task failed")??;
    endpoint_done.context("the bounce endpoint failed")?;

    // 5. What happened, from the database, checked against the plan.
    let sink = sink_stats.snapshot();
    let counts = store.campaign_counts(campaign_id).await?;
    let parsed = store
        .bounces(&BounceQuery {
            state: Some(BounceState::Parsed),
            ..BounceQuery::default()
        })
        .await?;
    let class_of = |c: &str| {
        parsed
            .iter()
            .filter(|b| b.class.as_deref() == Some(c))
            .count() as u64
    };
    // What the world saw comes from the sink (it is ours, in this process):
    // recipients refused at RCPT, messages accepted.
    // Refusals at RCPT by class, read from each refused delivery's reply.
    let mut sync = std::collections::BTreeMap::<&'static str, u64>::new();
    for e in store.campaign_errors(campaign_id, 100).await? {
        if e.state != rundbrief_core::DeliveryState::Rejected {
            continue;
        }
        if let Some(reply) = e.error.as_deref().and_then(Reply::from_recorded) {
            let enhanced = reply.enhanced.map(|s| s.to_string());
            let (class, _) =
                rundbrief_bounce::classify_reply(reply.code, enhanced.as_deref(), &reply.text);
            *sync.entry(class.as_str()).or_default() += e.count;
        }
    }
    let mut by_class = std::collections::BTreeMap::new();
    for class in ["hard", "soft", "block"] {
        by_class.insert(
            class,
            sync.get(class).copied().unwrap_or(0) + class_of(class),
        );
    }
    let bounced_by_dsn = class_of("hard") + class_of("soft") + class_of("block");
    let with_status = |s: SubscriberStatus| async move {
        let rows = store
            .subscribers(&SubscriberQuery {
                list: Some(LIST.into()),
                status: Some(StatusFilter::Subscriber(s)),
                after: None,
                limit: 0,
            })
            .await?;
        anyhow::Ok(
            rows.into_iter()
                .map(|r| r.subscriber.email)
                .collect::<BTreeSet<_>>(),
        )
    };
    let pruned = with_status(SubscriberStatus::Bounced).await?;
    let pruned_by_block_or_soft = people
        .iter()
        .filter(|p| matches!(p.fate, Fate::Refused | Fate::Filtered | Fate::Full))
        .filter(|p| pruned.contains(&p.email))
        .count() as u64;
    let unsubscribed = with_status(SubscriberStatus::Unsubscribed).await?;
    let undeliverable = with_status(SubscriberStatus::Undeliverable).await?;
    say(format!(
        "second campaign `{PROVIDER_CAMPAIGN}`: {PER_PROVIDER} subscribers at {HEALTHY_DOMAIN} and \
         {PER_PROVIDER} at {BLOCKING_DOMAIN}, which blocks us after {ACCEPTED_BEFORE_BLOCK} messages…"
    ));
    let part = provider_part(app).await?;
    let summary = Summary {
        sent: sink.messages,
        bounced: by_class.values().sum(),
        pruned: pruned.len() as u64,
        seconds: report.seconds,
        msgs_per_s: sink.messages as f64 / report.seconds.max(1e-9),
        subscribers: plan.subscribers,
        deferred_then_delivered: sink.deferred,
        rejected_at_rcpt: sink.rejected,
        bounced_by_dsn,
        bounced_by_class: by_class,
        complained: class_of("complaint"),
        unsubscribed: unsubscribed.len() as u64,
        auto_replies_ignored: parsed
            .iter()
            .filter(|b| {
                b.kind.as_deref() == Some("auto-reply") && b.class.as_deref() == Some("ignore")
            })
            .count() as u64,
        pruned_by_block_or_soft,
        undeliverable: undeliverable.len() as u64,
        skipped: counts.skipped,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        dir: dir.display().to_string(),
        suspended_provider: part.suspended.as_ref().map(|(p, _)| p.clone()),
        suspension_reason: part.suspended.as_ref().map(|(_, r)| r.clone()),
        held_by_breaker: part.held,
        sent_to_healthy_provider: part.healthy_sent,
    };
    let mut problems = reconcile(
        &plan,
        &people,
        &summary,
        &counts,
        report.state,
        &pruned,
        &unsubscribed,
        &undeliverable,
    );
    if summary.suspended_provider.as_deref() != Some(BLOCKING_PROVIDER) {
        problems.push(format!(
            "the circuit breaker suspended {:?}, expected {BLOCKING_PROVIDER}",
            summary.suspended_provider
        ));
    }
    if part.healthy_sent != PER_PROVIDER as u64 || part.held == 0 || part.pruned != 0 {
        problems.push(format!(
            "second campaign: {} of {PER_PROVIDER} sent to {HEALTHY_DOMAIN}, {} held for \
             {BLOCKING_PROVIDER}, {} of its subscribers pruned (expected all, some, none)",
            part.healthy_sent, part.held, part.pruned
        ));
    }

    let dead_example = pruned.iter().next().cloned();
    let live_example = people
        .iter()
        .find(|p| p.fate == Fate::Live)
        .map(|p| p.email.clone());
    if json {
        output::json(&summary)?;
    } else {
        print_summary(
            &summary,
            dir,
            dead_example.as_deref(),
            live_example.as_deref(),
        );
    }
    if !problems.is_empty() {
        bail!(
            "the demo's numbers do not reconcile:\n  - {}",
            problems.join("\n  - ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The second campaign: a list at two providers, the sink refusing the
/// blocking one with 550 5.7.1 after a few messages; the circuit breaker
/// suspends it while the other provider gets all of its mail. The campaign
/// is left running with the held deliveries, so that `campaign status` and
/// `campaign resume … --provider` can be tried on it.
async fn provider_part(app: &App) -> anyhow::Result<ProviderPart> {
    let store = &app.store;
    store
        .create_list(PROVIDER_LIST, Some("rundbrief demo, two providers"))
        .await?;
    let mut import = store
        .begin_import(
            PROVIDER_LIST,
            ImportOptions {
                source: "rundbrief demo".into(),
                ..ImportOptions::default()
            },
        )
        .await?;
    let mut rows = Vec::with_capacity(2 * PER_PROVIDER);
    for i in 0..PER_PROVIDER {
        for domain in [HEALTHY_DOMAIN, BLOCKING_DOMAIN] {
            let email = format!("member{:04}@{domain}", i + 1);
            rows.push(ImportRow {
                line: rows.len() as u64 + 2,
                address: Address::parse(&email)
                    .with_context(|| format!("generated address {email}"))?,
                name: Some(format!("Member {}", i + 1)),
                attributes: Attributes::new(),
            });
        }
    }
    import.write_batch(rows).await?;
    import.finish().await?;
    store
        .create_campaign(&NewCampaign {
            name: PROVIDER_CAMPAIGN.into(),
            lists: vec![PROVIDER_LIST.into()],
            subject: SUBJECT.into(),
            content: CONTENT.into(),
            content_kind: rundbrief_core::ContentKind::Markdown,
            layout: None,
            from: None,
            relay: None,
        })
        .await?;
    let sink = Sink::new(SinkConfig {
        rules: vec![Rule::refuse_after(
            &format!(
                "{ACCEPTED_BEFORE_BLOCK}:*@{BLOCKING_DOMAIN}=550 5.7.1 Service refused: \
                 the sender's reputation is too low"
            ),
            false,
        )?],
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the second sink on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    // A provider refusing us refuses every message on one connection: more
    // refusals than the default error budget, after which the sink would
    // hang up (and the sends be deferrals, not refusals).
    let limits = Limits {
        max_errors: 100_000,
        ..Limits::default()
    };
    let task = tokio::spawn(sink.run(listener, limits, stop.clone()));
    let sent = app
        .send_foreground(
            PROVIDER_CAMPAIGN,
            &SendOptions {
                relay: Some(format!("smtp://{addr}")),
                pool: Some(POOL),
                insecure: false,
                wait: false,
                strict: false,
                no_dns_check: false,
            },
            &CancellationToken::new(),
            &|_, _| {},
        )
        .await;
    stop.cancel();
    task.await.context("the second sink failed")??;
    sent.context("sending the second campaign")?;
    let c = store.campaign(PROVIDER_CAMPAIGN).await?;
    let status = rundbrief_app::campaigns::status(app, &c).await?;
    let mut part = ProviderPart {
        suspended: None,
        held: 0,
        healthy_sent: 0,
        pruned: 0,
    };
    for p in status["providers"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        if p["state"] == "suspended" {
            part.suspended = Some((
                name.to_string(),
                p["reason"].as_str().unwrap_or_default().to_string(),
            ));
            part.held = p["pending"].as_u64().unwrap_or(0);
        }
        if name == HEALTHY_DOMAIN {
            part.healthy_sent = p["sent"].as_u64().unwrap_or(0);
        }
    }
    part.pruned = store
        .subscribers(&SubscriberQuery {
            list: Some(PROVIDER_LIST.into()),
            status: Some(StatusFilter::Subscriber(SubscriberStatus::Bounced)),
            after: None,
            limit: 0,
        })
        .await?
        .len() as u64;
    Ok(part)
}

/// Creates the list and imports `people` into it in import-sized batches,
/// with the domain check as `rundbrief import` runs it.
async fn import_people(
    store: &Store,
    cfg: &Config,
    checker: &DomainChecker,
    people: &[Person],
) -> anyhow::Result<()> {
    store.create_list(LIST, Some("rundbrief demo")).await?;
    let mut import = store
        .begin_import(
            LIST,
            ImportOptions {
                source: "rundbrief demo".into(),
                ..ImportOptions::default()
            },
        )
        .await?;
    for (n, chunk) in people.chunks(cfg.import.batch_size.max(1)).enumerate() {
        let rows = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut attributes = Attributes::new();
                attributes.insert("city".into(), "Demotown".into());
                Ok(ImportRow {
                    line: (n * cfg.import.batch_size.max(1) + i + 2) as u64,
                    address: Address::parse(&p.email)
                        .with_context(|| format!("generated address {}", p.email))?,
                    name: Some(p.name.clone()),
                    attributes,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let undeliverable = checker.check_rows(&rows).await;
        import.write_batch(rows).await?;
        checker.mark_rows(store, &undeliverable).await?;
    }
    import.finish().await?;
    Ok(())
}

/// Parses what the endpoint stored until `expected` messages are processed.
///
/// # Errors
/// When the sink could not deliver a report, or after [`BOUNCE_WAIT`].
async fn wait_for_reports(
    app: &App,
    sink_stats: &SinkStats,
    stored: &Notify,
    expected: u64,
) -> anyhow::Result<()> {
    let (store, bounces) = (&app.store, app.bounces());
    let deadline = tokio::time::Instant::now() + BOUNCE_WAIT;
    loop {
        bounces.process_pending().await?;
        let processed = store
            .bounces(&BounceQuery {
                state: Some(BounceState::Parsed),
                ..BounceQuery::default()
            })
            .await?
            .len() as u64;
        if processed >= expected {
            break;
        }
        let c = sink_stats.snapshot();
        if c.bounces_failed > 0 {
            bail!(
                "the sink could not deliver {} report(s) to the bounce endpoint (run with -v for why)",
                c.bounces_failed
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "only {processed} of {expected} bounce messages came back within {} s (sink sent {} DSN(s), {} auto-reply(ies), {} complaint(s))",
                BOUNCE_WAIT.as_secs(),
                c.bounces_sent,
                c.replies_sent,
                c.complaints_sent
            );
        }
        tokio::select! {
            _ = stored.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    Ok(())
}

/// Everything that must hold after the demo; each broken rule is one line.
#[allow(clippy::too_many_arguments)]
fn reconcile(
    plan: &Plan,
    people: &[Person],
    s: &Summary,
    counts: &rundbrief_store::CampaignCounts,
    state: CampaignState,
    pruned: &BTreeSet<String>,
    unsubscribed: &BTreeSet<String>,
    undeliverable: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    check(
        state == CampaignState::Finished,
        format!("the campaign ended `{state}`, not finished"),
    );
    check(
        counts.total == plan.subscribers,
        format!(
            "{} deliveries for {} subscribers",
            counts.total, plan.subscribers
        ),
    );
    check(
        counts.failed == 0 && counts.deferred == 0 && counts.pending == 0,
        format!(
            "{} failed, {} still deferred and {} pending deliveries",
            counts.failed, counts.deferred, counts.pending
        ),
    );
    let refused_at_rcpt = plan.unknown + plan.refused;
    let to_send = plan.subscribers - refused_at_rcpt - plan.undeliverable();
    check(
        s.sent == to_send,
        format!("the sink accepted {} messages, expected {to_send}", s.sent),
    );
    let on_dead_domains: BTreeSet<String> = people
        .iter()
        .filter(|p| p.fate.dead_domain().is_some())
        .map(|p| p.email.clone())
        .collect();
    check(
        *undeliverable == on_dead_domains,
        format!(
            "undeliverable {undeliverable:?}, expected the addresses on dead domains {on_dead_domains:?}"
        ),
    );
    check(
        counts.skipped == plan.undeliverable(),
        format!(
            "{} deliveries skipped, expected {}",
            counts.skipped,
            plan.undeliverable()
        ),
    );
    check(
        s.rejected_at_rcpt == refused_at_rcpt,
        format!(
            "{} refused at RCPT, expected {}",
            s.rejected_at_rcpt, refused_at_rcpt
        ),
    );
    let by_dsn = plan.gone + plan.filtered + plan.full;
    check(
        s.bounced_by_dsn == by_dsn,
        format!("{} bounced by DSN, expected {}", s.bounced_by_dsn, by_dsn),
    );
    let class = |c: &str| s.bounced_by_class.get(c).copied().unwrap_or(0);
    check(
        (class("hard"), class("block"), class("soft"))
            == (plan.dead(), plan.refused + plan.filtered, plan.full),
        format!(
            "bounces by class hard {}, block {}, soft {}; expected {}, {}, {}",
            class("hard"),
            class("block"),
            class("soft"),
            plan.dead(),
            plan.refused + plan.filtered,
            plan.full
        ),
    );
    check(
        s.pruned_by_block_or_soft == 0,
        format!(
            "{} subscriber(s) pruned for a block or a soft bounce",
            s.pruned_by_block_or_soft
        ),
    );
    check(
        s.deferred_then_delivered == plan.greylisted,
        format!(
            "{} deferred then delivered, expected {}",
            s.deferred_then_delivered, plan.greylisted
        ),
    );
    check(
        s.auto_replies_ignored == plan.away,
        format!(
            "{} auto-replies ignored, expected {}",
            s.auto_replies_ignored, plan.away
        ),
    );
    check(
        s.complained == plan.complains,
        format!("{} complaints, expected {}", s.complained, plan.complains),
    );
    let dead: BTreeSet<String> = people
        .iter()
        .filter(|p| p.fate.is_dead())
        .map(|p| p.email.clone())
        .collect();
    let missed: Vec<_> = dead.difference(pruned).take(5).cloned().collect();
    check(
        missed.is_empty(),
        format!("dead addresses not pruned: {}", missed.join(", ")),
    );
    let wrong: Vec<_> = pruned.difference(&dead).take(5).cloned().collect();
    check(
        wrong.is_empty(),
        format!("live addresses pruned: {}", wrong.join(", ")),
    );
    check(
        pruned.len() as u64 == plan.dead(),
        format!("{} pruned, expected {}", pruned.len(), plan.dead()),
    );
    let complainers: BTreeSet<String> = people
        .iter()
        .filter(|p| p.fate == Fate::Complains)
        .map(|p| p.email.clone())
        .collect();
    check(
        *unsubscribed == complainers,
        format!(
            "unsubscribed {:?}, expected the complainer(s) {:?}",
            unsubscribed, complainers
        ),
    );
    problems
}

fn print_summary(
    s: &Summary,
    dir: &Path,
    pruned_example: Option<&str>,
    live_example: Option<&str>,
) {
    let class = |c: &str| s.bounced_by_class.get(c).copied().unwrap_or(0);
    println!();
    println!(
        "rundbrief demo: {} subscribers on list `{LIST}`",
        s.subscribers
    );
    println!(
        "  sent                     {:>6}  in {:.2} s ({:.0} msgs/s)",
        s.sent, s.seconds, s.msgs_per_s
    );
    println!(
        "  deferred, then delivered {:>6}  (greylisted once, retried)",
        s.deferred_then_delivered
    );
    println!(
        "  bounced                  {:>6}  ({} refused at RCPT, {} by DSN; hard {}, soft {}, block {})",
        s.bounced,
        s.rejected_at_rcpt,
        s.bounced_by_dsn,
        class("hard"),
        class("soft"),
        class("block")
    );
    println!(
        "  pruned                   {:>6}  (every dead address, no live one)",
        s.pruned
    );
    println!(
        "  block and soft, pruned   {:>6}  (refused by policy, spam filter, mailbox full: still subscribed)",
        s.pruned_by_block_or_soft
    );
    println!(
        "  undeliverable            {:>6}  (domain does not exist or has a null MX: not sent, not bounced)",
        s.undeliverable
    );
    println!(
        "  complained               {:>6}  (ARF report: unsubscribed)",
        s.complained
    );
    println!(
        "  auto-replies ignored     {:>6}  (out of office: still subscribed)",
        s.auto_replies_ignored
    );
    println!(
        "  elapsed                  {:>8.2} s  (bounces included)",
        s.elapsed_seconds
    );
    if let Some(p) = &s.suspended_provider {
        println!();
        println!("second campaign `{PROVIDER_CAMPAIGN}`, to two providers:");
        println!(
            "  suspended                {p}: {}",
            s.suspension_reason.as_deref().unwrap_or("")
        );
        println!(
            "  held                     {:>6}  (wait for `campaign resume {PROVIDER_CAMPAIGN} --provider {p}`; nobody pruned)",
            s.held_by_breaker
        );
        println!(
            "  sent to {HEALTHY_DOMAIN:<16} {:>6}  (the other provider got all of its mail)",
            s.sent_to_healthy_provider
        );
    }
    println!();
    let exe = program_name();
    let cd = format!("cd {}", shell_quote(&dir.display().to_string()));
    println!(
        "Everything is in {} (rundbrief.db and rundbrief.toml). Try:",
        dir.display()
    );
    println!("  {cd}");
    println!("  {exe} sub ls --status bounced --list {LIST}");
    if let Some(addr) = pruned_example {
        println!("  {exe} sub show {addr}");
    }
    println!("  {exe} campaign status {CAMPAIGN}");
    if let Some(addr) = live_example {
        println!("  {exe} campaign preview {CAMPAIGN} --to {addr}");
    }
    println!("  {exe} bounce ls");
    println!("  {exe} campaign status {PROVIDER_CAMPAIGN}");
}

/// `rundbrief` when that is what the shell finds, else this binary's path
/// (e.g. after `cargo run`).
fn program_name() -> String {
    let me = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|p| {
            let candidate = p.join("rundbrief");
            candidate.is_file()
                && me.as_ref().is_some_and(|me| {
                    std::fs::canonicalize(&candidate).ok() == std::fs::canonicalize(me).ok()
                })
        })
    });
    match me {
        Some(me) if !on_path => shell_quote(&me.display().to_string()),
        _ => "rundbrief".to_string(),
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The demo's directory: `--dir` (created if missing, refused if it holds a
/// database already) or a new one under the temporary directory.
fn demo_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if d.join("rundbrief.db").exists() {
                bail!(
                    "{} holds a rundbrief.db already; the demo needs a fresh directory (omit --dir for a new temporary one)",
                    d.display()
                );
            }
            d.to_path_buf()
        }
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
            let base = std::env::temp_dir();
            let mut n = 0;
            loop {
                let d = base.join(format!("rundbrief-demo-{stamp}-{}-{n}", std::process::id()));
                match std::fs::create_dir(&d) {
                    Ok(()) => break d,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                    Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
                }
            }
        }
    };
    std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))
}

/// The configuration the demo runs with, built in code (no file is read).
fn demo_config(dir: &Path, secret: Secret) -> Config {
    let mut cfg = Config {
        secret: Some(secret),
        ..Config::default()
    };
    cfg.database.url = format!("sqlite://{}?mode=rwc", dir.join("rundbrief.db").display());
    cfg.sending.from = Some(FROM.into());
    cfg.sending.bounce_domain = Some(BOUNCE_DOMAIN.into());
    cfg.sending.public_url = Some(PUBLIC_URL.into());
    // Only loopback is involved: no need to be gentle.
    cfg.sending.rate = 100_000;
    cfg.sending.domain_rate = 100_000;
    cfg.sending.domain_concurrency = POOL * 4;
    // Greylisted deliveries come back after the shortest retry delay.
    cfg.sending.retry_base_secs = 1;
    cfg.sending.retry_max_secs = 2;
    cfg.shaping.providers.insert(
        BLOCKING_PROVIDER.into(),
        rundbrief_core::config::ProviderConfig {
            domains: vec![BLOCKING_DOMAIN.into()],
            ..Default::default()
        },
    );
    cfg
}

/// The same settings as a rundbrief.toml in `dir`, so that the commands the
/// demo suggests work there (private: it holds the secret).
fn write_config(dir: &Path, secret: &Secret) -> anyhow::Result<()> {
    let path = dir.join(crate::config::DEFAULT_FILE);
    let secret = String::from_utf8_lossy(secret.expose()).into_owned();
    let text = format!(
        "# Written by `rundbrief demo`: the settings the demo ran with.\n\
         secret = \"{secret}\"\n\n\
         [database]\n\
         url = \"sqlite://rundbrief.db?mode=rwc\"\n\n\
         [sending]\n\
         from = \"{FROM}\"\n\
         bounce_domain = \"{BOUNCE_DOMAIN}\"\n\
         public_url = \"{PUBLIC_URL}\"\n\n\
         # The demo's DNS responder has stopped: no domain check here, so\n\
         # no command in this directory asks a real resolver.\n\
         [dns]\n\
         check = false\n\n\
         # The second campaign's provider that blocks us (a group of its own).\n\
         [shaping.providers.{BLOCKING_PROVIDER}]\n\
         domains = [\"{BLOCKING_DOMAIN}\"]\n"
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_shares() {
        let p = Plan::for_subscribers(2000);
        assert_eq!(
            (p.unknown, p.gone, p.greylisted, p.away, p.complains),
            (60, 40, 20, 1, 1)
        );
        let small = Plan::for_subscribers(10);
        assert_eq!((small.unknown, small.gone, small.greylisted), (1, 1, 1));
    }

    #[test]
    fn fates_are_deterministic_and_complete() {
        let p = Plan::for_subscribers(60);
        let a = people(&p);
        let b = people(&p);
        assert_eq!(
            a.iter().map(|x| &x.email).collect::<Vec<_>>(),
            b.iter().map(|x| &x.email).collect::<Vec<_>>()
        );
        let count = |f: Fate| a.iter().filter(|x| x.fate == f).count() as u64;
        assert_eq!(count(Fate::Unknown), p.unknown);
        assert_eq!(count(Fate::Gone), p.gone);
        assert_eq!(count(Fate::Refused), p.refused);
        assert_eq!(
            count(Fate::Live),
            60 - p.dead()
                - p.greylisted
                - p.refused
                - p.filtered
                - p.full
                - p.no_domain
                - p.null_mx
                - 2
        );
        let rules = sink_rules().expect("valid rules");
        for person in &a {
            let first = rules.iter().find(|r| r.matches(&person.email));
            // Undeliverable ones never reach the sink: no rule either.
            assert_eq!(
                first.is_none(),
                matches!(person.fate, Fate::Live | Fate::NoDomain | Fate::NullMx),
                "{}",
                person.email
            );
        }
    }
}
