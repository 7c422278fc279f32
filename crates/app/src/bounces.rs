//! The bounce policy: one place where a classified bounce (from a stored
//! DSN, or a 5xx seen while sending) becomes a score, a prune or an
//! unsubscribe, and where `rundbrief clean` prunes by score. The endpoint,
//! the campaign runner and `clean` all call this; the day a bounce counts on
//! comes from the injected clock.
//!
//! A parsed bounce only ever affects the subscriber of the delivery its VERP
//! token names (a recipient could otherwise forge a DSN to their own return
//! path naming somebody else); only the report's line for the delivery's own
//! address counts. Messages without a verified delivery are stored and
//! parsed, never acted on.

use crate::error::Result;
use rundbrief_bounce::BounceClass;
use rundbrief_bounce::score::{Score, ScoreConfig, Verdict};
use rundbrief_core::{Actor, Address, Config};
use rundbrief_scheduler::Clock;
use rundbrief_store::{DeliveryTarget, Store};
use std::sync::Arc;

/// How verdicts are carried out (from the `[bounce]` configuration).
#[derive(Debug, Clone)]
pub struct Policy {
    pub score: ScoreConfig,
    /// Prune as soon as a score crosses the threshold (else `clean` does).
    pub auto_prune: bool,
    /// When one domain's hard bounces in a campaign look like a block.
    pub hold: HoldPolicy,
}

/// When a campaign's hard-bounce prunes for one receiving domain are held
/// instead of applied: more than `ratio` of the campaign's deliveries to
/// that domain, and at least `min` of them, within `window`.
#[derive(Debug, Clone, Copy)]
pub struct HoldPolicy {
    pub ratio: f64,
    /// 0: never hold.
    pub min: u64,
    pub window: chrono::Duration,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Policy {
        let b = &cfg.bounce;
        Policy {
            score: ScoreConfig {
                threshold: b.threshold,
                soft_weight: b.soft_weight,
                hard_after: b.hard_after,
                half_life_days: b.half_life_days,
            },
            auto_prune: b.auto_prune,
            hold: HoldPolicy {
                ratio: b.hold_ratio,
                min: b.hold_min,
                window: chrono::Duration::seconds(
                    i64::try_from(b.hold_window_secs).unwrap_or(i64::MAX / 1000),
                ),
            },
        }
    }
}

/// Where a bounce came from, for the audit trail.
#[derive(Debug, Clone)]
pub enum BounceSource {
    /// A stored message (its id).
    Stored(uuid::Uuid),
    /// A 5xx reply at this SMTP step while sending.
    Sending(&'static str),
}

impl std::fmt::Display for BounceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BounceSource::Stored(id) => write!(f, "bounce {id}"),
            BounceSource::Sending(step) => write!(f, "{step} while sending"),
        }
    }
}

/// One classified bounce for one delivery's subscriber.
#[derive(Debug, Clone)]
pub struct ClassifiedBounce<'a> {
    pub class: BounceClass,
    /// The RFC 3463 status, or empty.
    pub status: &'a str,
    /// The classifier rule that decided.
    pub rule: &'a str,
    /// The words of the diagnostic that decided, as the server wrote them
    /// (quoted in the audit entry, so `sub show` says why).
    pub evidence: Option<&'a str>,
    pub source: BounceSource,
}

/// What [`Bounces::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing changed (ignore, unknown, block, or no new weight today).
    Nothing,
    /// The score went up; the subscriber stays.
    Scored,
    /// The subscriber was marked bounced now.
    Pruned,
    /// Over the threshold, but `bounce.auto_prune` is off: `clean` prunes.
    OverThreshold,
    /// Unsubscribed everywhere after a complaint.
    Unsubscribed,
    /// A prune held for the operator: its domain's hard bounces in this
    /// campaign look like a block (`bounce held release|discard`).
    Held,
}

/// The bounce policy service.
#[derive(Clone)]
pub struct Bounces {
    store: Store,
    policy: Policy,
    clock: Arc<dyn Clock>,
}

