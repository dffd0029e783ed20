//! PostgreSQL: what changed since a job last looked (see `store::changes`
//! and, for why change numbers are transaction ids, `store::postgresql`).

use std::sync::OnceLock;

use postgres::fallible_iterator::FallibleIterator as _;

use crate::store::changes::{Ask, ChangedTicker, Horizon, Move, Nearest, Reading, TickerState};

use super::rows::{alert_columns, alert_row};
use super::{PgConnection, PgResult as Result};
use crate::condition::{Direction, REACH, ROUNDING, Value};
use crate::store::shared::{LEVEL, nearest_levels_columns, nearest_of, reach_bounds};

/// From this transaction's snapshot: every transaction numbered below its
/// `xmax` that it sees has committed (`visible`), and every one below its
/// `xmin` has ended (`closed`: nothing numbered below can still appear).
/// Transactions of any database of the server count, so a long one anywhere
/// holds `closed` back; changes between the two are read again by the next
/// tick, which judges them again (claimed alerts are no longer enabled).
pub fn horizon(connection: &mut PgConnection) -> Result<Horizon> {
    let statement = connection.prepared(
        "SELECT pg_snapshot_xmax(s)::text::bigint - 1, pg_snapshot_xmin(s)::text::bigint - 1
         FROM pg_current_snapshot() AS s",
    )?;
    let row = connection.client().query_one(&statement, &[])?;
    Ok(Horizon {
        visible: row.try_get(0)?,
        closed: row.try_get(1)?,
    })
}

/// A page of the tickers that changed in the window (see
/// `store::changes::changed_tickers`), gathered by the server (its
/// aggregate and sort spill to disk past `work_mem`): the log's quote
/// writes in the window, or every quote, as changed at `since + 1`, when
/// the log was pruned past `since` (the caller's transaction is one
/// snapshot, so the pruned point and the log agree), and the alerts changed
/// in it. Tickers compare bytewise (`COLLATE "C"`), as the daemon orders
/// them.
pub fn changed_tickers(
    connection: &mut PgConnection,
    since: i64,
    until: i64,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<ChangedTicker>> {
    // Whether the log was pruned past `since` is read in the statement
    // (one round trip, not two); a missing mark reads every quote.
    let statement = connection.prepared(
        "WITH pruned AS (SELECT coalesce((SELECT $1 < through FROM change_log_pruned WHERE id = 1),
                                         true) AS past)
         SELECT c.ticker, bool_or(c.moved), count(*) FILTER (WHERE NOT c.moved), min(c.change)
         FROM (SELECT quote_ticker::text AS ticker, true AS moved, change_seq AS change
               FROM change_log
               WHERE NOT (SELECT past FROM pruned)
                 AND change_seq > $1 AND change_seq <= $2 AND quote_ticker IS NOT NULL
               UNION ALL
               SELECT ticker::text, true, $1 + 1 FROM quotes WHERE (SELECT past FROM pruned)
               UNION ALL
               SELECT coalesce(ticker::text, ''), false, change_seq FROM price_alerts
               WHERE change_seq > $1 AND change_seq <= $2 AND enabled = '1') AS c
         WHERE $3::text IS NULL OR c.ticker COLLATE \"C\" > $3::text
         GROUP BY c.ticker ORDER BY c.ticker COLLATE \"C\" LIMIT $4",
    )?;
    let limit = limit as i64;
    let rows = connection
        .client()
        .query(&statement, &[&since, &until, &after, &limit])?;
    rows.iter()
        .map(|row| {
            Ok(ChangedTicker {
                ticker: row.try_get(0)?,
                moved: row.try_get(1)?,
                changed_alerts: row.try_get::<_, i64>(2)? as u64,
                first_change: row.try_get(3)?,
                logged: None,
            })
        })
        .collect()
}

