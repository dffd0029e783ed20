//! Evaluation: the pure condition logic, and the tick that fans the reads out
//! over the fixed rayon pool and funnels the claims into one writer. No HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDateTime, Utc};

use crate::config::{EvaluatorConfig, Scope};
use crate::log_recurring;
use crate::logging;
use crate::recurring::Recurring;
use crate::store::alerts::{self, AlertRow, Observation, Trigger};
use crate::store::changes;
use crate::store::{self, Pool};

/// The conditions of `price_alerts.condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// price >= target_price
    Above,
    /// price <= target_price
    Below,
    /// the previous observed price was below target_price, and price is at or above it
    CrossingUp,
    /// the previous observed price was above target_price, and price is at or below it
    CrossingDown,
    /// price has risen by at least target_price percent from reference_price
    MovingUpPct,
    /// price has fallen by at least target_price percent from reference_price
    MovingDownPct,
}

impl Condition {
    pub fn parse(text: &str) -> Option<Condition> {
        match text {
            "above" => Some(Condition::Above),
            "below" => Some(Condition::Below),
            "crossing_up" => Some(Condition::CrossingUp),
            "crossing_down" => Some(Condition::CrossingDown),
            "moving_up_pct" => Some(Condition::MovingUpPct),
            "moving_down_pct" => Some(Condition::MovingDownPct),
            _ => None,
        }
    }
}

/// A ticker's price this tick, and the one the daemon observed before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub price: f64,
    pub previous: Option<f64>,
}

/// What evaluating one alert decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fire,
    Hold,
    /// Its `expires_at` has passed: it never fires.
    Expired,
    /// The row cannot be evaluated; the reason names what is wrong.
    Malformed(String),
}

/// Decides one alert against a valid price at `now`. Pure.
pub fn judge(alert: &AlertRow, observed: Observed, now: DateTime<Utc>) -> Verdict {
    let Some(condition) = Condition::parse(&alert.condition) else {
        return Verdict::Malformed(format!(
            "unknown condition {:?}",
            logging::bounded(&alert.condition)
        ));
    };
    let Some(target) = alert.target_price.filter(|target| target.is_finite()) else {
        return Verdict::Malformed("target_price is missing or not a finite number".to_owned());
    };
    if let Err(reason) = cooldown_of(alert) {
        return Verdict::Malformed(reason);
    }
    if let Some(expiry) = &alert.expires_at {
        match parse_time(expiry) {
            Some(expiry) if expiry <= now => return Verdict::Expired,
            Some(_) => {}
            None => {
                return Verdict::Malformed(format!(
                    "expires_at {:?} is not a date and time",
                    logging::bounded(expiry)
                ));
            }
        }
    }
    let Observed { price, previous } = observed;
    let fires = match condition {
        Condition::Above => price >= target,
        Condition::Below => price <= target,
        Condition::CrossingUp => {
            previous.is_some_and(|previous| previous < target) && price >= target
        }
        Condition::CrossingDown => {
            previous.is_some_and(|previous| previous > target) && price <= target
        }
        Condition::MovingUpPct | Condition::MovingDownPct => {
            let Some(reference) = alert
                .reference_price
                .filter(|reference| reference.is_finite() && *reference > 0.0)
            else {
                return Verdict::Malformed(
                    "reference_price is missing or not a positive number".to_owned(),
                );
            };
            let change_pct = (price - reference) / reference * 100.0;
            if condition == Condition::MovingUpPct {
                change_pct >= target
            } else {
                -change_pct >= target
            }
        }
    };
    if fires { Verdict::Fire } else { Verdict::Hold }
}

/// The shortest cooldown: a repeating alert fires at most once a second.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);

/// How long a repeating alert waits, once it triggered, before the daemon
/// re-arms it: its `cooldown` (`"15m"`, `"1h 30m"`), none if it has none (NULL
/// or blank), or why it is not one.
pub fn cooldown_of(alert: &AlertRow) -> Result<Option<Duration>, String> {
    alert.cooldown.as_deref().map_or(Ok(None), parse_cooldown)
}

/// When a repeating alert that fires at `now` is due to be re-armed (unix
/// ms): `None` for one that fires once (or whose cooldown is not valid, which
/// `judge` never fires).
pub fn rearm_at(alert: &AlertRow, now: DateTime<Utc>) -> Option<i64> {
    let cooldown = cooldown_of(alert).ok().flatten()?;
    Some(
        now.timestamp_millis()
            .saturating_add(i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// A cooldown as stored: `None` if blank.
pub fn parse_cooldown(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(cooldown) if cooldown >= MIN_COOLDOWN => Ok(Some(cooldown)),
        Ok(_) => Err(format!(
            "cooldown {:?} is shorter than 1s",
            logging::bounded(text)
        )),
        Err(_) => Err(format!(
            "cooldown {:?} is not a duration such as \"15m\"",
            logging::bounded(text)
        )),
    }
}

/// Parses a stored time: RFC 3339, or SQLite's `YYYY-MM-DD HH:MM:SS[.SSS]`
/// (UTC, as `datetime('now')` writes it).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|naive| naive.and_utc())
        })
}

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
    /// Alerts this tick claimed: one queued event each.
    pub triggered: u64,
    /// Alerts disabled, without an event, because their `expires_at` passed.
    pub expired: u64,
    /// Repeating alerts re-armed because their cooldown passed.
    pub rearmed: u64,
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

impl TickReport {
    /// The counts, by the names the summary line, logs and docs use, in
    /// the summary line's order. (`alerts_read` is `evaluated` again, under
    /// the name that says what it measures; `evaluated` stays for scripts.)
    pub fn counts(&self) -> [(&'static str, u64); 16] {
        [
            ("evaluated", self.evaluated),
            ("tickers_changed", self.tickers_changed),
            ("alerts_read", self.evaluated),
            ("matched", self.matched),
            ("triggered", self.triggered),
            ("locked", self.locked),
            ("unclaimed", self.unclaimed),
            ("expired", self.expired),
            ("rearmed", self.rearmed),
            ("no_quote", self.no_quote),
            ("stale_quotes", self.stale_quotes),
            ("stale_alerts", self.stale_alerts),
            ("unavailable", self.unavailable),
            ("malformed_alerts", self.malformed_alerts),
            ("malformed_quotes", self.malformed_quotes),
            ("quote_errors", self.quote_errors),
        ]
    }
}

/// What a tick evaluates, besides the database.
pub struct TickOptions<'a> {
    /// The job's name: with its scope and quote age, it keys the job's
    /// watermark of changes seen.
    pub job: &'a str,
    pub evaluator: &'a EvaluatorConfig,
    /// A quote older than this never triggers.
    pub max_age: Duration,
    /// The tickers this job covers.
    pub scope: &'a Scope,
    /// With a quote source that is fetched (`prices.source = "http"`), the
    /// tickers whose quote was fetched for this tick: the only ones judged.
    /// Any other ticker with enabled alerts (a fetch failed; an alert
    /// inserted or re-armed since the fetch was planned) is held back to the
    /// next tick, never judged on an older stored quote. `None`: the quotes
    /// table, which the application keeps current.
    pub fetched: Option<&'a HashSet<String>>,
    /// What earlier ticks of this process saw.
    pub memory: &'a TickMemory,
}

