//! The feed rows (`cargo bench --bench tick -- --feed`): a quote feed at a
//! market's rates, on each engine, 1,000,000 alerts over 10,000 tickers (the
//! latency rows' data), one daemon whose job reacts to changes, delivering
//! to the nginx + nchan relay, and an SSE subscriber. For each rate (1,000,
//! 10,000 and 50,000 quote writes a second, and as fast as the feed goes)
//! and transaction size (20 and 100 rows), a fresh copy of the database and
//! a fresh daemon:
//!
//! - from each crossing quote's commit to its event on the stream (p50,
//!   p90, p99, max);
//! - the rate the feed really reached, the daemon's CPU over the feed, and
//!   on PostgreSQL the server's (every `postgres` process's);
//! - the floor: the same changes read and probed by the engine's own shell
//!   (`sqlite3`, `psql`) in one statement per second of the feed, after it:
//!   each second's changed tickers (from a copy of the feed's changes laid
//!   out as `change_log`, which the daemon prunes), their quotes, and
//!   the alerts `price_alerts_level` holds within 0.1% of each quote; its
//!   time as a share of a core over the feed;
//! - the job's lag (`price_alertd_reacting_lag_seconds`, scraped every
//!   5 s): its largest in each third of the feed, so that one that
//!   grows shows; and its runs a second;
//!
//! then, on PostgreSQL, three daemons at 10,000 writes a second in 20-row
//! transactions: the same figures, their CPU next to one daemon's.
//!
//! With `--before PATH` (an earlier build of the daemon), each row runs
//! with it first, on its own copy, and its figures print beside this
//! tree's; the database is made at that build's schema, and this tree's
//! build migrates its copy as it starts.
//!
//! Options after `--feed`: `--engine sqlite|postgresql`, `--rate N|max`
//! and `--rows N` (each may repeat; they replace the defaults), `--for
//! SECONDS` (each row's feed; the `max` row feeds three times as long),
//! `--step FRACTION` (a quote's largest step, 0.0004 unless asked: a
//! smaller one crosses fewer levels, and most runs claim nothing).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Relay, Subscriber, binary_path, free_port, sample, scrape};
use crate::latency::{
    ALERTS, Feed, PgFeed, SqliteFeed, TICKERS, batch, latencies_of, percentile, start_daemons,
    stop, wait_for_first_run,
};
use crate::postgresql::cpu_seconds;
use crate::{config_text, copy, generate};

/// What `--feed` was asked for.
pub struct FeedOptions {
    pub engines: Vec<String>,
    /// Quote writes a second; `None`: as fast as the feed goes.
    pub rates: Vec<Option<u64>>,
    pub rows: Vec<usize>,
    pub seconds: u64,
    /// An earlier build to run each row with first (`--before PATH`): its
    /// figures beside this tree's, from the same run.
    pub before: Option<std::path::PathBuf>,
    /// The largest step of a quote, as a fraction of its price (`--step`;
    /// `latency::STEP` unless asked): smaller steps cross fewer levels.
    pub step: f64,
}

impl Default for FeedOptions {
    fn default() -> FeedOptions {
        FeedOptions {
            engines: vec!["sqlite".into(), "postgresql".into()],
            rates: vec![Some(1_000), Some(10_000), Some(50_000), None],
            rows: vec![20, 100],
            seconds: 20,
            before: None,
            step: super::latency::STEP,
        }
    }
}

/// One row: a rate and a transaction size.
#[derive(Clone, Copy)]
struct Row {
    rate: Option<u64>,
    rows: usize,
    seconds: u64,
    step: f64,
}

impl Row {
    fn rows(options: &FeedOptions) -> Vec<Row> {
        let mut rows = Vec::new();
        for &rate in &options.rates {
            for &size in &options.rows {
                // As fast as it goes: in the largest transactions only.
                if rate.is_none() && Some(&size) != options.rows.iter().max() {
                    continue;
                }
                rows.push(Row {
                    rate,
                    rows: size,
                    seconds: options.seconds * if rate.is_none() { 3 } else { 1 },
                    step: options.step,
                });
            }
        }
        rows
    }

