//! The incremental tick gives the same answers as a full scan: random
//! sequences of operations (inserts, re-arms, edits, deletes, quotes that move
//! up, down or go stale, expiries, failed fetches, several jobs with different
//! scopes, ticks interrupted by a crash) run on two databases, one ticked by
//! the daemon's tick and one by a plain full scan kept here, and after every
//! tick both hold the same claims, events and observations.
//!
//! Each run prints its seed; `INCREMENTAL_SEED=N` repeats one.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Db, lib_config};
use price_alertd::config::{Config, Scope};
use price_alertd::evaluate::{self, Observed, TickOptions, Verdict, judge, parse_time};
use price_alertd::store::alerts::{self, Trigger};
use rusqlite::params;

const TICKERS: [&str; 6] = ["T0", "T1", "T2", "T3", "T4", "T5"];
const CONDITIONS: [&str; 7] = [
    "above",
    "below",
    "crossing_up",
    "crossing_down",
    "moving_up_pct",
    "moving_down_pct",
    "sideways",
];
const MAX_AGE: Duration = Duration::from_secs(900);

/// A job: its name and the tickers it covers.
struct Job {
    name: &'static str,
    scope: Scope,
}

fn jobs() -> Vec<Job> {
    vec![
        Job {
            name: "all",
            scope: Scope::all(),
        },
        Job {
            name: "even",
            scope: Scope::parse(&["T0", "T2", "T4"]).unwrap(),
        },
        Job {
            name: "low",
            scope: Scope::parse(&["T[0-2]"]).unwrap(),
        },
    ]
}

/// The full-scan reference: every enabled alert of every ticker in scope with
/// a usable, fresh quote (and fetched), judged against it; claims through the
/// store's claim; the evaluated prices recorded as observations.
fn full_scan(db: &Db, scope: &Scope, unavailable: &HashSet<String>, now: DateTime<Utc>) {
    let connection = db.app();
    let mut store = db.pool(1).get().unwrap();
    alerts::expire_due(&mut store, &price_alertd::store::timestamp(now)).unwrap();
    let tickers: Vec<String> = rows(
        &connection,
        "SELECT DISTINCT ticker FROM price_alerts WHERE enabled = 1 ORDER BY ticker",
        |row| row.get(0),
    );
    let mut triggers = Vec::new();
    let mut observed = Vec::new();
    for ticker in tickers {
        if !scope.covers(&ticker) || unavailable.contains(&ticker) {
            continue;
        }
        let Some(quote) = alerts::quote(&mut store, &ticker).unwrap() else {
            continue;
        };
        let Some(price) = quote
            .price
            .filter(|price| price.is_finite() && *price > 0.0)
        else {
            continue;
        };
        let Some(time) = parse_time(&quote.updated_at) else {
            continue;
        };
        if time - now > chrono::Duration::seconds(60)
            || (now - time).to_std().unwrap_or_default() > MAX_AGE
        {
            continue;
        }
        let at = Observed {
            price,
            previous: alerts::observation(&mut store, &ticker).unwrap(),
        };
        for alert in alerts::enabled_for_ticker(&mut store, &ticker).unwrap() {
            if judge(&alert, at, now) == Verdict::Fire {
                triggers.push(Trigger {
                    alert_id: alert.id,
                    arming: alert.arming,
                    target_price: alert.target_price.unwrap(),
                    reference_price: alert.reference_price,
                    ticker: alert.ticker,
                    condition: alert.condition,
                    user_id: alert.user_id,
                    note: alert.note,
                    price,
                    quote_time: quote.updated_at.clone(),
                });
            }
        }
        observed.push((ticker, price, quote.updated_at));
    }
    alerts::claim(&mut store, &triggers, now, now.timestamp_millis()).unwrap();
    alerts::finish_tick(
        &mut store,
        &observed,
        ("reference", 0),
        &price_alertd::store::timestamp(now),
    )
    .unwrap();
}

