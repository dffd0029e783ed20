//! How fresh the quotes are that the alerts need: among the tickers with
//! enabled alerts that a job covers, the age of the newest and the oldest
//! quote, and how many are stale or missing. A feed that stops shows as a
//! newest age that only grows; `status` and `/metrics` read it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Scope;

/// The quotes of one job's tickers with enabled alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Freshness {
    /// Tickers with enabled alerts in the scope.
    pub tickers: u64,
    /// The age of the newest quote among them (seconds; none without one).
    pub newest_age_seconds: Option<f64>,
    /// The age of the oldest.
    pub oldest_age_seconds: Option<f64>,
    /// Those whose quote is older than `prices.max_age`, or whose time is
    /// not one: no tick judges their alerts.
    pub stale: u64,
    /// Those without a quote.
    pub missing: u64,
}

impl Freshness {
    /// Of `alerted` (each ticker with enabled alerts and its quote's time as
    /// written, `store::quotes::alerted`) in `scope`, at `now`. A quote dated
    /// ahead of `now` counts as 0 s old.
    pub fn of(
        alerted: &[(String, Option<String>)],
        scope: &Scope,
        max_age: Duration,
        now: DateTime<Utc>,
    ) -> Freshness {
        let mut freshness = Freshness::default();
        for (ticker, written) in alerted {
            if !scope.covers(ticker) {
                continue;
            }
            freshness.tickers += 1;
            let Some(written) = written else {
                freshness.missing += 1;
                continue;
            };
            let Some(at) = crate::time::parse_time(written) else {
                freshness.stale += 1;
                continue;
            };
            let age = ((now - at).num_milliseconds() as f64 / 1000.0).max(0.0);
            if age > max_age.as_secs_f64() {
                freshness.stale += 1;
            }
            freshness.newest_age_seconds = Some(
                freshness
                    .newest_age_seconds
                    .map_or(age, |newest| newest.min(age)),
            );
            freshness.oldest_age_seconds = Some(
                freshness
                    .oldest_age_seconds
                    .map_or(age, |oldest| oldest.max(age)),
            );
        }
        freshness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_and_oldest_quote_and_the_stale_and_missing_of_a_scope() {
        let now = DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let alerted = [
            ("AAPL".to_owned(), Some("2026-12-05T11:59:50Z".to_owned())),
            ("AMZN".to_owned(), Some("2026-12-05 11:00:00".to_owned())),
            ("ABNB".to_owned(), None),
            ("ACME".to_owned(), Some("yesterday".to_owned())),
            ("AFUT".to_owned(), Some("2026-12-05T12:00:30Z".to_owned())),
            ("MSFT".to_owned(), Some("2026-12-05T11:59:59Z".to_owned())),
        ];
        let scope = Scope::parse(&["A*"]).unwrap();
        let fifteen = Duration::from_secs(900);
        assert_eq!(
            Freshness::of(&alerted, &scope, fifteen, now),
            Freshness {
                tickers: 5,
                newest_age_seconds: Some(0.0),
                oldest_age_seconds: Some(3600.0),
                stale: 2,
                missing: 1,
            }
        );
        let all = Freshness::of(&alerted, &Scope::all(), fifteen, now);
        assert_eq!((all.tickers, all.stale), (6, 2));
        assert_eq!(
            Freshness::of(&[], &scope, fifteen, now),
            Freshness::default()
        );
    }
}
