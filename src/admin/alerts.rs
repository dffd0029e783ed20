//! `alerts list`, `add`, `disable`, `rearm`, `cooldown` and `snooze`.

use std::io::Write;

use anyhow::Context as _;
use chrono::Utc;

use crate::alert::{Alert, Column, Written};
use crate::condition::{Condition, Shape};
use crate::config::Config;
use crate::store::{self, alerts};

use super::open::{connect, connect_to_read};
use super::output::{number, print_json_lines, rfc3339};
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

/// Prints alerts, newest first.
pub fn alerts_list(
    config: &Config,
    filter: alerts::AlertFilter,
    ticker: Option<&str>,
    limit: usize,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let mut entries =
        alerts::list(&mut connection, filter, ticker, limit).context("listing alerts")?;
    // The application may write SQLite's own time format: show one format.
    for entry in &mut entries {
        for time in [
            &mut entry.triggered_at,
            &mut entry.expires_at,
            &mut entry.expired_at,
            &mut entry.snoozed_until,
        ]
        .into_iter()
        .flatten()
        {
            *time = rfc3339(time);
        }
    }
    if json {
        return print_json_lines(&entries, out);
    }
    // States as the daemons judge them: by the database's clock.
    let now = store::clock::now(&mut connection).context("reading the database's clock")?;
    write_alerts(entries, now, out)
}

/// The alerts' table: each alert's state in a word, as of `now`.
fn write_alerts(
    entries: Vec<alerts::AlertEntry>,
    now: chrono::DateTime<Utc>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("TICKER", Align::Left),
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
    for entry in entries {
        let state = state(&entry, now);
        let cooldown = cooldown_and_band(&entry);
        let fired = match entry.max_triggers.as_deref().map(str::trim) {
            Some(max) if !max.is_empty() => format!("{} of {max}", entry.trigger_count),
            _ => entry.trigger_count.to_string(),
        };
        table.row(vec![
            entry.id.to_string(),
            entry.ticker,
            entry.condition,
            match entry.upper_price {
                Some(upper) => format!("{}..{}", number(entry.target_price), number(Some(upper))),
                None => number(entry.target_price),
            },
            number(entry.reference_price),
            state.to_owned(),
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

/// An alert's state in a word, at `now` ("waiting": for its price to come
/// back past its level by its band; "malformed": armed, but never judged
/// until its row is mended).
fn state(entry: &alerts::AlertEntry, now: chrono::DateTime<Utc>) -> &'static str {
    let alert = Alert::parse(&entry.written());
    let snoozed = alert.as_ref().is_ok_and(|alert| alert.snoozed_at(now));
    let spent = alert
        .as_ref()
        .is_ok_and(|alert| alert.spent_by(entry.trigger_count));
    let waiting = entry.return_below.is_some() || entry.return_above.is_some();
    match (
        entry.enabled,
        &entry.rearm_at,
        &entry.triggered_at,
        &entry.expired_at,
    ) {
        (true, ..) if alert.is_err() => "malformed",
        (true, ..) if snoozed => "snoozed",
        (true, ..) => "armed",
        (false, ..) if waiting => "waiting",
        (false, Some(_), ..) => "cooling",
        (false, None, Some(_), _) if spent => "spent",
        (false, None, Some(_), _) => "triggered",
        (false, None, None, Some(_)) => "expired",
        (false, None, None, None) => "disabled",
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
