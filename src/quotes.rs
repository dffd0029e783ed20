//! The HTTP quote source: before each evaluation, fetches quotes for the
//! tickers that have enabled alerts and stores them in `quotes`, with the
//! source's own times. The only module besides `deliver` that knows HTTP.
//!
//! The source is asked `GET {url}?tickers=AAPL,MSFT` and answers
//! `{"quotes": [{"ticker": "AAPL", "price": 201.5, "time": "2026-03-02T14:29:58Z"}, ...]}`.
//! A ticker missing from the answer, or with a price that is not a positive
//! number or a time that is not RFC 3339, counts as not fetched.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;

use crate::config::{HttpSource, Scope};
use crate::lock::lock;
use crate::log_recurring;
use crate::recurring::Recurring;
use crate::store::{self, Pool};
use crate::time::parse_time;
use crate::{http_client, logging};

/// How long the source is left alone after a 429 without `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// The longest back-off a `Retry-After` can ask for.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// A configured source and its back-off state, shared by every tick of a process.
pub struct QuoteSource {
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
    /// Tickers whose quote was fetched and stored: with this source, the
    /// only ones a tick may judge (never a trigger on an older stored quote).
    pub fetched: HashSet<String>,
    /// Requests that failed, and answers (or tickers of an answer) that were
    /// not usable.
    pub errors: u64,
    /// How long the requests took, all of them in flight side by side.
    pub duration: Duration,
    /// The database's time the tickers were listed at: the tick's, so that
    /// the fetch asks for the alerts the tick will re-arm as of then. None
    /// when they could not be listed.
    pub at: Option<DateTime<Utc>>,
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

/// The usable quotes of one answer, and how many of its tickers were not.
#[derive(Debug, Default)]
struct Fetched {
    quotes: Vec<store::quotes::NewQuote>,
    /// Tickers given unusably: twice, or without a positive price at a time.
    unusable: u64,
    /// Tickers asked for and not given at all.
    absent: u64,
}

/// What one batch's answer left in `quotes`.
struct Stored {
    /// The tickers whose quote was stored.
    tickers: Vec<String>,
    /// Its tickers given unusably, and one more if some were not given.
    errors: u64,
}

impl QuoteSource {
    pub fn new(config: &HttpSource) -> anyhow::Result<QuoteSource> {
        // A redirect would carry `prices.headers` (an API key) and the URL's
        // query to wherever the answer points: none is followed, and a 3xx
        // is a failed fetch.
        let client = http_client::reqwest_client(config.timeout, "the quote source")?;
        Ok(QuoteSource {
            client,
            config: config.clone(),
            backoff_until: Mutex::new(None),
            failures: Mutex::default(),
        })
    }

    /// Fetches and stores quotes for the tickers in `scope` that a tick as of
    /// now, by the database's clock, may judge (see
    /// `store::alerts::tickers_to_fetch`), in batches, `prices.concurrency`
    /// requests at a time, so a slow batch holds one request's place and
    /// delays no other. Never fails: a failure only leaves tickers
    /// unfetched.
    pub async fn refresh(&self, pool: &Pool, scope: &Scope) -> Refresh {
        let started = std::time::Instant::now();
        let mut refresh = Refresh::default();
        let tickers = match tickers_to_fetch(pool, scope).await {
            Ok((at, tickers)) => {
                refresh.at = Some(at);
                tickers
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "listing tickers to fetch failed"
                );
                refresh.errors += 1;
                refresh.duration = started.elapsed();
                return refresh;
            }
        };
        let batches: Vec<Vec<String>> = tickers
            .chunks(self.config.batch_size)
            .map(<[String]>::to_vec)
            .collect();
        drop(tickers);
        let mut batches = futures_util::stream::iter(batches)
            .map(|batch| async move {
                let outcome = self.fetch_and_store(pool, &batch).await;
                (batch, outcome)
            })
            .buffer_unordered(self.config.concurrency);
        while let Some((batch, outcome)) = batches.next().await {
            match outcome {
                Ok(Some(stored)) => {
                    refresh.errors += stored.errors;
                    refresh.fetched.extend(stored.tickers);
                }
                // Backing off after a 429: not asked.
                Ok(None) => {}
                Err(error) => {
                    refresh.errors += 1;
                    log_recurring!(
                        warn,
                        self.failures(),
                        format!("{error:#}"),
                        tickers = batch.len(),
                        "fetching quotes failed; those tickers are not evaluated until it works"
                    );
                }
            }
        }
        refresh.duration = started.elapsed();
        refresh
    }

