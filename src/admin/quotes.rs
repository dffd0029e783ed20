//! `quotes set` and `quotes list`.

use std::io::Write;

use anyhow::Context as _;

use crate::config::Config;
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
}

/// Prints every quote.
pub fn quotes_list(config: &Config, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let mut quotes: Vec<QuoteLine> = quotes::list(&mut connection)
        .context("reading quotes")?
        .into_iter()
        .map(|quote| QuoteLine {
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
    ]);
    for quote in quotes {
        table.row(vec![quote.ticker, number(quote.price), quote.updated_at]);
    }
    table.write("", out)?;
    Ok(())
}
