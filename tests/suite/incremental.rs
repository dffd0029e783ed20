//! The incremental tick gives the same answers as a full scan: random
//! sequences of operations (inserts, re-arms, edits, deletes, quotes that
//! move up, down or go stale, channels entered and left, expiries, repeating alerts with and without a
//! trigger budget whose cooldowns pass, snoozes that end or not, failed
//! fetches, several jobs with
//! different scopes, ticks interrupted by a crash, the ticks of jobs that
//! react to changes right after a change they cover, ticks with a head
//! start, the change log pruned, past the watermarks or not) run on two
//! databases, one ticked by the daemon's tick and one by a plain full scan
//! kept here, and after every tick both hold the same claims, events and
//! observations. On each engine: both databases SQLite files, or both
//! PostgreSQL databases.
//!
//! Each run prints its seed; `INCREMENTAL_SEED=N` repeats one.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Db, Engine, Param, job_options, lib_config};
use price_alertd::alert::Alert;
use price_alertd::condition::Condition;
use price_alertd::config::{Config, Scope};
use price_alertd::evaluate::{self, Observed, TickOptions, Verdict, judge, trigger_of};
use price_alertd::store::alerts;
use price_alertd::store::{changes, observations, quotes, watermarks};
use price_alertd::time::{QuoteTime, parse_time};

const TICKERS: [&str; 6] = ["T0", "T1", "T2", "T3", "T4", "T5"];
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
/// store's claim; the banded alerts waiting for any such ticker's price to
/// come back, looked at; the evaluated prices of the tickers with enabled
/// alerts recorded as observations.
fn full_scan(
    db: &Db,
    pool: &price_alertd::store::Pool,
    scope: &Scope,
    unavailable: &HashSet<String>,
    now: DateTime<Utc>,
) {
    let mut store = pool.get().unwrap();
    alerts::rearm_cooled_down(&mut store, now).unwrap();
    alerts::expire_due(&mut store, now).unwrap();
    alerts::wake_snoozed(&mut store, now).unwrap();
    // The tickers with enabled alerts, or alerts waiting for their price to
    // come back.
    let tickers: Vec<String> = db.texts(
        "SELECT DISTINCT ticker FROM price_alerts
         WHERE enabled = 1 OR (enabled = 0 AND (return_below IS NOT NULL OR return_above IS NOT NULL))
         ORDER BY ticker",
    );
    let mut triggers = Vec::new();
    let mut observed = Vec::new();
    let mut looked_at: Vec<(String, f64)> = Vec::new();
    for ticker in tickers {
        if !scope.covers(&ticker) || unavailable.contains(&ticker) {
            continue;
        }
        let Some(quote) = quotes::get(&mut store, &ticker).unwrap() else {
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
            previous: observations::get(&mut store, &ticker).unwrap(),
        };
        looked_at.push((ticker.clone(), price));
        let enabled = alerts::enabled_for_ticker(&mut store, &ticker).unwrap();
        if enabled.is_empty() {
            continue;
        }
        for alert in enabled {
            if judge(&alert, at, now) == Verdict::Fire {
                let parsed = Alert::parse(&alert.written()).expect("it fired");
                triggers.push(trigger_of(
                    alert,
                    &parsed,
                    price,
                    QuoteTime {
                        written: quote.updated_at.clone(),
                        at: time,
                    },
                    now,
                ));
            }
        }
        observed.push(observations::Observation {
            ticker,
            price,
            quote_time: quote.updated_at,
        });
    }
    alerts::claim(&mut store, &triggers, now).unwrap();
    let prices: Vec<(&str, f64)> = looked_at
        .iter()
        .map(|(ticker, price)| (ticker.as_str(), *price))
        .collect();
    alerts::come_back(&mut store, &prices, now).unwrap();
    observations::finish_tick(
        &mut store,
        &observed,
        Some(&watermarks::Advance::only("reference", 0)),
        now,
    )
    .unwrap();
}

/// What both databases must agree on: each alert's enabled flag, how many
/// times it fired, whether it waits to be re-armed, whether it is snoozed,
/// and whether it waits for its price to come back; the events (alert, arming, and which trigger of how many; the
/// installation part of the id differs by design), and the observations.
#[derive(Debug, PartialEq)]
struct State {
    enabled: BTreeMap<i64, (bool, i64, bool, bool, bool)>,
    /// (alert, "arming (trigger of max)").
    events: BTreeSet<(i64, String)>,
    observations: BTreeMap<String, (String, String)>,
}

