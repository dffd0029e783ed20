//! `alerts list`, `add`, `disable`, `rearm`, `cooldown` and `snooze`.

use std::io::Write;

use anyhow::Context as _;
use chrono::Utc;

use crate::alert::{Alert, Column, Written};
use crate::condition::{Condition, Shape};
use crate::config::Config;
use crate::standing::{Facts, Standing, State};
use crate::store::{self, alerts};

use super::open::{connect, connect_to_read};
use super::output::{alert_times_in_rfc3339, number, print_json_lines};
use super::table::{Align, Table};

/// Re-arms a triggered, expired or disabled alert: its next trigger carries a
/// new event id. Fails if there is no such alert or it is already armed.
pub fn alerts_rearm(config: &Config, id: i64, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect(config)?;
    anyhow::ensure!(
        store::alerts::rearm(&mut connection, id).context("re-arming the alert")?,
        "alert {id} does not exist or is already armed"
    );
    writeln!(out, "re-armed alert {id}")?;
    Ok(())
}

/// What `alerts list` is asked for.
pub struct AlertsList<'a> {
    pub filter: alerts::AlertFilter,
    pub ticker: Option<&'a str>,
    pub user: Option<&'a str>,
    /// One of [`crate::standing::STATES`].
    pub state: Option<&'a str>,
    /// Only alerts whose id is below it: the next page.
    pub before: Option<i64>,
    pub limit: usize,
    pub json: bool,
}

/// An alert as `alerts list --json` gives it: its columns, its state and
/// what a tick would decide at its quote.
#[derive(serde::Serialize)]
struct Listed {
    #[serde(flatten)]
    alert: alerts::AlertEntry,
    #[serde(flatten)]
    standing: Standing,
}