    fn label(&self) -> String {
        match self.rate {
            Some(rate) => format!("{rate}/s x{}", self.rows),
            None => format!("max x{}", self.rows),
        }
    }
}

/// What one row measured.
struct Measured {
    latencies: Vec<Duration>,
    unmatched: usize,
    rate: f64,
    cores: f64,
    /// The largest lag in each third of the feed, in ms.
    lag_ms: [f64; 3],
    runs_per_second: f64,
    /// PostgreSQL's processes' CPU, in cores, over the feed (none on SQLite).
    server_cores: f64,
    /// The tickers written, by number, in each second of the feed, in order.
    written: Vec<Vec<u32>>,
}

/// How often the daemon's metrics are scraped while the feed runs: a
/// scrape reads the quotes of every ticker with alerts (their freshness),
/// some 16 ms of the daemon's CPU at 1M alerts over 10,000 tickers (50 ms
/// before SQLite's read became a skip-scan), which the daemon's CPU figure
/// includes. Every 2 s the 50 ms were 0.025 core, half the goal at 1,000
/// writes a second; Prometheus scrapes every 15 s unless told otherwise.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);

/// The daemon's metrics, scraped every [`SCRAPE_EVERY`] (or a ninth of a
/// shorter row) while the feed runs.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Duration, f64, f64)>>,
}

impl Scraper {
    /// Scrapes every `every` (a few times in each third of a short row).
    fn start(port: u16, every: Duration) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let (_, body) = scrape(port, "/metrics");
                let value = |series: &str| {
                    sample(&body, &format!("{series}{{job_name=\"evaluate\"}}")).unwrap_or(f64::NAN)
                };
                samples.push((
                    started.elapsed(),
                    value("price_alertd_reacting_lag_seconds"),
                    value("price_alertd_reacting_runs_per_second"),
                ));
                std::thread::sleep(every);
            }
            samples
        });
        Scraper { stop, thread }
    }

    /// The largest lag in each third, in ms, and the mean runs a second.
    fn finish(self, over: Duration) -> ([f64; 3], f64) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap();
        let mut thirds = [0.0f64; 3];
        for (at, lag, _) in &samples {
            let third = ((at.as_secs_f64() / over.as_secs_f64() * 3.0) as usize).min(2);
            thirds[third] = thirds[third].max(lag * 1000.0);
        }
        // Over the feed's second half: the gauge counts the last 10 s.
        let runs: Vec<f64> = samples
            .iter()
            .filter(|(at, ..)| *at >= over / 2 && *at <= over)
            .map(|sample| sample.2)
            .collect();
        let mean = runs.iter().fold(0.0, |sum, runs| sum + runs) / runs.len().max(1) as f64;
        (thirds, mean)
    }
}

/// The CPU of every PostgreSQL process running now (the bench's cluster is
/// the only one), in seconds: the server's share of a PostgreSQL row.
/// Backends that end meanwhile take theirs with them: the daemons' and the
/// feed's stay for the whole row.
fn server_cpu_seconds() -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .map(cpu_seconds)
        .sum()
}