/// What the ticks of one process remember of each other, so that a
/// condition that lasts is logged when it starts, changes or ends, not
/// every tick.
#[derive(Debug, Default)]
pub struct TickMemory {
    /// The problem each ticker's quote had at the last tick that looked.
    quote_problems: Mutex<HashMap<String, QuoteProblem>>,
    /// Triggered alerts held locked by another transaction.
    locked: Mutex<Recurring>,
}

/// Why a ticker's quote cannot be used this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteProblem {
    /// The price is not a positive number (malformed).
    BadPrice,
    /// `updated_at` is not a date and time (malformed).
    BadTime,
    /// `updated_at` lies more than [`FUTURE_SKEW`] ahead of the clock: a feed
    /// with a wrong clock (malformed).
    Future,
    /// Older than `prices.max_age`.
    Stale,
}

impl QuoteProblem {
    fn describe(self) -> &'static str {
        match self {
            QuoteProblem::BadPrice => {
                "skipping a quote whose price is not a positive number until it is fixed"
            }
            QuoteProblem::BadTime => {
                "skipping a quote whose updated_at is not a date and time until it is fixed"
            }
            QuoteProblem::Future => {
                "skipping a quote dated in the future (more than 1 minute ahead of this host's clock) until it is fixed"
            }
            QuoteProblem::Stale => {
                "stale quote: its alerts are not evaluated until the quote is fresh again"
            }
        }
    }
}

/// How far ahead of the daemon's clock a quote's time may be and still count
/// (clocks of the source and this host differ a little). Further ahead, the
/// quote is malformed: it would otherwise count as fresh until that time plus
/// `prices.max_age`.
pub const FUTURE_SKEW: Duration = Duration::from_secs(60);

/// At most this many malformed-row warnings per tick; the rest are counted.
const WARNINGS_PER_TICK: u64 = 20;

/// Triggers a reader sends the writer at once.
const TRIGGER_CHUNK: usize = 512;

/// Builds the fixed pool that evaluates alerts.
pub fn thread_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|index| format!("evaluate-{index}"))
        .build()
        .context("starting the evaluation threads")
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

/// Runs one evaluation tick: it reads what changed since this job's last
/// tick, not every alert. Blocking: call it from `spawn_blocking` or a plain
/// thread. Reads run on `workers`, one pooled connection per task; the calling
/// thread claims in batches of `claim_batch` (with a helper where the engine
/// runs claims side by side), so the readers never queue on SQLite's write
/// lock.
///
/// What changed: tickers whose quote was written since the job's watermark
/// (their alerts the move can reach, through the level index), and alerts
/// inserted, re-armed or edited since (whatever their quote did); expiries
/// come due through their own index. Every alert that holds at a fresh quote
/// was therefore judged at that quote, by this tick or an earlier one, as a
/// full scan would judge it.
pub fn tick(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    options: &TickOptions<'_>,
) -> Result<TickReport, TickFailed> {
    tick_at(workers, pool, options, Utc::now())
}

/// A tick as of `now`: the time quotes' age, expiries and cooldowns are
/// judged by (the claims stamp the time they commit).
pub fn tick_at(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    options: &TickOptions<'_>,
    now: DateTime<Utc>,
) -> Result<TickReport, TickFailed> {
    let started = Instant::now();
    let mut report = TickReport::default();
    let outcome = stages(workers, pool, options, now, &mut report);
    report.duration = started.elapsed();
    match outcome {
        Ok(()) => Ok(report),
        Err(error) => Err(TickFailed {
            report: Box::new(report),
            error,
        }),
    }
}

/// The tick's stages: prepare → plan → evaluate and claim → observe. Counts
/// into `report` as they go, so that a failure leaves what was done.
fn stages(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    options: &TickOptions<'_>,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut writer = pool.get()?;
    let mut snapshot = prepare(&mut writer, options, now)?;
    report.expired = snapshot.expired;
    report.rearmed = snapshot.rearmed;
    let candidates = std::mem::take(&mut snapshot.candidates);
    let plan = plan(candidates, options, now, report);
    log_quote_problems(&options.memory.quote_problems, &plan);
    let warnings = AtomicU64::new(0);
    if plan.blank_tickers {
        name_blank_ticker_alerts(&mut writer, &warnings)?;
    }
    let prepared = started.elapsed();

    let readers = Readers {
        pool,
        work: &plan.work,
        window: snapshot.window,
        now,
        read: AtomicU64::new(0),
        malformed: AtomicU64::new(0),
        warnings,
    };
    let claimed = evaluate_and_claim(workers, &readers, &mut writer, options, report);
    let evaluated_and_claimed = started.elapsed();
    report.evaluated += readers.read.into_inner();
    report.malformed_alerts += readers.malformed.into_inner();
    let suppressed = readers
        .warnings
        .into_inner()
        .saturating_sub(WARNINGS_PER_TICK);
    if suppressed > 0 {
        tracing::warn!(
            suppressed,
            "more malformed alerts were skipped than were logged"
        );
    }
    let locked = claimed?;
    report.locked = locked.len() as u64;
    log_locked(&options.memory.locked, &locked);
    observe(&mut writer, &snapshot, plan, &locked, now)?;
    let duration = started.elapsed();
    tracing::debug!(
        prepare_ms = prepared.as_millis() as u64,
        evaluate_and_claim_ms = (evaluated_and_claimed - prepared).as_millis() as u64,
        observe_ms = (duration - evaluated_and_claimed).as_millis() as u64,
        claim_ms = report.claim_duration.as_millis() as u64,
        tickers_changed = report.tickers_changed,
        alerts_read = report.evaluated,
        "tick phases"
    );
    Ok(())
}

/// A triggered alert whose row another transaction held locked: its id and
/// ticker.
type Locked = (i64, String);

/// At most this many ids of locked alerts in one log line.
const LOCKED_IDS_LOGGED: usize = 10;