/// See `store::changes::changed_alert_count`.
pub fn changed_alert_count(connection: &mut PgConnection, since: i64, until: i64) -> Result<u64> {
    let statement = connection
        .prepared("SELECT count(*) FROM price_alerts WHERE change_seq > $1 AND change_seq <= $2")?;
    let count: i64 = connection
        .client()
        .query_one(&statement, &[&since, &until])?
        .try_get(0)?;
    Ok(count as u64)
}

/// Up to `limit` distinct tickers of the log's quote changes in the window
/// (see `store::changes::first_changed_quotes`).
pub fn first_changed_quotes(
    connection: &mut PgConnection,
    since: i64,
    until: i64,
    limit: i64,
) -> Result<Vec<String>> {
    let statement = connection.prepared(
        "SELECT DISTINCT quote_ticker FROM change_log
         WHERE change_seq > $1 AND change_seq <= $2 AND quote_ticker IS NOT NULL LIMIT $3",
    )?;
    connection
        .client()
        .query(&statement, &[&since, &until, &limit])?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}

/// Prunes the log (see `store::changes::prune_change_log`) in one
/// transaction, which blocks no writer: the pruned point moves, and the
/// rows below it go.
pub fn prune_change_log(connection: &mut PgConnection, cutoff: &str) -> Result<u64> {
    let closed = horizon(connection)?.closed;
    let oldest = connection.prepared(crate::store::changes::OLDEST_LIVE_WATERMARK)?;
    let move_point = connection
        .prepared("UPDATE change_log_pruned SET through = $1 WHERE id = 1 AND through < $1")?;
    let delete = connection.prepared(
        "DELETE FROM change_log
         WHERE change_seq <= (SELECT through FROM change_log_pruned WHERE id = 1)",
    )?;
    let fold = connection.prepared(crate::store::watermarks::FOLD_STALE_HOLDS)?;
    let drop = connection.prepared(crate::store::watermarks::DROP_STALE_HOLDS)?;
    let mut transaction = connection.client().transaction()?;
    transaction.execute(&fold, &[&cutoff])?;
    transaction.execute(&drop, &[&cutoff])?;
    let oldest: Option<i64> = transaction.query_one(&oldest, &[&cutoff])?.try_get(0)?;
    let through = oldest.unwrap_or(closed).min(closed);
    transaction.execute(&move_point, &[&through])?;
    let deleted = transaction.execute(&delete, &[])?;
    transaction.commit()?;
    Ok(deleted)
}

/// Tickers per statement in the batched reads: each statement's arrays and
/// rows stay small.
const CHUNK: usize = 500;

/// One statement per chunk of tickers: their quotes, observations (price and
/// quote time) and (where
/// asked) whether they have enabled alerts, and alerts waiting for their
/// price to come back.
pub fn ticker_states(
    connection: &mut PgConnection,
    tickers: &[(&str, Ask)],
) -> Result<Vec<TickerState>> {
    let statement = connection.prepared(
        "SELECT q.price::float8, q.updated_at::text, q.ticker IS NOT NULL, o.price,
                CASE WHEN t.ask
                     THEN EXISTS (SELECT 1 FROM price_alerts AS a WHERE a.ticker = t.ticker AND a.enabled = '1')
                     ELSE false END,
                t.ask AND (EXISTS (SELECT 1 FROM price_alerts AS a WHERE a.ticker = t.ticker
                                   AND a.return_below IS NOT NULL AND a.enabled = '0')
                           OR EXISTS (SELECT 1 FROM price_alerts AS a WHERE a.ticker = t.ticker
                                      AND a.return_above IS NOT NULL AND a.enabled = '0')),
                o.quote_time
         FROM unnest($1::text[], $2::bool[], $3::bool[]) WITH ORDINALITY AS t (ticker, ask, quote, at)
         LEFT JOIN quotes AS q ON t.quote AND q.ticker = t.ticker
         LEFT JOIN observations AS o ON o.ticker = t.ticker
         ORDER BY t.at",
    )?;
    let mut states = Vec::with_capacity(tickers.len());
    for chunk in tickers.chunks(CHUNK) {
        let names: Vec<&str> = chunk.iter().map(|(ticker, _)| *ticker).collect();
        let asks: Vec<bool> = chunk.iter().map(|(_, ask)| ask.alerts).collect();
        let quotes: Vec<bool> = chunk.iter().map(|(_, ask)| ask.quote).collect();
        for row in connection
            .client()
            .query(&statement, &[&names, &asks, &quotes])?
        {
            let quoted: bool = row.try_get(2)?;
            states.push(TickerState {
                quote: if quoted {
                    Some((
                        row.try_get(0)?,
                        row.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                    ))
                } else {
                    None
                },
                previous: row.try_get(3)?,
                previous_time: row.try_get(6)?,
                has_alerts: row.try_get(4)?,
                waiting: row.try_get(5)?,
            });
        }
    }
    Ok(states)
}