/// What both databases must agree on: each alert's enabled flag, the events
/// (alert and arming; the installation part of the id differs by design), and
/// the observations.
#[derive(Debug, PartialEq)]
struct State {
    enabled: BTreeMap<i64, bool>,
    events: BTreeSet<(i64, String)>,
    observations: BTreeMap<String, (String, String)>,
}

/// Every row `sql` returns, as `row` reads it.
fn rows<T>(
    connection: &rusqlite::Connection,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let mut statement = connection.prepare(sql).unwrap();
    statement
        .query_map([], row)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn state(db: &Db) -> State {
    let connection = db.app();
    let enabled = rows(&connection, "SELECT id, enabled FROM price_alerts", |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)? == 1))
    })
    .into_iter()
    .collect();
    let mut events = BTreeSet::new();
    for (alert, id) in rows(
        &connection,
        "SELECT alert_id, event_id FROM outbox",
        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
    ) {
        let arming = id.rsplit('_').next().unwrap().to_owned();
        assert!(
            events.insert((alert, arming.clone())),
            "two events for alert {alert} arming {arming}"
        );
    }
    let observations = rows(
        &connection,
        "SELECT ticker, price, quote_time FROM observations",
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                (
                    format!("{:.6}", row.get::<_, f64>(1)?),
                    row.get::<_, String>(2)?,
                ),
            ))
        },
    )
    .into_iter()
    .collect();
    State {
        enabled,
        events,
        observations,
    }
}

