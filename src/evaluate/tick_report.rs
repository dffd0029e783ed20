//! What a tick did, and a tick that failed part-way.

use std::time::Duration;

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Tickers in scope whose quote was written since the job's last tick.
    pub tickers_changed: u64,
    /// Enabled alerts read and judged: those the moved tickers' prices can
    /// reach, and those inserted, re-armed or edited since the last tick.
    pub evaluated: u64,
    /// Alerts judged triggered.
    pub matched: u64,
    /// Moved tickers not read: each moved inside the band between its
    /// alerts' nearest levels, which reaches none (`evaluate::quiet`).
    pub quiet: u64,
    /// The tick left what it observed, and the job's watermark, unwritten:
    /// a later tick writes them, within `evaluate::WRITTEN_WITHIN`
    /// (`evaluate::carried`).
    pub unwritten: bool,
    /// Alerts this tick claimed: one queued event each.
    pub triggered: u64,
    /// Alerts disabled, without an event, because their `expires_at` passed.
    pub expired: u64,
    /// Repeating alerts re-armed because their cooldown passed.
    pub rearmed: u64,
    /// Triggered alerts not claimed because they are snoozed: they stay
    /// armed.
    pub snoozed: u64,
    /// Snoozed alerts whose `snoozed_until` came: judged by this tick at the
    /// price of now.
    pub woken: u64,
    /// Banded alerts whose price came back past their level by their band
    /// (those whose cooldown had passed too are counted in `rearmed`).
    pub returned: u64,
    /// Changed alerts whose ticker has no quote.
    pub no_quote: u64,
    /// Changed tickers whose quote is older than `prices.max_age`, and the
    /// changed alerts of those tickers.
    pub stale_quotes: u64,
    pub stale_alerts: u64,
    /// Changed alerts whose ticker's quote was not fetched for this tick
    /// (the fetch failed, or the alert came after it was planned).
    pub unavailable: u64,
    /// Triggered alerts whose row another transaction held locked: neither
    /// claimed nor waited for; judged again by the first tick after the
    /// lock is gone.
    pub locked: u64,
    /// Tickers held back at the tick's end (not fetched, or with a trigger
    /// locked by someone else): judged again by the next tick, from where
    /// this one held them, while the job's window moves on.
    pub held: u64,
    /// Triggered alerts whose claim did not commit (the tick failed): judged
    /// again by the next tick.
    pub unclaimed: u64,
    /// Alert rows that cannot be evaluated.
    pub malformed_alerts: u64,
    /// Quotes whose price is not a positive number or whose time is not a time.
    pub malformed_quotes: u64,
    /// Failed quote fetches (the HTTP source).
    pub quote_errors: u64,
    pub claim_transactions: u64,
    /// Time spent in claim transactions (the writer's share of `duration`).
    pub claim_duration: Duration,
    /// Time spent fetching quotes before the tick (part of `duration`).
    pub fetch_duration: Duration,
    pub duration: Duration,
}

/// The table of a tick's counts, in the summary line's order: each count's
/// field, whose name is the count's name on every surface (the `run-job`
/// line, `status`, systemd's status, the log's fields, the metrics' skip
/// reasons, README), and the metrics series it feeds. A new count is one
/// line here. It is a macro because a log line's fields are names known when
/// it compiles: `tick_counts!(then!(args))` expands to `then! { args
/// name: Series, ... }`, which builds [`TickReport::counts`] here and the
/// daemon's log lines there.
macro_rules! tick_counts {
    ($then:ident ! ($($args:tt)*)) => {
        $then! { $($args)*
            evaluated: AlertsEvaluated,
            tickers_changed: TickersChanged,
            matched: Unexported,
            triggered: AlertsTriggered,
            locked: AlertsSkipped,
            held: Unexported,
            unclaimed: Unexported,
            expired: AlertsSkipped,
            rearmed: AlertsRearmed,
            snoozed: AlertsSkipped,
            woken: Unexported,
            returned: Unexported,
            no_quote: AlertsSkipped,
            stale_quotes: Unexported,
            stale_alerts: AlertsSkipped,
            unavailable: AlertsSkipped,
            malformed_alerts: AlertsSkipped,
            malformed_quotes: Unexported,
            quote_errors: QuoteErrors,
        }
    };
}
pub(crate) use tick_counts;

/// Where a tick's count goes in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// `price_alertd_tickers_changed_total`.
    TickersChanged,
    /// `price_alertd_alerts_evaluated_total`.
    AlertsEvaluated,
    /// `price_alertd_alerts_triggered_total`.
    AlertsTriggered,
    /// `price_alertd_alerts_rearmed_total`.
    AlertsRearmed,
    /// `price_alertd_quote_errors_total`.
    QuoteErrors,
    /// `price_alertd_alerts_skipped_total{reason="<the count's name>"}`.
    AlertsSkipped,
    /// Only the summary and the logs.
    Unexported,
}

/// One count of a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub name: &'static str,
    pub value: u64,
    pub series: Series,
}

macro_rules! counts_of {
    ($report:ident; $($name:ident: $series:ident,)*) => {
        [$(Count {
            name: stringify!($name),
            value: $report.$name,
            series: Series::$series,
        }),*]
    };
}

macro_rules! count_names {
    ($($name:ident: $series:ident,)*) => {
        [$(stringify!($name)),*]
    };
}

/// How many counts a tick has.
pub const COUNTS: usize = tick_counts!(count_names!()).len();

impl TickReport {
    /// The counts, in the summary line's order (see `tick_counts!`).
    pub fn counts(&self) -> [Count; COUNTS] {
        let report = self;
        tick_counts!(counts_of!(report;))
    }

    /// The report as `key=value` pairs: every count, then the time the tick
    /// took and its fetch's part of it. The `run-job` line, `status` and
    /// systemd's status show this.
    pub fn summary(&self) -> String {
        let mut line = String::new();
        for count in self.counts() {
            line.push_str(&format!("{}={} ", count.name, count.value));
        }
        line.push_str(&format!(
            "duration_ms={} fetch_ms={}",
            self.duration.as_millis(),
            self.fetch_duration.as_millis()
        ));
        line
    }

    /// Whether the tick did something an operator reads about at the
    /// default log level: it claimed, expired or met something wrong.
    pub fn notable(&self) -> bool {
        self.triggered > 0
            || self.locked > 0
            || self.expired > 0
            || self.malformed_alerts > 0
            || self.malformed_quotes > 0
            || self.quote_errors > 0
    }
}

/// A tick that failed part-way: what it committed before it failed (the
/// alerts it claimed, whose events are queued), what it did not, and why.
/// Its observations and watermark were not recorded: the next tick reads
/// the same changes again.
#[derive(Debug)]
pub struct TickFailed {
    pub report: Box<TickReport>,
    pub error: anyhow::Error,
}

impl std::fmt::Display for TickFailed {
    /// The cause alone, so that a failure that repeats reads the same each
    /// tick; the counts are the report's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for TickFailed {}