impl Bounces {
    pub fn new(store: Store, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        Bounces {
            store,
            policy,
            clock,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Today, in the scores' day numbers, from the clock.
    fn today(&self) -> i64 {
        self.clock.now().timestamp().div_euclid(86_400)
    }

    /// Feeds one classified bounce to the score of `target`'s subscriber and
    /// carries out the verdict, audited.
    ///
    /// # Errors
    /// The store failed; nothing half-done is left (each step is its own
    /// idempotent statement).
    pub async fn apply(
        &self,
        target: &DeliveryTarget,
        b: &ClassifiedBounce<'_>,
    ) -> Result<Applied> {
        let store = &self.store;
        let previous =
            store
                .bounce_score(target.subscriber_id)
                .await?
                .map(|(value, day, day_weight)| Score {
                    value,
                    day,
                    day_weight,
                });
        let (score, verdict) =
            rundbrief_bounce::score::apply(previous, b.class, self.today(), &self.policy.score);
        let value = score.map_or(0.0, |s| s.value);
        let status = if b.status.is_empty() { "-" } else { b.status };
        let quoted = b
            .evidence
            .map(|e| {
                let e: String = e.chars().filter(|c| !c.is_control()).take(160).collect();
                format!(" \"{e}\"")
            })
            .unwrap_or_default();
        let reason = format!(
            "{}: {} {status}{quoted} (rule {}, score {value:.1})",
            b.source,
            b.class.as_str(),
            b.rule
        );
        let mut applied = Applied::Nothing;
        // An auto-reply or a complaint means the message was delivered: the
        // delivery stays `sent` and the score is untouched.
        if !matches!(b.class, BounceClass::Ignore | BounceClass::Complaint) {
            // The score and the words of the bounce behind it change only
            // when this bounce counted (a block, or a second bounce on a day
            // that already counted as much, leaves both as they were): a
            // later `rundbrief clean` names that bounce in its prune.
            let counted = score.filter(|s| Some(*s) != previous);
            if counted.is_some() {
                applied = Applied::Scored;
            }
            store
                .record_bounce_score(
                    target,
                    counted.map(|s| ((s.value, s.day, s.day_weight), reason.as_str())),
                )
                .await?;
        }
        let addr = Address::parse(&target.email)?;
        match verdict {
            Verdict::Prune { rule: why } if !self.policy.auto_prune => {
                tracing::info!(subscriber = %addr, source = %b.source, why, "over the bounce threshold; bounce.auto_prune is off: `rundbrief clean` prunes");
                applied = Applied::OverThreshold;
            }
            Verdict::Prune { rule: why } => {
                let reason = format!("{reason}; {why}");
                if b.class == BounceClass::Hard && !target.campaign_id.is_nil() {
                    applied = self.prune_or_hold(target, &addr, &reason).await?;
                } else if self.prune(&addr, Actor::Bounce, &reason).await? {
                    applied = Applied::Pruned;
                }
            }
            Verdict::Unsubscribe => {
                store
                    .unsubscribe(&addr, None, Actor::Bounce, &format!("complaint: {reason}"))
                    .await?;
                tracing::info!(subscriber = %addr, source = %b.source, "unsubscribed after a complaint");
                applied = Applied::Unsubscribed;
            }
            Verdict::SenderProblem => {
                tracing::warn!(
                    domain = addr.domain(),
                    source = %b.source,
                    rule = b.rule,
                    "the receiver refused our mail (block): nobody pruned"
                );
            }
            Verdict::Keep => {}
        }
        Ok(applied)
    }

    /// A hard-bounce prune of a campaign delivery: applied, unless its
    /// receiving domain is held in that campaign, or this bounce makes the
    /// domain's hard bounces there look like a block (more than the hold
    /// ratio of the campaign's deliveries to it, at least the hold minimum,
    /// within the window): then it and the domain's prunes of the window
    /// are held for the operator, and those already applied are undone.
    async fn prune_or_hold(
        &self,
        target: &DeliveryTarget,
        addr: &Address,
        reason: &str,
    ) -> Result<Applied> {
        use rundbrief_store::PruneState;
        let store = &self.store;
        let hold = self.policy.hold;
        let (campaign, domain, now) = (target.campaign_id, addr.domain(), self.clock.now());
        let record = |state| rundbrief_store::NewDomainPrune {
            campaign_id: campaign,
            domain,
            subscriber_id: target.subscriber_id,
            email: addr.as_str(),
            reason,
            state,
            at: now,
        };
        if hold.min > 0 {
            let held_already = store.domain_is_held(campaign, domain).await?;
            let since = now - hold.window;
            let tripped = !held_already && {
                let n = store.domain_prunes_since(campaign, domain, since).await? + 1;
                n >= hold.min && {
                    let total = store.campaign_domain_deliveries(campaign, domain).await?;
                    n as f64 > hold.ratio * total as f64
                }
            };
            if held_already || tripped {
                store.record_domain_prune(&record(PruneState::Held)).await?;
                if tripped {
                    let why = format!(
                        "prune held: hard bounces from {domain} in this campaign passed {:.0} % of its \
                         deliveries there within {} min, which looks like a block, not dead addresses; \
                         `rundbrief bounce held release --domain {domain}` prunes them, \
                         `rundbrief bounce held discard --domain {domain}` keeps them",
                        hold.ratio * 100.0,
                        hold.window.num_minutes()
                    );
                    let undone = store.hold_domain(campaign, domain, since, &why).await?;
                    tracing::warn!(
                        domain,
                        %campaign,
                        undone,
                        "hard bounces from one domain look like a block: its prunes are held for review (`rundbrief bounce held ls`)"
                    );
                }
                return Ok(Applied::Held);
            }
        }
        let pruned = self.prune(addr, Actor::Bounce, reason).await?;
        if pruned {
            store
                .record_domain_prune(&record(PruneState::Applied))
                .await?;
            // Another bounce of this domain may have started holding it
            // while this one was pruned: then this prune is held too.
            if hold.min > 0 && store.domain_is_held(campaign, domain).await? {
                store
                    .hold_domain(
                        campaign,
                        domain,
                        now - hold.window,
                        "prune held: its domain's prunes in this campaign are held for review",
                    )
                    .await?;
                return Ok(Applied::Held);
            }
        }
        Ok(if pruned {
            Applied::Pruned
        } else {
            Applied::Nothing
        })
    }

    /// Held prunes (of `domain`, or all), oldest first.
    ///
    /// # Errors
    /// The store failed.
    pub async fn held(&self, domain: Option<&str>) -> Result<Vec<rundbrief_store::DomainPrune>> {
        Ok(self
            .store
            .domain_prunes(rundbrief_store::PruneState::Held, domain)
            .await?)
    }

    /// Applies the held prunes (of `domain`, or all): each subscriber still
    /// active is marked bounced with the held reason. Returns the prunes
    /// released.
    ///
    /// # Errors
    /// The store failed; those released before stay released.
    /// `actor` and `by` say who decided (the CLI's operator, or the named
    /// admin of the dashboard) in the audit.
    pub async fn release_held(
        &self,
        domain: Option<&str>,
        actor: Actor,
        by: &str,
    ) -> Result<Vec<rundbrief_store::DomainPrune>> {
        let released = self
            .store
            .decide_held(domain, rundbrief_store::PruneState::Released)
            .await?;
        for p in &released {
            let addr = Address::parse(&p.email)?;
            self.prune(
                &addr,
                actor,
                &format!("{}; held prune released by {by}", p.reason),
            )
            .await?;
        }
        Ok(released)
    }

    /// Discards the held prunes (of `domain`, or all): the subscribers stay.
    ///
    /// # Errors
    /// The store failed.
    pub async fn discard_held(
        &self,
        domain: Option<&str>,
    ) -> Result<Vec<rundbrief_store::DomainPrune>> {
        Ok(self
            .store
            .decide_held(domain, rundbrief_store::PruneState::Discarded)
            .await?)
    }

    /// Marks one subscriber bounced with `reason` in the audit: the one
    /// prune behind the endpoint, the sending path and `clean`. True when
    /// the status changed now.
    pub async fn prune(&self, addr: &Address, actor: Actor, reason: &str) -> Result<bool> {
        let changed = self.store.mark_bounced(addr, actor, reason).await?;
        if changed {
            tracing::info!(subscriber = %addr, %actor, "pruned");
        }
        Ok(changed)
    }

    /// `rundbrief clean`: every subscriber whose decayed score (today, by
    /// the clock) is at or over the threshold, pruned unless `dry_run`.
    /// Returns those pruned (or, dry, those that would be), each with the
    /// score and the bounce that counted last.
    ///
    /// # Errors
    /// The store failed; those pruned before it stay pruned.
    pub async fn clean(&self, dry_run: bool) -> Result<Vec<CleanedSubscriber>> {
        let today = self.today();
        let threshold = self.policy.score.threshold;
        let mut over = Vec::new();
        for s in self.store.scored_subscribers().await? {
            let score = Score {
                value: s.score,
                day: s.day,
                day_weight: s.day_weight,
            }
            .decayed(today, &self.policy.score);
            if score + 1e-9 >= threshold {
                over.push(CleanedSubscriber {
                    email: s.email,
                    score,
                    last_bounce: s.last_bounce,
                });
            }
        }
        if dry_run {
            return Ok(over);
        }
        // Only those actually pruned are reported: one whose status changed
        // since the scores were read (unsubscribed, say) is left as it is.
        let mut pruned = Vec::with_capacity(over.len());
        for s in over {
            let addr = Address::parse(&s.email)?;
            let last = s.last_bounce.as_deref().unwrap_or(
                "not recorded (the score was counted before rundbrief kept the bounce behind it)",
            );
            let reason = format!(
                "clean: bounce score {:.1} >= threshold {threshold:.1}; last counted: {last}",
                s.score
            );
            if self.prune(&addr, Actor::Cli, &reason).await? {
                pruned.push(s);
            }
        }
        Ok(pruned)
    }

    /// Parses every pending stored message and acts on it; returns how many
    /// were handled. A message the parser cannot finish is marked `failed`,
    /// never lost.
    ///
    /// # Errors
    /// The store failed; what was handled before stays handled.
    pub async fn process_pending(&self) -> Result<u64> {
        let store = &self.store;
        let mut done = 0;
        loop {
            let batch = store.pending_bounces(100).await?;
            if batch.is_empty() {
                return Ok(done);
            }
            for b in batch {
                let raw = b.raw;
                match std::panic::catch_unwind(|| rundbrief_bounce::parse(&raw)) {
                    Ok(parsed) => {
                        let json = serde_json::to_value(&parsed)?;
                        let kind = json["kind"].as_str().unwrap_or("unknown").to_string();
                        tracing::debug!(bounce = %b.id, class = parsed.class.as_str(), rule = parsed.rule, "parsed");
                        // The VERP token first; without one (e.g. `bounce
                        // ingest`), the ENVID we sent or the returned Message-ID.
                        let delivery = b.delivery_id.or_else(|| delivery_from_report(&parsed));
                        let counted = match delivery {
                            // Counted once: `bounce reprocess` parses it
                            // again, but a soft bounce counted yesterday must
                            // not count again today.
                            Some(_) if b.acted_at.is_some() => {
                                tracing::debug!(bounce = %b.id, "acted on before; not counted again");
                                false
                            }
                            Some(delivery) => {
                                self.act_on(b.id, b.received_at, delivery, &parsed).await?
                            }
                            None => false,
                        };
                        if counted {
                            store.mark_bounce_acted(b.id).await?;
                        }
                        // Recorded after acting: a crash in between leaves
                        // the message pending, and the retry finds it acted on.
                        store
                            .record_bounce_parse(b.id, &kind, parsed.class.as_str(), json)
                            .await?;
                    }
                    Err(_) => {
                        store
                            .record_bounce_failure(
                                b.id,
                                "the parser panicked; kept for `bounce reprocess`",
                            )
                            .await?;
                        tracing::error!(bounce = %b.id, "the bounce parser panicked; the message is kept");
                    }
                }
                done += 1;
            }
        }
    }

    /// Applies one parsed bounce (received at `received_at`) to the
    /// subscriber of `delivery`; true when it counted (a hard or soft bounce
    /// or a complaint applied to the subscriber), which it then must not again.
    async fn act_on(
        &self,
        bounce: uuid::Uuid,
        received_at: chrono::DateTime<chrono::Utc>,
        delivery: uuid::Uuid,
        parsed: &rundbrief_bounce::ParsedBounce,
    ) -> Result<bool> {
        let store = &self.store;
        // A campaign delivery, else a confirmation mail (its token names the
        // subscriber it was sent to).
        let target = match store.delivery_target(delivery).await? {
            Some(t) => Some(t),
            None => store.confirmation_target(delivery).await?,
        };
        let Some(target) = target else {
            tracing::warn!(%bounce, %delivery, "the delivery named by the token is gone; nothing to act on");
            return Ok(false);
        };
        // Only the report's line about our delivery's own address counts: a
        // report at this token naming somebody else changes nothing.
        let Some(line) = parsed
            .recipients
            .iter()
            .find(|r| r.address.eq_ignore_ascii_case(&target.email))
        else {
            tracing::warn!(%bounce, %delivery, "the report does not name the delivery's recipient; nothing done");
            return Ok(false);
        };
        // `sub restore` reset the score: a bounce from before that (parsed
        // again by `bounce reprocess`) must not count again.
        if matches!(line.class, BounceClass::Hard | BounceClass::Soft)
            && store
                .bounce_reset_at(target.subscriber_id)
                .await?
                .is_some_and(|reset| received_at < reset)
        {
            tracing::info!(%bounce, %delivery, "received before the subscriber was restored; not counted");
            return Ok(false);
        }
        self.apply(
            &target,
            &ClassifiedBounce {
                class: line.class,
                status: &line.status,
                rule: line.rule,
                // The deciding words, else the whole diagnostic.
                evidence: line
                    .evidence
                    .as_ref()
                    .and_then(|e| e.phrase.as_deref())
                    .or(Some(line.diagnostic.as_str()).filter(|d| !d.is_empty())),
                source: BounceSource::Stored(bounce),
            },
        )
        .await?;
        // What changed the subscriber (score, prune, unsubscribe) must not
        // count again; a block or an auto-reply changed nothing, and a parser
        // that learns better later may still turn it into a bounce that counts.
        Ok(matches!(
            line.class,
            BounceClass::Hard | BounceClass::Soft | BounceClass::Complaint
        ))
    }
}

/// One subscriber `clean` pruned (or would prune).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CleanedSubscriber {
    pub email: String,
    /// The decayed score today.
    pub score: f64,
    /// The audit words of the bounce that counted last.
    pub last_bounce: Option<String>,
}

/// The delivery a report names without a VERP token: the DSN's
/// Original-Envelope-Id (we send `ENVID=<delivery id>`) or the returned
/// message's Message-ID (`<delivery id, 32 hex digits>@domain`). Safe for the
/// same reason as the token: only the report's line for that delivery's own
/// address is acted on.
fn delivery_from_report(parsed: &rundbrief_bounce::ParsedBounce) -> Option<uuid::Uuid> {
    let envid = parsed
        .original_envelope_id
        .as_deref()
        .and_then(|e| uuid::Uuid::parse_str(e.trim()).ok());
    envid.or_else(|| {
        let mid = parsed.original_message_id.as_deref()?;
        let local = mid.trim().trim_start_matches('<').split('@').next()?;
        (local.len() == 32)
            .then(|| uuid::Uuid::parse_str(local).ok())
            .flatten()
    })
}
