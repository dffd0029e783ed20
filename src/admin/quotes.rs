//! `quotes set` and `quotes list`.

use std::io::Write;

use anyhow::Context as _;

use crate::config::Config;
use crate::evaluate::{QuoteProblem, usable_quote};
use crate::store::{self, quotes};

use super::open::{connect, connect_to_read};
use super::output::{number, print_json_lines, rfc3339};
use super::table::{Align, Table};

/// Sets a quote, stamped now by the database's clock (for testing and
/// manual operation).
pub fn quotes_set(
    config: &Config,
    ticker: &str,
    price: f64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    anyhow::ensure!(!ticker.trim().is_empty(), "the ticker is empty");
    anyhow::ensure!(
        price.is_finite() && price > 0.0,
        "the price must be a positive number"
    );
    let mut connection = connect(config)?;
    let now = store::timestamp(
        store::clock::now(&mut connection).context("reading the database's clock")?,
    );
    quotes::upsert(
        &mut connection,
        &[quotes::NewQuote {
            ticker: ticker.trim().to_owned(),
            price,
            updated_at: now.clone(),
        }],
    )
    .context("setting the quote")?;
    writeln!(out, "{} {price} at {now}", ticker.trim())?;
    Ok(())
}

#[derive(serde::Serialize)]
struct QuoteLine {
    ticker: String,
    price: Option<f64>,
    updated_at: String,
    /// Seconds since `updated_at`, by the database's clock (negative for a
    /// quote dated ahead of it); none when it is not a time.
    age_seconds: Option<i64>,
    /// As a tick takes it: `fresh`, `stale` (older than `prices.max_age`),
    /// `future` (dated more than a minute ahead), `bad-price` or
    /// `bad-time`.
    usable: &'static str,
}

/// Prints every quote, each marked as a tick would take it now.
pub fn quotes_list(config: &Config, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let now = store::clock::now(&mut connection).context("reading the database's clock")?;
    let max_age = config.prices.max_age;
    let mut quotes: Vec<QuoteLine> = quotes::list(&mut connection)
        .context("reading quotes")?
        .into_iter()
        .map(|quote| QuoteLine {
            usable: match usable_quote(quote.price, &quote.updated_at, max_age, now) {
                Ok(_) => "fresh",
                Err(QuoteProblem::Stale) => "stale",
                Err(QuoteProblem::Future) => "future",
                Err(QuoteProblem::BadPrice) => "bad-price",
                Err(QuoteProblem::BadTime) => "bad-time",
            },
            age_seconds: crate::time::parse_time(&quote.updated_at)
                .map(|at| (now - at).num_seconds()),
            ticker: quote.ticker,
            price: quote.price,
            updated_at: rfc3339(&quote.updated_at),
        })
        .collect();
    quotes.sort_by(|a, b| a.ticker.cmp(&b.ticker));
    if json {
        return print_json_lines(&quotes, out);
    }
    let mut table = Table::new(&[
        ("TICKER", Align::Left),
        ("PRICE", Align::Right),
        ("UPDATED AT", Align::Left),
        ("AGE (s)", Align::Right),
        ("USABLE", Align::Left),
    ]);
    for quote in quotes {
        table.row(vec![
            quote.ticker,
            number(quote.price),
            quote.updated_at,
            quote
                .age_seconds
                .map_or_else(|| "-".to_owned(), |age| age.to_string()),
            quote.usable.to_owned(),
        ]);
    }
    table.write("", out)?;
    Ok(())
}
