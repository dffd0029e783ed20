//! The tick benchmark: `cargo bench --bench tick [-- SIZE...]` (sizes in
//! alerts; default 10000 100000 1000000; 10000000 works, and takes minutes to
//! generate). For each size it generates a database of N alerts over
//! `--tickers` tickers (default N / 100), `above` and `below` alerts with
//! levels spread over ±10% of the quotes, which all stand at 100, so nothing
//! triggers; then, on copies, one `price-alertd run-job` per scenario,
//! delivering to the real nginx + nchan relay on loopback:
//!
//! - first: the job's first tick, which reads every alert once;
//! - quiet: no quote changed (goal: tick ≤ 10 ms, whatever N);
//! - 1% moved: 1% of the tickers move to 102, triggering ≈ 0.1% of the
//!   alerts (goal: tick ≤ 50 ms); beyond 10,000 tickers also 100 moved, the
//!   same change at a larger size (goal: the same);
//! - all moved: every ticker moves to 102, triggering ≈ 10% of the alerts,
//!   next to the floor: SQLite's own set-based `UPDATE ... WHERE enabled = 1
//!   AND <condition>` over a copy of the same data, in the `sqlite3` shell
//!   (goal: ≤ 1.5× the floor);
//!
//! then delivery next to plain load generators on the same relay at the same
//! concurrency (16, signed): `wrk`, and a bare hyper client (goal: the daemon
//! at ≥ 0.8× wrk);
//!
//! with the invariants checked at speed (one outbox row per triggered alert,
//! none left enabled, every event delivered), the peak RSS of each run, and an
//! idle daemon's resident memory.
//!
//! Then the same scenarios on PostgreSQL, at the sizes up to 1M (see
//! `postgresql.rs`).
//!
//! `-- --latency` runs only the latency rows (`latency.rs`); `-- --latency
//! SIZE...`, only a reacting daemon's burst at each size, on SQLite;
//! `-- --scenarios SIZE...` only the scenarios and delivery rows, not the
//! idle daemon nor the latency rows (a before/after of a tick or of
//! delivery in a few minutes).
//!
//! `-- --relays` runs only the relays' throughput rows (`relays.rs`: a full
//! outbox drained to a receiver that answers at once and to each relay,
//! Pushpin against a bare batch publisher; with `--before BINARY`, that
//! build's drains too, first in one round and second in the next);
//! `-- --latency SIZE... --relay pushpin` sends the bursts through Pushpin
//! (`--relay nchan --relay pushpin`: both, one after the other).
//!
//! `-- --feed` runs only the feed rows (`feed.rs`: a quote feed at a
//! market's rates, its options there).
//!
//! It needs `sqlite3`, `nginx`, `libnginx-mod-nchan`, `wrk` and PostgreSQL's
//! server (`bash tests/run` installs them).

// The suite's helpers, of which the benchmark uses a few (the relay, the
// binary, the PostgreSQL cluster).
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../suite/common/mod.rs"]
mod common;
mod feed;
mod latency;
mod postgresql;
mod relays;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Relay, binary};
use price_alertd::config::DatabaseConfig;

struct Options {
    sizes: Vec<u64>,
    /// Tickers, if not N / 100.
    tickers: Option<u64>,
    /// Only the latency scenarios (`--latency`; with sizes, the burst alone
    /// at each size).
    latency_only: bool,
    /// Only the scenarios and the delivery rows (`--scenarios`).
    scenarios_only: bool,
    /// Only the feed rows (`--feed`), as asked.
    feed: Option<feed::FeedOptions>,
    /// An earlier build whose figures come first, from the same run
    /// (`--before PATH`: the feed rows and the bursts at sizes).
    before: Option<PathBuf>,
    /// Only the relays' throughput rows (`--relays`).
    relays: bool,
    /// The relays bursts at sizes go through (`--relay nchan|pushpin`,
    /// repeated; nchan unless asked).
    through: Vec<latency::Through>,
}

