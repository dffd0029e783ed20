//! SQLite: what changed since a job last looked (see `store::changes`).
//! Its own because change numbers are the log's row ids here (one writer:
//! they follow commits), and reads are point queries, which cost no round
//! trip.

use std::borrow::Cow;
use std::sync::OnceLock;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::alerts::AlertRow;
use crate::store::changes::{
    Ask, ChangedTicker, Horizon, Move, Nearest, Page, Quote, Reading, TickerState,
};

use super::rows::alert_row;
use crate::condition::{Indexed, REACH, Range};
use crate::store::shared::{LEVEL, nearest_levels_columns, nearest_of, reach_bounds};

/// The index of enabled alerts' levels (a channel's lower one).
const LEVEL_INDEX: &str = "price_alerts_level";
/// The index of enabled channels' upper levels.
const UPPER_INDEX: &str = "price_alerts_upper";

/// The log's last change number: every change with a number up to it is
/// visible to whoever read it in the same transaction, and, with one writer
/// at a time, no change can still appear below it.
pub fn horizon(connection: &Connection) -> rusqlite::Result<Horizon> {
    let last = last_change(connection)?;
    Ok(Horizon {
        visible: last,
        closed: last,
    })
}

/// The largest number in the log (never pruned), 0 for an empty log.
pub(super) fn last_change(connection: &Connection) -> rusqlite::Result<i64> {
    connection
        .prepare_cached("SELECT coalesce(max(change_seq), 0) FROM change_log")?
        .query_row([], |row| row.get(0))
}

/// A page of the tickers that changed in the window (see
/// `store::changes::changed_tickers`): the log's quote writes in the window
/// (or every quote, in ticker order, when the log was pruned past `since`),
/// then the alerts changed in it, gathered into the page in Rust (SQLite's
/// GROUP BY would sort every change). The alerts are read in the order of
/// their changes where few changed, else in ticker order from the page's
/// start, stopping past its end (a first tick's every alert is not read
/// again for each page).
pub fn changed_tickers(
    connection: &Connection,
    since: i64,
    until: i64,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<ChangedTicker>> {
    let mut page = Page::new(after, limit);
    let from = after.unwrap_or("");
    if since < pruned_through(connection)? {
        // One more than the page: the quote `after` itself comes too.
        let mut statement = connection.prepare_cached(
            "SELECT ticker, price, updated_at FROM quotes
             WHERE ticker >= ?1 ORDER BY ticker LIMIT ?2 + 0",
        )?;
        let mut rows = statement.query(params![from, limit as i64 + 1])?;
        while let Some(row) = rows.next()? {
            let quote = Some(quote_of(row.get(1)?, row.get(2)?));
            page.quote(&text_of(row.get_ref(0)?), since + 1, quote);
        }
    } else {
        let mut statement = connection.prepare_cached(
            "SELECT change_seq, quote_ticker, quote_price, quote_time FROM change_log
             WHERE change_seq > ?1 AND change_seq <= ?2 AND quote_ticker >= ?3",
        )?;
        let mut rows = statement.query(params![since, until, from])?;
        while let Some(row) = rows.next()? {
            let (price, time): (Value, Value) = (row.get(2)?, row.get(3)?);
            let logged = !(price == Value::Null && time == Value::Null);
            let quote = logged.then(|| quote_of(price, time));
            page.quote(&text_of(row.get_ref(1)?), row.get(0)?, quote);
        }
    }
    if changed_alert_count(connection, since, until)? as usize <= limit {
        let mut statement = connection.prepare_cached(
            "SELECT ticker, change_seq FROM price_alerts
             WHERE change_seq > ?1 AND change_seq <= ?2 AND enabled = 1",
        )?;
        let mut rows = statement.query(params![since, until])?;
        while let Some(row) = rows.next()? {
            page.alert(&text_of(row.get_ref(0)?), row.get(1)?);
        }
    } else {
        if after.is_none() {
            let mut statement = connection.prepare_cached(
                "SELECT change_seq FROM price_alerts
                 WHERE ticker IS NULL AND enabled = 1 AND change_seq > ?1 AND change_seq <= ?2",
            )?;
            let mut rows = statement.query(params![since, until])?;
            while let Some(row) = rows.next()? {
                page.alert("", row.get(0)?);
            }
        }
        let mut statement = connection.prepare_cached(
            "SELECT ticker, change_seq FROM price_alerts INDEXED BY idx_price_alerts_enabled
             WHERE ticker >= ?3 AND enabled = 1 AND change_seq > ?1 AND change_seq <= ?2
             ORDER BY ticker",
        )?;
        let mut rows = statement.query(params![since, until, from])?;
        while let Some(row) = rows.next()? {
            let ticker = text_of(row.get_ref(0)?);
            if page.past(&ticker) {
                break;
            }
            page.alert(&ticker, row.get(1)?);
        }
    }
    Ok(page.into_tickers())
}

/// See `store::changes::changed_alert_count`.
pub fn changed_alert_count(
    connection: &Connection,
    since: i64,
    until: i64,
) -> rusqlite::Result<u64> {
    connection
        .prepare_cached(
            "SELECT count(*) FROM price_alerts WHERE change_seq > ?1 AND change_seq <= ?2",
        )?
        .query_row(params![since, until], |row| row.get::<_, i64>(0))
        .map(|count| count as u64)
}

/// Up to `limit` distinct tickers of the log's quote changes in the window
/// (see `store::changes::first_changed_quotes`): SQLite stops reading once
/// it has them.
pub fn first_changed_quotes(
    connection: &Connection,
    since: i64,
    until: i64,
    limit: i64,
) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare_cached(FIRST_CHANGED_QUOTES)?;
    let rows = statement.query_map(params![since, until, limit], |row| {
        Ok(super::rows::text(row.get(0)?))
    })?;
    rows.collect()
}