/// Logs the triggered alerts left to a later tick because someone else held
/// their rows: when that starts or the alerts change, once a minute while
/// it lasts, and when it ends.
fn log_locked(recurring: &Mutex<Recurring>, locked: &[Locked]) {
    let mut recurring = recurring
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if locked.is_empty() {
        if let Some(ticks) = recurring.succeeded() {
            tracing::info!(
                ticks,
                "no triggered alert is held locked by another transaction any more"
            );
        }
        return;
    }
    let mut ids: Vec<String> = locked
        .iter()
        .take(LOCKED_IDS_LOGGED)
        .map(|(id, _)| id.to_string())
        .collect();
    if locked.len() > LOCKED_IDS_LOGGED {
        ids.push(format!("and {} more", locked.len() - LOCKED_IDS_LOGGED));
    }
    log_recurring!(
        warn,
        recurring,
        format!(
            "alerts {} are locked by another transaction",
            ids.join(", ")
        ),
        locked = locked.len(),
        alert_id = locked[0].0,
        "triggered alerts left for the first tick after the lock is released"
    );
}

/// The changes a tick reads: those numbered after `since` (the job's
/// watermark) up to `until` (the last the tick could see when it looked).
/// `settled` (at most `until`) is how far the watermark may move: no change
/// numbered up to it can still appear.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: i64,
    until: i64,
    settled: i64,
}

/// What changed in the window for one ticker.
#[derive(Debug, Clone, Copy)]
struct Change {
    /// Its quote was written in the window: its reachable alerts are read.
    moved: bool,
    /// How many of its enabled alerts changed in the window, if any did.
    changed_alerts: Option<u64>,
    /// The lowest change number that brought it here.
    first_change: i64,
}

/// A ticker the tick must look at: what changed, and what the store holds
/// for it. One per ticker, never one per alert; kept small, as a job's
/// first tick has one for every ticker.
struct Candidate {
    ticker: String,
    change: Change,
    /// Its quote: `(price, updated_at)`.
    quote: Option<(Option<f64>, String)>,
    previous: Option<f64>,
    /// Whether it has enabled alerts at all (only those tickers' prices
    /// become observations, as a full scan records them).
    has_alerts: bool,
}

/// What the store holds for a tick.
struct Snapshot {
    /// The job's watermark key: its name, scope and quote age.
    job: String,
    window: Window,
    /// Alerts this tick expired.
    expired: u64,
    /// Repeating alerts this tick re-armed.
    rearmed: u64,
    candidates: Vec<Candidate>,
}

/// The key of a job's watermark: a job whose scope or quote age changes
/// (on a reload) starts over, as the tickers it now covers, or the quotes it
/// now takes as fresh, were never its to look at.
fn watermark_key(options: &TickOptions<'_>) -> String {
    format!(
        "{} [{}] max_age={}s",
        options.job,
        options.scope.describe(),
        options.max_age.as_secs()
    )
}

/// The store's reads before the evaluation, on the writer's connection:
/// expiry first, so an expired alert is never read as enabled; then, in one
/// read transaction, the window of changes and the tickers they concern.
fn prepare(
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<Snapshot> {
    // Re-armed alerts are changes of this tick's window: judged below.
    let rearmed = alerts::rearm_cooled_down(writer, &store::timestamp(now), now.timestamp_millis())
        .context("re-arming repeating alerts")? as u64;
    let expired =
        alerts::expire_due(writer, &store::timestamp(now)).context("expiring alerts")? as u64;
    let job = watermark_key(options);
    let (window, mut candidates) = store::read_transaction(writer, |reader| {
        let horizon = changes::horizon(reader).context("reading how far the changes reach")?;
        // A job that never ran reads everything once: every row's number is 0 or more.
        let since = changes::watermark(reader, &job)
            .context("reading the job's watermark")?
            .unwrap_or(-1);
        let window = Window {
            since,
            until: horizon.visible,
            settled: horizon.settled.min(horizon.visible),
        };
        let changes = changed_tickers(reader, options, window)?;
        let candidates = candidates(reader, changes)?;
        Ok((window, candidates))
    })
    .context("reading what changed")?;
    // Tickers are unique: unstable sorting needs no buffer.
    candidates.sort_unstable_by(|a, b| a.ticker.cmp(&b.ticker));
    Ok(Snapshot {
        job,
        window,
        expired,
        rearmed,
        candidates,
    })
}

/// The tickers in the job's scope that changed in `window`: their quote
/// was written, or some of their enabled alerts changed.
fn changed_tickers(
    reader: &mut store::Connection,
    options: &TickOptions<'_>,
    window: Window,
) -> anyhow::Result<HashMap<String, Change>> {
    let Window { since, until, .. } = window;
    let mut changes: HashMap<String, Change> = HashMap::new();
    fn changed<'a>(
        changes: &'a mut HashMap<String, Change>,
        ticker: &str,
        change: i64,
    ) -> &'a mut Change {
        if !changes.contains_key(ticker) {
            changes.insert(
                ticker.to_owned(),
                Change {
                    moved: false,
                    changed_alerts: None,
                    first_change: change,
                },
            );
        }
        let entry = changes.get_mut(ticker).expect("just inserted");
        entry.first_change = entry.first_change.min(change);
        entry
    }
    for (ticker, change) in
        changes::changed_quotes(reader, since, until).context("reading changed quotes")?
    {
        if options.scope.covers(&ticker) {
            changed(&mut changes, &ticker, change).moved = true;
        }
    }
    changes::changed_alert_tickers(reader, since, until, |ticker, change| {
        if options.scope.covers(ticker) || ticker.trim().is_empty() {
            let entry = changed(&mut changes, ticker, change);
            *entry.changed_alerts.get_or_insert(0) += 1;
        }
    })
    .context("reading changed alerts")?;
    Ok(changes)
}

/// What the store holds for each changed ticker: its quote, its observed
/// price, and whether it has enabled alerts at all.
fn candidates(
    reader: &mut store::Connection,
    changes: HashMap<String, Change>,
) -> anyhow::Result<Vec<Candidate>> {
    let mut candidates: Vec<Candidate> = changes
        .into_iter()
        .map(|(ticker, change)| Candidate {
            ticker,
            change,
            quote: None,
            previous: None,
            has_alerts: false,
        })
        .collect();
    // In slices, so that the list of names stays small beside the candidates.
    for slice in candidates.chunks_mut(4096) {
        let asked: Vec<(&str, bool)> = slice
            .iter()
            .map(|candidate| {
                (
                    candidate.ticker.as_str(),
                    candidate.change.changed_alerts.is_none(),
                )
            })
            .collect();
        let states = changes::ticker_states(reader, &asked)
            .context("reading the changed tickers' quotes and observed prices")?;
        drop(asked);
        for (candidate, state) in slice.iter_mut().zip(states) {
            if candidate.ticker.trim().is_empty() {
                continue;
            }
            candidate.quote = state.quote;
            candidate.previous = state.previous;
            candidate.has_alerts = candidate.change.changed_alerts.is_some() || state.has_alerts;
        }
    }
    Ok(candidates)
}