fn options() -> Options {
    let mut options = Options {
        sizes: Vec::new(),
        tickers: None,
        latency_only: false,
        scenarios_only: false,
        feed: None,
        before: None,
        relays: false,
        through: Vec::new(),
    };
    let mut feed_asked = feed::FeedOptions {
        engines: Vec::new(),
        rates: Vec::new(),
        rows: Vec::new(),
        seconds: feed::FeedOptions::default().seconds,
        before: None,
        step: feed::FeedOptions::default().step,
    };
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--latency" => options.latency_only = true,
            "--relays" => options.relays = true,
            "--relay" => options.through.push(match args.next().as_deref() {
                Some("nchan") => latency::Through::Nchan,
                Some("pushpin") => latency::Through::Pushpin,
                _ => panic!("--relay nchan|pushpin"),
            }),
            "--scenarios" => options.scenarios_only = true,
            "--feed" => options.feed = Some(feed::FeedOptions::default()),
            "--engine" => feed_asked
                .engines
                .push(args.next().expect("--engine sqlite|postgresql")),
            "--rate" => feed_asked.rates.push(match args.next().as_deref() {
                Some("max") => None,
                Some(rate) => Some(rate.replace('_', "").parse().expect("--rate N|max")),
                None => panic!("--rate N|max"),
            }),
            "--rows" => feed_asked
                .rows
                .push(args.next().and_then(|v| v.parse().ok()).expect("--rows N")),
            "--before" => {
                feed_asked.before = Some(args.next().expect("--before PATH").into());
            }
            "--for" => {
                feed_asked.seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--for SECONDS")
            }
            "--step" => {
                feed_asked.step = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--step FRACTION")
            }
            "--tickers" => {
                options.tickers = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--tickers N"),
                )
            }
            size => options.sizes.push(
                size.replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("not a size: {size}")),
            ),
        }
    }
    if let Some(feed) = &mut options.feed {
        if !feed_asked.engines.is_empty() {
            feed.engines = feed_asked.engines;
        }
        if !feed_asked.rates.is_empty() {
            feed.rates = feed_asked.rates;
        }
        if !feed_asked.rows.is_empty() {
            feed.rows = feed_asked.rows;
        }
        feed.seconds = feed_asked.seconds;
        feed.step = feed_asked.step;
        feed.before = feed_asked.before.clone();
    }
    options.before = feed_asked.before;
    if options.through.is_empty() {
        options.through.push(latency::Through::Nchan);
    }
    if options.sizes.is_empty()
        && !options.latency_only
        && options.feed.is_none()
        && !options.relays
    {
        options.sizes = vec![10_000, 100_000, 1_000_000];
    }
    options
}

/// Generates the template database: `alerts` alerts over `tickers` tickers
/// all quoted at 100, every alert `above` (a level in 100..110) or `below`
/// (90..100), so that nothing triggers yet; a move to 102 triggers a fifth of
/// a ticker's `above` alerts. Checkpointed, so the file alone holds everything.
/// Generates a database of `alerts` alerts over `tickers` tickers at `path`,
/// at this build's schema, or at the one `schema_of` (an earlier build,
/// `--before`) migrates to: each build then runs on a schema of its own, the
/// later one migrating its copy as it starts.
fn generate(path: &Path, alerts: u64, tickers: u64, schema_of: Option<&Path>) {
    match schema_of {
        Some(binary) => create_with(binary, path),
        None => {
            let config = DatabaseConfig::sqlite(path.to_path_buf(), Duration::from_secs(30));
            drop(price_alertd::store::open(&config, 1).unwrap());
        }
    }
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .execute_batch(&format!(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {alerts})
             INSERT INTO price_alerts (ticker, condition, target_price, created_at, user_id)
             SELECT 'T' || (i % {tickers}),
                    CASE (i / {tickers}) % 2 WHEN 0 THEN 'above' ELSE 'below' END,
                    CASE (i / {tickers}) % 2 WHEN 0 THEN 100.0 + 0.01 + ((i * 7919) % 999) / 100.0
                                      ELSE 100.0 - 0.01 - ((i * 7919) % 999) / 100.0 END,
                    '2026-01-01T00:00:00Z', 'u' || (i % 5000)
             FROM n;
             WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i < {tickers} - 1)
             INSERT INTO quotes (ticker, price, updated_at) SELECT 'T' || i, 100.0, '{now}' FROM t;
             COMMIT;
             PRAGMA wal_checkpoint(TRUNCATE);",
            now = chrono::Utc::now().to_rfc3339()
        ))
        .unwrap();
}