/// One statement per chunk of moved tickers: for each, every range of
/// `condition::REACH` its move applies to, joined laterally.
pub fn each_reachable_alert_of(
    connection: &mut PgConnection,
    moves: &[(&str, Move)],
    seen: i64,
    reading: &mut dyn Reading,
) -> Result<()> {
    static SQL: OnceLock<String> = OnceLock::new();
    let statement = connection.prepared(SQL.get_or_init(reach_statement))?;
    for (chunk_at, chunk) in moves.chunks(CHUNK).enumerate() {
        let tickers: Vec<&str> = chunk.iter().map(|(ticker, _)| *ticker).collect();
        let prices: Vec<f64> = chunk.iter().map(|(_, moved)| moved.price).collect();
        let previous: Vec<Option<f64>> = chunk.iter().map(|(_, moved)| moved.previous).collect();
        let (widened_up, widened_down) = (1.0 + ROUNDING, 1.0 - ROUNDING);
        let params: [&(dyn postgres::types::ToSql + Sync); 6] = [
            &tickers,
            &prices,
            &previous,
            &seen,
            &widened_up,
            &widened_down,
        ];
        let mut rows = connection.client().query_raw(&statement, params)?;
        while let Some(row) = rows.next()? {
            let at = chunk_at * CHUNK + row.try_get::<_, i64>(0)? as usize;
            let alert = super::rows::alert_row_from(&row, 1)?;
            if !reading.row(at, alert) {
                return Ok(());
            }
        }
        drop(rows);
        if !reading.at_rest() {
            break;
        }
    }
    Ok(())
}

/// Each ticker's nearest levels around its price
/// (`store::changes::nearest_levels`), a statement for up to [`CHUNK`]
/// tickers.
pub fn nearest_levels(
    connection: &mut PgConnection,
    prices: &[(&str, f64)],
) -> Result<Vec<Nearest>> {
    static STATEMENT: OnceLock<String> = OnceLock::new();
    let sql = STATEMENT.get_or_init(|| {
        let columns = nearest_levels_columns(
            &format!("({LEVEL})"),
            |_| "price_alerts".to_owned(),
            "'1'",
            ["m.ticker", "m.price"],
        );
        format!(
            "SELECT {columns} FROM unnest($1::text[], $2::float8[]) WITH ORDINALITY \
                 AS m (ticker, price, at) ORDER BY m.at"
        )
    });
    let statement = connection.prepared(sql)?;
    let mut nearest = Vec::with_capacity(prices.len());
    for chunk in prices.chunks(CHUNK) {
        let tickers: Vec<&str> = chunk.iter().map(|(ticker, _)| *ticker).collect();
        let at: Vec<f64> = chunk.iter().map(|(_, price)| *price).collect();
        for row in connection.client().query(&statement, &[&tickers, &at])? {
            nearest.push(nearest_of(|at| row.try_get::<_, Option<f64>>(at))?);
        }
    }
    Ok(nearest)
}

