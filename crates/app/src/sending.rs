//! Sending a campaign: the scheduler's hooks (render, DKIM, bounce policy on
//! a synchronous 5xx, the observer), the runner built from the
//! configuration, the foreground send that `campaign send`, `resume`,
//! `retry-failed --send` and the demo use, and a test send.

use crate::bounces::{BounceSource, Bounces, ClassifiedBounce};
use crate::campaigns::{Prepared, check_preflight, prepare_first, prepare_stored};
use crate::error::{AppError, Reason, Result};
use crate::{App, Observer};
use rundbrief_core::{CampaignState, Config, DeliveryState};
use rundbrief_scheduler::{Ended, HookError, Hooks, RetryPolicy, RunConfig, Runner};
use rundbrief_sender::{SendError, Sender, Transport};
use rundbrief_store::{CampaignContent, PendingDelivery};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How a campaign is sent.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Relay (name or URL) overriding the campaign's and the config's.
    pub relay: Option<String>,
    /// SMTP connections.
    pub pool: Option<usize>,
    /// Accept invalid TLS certificates (test relays only).
    pub insecure: bool,
    /// Wait for deferred deliveries' retries until each has a final outcome.
    pub wait: bool,
    /// Refuse to start when the pre-flight checks warn.
    pub strict: bool,
    /// Skip the recipient-domain check before sending (`--no-dns-check`);
    /// it also does not run when `[dns] check = false`.
    pub no_dns_check: bool,
}

/// What a foreground send did.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub counts: rundbrief_store::CampaignCounts,
    pub state: CampaignState,
    pub ended: Ended,
    pub seconds: f64,
    /// Deliveries that reached a final outcome in this run.
    pub sent_now: u64,
    /// Deliveries still claimed by another (or a dead) worker, and when the
    /// last claim ends: sent by whoever runs the campaign after that.
    pub leased: u64,
    pub leased_until: Option<chrono::DateTime<chrono::Utc>>,
    /// What the domain check before this send did; `None` when it did not run.
    pub dns_check: Option<crate::domains::CampaignCheck>,
}

/// Lease, batch and retry settings from `[sending]`.
pub fn run_config(cfg: &Config, pool: usize, wait: bool) -> RunConfig {
    let s = &cfg.sending;
    let mut rc = RunConfig::new(worker_name(), pool.max(1) * 2);
    rc.lease = Duration::from_secs(s.lease_secs);
    rc.retry = RetryPolicy {
        base: Duration::from_secs(s.retry_base_secs),
        max: Duration::from_secs(s.retry_max_secs),
        max_age: Duration::from_secs(s.max_age_secs),
    };
    rc.wait = wait;
    let b = &cfg.breaker;
    rc.breaker = Some(rundbrief_scheduler::BreakerLimits {
        window: b.window,
        block_ratio: b.block_ratio,
        complaint_ratio: b.complaint_ratio,
        min_sample: b.min_sample,
    });
    rc
}