/// Prints alerts, newest first, each with its state as the daemon judges
/// it now (`standing`), and how many more there are past the limit.
pub fn alerts_list(
    config: &Config,
    request: &AlertsList<'_>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    // States as the daemons judge them: by the database's clock.
    let now = store::clock::now(&mut connection).context("reading the database's clock")?;
    let (mut listed, more) = read_page(&mut connection, request, config.prices.max_age, now)
        .context("listing alerts")?;
    for Listed { alert, .. } in &mut listed {
        alert_times_in_rfc3339(alert);
    }
    let next = listed.last().map(|listed| listed.alert.id);
    if request.json {
        print_json_lines(&listed, out)?;
    } else {
        write_alerts(listed, out)?;
    }
    if let (true, Some(last)) = (more > 0, next) {
        // Beside a script's JSON lines, not among them.
        let line = format!("{more} more; the next page: --before {last}");
        if request.json {
            eprintln!("{line}");
        } else {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// Alerts read at a time while looking for those in one state.
const SCAN: usize = 1000;

/// The page `request` asks for, each alert with its standing, and how many
/// more alerts it holds past it. Without a state, the database filters and
/// counts; with one (a state depends on the quote and the clock), the
/// alerts are read [`SCAN`] at a time, judged, and counted as they come.
fn read_page(
    connection: &mut store::Connection,
    request: &AlertsList<'_>,
    max_age: std::time::Duration,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<(Vec<Listed>, u64)> {
    let query = alerts::AlertQuery {
        filter: match request.state {
            Some(state) if State::enabled(state) => alerts::AlertFilter::Enabled,
            Some(_) => alerts::AlertFilter::Disabled,
            None => request.filter,
        },
        id: None,
        ticker: request.ticker,
        user: request.user,
        before: request.before,
        limit: request.limit,
    };
    let Some(state) = request.state else {
        let rows = alerts::list(connection, &query)?;
        let more = match rows.last() {
            Some(last) if rows.len() == request.limit => {
                alerts::count_below(connection, &query, last.id)?
            }
            _ => 0,
        };
        return Ok((standings(connection, rows, max_age, now)?, more));
    };
    let (mut page, mut more) = (Vec::new(), 0);
    let mut scan = alerts::AlertQuery {
        limit: SCAN,
        ..query
    };
    loop {
        let rows = alerts::list(connection, &scan)?;
        let read = rows.len();
        scan.before = rows.last().map(|row| row.id);
        for listed in standings(connection, rows, max_age, now)? {
            if listed.standing.state.word() != state {
                continue;
            }
            if page.len() < request.limit {
                page.push(listed);
            } else {
                more += 1;
            }
        }
        if read < SCAN {
            return Ok((page, more));
        }
    }
}

/// Each alert of `rows` with its standing at `now`, judged with its
/// ticker's quote and observed price.
fn standings(
    connection: &mut store::Connection,
    rows: Vec<alerts::AlertEntry>,
    max_age: std::time::Duration,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<Vec<Listed>> {
    let tickers: Vec<&str> = rows
        .iter()
        .map(|row| row.ticker.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let asked: Vec<(&str, store::changes::Ask)> = tickers
        .iter()
        .map(|ticker| (*ticker, store::changes::Ask::QUOTE))
        .collect();
    let states = store::changes::ticker_states(connection, &asked)?;
    let by_ticker: std::collections::HashMap<String, store::changes::TickerState> = tickers
        .iter()
        .map(|ticker| ticker.to_string())
        .zip(states)
        .collect();
    Ok(rows
        .into_iter()
        .map(|alert| {
            let ticker = by_ticker.get(&alert.ticker);
            let standing = Standing::of(&Facts {
                alert: &alert,
                quote: ticker
                    .and_then(|state| state.quote.as_ref())
                    .map(|(price, time)| (*price, time.as_str())),
                previous: ticker.and_then(|state| state.previous),
                max_age,
                now,
            });
            Listed { alert, standing }
        })
        .collect())
}

/// The alerts' table: each alert's state in a word.
fn write_alerts(listed: Vec<Listed>, out: &mut impl Write) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("TICKER", Align::Left),
        ("USER", Align::Left),
        ("CONDITION", Align::Left),
        ("TARGET", Align::Right),
        ("REFERENCE", Align::Right),
        ("STATE", Align::Left),
        ("COOLDOWN", Align::Left),
        ("FIRED", Align::Right),
        ("TRIGGERED AT", Align::Left),
        ("AT PRICE", Align::Right),
        ("NOTE", Align::Left),
    ]);
    for Listed {
        alert: entry,
        standing,
    } in listed
    {
        let cooldown = cooldown_and_band(&entry);
        let fired = match entry.max_triggers.as_deref().map(str::trim) {
            Some(max) if !max.is_empty() => format!("{} of {max}", entry.trigger_count),
            _ => entry.trigger_count.to_string(),
        };
        table.row(vec![
            entry.id.to_string(),
            entry.ticker,
            entry.user_id.unwrap_or_else(|| "-".to_owned()),
            entry.condition,
            match entry.upper_price {
                Some(upper) => format!("{}..{}", number(entry.target_price), number(Some(upper))),
                None => number(entry.target_price),
            },
            number(entry.reference_price),
            standing.state.word().to_owned(),
            cooldown,
            fired,
            entry.triggered_at.unwrap_or_else(|| "-".to_owned()),
            number(entry.triggered_price),
            entry
                .note
                .filter(|note| !note.is_empty())
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.write("", out)?;
    Ok(())
}

/// Its cooldown, and its re-arm band after it ("15m ±1%"); "-" for none.
fn cooldown_and_band(entry: &alerts::AlertEntry) -> String {
    let present = |text: &Option<String>| {
        text.as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    match (present(&entry.cooldown), present(&entry.rearm_band)) {
        (Some(cooldown), Some(band)) => format!("{cooldown} ±{band}%"),
        (Some(cooldown), None) => cooldown,
        (None, _) => "-".to_owned(),
    }
}

/// Adds an alert, checked as the evaluator parses it; prints its id.
pub fn alerts_add(
    config: &Config,
    alert: &alerts::NewAlert<'_>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let ticker = alert.ticker.trim();
    anyhow::ensure!(!ticker.is_empty(), "the ticker is empty");
    let (band, max_triggers) = (
        alert.rearm_band.map(|band| band.to_string()),
        alert.max_triggers.map(|max| max.to_string()),
    );
    let parsed = Alert::parse(&Written {
        condition: alert.condition,
        target_price: Some(alert.target_price),
        reference_price: alert.reference_price,
        upper_price: alert.upper_price,
        cooldown: alert.cooldown,
        rearm_band: band.as_deref(),
        max_triggers: max_triggers.as_deref(),
        snoozed_until: None,
        expires_at: alert.expires_at,
    })
    .map_err(|malformed| {
        let what = match malformed.column {
            Column::Condition => {
                return anyhow::anyhow!("{malformed}; expected {}", Condition::names());
            }
            Column::TargetPrice => "the target",
            Column::ReferencePrice => "--reference",
            Column::UpperPrice => "--upper",
            Column::Cooldown => "--cooldown",
            Column::RearmBand => "--rearm-band",
            Column::MaxTriggers => "--max-triggers",
            Column::SnoozedUntil => "the snooze",
            Column::ExpiresAt => "--expires",
        };
        anyhow::anyhow!("{what}: {malformed}")
    })?;
    // What the evaluator ignores, the CLI refuses rather than store.
    anyhow::ensure!(
        alert.upper_price.is_none() || parsed.condition.shape() == Shape::Channel,
        "--upper is a channel's upper level: only inside, outside, entering and exiting have one"
    );
    let mut connection = connect(config)?;
    let now = store::clock::now(&mut connection).context("reading the database's clock")?;
    // An alert born expired would never be judged: a mistyped date.
    anyhow::ensure!(
        !parsed.expired_at(now),
        "--expires: {} is not after now ({}, by the database's clock)",
        alert.expires_at.unwrap_or_default().trim(),
        store::timestamp(now)
    );
    let id = alerts::add(
        &mut connection,
        &alerts::NewAlert { ticker, ..*alert },
        &store::timestamp(now),
    )
    .context("adding the alert")?;
    writeln!(out, "{id}")?;
    Ok(())
}

/// Disables an armed alert without an event.
pub fn alerts_disable(config: &Config, id: i64, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect(config)?;
    anyhow::ensure!(
        alerts::disable(&mut connection, id).context("disabling the alert")?,
        "alert {id} does not exist, or is neither armed nor waiting out a cooldown"
    );
    writeln!(out, "disabled alert {id}")?;
    Ok(())
}

/// Snoozes an armed alert (or a repeating one waiting out its cooldown)
/// for `duration` from now, or (`None`) ends its snooze.
pub fn alerts_snooze(
    config: &Config,
    id: i64,
    duration: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let duration = duration
        .map(|text| {
            humantime::parse_duration(text.trim())
                .ok()
                .and_then(|duration| chrono::Duration::from_std(duration).ok())
                .with_context(|| format!("{text:?} is not a duration such as \"30m\""))
        })
        .transpose()?;
    let mut connection = connect(config)?;
    // From now by the database's clock, which the daemons judge it by.
    let until = match duration {
        Some(duration) => {
            let now = store::clock::now(&mut connection).context("reading the database's clock")?;
            let until = now
                .checked_add_signed(duration)
                .context("the snooze would end beyond the calendar")?;
            Some(store::timestamp(until))
        }
        None => None,
    };
    anyhow::ensure!(
        alerts::snooze(&mut connection, id, until.as_deref()).context("snoozing the alert")?,
        "alert {id} does not exist, or is neither armed nor waiting out a cooldown"
    );
    match until {
        Some(until) => writeln!(out, "alert {id} snoozed until {until}")?,
        None => writeln!(out, "alert {id} is no longer snoozed")?,
    }
    Ok(())
}

/// Sets how long a repeating alert waits after each trigger before it is
/// re-armed, or (`None`) makes it fire once.
pub fn alerts_cooldown(
    config: &Config,
    id: i64,
    cooldown: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let cooldown = match cooldown {
        Some(text) => {
            crate::alert::parse_cooldown(text).map_err(|reason| anyhow::anyhow!(reason))?;
            Some(text.trim())
        }
        None => None,
    };
    let mut connection = connect(config)?;
    anyhow::ensure!(
        alerts::set_cooldown(&mut connection, id, cooldown).context("setting the cooldown")?,
        "alert {id} does not exist"
    );
    match cooldown {
        Some(cooldown) => writeln!(
            out,
            "alert {id} repeats, re-armed {cooldown} after each trigger"
        )?,
        None => writeln!(out, "alert {id} fires once")?,
    }
    Ok(())
}
