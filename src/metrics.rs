//! Prometheus metrics (`price_alertd_*`) and the HTTP endpoint that serves
//! them with `/healthz`. The series are always kept; they are served only when
//! `[metrics] listen` is set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::evaluate::TickReport;
use crate::store::{self, Pool};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TickLabels {
    job: String,
    /// `ok`, `failed`, or `skipped` (the previous run was still going).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How one delivery attempt ended, for the `deliveries_total` series.
#[derive(Debug, Clone, Copy)]
pub enum Delivery {
    Delivered,
    Failed,
    Dead,
    Released,
}

/// Every series the daemon exports.
pub struct Metrics {
    registry: Registry,
    ticks: Family<TickLabels, Counter>,
    tick_seconds: Family<JobLabels, Histogram>,
    evaluated: Family<JobLabels, Counter>,
    triggered: Family<JobLabels, Counter>,
    skipped: Family<SkipLabels, Counter>,
    deliveries: Family<OutcomeLabels, Counter>,
    delivery_seconds: Histogram,
    last_success: Family<JobLabels, Gauge<f64, AtomicU64>>,
    outbox_pending: Gauge,
    outbox_dead: Gauge,
    reload_successful: Gauge,
    reload_success_time: Gauge<f64, AtomicU64>,
}

fn tick_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("price_alertd");
        let metrics = Metrics {
            ticks: Family::default(),
            tick_seconds: Family::new_with_constructor(tick_histogram),
            evaluated: Family::default(),
            triggered: Family::default(),
            skipped: Family::default(),
            deliveries: Family::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            last_success: Family::default(),
            outbox_pending: Gauge::default(),
            outbox_dead: Gauge::default(),
            reload_successful: Gauge::default(),
            reload_success_time: Gauge::default(),
            registry: Registry::default(),
        };
        // The configuration read at start counts as a successful load, as
        // Prometheus's own series do.
        metrics.reload_successful.set(1);
        metrics.reload_success_time.set(now_seconds());
        registry.register(
            "ticks",
            "Job runs, by job and result (ok, failed, skipped)",
            metrics.ticks.clone(),
        );
        registry.register(
            "tick_duration_seconds",
            "How long job runs took",
            metrics.tick_seconds.clone(),
        );
        registry.register(
            "alerts_evaluated",
            "Enabled alerts read and judged",
            metrics.evaluated.clone(),
        );
        registry.register(
            "alerts_triggered",
            "Alerts claimed, one event each",
            metrics.triggered.clone(),
        );
        registry.register(
            "alerts_skipped",
            "Alerts not evaluated, by reason (stale, malformed, no_quote, unavailable, expired)",
            metrics.skipped.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by outcome (delivered, failed, dead, released)",
            metrics.deliveries.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "How long delivery attempts took",
            metrics.delivery_seconds.clone(),
        );
        registry.register(
            "last_successful_tick_timestamp_seconds",
            "When each job last finished without error (unix seconds)",
            metrics.last_success.clone(),
        );
        registry.register(
            "outbox_pending",
            "Events waiting for delivery",
            metrics.outbox_pending.clone(),
        );
        registry.register("outbox_dead", "Dead letters", metrics.outbox_dead.clone());
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
        Metrics {
            registry,
            ..metrics
        }
    }
}

fn now_seconds() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

impl Metrics {
    /// A SIGHUP reload: applied, or refused (the running configuration stays).
    pub fn reloaded(&self, applied: bool) {
        self.reload_successful.set(i64::from(applied));
        if applied {
            self.reload_success_time.set(now_seconds());
        }
    }

    pub fn tick_skipped(&self, job: &str) {
        self.ticks
            .get_or_create(&TickLabels {
                job: job.to_owned(),
                result: "skipped",
            })
            .inc();
    }

    pub fn tick_failed(&self, job: &str, duration: Duration) {
        self.ticks
            .get_or_create(&TickLabels {
                job: job.to_owned(),
                result: "failed",
            })
            .inc();
        self.tick_seconds
            .get_or_create(&JobLabels {
                job: job.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// A job run that finished without error; `report` for evaluations.
    pub fn tick_succeeded(&self, job: &str, duration: Duration, report: Option<&TickReport>) {
        let labels = JobLabels {
            job: job.to_owned(),
        };
        self.ticks
            .get_or_create(&TickLabels {
                job: job.to_owned(),
                result: "ok",
            })
            .inc();
        self.tick_seconds
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        self.last_success.get_or_create(&labels).set(now_seconds());
        if let Some(report) = report {
            self.evaluated
                .get_or_create(&labels)
                .inc_by(report.evaluated);
            self.triggered
                .get_or_create(&labels)
                .inc_by(report.triggered);
            for (reason, count) in [
                ("stale", report.stale_alerts),
                ("malformed", report.malformed_alerts),
                ("no_quote", report.no_quote),
                ("unavailable", report.unavailable),
                ("expired", report.expired),
            ] {
                self.skipped
                    .get_or_create(&SkipLabels { reason })
                    .inc_by(count);
            }
        }
    }

    pub fn delivery(&self, outcome: Delivery, duration: Duration) {
        let outcome = match outcome {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::Dead => "dead",
            Delivery::Released => "released",
        };
        self.deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.delivery_seconds.observe(duration.as_secs_f64());
    }

    /// The exposition text, with the outbox gauges read from the database now.
    pub fn render(&self, pending: u64, dead: u64) -> String {
        self.outbox_pending.set(pending as i64);
        self.outbox_dead.set(dead as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String never fails");
        text
    }
}

/// Binds `listen` and serves `/metrics` and `/healthz` until the runtime ends.
/// Binding happens before this returns, so a taken port fails the start.
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>, pool: Pool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening for metrics on {listen}"))?;
    tracing::info!(%listen, "serving /metrics and /healthz");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, pool) = (metrics.clone(), pool.clone());
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let (metrics, pool) = (metrics.clone(), pool.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            answer(request.uri().path(), &metrics, &pool).await,
                        )
                    }
                },
            );
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(error) = tokio::time::timeout(Duration::from_secs(30), connection)
                    .await
                    .unwrap_or(Ok(()))
                {
                    tracing::debug!(%error, "a metrics connection failed");
                }
            });
        }
    });
    Ok(())
}

async fn answer(path: &str, metrics: &Metrics, pool: &Pool) -> hyper::Response<Full<Bytes>> {
    let counts = store::blocking(pool, "counting the outbox", |connection| {
        store::outbox::backlog(connection)
    })
    .await;
    let (status, content_type, body) = match (path, counts) {
        ("/metrics", Ok((pending, dead))) => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(pending, dead),
        ),
        ("/healthz", Ok(_)) => (200, "text/plain; charset=utf-8", "ok\n".to_owned()),
        ("/metrics" | "/healthz", Err(error)) => (
            503,
            "text/plain; charset=utf-8",
            format!("the database is not answering: {error:#}\n"),
        ),
        _ => (
            404,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".to_owned(),
        ),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
