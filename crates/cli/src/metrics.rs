//! Prometheus metrics of `rundbrief serve` (prometheus-client), served as
//! text at `/metrics` on `--metrics-listen`.
//!
//! Counted as they happen: messages by recipient domain and outcome, send
//! latency. Read from the database every tick: queue depth per running
//! campaign, bounces by class, subscribers by status (so pruning shows as
//! `bounced` growing), running campaigns. A reputation incident shows as
//! `outcome="deferred"`/`"rejected"` climbing for one domain and
//! `class="block"` bounces rising, and the circuit breaker's trips in
//! `rundbrief_breaker_trips_total{campaign,provider}` (`provider="*"`: the
//! whole campaign was paused).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rundbrief_core::DeliveryState;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Distinct recipient domains labelled by name; the rest are `other`, so a
/// list of many small domains cannot blow up the series count.
const MAX_DOMAINS: usize = 200;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    domain: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CampaignLabel {
    campaign: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TripLabels {
    campaign: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

pub struct Metrics {
    registry: Registry,
    messages: Family<SendLabels, Counter>,
    latency: Family<OutcomeLabel, Histogram>,
    queue: Family<CampaignLabel, Gauge>,
    bounces: Family<ClassLabel, Gauge>,
    subscribers: Family<StatusLabel, Gauge>,
    running: Gauge,
    connections: Counter,
    trips: Family<TripLabels, Counter>,
    domains: Mutex<HashSet<String>>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rundbrief");
        let messages = Family::<SendLabels, Counter>::default();
        registry.register(
            "messages",
            "Send attempts by recipient domain and outcome (sent, deferred, rejected, failed)",
            messages.clone(),
        );
        let latency = Family::<OutcomeLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "send_seconds",
            "Time from handing a message to the relay to its outcome",
            latency.clone(),
        );
        let queue = Family::<CampaignLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Deliveries pending or deferred, per running campaign",
            queue.clone(),
        );
        let bounces = Family::<ClassLabel, Gauge>::default();
        registry.register(
            "bounces",
            "Stored inbound messages by class (hard, soft, block, ignore, complaint, unknown, unparsed)",
            bounces.clone(),
        );
        let subscribers = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "subscribers",
            "Subscribers by status (bounced = pruned)",
            subscribers.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "campaigns_running",
            "Campaigns in state running",
            running.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "endpoint_connections",
            "SMTP connections accepted by the bounce endpoint",
            connections.clone(),
        );
        let trips = Family::<TripLabels, Counter>::default();
        registry.register(
            "breaker_trips",
            "Circuit breaker trips: a provider suspended for a campaign, or the campaign paused (provider=\"*\")",
            trips.clone(),
        );
        Metrics {
            trips,
            registry,
            messages,
            latency,
            queue,
            bounces,
            subscribers,
            running,
            connections,
            domains: Mutex::new(HashSet::new()),
        }
    }

    /// One send attempt's outcome.
    pub fn sent(&self, domain: &str, state: DeliveryState, latency: Duration) {
        let domain = {
            let mut known = self.domains.lock().unwrap_or_else(|p| p.into_inner());
            if known.contains(domain) || known.len() < MAX_DOMAINS {
                known.insert(domain.to_string());
                domain.to_string()
            } else {
                "other".to_string()
            }
        };
        let outcome = state.as_str().to_string();
        self.messages
            .get_or_create(&SendLabels {
                domain,
                outcome: outcome.clone(),
            })
            .inc();
        self.latency
            .get_or_create(&OutcomeLabel { outcome })
            .observe(latency.as_secs_f64());
    }

    pub fn queue_depth(&self, campaign: &str, n: u64) {
        self.queue
            .get_or_create(&CampaignLabel {
                campaign: campaign.to_string(),
            })
            .set(n as i64);
    }

    pub fn campaigns_running(&self, n: u64) {
        self.running.set(n as i64);
    }

    pub fn db_counts(&self, m: &rundbrief_store::MetricCounts) {
        for (class, n) in &m.bounces {
            self.bounces
                .get_or_create(&ClassLabel {
                    class: class.clone(),
                })
                .set(*n as i64);
        }
        for (status, n) in &m.subscribers {
            self.subscribers
                .get_or_create(&StatusLabel {
                    status: status.clone(),
                })
                .set(*n as i64);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// The application layer reports here; each report becomes a metric.
impl rundbrief_app::Observer for Metrics {
    fn endpoint_connection(&self) {
        self.connections.inc();
    }
    fn delivery(&self, domain: &str, state: DeliveryState, latency: Duration) {
        self.sent(domain, state, latency);
    }
    fn queue_depth(&self, campaign: &str, depth: u64) {
        Metrics::queue_depth(self, campaign, depth);
    }
    fn campaigns_running(&self, n: u64) {
        Metrics::campaigns_running(self, n);
    }
    fn db_counts(&self, counts: &rundbrief_store::MetricCounts) {
        Metrics::db_counts(self, counts);
    }
    fn breaker_tripped(&self, campaign: &str, provider: Option<&str>) {
        self.trips
            .get_or_create(&TripLabels {
                campaign: campaign.to_string(),
                provider: provider.unwrap_or("*").to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rundbrief_app::Observer;

    #[test]
    fn breaker_trips_are_counted_per_campaign_and_provider() {
        let m = Metrics::new();
        m.breaker_tripped("spring", Some("google"));
        m.breaker_tripped("spring", Some("google"));
        m.breaker_tripped("spring", None);
        let text = m.encode();
        assert!(
            text.contains(
                r#"rundbrief_breaker_trips_total{campaign="spring",provider="google"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"rundbrief_breaker_trips_total{campaign="spring",provider="*"} 1"#),
            "{text}"
        );
    }
}
