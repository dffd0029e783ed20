//! `alerts explain ID`: the alert as the daemon sees it now and why it will
//! or will not fire, read with the tick's own judging (`standing`).

use std::io::Write;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::Alert;
use crate::condition::Levels;
use crate::config::{self, Config, JobKind};
use crate::standing::{Decision, Facts, Standing, State};
use crate::store::alerts::AlertEntry;
use crate::store::outbox::OutboxEntry;
use crate::store::{self, alerts, changes, outbox, watermarks};

use super::open::connect_to_read;
use super::output::{alert_times_in_rfc3339, number, rfc3339};

/// The events shown, newest first.
const EVENTS: usize = 20;

/// What `alerts explain` says, as `--json` gives it.
#[derive(Serialize)]
struct Explanation {
    #[serde(flatten)]
    alert: AlertEntry,
    #[serde(flatten)]
    standing: Standing,
    /// Its levels, in words ("above 200").
    levels: String,
    quote: Option<QuoteSeen>,
    /// The price the daemon last judged its ticker at: a crossing's
    /// previous price.
    previous_price: Option<f64>,
    /// The last change to it or its ticker's quote still in the change log.
    latest_change: Option<i64>,
    /// The jobs whose `tickers` cover its ticker.
    jobs: Vec<JobSeen>,
    events: Vec<OutboxEntry>,
    /// Why it will or will not fire, in a sentence.
    why: String,
}

#[derive(Serialize)]
struct QuoteSeen {
    price: Option<f64>,
    updated_at: String,
    age_seconds: Option<i64>,
    max_age_seconds: u64,
}

#[derive(Serialize)]
struct JobSeen {
    job: String,
    schedule: String,
    reacts: bool,
    watermark: Option<i64>,
    /// The job holds the alert's ticker back (its quote was not fetched,
    /// or a trigger of it was locked): its changes after this one are still
    /// to be judged.
    held_since: Option<i64>,
    /// Whether its ticks have read the alert's latest change.
    judged_latest_change: bool,
}

/// Prints why alert `id` will or will not fire.
pub fn alerts_explain(
    config: &Config,
    id: i64,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let explanation = explain(config, &mut connection, id)?;
    if json {
        writeln!(out, "{}", serde_json::to_string(&explanation)?)?;
        return Ok(());
    }
    write_explanation(&explanation, config, out)
}

/// Reads what the explanation needs and judges the alert as a tick would now.
fn explain(
    config: &Config,
    connection: &mut store::Connection,
    id: i64,
) -> anyhow::Result<Explanation> {
    let mut alert = alerts::get(connection, id)
        .context("reading the alert")?
        .with_context(|| format!("alert {id} does not exist"))?;
    let now = store::clock::now(connection).context("reading the database's clock")?;
    let ticker =
        changes::ticker_states(connection, &[(alert.ticker.as_str(), changes::Ask::QUOTE)])
            .context("reading the quote")?
            .pop()
            .unwrap_or_default();
    let max_age = config.prices.max_age;
    let standing = Standing::of(&Facts {
        alert: &alert,
        quote: ticker
            .quote
            .as_ref()
            .map(|(price, time)| (*price, time.as_str())),
        previous: ticker.previous,
        max_age,
        now,
    });
    let quote_change =
        watermarks::latest_quote_change(connection, &alert.ticker).context("reading changes")?;
    let latest_change = alert.change_seq.into_iter().chain(quote_change).max();
    let mut jobs = Vec::new();
    for job in &config.jobs {
        let JobKind::Evaluate { scope, on_change } = &job.kind else {
            continue;
        };
        if !scope.covers(&alert.ticker) {
            continue;
        }
        let key = crate::evaluate::watermark_of(&job.name, scope, max_age);
        let watermark = watermarks::get(connection, &key).context("reading a watermark")?;
        let held_since = watermarks::hold_of(connection, &key, &alert.ticker)
            .context("reading a hold")?
            .map(|hold| hold.since);
        let judged_through =
            watermark.map(|watermark| held_since.map_or(watermark, |since| since.min(watermark)));
        jobs.push(JobSeen {
            job: job.name.clone(),
            schedule: job.schedule.expression().to_owned(),
            reacts: *on_change,
            watermark,
            held_since,
            judged_latest_change: judged_through
                .is_some_and(|through| latest_change.is_none_or(|change| through >= change)),
        });
    }
    let events = outbox::alert_events(connection, id, EVENTS).context("reading its events")?;
    let quote = ticker.quote.map(|(price, updated_at)| QuoteSeen {
        age_seconds: crate::time::parse_time(&updated_at).map(|at| (now - at).num_seconds()),
        price,
        updated_at: rfc3339(&updated_at),
        max_age_seconds: max_age.as_secs(),
    });
    alert_times_in_rfc3339(&mut alert);
    let levels = levels(&alert);
    let why = why(&alert, &standing, &jobs, max_age, now);
    Ok(Explanation {
        previous_price: ticker.previous,
        alert,
        standing,
        levels,
        quote,
        latest_change,
        jobs,
        events,
        why,
    })
}