fn state(db: &Db) -> State {
    let enabled = db
        .rows(
            "SELECT id, enabled, trigger_count, CASE WHEN rearm_at IS NULL THEN 0 ELSE 1 END,
                    CASE WHEN snoozed_until IS NULL THEN 0 ELSE 1 END,
                    CASE WHEN return_below IS NULL AND return_above IS NULL THEN 0 ELSE 1 END
             FROM price_alerts",
        )
        .iter()
        .map(|row| {
            let flag = |at: usize| row[at].integer() == 1;
            (
                row[0].integer(),
                (flag(1), row[2].integer(), flag(3), flag(4), flag(5)),
            )
        })
        .collect();
    let mut events = BTreeSet::new();
    for row in db.rows("SELECT alert_id, event_id, body FROM outbox") {
        let (alert, id) = (row[0].integer(), row[1].text());
        let arming = id.rsplit('_').next().unwrap().to_owned();
        let body: serde_json::Value = serde_json::from_str(&row[2].text()).unwrap();
        let trigger = format!(
            "{arming} ({} of {})",
            body["data"]["trigger_count"], body["data"]["max_triggers"]
        );
        assert!(
            events.insert((alert, trigger)),
            "two events for alert {alert} arming {arming}"
        );
    }
    let observations = db
        .rows("SELECT ticker, price, quote_time FROM observations")
        .iter()
        .map(|row| {
            let price = match row[1] {
                Param::Real(price) => price,
                Param::Int(price) => price as f64,
                ref other => panic!("not a price: {other:?}"),
            };
            (row[0].text(), (format!("{price:.6}"), row[2].text()))
        })
        .collect();
    State {
        enabled,
        events,
        observations,
    }
}

