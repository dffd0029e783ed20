//! `outbox list` and `outbox replay`.

use std::io::Write;

use anyhow::Context as _;

use crate::config::Config;
use crate::store::outbox;

use super::open::{connect, connect_to_read};
use super::output::print_json_lines;
use super::table::{Align, Table};

/// Prints up to `limit` undelivered events (or only dead letters), oldest first.
pub fn outbox_list(
    config: &Config,
    filter: outbox::OutboxFilter,
    limit: usize,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let entries = outbox::list(&mut connection, filter, limit).context("listing the outbox")?;
    let (pending, dead) = outbox::backlog(&mut connection).context("counting the outbox")?;
    if json {
        return print_json_lines(&entries, out);
    }
    let mut table = Table::new(&[
        ("EVENT ID", Align::Left),
        ("ALERT", Align::Right),
        ("STATE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("CREATED", Align::Left),
        ("NEXT ATTEMPT", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for entry in entries {
        table.row(vec![
            entry.event_id,
            entry.alert_id.to_string(),
            entry.state,
            entry.attempts.to_string(),
            entry.created_at,
            entry.next_attempt_at.unwrap_or_else(|| "-".to_owned()),
            entry.last_error.unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.write("", out)?;
    writeln!(out, "{pending} pending, {dead} dead")?;
    Ok(())
}

/// What to replay.
pub enum Replay {
    Events(Vec<String>),
    AllDead,
}

/// Puts events back on a fresh retry schedule, due now, with their ids and
/// bodies unchanged. A running daemon picks them up within seconds. Fails if a
/// named event does not exist or was delivered.
pub fn outbox_replay(config: &Config, what: Replay, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect(config)?;
    match what {
        Replay::AllDead => {
            let count =
                outbox::replay_all_dead(&mut connection).context("replaying dead letters")?;
            writeln!(
                out,
                "replayed {count} dead letter{}",
                if count == 1 { "" } else { "s" }
            )?;
        }
        Replay::Events(ids) => {
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
                "not replayed (unknown, or already delivered): {}",
                missing.join(", ")
            );
        }
    }
    Ok(())
}