/// Every range of `condition::REACH` as one statement over the moves
/// `$1` (tickers), `$2` (prices) and `$3` (previous prices), of alerts
/// changed at or before `$4`, `$5` and `$6` widening a price by
/// `ROUNDING` up and down: a range of a rise or a fall is read only on
/// one. Each range's condition is a literal, as the planner needs to match
/// the level indexes.
fn reach_statement() -> String {
    let level = format!("({LEVEL})");
    let ranges: Vec<String> = REACH
        .iter()
        .map(|range| {
            let moved = match range.on {
                Direction::Any => "",
                Direction::Up => "m.previous < m.price AND ",
                Direction::Down => "m.previous > m.price AND ",
            };
            let bounds = reach_bounds(range, &level, |_, value| match value {
                Value::Price => "m.price".to_owned(),
                Value::Previous => "m.previous".to_owned(),
                Value::PriceWidenedUp => "m.price * $5::float8".to_owned(),
                Value::PriceWidenedDown => "m.price * $6::float8".to_owned(),
            });
            format!(
                "SELECT {} FROM price_alerts WHERE ticker = m.ticker AND condition = '{}' \
                 AND enabled = '1' AND {moved}{bounds} AND change_seq <= $4",
                alert_columns!(),
                range.condition.name()
            )
        })
        .collect();
    format!(
        "SELECT m.at - 1, r.* FROM unnest($1::text[], $2::float8[], $3::float8[]) WITH ORDINALITY \
             AS m (ticker, price, previous, at) \
         CROSS JOIN LATERAL ({}) AS r",
        ranges.join(" UNION ALL ")
    )
}

pub fn each_changed_alert(
    connection: &mut PgConnection,
    since: i64,
    until: i64,
    reading: &mut dyn Reading,
) -> Result<()> {
    const SQL: &str = concat!(
        "SELECT ",
        alert_columns!(),
        " FROM price_alerts WHERE change_seq > $1 AND change_seq <= $2 AND enabled = '1' ORDER BY change_seq"
    );
    let statement = connection.prepared(SQL)?;
    let params: [&(dyn postgres::types::ToSql + Sync); 2] = [&since, &until];
    let mut rows = connection.client().query_raw(&statement, params)?;
    while let Some(row) = rows.next()? {
        if !reading.row(0, alert_row(&row)?) {
            return Ok(());
        }
    }
    drop(rows);
    reading.at_rest();
    Ok(())
}

/// One statement per chunk of tickers, each ticker's alerts through the
/// ticker index, joined laterally (see
/// `store::changes::each_changed_alert_of`).
pub fn each_changed_alert_of(
    connection: &mut PgConnection,
    tickers: &[&str],
    since: i64,
    until: i64,
    reading: &mut dyn Reading,
) -> Result<()> {
    const SQL: &str = concat!(
        "SELECT t.at - 1, r.* FROM unnest($1::text[]) WITH ORDINALITY AS t (ticker, at)
         CROSS JOIN LATERAL (SELECT ",
        alert_columns!(),
        " FROM price_alerts WHERE ticker = t.ticker AND enabled = '1'
              AND change_seq > $2 AND change_seq <= $3) AS r"
    );
    let statement = connection.prepared(SQL)?;
    for (chunk_at, chunk) in tickers.chunks(CHUNK).enumerate() {
        let params: [&(dyn postgres::types::ToSql + Sync); 3] = [&chunk, &since, &until];
        let mut rows = connection.client().query_raw(&statement, params)?;
        while let Some(row) = rows.next()? {
            let at = chunk_at * CHUNK + row.try_get::<_, i64>(0)? as usize;
            let alert = super::rows::alert_row_from(&row, 1)?;
            if !reading.row(at, alert) {
                return Ok(());
            }
        }
        drop(rows);
        if !reading.at_rest() {
            break;
        }
    }
    Ok(())
}