/// A ticker ready to evaluate.
struct Work {
    ticker: String,
    /// Read its reachable alerts (its quote moved).
    moved: bool,
    /// Read its changed alerts.
    changed_alerts: bool,
    observed: Observed,
    quote_time: String,
    /// Record its price as observed once the claims committed.
    observe: bool,
    /// The lowest change number that brought it here.
    first_change: i64,
}

/// What a tick evaluates, and the tickers it leaves out (counted in the
/// report as it is planned).
struct Plan {
    work: Vec<Work>,
    /// Tickers that could not be looked at, and why.
    problems: HashMap<String, QuoteProblem>,
    /// Some changed enabled alerts in scope have an empty (or NULL) ticker.
    blank_tickers: bool,
    /// The lowest change number of a ticker that could not be fetched: the
    /// watermark stays below it, so the next tick reads it again (a fetch
    /// that works again may bring the same quote, which is no new change).
    deferred: Option<i64>,
}

/// Decides which tickers to evaluate: usable and fresh quotes, fetched (for
/// the HTTP source). Counts what it leaves out: tickers, and the changed
/// alerts that could not be read. Pure.
fn plan(
    candidates: Vec<Candidate>,
    options: &TickOptions<'_>,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Plan {
    let mut problems = HashMap::new();
    let (mut blank_tickers, mut deferred) = (false, None::<i64>);
    // Candidates become work in place (a `Work` is smaller than a
    // `Candidate`): a first tick has one of either for every ticker, never
    // both at once.
    let mut work: Vec<Work> = candidates
        .into_iter()
        .filter_map(|candidate| {
            let Change {
                moved,
                changed_alerts,
                first_change,
            } = candidate.change;
            let changed = changed_alerts.unwrap_or(0);
            if moved {
                report.tickers_changed += 1;
            }
            if candidate.ticker.trim().is_empty() {
                report.malformed_alerts += changed;
                blank_tickers = true;
                return None;
            }
            let not_fetched = options
                .fetched
                .is_some_and(|fetched| !fetched.contains(&candidate.ticker));
            if not_fetched && candidate.has_alerts {
                report.unavailable += changed;
                deferred = Some(deferred.map_or(first_change, |first| first.min(first_change)));
                return None;
            }
            let Some((price, quote_time)) = candidate.quote else {
                report.no_quote += changed;
                return None;
            };
            match usable_quote(price, &quote_time, options.max_age, now) {
                Ok(price) => Some(Work {
                    ticker: candidate.ticker,
                    moved: moved && candidate.has_alerts,
                    changed_alerts: changed_alerts.is_some(),
                    observed: Observed {
                        price,
                        previous: candidate.previous,
                    },
                    quote_time,
                    observe: candidate.has_alerts,
                    first_change,
                }),
                Err(problem) => {
                    if problem == QuoteProblem::Stale {
                        report.stale_quotes += 1;
                        report.stale_alerts += changed;
                    } else {
                        report.malformed_quotes += 1;
                    }
                    problems.insert(candidate.ticker, problem);
                    None
                }
            }
        })
        .collect();
    // Moved tickers first: the readers share them out as a prefix. Each part
    // in ticker order, for `ByTicker`. (Unstable: no buffer of half the work.)
    work.sort_unstable_by(|a, b| b.moved.cmp(&a.moved).then_with(|| a.ticker.cmp(&b.ticker)));
    Plan {
        work,
        problems,
        blank_tickers,
        deferred,
    }
}

/// A quote's price, if the quote can be evaluated at `now`. Pure.
fn usable_quote(
    price: Option<f64>,
    updated_at: &str,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<f64, QuoteProblem> {
    let price = price
        .filter(|price| price.is_finite() && *price > 0.0)
        .ok_or(QuoteProblem::BadPrice)?;
    let time = parse_time(updated_at).ok_or(QuoteProblem::BadTime)?;
    if time - now > chrono::Duration::from_std(FUTURE_SKEW).expect("a small duration") {
        return Err(QuoteProblem::Future);
    }
    if (now - time).to_std().unwrap_or_default() > max_age {
        return Err(QuoteProblem::Stale);
    }
    Ok(price)
}

/// Logs a ticker's quote problem when it starts or changes, and its end, not
/// every tick.
fn log_quote_problems(known: &Mutex<HashMap<String, QuoteProblem>>, plan: &Plan) {
    let mut known = known
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (ticker, problem) in &plan.problems {
        if known.insert(ticker.clone(), *problem) != Some(*problem) {
            tracing::warn!(ticker = %logging::bounded(ticker), "{}", problem.describe());
        }
    }
    for work in &plan.work {
        if let Some(problem) = known.remove(&work.ticker) {
            tracing::info!(ticker = %logging::bounded(&work.ticker), was = ?problem, "quote usable again");
        }
    }
}

/// Names, up to the warning cap, the enabled alerts whose ticker is empty or
/// NULL: they were counted as malformed by [`plan`].
fn name_blank_ticker_alerts(
    writer: &mut store::Connection,
    warnings: &AtomicU64,
) -> anyhow::Result<()> {
    for alert in alerts::enabled_without_ticker(writer, WARNINGS_PER_TICK)
        .context("reading alerts without a ticker")?
    {
        warn_malformed(warnings, &alert, "the ticker is empty");
    }
    Ok(())
}

fn warn_malformed(warnings: &AtomicU64, alert: &AlertRow, reason: &str) {
    if warnings.fetch_add(1, Ordering::Relaxed) < WARNINGS_PER_TICK {
        tracing::warn!(alert_id = alert.id, ticker = %logging::bounded(&alert.ticker), reason, "skipping a malformed alert");
    }
}

/// What the reader tasks share.
struct Readers<'a> {
    pool: &'a Pool,
    work: &'a [Work],
    window: Window,
    now: DateTime<Utc>,
    /// Alerts read and judged.
    read: AtomicU64,
    malformed: AtomicU64,
    warnings: AtomicU64,
}