    /// One batch: asked, unless the source asked to be left alone, and its
    /// usable quotes stored. `None` if it was not asked.
    async fn fetch_and_store(
        &self,
        pool: &Pool,
        batch: &[String],
    ) -> anyhow::Result<Option<Stored>> {
        let backing_off = lock(&self.backoff_until).is_some_and(|until| Instant::now() < until);
        if backing_off {
            return Ok(None);
        }
        let fetched = self.fetch(batch).await?;
        if let Some(failed) = self.failures().succeeded() {
            tracing::info!(failed, "the quote source answers again");
        }
        let got: HashSet<&str> = fetched
            .quotes
            .iter()
            .map(|quote| quote.ticker.as_str())
            .collect();
        let missing: Vec<&String> = batch
            .iter()
            .filter(|ticker| !got.contains(ticker.as_str()))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                missing = missing.len(),
                first = %logging::bounded(missing[0]),
                "the quote source gave no usable quote for some tickers; they are not evaluated this tick"
            );
        }
        let Fetched {
            quotes,
            unusable,
            absent,
        } = fetched;
        let tickers = quotes.iter().map(|quote| quote.ticker.clone()).collect();
        store::blocking(pool, "storing quotes", move |connection| {
            store::quotes::upsert(connection, &quotes)
        })
        .await
        .context("storing fetched quotes")?;
        Ok(Some(Stored {
            tickers,
            errors: unusable + u64::from(absent > 0),
        }))
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Recurring> {
        lock(&self.failures)
    }

    /// One request for one batch; returns the usable quotes. A ticker the
    /// answer gives twice is unusable: which of the two prices is the
    /// quote cannot be told.
    async fn fetch(&self, batch: &[String]) -> anyhow::Result<Fetched> {
        let mut url = self.config.url.clone();
        url.query_pairs_mut()
            .append_pair("tickers", &batch.join(","));
        let mut request = self.client.get(url);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|error| anyhow::Error::new(error.without_url()))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = http_client::retry_after(response.headers())
                .unwrap_or(DEFAULT_BACKOFF)
                .min(MAX_BACKOFF);
            *lock(&self.backoff_until) = Some(Instant::now() + wait);
            anyhow::bail!("the quote source answered 429; backing off for {wait:?}");
        }
        if status.is_redirection() {
            anyhow::bail!("the quote source answered {status}; redirects are not followed");
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
        let mut body = Vec::new();
        let complete = http_client::read_prefix(reqwest::Body::from(response), limit, &mut body)
            .await
            .map_err(|error| anyhow::Error::new(error.without_url()))?;
        if !complete {
            return Err(too_large());
        }
        let answer: Answer = serde_json::from_slice(&body)
            .context("the quote source's answer is not the expected JSON")?;
        Ok(usable(batch, answer))
    }
}

/// The quotes of `answer` for the tickers asked for, each a positive price
/// at a time; a ticker given twice is left out, as is any unusable entry.
fn usable(batch: &[String], answer: Answer) -> Fetched {
    let wanted: HashSet<&str> = batch.iter().map(String::as_str).collect();
    let mut times_given: HashMap<&str, u32> = HashMap::new();
    for quote in &answer.quotes {
        if let Some(wanted) = wanted.get(quote.ticker.as_str()) {
            *times_given.entry(wanted).or_default() += 1;
        }
    }
    let mut fetched = Fetched {
        absent: (wanted.len() - times_given.len()) as u64,
        ..Fetched::default()
    };
    for (ticker, times) in &times_given {
        if *times > 1 {
            fetched.unusable += 1;
            tracing::warn!(
                ticker = %logging::bounded(ticker),
                times,
                "the quote source gave a ticker more than once in one answer; it is not evaluated this tick"
            );
        }
    }
    for quote in answer.quotes {
        if times_given
            .get(quote.ticker.as_str())
            .is_none_or(|times| *times != 1)
        {
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
            (Some(price), Some(time)) => fetched.quotes.push(store::quotes::NewQuote {
                ticker: quote.ticker,
                price,
                updated_at: time.to_owned(),
            }),
            _ => {
                fetched.unusable += 1;
                tracing::warn!(
                    ticker = %logging::bounded(&quote.ticker),
                    price = %logging::bounded(&quote.price.to_string()),
                    time = %logging::bounded(&quote.time.to_string()),
                    "skipping an unusable quote from the source"
                )
            }
        }
    }
    fetched
}

/// The tickers to fetch, as of now by the database's clock, and that time.
async fn tickers_to_fetch(
    pool: &Pool,
    scope: &Scope,
) -> anyhow::Result<(DateTime<Utc>, Vec<String>)> {
    let (at, tickers) = store::blocking(pool, "listing tickers", move |connection| {
        let now = store::clock::now(connection)?;
        Ok((now, store::alerts::tickers_to_fetch(connection, now)?))
    })
    .await?;
    let tickers = tickers
        .into_iter()
        .filter(|ticker| !ticker.trim().is_empty() && scope.covers(ticker))
        .collect();
    Ok((at, tickers))
}