/// The statement of [`first_changed_quotes`]. Its `LIMIT` is an
/// expression, not a bare parameter: SQLite (built with `STAT4`, as the
/// bundled library is) plans with a bare parameter's value, and so prepares
/// the statement again every time it is bound (see `store::sqlite`).
const FIRST_CHANGED_QUOTES: &str = "SELECT DISTINCT quote_ticker FROM change_log
     WHERE change_seq > ?1 AND change_seq <= ?2 AND quote_ticker IS NOT NULL LIMIT ?3 + 0";

/// How far the change log may have been pruned.
pub(super) fn pruned_through(connection: &Connection) -> rusqlite::Result<i64> {
    connection
        .prepare_cached("SELECT through FROM change_log_pruned WHERE id = 1")?
        .query_row([], |row| row.get(0))
}

/// A ticker as the application wrote it, as `rows::text` reads it, without
/// a copy per row where the caller keeps only some.
fn text_of(value: ValueRef<'_>) -> Cow<'_, str> {
    match value {
        ValueRef::Text(text) => String::from_utf8_lossy(text),
        ValueRef::Integer(integer) => Cow::Owned(integer.to_string()),
        ValueRef::Real(real) => Cow::Owned(real.to_string()),
        ValueRef::Null | ValueRef::Blob(_) => Cow::Borrowed(""),
    }
}

/// A quote from the values the application wrote.
fn quote_of(price: Value, time: Value) -> Quote {
    (super::rows::number(price), super::rows::text(time))
}

/// One ticker after another (a statement costs no round trip here), one
/// statement each: its quote (where asked), its observed price and that
/// quote's time, and whether it has enabled alerts (through
/// `idx_price_alerts_enabled`) and alerts waiting, where asked. A ticker
/// whose quote the log gave reads one B-tree less: under a feed, each
/// ticker's pages come from a page cache that the feed's last commit
/// emptied.
pub fn ticker_states(
    connection: &Connection,
    tickers: &[(&str, Ask)],
) -> rusqlite::Result<Vec<TickerState>> {
    const STATE: &str = "o.price,
                ?2 AND EXISTS (SELECT 1 FROM price_alerts WHERE ticker = ?1 AND enabled = 1),
                ?2 AND (EXISTS (SELECT 1 FROM price_alerts INDEXED BY price_alerts_return_below
                                WHERE ticker = ?1 AND return_below IS NOT NULL AND enabled = 0)
                        OR EXISTS (SELECT 1 FROM price_alerts INDEXED BY price_alerts_return_above
                                   WHERE ticker = ?1 AND return_above IS NOT NULL AND enabled = 0)),
                o.quote_time";
    let mut with_quote = connection.prepare_cached(&format!(
        "SELECT {STATE}, q.price, q.updated_at, q.ticker IS NOT NULL
         FROM (SELECT 1) LEFT JOIN quotes AS q ON q.ticker = ?1
         LEFT JOIN observations AS o ON o.ticker = ?1"
    ))?;
    let mut without_quote = connection.prepare_cached(&format!(
        "SELECT {STATE} FROM (SELECT 1) LEFT JOIN observations AS o ON o.ticker = ?1"
    ))?;
    tickers
        .iter()
        .map(|&(ticker, ask)| {
            let statement = if ask.quote {
                &mut with_quote
            } else {
                &mut without_quote
            };
            statement.query_row(params![ticker, ask.alerts], |row| {
                let quoted = ask.quote && row.get::<_, bool>(6)?;
                Ok(TickerState {
                    quote: quoted
                        .then(|| -> rusqlite::Result<_> { Ok(quote_of(row.get(4)?, row.get(5)?)) })
                        .transpose()?,
                    previous: row.get(0)?,
                    previous_time: row.get::<_, Option<Value>>(3)?.map(super::rows::text),
                    has_alerts: row.get(1)?,
                    waiting: row.get(2)?,
                })
            })
        })
        .collect()
}

/// Rests in one snapshot at most: a read holds one read transaction
/// across its statements, as each statement on its own would be a
/// transaction of its own, which after any other connection's commit (a
/// feed's, every few milliseconds) starts from an empty page cache. It
/// ends the transaction where the reader may wait, after this many rests,
/// and where a checkpoint of the process's asks the readers to leave the
/// WAL (`wal::readers_asked_to_leave`), so that no snapshot holds it long.
const RESTS_PER_SNAPSHOT: u32 = 64;

/// A read's snapshot, across its rests (see [`RESTS_PER_SNAPSHOT`]); none
/// of its own inside a caller's transaction.
struct Snapshot<'c> {
    connection: &'c Connection,
    open: bool,
    rests: u32,
}

