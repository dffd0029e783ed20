//! Prometheus metrics (`price_alertd_*`) and the HTTP endpoint that serves
//! them with `/healthz`. The series are always kept; they are served only when
//! `[metrics] listen` is set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::evaluate::{Series, TickReport};
use crate::store::{self, Pool};

/// A job's series are labelled `job_name`: `job` is Prometheus's own target
/// label, and a scrape would rename ours to `exported_job`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TickLabels {
    job_name: String,
    /// `ok`, `failed`, `skipped` (the previous run was still going), or
    /// `elsewhere` (another daemon sharing the database took the fire time).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: &'static str,
    /// What the receiver answered: `2xx` ... `5xx`, `timeout`, `connection`
    /// (no connection), `error` (another failure), `none` (not sent to the end).
    response: &'static str,
}

const TICK_RESULTS: [&str; 4] = ["ok", "failed", "skipped", "elsewhere"];
/// Every (outcome, response) a delivery attempt can end with.
const DELIVERY_KINDS: [(&str, &[&str]); 4] = [
    ("delivered", &["2xx"]),
    (
        "failed",
        &["3xx", "4xx", "5xx", "timeout", "connection", "error"],
    ),
    (
        "dead",
        &["3xx", "4xx", "5xx", "timeout", "connection", "error"],
    ),
    ("released", &["none"]),
];

/// How one delivery attempt ended, for the `deliveries_total` series.
#[derive(Debug, Clone, Copy)]
pub enum Delivery {
    Delivered,
    Failed,
    Dead,
    Released,
}

/// What the receiver answered to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    Status(u16),
    Timeout,
    Connection,
    Error,
    /// Not sent to the end: the daemon stopped.
    None,
}

impl Response {
    fn label(self) -> &'static str {
        match self {
            Response::Status(200..=299) => "2xx",
            Response::Status(300..=399) => "3xx",
            Response::Status(400..=499) => "4xx",
            Response::Status(500..=599) => "5xx",
            Response::Status(_) | Response::Error => "error",
            Response::Timeout => "timeout",
            Response::Connection => "connection",
            Response::None => "none",
        }
    }
}

/// The exposition formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, for scrapers that ask for it in `Accept`.
    OpenMetrics,
    /// Prometheus's classic text format (0.0.4), for everyone else.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept
                .split(',')
                .any(|range| range.trim().starts_with("application/openmetrics-text"))
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// What the database says at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub pending: u64,
    pub dead: u64,
    /// How long the oldest pending event has waited; zero if none waits.
    pub oldest_pending: Duration,
}

/// Every series the daemon exports.
pub struct Metrics {
    registry: Registry,
    ticks: Family<TickLabels, Counter>,
    tick_seconds: Family<JobLabels, Histogram>,
    tickers_changed: Family<JobLabels, Counter>,
    evaluated: Family<JobLabels, Counter>,
    triggered: Family<JobLabels, Counter>,
    rearmed: Family<JobLabels, Counter>,
    skipped: Family<SkipLabels, Counter>,
    takeovers: Family<JobLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    delivery_seconds: Histogram,
    last_success: Family<JobLabels, Gauge<f64, AtomicU64>>,
    outbox_pending: Gauge,
    outbox_dead: Gauge,
    outbox_oldest: Gauge<f64, AtomicU64>,
    reload_successful: Gauge,
    reload_success_time: Gauge<f64, AtomicU64>,
}

fn tick_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut metrics = Metrics {
            ticks: Family::default(),
            tick_seconds: Family::new_with_constructor(tick_histogram),
            tickers_changed: Family::default(),
            evaluated: Family::default(),
            triggered: Family::default(),
            rearmed: Family::default(),
            skipped: Family::default(),
            takeovers: Family::default(),
            deliveries: Family::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            last_success: Family::default(),
            outbox_pending: Gauge::default(),
            outbox_dead: Gauge::default(),
            outbox_oldest: Gauge::default(),
            reload_successful: Gauge::default(),
            reload_success_time: Gauge::default(),
            registry: Registry::default(),
        };
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        metrics.register(root.sub_registry_with_prefix("price_alertd"));
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
        for (outcome, responses) in DELIVERY_KINDS {
            for &response in responses {
                let _ = metrics
                    .deliveries
                    .get_or_create(&DeliveryLabels { outcome, response });
            }
        }
        metrics
    }
}