/// Reads and judges the planned tickers' alerts on the rayon pool, the
/// tickers split between the threads, while the calling thread claims what
/// they find in batches of `claim_batch`, handing full batches to helper
/// claimers where the store has them (`store::Pool::claim_writers`). Readers
/// stream: they hold one row and at most one chunk of triggers at a time, the
/// channel to the writer is bounded, and so is the one to the helpers (one
/// batch each), so memory does not follow the number of alerts read. Counts
/// into `report`; the first error, if any, after every reader and claimer
/// finished. Returns the triggered alerts that were locked by others.
fn evaluate_and_claim(
    workers: &rayon::ThreadPool,
    readers: &Readers<'_>,
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    report: &mut TickReport,
) -> anyhow::Result<Vec<Locked>> {
    if readers.work.is_empty() {
        return Ok(Vec::new());
    }
    // As many readers as the pool has connections for, each with one of
    // its own, taking the tasks in turn.
    let threads = workers
        .current_num_threads()
        .min(readers.pool.readers())
        .max(1);
    // Moved tickers come first in the plan.
    let moved = readers.work.partition_point(|item| item.moved);
    let by_ticker = ByTicker {
        work: readers.work,
        moved,
    };
    let mut tasks: Vec<Task<'_>> = readers.work[..moved]
        .chunks(moved.div_ceil(threads).max(1))
        .map(Task::Moved)
        .collect();
    if readers.work.iter().any(|item| item.changed_alerts) {
        tasks.extend(
            split(readers.window, threads)
                .into_iter()
                .map(Task::Changed),
        );
    }
    let (sender, receiver) = mpsc::sync_channel::<anyhow::Result<Vec<Trigger>>>(threads * 4);
    let mut first_error: Option<anyhow::Error> = None;
    // Helpers claim batches beside the calling thread where the engine runs
    // claims side by side (on disjoint rows: each alert is in one batch).
    let helpers = readers.pool.claim_writers().saturating_sub(1);
    let (batches, inbox) = mpsc::sync_channel::<Vec<Trigger>>(helpers.max(1));
    let inbox = Mutex::new(inbox);
    let mut tallies: Vec<Tally> = Vec::new();
    std::thread::scope(|helper_threads| {
        let helping: Vec<_> = (0..helpers)
            .map(|_| helper_threads.spawn(|| help_claim(readers.pool, &inbox)))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (tasks, next) = (&tasks, &next);
        workers.in_place_scope(|scope| {
            for _ in 0..threads.min(tasks.len()) {
                let sender = sender.clone();
                scope.spawn(move |_| {
                    if let Err(error) = read_in_turn(readers, by_ticker, tasks, next, &sender) {
                        let _ = sender.send(Err(error));
                    }
                });
            }
            drop(sender);
            let claim_batch = options.evaluator.claim_batch;
            let mut batch: Vec<Trigger> = Vec::with_capacity(claim_batch.min(TRIGGER_CHUNK * 16));
            let mut mine = Tally::default();
            // A full batch goes to a free helper, else the calling thread
            // claims it.
            let mut hand_over = |batch: &mut Vec<Trigger>, mine: &mut Tally| {
                if helpers > 0 {
                    match batches.try_send(std::mem::take(batch)) {
                        Ok(()) => return,
                        Err(
                            mpsc::TrySendError::Full(back) | mpsc::TrySendError::Disconnected(back),
                        ) => *batch = back,
                    }
                }
                mine.claim(writer, batch);
            };
            // Keep receiving after an error, so no reader blocks on a full channel.
            for message in receiver {
                match message {
                    Ok(triggers) => {
                        report.matched += triggers.len() as u64;
                        for trigger in triggers {
                            batch.push(trigger);
                            if batch.len() >= claim_batch {
                                hand_over(&mut batch, &mut mine);
                            }
                        }
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            mine.claim(writer, &mut batch);
            tallies.push(mine);
        });
        drop(batches);
        for helper in helping {
            tallies.push(helper.join().unwrap_or_else(|_| Tally {
                error: Some(anyhow::anyhow!("a claiming thread panicked")),
                ..Tally::default()
            }));
        }
    });
    let mut locked = Vec::new();
    for tally in tallies {
        report.triggered += tally.triggered;
        report.unclaimed += tally.unclaimed;
        report.claim_transactions += tally.transactions;
        report.claim_duration += tally.duration;
        locked.extend(tally.locked);
        if let Some(error) = tally.error {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(locked), Err)
}

/// What one claiming thread did.
#[derive(Default)]
struct Tally {
    triggered: u64,
    /// Triggers whose claim failed, or was not tried after a failure.
    unclaimed: u64,
    locked: Vec<Locked>,
    transactions: u64,
    duration: Duration,
    error: Option<anyhow::Error>,
}

impl Tally {
    /// Claims one batch in one transaction and empties it. After a failure
    /// it claims nothing more: the tick fails, and the next one judges the
    /// same changes again.
    fn claim(&mut self, writer: &mut store::Connection, batch: &mut Vec<Trigger>) {
        if batch.is_empty() {
            return;
        }
        if self.error.is_some() {
            self.unclaimed += batch.len() as u64;
            batch.clear();
            return;
        }
        let claimed_at = Utc::now();
        let claim_started = Instant::now();
        let claimed = alerts::claim(writer, batch, claimed_at, claimed_at.timestamp_millis());
        self.duration += claim_started.elapsed();
        match claimed {
            Ok(claimed) => {
                self.triggered += claimed.claimed as u64;
                self.transactions += 1;
                for id in claimed.locked {
                    if let Some(trigger) = batch.iter().find(|trigger| trigger.alert_id == id) {
                        self.locked.push((id, trigger.ticker.clone()));
                    }
                }
            }
            Err(error) => {
                self.unclaimed += batch.len() as u64;
                self.error
                    .get_or_insert(anyhow::Error::new(error).context("claiming triggered alerts"));
            }
        }
        batch.clear();
    }
}

/// A helper claimer: claims the batches handed to it until there are no
/// more. One that cannot claim still takes its batches, so that the tick
/// fails (and nothing is taken for done) instead of leaving them unclaimed.
fn help_claim(pool: &Pool, inbox: &Mutex<mpsc::Receiver<Vec<Trigger>>>) -> Tally {
    let mut tally = Tally::default();
    let mut writer = match pool.get() {
        Ok(writer) => Some(writer),
        Err(error) => {
            tally.error = Some(error.context("taking a connection to claim with"));
            None
        }
    };
    loop {
        let next = inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        let Ok(mut batch) = next else {
            return tally;
        };
        match writer.as_mut() {
            Some(writer) => tally.claim(writer, &mut batch),
            None => tally.unclaimed += batch.len() as u64,
        }
    }
}

/// A plan's work by ticker, without a map: the plan's two parts (moved
/// tickers, then the rest) are each in ticker order.
#[derive(Clone, Copy)]
struct ByTicker<'a> {
    work: &'a [Work],
    moved: usize,
}

impl<'a> ByTicker<'a> {
    fn get(&self, ticker: &str) -> Option<&'a Work> {
        let (moved, rest) = self.work.split_at(self.moved);
        [moved, rest].into_iter().find_map(|part| {
            part.binary_search_by(|item| item.ticker.as_str().cmp(ticker))
                .ok()
                .map(|at| &part[at])
        })
    }
}

/// After every claim committed, in one transaction: the evaluated prices
/// become the tickers' previous ones, and the job's watermark moves to the
/// end of the window (or to just before a ticker that could not be fetched,
/// or one with a triggered alert someone else held locked: that ticker's
/// price is not recorded either, so the next tick judges its alerts as this
/// one did). A crash before this commit leaves both, and the next tick reads
/// the same changes again: nothing is skipped, and what was claimed stays
/// claimed.
fn observe(
    writer: &mut store::Connection,
    snapshot: &Snapshot,
    plan: Plan,
    locked: &[Locked],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let held: HashSet<&str> = locked.iter().map(|(_, ticker)| ticker.as_str()).collect();
    let mut deferred = plan.deferred;
    let mut observed: Vec<Observation> = Vec::with_capacity(plan.work.len());
    for work in plan.work {
        if held.contains(work.ticker.as_str()) {
            deferred =
                Some(deferred.map_or(work.first_change, |first| first.min(work.first_change)));
        } else if work.observe {
            observed.push((work.ticker, work.observed.price, work.quote_time));
        }
    }
    let watermark = deferred.map_or(snapshot.window.settled, |first| {
        (first - 1).min(snapshot.window.settled)
    });
    alerts::finish_tick(
        writer,
        &observed,
        (&snapshot.job, watermark),
        &store::timestamp(now),
    )
    .context("recording observed prices and the job's watermark")
}

/// One reader task's share of the reads.
enum Task<'a> {
    /// These moved tickers' reachable alerts.
    Moved(&'a [Work]),
    /// The alerts changed in this part of the window, whatever their ticker
    /// (those of tickers not being evaluated are passed over).
    Changed(Window),
}

/// Splits a window of changes into up to `parts` windows.
fn split(window: Window, parts: usize) -> Vec<Window> {
    let span = (window.until - window.since).max(0) as u64;
    let size = span.div_ceil(parts.max(1) as u64).max(1) as i64;
    (0..)
        .map(|part| window.since + part * size)
        .take_while(|since| *since < window.until)
        .map(|since| Window {
            since,
            until: (since + size).min(window.until),
            settled: window.settled,
        })
        .collect()
}

/// Judges rows as a reader reads them, sending triggers to the writer in
/// chunks.
struct Judging<'a> {
    readers: &'a Readers<'a>,
    sender: &'a mpsc::SyncSender<anyhow::Result<Vec<Trigger>>>,
    triggers: Vec<Trigger>,
    /// False once the writer has gone (after an error): stop reading.
    open: bool,
}

impl Judging<'_> {
    /// Judges one row at its ticker's price; false to stop reading.
    fn row(&mut self, alert: AlertRow, item: &Work) -> bool {
        let readers = self.readers;
        readers.read.fetch_add(1, Ordering::Relaxed);
        match judge(&alert, item.observed, readers.now) {
            Verdict::Fire => self.triggers.push(Trigger {
                // `judge` fires only with a valid cooldown or none.
                rearm_at: rearm_at(&alert, readers.now),
                alert_id: alert.id,
                arming: alert.arming,
                // `judge` fires only on a finite target.
                target_price: alert.target_price.unwrap_or(f64::NAN),
                reference_price: alert.reference_price,
                ticker: alert.ticker,
                condition: alert.condition,
                user_id: alert.user_id,
                note: alert.note,
                price: item.observed.price,
                quote_time: item.quote_time.clone(),
            }),
            // Expired rows are disabled by the next tick's `expire_due`.
            Verdict::Hold | Verdict::Expired => {}
            Verdict::Malformed(reason) => {
                readers.malformed.fetch_add(1, Ordering::Relaxed);
                warn_malformed(&readers.warnings, &alert, &reason);
            }
        }
        if self.triggers.len() >= TRIGGER_CHUNK {
            self.open = self
                .sender
                .send(Ok(std::mem::take(&mut self.triggers)))
                .is_ok();
        }
        self.open
    }

    fn finish(self) {
        if !self.triggers.is_empty() {
            let _ = self.sender.send(Ok(self.triggers));
        }
    }
}