/// The rows of some tables, as a crash would leave them.
type Saved = Vec<(&'static str, Vec<Vec<Param>>)>;

fn save(db: &Db, tables: &[&'static str]) -> Saved {
    tables
        .iter()
        .map(|&table| (table, db.rows(&format!("SELECT * FROM {table}"))))
        .collect()
}

fn restore(db: &Db, saved: Saved) {
    for (table, rows) in saved {
        db.execute(&format!("DELETE FROM {table}"), values![]);
        for row in rows {
            let marks: Vec<String> = (1..=row.len()).map(|at| format!("${at}")).collect();
            db.execute(
                &format!("INSERT INTO {table} VALUES ({})", marks.join(", ")),
                &row,
            );
        }
    }
}

/// Runs the same SQL on both databases.
fn both(dbs: &[&Db; 2], sql: &str, values: &[Param]) {
    for db in dbs {
        db.execute(sql, values);
    }
}

/// What a tick of both databases needs.
struct Ticked<'a> {
    fast: &'a Db,
    reference: &'a Db,
    pool: &'a price_alertd::store::Pool,
    reference_pool: &'a price_alertd::store::Pool,
    config: &'a Config,
    known: &'a evaluate::TickMemory,
    workers: &'a rayon::ThreadPool,
    seed: u64,
}

/// One tick of `job` on both databases, with the quotes of `unavailable`
/// not fetched, maybe crashing after its claims and before its
/// observations; then both must hold the same claims, events and
/// observations.
fn tick_both(
    ticked: &Ticked<'_>,
    job: &Job,
    unavailable: &HashSet<String>,
    crash: bool,
    step: usize,
) -> evaluate::TickReport {
    let (fast, reference) = (ticked.fast, ticked.reference);
    // As the HTTP source reports it: every ticker's quote but those was
    // fetched.
    let fetched: HashSet<String> = TICKERS
        .iter()
        .map(|ticker| ticker.to_string())
        .filter(|ticker| !unavailable.contains(ticker))
        .collect();
    let before_fast = crash.then(|| save(fast, &["observations", "job_watermarks", "job_holds"]));
    let before_reference = crash.then(|| save(reference, &["observations"]));
    let carried_before = crash.then(|| ticked.known.save_carried());
    let options = TickOptions {
        job: job.name,
        evaluator: &ticked.config.evaluator,
        max_age: MAX_AGE,
        scope: &job.scope,
        fetched: Some(&fetched),
        memory: ticked.known,
        claimed: &|_| {},
        lessee: None,
        // Now and then a head start for the first one to three moved
        // tickers, before the tick reads the rest.
        head_start: step % 4,
        head_start_after: step % 4,
        // Now and then in pages of one or two changed tickers: a ticker's
        // changes all in one page, the watermark moving with the last.
        page: [1, 2, evaluate::PAGE][step % 3],
        // Mostly, as the daemon's reacting jobs, a tick that would write
        // only observed prices and the watermark carries them to a later
        // one (within a second, or as soon as one writes).
        unwritten: step % 5 != 0,
    };
    let report = evaluate::tick(ticked.workers, ticked.pool, &options).unwrap();
    full_scan(
        reference,
        ticked.reference_pool,
        &job.scope,
        unavailable,
        Utc::now(),
    );
    if let (Some(fast_tables), Some(reference_tables)) = (before_fast, before_reference) {
        restore(fast, fast_tables);
        restore(reference, reference_tables);
    }
    if let Some(carried) = carried_before {
        ticked.known.restore_carried(carried, &options);
    }
    // The observed prices as the process knows them: those it carries
    // unwritten, over the stored ones.
    let mut got = state(fast);
    for carried in ticked.known.unwritten() {
        got.observations.insert(
            carried.ticker,
            (format!("{:.6}", carried.price), carried.quote_time),
        );
    }
    let expected = state(reference);
    assert_eq!(
        got, expected,
        "seed {}, step {step}: the incremental tick of job {:?} (crash: {crash}, unavailable: {unavailable:?}) differs from a full scan",
        ticked.seed, job.name
    );
    report
}

/// What a run went through, summed over runs: each kind must have come up.
#[derive(Debug, Default)]
struct Covered {
    /// The log was pruned.
    pruned: usize,
    /// A triggered alert was held because it was snoozed, and one woke.
    snoozed: u64,
    woken: u64,
    /// An alert fired a second time (re-armed after its cooldown), and one
    /// spent its budget (fired as often as it may, and stays disabled).
    repeated: i64,
    spent: i64,
    /// Banded alerts whose price came back, and banded alerts that fired
    /// again after it did (a long chain, which some runs miss: printed, not
    /// required; `policies` fires one again on purpose).
    returned: u64,
    banded_again: i64,
    /// Events of `inside`, `outside`, `entering` and `exiting` alerts.
    channels: [i64; 4],
    /// Tickers held back at a tick's end (summed over ticks), and holds
    /// of jobs gone quiet folded into their watermarks by a prune.
    held: u64,
    folded: usize,
    /// Moves not read: inside their ticker's quiet band.
    quiet: u64,
    /// Ticks that left what they observed unwritten, and crashes with
    /// observed prices carried unwritten.
    unwritten: u64,
    crashed_carrying: u64,
}

impl Covered {
    fn count(&mut self, report: &evaluate::TickReport) {
        self.snoozed += report.snoozed;
        self.woken += report.woken;
        self.returned += report.returned;
        self.held += report.held;
        self.quiet += report.quiet;
        self.unwritten += u64::from(report.unwritten);
    }
}

fn run(
    engine: Engine,
    seed: u64,
    steps: usize,
    workers: &rayon::ThreadPool,
    covered: &mut Covered,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (fast, reference) = (Db::on(engine), Db::on(engine));
    let config: Config = lib_config(&fast, "http://127.0.0.1:9/events");
    let pool = fast.pool(6);
    let reference_pool = reference.pool(1);
    let known = evaluate::TickMemory::default();
    let dbs = [&fast, &reference];
    let jobs = jobs();
    let mut prices: BTreeMap<&str, f64> = TICKERS.iter().map(|ticker| (*ticker, 100.0)).collect();
    let mut quote_times: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    let mut alerts = 0i64;
    let mut ticks = 0;
    let mut crashed_carrying = false;
    let ticked = Ticked {
        fast: &fast,
        reference: &reference,
        pool: &pool,
        reference_pool: &reference_pool,
        config: &config,
        known: &known,
        workers,
        seed,
    };
    for step in 0..steps {
        let now = Utc::now();
        let ticker = TICKERS[rng.usize(..TICKERS.len())];
        // Halfway, T5 moves and cannot be fetched, so that the jobs that
        // cover it hold it (if it has alerts), and a prune past every
        // watermark folds their holds; the ticks after are checked. At
        // random alone, 16 runs once saw no hold fold.
        let halfway = step == steps / 2;
        if halfway {
            let price = prices["T5"] * 1.01;
            prices.insert("T5", price);
            both(
                &dbs,
                "INSERT INTO quotes (ticker, price, updated_at) VALUES ('T5', $1, $2)
                 ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
                values![price, now.to_rfc3339()],
            );
            let unavailable = HashSet::from(["T5".to_owned()]);
            for job in jobs.iter().filter(|job| job.scope.covers("T5")) {
                covered.count(&tick_both(&ticked, job, &unavailable, false, step));
                ticks += 1;
            }
        }
        let kind = if halfway { 71 } else { rng.u8(..100) };
        match kind {
            // An alert near the price, now and then a malformed one.
            0..=24 => {
                // Every condition, and one that is none (malformed).
                let condition = Condition::ALL
                    .get(rng.usize(..=Condition::ALL.len()))
                    .map_or("sideways", |(_, name)| *name);
                let price = prices[ticker];
                let (target, reference) = match condition {
                    "moving_up_pct" | "moving_down_pct" => {
                        (rng.f64() * 6.0, Some(price * (0.95 + rng.f64() * 0.1)))
                    }
                    _ => (price * (0.95 + rng.f64() * 0.1), None),
                };
                // A channel up to 5% wide; now and then one without an upper
                // level or with its levels reversed (malformed).
                let upper = match (condition, rng.u8(..10)) {
                    ("inside" | "outside" | "entering" | "exiting", 0) => None,
                    ("inside" | "outside" | "entering" | "exiting", 1) => Some(target * 0.99),
                    ("inside" | "outside" | "entering" | "exiting", _) => {
                        Some(target * (1.0 + rng.f64() * 0.05))
                    }
                    _ => None,
                };
                // Now and then a repeating alert (its cooldown passes only
                // when a step below says so), with a budget or not.
                let (cooldown, max_triggers): (Option<&str>, Option<i64>) = match rng.u8(..4) {
                    0 => (Some("1h"), None),
                    1 => (Some("1h"), Some(rng.i64(1..=3))),
                    _ => (None, None),
                };
                // Most repeating ones re-arm only once their price came back
                // by a band of 0.5-3%.
                let band = (cooldown.is_some() && rng.u8(..3) > 0).then(|| 0.5 + rng.f64() * 2.5);
                both(
                    &dbs,
                    "INSERT INTO price_alerts
                         (ticker, condition, target_price, reference_price, upper_price, created_at, cooldown,
                          max_triggers, rearm_band)
                     VALUES ($1, $2, $3, $4, $5, '2026-01-01T00:00:00Z', $6, $7, $8)",
                    values![ticker, condition, target, reference, upper, cooldown, max_triggers, band],
                );
                alerts += 1;
            }
            // A quote that moves up or down.
            25..=49 => {
                let price = prices[ticker] * (0.96 + rng.f64() * 0.08);
                prices.insert(ticker, price);
                // Now and then less than a millisecond after the ticker's
                // last quote: newer, or not, by the store's precision.
                let time = match quote_times.get(ticker) {
                    Some(last) if rng.u8(..4) == 0 => {
                        *last + chrono::Duration::microseconds(rng.i64(1..1000))
                    }
                    _ => now - chrono::Duration::milliseconds(rng.i64(0..5000)),
                };
                quote_times.insert(ticker, time);
                let time = time.to_rfc3339();
                both(
                    &dbs,
                    "INSERT INTO quotes (ticker, price, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
                    values![ticker, price, time],
                );
            }
            // The application deletes a ticker's quote: it is judged no
            // more until it is written again.
            50 => both(
                &dbs,
                "DELETE FROM quotes WHERE ticker = $1",
                values![ticker],
            ),
            // A stale quote.
            51..=54 => {
                let time = (now - chrono::Duration::hours(3)).to_rfc3339();
                both(
                    &dbs,
                    "INSERT INTO quotes (ticker, price, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
                    values![ticker, prices[ticker], time],
                );
            }
            // Re-arm, edit, delete or expire an alert; let its cooldown
            // pass; snooze it for long or for a time already past, or wake
            // it.
            55..=69 if alerts > 0 => {
                let id = rng.i64(1..=alerts);
                match rng.u8(..10) {
                    // The cooldowns of this ticker's waiting alerts pass.
                    4 | 5 => both(
                        &dbs,
                        "UPDATE price_alerts SET rearm_at = 0 WHERE ticker = $1 AND rearm_at IS NOT NULL",
                        values![ticker],
                    ),
                    6..=8 => {
                        let until = if rng.u8(..3) == 0 {
                            "2000-01-01T00:00:00Z"
                        } else {
                            "2999-01-01T00:00:00Z"
                        };
                        both(
                            &dbs,
                            "UPDATE price_alerts SET snoozed_until = $1 WHERE id = $2",
                            values![until, id],
                        );
                    }
                    9 => both(
                        &dbs,
                        "UPDATE price_alerts SET snoozed_until = NULL WHERE id = $1",
                        values![id],
                    ),
                    0 => both(
                        &dbs,
                        "UPDATE price_alerts SET enabled = 1 WHERE id = $1",
                        values![id],
                    ),
                    1 => both(
                        &dbs,
                        "UPDATE price_alerts SET target_price = $1,
                             upper_price = CASE WHEN upper_price IS NULL THEN NULL ELSE $2::float8 END
                         WHERE id = $3",
                        values![
                            prices[ticker] * (0.95 + rng.f64() * 0.1),
                            prices[ticker] * (1.0 + rng.f64() * 0.05),
                            id
                        ],
                    ),
                    2 => both(&dbs, "DELETE FROM price_alerts WHERE id = $1", values![id]),
                    _ => both(
                        &dbs,
                        "UPDATE price_alerts SET expires_at = '2000-01-01T00:00:00Z' WHERE id = $1",
                        values![id],
                    ),
                }
            }
            // The daemon prunes the change log, now or as if the
            // watermarks were too old to keep it for: then the pruned point
            // passes them, and each job's next tick reads every quote.
            70..=72 => {
                let at = if !halfway && rng.bool() {
                    now
                } else {
                    now + chrono::Duration::from_std(changes::CHANGE_LOG_KEPT_FOR).unwrap() * 2
                };
                let holds = "SELECT count(*) FROM job_holds";
                let before = fast.scalar(holds);
                changes::prune_change_log(&mut pool.get().unwrap(), at).unwrap();
                covered.pruned += 1;
                covered.folded += usize::from(fast.scalar(holds) < before);
                continue;
            }
            // A tick of one job, maybe with failed fetches, maybe crashing
            // after its claims and before its observations.
            _ => {
                let job = &jobs[rng.usize(..jobs.len())];
                // T5's fetch fails half the time: its holds last ticks,
                // through prunes and changes of its own.
                let unavailable: HashSet<String> = TICKERS
                    .iter()
                    .filter(|ticker| rng.u8(..10) < if **ticker == "T5" { 5 } else { 1 })
                    .map(|ticker| ticker.to_string())
                    .collect();
                // The first tick of a run that finds observed prices
                // carried unwritten crashes, and others at random.
                let carrying = !known.unwritten().is_empty();
                let crash = rng.u8(..8) == 0 || (carrying && !crashed_carrying);
                crashed_carrying |= crash && carrying;
                covered.crashed_carrying += u64::from(crash && carrying);
                let report = tick_both(&ticked, job, &unavailable, crash, step);
                covered.count(&report);
                ticks += 1;
                continue;
            }
        }
        // Now and then the jobs that react to changes run at once, as a
        // reacting daemon runs them: each job that covers the changed
        // ticker, on the quotes table as written (nothing unfetched).
        if rng.u8(..3) == 0 {
            for job in jobs.iter().filter(|job| job.scope.covers(ticker)) {
                let report = tick_both(&ticked, job, &HashSet::new(), false, step);
                covered.count(&report);
                ticks += 1;
            }
        }
    }
    assert!(ticks > steps / 10, "only {ticks} ticks");
    covered.repeated += fast.scalar("SELECT count(*) FROM price_alerts WHERE trigger_count >= 2");
    covered.banded_again += fast.scalar(
        "SELECT count(*) FROM price_alerts WHERE rearm_band IS NOT NULL AND trigger_count >= 2",
    );
    covered.spent += fast.scalar(
        "SELECT count(*) FROM price_alerts
         WHERE trigger_count >= max_triggers AND rearm_at IS NULL AND enabled = 0",
    );
    for (count, condition) in covered
        .channels
        .iter_mut()
        .zip(["inside", "outside", "entering", "exiting"])
    {
        *count += fast.scalar(&format!(
            "SELECT count(*) FROM outbox WHERE body LIKE '%\"condition\":\"{condition}\"%'"
        ));
    }
}

on_every_engine! {
    fn the_incremental_tick_claims_what_a_full_scan_claims(engine: Engine) {
        let workers = evaluate::thread_pool(4).unwrap();
        // Fewer runs where each costs a server's round trips.
        let runs = match engine {
            Engine::Sqlite => 40,
            Engine::Postgresql => 16,
        };
        let seeds: Vec<u64> = match std::env::var("INCREMENTAL_SEED") {
            Ok(seed) => vec![seed.parse().expect("INCREMENTAL_SEED=N")],
            Err(_) => {
                let first = fastrand::u64(..);
                (0..runs).map(|n| first.wrapping_add(n)).collect()
            }
        };
        let mut covered = Covered::default();
        let several = seeds.len() > 1;
        for seed in seeds {
            eprintln!("seed {seed}");
            run(engine, seed, 150, &workers, &mut covered);
        }
        eprintln!("{covered:?}");
        if several {
            assert!(
                covered.pruned > 0
                    && covered.snoozed > 0
                    && covered.woken > 0
                    && covered.repeated > 0
                    && covered.spent > 0
                    && covered.channels.iter().all(|events| *events > 0)
                    && covered.returned > 0
                    && covered.held > 0
                    && covered.folded > 0
                    && covered.quiet > 0
                    && covered.unwritten > 0
                    && covered.crashed_carrying > 0,
                "a kind of history never came up: {covered:?}"
            );
        }
    }
}

on_every_engine! {
    fn the_daemon_prunes_the_change_log_up_to_its_jobs_watermark(engine: Engine) {
        let db = Db::on(engine);
        let receiver = common::Receiver::start();
        let path = db.write_config(&common::config_text(&db, &receiver.url, "0 0 0 1 1 *"));
        for (ticker, price) in [("A", 1.0), ("B", 2.0), ("A", 3.0)] {
            db.set_quote(ticker, price);
        }
        let logged = "SELECT count(*) FROM change_log WHERE quote_ticker IS NOT NULL";
        assert_eq!(db.scalar(logged), 3);
        // A run's tick, then its upkeep: the job's watermark is fresh, so the
        // log goes up to it (on SQLite but for its last row, whose number
        // the next change follows). On PostgreSQL the watermark may stay
        // below the writes, while another test's transaction is open.
        common::cli(&path, &["run-job", "evaluate"]);
        let watermark = db.scalar("SELECT max(change_seq) FROM job_watermarks");
        assert_eq!(db.scalar("SELECT through FROM change_log_pruned"), watermark);
        let below = format!("SELECT count(*) FROM change_log WHERE change_seq <= {watermark}");
        let kept = match engine {
            Engine::Sqlite => 1,
            Engine::Postgresql => 0,
        };
        assert!(db.scalar(&below) <= kept, "{} rows left", db.scalar(&below));
        let above = format!(
            "SELECT count(*) FROM change_log WHERE change_seq > {watermark} AND quote_ticker = 'A'"
        );
        let before = db.scalar(&above);
        db.set_quote("A", 4.0);
        assert_eq!(db.scalar(&above), before + 1);
    }
}

on_every_engine! {
    /// One ticker's quote is not fetched for many ticks while others move:
    /// the job's watermark moves on, and each tick reads the tickers that
    /// moved since the last plus the held one, not every change since the
    /// hold began. Once it is fetched again, what changed while it was held
    /// (its crossing, and an alert inserted meanwhile) fires, once.
    fn a_held_back_ticker_holds_back_only_itself(engine: Engine) {
        let db = Db::on(engine);
        let config: Config = lib_config(&db, "http://127.0.0.1:9/events");
        let pool = db.pool(4);
        let workers = evaluate::thread_pool(2).unwrap();
        let memory = evaluate::TickMemory::default();
        let others: Vec<String> = (0..20).map(|n| format!("T{n:02}")).collect();
        for ticker in &others {
            db.set_quote(ticker, 100.0);
            db.add_alert(ticker, "above", 1000.0);
        }
        db.set_quote("HELD", 100.0);
        let crossed = db.add_alert("HELD", "above", 120.0);
        let scope = Scope::all();
        // The config's job (all tickers, the default quote age), which
        // `alerts explain` reads.
        let tick = |fetched: &HashSet<String>| {
            let options = job_options(&config, &scope, &memory, Some(fetched), false);
            evaluate::tick(&workers, &pool, &options).unwrap()
        };
        let all: HashSet<String> = others.iter().cloned().chain(["HELD".into()]).collect();
        let without_held: HashSet<String> = others.iter().cloned().collect();
        let first = tick(&all);
        assert_eq!((first.tickers_changed, first.held), (21, 0));
        // On PostgreSQL another test's open transaction may keep the
        // watermark below the writes so far (the closed horizon): the next
        // ticks read them again until it ends.
        let ticks_until = |fetched: &HashSet<String>, done: &dyn Fn(&evaluate::TickReport) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let report = tick(fetched);
                if done(&report) || std::time::Instant::now() > deadline {
                    return report;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        if engine == Engine::Postgresql {
            ticks_until(&all, &|report| report.tickers_changed == 0);
        }

        // HELD crosses its alert's level, but its quote is not fetched: held
        // back (on PostgreSQL, once the watermark may pass its change).
        db.set_quote("HELD", 150.0);
        let report = ticks_until(&without_held, &|report| report.held == 1);
        assert_eq!((report.held, report.triggered), (1, 0));
        if engine == Engine::Sqlite {
            assert_eq!(report.tickers_changed, 1);
        }
        let watermark = || db.scalar("SELECT change_seq FROM job_watermarks");
        let since = || db.scalar("SELECT since FROM job_holds");
        for round in 0..30_usize {
            for ticker in [&others[(2 * round) % 20], &others[(2 * round + 1) % 20]] {
                db.set_quote(ticker, 100.0 + round as f64);
            }
            if round == 10 {
                db.add_alert("HELD", "above", 110.0);
            }
            // The tickers the tick's window holds: those moved after the
            // watermark (two, or on PostgreSQL a few more while another
            // test's open transaction keeps the watermark below the last
            // writes). Before holds the window started at HELD's change, and
            // held every ticker moved since (2, 4, 6, ... up to 20).
            let new = db.scalar(&format!(
                "SELECT count(DISTINCT quote_ticker) FROM change_log
                 WHERE change_seq > {} AND quote_ticker IS NOT NULL AND quote_ticker <> 'HELD'",
                watermark()
            ));
            if engine == Engine::Sqlite {
                assert_eq!(new, 2, "round {round}: the window holds older changes");
            }
            let report = tick(&without_held);
            assert_eq!(
                (report.tickers_changed, report.held, report.triggered),
                (new as u64 + 1, 1, 0),
                "round {round}"
            );
            // Nothing is read: the moves reach no alert, and HELD is not
            // fetched, so nothing of it is judged.
            assert_eq!(report.evaluated, 0, "round {round}");
            assert_eq!(db.scalar("SELECT count(*) FROM job_holds"), 1);
        }
        // The watermark went past HELD's change (on PostgreSQL, once no
        // other test's transaction keeps it below); before holds it stayed
        // just below it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while watermark() <= since() + 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            tick(&without_held);
        }
        assert!(watermark() > since() + 1, "the watermark stayed below the held change");

        // `alerts explain` says the job holds HELD back.
        let explained = |id: i64| {
            let mut out = Vec::new();
            price_alertd::admin::alerts_explain(&config, id, true, &mut out).unwrap();
            let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
            json["jobs"][0].clone()
        };
        let job = explained(crossed);
        assert_eq!(job["held_since"].as_i64(), Some(since()), "{job}");
        assert_eq!(job["judged_latest_change"], false, "{job}");

        // Fetched again: its crossing and the alert inserted while it was
        // held fire, once; the hold is gone, and nothing is left to read.
        let report = tick(&all);
        assert_eq!((report.held, report.triggered), (0, 2));
        assert_eq!(db.scalar("SELECT count(*) FROM job_holds"), 0);
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), 2);
        let mut report = tick(&all);
        // On PostgreSQL, another test's open transaction may keep the
        // closed horizon below the changes the last tick read: the next
        // ticks read them again, and claim nothing more.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while engine == Engine::Postgresql
            && report.tickers_changed > 0
            && std::time::Instant::now() < deadline
        {
            assert_eq!(report.triggered, 0, "{report:?}");
            std::thread::sleep(Duration::from_millis(100));
            report = tick(&all);
        }
        assert_eq!(
            (report.tickers_changed, report.evaluated, report.triggered),
            (0, 0, 0)
        );
        let job = explained(crossed);
        assert_eq!(job["held_since"], serde_json::Value::Null, "{job}");
        assert_eq!(job["judged_latest_change"], true, "{job}");
    }
}

