//! PostgreSQL: a tick's end (see `store::observations`). Its own for the
//! batch as arrays and `price_alertd_time()`; the watermark's statement is
//! shared.

use postgres::{GenericClient, Statement};

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
    let writes = Writes {
        advance,
        holds,
        watermark,
        upsert,
        tickers,
        prices,
        times,
        now,
    };
    // One statement is a transaction of its own: no BEGIN and COMMIT, two
    // round trips, around it (a claiming tick's observations, or a
    // watermark that moved alone).
    if writes.statements() <= 1 {
        return writes.run(connection.client());
    }
    let mut transaction = connection.client().transaction()?;
    writes.run(&mut transaction)?;
    transaction.commit()
}

/// What a tick's end writes, prepared: the watermark's move and holds, if
/// any, and the observed prices, in ticker order.
struct Writes<'a> {
    advance: Statement,
    holds: Option<(Statement, Statement)>,
    watermark: Option<&'a Advance<'a>>,
    upsert: Statement,
    tickers: Vec<&'a str>,
    prices: Vec<f64>,
    times: Vec<&'a str>,
    now: &'a str,
}

impl Writes<'_> {
    /// How many statements [`Writes::run`] makes.
    fn statements(&self) -> usize {
        let moves = self.watermark.map_or(0, |watermark| {
            let holds = self
                .holds
                .as_ref()
                .map_or(0, |_| watermark.released.len() + watermark.held.len());
            1 + holds
        });
        moves + usize::from(!self.tickers.is_empty())
    }

    fn run(&self, client: &mut impl GenericClient) -> Result<()> {
        let now = self.now;
        if let Some(watermark) = self.watermark {
            client.execute(&self.advance, &[&watermark.job, &watermark.to, &now])?;
            if let Some((release, hold)) = &self.holds {
                let (job, through) = (watermark.job, watermark.through);
                for released in watermark.released {
                    let since = released.since;
                    client.execute(release, &[&job, &released.ticker, &since, &through])?;
                }
                for held in watermark.held {
                    let (since, moved) = (held.since, held.moved);
                    client.execute(hold, &[&job, &held.ticker, &since, &through, &moved])?;
                }
            }
        }
        if !self.tickers.is_empty() {
            client.execute(
                &self.upsert,
                &[&self.tickers, &self.prices, &self.times, &now],
            )?;
        }
        Ok(())
    }
}