/// Creates the database at `path` as `binary` does (a run of a job that
/// finds nothing).
fn create_with(binary: &Path, path: &Path) {
    let config = path.with_extension("schema.toml");
    let database = format!("path = \"{}\"", path.display());
    std::fs::write(
        &config,
        config_text(&database, "http://127.0.0.1:9/events", "0 0 0 1 1 *"),
    )
    .unwrap();
    let status = Command::new(binary)
        .args(["run-job", "evaluate", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{} could not create {}",
        binary.display(),
        path.display()
    );
    std::fs::remove_file(config).unwrap();
}

/// Moves the quotes of every `every`-th ticker (those whose row number is
/// `remainder` modulo `every`) to 102, stamped now, as the application would.
/// Returns at the commit: no automatic checkpoint of the pages it wrote
/// follows in this connection (the latency bench times from the return).
fn move_quotes(path: &Path, every: u64, remainder: u64) {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .execute_batch("PRAGMA wal_autocheckpoint = 0")
        .unwrap();
    connection
        .execute(
            "UPDATE quotes SET price = 102.0, updated_at = ?1 WHERE rowid % ?2 = ?3",
            rusqlite::params![
                chrono::Utc::now().to_rfc3339(),
                every as i64,
                remainder as i64
            ],
        )
        .unwrap();
}

fn copy(template: &Path, to: &Path) {
    std::fs::copy(template, to).unwrap();
}

/// SQLite's own time for the set-based claim, from the shell's `.timer`.
fn floor(path: &Path) -> f64 {
    let script = "PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
.timer on
UPDATE price_alerts SET enabled = 0, triggered_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), triggered_price = q.price
FROM quotes q
WHERE q.ticker = price_alerts.ticker AND price_alerts.enabled = 1
  AND ((price_alerts.condition = 'above' AND q.price >= price_alerts.target_price)
    OR (price_alerts.condition = 'below' AND q.price <= price_alerts.target_price));
";
    let mut shell = Command::new("sqlite3")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running sqlite3 (bash tests/run installs it)");
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = shell.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sqlite3 failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .rfind(|line| line.starts_with("Run Time: real"))
        .expect("a .timer line");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// The webhook's concurrency, the shipped default; the load generators run at
/// the same.
const CONCURRENCY: usize = 16;
/// Deliveries are signed, as in production.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(dir: &Path, database: &Path, relay: &str) -> PathBuf {
    let path = dir.join("bench.toml");
    std::fs::write(
        &path,
        config_text(
            &format!("path = \"{}\"", database.display()),
            relay,
            "0 0 0 1 1 *",
        ),
    )
    .unwrap();
    path
}

/// The benchmark's config, with `database` as the `[database]` section's
/// line and one evaluate job on `schedule`.
fn config_text(database: &str, relay: &str, schedule: &str) -> String {
    format!(
        r#"
[database]
{database}
[evaluator]
threads = 10
[webhook]
url = "{relay}"
secret = "{SECRET}"
headers = {{ "X-EventSource-Event" = "price_alert" }}
concurrency = {CONCURRENCY}
drain_timeout = "300s"
[log]
level = "warn"
[[jobs]]
name = "evaluate"
kind = "evaluate"
schedule = "{schedule}"
"#
    )
}