on_every_engine! {
    /// A reacting job's tick that claims writes the claimed ticker's
    /// observed price at once, and carries the rest (the other tickers'
    /// prices and the watermark). Lost in a crash, what it carried is
    /// judged again from the stored prices, and an alert the application
    /// re-armed meanwhile does not fire a second time for the crossing
    /// just claimed: its ticker is judged from the price it was claimed
    /// at.
    fn a_tick_that_claims_writes_its_claimed_tickers_prices_and_carries_the_rest(engine: Engine) {
        let db = Db::on(engine);
        let config: Config = lib_config(&db, "http://127.0.0.1:9/events");
        let pool = db.pool(4);
        let workers = evaluate::thread_pool(2).unwrap();
        let scope = Scope::all();
        db.set_quote("QUIET", 100.0);
        db.add_alert("QUIET", "above", 1000.0);
        db.set_quote("CROSS", 100.0);
        let crossing = db.add_alert("CROSS", "crossing_up", 110.0);
        let tick = |memory: &evaluate::TickMemory| {
            let options = job_options(&config, &scope, memory, None, true);
            evaluate::tick(&workers, &pool, &options).unwrap()
        };
        let job = evaluate::watermark_of("evaluate", &scope, MAX_AGE);
        let stored = |ticker: &str| -> Option<f64> {
            db.rows(&format!("SELECT price FROM observations WHERE ticker = '{ticker}'"))
                .first()
                .map(|row| match row[0] {
                    Param::Real(price) => price,
                    ref other => panic!("an observed price of {other:?}"),
                })
        };
        let carried = |memory: &evaluate::TickMemory, ticker: &str| -> Option<f64> {
            memory
                .unwritten()
                .into_iter()
                .find(|seen| seen.ticker == ticker)
                .map(|seen| seen.price)
        };

        // The job's first tick, its progress then written as the daemon's
        // loop writes it.
        let memory = evaluate::TickMemory::default();
        tick(&memory);
        evaluate::write_carried(&pool, &memory, &job).unwrap();
        assert_eq!((stored("QUIET"), stored("CROSS")), (Some(100.0), Some(100.0)));
        let watermark = || db.scalar("SELECT coalesce(max(change_seq), -1) FROM job_watermarks");
        let written = watermark();

        // Both move; CROSS's alert fires.
        db.set_quote("QUIET", 101.0);
        db.set_quote("CROSS", 115.0);
        let report = tick(&memory);
        assert_eq!(report.triggered, 1);
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), 1);
        assert_eq!(stored("CROSS"), Some(115.0), "the claimed ticker's price is written");
        assert_eq!(carried(&memory, "CROSS"), None);
        assert_eq!(stored("QUIET"), Some(100.0), "the other's is carried");
        assert_eq!(carried(&memory, "QUIET"), Some(101.0));
        assert!(report.unwritten, "the tick carries its progress");
        if engine == Engine::Sqlite {
            // (On PostgreSQL another test's open transaction may hold the
            // watermark back anyway.)
            assert_eq!(watermark(), written, "the watermark is carried");
        }

        // The application re-arms the alert; the process dies, and what it
        // carried with it. The next tick reads the window again: CROSS
        // from 115, where it was claimed, so the re-armed alert does not
        // fire for the same crossing; QUIET from 100.
        db.execute("UPDATE price_alerts SET enabled = 1 WHERE id = $1", values![crossing]);
        let restarted = evaluate::TickMemory::default();
        let report = tick(&restarted);
        assert_eq!(report.triggered, 0, "the crossing claimed before fired again");
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), 1);
        evaluate::write_carried(&pool, &restarted, &job).unwrap();
        assert_eq!((stored("QUIET"), stored("CROSS")), (Some(101.0), Some(115.0)));

        // It fires again for a crossing of its own.
        db.set_quote("CROSS", 105.0);
        tick(&restarted);
        db.set_quote("CROSS", 112.0);
        assert_eq!(tick(&restarted).triggered, 1);
    }
}

