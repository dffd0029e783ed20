//! SQLite: a tick's end (see `store::observations`). Its own for the
//! write transaction and `julianday()`; the watermark's statement is shared.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::observations::Observation;
use crate::store::watermarks::{self, Advance};

/// Observations written per transaction: each takes the write lock a few
/// milliseconds and grows the WAL by a few MiB at most, however many
/// tickers a page holds.
const OBSERVATIONS_PER_COMMIT: usize = 4096;

/// Ends a page of a tick: records the evaluated quotes as the tickers'
/// previous prices (unless a newer quote was recorded meanwhile, by another
/// daemon) in transactions of [`OBSERVATIONS_PER_COMMIT`], each taking its
/// turn at the write lock and followed by the WAL's upkeep, and moves the
/// job's watermark and writes its holds, if given, with the last. A crash
/// between them leaves the watermark where it was: the next tick judges
/// these tickers again, some at prices already recorded as their previous
/// ones, and what this tick claimed is claimed already.
pub fn finish_tick(
    connection: &mut Connection,
    observed: &[Observation],
    watermark: Option<&Advance<'_>>,
    now: &str,
) -> rusqlite::Result<()> {
    let mut chunks = observed.chunks(OBSERVATIONS_PER_COMMIT).peekable();
    loop {
        // Nothing observed is one empty transaction: the watermark moves.
        let chunk = chunks.next().unwrap_or_default();
        let last = chunks.peek().is_none();
        record(connection, chunk, watermark.filter(|_| last), now)?;
        super::wal::after_write(connection);
        if last {
            return Ok(());
        }
    }
}

/// One transaction of [`finish_tick`].
fn record(
    connection: &mut Connection,
    observed: &[Observation],
    watermark: Option<&Advance<'_>>,
    now: &str,
) -> rusqlite::Result<()> {
    let _turn = super::wal::Turn::take();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(advance) = watermark {
        super::shared::prepare_shared(&transaction, watermarks::ADVANCE)?.execute(params![
            advance.job,
            advance.to,
            now
        ])?;
        let mut release = super::shared::prepare_shared(&transaction, watermarks::RELEASE)?;
        for hold in advance.released {
            release.execute(params![
                advance.job,
                hold.ticker,
                hold.since,
                advance.through
            ])?;
        }
        let mut held = super::shared::prepare_shared(&transaction, watermarks::HOLD)?;
        for hold in advance.held {
            held.execute(params![
                advance.job,
                hold.ticker,
                hold.since,
                advance.through,
                hold.moved
            ])?;
        }
    }
    upsert(&transaction, observed, now)?;
    transaction.commit()
}

/// Records `observed` as the tickers' previous prices, each unless the one
/// recorded is as new (by its quote's time), in the caller's write
/// transaction: a tick's end, or a claim (`sqlite::alerts::claim`).
pub(super) fn upsert(
    transaction: &rusqlite::Transaction<'_>,
    observed: &[Observation],
    now: &str,
) -> rusqlite::Result<()> {
    let mut upsert = transaction.prepare_cached(
        "INSERT INTO observations (ticker, price, quote_time, observed_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, quote_time = excluded.quote_time,
             observed_at = excluded.observed_at
         WHERE julianday(excluded.quote_time) > julianday(observations.quote_time)",
    )?;
    for observation in observed {
        upsert.execute(params![
            observation.ticker,
            observation.price,
            observation.quote_time,
            now
        ])?;
    }
    Ok(())
}