/// The condition and its levels in words, as the tick reads them.
fn levels(alert: &AlertEntry) -> String {
    let Ok(parsed) = Alert::parse(&alert.written()) else {
        return format!("{} {}", alert.condition, number(alert.target_price));
    };
    let name = parsed.condition.name();
    match parsed.levels {
        Levels::Level(level) => format!("{name} {level}"),
        Levels::Move { percent, reference } => {
            format!("{name} {percent}% from {reference}")
        }
        Levels::Channel(channel) => format!("{name} {}..{}", channel.lower, channel.upper),
    }
}

/// Why it will or will not fire, in a sentence.
fn why(
    alert: &AlertEntry,
    standing: &Standing,
    jobs: &[JobSeen],
    max_age: std::time::Duration,
    now: DateTime<Utc>,
) -> String {
    let id = alert.id;
    if alert.enabled && jobs.is_empty() {
        return format!(
            "no evaluate job's tickers cover {}: no tick ever judges it",
            alert.ticker
        );
    }
    let price = standing
        .usable
        .map(|(price, _)| price.to_string())
        .unwrap_or_default();
    match (&standing.state, &standing.decision) {
        (State::Armed, Some(Decision::Fires)) => format!(
            "its condition holds at {price}: the next tick that judges it fires it{}",
            unjudged(jobs)
        ),
        (State::Armed, _) => format!(
            "its condition does not hold at {price}: it fires when a quote meets it{}",
            unjudged(jobs)
        ),
        (State::Snoozed { until }, _) => {
            format!("snoozed until {until}: then it is judged at the price of then")
        }
        (State::Malformed { column, reason }, _) => {
            format!("never judged until its {column} is mended: {reason}")
        }
        (State::NoQuote, _) => format!(
            "{} has no quote: it is judged once the application writes one",
            alert.ticker
        ),
        (State::StaleQuote { age_seconds }, _) => format!(
            "its quote is {age_seconds} s old, older than prices.max_age ({}): it is not judged until a fresh quote comes",
            config::show_duration(max_age)
        ),
        (State::BadQuote { problem }, _) => {
            format!("its quote cannot be used: {problem}; it is judged once a usable one comes")
        }
        (State::Waiting { below, above }, _) => {
            let to = match (below, above) {
                (Some(below), Some(above)) => format!("to {below} or below, or {above} or above"),
                (Some(below), None) => format!("to {below} or below"),
                (None, Some(above)) => format!("to {above} or above"),
                (None, None) => String::new(),
            };
            format!("it fired, and is re-armed once its price comes back {to} (its re-arm band)")
        }
        (State::Cooling { until }, _) => {
            format!("it fired, and is re-armed at {until} (its cooldown)")
        }
        (State::Spent { count, max }, _) => format!(
            "it fired {count} of {max} times and stays disabled: `alerts rearm {id}` arms it again"
        ),
        (State::Triggered, _) => format!(
            "it fired once and stays disabled: `alerts rearm {id}` arms it again, `alerts cooldown` makes it repeat"
        ),
        (State::Expired, _) => format!(
            "its expiry ({}) passed{}",
            alert.expires_at.as_deref().unwrap_or("-"),
            if alert.enabled {
                format!(
                    ": the next tick marks it expired (now {})",
                    store::timestamp(now)
                )
            } else {
                String::new()
            }
        ),
        (State::Disabled, _) => {
            "disabled without firing (by `alerts disable` or the application)".to_owned()
        }
    }
}

