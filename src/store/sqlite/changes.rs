//! SQLite: what changed since a job last looked (see `store::changes`).
//! Its own because change numbers are a counter here (one writer: they
//! follow commits), and reads are point queries, which cost no round trip.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};

use crate::store::alerts::AlertRow;
use crate::store::changes::{Horizon, Move, TickerState};

use super::rows::alert_row;

/// An alert's level, the number its condition compares the price with:
/// the target for `above`, `below` and the crossings; for the moving-%
/// conditions the price at which the move is reached. `price_alerts_level`
/// indexes it (for enabled alerts), so the alerts a price can trigger are a
/// range. The queries below repeat it verbatim, as SQLite needs to use the
/// index.
pub(in crate::store) const LEVEL: &str = "CASE condition \
     WHEN 'moving_up_pct' THEN reference_price * (1 + target_price / 100.0) \
     WHEN 'moving_down_pct' THEN reference_price * (1 - target_price / 100.0) \
     ELSE target_price END";

/// How far the moving-% bounds are widened, relative to the price: the index
/// computes the level one way and `evaluate::judge` the percentage another,
/// and their rounding may differ in the last bits. Rows read in excess are
/// judged and held.
const ROUNDING: f64 = 1e-9;

/// The change counter's value: every change with a number up to it is
/// visible to whoever read it in the same transaction, and, with one writer
/// at a time, no change can still appear below it.
pub fn horizon(connection: &Connection) -> rusqlite::Result<Horizon> {
    let last = connection.query_row("SELECT last FROM change_counter WHERE id = 1", [], |row| {
        row.get(0)
    })?;
    Ok(Horizon {
        visible: last,
        settled: last,
    })
}

/// Calls `each` with the ticker and change number of every enabled alert
/// changed after `since`, up to `until`, through `price_alerts_changed`,
/// streamed: the caller gathers them per ticker, so memory follows the number
/// of tickers, not of changes (SQLite's GROUP BY would sort them all). A NULL
/// ticker comes as empty.
pub fn changed_alert_tickers(
    connection: &Connection,
    since: i64,
    until: i64,
    mut each: impl FnMut(&str, i64),
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare_cached(
        "SELECT ticker, change_seq FROM price_alerts
         WHERE change_seq > ?1 AND change_seq <= ?2 AND enabled = 1",
    )?;
    let mut rows = statement.query(params![since, until])?;
    while let Some(row) = rows.next()? {
        let change: i64 = row.get(1)?;
        // As `rows::text` reads a ticker, without a copy per row.
        match row.get_ref(0)? {
            ValueRef::Text(text) => each(&String::from_utf8_lossy(text), change),
            ValueRef::Integer(integer) => each(&integer.to_string(), change),
            ValueRef::Real(real) => each(&real.to_string(), change),
            ValueRef::Null | ValueRef::Blob(_) => each("", change),
        }
    }
    Ok(())
}

/// One scan of `quotes_changed`, each changed quote with its observation and
/// whether its ticker has enabled alerts (see `store::changes`).
pub fn changed_quote_states(
    connection: &Connection,
    since: i64,
    until: i64,
) -> rusqlite::Result<Vec<(String, i64, TickerState)>> {
    let mut statement = connection.prepare_cached(
        "SELECT q.ticker, q.change_seq, q.price, q.updated_at,
                (SELECT price FROM observations WHERE ticker = q.ticker),
                EXISTS (SELECT 1 FROM price_alerts WHERE ticker = q.ticker AND enabled = 1)
         FROM quotes AS q WHERE q.change_seq > ?1 AND q.change_seq <= ?2",
    )?;
    let rows = statement.query_map(params![since, until], |row| {
        Ok((
            super::rows::text(row.get(0)?),
            row.get(1)?,
            TickerState {
                quote: Some((
                    super::rows::number(row.get(2)?),
                    super::rows::text(row.get(3)?),
                )),
                previous: row.get(4)?,
                has_alerts: row.get(5)?,
            },
        ))
    })?;
    rows.collect()
}