/// Feeds `row` while `daemons` react; then matches each event that reached
/// `subscriber` with its quote's commit.
fn feed(
    feed: &mut dyn Feed,
    row: Row,
    daemons: &[Child],
    metrics_port: u16,
    subscriber: &Subscriber,
) -> Measured {
    let mut random = fastrand::Rng::with_seed(11);
    let mut prices = vec![100.0; TICKERS as usize];
    let mut commits: HashMap<(String, String), Instant> = HashMap::new();
    let seen_before = subscriber.events().len();
    let cpu = || -> f64 { daemons.iter().map(|daemon| cpu_seconds(daemon.id())).sum() };
    let over = Duration::from_secs(row.seconds);
    let scraper = Scraper::start(metrics_port, SCRAPE_EVERY.min(over / 9));
    let cpu_before = cpu();
    let server_before = server_cpu_seconds();
    let started = Instant::now();
    let every = row
        .rate
        .map(|rate| Duration::from_secs_f64(row.rows as f64 / rate as f64));
    let mut next = started;
    let mut writes = 0;
    let mut written: Vec<Vec<u32>> = vec![Vec::new(); row.seconds as usize + 1];
    while started.elapsed() < over {
        let rows = batch(&mut random, &mut prices, row.rows, row.step);
        feed.write(&rows);
        let committed = Instant::now();
        writes += rows.len();
        let second = &mut written[(committed - started).as_secs() as usize];
        for (ticker, _, at) in rows {
            second.push(ticker[1..].parse().unwrap());
            commits.insert((ticker, at), committed);
        }
        if let Some(every) = every {
            next += every;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let elapsed = started.elapsed();
    let cores = (cpu() - cpu_before) / elapsed.as_secs_f64();
    let server_cores = (server_cpu_seconds() - server_before) / elapsed.as_secs_f64();
    // The last crossings' events on their way.
    std::thread::sleep(Duration::from_secs(2));
    let (lag_ms, runs_per_second) = scraper.finish(over);
    let (latencies, unmatched) = latencies_of(&subscriber.events()[seen_before..], &commits);
    Measured {
        latencies,
        unmatched,
        rate: writes as f64 / elapsed.as_secs_f64(),
        cores,
        lag_ms,
        runs_per_second,
        server_cores,
        written,
    }
}

/// The floor's statement over one span of change numbers of the feed's
/// changes (`floor_changes`, laid out as `change_log`: the daemon prunes
/// the log itself as it goes): their tickers, their quotes, and the alerts within 0.1% of each quote through
/// `price_alerts_level` (a probe per condition: one range of the index
/// each). `{level}` is `store::shared::LEVEL`, as the index
/// has it.
fn floor_statement(from: i64, to: i64, enabled: &str) -> String {
    const LEVEL: &str = "CASE condition \
     WHEN 'moving_up_pct' THEN reference_price * (1 + target_price / 100.0) \
     WHEN 'moving_down_pct' THEN reference_price * (1 - target_price / 100.0) \
     ELSE target_price END";
    let probe = |condition: &str, bounds: &str| {
        format!(
            "(SELECT count(*) FROM price_alerts a WHERE a.ticker = c.t AND a.condition = '{condition}'
                AND a.enabled = {enabled} AND {bounds})"
        )
    };
    format!(
        "SELECT sum({} + {}) FROM (SELECT DISTINCT quote_ticker AS t FROM floor_changes
           WHERE change_seq > {from} AND change_seq <= {to}) c
         JOIN quotes q ON q.ticker = c.t;",
        probe(
            "above",
            &format!("{LEVEL} > q.price * 0.999 AND {LEVEL} <= q.price")
        ),
        probe(
            "below",
            &format!("{LEVEL} >= q.price AND {LEVEL} < q.price * 1.001")
        ),
    )
}

/// The change numbers of each second of the feed in `floor_changes`
/// (numbered from 1 in the order written): `(after, up to)`.
fn spans(written: &[Vec<u32>]) -> Vec<(i64, i64)> {
    let mut at = 0i64;
    written
        .iter()
        .filter(|second| !second.is_empty())
        .map(|second| {
            let span = (at, at + second.len() as i64);
            at = span.1;
            span
        })
        .collect()
}

/// The floor's script for the engine's shell: `timing` (its command that
/// times each statement), then a statement per second of `written`;
/// `enabled` is how the engine writes an enabled alert's flag.
fn floor_script(timing: &str, written: &[Vec<u32>], enabled: &str) -> String {
    std::iter::once(format!("{timing}\n"))
        .chain(
            spans(written)
                .into_iter()
                .map(|(from, to)| floor_statement(from, to, enabled) + "\n"),
        )
        .collect()
}

/// The feed's changes in the order written, as `(change_seq, ticker)`.
fn floor_rows(written: &[Vec<u32>]) -> impl Iterator<Item = (i64, String)> + '_ {
    written
        .iter()
        .flatten()
        .enumerate()
        .map(|(at, &ticker)| (at as i64 + 1, format!("T{ticker}")))
}

/// Runs `script` in `shell` (its arguments before), and sums the times its
/// lines starting with `prefix` give, in seconds (`word` the field of the
/// number, `scale` to seconds).
fn timed_shell(shell: &mut Command, script: &str, prefix: &str, word: usize, scale: f64) -> f64 {
    let mut child = shell
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the engine's shell (bash tests/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the shell failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter(|line| line.starts_with(prefix))
        .map(|line| {
            line.split_whitespace()
                .nth(word)
                .unwrap()
                .parse::<f64>()
                .unwrap()
                * scale
        })
        .sum()
}