impl<'c> Snapshot<'c> {
    fn begin(connection: &'c Connection) -> rusqlite::Result<Snapshot<'c>> {
        let mut snapshot = Snapshot {
            connection,
            open: false,
            rests: 0,
        };
        if connection.is_autocommit() {
            snapshot.start()?;
        }
        Ok(snapshot)
    }

    fn start(&mut self) -> rusqlite::Result<()> {
        self.connection
            .prepare_cached("BEGIN DEFERRED")?
            .execute([])?;
        self.open = true;
        self.rests = 0;
        Ok(())
    }

    fn stop(&mut self) -> rusqlite::Result<()> {
        if std::mem::take(&mut self.open) {
            self.connection.prepare_cached("COMMIT")?.execute([])?;
        }
        Ok(())
    }

    /// The reader's rest: outside the snapshot if it may wait there, or
    /// if the snapshot is old; false to stop reading.
    fn rest(&mut self, reading: &mut dyn Reading) -> rusqlite::Result<bool> {
        if !self.open {
            return Ok(reading.at_rest());
        }
        self.rests += 1;
        let leave = super::wal::readers_asked_to_leave();
        if !reading.may_wait() && self.rests < RESTS_PER_SNAPSHOT && !leave {
            return Ok(reading.at_rest());
        }
        self.stop()?;
        if leave {
            super::wal::wait_for_checkpoint();
        }
        let go_on = reading.at_rest();
        if go_on {
            self.start()?;
        }
        Ok(go_on)
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }
}

/// One ticker after another ([`each_reachable_alert`]), at rest after
/// each.
pub fn each_reachable_alert_of(
    connection: &Connection,
    moves: &[(&str, Move)],
    seen: i64,
    reading: &mut dyn Reading,
) -> rusqlite::Result<()> {
    let mut snapshot = Snapshot::begin(connection)?;
    for (at, &(ticker, moved)) in moves.iter().enumerate() {
        let mut open = true;
        each_reachable_alert(connection, ticker, moved, seen, |alert| {
            open = reading.row(at, alert);
            open
        })?;
        if !open || !snapshot.rest(reading)? {
            break;
        }
    }
    snapshot.stop()
}

/// Change numbers read by one statement of [`each_changed_alert`]: each is
/// one change here, so a statement gives at most this many rows.
const CHANGES_PER_STATEMENT: i64 = 2048;

/// Tells `reading` every enabled alert changed after `since`, up to
/// `until`, one row at a time, in the order of their changes (through
/// `price_alerts_changed`), a statement per [`CHANGES_PER_STATEMENT`]
/// change numbers, at rest after each.
pub fn each_changed_alert(
    connection: &Connection,
    since: i64,
    until: i64,
    reading: &mut dyn Reading,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {} FROM price_alerts
         WHERE change_seq > ?1 AND change_seq <= ?2 AND enabled = 1 ORDER BY change_seq",
        super::alerts::ALERT_COLUMNS
    ))?;
    let mut snapshot = Snapshot::begin(connection)?;
    let mut from = since;
    while from < until {
        let to = from.saturating_add(CHANGES_PER_STATEMENT).min(until);
        let mut rows = statement.query(params![from, to])?;
        while let Some(row) = rows.next()? {
            if !reading.row(0, alert_row(row)?) {
                drop(rows);
                return snapshot.stop();
            }
        }
        drop(rows);
        if !snapshot.rest(reading)? {
            break;
        }
        from = to;
    }
    snapshot.stop()
}

