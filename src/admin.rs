//! Operators' commands on the database: listing and replaying outbox events,
//! re-arming alerts.
//! They open the store like the daemon does and print for a terminal or, with
//! `--json`, for scripts.

use std::io::Write;

use anyhow::Context as _;
use chrono::{TimeZone as _, Utc};

use crate::config::Config;
use crate::store::{self, outbox};

/// Prints up to `limit` undelivered events (or only dead letters), oldest first.
pub fn outbox_list(
    config: &Config,
    filter: outbox::Filter,
    limit: usize,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let pool = store::open(&config.database, 1)?;
    let connection = pool.get().context("taking a database connection")?;
    let entries = outbox::list(&connection, filter, limit).context("listing the outbox")?;
    let pending = outbox::pending_count(&connection).context("counting pending events")?;
    let dead = outbox::dead_count(&connection).context("counting dead letters")?;
    if json {
        for entry in &entries {
            writeln!(out, "{}", serde_json::to_string(entry)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:>10} {:<8} {:>8} {:<24} {:<20} LAST ERROR",
        "EVENT ID", "ALERT", "STATE", "ATTEMPTS", "CREATED", "NEXT ATTEMPT"
    )?;
    for entry in &entries {
        let next = match entry.state.as_str() {
            "pending" => Utc
                .timestamp_millis_opt(entry.next_attempt_at)
                .single()
                .map_or_else(
                    || "-".to_owned(),
                    |at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                ),
            _ => "-".to_owned(),
        };
        writeln!(
            out,
            "{:<24} {:>10} {:<8} {:>8} {:<24} {:<20} {}",
            entry.event_id,
            entry.alert_id,
            entry.state,
            entry.attempts,
            entry.created_at,
            next,
            entry.last_error.as_deref().unwrap_or("-")
        )?;
    }
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
    let pool = store::open(&config.database, 1)?;
    let mut connection = pool.get().context("taking a database connection")?;
    let now = Utc::now().timestamp_millis();
    match what {
        Replay::AllDead => {
            let count =
                outbox::replay_all_dead(&mut connection, now).context("replaying dead letters")?;
            writeln!(
                out,
                "replayed {count} dead letter{}",
                if count == 1 { "" } else { "s" }
            )?;
        }
        Replay::Events(ids) => {
            let replayed =
                outbox::replay(&mut connection, &ids, now).context("replaying events")?;
            for id in &replayed {
                writeln!(out, "replayed {id}")?;
            }
            let missing: Vec<&String> = ids.iter().filter(|id| !replayed.contains(id)).collect();
            anyhow::ensure!(
                missing.is_empty(),
                "not replayed (unknown, or already delivered): {missing:?}"
            );
        }
    }
    Ok(())
}

/// Re-arms a triggered, expired or disabled alert: its next trigger carries a
/// new event id. Fails if there is no such alert or it is already armed.
pub fn alerts_rearm(config: &Config, id: i64, out: &mut impl Write) -> anyhow::Result<()> {
    let pool = store::open(&config.database, 1)?;
    let connection = pool.get().context("taking a database connection")?;
    anyhow::ensure!(
        store::alerts::rearm(&connection, id).context("re-arming the alert")?,
        "alert {id} does not exist or is already armed"
    );
    writeln!(out, "re-armed alert {id}")?;
    Ok(())
}