fn print_header() {
    println!(
        "{:<17} {:<13} | {:>8} {:>9} | {:>7} {:>7} {:>7} {:>8} | {:>9} {:>9} {:>7} {:>7} | {:>22} {:>7}",
        "engine",
        "feed",
        "writes/s",
        "crossings",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "CPU cores",
        "floor",
        "ratio",
        "server",
        "lag ms, max by third",
        "runs/s"
    );
}

fn print_row(engine: &str, row: Row, measured: &Measured, floor_cores: f64) {
    let l = &measured.latencies;
    println!(
        "{engine:<17} {:<13} | {:>8.0} {:>5} ({}) | {:>7.1} {:>7.1} {:>7.1} {:>8.1} | {:>9.3} {:>9.4} {:>6.1}x {:>7.3} | {:>6.0} {:>6.0} {:>6.0}   {:>7.1}",
        row.label(),
        measured.rate,
        l.len(),
        measured.unmatched,
        percentile(l, 0.50),
        percentile(l, 0.90),
        percentile(l, 0.99),
        percentile(l, 1.0),
        measured.cores,
        floor_cores,
        measured.cores / floor_cores,
        measured.server_cores,
        measured.lag_ms[0],
        measured.lag_ms[1],
        measured.lag_ms[2],
        measured.runs_per_second,
    );
}

/// The builds each row runs with: the earlier one first, if asked for.
fn builds(options: &FeedOptions) -> Vec<(&'static str, std::path::PathBuf)> {
    let mut builds = Vec::new();
    if let Some(before) = &options.before {
        builds.push(("before", before.clone()));
    }
    builds.push(("", binary_path().to_path_buf()));
    builds
}

/// A reacting daemon's config, with its metrics on `port`.
fn reacting_config(
    dir: &Path,
    name: &str,
    database_line: &str,
    relay: &str,
    port: u16,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = config_text(database_line, relay, "*/10 * * * * *").replacen(
        "[[jobs]]",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n[[jobs]]"),
        1,
    ) + "on_change = true\n";
    std::fs::write(&path, text).unwrap();
    path
}

fn sqlite(dir: &Path, relay: &Relay, options: &FeedOptions) {
    let template = dir.join("feed-template.db");
    generate(&template, ALERTS, TICKERS, options.before.as_deref());
    let subscriber = relay.subscribe();
    for row in Row::rows(options) {
        for (build, binary) in builds(options) {
            sqlite_row(dir, relay, &template, &subscriber, row, build, &binary);
        }
    }
}

/// One row on SQLite with the daemon at `binary`.
fn sqlite_row(
    dir: &Path,
    relay: &Relay,
    template: &Path,
    subscriber: &Subscriber,
    row: Row,
    build: &str,
    binary: &Path,
) {
    let path = dir.join("feed.db");
    copy(template, &path);
    let port = free_port();
    let config = reacting_config(
        dir,
        "feed-sqlite",
        &format!("path = \"{}\"", path.display()),
        &relay.publish_url(),
        port,
    );
    let daemons = start_daemons(binary, &config, 1);
    wait_for_first_run(&path);
    let mut writer = SqliteFeed::open(&path);
    writer
        .0
        .pragma_update(None, "wal_autocheckpoint", 0)
        .unwrap();
    let measured = feed(&mut writer, row, &daemons, port, subscriber);
    stop(daemons);
    let transaction = writer.0.transaction().unwrap();
    transaction
        .execute_batch(
            "CREATE TABLE floor_changes (change_seq INTEGER PRIMARY KEY, quote_ticker TEXT)",
        )
        .unwrap();
    {
        let mut insert = transaction
            .prepare("INSERT INTO floor_changes VALUES (?1, ?2)")
            .unwrap();
        for (seq, ticker) in floor_rows(&measured.written) {
            insert.execute(rusqlite::params![seq, ticker]).unwrap();
        }
    }
    transaction.commit().unwrap();
    drop(writer);
    let script = floor_script(".timer on", &measured.written, "1");
    let floor = timed_shell(
        Command::new("sqlite3").arg(&path),
        &script,
        "Run Time: real",
        3,
        1.0,
    );
    print_row(
        &format!("sqlite {build}"),
        row,
        &measured,
        floor / row.seconds as f64,
    );
    std::fs::remove_file(&path).unwrap();
}