fn now_seconds() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "build",
            "The version of price-alertd running",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "ticks",
            "Job runs, by job and result (ok, failed, skipped; elsewhere: another daemon sharing the database took the fire time)",
            self.ticks.clone(),
        );
        registry.register(
            "tick_duration_seconds",
            "How long job runs took",
            self.tick_seconds.clone(),
        );
        registry.register(
            "tickers_changed",
            "Tickers whose quote a job's tick found written since its last tick",
            self.tickers_changed.clone(),
        );
        registry.register(
            "alerts_evaluated",
            "Enabled alerts read and judged: those a moved price can reach, and those changed since the job's last tick",
            self.evaluated.clone(),
        );
        registry.register(
            "alerts_triggered",
            "Alerts claimed, one event each",
            self.triggered.clone(),
        );
        registry.register(
            "alerts_rearmed",
            "Repeating alerts re-armed because their cooldown passed",
            self.rearmed.clone(),
        );
        registry.register(
            "alerts_skipped",
            "Alerts not evaluated or not claimed, by reason (stale, malformed, no_quote, unavailable, expired; locked: triggered, but another transaction held the row, so it is claimed by a later tick)",
            self.skipped.clone(),
        );
        registry.register(
            "fires_taken_over",
            "Fire times this daemon took over from a daemon sharing the database that stopped beating mid-run",
            self.takeovers.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by outcome (delivered, failed, dead, released) and the receiver's response",
            self.deliveries.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "How long delivery attempts took",
            self.delivery_seconds.clone(),
        );
        registry.register(
            "last_successful_tick_timestamp_seconds",
            "When each job last finished without error (unix seconds; 0: not yet)",
            self.last_success.clone(),
        );
        registry.register(
            "outbox_pending",
            "Events waiting for delivery",
            self.outbox_pending.clone(),
        );
        registry.register("outbox_dead", "Dead letters", self.outbox_dead.clone());
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "How long the oldest event waiting for delivery has waited (0: none waits)",
            self.outbox_oldest.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration reload (SIGHUP) succeeded",
            self.reload_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (unix seconds)",
            self.reload_success_time.clone(),
        );
    }

    /// Creates the series of these jobs at zero, so that they exist before
    /// their first run (at start and after a reload).
    pub fn jobs<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            let labels = JobLabels {
                job_name: name.to_owned(),
            };
            for result in TICK_RESULTS {
                let _ = self.ticks.get_or_create(&TickLabels {
                    job_name: name.to_owned(),
                    result,
                });
            }
            let _ = self.tick_seconds.get_or_create(&labels);
            let _ = self.tickers_changed.get_or_create(&labels);
            let _ = self.evaluated.get_or_create(&labels);
            let _ = self.triggered.get_or_create(&labels);
            let _ = self.rearmed.get_or_create(&labels);
            let _ = self.last_success.get_or_create(&labels);
            let _ = self.takeovers.get_or_create(&labels);
        }
    }

    /// A SIGHUP reload: applied, or refused (the running configuration stays).
    pub fn reloaded(&self, applied: bool) {
        self.reload_successful.set(i64::from(applied));
        if applied {
            self.reload_success_time.set(now_seconds());
        }
    }

    fn tick(&self, job: &str, result: &'static str) {
        self.ticks
            .get_or_create(&TickLabels {
                job_name: job.to_owned(),
                result,
            })
            .inc();
    }

    pub fn tick_skipped(&self, job: &str) {
        self.tick(job, "skipped");
    }

    /// Another member took this fire time.
    pub fn tick_elsewhere(&self, job: &str) {
        self.tick(job, "elsewhere");
    }

    /// This member took over a fire time from one that stopped beating.
    pub fn taken_over(&self, job: &str) {
        self.takeovers
            .get_or_create(&JobLabels {
                job_name: job.to_owned(),
            })
            .inc();
    }

    /// A job run that failed; `committed`, for an evaluation that failed
    /// part-way, what it committed before it failed.
    pub fn tick_failed(&self, job: &str, duration: Duration, committed: Option<&TickReport>) {
        self.tick(job, "failed");
        self.tick_seconds
            .get_or_create(&JobLabels {
                job_name: job.to_owned(),
            })
            .observe(duration.as_secs_f64());
        if let Some(report) = committed {
            self.count(job, report);
        }
    }

    /// A job run that finished without error; `report` for evaluations.
    pub fn tick_succeeded(&self, job: &str, duration: Duration, report: Option<&TickReport>) {
        let labels = JobLabels {
            job_name: job.to_owned(),
        };
        self.tick(job, "ok");
        self.tick_seconds
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        self.last_success.get_or_create(&labels).set(now_seconds());
        if let Some(report) = report {
            self.count(job, report);
        }
    }

    /// A tick's counts.
    fn count(&self, job: &str, report: &TickReport) {
        let labels = JobLabels {
            job_name: job.to_owned(),
        };
        for count in report.counts() {
            let family = match count.series {
                Series::TickersChanged => &self.tickers_changed,
                Series::AlertsEvaluated => &self.evaluated,
                Series::AlertsTriggered => &self.triggered,
                Series::AlertsRearmed => &self.rearmed,
                Series::AlertsSkipped => {
                    self.skipped
                        .get_or_create(&SkipLabels { reason: count.name })
                        .inc_by(count.value);
                    continue;
                }
                Series::Unexported => continue,
            };
            family.get_or_create(&labels).inc_by(count.value);
        }
    }

    pub fn delivery(&self, outcome: Delivery, response: Response, duration: Duration) {
        let outcome = match outcome {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::Dead => "dead",
            Delivery::Released => "released",
        };
        self.deliveries
            .get_or_create(&DeliveryLabels {
                outcome,
                response: response.label(),
            })
            .inc();
        self.delivery_seconds.observe(duration.as_secs_f64());
    }

    /// The exposition in `format`, with the outbox gauges as the database
    /// says now.
    pub fn render(&self, format: Format, backlog: Backlog) -> String {
        self.outbox_pending.set(backlog.pending as i64);
        self.outbox_dead.set(backlog.dead as i64);
        self.outbox_oldest.set(backlog.oldest_pending.as_secs_f64());
        let mut text = String::new();
        match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
        }
        .expect("writing to a String never fails");
        text
    }
}

