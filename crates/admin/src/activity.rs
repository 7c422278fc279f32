//! The numbers behind the charts, read with the store's cheap queries
//! (the per-hour `delivery_stats` counters, bounded ranges of indexed time
//! columns) and laid out as [`crate::charts`] bars: one bar per UTC hour or
//! day, empty ones included so the time axis is even.

use crate::charts::{Bars, Series};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rundbrief_store::{BounceBucket, SendBucket, Store, hour_of};
use std::collections::BTreeMap;

/// The CSS class of a bounce class's series (unknown names share one).
pub(crate) fn class_css(class: &str) -> &'static str {
    match class {
        "hard" => "hard",
        "soft" => "soft",
        "block" => "block",
        "complaint" => "complaint",
        _ => "other",
    }
}

/// `n` hours ending with the hour of `now`, oldest first.
fn hours(now: DateTime<Utc>, n: i64) -> Vec<DateTime<Utc>> {
    let last = hour_of(now);
    (0..n).rev().map(|i| last - Duration::hours(i)).collect()
}

/// `n` days ending with the day of `now`, oldest first.
fn days(now: DateTime<Utc>, n: i64) -> Vec<NaiveDate> {
    let today = now.date_naive();
    (0..n).rev().map(|i| today - Duration::days(i)).collect()
}

/// Sends and bounces of the last 24 hours and 30 days (the overview).
pub(crate) struct Activity {
    now: DateTime<Utc>,
    sends: Vec<SendBucket>,
    bounces_hourly: Vec<BounceBucket>,
    bounces_daily: Vec<BounceBucket>,
}

impl Activity {
    pub(crate) async fn read(
        app: &rundbrief_app::App,
        now: DateTime<Utc>,
    ) -> rundbrief_app::Result<Activity> {
        let store: &Store = &app.store;
        let month = days(now, 30)[0]
            .and_hms_opt(0, 0, 0)
            .map_or(now, |d| d.and_utc());
        Ok(Activity {
            now,
            sends: store.send_stats(None, month).await?,
            bounces_hourly: store
                .bounce_stats(hour_of(now) - Duration::hours(23), true)
                .await?,
            bounces_daily: store.bounce_stats(month, false).await?,
        })
    }

    /// Per hour of the last 24 hours: sent, failed, bounces.
    pub(crate) fn hourly(&self) -> Bars {
        let hs = hours(self.now, 24);
        let mut sent = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for b in &self.sends {
            *sent.entry(b.at).or_insert(0) += b.sent;
            *failed.entry(b.at).or_insert(0) += b.failed;
        }
        let mut bounced = BTreeMap::new();
        for b in &self.bounces_hourly {
            *bounced.entry(b.at).or_insert(0) += b.count;
        }
        let pick = |m: &BTreeMap<DateTime<Utc>, u64>| {
            hs.iter().map(|h| m.get(h).copied().unwrap_or(0)).collect()
        };
        Bars {
            id: "chart-sends",
            title: "Last 24 hours, per hour (UTC)",
            desc: "Messages sent, failed and bounces received in each of the last 24 hours.",
            labels: hs.iter().map(|h| h.format("%H:00").to_string()).collect(),
            series: vec![
                Series {
                    name: "sent".into(),
                    class: "sent",
                    values: pick(&sent),
                },
                Series {
                    name: "failed".into(),
                    class: "failed",
                    values: pick(&failed),
                },
                Series {
                    name: "bounces".into(),
                    class: "bounces",
                    values: pick(&bounced),
                },
            ],
        }
    }

    /// Per day of the last 30 days: sent, failed, bounces.
    pub(crate) fn daily(&self) -> Bars {
        let ds = days(self.now, 30);
        let mut sent = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for b in &self.sends {
            *sent.entry(b.at.date_naive()).or_insert(0) += b.sent;
            *failed.entry(b.at.date_naive()).or_insert(0) += b.failed;
        }
        let mut bounced = BTreeMap::new();
        for b in &self.bounces_daily {
            *bounced.entry(b.at.date_naive()).or_insert(0) += b.count;
        }
        let pick = |m: &BTreeMap<NaiveDate, u64>| {
            ds.iter().map(|d| m.get(d).copied().unwrap_or(0)).collect()
        };
        Bars {
            id: "chart-sends-daily",
            title: "Last 30 days, per day (UTC)",
            desc: "Messages sent, failed and bounces received on each of the last 30 days.",
            labels: ds.iter().map(|d| d.format("%m-%d").to_string()).collect(),
            series: vec![
                Series {
                    name: "sent".into(),
                    class: "sent",
                    values: pick(&sent),
                },
                Series {
                    name: "failed".into(),
                    class: "failed",
                    values: pick(&failed),
                },
                Series {
                    name: "bounces".into(),
                    class: "bounces",
                    values: pick(&bounced),
                },
            ],
        }
    }
}

