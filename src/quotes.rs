//! The HTTP quote source: before each evaluation, fetches quotes for the
//! tickers that have enabled alerts and stores them in `quotes`, with the
//! source's own times. The only module besides `deliver` that knows HTTP.
//!
//! The source is asked `GET {url}?tickers=AAPL,MSFT` and answers
//! `{"quotes": [{"ticker": "AAPL", "price": 201.5, "time": "2026-03-02T14:29:58Z"}, ...]}`.
//! A ticker missing from the answer, or with a price that is not a positive
//! number or a time that is not RFC 3339, counts as not fetched.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::{HttpSource, Scope};
use crate::evaluate::parse_time;
use crate::log_recurring;
use crate::recurring::Recurring;
use crate::store::{self, Pool};

/// How long the source is left alone after a 429 without `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// The longest back-off a `Retry-After` can ask for.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// A configured source and its back-off state, shared by every tick of a process.
pub struct Source {
    client: reqwest::Client,
    config: HttpSource,
    /// Set by a 429: no request goes out before then.
    backoff_until: Mutex<Option<Instant>>,
    /// A source that is down fails every tick: logged at its changes.
    failures: Mutex<Recurring>,
}

/// What one refresh did.
#[derive(Debug, Default)]
pub struct Refresh {
    pub fetched: u64,
    /// Tickers with enabled alerts whose quote was not fetched: the tick must
    /// not trigger them on an older stored quote.
    pub failed: HashSet<String>,
    /// Requests that failed, and answers that were not usable.
    pub errors: u64,
}

#[derive(Deserialize)]
struct Answer {
    quotes: Vec<AnswerQuote>,
}

#[derive(Deserialize)]
struct AnswerQuote {
    ticker: String,
    price: serde_json::Value,
    time: serde_json::Value,
}

impl Source {
    pub fn new(config: &HttpSource) -> anyhow::Result<Source> {
        let client = crate::deliver::client_builder()
            .timeout(config.timeout)
            .build()
            .context("building the quote source's HTTP client")?;
        Ok(Source {
            client,
            config: config.clone(),
            backoff_until: Mutex::new(None),
            failures: Mutex::default(),
        })
    }

    /// Fetches and stores quotes for the tickers in `scope` that have enabled
    /// alerts, in batches. Never fails: a failure only marks tickers as not
    /// fetched.
    pub async fn refresh(&self, pool: &Pool, scope: &Scope) -> Refresh {
        let mut refresh = Refresh::default();
        let tickers = match enabled_tickers(pool, scope).await {
            Ok(tickers) => tickers,
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "listing tickers to fetch failed"
                );
                refresh.errors += 1;
                return refresh;
            }
        };
        for batch in tickers.chunks(self.config.batch_size) {
            let backing_off = self
                .backoff_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|until| Instant::now() < until);
            if backing_off {
                refresh.failed.extend(batch.iter().cloned());
                continue;
            }
            match self.fetch(batch).await {
                Ok(quotes) => {
                    if let Some(failed) = self.failures().succeeded() {
                        tracing::info!(failed, "the quote source answers again");
                    }
                    let got: HashSet<&str> = quotes
                        .iter()
                        .map(|(ticker, _, _)| ticker.as_str())
                        .collect();
                    let missing: Vec<&String> = batch
                        .iter()
                        .filter(|ticker| !got.contains(ticker.as_str()))
                        .collect();
                    if !missing.is_empty() {
                        refresh.errors += 1;
                        tracing::warn!(missing = missing.len(), first = %missing[0], "the quote source did not answer for some tickers");
                        refresh.failed.extend(missing.into_iter().cloned());
                    }
                    refresh.fetched += quotes.len() as u64;
                    if let Err(error) = store_quotes(pool, quotes).await {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "storing fetched quotes failed"
                        );
                        refresh.errors += 1;
                        refresh.failed.extend(batch.iter().cloned());
                    }
                }
                Err(error) => {
                    refresh.errors += 1;
                    log_recurring!(
                        warn,
                        self.failures(),
                        format!("{error:#}"),
                        tickers = batch.len(),
                        "fetching quotes failed; those tickers are not evaluated until it works"
                    );
                    refresh.failed.extend(batch.iter().cloned());
                }
            }
        }
        refresh
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Recurring> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One request for one batch; returns the usable quotes.
    async fn fetch(&self, batch: &[String]) -> anyhow::Result<Vec<(String, f64, String)>> {
        let mut url = self.config.url.clone();
        url.query_pairs_mut()
            .append_pair("tickers", &batch.join(","));
        let mut request = self.client.get(url);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let mut response = request
            .send()
            .await
            .map_err(|error| anyhow::Error::new(error.without_url()))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok()?.trim().parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_BACKOFF)
                .min(MAX_BACKOFF);
            *self.backoff_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + wait);
            anyhow::bail!("the quote source answered 429; backing off for {wait:?}");
        }
        anyhow::ensure!(status.is_success(), "the quote source answered {status}");
        let limit = self.config.max_response_bytes;
        let too_large = || {
            anyhow::anyhow!(
                "the quote source's answer is larger than prices.max_response_bytes ({limit} bytes)"
            )
        };
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(too_large());
        }
        let (body, complete) = crate::deliver::read_prefix(&mut response, limit)
            .await
            .map_err(|error| anyhow::Error::new(error.without_url()))?;
        if !complete {
            return Err(too_large());
        }
        let answer: Answer = serde_json::from_slice(&body)
            .context("the quote source's answer is not the expected JSON")?;
        let wanted: HashSet<&str> = batch.iter().map(String::as_str).collect();
        let mut quotes = Vec::with_capacity(answer.quotes.len());
        for quote in answer.quotes {
            if !wanted.contains(quote.ticker.as_str()) {
                continue;
            }
            let price = quote
                .price
                .as_f64()
                .filter(|price| price.is_finite() && *price > 0.0);
            let time = quote
                .time
                .as_str()
                .filter(|time| parse_time(time).is_some());
            match (price, time) {
                (Some(price), Some(time)) => quotes.push((quote.ticker, price, time.to_owned())),
                _ => {
                    tracing::warn!(ticker = quote.ticker, price = %quote.price, time = %quote.time, "skipping an unusable quote from the source")
                }
            }
        }
        Ok(quotes)
    }
}

async fn enabled_tickers(pool: &Pool, scope: &Scope) -> anyhow::Result<Vec<String>> {
    let tickers = store::blocking(pool, "listing tickers", |connection| {
        store::alerts::enabled_tickers(connection)
    })
    .await?;
    Ok(tickers
        .into_iter()
        .filter(|ticker| !ticker.trim().is_empty() && scope.covers(ticker))
        .collect())
}

async fn store_quotes(pool: &Pool, quotes: Vec<(String, f64, String)>) -> anyhow::Result<()> {
    store::blocking(pool, "storing quotes", move |connection| {
        store::alerts::upsert_quotes(connection, &quotes)
    })
    .await
}
