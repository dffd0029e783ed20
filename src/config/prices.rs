//! `[prices]`: where quotes come from (the `quotes` table, or an HTTP source
//! fetched before each tick) and how old one may be.

use std::ops::Range;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use toml::Spanned;
use url::Url;

use super::errors::Report;
use super::fields::{
    CONNECTION_HEADERS, MAX_AGE, REQUEST_TIMEOUT, count, duration, header_list, http_url,
    one_source_of_credentials,
};
use super::raw;

#[derive(Debug, Clone)]
pub struct PricesConfig {
    pub source: PriceSource,
    /// A quote older than this never triggers anything.
    pub max_age: Duration,
}

/// Where quotes come from.
#[derive(Debug, Clone)]
pub enum PriceSource {
    /// The `quotes` table, kept current by the application (`source =
    /// "table"`, on either engine).
    Table,
    /// Fetched before each evaluation, then stored in `quotes`.
    Http(HttpSource),
}

#[derive(Debug, Clone)]
pub struct HttpSource {
    /// Called as `GET {url}?tickers=A,B,C`; see README for the JSON it answers.
    pub url: Url,
    /// Tickers per request.
    pub batch_size: usize,
    /// Requests in flight at once: one slow batch holds one of them.
    pub concurrency: usize,
    /// Bound on one request.
    pub timeout: Duration,
    /// Static headers, e.g. an API key (marked sensitive: never printed).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The largest answer read; a longer one is a failed fetch.
    pub max_response_bytes: usize,
}

/// The `[prices]` section.
pub(super) fn prices(
    raw: &raw::RawPrices,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> PricesConfig {
    let max_age = duration(&raw.max_age, "prices.max_age", "15m", MAX_AGE, report);
    let source = match raw
        .source
        .as_ref()
        .map(|source| (source.get_ref().as_str(), source.span()))
    {
        None | Some(("table", _)) => table(raw, report),
        Some(("sqlite", span)) => {
            // The first name of "table", from when SQLite was the only engine.
            warn(
                "prices.source",
                span,
                "\"sqlite\" means the quotes table, on either engine: write \"table\" (\"sqlite\" \
                 keeps working)"
                    .to_owned(),
            );
            table(raw, report)
        }
        Some(("http", span)) => match http(raw, span, report) {
            Some(http) => PriceSource::Http(http),
            None => PriceSource::Table,
        },
        Some((other, span)) => {
            report(
                "prices.source",
                span,
                format!("unknown source {other:?}; expected \"table\" or \"http\""),
            );
            PriceSource::Table
        }
    };
    PricesConfig { source, max_age }
}

/// `source = "table"`: the keys of the HTTP source are refused.
fn table(raw: &raw::RawPrices, report: &mut impl Report) -> PriceSource {
    let http_only = [
        ("prices.url", raw.url.as_ref().map(Spanned::span)),
        (
            "prices.batch_size",
            raw.batch_size.as_ref().map(Spanned::span),
        ),
        (
            "prices.concurrency",
            raw.concurrency.as_ref().map(Spanned::span),
        ),
        ("prices.timeout", raw.timeout.as_ref().map(Spanned::span)),
        (
            "prices.headers",
            raw.headers.values().next().map(Spanned::span),
        ),
        (
            "prices.max_response_bytes",
            raw.max_response_bytes.as_ref().map(Spanned::span),
        ),
    ];
    for (key, span) in http_only {
        if let Some(span) = span {
            report(key, span, "only used with source = \"http\"".to_owned());
        }
    }
    PriceSource::Table
}

/// `source = "http"` (its span is `span`): the source, or `None` without a
/// usable URL (reported).
fn http(raw: &raw::RawPrices, span: Range<usize>, report: &mut impl Report) -> Option<HttpSource> {
    let url = match &raw.url {
        None => {
            report(
                "prices.url",
                span,
                "source = \"http\" needs `url`".to_owned(),
            );
            None
        }
        Some(url) => http_url(url, "prices.url", report),
    };
    let batch_size = count(
        &raw.batch_size,
        "prices.batch_size",
        100,
        1..=10_000,
        report,
    );
    let concurrency = count(&raw.concurrency, "prices.concurrency", 4, 1..=64, report);
    let timeout = duration(
        &raw.timeout,
        "prices.timeout",
        "5s",
        REQUEST_TIMEOUT,
        report,
    );
    let headers = header_list(&raw.headers, "prices.headers", &CONNECTION_HEADERS, report);
    if let Some(url) = &url {
        one_source_of_credentials(url, &headers, "prices", &raw.headers, report);
    }
    let max_response_bytes = count(
        &raw.max_response_bytes,
        "prices.max_response_bytes",
        4 << 20,
        1024..=(256 << 20),
        report,
    );
    Some(HttpSource {
        url: url?,
        batch_size,
        concurrency,
        timeout,
        headers,
        max_response_bytes,
    })
}
