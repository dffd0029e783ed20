//! `outbox list`, `outbox show` and `outbox replay`.

use std::io::Write;

use anyhow::Context as _;

use crate::config::Config;
use crate::store::outbox::{self, OutboxQuery};

use super::open::{connect, connect_to_read};
use super::output::{print_json_lines, rfc3339};
use super::table::{Align, Table};

/// Prints the events of `query`, oldest first, and how many more it holds
/// past its limit.
pub fn outbox_list(
    config: &Config,
    query: &OutboxQuery<'_>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let entries = outbox::list(&mut connection, query).context("listing the outbox")?;
    let more = if entries.len() == query.limit {
        outbox::count(&mut connection, query)
            .context("counting the outbox")?
            .saturating_sub(entries.len() as u64)
    } else {
        0
    };
    if json {
        print_json_lines(&entries, out)?;
        if more > 0 {
            eprintln!("{more} more past --limit {}", query.limit);
        }
        return Ok(());
    }
    let (pending, dead) = outbox::backlog(&mut connection).context("counting the outbox")?;
    let mut table = Table::new(&[
        ("EVENT ID", Align::Left),
        ("ALERT", Align::Right),
        ("USER", Align::Left),
        ("STATE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("CREATED", Align::Left),
        ("NEXT ATTEMPT OR DELIVERED", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for entry in entries {
        table.row(vec![
            entry.event_id,
            entry.alert_id.to_string(),
            entry.user_id.unwrap_or_else(|| "-".to_owned()),
            entry.state,
            entry.attempts.to_string(),
            rfc3339(&entry.created_at),
            entry
                .next_attempt_at
                .or(entry.delivered_at.as_deref().map(rfc3339))
                .unwrap_or_else(|| "-".to_owned()),
            entry.last_error.unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.write("", out)?;
    if more > 0 {
        writeln!(out, "{more} more past --limit {}", query.limit)?;
    }
    writeln!(out, "{pending} pending, {dead} dead")?;
    Ok(())
}

/// Prints one event: its state, its body as queued, and every attempt kept
/// (time, URL, status or error, duration).
pub fn outbox_show(
    config: &Config,
    event_id: &str,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let event = outbox::show(&mut connection, event_id)
        .context("reading the event")?
        .with_context(|| format!("there is no event {event_id} in the outbox"))?;
    if json {
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
        return Ok(());
    }
    let entry = &event.entry;
    writeln!(out, "event     {}", entry.event_id)?;
    let user = entry.user_id.as_deref().unwrap_or("none");
    writeln!(out, "alert     {} (user {user})", entry.alert_id)?;
    let state = match (&entry.delivered_at, &entry.next_attempt_at) {
        (Some(at), _) if entry.state == "delivered" => format!("delivered at {}", rfc3339(at)),
        (_, Some(next)) => format!("{}, next attempt at {next}", entry.state),
        _ => entry.state.clone(),
    };
    writeln!(out, "state     {state}")?;
    writeln!(out, "queued    {}", rfc3339(&entry.created_at))?;
    if let Some(error) = &entry.last_error {
        writeln!(out, "error     {error}")?;
    }
    let body = serde_json::from_str::<serde_json::Value>(&event.body)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| event.body.clone());
    writeln!(out, "body")?;
    for line in body.lines() {
        writeln!(out, "  {line}")?;
    }
    if event.attempts_made.is_empty() {
        writeln!(out, "attempts  none yet")?;
        return Ok(());
    }
    writeln!(out, "attempts")?;
    let mut table = Table::new(&[
        ("#", Align::Right),
        ("AT", Align::Left),
        ("URL", Align::Left),
        ("STATUS", Align::Right),
        ("TOOK (ms)", Align::Right),
        ("ERROR", Align::Left),
    ]);
    for attempt in &event.attempts_made {
        table.row(vec![
            attempt.number.to_string(),
            attempt.at.clone(),
            if attempt.url.is_empty() {
                "(none)".to_owned()
            } else {
                attempt.url.clone()
            },
            attempt
                .status
                .map_or_else(|| "-".to_owned(), |status| status.to_string()),
            attempt.duration_ms.to_string(),
            attempt.error.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.write("  ", out)?;
    Ok(())
}

/// What to replay.
pub enum Replay<'a> {
    Events(Vec<String>),
    /// Every event of a query (its limit aside); with `dry_run`, only
    /// counted.
    Matching {
        query: OutboxQuery<'a>,
        dry_run: bool,
    },
}

/// Puts events back on a fresh retry schedule, due now, with the same ids;
/// says how many.
pub fn outbox_replay(
    config: &Config,
    what: Replay<'_>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let plural = |count: usize| if count == 1 { "" } else { "s" };
    let noun = |query: &OutboxQuery<'_>| match query.state {
        outbox::OutboxState::Dead => "dead letter",
        _ => "event",
    };
    match what {
        Replay::Matching {
            query,
            dry_run: true,
        } => {
            let mut connection = connect_to_read(config)?;
            let count =
                outbox::count(&mut connection, &query).context("counting the events")? as usize;
            writeln!(
                out,
                "would replay {count} {}{} (--dry-run)",
                noun(&query),
                plural(count)
            )?;
        }
        Replay::Matching {
            query,
            dry_run: false,
        } => {
            let mut connection = connect(config)?;
            let count =
                outbox::replay_matching(&mut connection, &query).context("replaying events")?;
            writeln!(out, "replayed {count} {}{}", noun(&query), plural(count))?;
        }
        Replay::Events(ids) => {
            let mut connection = connect(config)?;
            let replayed = outbox::replay(&mut connection, &ids).context("replaying events")?;
            for id in &replayed {
                writeln!(out, "replayed {id}")?;
            }
            let missing: Vec<&str> = ids
                .iter()
                .filter(|id| !replayed.contains(id))
                .map(String::as_str)
                .collect();
            anyhow::ensure!(
                missing.is_empty(),
                "not replayed (unknown, or already delivered): {} (a delivered event is replayed by filters: --state delivered --alert ID)",
                missing.join(", ")
            );
        }
    }
    Ok(())
}