on_every_engine! {
    /// A reacting job carries a ticker's observed price unwritten; its
    /// next quote, less than a millisecond later, crosses and is claimed.
    /// The price stored after is the one the store's own comparison of the
    /// two keeps, as when every tick writes: on SQLite, which compares
    /// them to the millisecond, the carried one. (The claim must not write
    /// the later one ahead of the carried one, which would then lose to it.)
    fn a_claimed_quote_within_the_carried_prices_millisecond_is_the_stores_to_keep(engine: Engine) {
        // Inside a millisecond, with room for a later quote in it.
        let millisecond = Utc::now().timestamp_millis() - 5_000;
        let at = DateTime::from_timestamp_micros(millisecond * 1_000 + 100).unwrap();
        let stored_after = |unwritten: bool| -> (String, String) {
            let db = Db::on(engine);
            let config: Config = lib_config(&db, "http://127.0.0.1:9/events");
            let pool = db.pool(4);
            let workers = evaluate::thread_pool(2).unwrap();
            let scope = Scope::all();
            let memory = evaluate::TickMemory::default();
            let job = evaluate::watermark_of("evaluate", &scope, MAX_AGE);
            let quote = |price: f64, time: DateTime<Utc>| {
                db.execute(
                    "INSERT INTO quotes (ticker, price, updated_at) VALUES ('CROSS', $1, $2)
                     ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
                    values![price, time.to_rfc3339()],
                );
            };
            let tick = || {
                let options = job_options(&config, &scope, &memory, None, unwritten);
                evaluate::tick(&workers, &pool, &options).unwrap()
            };
            quote(100.0, at - chrono::Duration::seconds(2));
            db.add_alert("CROSS", "crossing_up", 110.0);
            tick();
            evaluate::write_carried(&pool, &memory, &job).unwrap();
            quote(105.0, at);
            let report = tick();
            assert_eq!(report.unwritten, unwritten, "carried: {unwritten}");
            quote(115.0, at + chrono::Duration::microseconds(300));
            assert_eq!(tick().triggered, 1, "judged from 105, 115 crosses 110");
            evaluate::write_carried(&pool, &memory, &job).unwrap();
            let row = &db.rows("SELECT price, quote_time FROM observations WHERE ticker = 'CROSS'")[0];
            let price = match row[0] {
                Param::Real(price) => price,
                ref other => panic!("an observed price of {other:?}"),
            };
            (format!("{price:.2}"), row[1].text())
        };
        let written = stored_after(false);
        if engine == Engine::Sqlite {
            assert_eq!(written.0, "105.00", "SQLite keeps the first of two in one millisecond");
        }
        assert_eq!(stored_after(true), written, "a carried price, then the claim's");
    }
}