/// The rows of some tables, as a crash would leave them.
type Saved = Vec<(&'static str, Vec<Vec<rusqlite::types::Value>>)>;

fn save(db: &Db, tables: &[&'static str]) -> Saved {
    let connection = db.app();
    tables
        .iter()
        .map(|&table| {
            let values = rows(&connection, &format!("SELECT * FROM {table}"), |row| {
                (0..row.as_ref().column_count())
                    .map(|i| row.get(i))
                    .collect()
            });
            (table, values)
        })
        .collect()
}

fn restore(db: &Db, saved: Saved) {
    let connection = db.app();
    for (table, values) in saved {
        connection
            .execute(&format!("DELETE FROM {table}"), [])
            .unwrap();
        for row in values {
            let marks = vec!["?"; row.len()].join(", ");
            connection
                .execute(
                    &format!("INSERT INTO {table} VALUES ({marks})"),
                    rusqlite::params_from_iter(row),
                )
                .unwrap();
        }
    }
}

/// Runs the same SQL on both databases.
fn both(dbs: &[&Db; 2], sql: &str, values: impl rusqlite::Params + Clone) {
    for db in dbs {
        db.app().execute(sql, values.clone()).unwrap();
    }
}

fn run(seed: u64, steps: usize, workers: &rayon::ThreadPool) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (fast, reference) = (Db::new(), Db::new());
    let config: Config = lib_config(&fast, "http://127.0.0.1:9/events");
    let pool = fast.pool(6);
    let known = Mutex::default();
    let dbs = [&fast, &reference];
    let jobs = jobs();
    let mut prices: BTreeMap<&str, f64> = TICKERS.iter().map(|ticker| (*ticker, 100.0)).collect();
    let mut alerts = 0i64;
    let mut ticks = 0;
    for step in 0..steps {
        let now = Utc::now();
        let ticker = TICKERS[rng.usize(..TICKERS.len())];
        match rng.u8(..100) {
            // An alert near the price, now and then a malformed one.
            0..=24 => {
                let condition = CONDITIONS[rng.usize(..CONDITIONS.len())];
                let price = prices[ticker];
                let (target, reference) = match condition {
                    "moving_up_pct" | "moving_down_pct" => {
                        (rng.f64() * 6.0, Some(price * (0.95 + rng.f64() * 0.1)))
                    }
                    _ => (price * (0.95 + rng.f64() * 0.1), None),
                };
                both(
                    &dbs,
                    "INSERT INTO price_alerts (ticker, condition, target_price, reference_price, created_at)
                     VALUES (?1, ?2, ?3, ?4, '2026-01-01T00:00:00Z')",
                    params![ticker, condition, target, reference],
                );
                alerts += 1;
            }
            // A quote that moves up or down.
            25..=49 => {
                let price = prices[ticker] * (0.96 + rng.f64() * 0.08);
                prices.insert(ticker, price);
                let time = (now - chrono::Duration::milliseconds(rng.i64(0..5000))).to_rfc3339();
                both(
                    &dbs,
                    "INSERT INTO quotes (ticker, price, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
                    params![ticker, price, time],
                );
            }
            // A stale quote.
            50..=54 => {
                let time = (now - chrono::Duration::hours(3)).to_rfc3339();
                both(
                    &dbs,
                    "INSERT INTO quotes (ticker, price, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
                    params![ticker, prices[ticker], time],
                );
            }
            // Re-arm, edit, delete or expire an alert.
            55..=69 if alerts > 0 => {
                let id = rng.i64(1..=alerts);
                let (sql, value): (&str, f64) = match rng.u8(..4) {
                    0 => (
                        "UPDATE price_alerts SET enabled = 1 WHERE id = ?1 AND ?2 = ?2",
                        0.0,
                    ),
                    1 => (
                        "UPDATE price_alerts SET target_price = ?2 WHERE id = ?1",
                        prices[ticker] * (0.95 + rng.f64() * 0.1),
                    ),
                    2 => ("DELETE FROM price_alerts WHERE id = ?1 AND ?2 = ?2", 0.0),
                    _ => (
                        "UPDATE price_alerts SET expires_at = '2000-01-01T00:00:00Z' WHERE id = ?1 AND ?2 = ?2",
                        0.0,
                    ),
                };
                both(&dbs, sql, params![id, value]);
            }
            // A tick of one job, maybe with failed fetches, maybe crashing
            // after its claims and before its observations.
            _ => {
                let job = &jobs[rng.usize(..jobs.len())];
                let unavailable: HashSet<String> = TICKERS
                    .iter()
                    .filter(|_| rng.u8(..10) == 0)
                    .map(|ticker| ticker.to_string())
                    .collect();
                let crash = rng.u8(..8) == 0;
                let before_fast = crash.then(|| save(&fast, &["observations", "job_watermarks"]));
                let before_reference = crash.then(|| save(&reference, &["observations"]));
                let options = TickOptions {
                    job: job.name,
                    evaluator: &config.evaluator,
                    max_age: MAX_AGE,
                    scope: &job.scope,
                    unavailable: &unavailable,
                    known_problems: &known,
                };
                evaluate::tick(workers, &pool, &options).unwrap();
                full_scan(&reference, &job.scope, &unavailable, Utc::now());
                if let (Some(fast_tables), Some(reference_tables)) = (before_fast, before_reference)
                {
                    restore(&fast, fast_tables);
                    restore(&reference, reference_tables);
                }
                ticks += 1;
                let (got, expected) = (state(&fast), state(&reference));
                assert_eq!(
                    got, expected,
                    "seed {seed}, step {step}: the incremental tick of job {:?} (crash: {crash}, unavailable: {unavailable:?}) differs from a full scan",
                    job.name
                );
            }
        }
    }
    assert!(ticks > steps / 10, "only {ticks} ticks");
}

#[test]
fn the_incremental_tick_claims_what_a_full_scan_claims() {
    let workers = evaluate::thread_pool(4).unwrap();
    let seeds: Vec<u64> = match std::env::var("INCREMENTAL_SEED") {
        Ok(seed) => vec![seed.parse().expect("INCREMENTAL_SEED=N")],
        Err(_) => {
            let first = fastrand::u64(..);
            (0..40).map(|n| first.wrapping_add(n)).collect()
        }
    };
    for seed in seeds {
        eprintln!("seed {seed}");
        run(seed, 150, &workers);
    }
}