/// This process's name in delivery leases.
fn worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!(
        "{host}/{}/{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

/// Renders each delivery (and signs it), turns 5xx replies into bounce
/// decisions, and tells the observer every outcome.
pub struct CampaignHooks {
    /// The campaign compiled per list, the first list first (the fallback
    /// when a recipient is on none of them any more).
    prepared: Vec<(uuid::Uuid, Prepared)>,
    /// Signs each rendered message when `[dkim]` is configured.
    dkim: Option<Arc<rundbrief_dkim::DkimSigner>>,
    bounces: Bounces,
    store: rundbrief_store::Store,
    observer: Arc<dyn Observer>,
    clock: Arc<dyn rundbrief_scheduler::Clock>,
    /// The campaign's name, for the breaker's metric.
    campaign: String,
}

impl CampaignHooks {
    /// Hooks for a stored campaign: compiled once per list.
    ///
    /// # Errors
    /// The campaign does not compile, or the DKIM key cannot be loaded.
    pub fn new(app: &App, c: &CampaignContent) -> Result<Self> {
        // One compiled template per list: a recipient's message names a
        // list of the campaign that they are on (List-Id, footer, link).
        let mut prepared = Vec::with_capacity(c.list_ids.len().max(1));
        for ((id, name), label) in c.list_ids.iter().zip(&c.campaign.lists).zip(&c.list_labels) {
            prepared.push((*id, prepare_stored(&app.config, c, name, Some(label))?));
        }
        if prepared.is_empty() {
            prepared.push((uuid::Uuid::nil(), prepare_first(&app.config, c)?));
        }
        Ok(CampaignHooks {
            prepared,
            dkim: app.dkim()?,
            bounces: app.bounces(),
            store: app.store.clone(),
            observer: Arc::clone(&app.observer),
            clock: Arc::clone(&app.clock),
            campaign: c.campaign.name.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Hooks for CampaignHooks {
    fn render(&self, d: &PendingDelivery) -> Result<Vec<u8>, HookError> {
        let (list_id, prepared) = d
            .list_id
            .and_then(|l| self.prepared.iter().find(|(id, _)| *id == l))
            .unwrap_or(&self.prepared[0]);
        let recipient = prepared.recipient(
            d.email.clone(),
            d.name.clone(),
            d.attributes.clone(),
            d.subscriber_id,
            *list_id,
            d.delivery_id,
        );
        let bytes = prepared
            .renderer
            .render(&recipient, self.clock.now())
            .map_err(|e| HookError::Render(e.without_recipient()))?;
        // A message that cannot be signed is not sent unsigned: the
        // delivery fails with the reason (the same rule as confirmation mails).
        match &self.dkim {
            Some(signer) => signer
                .sign(&bytes)
                .map_err(|e| HookError::Sign(e.to_string())),
            None => Ok(bytes),
        }
    }

    async fn rejected(&self, d: &PendingDelivery, error: &SendError) -> Result<(), HookError> {
        // A 5xx at RCPT or DATA is a synchronous bounce: same
        // classification and scoring as a DSN.
        let Some(reply) = error.reply() else {
            return Ok(());
        };
        let enhanced = reply.enhanced.map(|e| e.to_string());
        // The step is known here: "550 User unknown" answering RCPT names
        // the recipient; after DATA it may be a filter.
        let stage = match error.step() {
            rundbrief_sender::SmtpStep::Rcpt => rundbrief_bounce::Stage::Rcpt,
            rundbrief_sender::SmtpStep::Data => rundbrief_bounce::Stage::Data,
            rundbrief_sender::SmtpStep::Mail => rundbrief_bounce::Stage::MailFrom,
            _ => rundbrief_bounce::Stage::Unknown,
        };
        let (class, rule, evidence) = rundbrief_bounce::classify_reply_evidence(
            reply.code,
            enhanced.as_deref(),
            &reply.text,
            stage,
        );
        let target = self
            .store
            .delivery_target(d.delivery_id)
            .await
            .map_err(|e| HookError::Policy(e.to_string()))?;
        if let Some(target) = target {
            self.bounces
                .apply(
                    &target,
                    &ClassifiedBounce {
                        class,
                        status: enhanced.as_deref().unwrap_or(""),
                        rule,
                        // The deciding words, else the whole reply text.
                        evidence: evidence
                            .phrase
                            .as_deref()
                            .or(Some(reply.text.as_str()).filter(|t| !t.is_empty())),
                        source: BounceSource::Sending(error.step().as_str()),
                    },
                )
                .await
                .map_err(|e| {
                    let mut s = e.to_string();
                    if let Some(c) = std::error::Error::source(&e) {
                        s.push_str(&format!(": {c}"));
                    }
                    HookError::Policy(s)
                })?;
        }
        Ok(())
    }

    fn observe(&self, domain: &str, state: DeliveryState, latency: Duration) {
        self.observer.delivery(domain, state, latency);
    }

    /// A refusal is a block when the bounce rules say the receiver refused
    /// *us* (policy, reputation, rate: class `block`), at RCPT, DATA or a
    /// 4xx deferral alike.
    fn is_block(&self, error: &SendError) -> bool {
        let Some(reply) = error.reply() else {
            return false;
        };
        let enhanced = reply.enhanced.map(|e| e.to_string());
        let stage = match error.step() {
            rundbrief_sender::SmtpStep::Rcpt => rundbrief_bounce::Stage::Rcpt,
            rundbrief_sender::SmtpStep::Data => rundbrief_bounce::Stage::Data,
            rundbrief_sender::SmtpStep::Mail => rundbrief_bounce::Stage::MailFrom,
            _ => rundbrief_bounce::Stage::Unknown,
        };
        let (class, _, _) = rundbrief_bounce::classify_reply_evidence(
            reply.code,
            enhanced.as_deref(),
            &reply.text,
            stage,
        );
        class == rundbrief_bounce::BounceClass::Block
    }

    fn tripped(&self, provider: Option<&str>, _reason: &str) {
        self.observer.breaker_tripped(&self.campaign, provider);
    }
}

impl App {
    /// The scheduler's runner for one campaign: relay, sender, throttle, hooks.
    ///
    /// # Errors
    /// No usable relay, a campaign that does not compile, a DKIM key that
    /// cannot be loaded.
    pub fn runner_for(&self, c: &CampaignContent, opts: &SendOptions) -> Result<Runner> {
        let given = opts
            .relay
            .as_deref()
            .or(c.relay.as_deref())
            .or(self.config.relay.as_deref());
        let names = given
            .map(rundbrief_core::config::relay_list)
            .unwrap_or_default();
        // Several relays, or one with a quota: the relay pool decides per
        // message. One relay without a quota goes the way it always went.
        if names.len() > 1
            || names
                .iter()
                .any(|n| self.config.relays.get(*n).is_some_and(|r| r.has_quota()))
        {
            return self.pooled_runner(c, opts, &names);
        }
        let mut relay = self.relay(opts.relay.as_deref().or(c.relay.as_deref()))?;
        if let Some(n) = opts.pool {
            relay.options.pool_size = n.max(1);
        }
        let pool = relay.options.pool_size;
        relay.options.dangerous_accept_invalid_certs = opts.insecure;
        let sender: Arc<dyn Transport> = Arc::new(Sender::new(relay, self.verp()?)?);
        self.runner_with(c, sender, pool, opts.wait)
    }

    /// The runner over several relays (`names`, each a `[relays.NAME]` or
    /// a URL): one sender per relay, weights, quotas and rests from each
    /// relay's configuration. `--pool` sets each relay's connections.
    fn pooled_runner(
        &self,
        c: &CampaignContent,
        opts: &SendOptions,
        names: &[&str],
    ) -> Result<Runner> {
        let mut routes = Vec::with_capacity(names.len());
        let mut connections = 0;
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(AppError::invalid(format!(
                    "relay `{name}` is named twice in the relay list `{}`; name each relay once \
                     (`weight` in [relays.{name}] gives it a larger share)",
                    names.join(",")
                )));
            }
            let mut relay = relay_for(&self.config, Some(name))?;
            if let Some(n) = opts.pool {
                relay.options.pool_size = n.max(1);
            }
            connections += relay.options.pool_size;
            relay.options.dangerous_accept_invalid_certs = opts.insecure;
            let transport: Arc<dyn Transport> = Arc::new(Sender::new(relay, self.verp()?)?);
            let rc = self.config.relays.get(*name).cloned().unwrap_or_default();
            routes.push(rundbrief_scheduler::Route {
                name: (*name).to_string(),
                transport,
                weight: rc.weight(),
                quota: rundbrief_store::RelayQuota {
                    max_per_hour: rc.max_per_hour,
                    max_per_day: rc.max_per_day,
                },
                rest_after: rc.rest_after_failures(),
                rest_for: rc.rest_for(),
            });
        }
        let first = Arc::clone(&routes[0].transport);
        let mut runner = self.runner_with(c, first, connections, opts.wait)?;
        // Quota is reserved in chunks of the sends in flight (at most 32).
        let chunk = (runner.config.concurrency as u64).clamp(1, 32);
        runner.relays = Some(Arc::new(rundbrief_scheduler::RelayPool::new(
            self.store.clone(),
            Arc::clone(&self.clock),
            routes,
            chunk,
        )));
        Ok(runner)
    }

    /// The runner for one campaign over any transport (a stub in tests).
    ///
    /// # Errors
    /// As [`App::runner_for`], without the relay.
    pub fn runner_with(
        &self,
        c: &CampaignContent,
        transport: Arc<dyn Transport>,
        pool: usize,
        wait: bool,
    ) -> Result<Runner> {
        Ok(Runner {
            store: self.store.clone(),
            sender: transport,
            throttle: Arc::new(crate::shaping::throttle_for(
                &self.config,
                self.shaping()?,
                &self.store,
            )),
            hooks: Arc::new(CampaignHooks::new(self, c)?),
            clock: Arc::clone(&self.clock),
            config: run_config(&self.config, pool, wait),
            relays: None,
        })
    }

    /// Runs the campaign `name` in this process: everything due now, and
    /// with `wait` also the retries of deferred deliveries and the hours
    /// outside the send window, until every recipient has an outcome (or the
    /// campaign is paused or cancelled meanwhile, or `stop` is cancelled:
    /// in-flight sends finish, the rest stays for the next run).
    /// `progress(total, done)` is called with the deliveries to send and the
    /// final outcomes recorded so far.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] for a paused, cancelled or finished
    /// campaign; pre-flight with `strict`; set-up and store failures.
    pub async fn send_foreground(
        &self,
        name: &str,
        opts: &SendOptions,
        stop: &CancellationToken,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<SendReport> {
        let store = &self.store;
        let c = store.campaign(name).await?;
        match c.campaign.state {
            CampaignState::Cancelled => {
                return Err(
                    AppError::conflict(format!("campaign `{name}` was cancelled"))
                        .because(Reason::CampaignCancelled),
                );
            }
            CampaignState::Finished => {
                return Err(AppError::conflict(format!(
                    "campaign `{name}` is finished: every recipient has an outcome \
                     (retry-failed sends the failed ones again)"
                ))
                .because(Reason::CampaignFinished));
            }
            CampaignState::Paused => {
                return Err(AppError::conflict(format!(
                    "campaign `{name}` is paused: resume continues it"
                ))
                .because(Reason::CampaignPaused));
            }
            _ => {}
        }
        check_preflight(&self.config, &c, opts.strict)?;
        let mut runner = self.runner_for(&c, opts)?;
        store
            .set_campaign_state(c.campaign.id, CampaignState::Running)
            .await?;
        let added = store.materialise_deliveries(c.campaign.id).await?;
        runner.config.materialise = false;
        let dns_check = if opts.no_dns_check {
            None
        } else {
            self.check_campaign_domains(c.campaign.id).await?
        };
        if let Some(d) = &dns_check {
            tracing::info!(
                campaign = name,
                domains = d.domains,
                undeliverable_domains = d.undeliverable_domains,
                unknown_domains = d.unknown_domains,
                skipped = d.skipped,
                "recipient domains checked"
            );
        }
        let before = store.campaign_counts(c.campaign.id).await?;
        let total = before.pending + before.deferred;
        tracing::info!(
            campaign = name,
            added,
            to_send = total,
            "recipients materialised"
        );
        let started = Instant::now();
        let report = runner
            .run(c.campaign.id, stop, &|n| progress(total, n))
            .await;
        runner.sender.shutdown().await;
        if let Some(pool) = &runner.relays {
            pool.shutdown().await;
        }
        let report = report?;
        match report.ended {
            Ended::Finished => tracing::info!(campaign = name, "finished"),
            Ended::RetriesLater(at) => tracing::info!(
                campaign = name,
                next = %at,
                "deferred deliveries are left for later: `campaign send --wait` or `serve` retries them"
            ),
            Ended::WindowClosed(at) => {
                tracing::info!(campaign = name, opens = %at, "outside the send window")
            }
            Ended::Shutdown => {
                tracing::warn!(campaign = name, "interrupted; `campaign send` continues it")
            }
            Ended::Stopped(state) => tracing::info!(campaign = name, %state, "stopped"),
            Ended::Suspended => tracing::warn!(
                campaign = name,
                "only deliveries to providers the circuit breaker suspended are left: \
                 `campaign status` says why; `campaign resume NAME --provider P` lets them go"
            ),
        }
        let state = store.campaign_state(c.campaign.id).await?;
        let mut counts = report.counts;
        counts.state = state.to_string();
        let (leased, leased_until) = store.campaign_leases(c.campaign.id).await?;
        if leased > 0 {
            tracing::warn!(
                campaign = name,
                leased,
                until = ?leased_until,
                "deliveries are still claimed by another or a stopped worker; they are sent once the claim ends"
            );
        }
        Ok(SendReport {
            counts,
            state,
            ended: report.ended,
            seconds: started.elapsed().as_secs_f64(),
            sent_now: report.done,
            leased,
            leased_until,
            dns_check,
        })
    }

    /// `campaign test`: one real send of campaign `name` to `to`, marked
    /// `[TEST]` and `X-Rundbrief-Test: yes`, outside the ledger.
    ///
    /// # Errors
    /// A blocklisted address ([`crate::ErrorKind::Conflict`]), set-up and
    /// render failures; a refused send is an `Ok` outcome, not an error.
    pub async fn send_test(
        &self,
        name: &str,
        to: &rundbrief_core::Address,
        relay: Option<&str>,
        insecure: bool,
    ) -> Result<rundbrief_sender::Outcome> {
        let store = &self.store;
        let mut c = store.campaign(name).await?;
        c.campaign.subject = format!("[TEST] {}", c.campaign.subject);
        let sub = store.subscriber_detail(to).await.ok();
        // A blocklisted address gets no mail from us, tests included.
        if let Some(s) = &sub
            && s.subscriber.status == rundbrief_core::SubscriberStatus::Blocklisted
        {
            return Err(AppError::conflict(format!(
                "{to} is blocklisted: rundbrief sends it nothing, not even a test; \
                 send the test to another address"
            )));
        }
        let opts = SendOptions {
            relay: relay.map(str::to_string),
            pool: Some(1),
            insecure,
            ..SendOptions::default()
        };
        let runner = self.runner_for(&c, &opts)?;
        let delivery = uuid::Uuid::now_v7();
        let d = PendingDelivery {
            delivery_id: delivery,
            subscriber_id: sub.as_ref().map_or(uuid::Uuid::nil(), |s| s.subscriber.id),
            email: to.to_string(),
            name: sub.as_ref().and_then(|s| s.subscriber.name.clone()),
            attributes: sub.map(|s| s.subscriber.attributes).unwrap_or_default(),
            attempts: 0,
            first_attempt_at: None,
            list_id: None,
        };
        let body = runner
            .hooks
            .render(&d)
            .map_err(|e| AppError::invalid(e.to_string()))?;
        let mut message = b"X-Rundbrief-Test: yes\r\n".to_vec();
        message.extend_from_slice(&body);
        let outcome = runner
            .sender
            .send(rundbrief_sender::Delivery {
                id: delivery,
                to: d.email.clone(),
                message: Arc::from(message),
                per_connection: None,
            })
            .await;
        runner.sender.shutdown().await;
        if let Some(pool) = &runner.relays {
            pool.shutdown().await;
        }
        Ok(outcome)
    }

    /// Reads the campaign `name` again with its status object.
    ///
    /// # Errors
    /// Not found; the store failed.
    pub async fn campaign_status(&self, name: &str) -> Result<serde_json::Value> {
        let c = self.store.campaign(name).await?;
        crate::campaigns::status(self, &c).await
    }

    /// Sets up the relay `given` (a name or URL), else the configured default.
    ///
    /// # Errors
    /// As [`relay_for`].
    pub fn relay(&self, given: Option<&str>) -> Result<rundbrief_sender::Relay> {
        relay_for(&self.config, given)
    }
}

/// The relay a command uses: `given` (a relay name or URL, or a campaign's
/// relay) if any, else the configured default (`relay`, `RUNDBRIEF_RELAY`).
/// Either is looked up in `[relays.NAME]` first, then parsed as a URL
/// ([`rundbrief_sender::Relay::resolve`]); a named relay's password is read
/// here, once. Of a relay list (`ses,mailgun`) the first relay.
///
/// # Errors
/// [`crate::ErrorKind::Invalid`]: no relay at all ([`NO_RELAY`]), an unknown
/// name that is no URL, or a relay that cannot be used.
pub fn relay_for(cfg: &Config, given: Option<&str>) -> Result<rundbrief_sender::Relay> {
    let Some(name_or_url) = given.or(cfg.relay.as_deref()) else {
        return Err(AppError::invalid(NO_RELAY).because(Reason::NoRelay));
    };
    // A relay list (`ses,mailgun`): one relay is wanted here (a check, a
    // confirmation mail): the first. Campaigns use them all (runner_for).
    let name_or_url = rundbrief_core::config::relay_list(name_or_url)
        .first()
        .copied()
        .unwrap_or(name_or_url);
    Ok(rundbrief_sender::Relay::resolve(name_or_url, &cfg.relays)?)
}

/// The message of the error for "no relay configured or given".
pub const NO_RELAY: &str = "no relay: name one (a URL such as smtp://HOST:PORT, or a \
     [relays.NAME]), or set `relay` in rundbrief.toml or RUNDBRIEF_RELAY";
