//! SQLite: quotes (see `store::quotes`). Its own because prices and times
//! are read through `rows` (whatever type the application wrote).

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use crate::store::quotes::{NewQuote, QuoteRow};

use super::rows::{number, text};

/// All quotes. One short read: long readers starve WAL checkpoints.
pub fn list(connection: &Connection) -> rusqlite::Result<Vec<QuoteRow>> {
    let mut statement =
        connection.prepare_cached("SELECT ticker, price, updated_at FROM quotes")?;
    let rows = statement.query_map([], |row| {
        Ok(QuoteRow {
            ticker: text(row.get(0)?),
            price: number(row.get(1)?),
            updated_at: text(row.get(2)?),
        })
    })?;
    rows.collect()
}

/// One ticker's quote, if it has one (by its primary key).
pub fn get(connection: &Connection, ticker: &str) -> rusqlite::Result<Option<QuoteRow>> {
    let mut statement = connection
        .prepare_cached("SELECT ticker, price, updated_at FROM quotes WHERE ticker = ?1")?;
    statement
        .query_row([ticker], |row| {
            Ok(QuoteRow {
                ticker: text(row.get(0)?),
                price: number(row.get(1)?),
                updated_at: text(row.get(2)?),
            })
        })
        .optional()
}

/// Each ticker with enabled alerts (through `idx_price_alerts_enabled`)
/// and its quote's time as written.
pub fn alerted(connection: &Connection) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    // The tickers by a skip-scan of `idx_price_alerts_enabled` (ticker,
    // enabled): a seek per ticker, where `DISTINCT` read every alert's
    // entry (1M alerts over 10,000 tickers: 16 ms against 50, per scrape).
    let mut statement = connection.prepare_cached(
        "WITH RECURSIVE alerted (ticker) AS (
             SELECT (SELECT min(ticker) FROM price_alerts INDEXED BY idx_price_alerts_enabled WHERE enabled = 1)
             UNION ALL
             SELECT (SELECT min(ticker) FROM price_alerts INDEXED BY idx_price_alerts_enabled
                     WHERE ticker > a.ticker AND enabled = 1)
             FROM alerted AS a WHERE a.ticker IS NOT NULL)
         SELECT a.ticker, q.updated_at
         FROM alerted AS a LEFT JOIN quotes AS q ON q.ticker = a.ticker
         WHERE a.ticker IS NOT NULL",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            text(row.get(0)?),
            row.get::<_, Option<rusqlite::types::Value>>(1)?.map(text),
        ))
    })?;
    rows.collect()
}

/// Stores fetched quotes with the source's own times. One transaction.
pub fn upsert(connection: &mut Connection, quotes: &[NewQuote]) -> rusqlite::Result<()> {
    let _turn = super::wal::Turn::take();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO quotes (ticker, price, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
        )?;
        for quote in quotes {
            upsert.execute(params![quote.ticker, quote.price, quote.updated_at])?;
        }
    }
    transaction.commit()
}
