//! SQLite: a tick's end (see `store::observations`). Its own for the
//! write transaction and `julianday()`; the watermark's statement is shared.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::observations::Observation;

/// Ends a tick, in one transaction: records the evaluated quotes as the
/// tickers' previous prices (unless a newer quote was recorded meanwhile, by
/// another daemon), and moves the job's watermark (`(key, change)`), if
/// given.
pub fn finish_tick(
    connection: &mut Connection,
    observed: &[Observation],
    watermark: Option<(&str, i64)>,
    now: &str,
) -> rusqlite::Result<()> {
    let _turn = super::wal::Turn::take();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some((job, watermark)) = watermark {
        transaction.execute(
            crate::store::watermarks::ADVANCE,
            params![job, watermark, now],
        )?;
    }
    {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO observations (ticker, price, quote_time, observed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, quote_time = excluded.quote_time,
                 observed_at = excluded.observed_at
             WHERE julianday(excluded.quote_time) > julianday(observations.quote_time)",
        )?;
        for (ticker, price, quote_time) in observed {
            upsert.execute(params![ticker, price, quote_time, now])?;
        }
    }
    transaction.commit()
}