/// One ticker after another (a statement costs no round trip here), one
/// statement each: its quote (if any), its observed price, and whether it
/// has enabled alerts (through `idx_price_alerts_enabled`), where asked.
pub fn ticker_states(
    connection: &Connection,
    tickers: &[(&str, bool)],
) -> rusqlite::Result<Vec<TickerState>> {
    let mut statement = connection.prepare_cached(
        "SELECT q.price, q.updated_at, q.ticker IS NOT NULL,
                (SELECT price FROM observations WHERE ticker = ?1),
                ?2 AND EXISTS (SELECT 1 FROM price_alerts WHERE ticker = ?1 AND enabled = 1)
         FROM (SELECT 1) LEFT JOIN quotes AS q ON q.ticker = ?1",
    )?;
    tickers
        .iter()
        .map(|&(ticker, ask_alerts)| {
            statement.query_row(params![ticker, ask_alerts], |row| {
                let quoted: bool = row.get(2)?;
                Ok(TickerState {
                    quote: quoted
                        .then(|| -> rusqlite::Result<_> {
                            Ok((
                                super::rows::number(row.get(0)?),
                                super::rows::text(row.get(1)?),
                            ))
                        })
                        .transpose()?,
                    previous: row.get(3)?,
                    has_alerts: row.get(4)?,
                })
            })
        })
        .collect()
}

/// One ticker after another (see `each_reachable_alert`).
pub fn each_reachable_alert_of(
    connection: &Connection,
    moves: &[(&str, Move)],
    seen: i64,
    mut each: impl FnMut(usize, AlertRow) -> bool,
) -> rusqlite::Result<()> {
    for (at, &(ticker, moved)) in moves.iter().enumerate() {
        let mut open = true;
        each_reachable_alert(connection, ticker, moved, seen, |alert| {
            open = each(at, alert);
            open
        })?;
        if !open {
            break;
        }
    }
    Ok(())
}

/// Calls `each` with every enabled alert changed after `since`, up to
/// `until`, one row at a time, in the order of their changes (through
/// `price_alerts_changed`).
pub fn each_changed_alert(
    connection: &Connection,
    since: i64,
    until: i64,
    mut each: impl FnMut(AlertRow) -> bool,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {} FROM price_alerts
         WHERE change_seq > ?1 AND change_seq <= ?2 AND enabled = 1 ORDER BY change_seq",
        super::alerts::ALERT_COLUMNS
    ))?;
    let mut rows = statement.query(params![since, until])?;
    while let Some(row) = rows.next()? {
        if !each(alert_row(row)?) {
            break;
        }
    }
    Ok(())
}

/// Calls `each`, one row at a time, with every enabled alert of `ticker` whose
/// level `moved` can reach — every alert `evaluate::judge` could fire at
/// this price, and few more — leaving out alerts changed after `seen` (they
/// are read as changed alerts instead). One range of `price_alerts_level`
/// per condition.
pub fn each_reachable_alert(
    connection: &Connection,
    ticker: &str,
    moved: Move,
    seen: i64,
    mut each: impl FnMut(AlertRow) -> bool,
) -> rusqlite::Result<()> {
    let price = moved.price;
    let mut ranges: Vec<(&str, &str, f64, f64)> = vec![
        ("above", "<= ?3", price, 0.0),
        ("below", ">= ?3", price, 0.0),
        ("moving_up_pct", "<= ?3", price * (1.0 + ROUNDING), 0.0),
        ("moving_down_pct", ">= ?3", price * (1.0 - ROUNDING), 0.0),
    ];
    match moved.previous {
        Some(previous) if previous < price => {
            ranges.push(("crossing_up", "> ?4 AND {level} <= ?3", price, previous));
        }
        Some(previous) if previous > price => {
            ranges.push(("crossing_down", "< ?4 AND {level} >= ?3", price, previous));
        }
        _ => {}
    }
    for (condition, bounds, bound, other) in ranges {
        let bounds = bounds.replace("{level}", LEVEL);
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {} FROM price_alerts
             WHERE ticker = ?1 AND condition = ?2 AND enabled = 1 AND {LEVEL} {bounds}
               AND change_seq <= ?5",
            super::alerts::ALERT_COLUMNS
        ))?;
        let mut rows = statement.query(params![ticker, condition, bound, other, seen])?;
        while let Some(row) = rows.next()? {
            if !each(alert_row(row)?) {
                return Ok(());
            }
        }
    }
    Ok(())
}
