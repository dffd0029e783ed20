//! PostgreSQL: a tick's end (see `store::observations`). Its own for the
//! batch as arrays and `price_alertd_time()`; the watermark's statement is
//! shared.

use crate::store::observations::Observation;
use crate::store::watermarks::{self, Advance};

use super::{PgConnection, PgResult as Result};

pub fn finish_tick(
    connection: &mut PgConnection,
    observed: &[Observation],
    watermark: Option<&Advance<'_>>,
    now: &str,
) -> Result<()> {
    let advance = connection.prepared(watermarks::ADVANCE)?;
    // Prepared only where a tick holds or lets go of a ticker.
    let holds = match watermark {
        Some(Advance { released, held, .. }) if !released.is_empty() || !held.is_empty() => Some((
            connection.prepared(watermarks::RELEASE)?,
            connection.prepared(watermarks::HOLD)?,
        )),
        _ => None,
    };
    let upsert = connection.prepared(
        "INSERT INTO observations (ticker, price, quote_time, observed_at)
         SELECT * FROM unnest($1::text[], $2::float8[], $3::text[]), (SELECT $4::text) AS now
         ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, quote_time = excluded.quote_time,
             observed_at = excluded.observed_at
         WHERE price_alertd_time(excluded.quote_time) > price_alertd_time(observations.quote_time)
            OR price_alertd_time(observations.quote_time) IS NULL",
    )?;
    let mut transaction = connection.client().transaction()?;
    if let Some(watermark) = watermark {
        transaction.execute(&advance, &[&watermark.job, &watermark.to, &now])?;
        if let Some((release, hold)) = &holds {
            let (job, through) = (watermark.job, watermark.through);
            for released in watermark.released {
                let since = released.since;
                transaction.execute(release, &[&job, &released.ticker, &since, &through])?;
            }
            for held in watermark.held {
                let (since, moved) = (held.since, held.moved);
                transaction.execute(hold, &[&job, &held.ticker, &since, &through, &moved])?;
            }
        }
    }
    let tickers: Vec<&str> = observed.iter().map(|seen| seen.ticker.as_str()).collect();
    let prices: Vec<f64> = observed.iter().map(|seen| seen.price).collect();
    let times: Vec<&str> = observed
        .iter()
        .map(|seen| seen.quote_time.as_str())
        .collect();
    // Tickers in one order, so two daemons finishing at once lock rows in
    // the same order.
    let mut order: Vec<usize> = (0..observed.len()).collect();
    order.sort_unstable_by(|a, b| tickers[*a].cmp(tickers[*b]));
    let tickers: Vec<&str> = order.iter().map(|at| tickers[*at]).collect();
    let prices: Vec<f64> = order.iter().map(|at| prices[*at]).collect();
    let times: Vec<&str> = order.iter().map(|at| times[*at]).collect();
    transaction.execute(&upsert, &[&tickers, &prices, &times, &now])?;
    transaction.commit()
}