fn postgresql(dir: &Path, relay: &Relay, options: &FeedOptions) {
    let template = crate::postgresql::generate("feed_template", ALERTS, TICKERS);
    let subscriber = relay.subscribe();
    let mut runs: Vec<(Row, usize)> = Row::rows(options).into_iter().map(|row| (row, 1)).collect();
    if options.rates.contains(&Some(10_000)) && options.rows.contains(&20) {
        runs.push((
            Row {
                rate: Some(10_000),
                rows: 20,
                seconds: options.seconds,
                step: options.step,
            },
            3,
        ));
    }
    for (row, members) in runs {
        for (build, binary) in builds(options) {
            postgresql_row(
                dir,
                relay,
                &template,
                &subscriber,
                (row, members),
                build,
                &binary,
            );
        }
    }
}

/// One row on PostgreSQL with `members` daemons at `binary`.
fn postgresql_row(
    dir: &Path,
    relay: &Relay,
    template: &crate::postgresql::Database,
    subscriber: &Subscriber,
    (row, members): (Row, usize),
    build: &str,
    binary: &Path,
) {
    let database = template.copy("feed");
    let port = free_port();
    let config = reacting_config(
        dir,
        "feed-postgresql",
        &format!("url = \"{}\"", database.url()),
        &relay.publish_url(),
        port,
    );
    let mut daemons = start_daemons(binary, &config, 1);
    wait_for_first_run(&database);
    if members > 1 {
        // The others without metrics of their own (the port is taken).
        let others = dir.join("feed-postgresql-others.toml");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(&format!("listen = \"127.0.0.1:{port}\""), "");
        std::fs::write(&others, text).unwrap();
        daemons.extend(start_daemons(binary, &others, members - 1));
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut writer = PgFeed::open(&database);
    let measured = feed(&mut writer, row, &daemons, port, subscriber);
    stop(daemons);
    writer
        .0
        .batch_execute(
            "CREATE TABLE floor_changes (change_seq BIGINT PRIMARY KEY, quote_ticker TEXT)",
        )
        .unwrap();
    let rows: Vec<(i64, String)> = floor_rows(&measured.written).collect();
    for chunk in rows.chunks(10_000) {
        let seqs: Vec<i64> = chunk.iter().map(|row| row.0).collect();
        let tickers: Vec<&str> = chunk.iter().map(|row| row.1.as_str()).collect();
        writer
            .0
            .execute(
                "INSERT INTO floor_changes SELECT * FROM unnest($1::bigint[], $2::text[])",
                &[&seqs, &tickers],
            )
            .unwrap();
    }
    writer.0.batch_execute("ANALYZE floor_changes").unwrap();
    drop(writer);
    let script = floor_script("\\timing on", &measured.written, "'1'");
    let floor = timed_shell(
        Command::new("psql").args(["-X", "-q", &database.url()]),
        &script,
        "Time:",
        1,
        0.001,
    );
    let engine = if members > 1 { "pg x3" } else { "postgresql" };
    print_row(
        &format!("{engine} {build}"),
        row,
        &measured,
        floor / row.seconds as f64,
    );
    database.drop_and_checkpoint();
}

/// The feed rows, on each engine asked for.
pub fn rows(dir: &Path, relay: &Relay, options: &FeedOptions) {
    println!(
        "feed: {ALERTS} alerts over {TICKERS} tickers, a reacting job, the relay and an SSE subscriber; steps up to {}% of a price; each row {} s (max: {} s); floor: the same changes read and probed by the engine's shell, as a share of a core",
        options.step * 100.0,
        options.seconds,
        options.seconds * 3
    );
    print_header();
    for engine in &options.engines {
        match engine.as_str() {
            "sqlite" => sqlite(dir, relay, options),
            "postgresql" => postgresql(dir, relay, options),
            other => panic!("no engine {other}"),
        }
    }
}
