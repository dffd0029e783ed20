//! Evaluation: the pure condition logic, and the tick that fans the reads out
//! over the fixed rayon pool and funnels the claims into one writer. No HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;

use crate::config::EvaluatorConfig;
use crate::store::Pool;
use crate::store::alerts::{self, AlertRow, QuoteRow, Trigger};

/// The conditions this build evaluates (`price_alerts.condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// price >= target_price
    Above,
    /// price <= target_price
    Below,
    /// price has risen by at least target_price percent from reference_price
    MovingUpPct,
    /// price has fallen by at least target_price percent from reference_price
    MovingDownPct,
}

impl Condition {
    pub fn parse(text: &str) -> Option<Condition> {
        match text {
            "above" => Some(Condition::Above),
            "below" => Some(Condition::Below),
            "moving_up_pct" => Some(Condition::MovingUpPct),
            "moving_down_pct" => Some(Condition::MovingDownPct),
            _ => None,
        }
    }
}

/// What evaluating one alert against its quote decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fire,
    Hold,
    /// The row cannot be evaluated; the reason names what is wrong.
    Malformed(String),
}

/// Decides one alert against a (valid) price. Pure.
pub fn judge(alert: &AlertRow, price: f64) -> Verdict {
    let Some(condition) = Condition::parse(&alert.condition) else {
        return Verdict::Malformed(format!("unknown condition {:?}", alert.condition));
    };
    let Some(target) = alert.target_price.filter(|target| target.is_finite()) else {
        return Verdict::Malformed("target_price is not a finite number".to_owned());
    };
    let fires = match condition {
        Condition::Above => price >= target,
        Condition::Below => price <= target,
        Condition::MovingUpPct | Condition::MovingDownPct => {
            let Some(reference) = alert
                .reference_price
                .filter(|reference| reference.is_finite() && *reference > 0.0)
            else {
                return Verdict::Malformed(
                    "reference_price is missing or not a positive number".to_owned(),
                );
            };
            let change_pct = (price - reference) / reference * 100.0;
            if condition == Condition::MovingUpPct {
                change_pct >= target
            } else {
                -change_pct >= target
            }
        }
    };
    if fires { Verdict::Fire } else { Verdict::Hold }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Enabled alerts read and judged.
    pub evaluated: u64,
    /// Alerts judged triggered.
    pub matched: u64,
    /// Alerts this tick claimed: one queued event each.
    pub triggered: u64,
    /// Enabled alerts whose ticker has no quote.
    pub no_quote: u64,
    /// Alert rows that cannot be evaluated.
    pub malformed_alerts: u64,
    /// Quotes whose price is not a positive number.
    pub malformed_quotes: u64,
    pub claim_transactions: u64,
    pub duration: Duration,
}

/// Builds the fixed pool that evaluates alerts.
pub fn thread_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|index| format!("evaluate-{index}"))
        .build()
        .context("starting the evaluation threads")
}

