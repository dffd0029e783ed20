//! The series the daemon keeps: their labels, every label value created
//! at zero before it occurs, and their registration.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::evaluate::{Series, TickReport};

use super::labels::{
    CauseLabels, Delivery, DeliveryLabels, JobLabels, MemberLabels, MemberState, SkipLabels,
    TickLabels,
};
use super::process::Process;
use super::readiness::Readiness;

/// Every series the daemon exports.
pub struct Metrics {
    pub(super) registry: Registry,
    pub(super) ticks: Family<TickLabels, Counter>,
    pub(super) tick_causes: Family<CauseLabels, Counter>,
    pub(super) tick_seconds: Family<JobLabels, Histogram>,
    pub(super) tickers_changed: Family<JobLabels, Counter>,
    pub(super) evaluated: Family<JobLabels, Counter>,
    pub(super) triggered: Family<JobLabels, Counter>,
    pub(super) rearmed: Family<JobLabels, Counter>,
    pub(super) quote_errors: Family<JobLabels, Counter>,
    pub(super) skipped: Family<SkipLabels, Counter>,
    pub(super) takeovers: Family<JobLabels, Counter>,
    pub(super) deliveries: Family<DeliveryLabels, Counter>,
    pub(super) delivery_seconds: Histogram,
    pub(super) quote_to_claim: Family<JobLabels, Histogram>,
    pub(super) claim_to_delivery: Histogram,
    pub(super) last_success: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub(super) deadline: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub(super) last_heartbeat: Gauge<f64, AtomicU64>,
    pub(super) clock_offset: Gauge<f64, AtomicU64>,
    pub(super) members: Family<MemberLabels, Gauge>,
    pub(super) outbox_pending: Gauge,
    pub(super) outbox_dead: Gauge,
    pub(super) outbox_oldest: Gauge<f64, AtomicU64>,
    pub(super) reload_successful: Gauge,
    pub(super) reload_success_time: Gauge<f64, AtomicU64>,
    pub(super) restart_pending: Gauge,
    pub(super) quote_newest_age: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub(super) quote_oldest_age: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub(super) quotes_stale: Family<JobLabels, Gauge>,
    pub(super) quotes_missing: Family<JobLabels, Gauge>,
    pub(super) quote_max_age: Gauge<f64, AtomicU64>,
    pub(super) reacting_lag: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub(super) reacting_runs: Family<JobLabels, Gauge<f64, AtomicU64>>,
    /// The reacting jobs' pace, as the loop tells it, since `origin`.
    pub(super) paces: std::sync::Mutex<super::pace::Paces>,
    pub(super) origin: std::time::Instant,
    /// The jobs whose quotes the scrape measures, with their scope, and
    /// `prices.max_age`.
    pub(super) watched: std::sync::Mutex<Watched>,
    pub(super) readiness: Readiness,
}

/// What [`Metrics::watch_quotes`] was told.
#[derive(Default)]
pub(super) struct Watched {
    pub(super) jobs: Vec<(String, crate::config::Scope)>,
    pub(super) max_age: std::time::Duration,
}

fn tick_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// 1 ms to about a minute: an alert's way from its quote to its receiver.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut metrics = Metrics {
            ticks: Family::default(),
            tick_causes: Family::default(),
            tick_seconds: Family::new_with_constructor(tick_histogram),
            tickers_changed: Family::default(),
            evaluated: Family::default(),
            triggered: Family::default(),
            rearmed: Family::default(),
            quote_errors: Family::default(),
            skipped: Family::default(),
            takeovers: Family::default(),
            deliveries: Family::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            quote_to_claim: Family::new_with_constructor(latency_histogram),
            claim_to_delivery: latency_histogram(),
            last_success: Family::default(),
            deadline: Family::default(),
            last_heartbeat: Gauge::default(),
            clock_offset: Gauge::default(),
            members: Family::default(),
            outbox_pending: Gauge::default(),
            outbox_dead: Gauge::default(),
            outbox_oldest: Gauge::default(),
            reload_successful: Gauge::default(),
            reload_success_time: Gauge::default(),
            restart_pending: Gauge::default(),
            quote_newest_age: Family::default(),
            quote_oldest_age: Family::default(),
            quotes_stale: Family::default(),
            quotes_missing: Family::default(),
            quote_max_age: Gauge::default(),
            reacting_lag: Family::default(),
            reacting_runs: Family::default(),
            paces: Default::default(),
            origin: std::time::Instant::now(),
            watched: Default::default(),
            readiness: Readiness::default(),
            registry: Registry::default(),
        };
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        register(&metrics, root.sub_registry_with_prefix("price_alertd"));
        metrics.registry = root;
        // The configuration read at start counts as a successful load, as
        // Prometheus's own series do.
        metrics.reload_successful.set(1);
        metrics.reload_success_time.set(now_seconds());
        for count in TickReport::default().counts() {
            if count.series == Series::AlertsSkipped {
                let _ = metrics
                    .skipped
                    .get_or_create(&SkipLabels { reason: count.name });
            }
        }
        for state in MemberState::ALL {
            let _ = metrics.members.get_or_create(&MemberLabels { state });
        }
        for (outcome, responses) in Delivery::ALL {
            for &response in responses {
                let _ = metrics
                    .deliveries
                    .get_or_create(&DeliveryLabels { outcome, response });
            }
        }
        metrics
    }
}