/// This process's CPU, memory, file descriptors and start time, read from
/// /proc at each scrape under the names every exporter uses (`process_*`).
#[derive(Debug)]
struct Process;

/// Linux reports CPU times in clock ticks of USER_HZ, 100 on every
/// architecture Debian ships.
const CLOCK_TICKS: f64 = 100.0;

impl Process {
    /// `(utime + stime in seconds, virtual bytes, start time in ticks since boot)`.
    fn stat() -> Option<(f64, f64, f64)> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after `(comm)`; comm may hold spaces and parentheses.
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        Some((
            (field(14)? + field(15)?) / CLOCK_TICKS,
            field(23)?,
            field(22)?,
        ))
    }

    fn resident_bytes() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024.0)
    }

    fn boot_time() -> Option<f64> {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    fn max_fds() -> Option<f64> {
        std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    fn open_fds() -> Option<f64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = Process::stat();
        if let Some((cpu, _, _)) = stat {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let start = stat
            .zip(Process::boot_time())
            .map(|((_, _, ticks), boot)| boot + ticks / CLOCK_TICKS);
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Process::resident_bytes(),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.map(|(_, bytes, _)| bytes),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                start,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                Process::open_fds(),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                Process::max_fds(),
            ),
        ] {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

/// `metrics.listen` cannot be listened on (taken, or not an address of this
/// host); attached to the error, so that the CLI answers EX_UNAVAILABLE.
#[derive(Debug)]
pub struct CannotListen(String);

impl std::fmt::Display for CannotListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn cannot_listen(listen: SocketAddr, error: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(error).context(CannotListen(format!(
        "listening for metrics on {listen} (metrics.listen)"
    )))
}

/// Checks that `listen` is free to serve on, as `run` will bind it.
pub fn check_listen(listen: SocketAddr) -> anyhow::Result<()> {
    std::net::TcpListener::bind(listen)
        .map(drop)
        .map_err(|error| cannot_listen(listen, error))
}

/// Binds `listen` and serves `/metrics` and `/healthz` until the runtime ends.
/// Binding happens before this returns, so a taken port fails the start.
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>, pool: Pool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| cannot_listen(listen, error))?;
    tracing::info!(%listen, "serving /metrics and /healthz");
    if !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "the metrics endpoint listens beyond this host: it has no authentication, so expose it only to networks that may read the alert counts and outbox backlog"
        );
    }
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
                        let accept = request
                            .headers()
                            .get(hyper::header::ACCEPT)
                            .and_then(|value| value.to_str().ok());
                        Ok::<_, std::convert::Infallible>(
                            answer(request.uri().path(), accept, &metrics, &pool).await,
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

async fn answer(
    path: &str,
    accept: Option<&str>,
    metrics: &Metrics,
    pool: &Pool,
) -> hyper::Response<Full<Bytes>> {
    let backlog = store::blocking(pool, "reading the outbox", |connection| {
        let (pending, dead) = store::outbox::backlog(connection)?;
        Ok((pending, dead, store::outbox::oldest_pending(connection)?))
    })
    .await;
    let (status, content_type, body) = match (path, backlog) {
        ("/metrics", Ok((pending, dead, oldest))) => {
            let format = Format::negotiate(accept);
            let oldest_pending = oldest
                .as_deref()
                .and_then(crate::evaluate::parse_time)
                .and_then(|created| (chrono::Utc::now() - created).to_std().ok())
                .unwrap_or_default();
            let backlog = Backlog {
                pending,
                dead,
                oldest_pending,
            };
            (200, format.content_type(), metrics.render(format, backlog))
        }
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