/// One ticker after another, one statement each (through
/// `idx_price_alerts_enabled`, whatever the window's size), at rest after
/// each (see `store::changes::each_changed_alert_of`).
pub fn each_changed_alert_of(
    connection: &Connection,
    tickers: &[&str],
    since: i64,
    until: i64,
    reading: &mut dyn Reading,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {} FROM price_alerts INDEXED BY idx_price_alerts_enabled
         WHERE ticker = ?1 AND enabled = 1 AND change_seq > ?2 AND change_seq <= ?3",
        super::alerts::ALERT_COLUMNS
    ))?;
    let mut snapshot = Snapshot::begin(connection)?;
    for (at, ticker) in tickers.iter().enumerate() {
        let mut rows = statement.query(params![ticker, since, until])?;
        while let Some(row) = rows.next()? {
            if !reading.row(at, alert_row(row)?) {
                drop(rows);
                return snapshot.stop();
            }
        }
        drop(rows);
        if !snapshot.rest(reading)? {
            break;
        }
    }
    snapshot.stop()
}

/// Calls `each`, one row at a time, with every enabled alert of `ticker` whose
/// level `moved` can reach — every alert `evaluate::judge` could fire at
/// this price, and few more — leaving out alerts changed after `seen` (they
/// are read as changed alerts instead): a statement per range of
/// `condition::REACH` the move applies to.
fn each_reachable_alert(
    connection: &Connection,
    ticker: &str,
    moved: Move,
    seen: i64,
    mut each: impl FnMut(AlertRow) -> bool,
) -> rusqlite::Result<()> {
    static STATEMENTS: OnceLock<Vec<String>> = OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| REACH.iter().map(reach_statement).collect());
    let (price, previous) = (moved.price, moved.previous);
    for (range, sql) in REACH.iter().zip(statements) {
        if !range.applies(price, previous) {
            continue;
        }
        let mut statement = connection.prepare_cached(sql)?;
        statement.raw_bind_parameter(1, ticker)?;
        statement.raw_bind_parameter(2, range.condition.name())?;
        statement.raw_bind_parameter(3, seen)?;
        for (at, &(_, _, value)) in range.bounds.iter().enumerate() {
            statement.raw_bind_parameter(4 + at, value.of(price, previous))?;
        }
        let mut rows = statement.raw_query();
        while let Some(row) = rows.next()? {
            if !each(alert_row(row)?) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A range of `condition::REACH` as SQLite reads it: through its index, the
/// ticker `?1`, the condition `?2`, changed at or before `?3`, each bound's
/// value from `?4` on.
fn reach_statement(range: &Range) -> String {
    let index = index_name(range.index());
    let bounds = reach_bounds(range, LEVEL, |at, _| format!("?{}", 4 + at));
    format!(
        "SELECT {} FROM price_alerts INDEXED BY {index}
         WHERE ticker = ?1 AND condition = ?2 AND enabled = 1 AND {bounds}
           AND change_seq <= ?3",
        super::alerts::ALERT_COLUMNS
    )
}

/// Each ticker's nearest levels around its price
/// (`store::changes::nearest_levels`), a statement each.
pub fn nearest_levels(
    connection: &Connection,
    prices: &[(&str, f64)],
) -> rusqlite::Result<Vec<Nearest>> {
    static STATEMENT: OnceLock<String> = OnceLock::new();
    let sql = STATEMENT.get_or_init(|| {
        let columns = nearest_levels_columns(
            LEVEL,
            |index| format!("price_alerts INDEXED BY {}", index_name(index)),
            "1",
            ["?1", "?2"],
        );
        format!("SELECT {columns}")
    });
    let mut statement = connection.prepare_cached(sql)?;
    prices
        .iter()
        .map(|&(ticker, price)| {
            statement.query_row(params![ticker, price], |row| {
                nearest_of(|at| Ok(super::rows::number(row.get(at)?)))
            })
        })
        .collect()
}

/// The name of a level index.
fn index_name(index: Indexed) -> &'static str {
    match index {
        Indexed::Level => LEVEL_INDEX,
        Indexed::Upper => UPPER_INDEX,
    }
}

/// Log rows deleted per transaction when pruning: the application's writers
/// wait for SQLite's one write lock a few milliseconds at most.
const PRUNE_CHUNK: i64 = 5_000;

/// Prunes the change log below the oldest watermark written at or after
/// `cutoff` (see `store::changes::prune_change_log`): first the pruned
/// point moves, in its own transaction, then the rows below it go in
/// chunks, so that no reader ever misses a change it would read. The last
/// row stays whatever its age: the next change's number is one past it.
/// Each chunk takes its own turn at the write lock and is followed by the
/// WAL's upkeep: pruning 2M rows at once, one turn for them all, once kept
/// an application write waiting 1.6 s.
pub fn prune_change_log(connection: &mut Connection, cutoff: &str) -> rusqlite::Result<u64> {
    let through = {
        let _turn = super::wal::Turn::take();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let closed = horizon(&transaction)?.closed;
        for stale in [
            crate::store::watermarks::FOLD_STALE_HOLDS,
            crate::store::watermarks::DROP_STALE_HOLDS,
        ] {
            super::shared::prepare_shared(&transaction, stale)?.execute([cutoff])?;
        }
        let oldest: Option<i64> = super::shared::prepare_shared(
            &transaction,
            crate::store::changes::OLDEST_LIVE_WATERMARK,
        )?
        .query_row([cutoff], |row| row.get(0))?;
        let through = oldest.unwrap_or(closed).min(closed);
        transaction
            .prepare_cached(
                "UPDATE change_log_pruned SET through = ?1 WHERE id = 1 AND through < ?1",
            )?
            .execute([through])?;
        transaction.commit()?;
        pruned_through(connection)?.min(last_change(connection)? - 1)
    };
    let mut deleted = 0;
    loop {
        let chunk = {
            let _turn = super::wal::Turn::take();
            connection
                .prepare_cached(
                    "DELETE FROM change_log WHERE change_seq IN (
                         SELECT change_seq FROM change_log WHERE change_seq <= ?1
                         ORDER BY change_seq LIMIT ?2 + 0)",
                )?
                .execute(params![through, PRUNE_CHUNK])?
        };
        super::wal::after_write(connection);
        deleted += chunk as u64;
        if (chunk as i64) < PRUNE_CHUNK {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn numbers(connection: &Connection) -> Vec<(i64, Option<String>)> {
        connection
            .prepare("SELECT change_seq, quote_ticker FROM change_log ORDER BY change_seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn every_change_takes_the_next_number_and_pruning_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let pool = super::super::open(&dir.path().join("a.db"), Duration::from_secs(5), 1).unwrap();
        let mut connection = pool.get().unwrap();
        let start = last_change(&connection).unwrap();
        connection
            .execute_batch(
                "INSERT INTO price_alerts (id, ticker, condition, target_price, created_at)
                     VALUES (1, 'A', 'above', 1, 'x');
                 INSERT INTO quotes (ticker, price, updated_at) VALUES ('A', 1, 't1');
                 UPDATE quotes SET price = 1 WHERE ticker = 'A';
                 UPDATE quotes SET price = 2 WHERE ticker = 'A';
                 UPDATE price_alerts SET enabled = 0 WHERE id = 1;
                 UPDATE price_alerts SET enabled = 1 WHERE id = 1;
                 UPDATE price_alerts SET target_price = 3 WHERE id = 1;",
            )
            .unwrap();
        let alert_change = || -> i64 {
            connection
                .query_row(
                    "SELECT change_seq FROM price_alerts WHERE id = 1",
                    [],
                    |row| row.get(0),
                )
                .unwrap()
        };
        // The insert, two quote writes (not the write that changed
        // nothing), the re-arm and the edit (not the claim), in order; the
        // alert keeps its last.
        let a = Some("A".to_owned());
        assert_eq!(
            numbers(&connection)[1..],
            [
                (start + 1, None),
                (start + 2, a.clone()),
                (start + 3, a.clone()),
                (start + 4, None),
                (start + 5, None),
            ]
        );
        assert_eq!(alert_change(), start + 5);
        assert_eq!(horizon(&connection).unwrap().visible, start + 5);

        // With no watermark written lately, pruning goes to the last change
        // and deletes every row but the last, so numbers go on growing.
        assert_eq!(prune_change_log(&mut connection, "9999").unwrap(), 5);
        assert_eq!(pruned_through(&connection).unwrap(), start + 5);
        assert_eq!(numbers(&connection), [(start + 5, None)]);
        connection
            .execute("UPDATE quotes SET price = 4 WHERE ticker = 'A'", [])
            .unwrap();
        assert_eq!(numbers(&connection)[1], (start + 6, a.clone()));
        // A watermark written lately holds the log after its number.
        connection
            .execute(
                "INSERT INTO job_watermarks (job, change_seq, updated_at) VALUES ('j', ?1, '9999')",
                [start + 5],
            )
            .unwrap();
        connection
            .execute("UPDATE quotes SET price = 5 WHERE ticker = 'A'", [])
            .unwrap();
        assert_eq!(prune_change_log(&mut connection, "9999").unwrap(), 1);
        assert_eq!(pruned_through(&connection).unwrap(), start + 5);
        assert_eq!(
            numbers(&connection),
            [(start + 6, a.clone()), (start + 7, a)]
        );
    }

    /// A statement run at every tick with a `LIMIT` is prepared once, not
    /// again at each run (see `store::sqlite`).
    #[test]
    fn the_first_changed_quotes_are_read_without_preparing_again() {
        let dir = tempfile::tempdir().unwrap();
        let pool = super::super::open(&dir.path().join("a.db"), Duration::from_secs(5), 1).unwrap();
        let connection = pool.get().unwrap();
        for limit in [10, 20, 30] {
            first_changed_quotes(&connection, 0, limit, limit).unwrap();
        }
        let statement = connection.prepare_cached(FIRST_CHANGED_QUOTES).unwrap();
        assert_eq!(
            statement.get_status(rusqlite::StatementStatus::RePrepare),
            0
        );
        drop(statement);
        // A bare parameter would have been.
        let bare = FIRST_CHANGED_QUOTES.replace("?3 + 0", "?3");
        for limit in [10, 20] {
            let mut statement = connection.prepare_cached(&bare).unwrap();
            statement
                .query(params![0, limit, limit])
                .unwrap()
                .next()
                .unwrap();
        }
        let statement = connection.prepare_cached(&bare).unwrap();
        assert!(statement.get_status(rusqlite::StatementStatus::RePrepare) > 0);
    }
}