fn summary_value(summary: &str, key: &str) -> f64 {
    summary
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} missing from {summary}"))
        .parse()
        .unwrap()
}

fn scalar(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |row| row.get(0))
        .unwrap()
}

/// A database the invariants are checked on: an SQLite file or a
/// PostgreSQL database (the queries are the same).
trait Probe {
    fn scalar(&self, sql: &str) -> i64;

    /// Each queued event's id, user and state: what a burst that did not
    /// arrive whole says about itself.
    fn outbox_events(&self) -> Vec<(String, Option<String>, String)>;

    /// The size of SQLite's WAL, for a database that has one.
    fn wal_bytes(&self) -> Option<u64> {
        None
    }

    /// The alerts a full scan would trigger with every quote at `price`.
    fn triggering_at(&self, price: f64) -> i64 {
        self.scalar(&format!(
            "SELECT count(*) FROM price_alerts a
             WHERE a.enabled = 1 AND ((a.condition = 'above' AND {price:?} >= a.target_price)
                OR (a.condition = 'below' AND {price:?} <= a.target_price))"
        ))
    }

    /// The alerts a full scan would trigger now.
    fn triggering(&self) -> i64 {
        self.scalar(
            "SELECT count(*) FROM price_alerts a JOIN quotes q USING (ticker)
             WHERE a.enabled = 1 AND ((a.condition = 'above' AND q.price >= a.target_price)
                OR (a.condition = 'below' AND q.price <= a.target_price))",
        )
    }
}

impl Probe for Path {
    fn scalar(&self, sql: &str) -> i64 {
        scalar(self, sql)
    }

    fn outbox_events(&self) -> Vec<(String, Option<String>, String)> {
        let connection = rusqlite::Connection::open(self).unwrap();
        let mut statement = connection
            .prepare("SELECT event_id, user_id, state FROM outbox ORDER BY id")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn wal_bytes(&self) -> Option<u64> {
        let mut wal = self.as_os_str().to_owned();
        wal.push("-wal");
        Some(std::fs::metadata(wal).map_or(0, |metadata| metadata.len()))
    }
}

impl Probe for PathBuf {
    fn scalar(&self, sql: &str) -> i64 {
        scalar(self, sql)
    }

    fn outbox_events(&self) -> Vec<(String, Option<String>, String)> {
        self.as_path().outbox_events()
    }

    fn wal_bytes(&self) -> Option<u64> {
        self.as_path().wal_bytes()
    }
}

impl Probe for postgresql::Database {
    fn scalar(&self, sql: &str) -> i64 {
        postgresql::Database::scalar(self, sql)
    }