/// A campaign's sends per hour from `from` (at most a week back) to `now`.
pub(crate) fn send_rate(sends: &[SendBucket], from: DateTime<Utc>, now: DateTime<Utc>) -> Bars {
    let n = ((hour_of(now) - hour_of(from)).num_hours() + 1).clamp(1, 24 * 7);
    let hs = hours(now, n);
    let get = |h: &DateTime<Utc>, f: fn(&SendBucket) -> u64| {
        sends.iter().filter(|b| b.at == *h).map(f).sum::<u64>()
    };
    let label = if n > 24 { "%m-%d %H:00" } else { "%H:00" };
    Bars {
        id: "chart-send-rate",
        title: "Sent per hour (UTC)",
        desc: "How many of this campaign's messages were sent, failed or deferred in each hour since it started.",
        labels: hs.iter().map(|h| h.format(label).to_string()).collect(),
        series: vec![
            Series {
                name: "sent".into(),
                class: "sent",
                values: hs.iter().map(|h| get(h, |b| b.sent)).collect(),
            },
            Series {
                name: "failed".into(),
                class: "failed",
                values: hs.iter().map(|h| get(h, |b| b.failed)).collect(),
            },
            Series {
                name: "deferred".into(),
                class: "deferred",
                values: hs.iter().map(|h| get(h, |b| b.deferred)).collect(),
            },
        ],
    }
}

/// Bounce classes per day of the last 30 days, stacked (the bounces page).
pub(crate) fn bounce_classes(buckets: &[BounceBucket], now: DateTime<Utc>) -> Bars {
    let ds = days(now, 30);
    let mut classes: Vec<&str> = buckets.iter().map(|b| b.class.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    let series = classes
        .iter()
        .map(|class| Series {
            name: (*class).to_string(),
            class: class_css(class),
            values: ds
                .iter()
                .map(|d| {
                    buckets
                        .iter()
                        .filter(|b| b.class == *class && b.at.date_naive() == *d)
                        .map(|b| b.count)
                        .sum()
                })
                .collect(),
        })
        .collect();
    Bars {
        id: "chart-bounce-classes",
        title: "Bounces per day by class, last 30 days (UTC)",
        desc: "Stored bounces received on each of the last 30 days, stacked by their class.",
        labels: ds.iter().map(|d| d.format("%m-%d").to_string()).collect(),
        series,
    }
}

/// A list's joins, unsubscribes and prunes per day of the last 90 days.
pub(crate) fn list_growth(growth: &[rundbrief_store::GrowthDay], now: DateTime<Utc>) -> Bars {
    let ds = days(now, 90);
    let pick = |f: fn(&rundbrief_store::GrowthDay) -> u64| -> Vec<u64> {
        ds.iter()
            .map(|d| growth.iter().filter(|g| g.day == *d).map(f).sum())
            .collect()
    };
    Bars {
        id: "list-growth",
        title: "Joined, unsubscribed and pruned per day, last 90 days (UTC)",
        desc: "Memberships created on each of the last 90 days, and members who unsubscribed or were pruned (bounced or undeliverable) that day.",
        labels: ds.iter().map(|d| d.format("%m-%d").to_string()).collect(),
        series: vec![
            Series {
                name: "joined".into(),
                class: "joined",
                values: pick(|g| g.joined),
            },
            Series {
                name: "unsubscribed".into(),
                class: "unsubscribed",
                values: pick(|g| g.unsubscribed),
            },
            Series {
                name: "pruned".into(),
                class: "pruned",
                values: pick(|g| g.pruned),
            },
        ],
    }
}