/// Runs one evaluation tick. Blocking: call it from `spawn_blocking` or a plain
/// thread. Reads run on `workers`, one pooled connection per task; the
/// calling thread is the only writer, claiming in batches of
/// `config.claim_batch`, so the readers never queue on SQLite's write lock.
pub fn tick(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    config: &EvaluatorConfig,
) -> anyhow::Result<TickReport> {
    let started = Instant::now();
    let mut report = TickReport::default();
    let mut writer = pool.get().context("taking a database connection")?;
    let quotes = alerts::quotes(&writer).context("reading quotes")?;
    report.no_quote =
        alerts::count_enabled_without_quote(&writer).context("counting alerts without a quote")?;
    let prices = valid_prices(quotes, &mut report);
    let tickers: Vec<&String> = prices.keys().collect();

    let evaluated = AtomicU64::new(0);
    let malformed = AtomicU64::new(0);
    let (sender, receiver) =
        mpsc::sync_channel::<anyhow::Result<Vec<Trigger>>>(workers.current_num_threads() * 4);
    let tasks = tickers.len().clamp(1, workers.current_num_threads() * 4);
    let mut first_error: Option<anyhow::Error> = None;

    workers.in_place_scope(|scope| {
        for chunk in tickers.chunks(tickers.len().div_ceil(tasks).max(1)) {
            let sender = sender.clone();
            let (prices, evaluated, malformed) = (&prices, &evaluated, &malformed);
            scope.spawn(move |_| {
                let result = read_and_judge(pool, chunk, prices, evaluated, malformed, &sender);
                if let Err(error) = result {
                    let _ = sender.send(Err(error));
                }
            });
        }
        drop(sender);

        let mut batch: Vec<Trigger> = Vec::with_capacity(config.claim_batch);
        let mut flush = |batch: &mut Vec<Trigger>,
                         report: &mut TickReport,
                         first_error: &mut Option<anyhow::Error>| {
            if batch.is_empty() {
                return;
            }
            let now = Utc::now();
            match alerts::claim(&mut writer, batch, now, now.timestamp_millis()) {
                Ok(claimed) => {
                    report.triggered += claimed as u64;
                    report.claim_transactions += 1;
                }
                Err(error) => {
                    first_error.get_or_insert(
                        anyhow::Error::new(error).context("claiming triggered alerts"),
                    );
                }
            }
            batch.clear();
        };
        // Keep receiving after an error, so no reader blocks on a full channel.
        for message in receiver {
            match message {
                Ok(triggers) => {
                    report.matched += triggers.len() as u64;
                    for trigger in triggers {
                        batch.push(trigger);
                        if batch.len() >= config.claim_batch {
                            flush(&mut batch, &mut report, &mut first_error);
                        }
                    }
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        flush(&mut batch, &mut report, &mut first_error);
    });

    report.evaluated = evaluated.into_inner();
    report.malformed_alerts = malformed.into_inner();
    report.duration = started.elapsed();
    match first_error {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// The usable price of each ticker; a quote whose price is not a positive,
/// finite number is reported and its ticker left out.
fn valid_prices(quotes: Vec<QuoteRow>, report: &mut TickReport) -> HashMap<String, (f64, String)> {
    let mut prices = HashMap::with_capacity(quotes.len());
    for quote in quotes {
        match quote.price {
            Some(price) if price.is_finite() && price > 0.0 => {
                prices.insert(quote.ticker, (price, quote.updated_at));
            }
            _ => {
                report.malformed_quotes += 1;
                tracing::warn!(ticker = %quote.ticker, "skipping a quote whose price is not a positive number");
            }
        }
    }
    prices
}

/// One reader task: the enabled alerts of some tickers, judged, their triggers
/// sent to the writer one ticker at a time.
fn read_and_judge(
    pool: &Pool,
    tickers: &[&String],
    prices: &HashMap<String, (f64, String)>,
    evaluated: &AtomicU64,
    malformed: &AtomicU64,
    sender: &mpsc::SyncSender<anyhow::Result<Vec<Trigger>>>,
) -> anyhow::Result<()> {
    let connection = pool.get().context("taking a database connection")?;
    for ticker in tickers {
        let (price, quote_time) = &prices[ticker.as_str()];
        let rows = alerts::enabled_for_ticker(&connection, ticker)
            .with_context(|| format!("reading the alerts of {ticker}"))?;
        evaluated.fetch_add(rows.len() as u64, Ordering::Relaxed);
        let mut triggers = Vec::new();
        for alert in &rows {
            match judge(alert, *price) {
                Verdict::Fire => triggers.push(Trigger {
                    alert_id: alert.id,
                    arming: alert.arming,
                    price: *price,
                    quote_time: quote_time.clone(),
                }),
                Verdict::Hold => {}
                Verdict::Malformed(reason) => {
                    malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(alert_id = alert.id, ticker = %alert.ticker, %reason, "skipping a malformed alert");
                }
            }
        }
        if !triggers.is_empty() && sender.send(Ok(triggers)).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(condition: &str, target: Option<f64>, reference: Option<f64>) -> AlertRow {
        AlertRow {
            id: 1,
            arming: 1,
            ticker: "AAPL".into(),
            condition: condition.into(),
            target_price: target,
            reference_price: reference,
        }
    }

    fn check(condition: &str, target: f64, reference: Option<f64>, price: f64, expected: Verdict) {
        assert_eq!(
            judge(&alert(condition, Some(target), reference), price),
            expected,
            "{condition} {target} {reference:?} at {price}"
        );
    }

    #[test]
    fn above_and_below_include_the_target() {
        check("above", 200.0, None, 200.0, Verdict::Fire);
        check("above", 200.0, None, 199.99, Verdict::Hold);
        check("below", 200.0, None, 200.0, Verdict::Fire);
        check("below", 200.0, None, 200.01, Verdict::Hold);
    }

    #[test]
    fn moving_percent_is_measured_from_the_reference() {
        check("moving_up_pct", 5.0, Some(100.0), 105.0, Verdict::Fire);
        check("moving_up_pct", 5.0, Some(100.0), 104.9, Verdict::Hold);
        check("moving_down_pct", 5.0, Some(100.0), 95.0, Verdict::Fire);
        check("moving_down_pct", 5.0, Some(100.0), 95.1, Verdict::Hold);
        check("moving_down_pct", 5.0, Some(100.0), 110.0, Verdict::Hold);
    }

    #[test]
    fn rows_that_cannot_be_evaluated_are_malformed() {
        assert!(matches!(
            judge(&alert("sideways", Some(1.0), None), 1.0),
            Verdict::Malformed(_)
        ));
        assert!(matches!(
            judge(&alert("above", None, None), 1.0),
            Verdict::Malformed(_)
        ));
        assert!(matches!(
            judge(&alert("above", Some(f64::INFINITY), None), 1.0),
            Verdict::Malformed(_)
        ));
        assert!(matches!(
            judge(&alert("moving_up_pct", Some(5.0), None), 1.0),
            Verdict::Malformed(_)
        ));
        assert!(matches!(
            judge(&alert("moving_up_pct", Some(5.0), Some(0.0)), 1.0),
            Verdict::Malformed(_)
        ));
    }
}