/// One reader: a connection of its own, and the tasks not yet taken, one
/// after another, until none is left.
fn read_in_turn(
    readers: &Readers<'_>,
    by_ticker: ByTicker<'_>,
    tasks: &[Task<'_>],
    next: &std::sync::atomic::AtomicUsize,
    sender: &mpsc::SyncSender<anyhow::Result<Vec<Trigger>>>,
) -> anyhow::Result<()> {
    let mut connection = readers.pool.get_to_read()?;
    while let Some(task) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
        read_and_judge(readers, by_ticker, task, sender, &mut connection)?;
    }
    Ok(())
}

/// One reader task: its rows, judged against their ticker's price as they
/// are read, the triggers sent to the writer in chunks.
fn read_and_judge(
    readers: &Readers<'_>,
    by_ticker: ByTicker<'_>,
    task: &Task<'_>,
    sender: &mpsc::SyncSender<anyhow::Result<Vec<Trigger>>>,
    connection: &mut store::Connection,
) -> anyhow::Result<()> {
    let mut judging = Judging {
        readers,
        sender,
        triggers: Vec::new(),
        open: true,
    };
    match task {
        Task::Moved(work) => {
            let moves: Vec<(&str, changes::Move)> = work
                .iter()
                .map(|item| {
                    let moved = changes::Move {
                        price: item.observed.price,
                        previous: item.observed.previous,
                    };
                    (item.ticker.as_str(), moved)
                })
                .collect();
            changes::each_reachable_alert_of(
                connection,
                &moves,
                readers.window.since,
                |at, alert| judging.row(alert, &work[at]),
            )
            .context("reading the alerts a price reaches")?;
        }
        &Task::Changed(window) => {
            changes::each_changed_alert(connection, window.since, window.until, |alert| {
                match by_ticker.get(&alert.ticker) {
                    Some(item) => judging.row(alert, item),
                    None => true,
                }
            })
            .context("reading changed alerts")?;
        }
    }
    judging.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn alert(condition: &str, target: Option<f64>, reference: Option<f64>) -> AlertRow {
        AlertRow {
            id: 1,
            arming: 1,
            ticker: "AAPL".into(),
            condition: condition.into(),
            target_price: target,
            reference_price: reference,
            expires_at: None,
            user_id: None,
            note: None,
            cooldown: None,
        }
    }

    fn now() -> DateTime<Utc> {
        parse_time("2026-03-02T14:30:00Z").unwrap()
    }

    fn at(price: f64, previous: Option<f64>) -> Observed {
        Observed { price, previous }
    }

    fn check(
        condition: &str,
        target: f64,
        reference: Option<f64>,
        observed: Observed,
        expected: Verdict,
    ) {
        assert_eq!(
            judge(&alert(condition, Some(target), reference), observed, now()),
            expected,
            "{condition} {target} {reference:?} at {observed:?}"
        );
    }

    #[test]
    fn above_and_below_include_the_target() {
        check("above", 200.0, None, at(200.0, None), Verdict::Fire);
        check("above", 200.0, None, at(199.99, None), Verdict::Hold);
        check("below", 200.0, None, at(200.0, None), Verdict::Fire);
        check("below", 200.0, None, at(200.01, None), Verdict::Hold);
    }

    #[test]
    fn crossings_need_a_previous_price_on_the_other_side() {
        check(
            "crossing_up",
            100.0,
            None,
            at(101.0, Some(99.0)),
            Verdict::Fire,
        );
        check(
            "crossing_up",
            100.0,
            None,
            at(100.0, Some(99.0)),
            Verdict::Fire,
        );
        check(
            "crossing_up",
            100.0,
            None,
            at(101.0, Some(100.0)),
            Verdict::Hold,
        );
        check(
            "crossing_up",
            100.0,
            None,
            at(101.0, Some(102.0)),
            Verdict::Hold,
        );
        check("crossing_up", 100.0, None, at(101.0, None), Verdict::Hold);
        check(
            "crossing_down",
            100.0,
            None,
            at(99.0, Some(101.0)),
            Verdict::Fire,
        );
        check(
            "crossing_down",
            100.0,
            None,
            at(100.0, Some(101.0)),
            Verdict::Fire,
        );
        check(
            "crossing_down",
            100.0,
            None,
            at(99.0, Some(100.0)),
            Verdict::Hold,
        );
        check("crossing_down", 100.0, None, at(99.0, None), Verdict::Hold);
    }

    #[test]
    fn moving_percent_is_measured_from_the_reference() {
        check(
            "moving_up_pct",
            5.0,
            Some(100.0),
            at(105.0, None),
            Verdict::Fire,
        );
        check(
            "moving_up_pct",
            5.0,
            Some(100.0),
            at(104.9, None),
            Verdict::Hold,
        );
        check(
            "moving_down_pct",
            5.0,
            Some(100.0),
            at(95.0, None),
            Verdict::Fire,
        );
        check(
            "moving_down_pct",
            5.0,
            Some(100.0),
            at(95.1, None),
            Verdict::Hold,
        );
        check(
            "moving_down_pct",
            5.0,
            Some(100.0),
            at(110.0, None),
            Verdict::Hold,
        );
    }

    #[test]
    fn rows_that_cannot_be_evaluated_are_malformed() {
        let malformed = |alert: AlertRow| {
            matches!(
                judge(&alert, at(1.0, Some(0.5)), now()),
                Verdict::Malformed(_)
            )
        };
        assert!(malformed(alert("sideways", Some(1.0), None)));
        assert!(malformed(alert("above", None, None)));
        assert!(malformed(alert("above", Some(f64::INFINITY), None)));
        assert!(malformed(alert("above", Some(f64::NAN), None)));
        assert!(malformed(alert("moving_up_pct", Some(5.0), None)));
        assert!(malformed(alert("moving_up_pct", Some(5.0), Some(0.0))));
        assert!(malformed(AlertRow {
            expires_at: Some("next tuesday".into()),
            ..alert("above", Some(1.0), None)
        }));
    }

    #[test]
    fn a_quote_is_usable_with_a_positive_price_a_time_not_too_old_nor_ahead() {
        let check = |price: Option<f64>, updated_at: &str, expected: Result<f64, QuoteProblem>| {
            assert_eq!(
                usable_quote(price, updated_at, Duration::from_secs(900), now()),
                expected,
                "{price:?} {updated_at}"
            );
        };
        check(Some(5.0), "2026-03-02T14:29:00Z", Ok(5.0));
        check(Some(5.0), "2026-03-02 14:15:00", Ok(5.0));
        check(Some(5.0), "2026-03-02T14:14:59Z", Err(QuoteProblem::Stale));
        // Up to a minute ahead of the clock is skew; more is a wrong clock.
        check(Some(5.0), "2026-03-02T14:31:00Z", Ok(5.0));
        check(Some(5.0), "2026-03-02T14:31:01Z", Err(QuoteProblem::Future));
        check(Some(5.0), "2030-01-01T00:00:00Z", Err(QuoteProblem::Future));
        check(
            Some(0.0),
            "2026-03-02T14:29:00Z",
            Err(QuoteProblem::BadPrice),
        );
        check(None, "2026-03-02T14:29:00Z", Err(QuoteProblem::BadPrice));
        check(
            Some(f64::NAN),
            "2026-03-02T14:29:00Z",
            Err(QuoteProblem::BadPrice),
        );
        check(Some(5.0), "yesterday", Err(QuoteProblem::BadTime));
    }

    #[test]
    fn a_cooldown_is_a_duration_of_a_second_or_more_and_a_bad_one_is_malformed() {
        let with = |cooldown: &str| AlertRow {
            cooldown: Some(cooldown.into()),
            ..alert("above", Some(1.0), None)
        };
        let check = |cooldown: &str, expected: Result<Option<Duration>, &str>| {
            assert_eq!(
                cooldown_of(&with(cooldown)).map_err(|reason| {
                    assert!(reason.contains(expected.unwrap_err()), "{reason}");
                    expected.unwrap_err()
                }),
                expected,
                "{cooldown:?}"
            )
        };
        check("15m", Ok(Some(Duration::from_secs(900))));
        check(" 1h 30m ", Ok(Some(Duration::from_secs(5400))));
        check("1s", Ok(Some(Duration::from_secs(1))));
        check("", Ok(None));
        check("  ", Ok(None));
        check("999ms", Err("is shorter than 1s"));
        check("0s", Err("is shorter than 1s"));
        check("soon", Err("is not a duration such as \"15m\""));
        check("-5m", Err("is not a duration"));
        assert_eq!(cooldown_of(&alert("above", Some(1.0), None)), Ok(None));
        // A repeating alert fires as any other; a bad cooldown never fires.
        assert_eq!(judge(&with("15m"), at(5.0, None), now()), Verdict::Fire);
        assert!(matches!(
            judge(&with("soon"), at(5.0, None), now()),
            Verdict::Malformed(_)
        ));
    }

    #[test]
    fn an_expired_alert_never_fires() {
        let expiring = |expires_at: &str| AlertRow {
            expires_at: Some(expires_at.into()),
            ..alert("above", Some(1.0), None)
        };
        assert_eq!(
            judge(&expiring("2026-03-02T14:29:59Z"), at(5.0, None), now()),
            Verdict::Expired
        );
        assert_eq!(
            judge(&expiring("2026-03-02 14:30:00"), at(5.0, None), now()),
            Verdict::Expired
        );
        assert_eq!(
            judge(&expiring("2026-03-02T15:30:00+02:00"), at(5.0, None), now()),
            Verdict::Expired
        );
        assert_eq!(
            judge(&expiring("2026-03-02T14:30:01Z"), at(5.0, None), now()),
            Verdict::Fire
        );
    }

    /// The level index's ranges must reach every row `judge` fires: over a
    /// grid of conditions, targets (numbers on both sides, text, infinities),
    /// references and expiries, and moves up, down and from nowhere, every
    /// row that fires is read, and many that cannot are not.
    #[test]
    fn the_level_ranges_reach_every_row_judge_fires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let config = crate::config::DatabaseConfig::sqlite(path.clone(), Duration::from_secs(5));
        // The application's table, which may allow a NULL condition.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE price_alerts (id INTEGER PRIMARY KEY, ticker TEXT, condition TEXT,
                     target_price REAL, reference_price REAL, enabled INTEGER NOT NULL DEFAULT 1,
                     triggered_at TEXT, triggered_price REAL, created_at TEXT NOT NULL, user_id TEXT, note TEXT)",
            )
            .unwrap();
        let pool = store::open(&config, 2).unwrap();
        let mut connection = pool.get().unwrap();
        let app = rusqlite::Connection::open(&path).unwrap();
        let now = Utc::now();
        let past = (now - chrono::Duration::hours(1)).to_rfc3339();
        let future = (now + chrono::Duration::hours(1)).to_rfc3339();
        let conditions = [
            "'above'",
            "'below'",
            "'crossing_up'",
            "'crossing_down'",
            "'moving_up_pct'",
            "'moving_down_pct'",
            "'sideways'",
            "''",
            "NULL",
        ];
        let targets = [
            "50.0", "95", "99.99", "100.0", "100", "100.01", "105", "150.0", "'lots'", "9e999",
            "-9e999", "0", "-5", "5",
        ];
        let expiries = [
            "NULL".to_owned(),
            format!("'{past}'"),
            format!("'{future}'"),
            "'soon'".to_owned(),
        ];
        let references = ["NULL", "100.0", "95.238095238095", "105", "'x'"];
        for condition in conditions {
            for target in targets {
                for expiry in &expiries {
                    for reference in references {
                        app.execute_batch(&format!(
                                "INSERT INTO price_alerts (ticker, condition, target_price, reference_price, expires_at, created_at)
                                 VALUES ('T', {condition}, {target}, {reference}, {expiry}, 'x')"
                            ))
                            .unwrap();
                    }
                }
            }
        }
        let all = alerts::enabled_for_ticker(&mut connection, "T").unwrap();
        assert_eq!(
            all.len(),
            conditions.len() * targets.len() * expiries.len() * references.len()
        );
        for previous in [Some(90.0), Some(110.0), Some(100.0), None] {
            let observed = Observed {
                price: 100.0,
                previous,
            };
            let moved = changes::Move {
                price: observed.price,
                previous,
            };
            let mut reached = HashSet::new();
            changes::each_reachable_alert(&mut connection, "T", moved, i64::MAX, |alert| {
                reached.insert(alert.id);
                true
            })
            .unwrap();
            let mut fired = 0;
            for alert in &all {
                if judge(alert, observed, now) == Verdict::Fire {
                    fired += 1;
                    assert!(
                        reached.contains(&alert.id),
                        "not reached: {alert:?} after {previous:?}"
                    );
                }
            }
            assert!(fired > 0);
            assert!(
                reached.len() < all.len() / 2,
                "the ranges read {} of {} rows: they narrow nothing",
                reached.len(),
                all.len()
            );
        }
    }

    fn price() -> impl Strategy<Value = f64> {
        0.01f64..1_000_000.0
    }

    proptest! {
        /// The level the index holds for a moving-% alert (computed as SQLite
        /// computes it) is within the read's rounding margin whenever
        /// `judge` fires: the range read never misses a move.
        #[test]
        fn a_moving_alert_that_fires_is_within_its_levels_range(percent in -50.0f64..500.0, reference in price(), price in price()) {
            let up = reference * (1.0 + percent / 100.0);
            if judge(&alert("moving_up_pct", Some(percent), Some(reference)), at(price, None), now()) == Verdict::Fire {
                prop_assert!(up <= price * (1.0 + 1e-9), "{up} > {price}");
            }
            let down = reference * (1.0 - percent / 100.0);
            if judge(&alert("moving_down_pct", Some(percent), Some(reference)), at(price, None), now()) == Verdict::Fire {
                prop_assert!(down >= price * (1.0 - 1e-9), "{down} < {price}");
            }
        }

        #[test]
        fn above_fires_exactly_at_or_over_the_target(target in price(), price in price()) {
            prop_assert_eq!(judge(&alert("above", Some(target), None), at(price, None), now()) == Verdict::Fire, price >= target);
            prop_assert_eq!(judge(&alert("below", Some(target), None), at(price, None), now()) == Verdict::Fire, price <= target);
        }

        #[test]
        fn a_crossing_fires_only_when_the_target_lies_between_the_two_prices(target in price(), previous in price(), price in price()) {
            let up = judge(&alert("crossing_up", Some(target), None), at(price, Some(previous)), now()) == Verdict::Fire;
            let down = judge(&alert("crossing_down", Some(target), None), at(price, Some(previous)), now()) == Verdict::Fire;
            prop_assert!(!(up && down), "both directions fired");
            if up { prop_assert!(previous < target && target <= price); }
            if down { prop_assert!(previous > target && target >= price); }
            // Without a previous observation nothing crosses.
            prop_assert_ne!(judge(&alert("crossing_up", Some(target), None), at(price, None), now()), Verdict::Fire);
            prop_assert_ne!(judge(&alert("crossing_down", Some(target), None), at(price, None), now()), Verdict::Fire);
            // A crossing is an above/below that was not so before.
            if up { prop_assert_eq!(judge(&alert("above", Some(target), None), at(price, None), now()), Verdict::Fire); }
        }

        #[test]
        fn moves_up_and_down_never_both_fire(percent in 0.001f64..500.0, reference in price(), price in price()) {
            let up = judge(&alert("moving_up_pct", Some(percent), Some(reference)), at(price, None), now()) == Verdict::Fire;
            let down = judge(&alert("moving_down_pct", Some(percent), Some(reference)), at(price, None), now()) == Verdict::Fire;
            prop_assert!(!(up && down));
            if up { prop_assert!(price > reference); }
            if down { prop_assert!(price < reference); }
        }

        #[test]
        fn a_higher_price_keeps_an_above_alert_firing(target in price(), price in price(), rise in 0.0f64..1000.0) {
            if judge(&alert("above", Some(target), None), at(price, None), now()) == Verdict::Fire {
                prop_assert_eq!(judge(&alert("above", Some(target), None), at(price + rise, None), now()), Verdict::Fire);
            }
        }
    }
}