/// What to add when a covering job has not yet read the latest change.
fn unjudged(jobs: &[JobSeen]) -> String {
    let waiting: Vec<&str> = jobs
        .iter()
        .filter(|job| !job.judged_latest_change)
        .map(|job| job.job.as_str())
        .collect();
    match waiting.as_slice() {
        [] => String::new(),
        jobs => format!(
            " ({} has not judged its latest change yet)",
            jobs.join(", ")
        ),
    }
}

/// The explanation for a terminal.
fn write_explanation(
    explanation: &Explanation,
    config: &Config,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let alert = &explanation.alert;
    let mut head = format!(
        "alert {}: {} {}",
        alert.id, alert.ticker, explanation.levels
    );
    if let Some(user) = &alert.user_id {
        head.push_str(&format!(", user {user}"));
    }
    writeln!(out, "{head}")?;
    let standing = &explanation.standing;
    writeln!(out, "state     {}", standing.state.word())?;
    writeln!(out, "why       {}", explanation.why)?;
    match &explanation.quote {
        None => writeln!(out, "quote     none for {}", alert.ticker)?,
        Some(quote) => {
            let age = quote.age_seconds.map_or_else(
                || "its time unreadable".to_owned(),
                |age| format!("{age} s old"),
            );
            writeln!(
                out,
                "quote     {} at {} ({age}; prices.max_age {})",
                number(quote.price),
                quote.updated_at,
                config::show_duration(config.prices.max_age)
            )?;
        }
    }
    writeln!(
        out,
        "previous  {} (the price the daemon last judged {} at)",
        number(explanation.previous_price),
        alert.ticker
    )?;
    let decision = match (&standing.decision, standing.usable) {
        (Some(Decision::Fires), Some((price, _))) => format!("fires at {price}"),
        (Some(Decision::Holds), Some((price, _))) => format!("holds at {price}"),
        (Some(Decision::Snoozed), Some((price, _))) => {
            format!("would fire at {price}, but is snoozed")
        }
        (Some(Decision::Expired), _) => "expired".to_owned(),
        _ => "not judged now".to_owned(),
    };
    writeln!(out, "decision  {decision}")?;
    if explanation.jobs.is_empty() {
        writeln!(out, "jobs      none covers {}", alert.ticker)?;
    }
    for (at, job) in explanation.jobs.iter().enumerate() {
        let label = if at == 0 { "jobs      " } else { "          " };
        let how = if job.reacts {
            "reacts to changes".to_owned()
        } else {
            format!("on schedule {:?}", job.schedule)
        };
        let latest = || {
            explanation
                .latest_change
                .map_or("-".to_owned(), |change| change.to_string())
        };
        let judged = match (job.watermark, job.held_since, job.judged_latest_change) {
            (None, _, _) => "has never run".to_owned(),
            (Some(_), _, true) => "has judged its latest change".to_owned(),
            (Some(_), Some(since), false) => format!(
                "holds {} back (its quote was not fetched, or a trigger of it was locked): \
                 has not judged its latest change yet (judged up to {since}, latest {})",
                alert.ticker,
                latest()
            ),
            (Some(watermark), None, false) => format!(
                "has not judged its latest change yet (read up to {watermark}, latest {})",
                latest()
            ),
        };
        writeln!(out, "{label}{}: {how}; {judged}", job.job)?;
    }
    if explanation.events.is_empty() {
        writeln!(out, "events    none")?;
    }
    for (at, event) in explanation.events.iter().enumerate() {
        let label = if at == 0 { "events    " } else { "          " };
        let mut line = format!(
            "{label}{} {} at {}, {} attempt{}",
            event.event_id,
            event.state,
            rfc3339(&event.created_at),
            event.attempts,
            if event.attempts == 1 { "" } else { "s" }
        );
        if let Some(error) = &event.last_error {
            line.push_str(&format!(", last error: {error}"));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}