    fn outbox_events(&self) -> Vec<(String, Option<String>, String)> {
        postgresql::Database::outbox_events(self)
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One `run-job` and what it did; checks the invariants at speed.
struct Run {
    summary: String,
    process_seconds: f64,
}

impl Run {
    fn value(&self, key: &str) -> f64 {
        summary_value(&self.summary, key)
    }
}

fn run_job(config: &Path, database: &(impl Probe + ?Sized), expected: i64) -> Run {
    let outbox_before = database.scalar("SELECT count(*) FROM outbox");
    let started = Instant::now();
    let output = binary()
        .args(["--config", config.to_str().unwrap(), "run-job", "evaluate"])
        .output()
        .unwrap();
    let process_seconds = started.elapsed().as_secs_f64();
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "run-job failed: {summary}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = Run {
        summary,
        process_seconds,
    };
    assert_eq!(run.value("triggered") as i64, expected, "claims");
    assert_eq!(
        database.scalar("SELECT count(*) FROM outbox") - outbox_before,
        expected,
        "one outbox row per triggered alert"
    );
    assert_eq!(database.triggering(), 0, "none left enabled that holds");
    assert_eq!(
        database.scalar(
            "SELECT count(*) FROM price_alerts a JOIN outbox o ON o.alert_id = a.id WHERE a.enabled = 1"
        ),
        0
    );
    assert_eq!(
        run.value("delivered") as i64,
        expected,
        "every event delivered to the relay"
    );
    run
}

/// This build's `run`, and with `before` that build's too: the one before
/// first in even rounds, second in odd ones, since the first of two runs
/// in a row tends to be the slower, whichever build it is (BENCHMARKS.md).
pub fn both_ways<T>(
    round: usize,
    before: Option<&Path>,
    run: impl Fn(Option<&Path>) -> T,
) -> (T, Option<T>) {
    match before {
        None => (run(None), None),
        Some(before) if round % 2 == 0 => {
            let earlier = run(Some(before));
            (run(None), Some(earlier))
        }
        Some(before) => {
            let now = run(None);
            (now, Some(run(Some(before))))
        }
    }
}

fn main() {
    let options = options();
    let relay = Relay::start();
    let dir = tempfile::tempdir().unwrap();
    if let Some(feed) = &options.feed {
        feed::rows(dir.path(), &relay, feed);
        return;
    }
    if options.relays {
        relays::rows(dir.path(), options.before.as_deref());
        return;
    }
    if options.latency_only {
        if options.sizes.is_empty() {
            latency::rows(dir.path(), &relay);
        }
        for &alerts in &options.sizes {
            for &through in &options.through {
                latency::burst_at(
                    dir.path(),
                    &relay,
                    alerts,
                    options.before.as_deref(),
                    through,
                );
            }
        }
        return;
    }
    println!(
        "{:>9} {:>7} {:<13} | {:>7} {:>9} {:>9} | {:>9} {:>9} {:>6} {:<10} | {:>9} {:>11} | {:>7}",
        "alerts",
        "tickers",
        "scenario",
        "moved",
        "read",
        "triggered",
        "tick ms",
        "floor ms",
        "ratio",
        "goal",
        "run-job s",
        "delivered/s",
        "peak MB"
    );
    let mut idle_template = None;
    let mut delivery_rates = Vec::new();
    let mut sample_event: Option<(String, String)> = None;
    for &alerts in &options.sizes {
        let tickers = options.tickers.unwrap_or((alerts / 100).max(1));
        let template = dir.path().join(format!("template-{alerts}.db"));
        generate(&template, alerts, tickers, None);

        // The floor: SQLite's own claim of what moving every ticker triggers.
        let floor_db = dir.path().join(format!("floor-{alerts}.db"));
        copy(&template, &floor_db);
        move_quotes(&floor_db, 1, 0);
        let all_triggered = floor_db.triggering();
        let floor_ms = floor(&floor_db) * 1000.0;
        assert_eq!(
            scalar(
                &floor_db,
                "SELECT count(*) FROM price_alerts WHERE enabled = 0"
            ),
            all_triggered
        );
        std::fs::remove_file(&floor_db).unwrap();

        let tick_db = dir.path().join(format!("tick-{alerts}.db"));
        copy(&template, &tick_db);
        let config = config(dir.path(), &tick_db, &relay.publish_url());
        let row = |scenario: &str, run: &Run, floor: Option<f64>, goal: &str| {
            print_row(alerts, tickers, scenario, run, floor, goal)
        };
        row("first", &run_job(&config, &tick_db, 0), None, "");
        row("quiet", &run_job(&config, &tick_db, 0), None, "<= 10 ms");
        move_quotes(&tick_db, 100, 0);
        let some = tick_db.triggering();
        row(
            "1% moved",
            &run_job(&config, &tick_db, some),
            None,
            "<= 50 ms",
        );
        if tickers > 10_000 {
            // The same change as 1% of 10,000 tickers: 100 tickers move, at
            // any size (other tickers than the 1% above).
            move_quotes(&tick_db, tickers / 100, 1);
            let some = tick_db.triggering();
            row(
                "100 moved",
                &run_job(&config, &tick_db, some),
                None,
                "<= 50 ms",
            );
        }
        // Every ticker moves, from the template's state (nothing claimed yet)
        // with the job's watermark set, as the floor started.
        copy(&template, &tick_db);
        for leftover in ["db-wal", "db-shm"] {
            let _ = std::fs::remove_file(tick_db.with_extension(leftover));
        }
        run_job(&config, &tick_db, 0);
        move_quotes(&tick_db, 1, 0);
        let application = Application::beside(&tick_db);
        let all = run_job(&config, &tick_db, all_triggered);
        let application = application.end();
        row("all moved", &all, Some(floor_ms), "<= 1.5x");
        println!(
            "  beside it, the application wrote a quote every 20 ms: {} writes, the longest waited \
             {:.0} ms for the lock (goal <= 1000 ms); the WAL peaked at {:.1} MiB (bound 16 MiB and a transaction)",
            application.writes,
            application.longest.as_secs_f64() * 1000.0,
            application.wal_peak as f64 / (1024.0 * 1024.0)
        );
        delivery_rates.push((
            alerts,
            all.value("delivered") / (all.value("delivery_ms") / 1000.0),
        ));
        sample_event.get_or_insert_with(|| {
            rusqlite::Connection::open(&tick_db)
                .unwrap()
                .query_row("SELECT event_id, body FROM outbox LIMIT 1", [], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .unwrap()
        });
        idle_template.get_or_insert(template);
    }

    postgresql_rows(
        dir.path(),
        &options.sizes,
        options.tickers,
        &relay.publish_url(),
    );

    // Delivery next to plain load generators: the same relay, the same
    // concurrency, an event's bytes and headers.
    let (event_id, body) = sample_event.unwrap();
    let headers = event_headers(&event_id, &body);
    let wrk = wrk_rate(dir.path(), &relay.publish_url(), &body, &headers);
    let bare = bare_client_rate(&relay.publish_url(), &body, &headers, 200_000);
    println!(
        "delivery to the relay at concurrency {CONCURRENCY}: wrk -t1 -c{CONCURRENCY} {wrk:.0}/s; \
         a bare hyper client {bare:.0}/s ({:.2}x)",
        bare / wrk
    );
    for (alerts, rate) in delivery_rates {
        println!(
            "  daemon, {alerts} alerts all moved: {rate:.0} events/s, signed and recorded ({:.2}x wrk; goal >= 0.8x)",
            rate / wrk
        );
    }

    if options.scenarios_only {
        return;
    }

    // An idle daemon: scheduled, nothing due, nothing pending.
    let idle_db = dir.path().join("idle.db");
    copy(idle_template.as_ref().unwrap(), &idle_db);
    let config = config(dir.path(), &idle_db, &relay.publish_url());
    let mut daemon = binary()
        .args(["--config", config.to_str().unwrap(), "run"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (rss, peak) = (
        rss_kib(daemon.id(), "VmRSS:"),
        rss_kib(daemon.id(), "VmHWM:"),
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    println!(
        "idle daemon: RSS {:.1} MB (peak {:.1} MB; goal <= 16 MB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    latency::rows(dir.path(), &relay);
}

/// The application beside a run: a quote written every 20 ms on its own
/// connection, with SQLite's default busy handler (a busy timeout), as most
/// applications write; and the WAL's size.
struct Application {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writer: std::thread::JoinHandle<Beside>,
}

/// What the application saw.
struct Beside {
    writes: usize,
    longest: Duration,
    wal_peak: u64,
}

impl Application {
    fn beside(path: &Path) -> Application {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stopping, path) = (stop.clone(), path.to_path_buf());
        let writer = std::thread::spawn(move || {
            let app = rusqlite::Connection::open(&path).unwrap();
            app.busy_timeout(Duration::from_secs(60)).unwrap();
            let wal = path.with_extension("db-wal");
            let mut beside = Beside {
                writes: 0,
                longest: Duration::ZERO,
                wal_peak: 0,
            };
            while !stopping.load(Ordering::Relaxed) {
                let started = Instant::now();
                app.execute(
                    "INSERT INTO quotes (ticker, price, updated_at) VALUES ('APPLICATION', ?1, ?2)
                     ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
                    rusqlite::params![100.0 + beside.writes as f64 % 7.0, chrono::Utc::now().to_rfc3339()],
                )
                .unwrap();
                beside.longest = beside.longest.max(started.elapsed());
                beside.writes += 1;
                if let Ok(metadata) = std::fs::metadata(&wal) {
                    beside.wal_peak = beside.wal_peak.max(metadata.len());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            beside
        });
        Application { stop, writer }
    }

    fn end(self) -> Beside {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.writer.join().unwrap()
    }
}

/// One row of the table.
fn print_row(alerts: u64, tickers: u64, scenario: &str, run: &Run, floor: Option<f64>, goal: &str) {
    let tick_ms = run.value("duration_ms");
    let delivery_seconds = run.value("delivery_ms") / 1000.0;
    println!(
        "{:>9} {:>7} {:<13} | {:>7} {:>9} {:>9} | {:>9.1} {:>9} {:>6} {:<10} | {:>9.3} {:>11} | {:>7.1}",
        alerts,
        tickers,
        scenario,
        run.value("tickers_changed"),
        run.value("evaluated"),
        run.value("triggered"),
        tick_ms,
        floor.map_or("-".to_owned(), |floor| format!("{floor:.1}")),
        floor.map_or("-".to_owned(), |floor| format!("{:.2}x", tick_ms / floor)),
        goal,
        run.process_seconds,
        if run.value("delivered") > 0.0 {
            format!("{:.0}", run.value("delivered") / delivery_seconds.max(1e-9))
        } else {
            "-".to_owned()
        },
        run.value("peak_rss_kib") / 1024.0
    );
}

/// The PostgreSQL column: the scenarios at each size up to 1M, the "all
/// moved" tick next to PostgreSQL's own set-based `UPDATE`; then one fire
/// time's work by one daemon and by three sharing the database.
fn postgresql_rows(dir: &Path, sizes: &[u64], tickers_option: Option<u64>, relay: &str) {
    let sizes: Vec<u64> = sizes
        .iter()
        .copied()
        .filter(|size| *size <= 1_000_000)
        .collect();
    let Some(&largest) = sizes.iter().max() else {
        return;
    };
    let version: String = postgres::Client::connect(
        &common::postgresql::cluster().url("postgres"),
        postgres::NoTls,
    )
    .unwrap()
    .query_one("SHOW server_version", &[])
    .unwrap()
    .get(0);
    println!(
        "PostgreSQL {version} (a local server on the same cores, fsync off as the tests run it):"
    );
    let mut largest_template = None;
    for &alerts in &sizes {
        let tickers = tickers_option.unwrap_or((alerts / 100).max(1));
        let template = postgresql::generate(&format!("bench_{alerts}"), alerts, tickers);
        let (floor_ms, all_triggered) = postgresql::floor(&template);
        let tick = template.copy(&format!("bench_{alerts}_tick"));
        let config = postgresql::config(dir, "pg", &tick, relay, "0 0 0 1 1 *");
        let row = |scenario: &str, run: &Run, floor: Option<f64>, goal: &str| {
            print_row(alerts, tickers, scenario, run, floor, goal)
        };
        row("pg first", &run_job(&config, &tick, 0), None, "");
        row("pg quiet", &run_job(&config, &tick, 0), None, "<= 10 ms");
        tick.move_quotes(100, 0);
        let some = tick.triggering();
        row(
            "pg 1% moved",
            &run_job(&config, &tick, some),
            None,
            "<= 50 ms",
        );
        common::postgresql::cluster().drop_database(&tick.name);
        let tick = template.copy(&format!("bench_{alerts}_tick"));
        run_job(&config, &tick, 0);
        tick.move_quotes(1, 0);
        assert_eq!(tick.triggering(), all_triggered);
        let all = run_job(&config, &tick, all_triggered);
        row("pg all moved", &all, Some(floor_ms), "<= 2x");
        common::postgresql::cluster().drop_database(&tick.name);
        if alerts == largest {
            largest_template = Some(template);
        } else {
            common::postgresql::cluster().drop_database(&template.name);
        }
    }
    let template = largest_template.unwrap();
    let (one, one_server, events) = postgresql::shared_fire(dir, &template, relay, 1);
    let (three, three_server, _) = postgresql::shared_fire(dir, &template, relay, 3);
    println!(
        "one fire time ({largest} alerts, every ticker moved: {events} events claimed and delivered): \
         one daemon {one:.2} s CPU, three sharing the database {three:.2} s in all ({:.2}x; goal <= 1.2x); \
         the server {one_server:.2} s and {three_server:.2} s",
        three / one
    );
    common::postgresql::cluster().drop_database(&template.name);
}

/// The headers the daemon sends with an event, signed now.
fn event_headers(event_id: &str, body: &str) -> Vec<(String, String)> {
    let config = price_alertd::config::parse(
        &format!(
            "[webhook]\nurl = \"http://127.0.0.1/\"\nsecret = \"{SECRET}\"\n\
             headers = {{ \"X-EventSource-Event\" = \"price_alert\" }}\n"
        ),
        Path::new("."),
        None,
    )
    .unwrap();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    price_alertd::deliver::headers(&config.webhook, event_id, body, timestamp)
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .chain([(
            "user-agent".to_owned(),
            concat!("price-alertd/", env!("CARGO_PKG_VERSION")).to_owned(),
        )])
        .collect()
}

/// Requests per second `wrk` gets from the relay with one thread and
/// `CONCURRENCY` connections over 5 s, posting `body` with `headers`.
fn wrk_rate(dir: &Path, url: &str, body: &str, headers: &[(String, String)]) -> f64 {
    let script = dir.join("post.lua");
    let mut lua = format!("wrk.method = \"POST\"\nwrk.body = [==[{body}]==]\n");
    for (name, value) in headers {
        lua.push_str(&format!("wrk.headers[\"{name}\"] = [==[{value}]==]\n"));
    }
    std::fs::write(&script, lua).unwrap();
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{CONCURRENCY}"), "-d5s", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk (bash tests/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    assert!(!text.contains("Non-2xx"), "the relay refused some: {text}");
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .unwrap_or_else(|| panic!("no rate in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Requests per second a bare hyper client (the daemon's HTTP stack, with
/// nothing else: no database, no signing) gets from the relay at
/// `CONCURRENCY`, over `total` POSTs on one current-thread runtime.
fn bare_client_rate(url: &str, body: &str, headers: &[(String, String)], total: usize) -> f64 {
    use http_body_util::{BodyExt as _, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let uri: hyper::Uri = url.parse().unwrap();
    let body = bytes::Bytes::from(body.to_owned());
    let mut header_map = hyper::HeaderMap::new();
    for (name, value) in headers {
        header_map.insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(CONCURRENCY)
                .build_http();
        let sent = std::sync::Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut lanes = Vec::new();
        for _ in 0..CONCURRENCY {
            let (client, uri, body, headers, sent) = (
                client.clone(),
                uri.clone(),
                body.clone(),
                header_map.clone(),
                sent.clone(),
            );
            lanes.push(tokio::spawn(async move {
                while sent.fetch_add(1, Ordering::Relaxed) < total {
                    let mut request = hyper::Request::new(Full::new(body.clone()));
                    *request.method_mut() = hyper::Method::POST;
                    *request.uri_mut() = uri.clone();
                    *request.headers_mut() = headers.clone();
                    let response = client.request(request).await.unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    response.into_body().collect().await.unwrap();
                }
            }));
        }
        for lane in lanes {
            lane.await.unwrap();
        }
        total as f64 / started.elapsed().as_secs_f64()
    })
}