/// Registers every series of `metrics` in `registry`, with its help.
fn register(metrics: &Metrics, registry: &mut Registry) {
    registry.register(
        "build",
        "The version of price-alertd running",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register(
        "ticks",
        "Job runs, by job and result (ok, failed, skipped; elsewhere: another daemon sharing the database took the fire time)",
        metrics.ticks.clone(),
    );
    registry.register(
        "tick_causes",
        "Job runs started, by job and cause: its schedule, or a change it reacts to (on_change)",
        metrics.tick_causes.clone(),
    );
    registry.register(
        "tick_duration_seconds",
        "How long job runs took",
        metrics.tick_seconds.clone(),
    );
    registry.register(
        "tickers_changed",
        "Tickers whose quote a job's tick found written since its last tick",
        metrics.tickers_changed.clone(),
    );
    registry.register(
        "alerts_evaluated",
        "Enabled alerts read and judged: those a moved price can reach, and those changed since the job's last tick",
        metrics.evaluated.clone(),
    );
    registry.register(
        "alerts_triggered",
        "Alerts claimed, one event each",
        metrics.triggered.clone(),
    );
    registry.register(
        "alerts_rearmed",
        "Repeating alerts re-armed because their cooldown passed",
        metrics.rearmed.clone(),
    );
    registry.register(
        "alerts_skipped",
        "Alerts not evaluated or not claimed, by reason (stale, malformed, no_quote, unavailable, expired; locked: triggered, but another transaction held the row, so it is claimed by a later tick)",
        metrics.skipped.clone(),
    );
    registry.register(
        "quote_errors",
        "Quote fetches that failed, and answers that gave tickers unusably (prices.source = \"http\"), by job",
        metrics.quote_errors.clone(),
    );
    registry.register(
        "fires_taken_over",
        "Fire times this daemon took over from a daemon sharing the database that stopped beating mid-run",
        metrics.takeovers.clone(),
    );
    registry.register(
        "deliveries",
        "Delivery attempts, by outcome (delivered, failed, dead, released) and the receiver's response",
        metrics.deliveries.clone(),
    );
    registry.register(
        "delivery_duration_seconds",
        "How long delivery attempts took",
        metrics.delivery_seconds.clone(),
    );
    registry.register(
        "quote_to_claim_seconds",
        "From a claimed alert's quote (its updated_at) to its claim's commit, by job",
        metrics.quote_to_claim.clone(),
    );
    registry.register(
        "claim_to_delivery_seconds",
        "From an event's claim (its triggered_at: the tick's time) to its receiver's 2xx",
        metrics.claim_to_delivery.clone(),
    );
    registry.register(
        "last_successful_tick_timestamp_seconds",
        "When each job last finished without error (unix seconds; 0: not yet)",
        metrics.last_success.clone(),
    );
    registry.register(
        "job_deadline_timestamp_seconds",
        "When each job counts as overdue unless a run of it succeeds first, here or (its fire time taken by another member) elsewhere: its third fire time after the last that did, or after the daemon started (unix seconds; +Inf: no further fire times)",
        metrics.deadline.clone(),
    );
    registry.register(
        "last_heartbeat_timestamp_seconds",
        "When this member's heartbeat last renewed its leases (unix seconds; 0: not yet)",
        metrics.last_heartbeat.clone(),
    );
    registry.register(
        "clock_offset_seconds",
        "The database's clock minus this member's, as its last heartbeat measured them: every decision takes the database's time, but the schedule's fire times come this much late (or early, when negative)",
        metrics.clock_offset.clone(),
    );
    registry.register(
        "cluster_members",
        "Daemons sharing the database, as it says at the scrape, by state: live (beat within the fire lease), lost (stopped beating within the last hour without leaving)",
        metrics.members.clone(),
    );
    registry.register(
        "outbox_pending",
        "Events waiting for delivery",
        metrics.outbox_pending.clone(),
    );
    registry.register("outbox_dead", "Dead letters", metrics.outbox_dead.clone());
    registry.register(
        "outbox_oldest_pending_age_seconds",
        "How long the oldest event waiting for delivery has waited (0: none waits)",
        metrics.outbox_oldest.clone(),
    );
    registry.register(
        "config_last_reload_successful",
        "Whether the last configuration reload (SIGHUP) succeeded",
        metrics.reload_successful.clone(),
    );
    registry.register(
        "config_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully (unix seconds)",
        metrics.reload_success_time.clone(),
    );
    registry.register(
        "quote_newest_age_seconds",
        "Among the tickers with enabled alerts the job covers, the age of the newest quote (+Inf: none has one); it only grows while the feed is stopped",
        metrics.quote_newest_age.clone(),
    );
    registry.register(
        "quote_oldest_age_seconds",
        "Among the tickers with enabled alerts the job covers, the age of the oldest quote",
        metrics.quote_oldest_age.clone(),
    );
    registry.register(
        "quotes_stale",
        "Tickers with enabled alerts the job covers whose quote is older than prices.max_age (or not dated): their alerts are not judged",
        metrics.quotes_stale.clone(),
    );
    registry.register(
        "quotes_missing",
        "Tickers with enabled alerts the job covers that have no quote",
        metrics.quotes_missing.clone(),
    );
    registry.register(
        "quote_max_age_seconds",
        "prices.max_age: a quote older than this triggers nothing",
        metrics.quote_max_age.clone(),
    );
    registry.register(
        "reacting_lag_seconds",
        "For a job that reacts to changes (on_change), how long the oldest change it covers that no run has judged yet has waited (0: none waits); it grows while the job falls behind",
        metrics.reacting_lag.clone(),
    );
    registry.register(
        "reacting_runs_per_second",
        "For a job that reacts to changes (on_change), its runs that succeeded, a second, over the last 10 s",
        metrics.reacting_runs.clone(),
    );
    registry.register(
        "config_restart_pending",
        "1 while the file has keys changed since the start that apply only at a restart",
        metrics.restart_pending.clone(),
    );
}

pub(super) fn now_seconds() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}
