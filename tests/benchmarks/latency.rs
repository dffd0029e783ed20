//! The latency scenarios (`cargo bench --bench tick -- --latency` runs only
//! these; a whole run ends with them): on each engine, 1,000,000 alerts over
//! 10,000 tickers (the tick benchmark's data), a daemon whose job reacts to
//! changes (`on_change = true`, the shipped 10 s schedule besides),
//! delivering to the real nginx + nchan relay, and an SSE subscriber on the
//! relay's stream:
//!
//! - the feed's write cost: 100-row batches of quote writes as fast as they
//!   go, on the daemon's schema, and with the daemon's triggers on `quotes`
//!   dropped (goal: ≤ 1.5×);
//! - under a feed: 1,000 quote writes a second, in batches of 10 every
//!   10 ms, each a small random step of a random ticker, so that a few
//!   alerts cross each second; from each crossing quote's commit to its
//!   event read off the SSE stream (goals: p50 ≤ 10 ms, p99 ≤ 50 ms), and
//!   the daemon's CPU under that feed (goal: ≤ 0.5 core);
//! - idle: a reacting daemon with nothing to do, its CPU over a minute
//!   (goal: < 1% of a core);
//! - a burst: every ticker moves at once (≈ 100,000 alerts triggered): from
//!   the commit to the first event on the stream (goal: ≤ 100 ms) and to the
//!   last, with the tick's and the daemon's peak memory;
//! - on PostgreSQL, three daemons under the same feed: the same latency,
//!   their total CPU next to one daemon's (goal: ≤ 1.2×).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Relay, SseEvent, Subscriber, binary, binary_at, binary_path};
use crate::postgresql::{Database, cpu_seconds};
use crate::{Probe, config_text, copy, generate, rss_kib};

pub const ALERTS: u64 = 1_000_000;
pub const TICKERS: u64 = 10_000;
/// Quote writes a second, in batches of `BATCH` every `BATCH_EVERY`.
const BATCH: usize = 10;
const BATCH_EVERY: Duration = Duration::from_millis(10);
const FEED: Duration = Duration::from_secs(30);
/// Each write moves its ticker by up to this fraction, up or down.
pub const STEP: f64 = 0.0004;
/// The write-cost batches, as the issue measured them.
const COST_BATCH: usize = 100;
const COST_FOR: Duration = Duration::from_secs(2);
const COST_ROUNDS: usize = 5;

/// Where the feed writes its quotes.
pub trait Feed {
    /// Upserts `(ticker, price, updated_at)` rows in one transaction.
    fn write(&mut self, rows: &[(String, f64, String)]);
}

pub struct SqliteFeed(pub rusqlite::Connection);

impl SqliteFeed {
    pub fn open(path: &Path) -> SqliteFeed {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection.busy_timeout(Duration::from_secs(30)).unwrap();
        connection
            .execute_batch("PRAGMA synchronous = NORMAL")
            .unwrap();
        SqliteFeed(connection)
    }
}

impl Feed for SqliteFeed {
    fn write(&mut self, rows: &[(String, f64, String)]) {
        let transaction = self.0.transaction().unwrap();
        {
            let mut upsert = transaction
                .prepare_cached(
                    "INSERT INTO quotes (ticker, price, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (ticker) DO UPDATE
                     SET price = excluded.price, updated_at = excluded.updated_at",
                )
                .unwrap();
            for (ticker, price, at) in rows {
                upsert
                    .execute(rusqlite::params![ticker, price, at])
                    .unwrap();
            }
        }
        transaction.commit().unwrap();
    }
}

pub struct PgFeed(pub postgres::Client);

impl PgFeed {
    pub fn open(database: &Database) -> PgFeed {
        PgFeed(postgres::Client::connect(&database.url(), postgres::NoTls).unwrap())
    }
}

impl Feed for PgFeed {
    fn write(&mut self, rows: &[(String, f64, String)]) {
        let tickers: Vec<&str> = rows.iter().map(|row| row.0.as_str()).collect();
        let prices: Vec<f64> = rows.iter().map(|row| row.1).collect();
        let times: Vec<&str> = rows.iter().map(|row| row.2.as_str()).collect();
        self.0
            .execute(
                "INSERT INTO quotes (ticker, price, updated_at)
                 SELECT * FROM unnest($1::text[], $2::float8[], $3::text[])
                 ON CONFLICT (ticker) DO UPDATE
                 SET price = excluded.price, updated_at = excluded.updated_at",
                &[&tickers, &prices, &times],
            )
            .unwrap();
    }
}

/// A quote time unique to one write: microseconds, as a feed stamps.
pub fn stamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// `count` distinct random tickers, each moved a small random step, stamped
/// with one quote time (the feed writes them in one transaction).
pub fn batch(
    random: &mut fastrand::Rng,
    prices: &mut [f64],
    count: usize,
    step: f64,
) -> Vec<(String, f64, String)> {
    let mut taken = std::collections::HashSet::with_capacity(count);
    let mut rows = Vec::with_capacity(count);
    let at = stamp();
    while rows.len() < count {
        let n = random.usize(..prices.len());
        if !taken.insert(n) {
            continue;
        }
        prices[n] *= 1.0 + (random.f64() * 2.0 - 1.0) * step;
        rows.push((format!("T{n}"), prices[n], at.clone()));
    }
    rows
}

/// Each event's latency from its quote's commit (`commits`, by ticker and
/// quote time), sorted, and how many events have no commit of the feed's.
pub fn latencies_of(
    events: &[SseEvent],
    commits: &HashMap<(String, String), Instant>,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut unmatched = 0;
    for event in events {
        let body: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        let key = (
            body["data"]["ticker"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body["data"]["quote_time"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        match commits.get(&key) {
            Some(committed) => latencies.push(event.at.saturating_duration_since(*committed)),
            None => unmatched += 1,
        }
    }
    latencies.sort_unstable();
    (latencies, unmatched)
}

/// Quote writes a second, in batches of [`COST_BATCH`], for [`COST_FOR`].
fn write_rate(feed: &mut dyn Feed, random: &mut fastrand::Rng, prices: &mut [f64]) -> f64 {
    let started = Instant::now();
    let mut written = 0;
    while started.elapsed() < COST_FOR {
        feed.write(&batch(random, prices, COST_BATCH, STEP));
        written += COST_BATCH;
    }
    written as f64 / started.elapsed().as_secs_f64()
}

/// The feed's write rate on a copy of the database with the daemon's
/// triggers and on one without, in [`COST_ROUNDS`] alternating rounds (the
/// machine's own drift falls on both), and their medians, printed.
fn print_write_cost(engine: &str, with: &mut dyn Feed, without: &mut dyn Feed) {
    let mut random = fastrand::Rng::with_seed(7);
    let mut prices = vec![100.0; TICKERS as usize];
    let (mut rates_with, mut rates_without) = (Vec::new(), Vec::new());
    for _ in 0..COST_ROUNDS {
        rates_with.push(write_rate(with, &mut random, &mut prices));
        rates_without.push(write_rate(without, &mut random, &mut prices));
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (rate_with, rate_without) = (median(&mut rates_with), median(&mut rates_without));
    println!(
        "{engine:<10} feed writes, {COST_BATCH}-row batches: {rate_with:.0}/s with the daemon's triggers, {rate_without:.0}/s without (medians of {COST_ROUNDS} alternating rounds): {:.2}x (goal <= 1.5x)",
        rate_without / rate_with
    );
}

/// What a feed measured.
struct UnderFeed {
    /// From each crossing quote's commit to its event on the stream.
    latencies: Vec<Duration>,
    /// Events whose quote the feed did not write (none expected).
    unmatched: usize,
    writes: usize,
    /// The daemons' CPU, in cores, over the feed.
    cores: f64,
}

/// Feeds for [`FEED`] at 1,000 writes a second while `daemons` react, then
/// matches each event that reached `subscriber` with its quote's commit.
fn under_feed(feed: &mut dyn Feed, daemons: &[Child], subscriber: &Subscriber) -> UnderFeed {
    let mut random = fastrand::Rng::with_seed(11);
    let mut prices = vec![100.0; TICKERS as usize];
    let mut commits: HashMap<(String, String), Instant> = HashMap::new();
    let seen_before = subscriber.events().len();
    let cpu = || -> f64 { daemons.iter().map(|daemon| cpu_seconds(daemon.id())).sum() };
    let cpu_before = cpu();
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < FEED {
        let rows = batch(&mut random, &mut prices, BATCH, STEP);
        feed.write(&rows);
        let committed = Instant::now();
        for (ticker, _, at) in rows {
            commits.insert((ticker, at), committed);
        }
        next += BATCH_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cores = (cpu() - cpu_before) / started.elapsed().as_secs_f64();
    // The last crossings' events on their way.
    std::thread::sleep(Duration::from_secs(2));
    let (latencies, unmatched) = latencies_of(&subscriber.events()[seen_before..], &commits);
    UnderFeed {
        latencies,
        unmatched,
        writes: commits.len(),
        cores,
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

fn print_feed(engine: &str, daemons: usize, measured: &UnderFeed, one_daemon_cores: Option<f64>) {
    let l = &measured.latencies;
    println!(
        "{engine:<10} {daemons} daemon(s) | {:>6} writes, {:>5} crossings ({} unmatched) | p50 {:>6.1} ms  p90 {:>6.1} ms  p99 {:>6.1} ms  max {:>7.1} ms (goals p50 <= 10, p99 <= 50) | CPU {:.3} cores{}",
        measured.writes,
        l.len(),
        measured.unmatched,
        percentile(l, 0.50),
        percentile(l, 0.90),
        percentile(l, 0.99),
        percentile(l, 1.0),
        measured.cores,
        match one_daemon_cores {
            Some(one) => format!(
                " = {:.2}x one daemon's (goal <= 1.2x)",
                measured.cores / one
            ),
            None => " (goal <= 0.5)".to_owned(),
        }
    );
}

/// The latency config: the shipped 10 s schedule, reacting to changes.
fn reacting_config(dir: &Path, name: &str, database_line: &str, relay: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = config_text(database_line, relay, "*/10 * * * * *") + "on_change = true\n";
    std::fs::write(&path, text).unwrap();
    path
}

/// `count` daemons of the build at `binary` on `config`.
pub fn start_daemons(binary: &Path, config: &Path, count: usize) -> Vec<Child> {
    (0..count)
        .map(|_| {
            binary_at(binary)
                .args(["--config", config.to_str().unwrap(), "run"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// One daemon logging its ticks (`info`) to `log`.
fn start_logging(config: &Path, log: &Path) -> Child {
    start_logging_with(binary(), config, log)
}

/// [`start_logging`] with the daemon of `command`.
fn start_logging_with(mut command: Command, config: &Path, log: &Path) -> Child {
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("level = \"warn\"", "level = \"info\"");
    std::fs::write(config, text).unwrap();
    command
        .args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The duration of the logged tick that triggered `triggered` alerts.
fn tick_ms(log: &Path, triggered: usize) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    log.lines()
        .filter(|line| line.contains("tick finished"))
        .find(|line| line.contains(&format!(" triggered={triggered} ")))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("duration_ms="))
        })
        .map_or_else(|| "?".to_owned(), |ms| format!("{ms} ms"))
}

pub fn stop(daemons: Vec<Child>) {
    for mut daemon in daemons {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}

/// Waits until the reacting job's first run (its full first tick) is done.
pub fn wait_for_first_run(database: &(impl Probe + ?Sized)) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while database.scalar("SELECT count(*) FROM job_watermarks") == 0 {
        assert!(Instant::now() < deadline, "the first run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And its upkeep: the change log pruned to its last row (the template's
    // inserts are a change each), else a move made now waits for the
    // pruning to end (0.3–0.5 s at 3M alerts) and the first event with it.
    while database.scalar("SELECT coalesce(max(change_seq) - min(change_seq), 0) FROM change_log")
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the first run's pruning did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its events delivered, and a breath.
    std::thread::sleep(Duration::from_secs(1));
}

/// A reacting daemon with nothing to do: its CPU over a minute, in % of a
/// core (goal: < 1%).
fn idle(engine: &str, daemon: &Child) {
    const OVER: Duration = Duration::from_secs(60);
    let before = cpu_seconds(daemon.id());
    std::thread::sleep(OVER);
    let used = cpu_seconds(daemon.id()) - before;
    println!(
        "{engine:<10} idle, watching: {:.2}% of a core over {}s (goal < 1%)",
        used / OVER.as_secs_f64() * 100.0,
        OVER.as_secs()
    );
}

/// Every ticker moves at once: from the commit to the first and the last
/// event on the stream; the tick's time and the daemon's peak memory.
/// `expected` is what the move triggers, counted before the daemon
/// started: while it is delivered, only the subscriber's count is watched
/// (a count over the tables every 20 ms took most of a core from the
/// daemon), and a count beside the daemon's first run, a long read, held
/// up its checkpoints (at 10M alerts the WAL was 125 MB at the commit).
fn burst(
    engine: &str,
    (daemon, log): (&Child, &Path),
    database: &(impl Probe + ?Sized),
    (streams, expected): (&[Subscriber], usize),
    move_all: impl FnOnce(),
) {
    let received = || streams.iter().map(Subscriber::count).sum::<usize>();
    let seen_before: Vec<usize> = streams.iter().map(Subscriber::count).collect();
    let seen_in_all: usize = seen_before.iter().sum();
    let committed = {
        move_all();
        Instant::now()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let wal_at_commit = database.wal_bytes();
    let mut wal_peak = wal_at_commit;
    // Given up when nothing more came for a minute, or after ten.
    let mut progress = (0, Instant::now());
    while received() - seen_in_all < expected {
        if received() > progress.0 {
            progress = (received(), Instant::now());
        }
        if Instant::now() >= deadline || progress.1.elapsed() > Duration::from_secs(60) {
            panic!(
                "the burst was not delivered: {}",
                what_went_missing(streams, &seen_before, database, expected)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        wal_peak = wal_peak.max(database.wal_bytes());
    }
    assert_eq!(database.triggering(), 0, "every triggered alert claimed");
    // Each recorded delivered a moment after the relay took it.
    while database.scalar("SELECT count(*) FROM outbox WHERE state = 'pending'") > 0 {
        assert!(
            Instant::now() < deadline,
            "the burst was not recorded delivered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The burst's own events (its quotes are at 102.0), none of another
    // run's still on its way, in the order they came.
    let mut arrived: Vec<SseEvent> = streams
        .iter()
        .zip(&seen_before)
        .flat_map(|(stream, before)| stream.events().split_off(*before))
        .filter(|event| event.data.contains("\"price\":102.0"))
        .collect();
    arrived.sort_by_key(|event| event.at);
    let since = |at: Instant| at.saturating_duration_since(committed).as_secs_f64() * 1000.0;
    let wal = match (wal_at_commit, wal_peak) {
        (Some(at_commit), Some(peak)) => format!(
            "; WAL {:.1} MB at the commit, peak {:.1} MB",
            at_commit as f64 / 1e6,
            peak as f64 / 1e6
        ),
        _ => String::new(),
    };
    println!(
        "{engine:<10} burst: {} events; first on the stream {:.0} ms after the commit (goal <= 100 ms), last {:.0} ms ({:.0} events/s); the tick {}; daemon peak RSS {:.1} MB{wal}",
        arrived.len(),
        since(arrived.first().unwrap().at),
        since(arrived.last().unwrap().at),
        arrived.len() as f64 / (since(arrived.last().unwrap().at) / 1000.0),
        tick_ms(log, arrived.len()),
        rss_kib(daemon.id(), "VmHWM:") as f64 / 1024.0
    );
}

/// How far a burst got: the events the streams received against those
/// the outbox queued, and the first that it holds delivered and no stream
/// received, with their users. An event is known by the id in its body
/// (nchan's SSE ids are its own).
fn what_went_missing(
    streams: &[Subscriber],
    seen_before: &[usize],
    database: &(impl Probe + ?Sized),
    expected: usize,
) -> String {
    let received: std::collections::HashSet<String> = streams
        .iter()
        .zip(seen_before)
        .flat_map(|(stream, before)| stream.events().split_off(*before))
        .filter_map(|event| {
            let body: serde_json::Value = serde_json::from_str(&event.data).ok()?;
            Some(body.get("id")?.as_str()?.to_owned())
        })
        .collect();
    let queued = database.outbox_events();
    let mut states: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, _, state) in &queued {
        *states.entry(state.as_str()).or_default() += 1;
    }
    let unseen: Vec<String> = queued
        .iter()
        .filter(|(id, _, state)| state == "delivered" && !received.contains(id))
        .take(10)
        .map(|(id, user, _)| format!("{id} (user {})", user.as_deref().unwrap_or("-")))
        .collect();
    format!(
        "{} of {expected} events reached the streams; the outbox holds {states:?}; \
         delivered and not received: {}",
        received.len(),
        if unseen.is_empty() {
            "none".to_owned()
        } else {
            unseen.join(", ")
        }
    )
}

/// The SQLite rows: write cost, latency under the feed, the burst.
fn sqlite(dir: &Path, relay: &Relay, template: &Path) {
    let (with, without) = (dir.join("cost-with.db"), dir.join("cost-without.db"));
    copy(template, &with);
    copy(template, &without);
    SqliteFeed::open(&without)
        .0
        .execute_batch(
            "DROP TRIGGER quotes_changed_on_insert; DROP TRIGGER quotes_changed_on_update;
             DROP TRIGGER quotes_changed_on_delete;",
        )
        .unwrap();
    print_write_cost(
        "sqlite",
        &mut SqliteFeed::open(&with),
        &mut SqliteFeed::open(&without),
    );
    for path in [with, without] {
        std::fs::remove_file(path).unwrap();
    }

    // The feed commits as a feed handler tuned for it does (`synchronous =
    // NORMAL`), then as SQLite's default does (`FULL`: each commit syncs
    // the WAL before it becomes visible).
    let subscriber = relay.subscribe();
    for synchronous in ["NORMAL", "FULL"] {
        let path = dir.join(format!("latency-{synchronous}.db"));
        copy(template, &path);
        let config = reacting_config(
            dir,
            &format!("latency-sqlite-{synchronous}"),
            &format!("path = \"{}\"", path.display()),
            &relay.publish_url(),
        );
        let daemons = start_daemons(binary_path(), &config, 1);
        wait_for_first_run(&path);
        let mut feed = SqliteFeed::open(&path);
        feed.0
            .pragma_update(None, "synchronous", synchronous)
            .unwrap();
        // Each write returns at its commit, not after a checkpoint of its
        // pages (the daemon checkpoints): a crossing is timed from there.
        feed.0.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        let measured = under_feed(&mut feed, &daemons, &subscriber);
        let engine = match synchronous {
            "NORMAL" => "sqlite",
            _ => "sqlite, FULL",
        };
        print_feed(engine, 1, &measured, None);
        stop(daemons);
        std::fs::remove_file(&path).unwrap();
    }

    let path = dir.join("burst.db");
    copy(template, &path);
    let database_line = format!("path = \"{}\"", path.display());
    idle_and_burst(
        "sqlite",
        dir,
        relay,
        &database_line,
        &path,
        &subscriber,
        || crate::move_quotes(&path, 1, 0),
    );
}

/// The PostgreSQL rows: write cost, latency under the feed with one daemon
/// and with three, the burst.
fn postgresql(dir: &Path, relay: &Relay) {
    let template = crate::postgresql::generate("latency_template", ALERTS, TICKERS);
    let (with, without) = (template.copy("cost_with"), template.copy("cost_without"));
    PgFeed::open(&without)
        .0
        .batch_execute(
            "DROP TRIGGER quotes_changed_on_insert ON quotes;
             DROP TRIGGER quotes_changed_on_update ON quotes;",
        )
        .unwrap();
    print_write_cost(
        "postgresql",
        &mut PgFeed::open(&with),
        &mut PgFeed::open(&without),
    );
    with.drop_and_checkpoint();
    without.drop_and_checkpoint();

    let subscriber = relay.subscribe();
    let mut one_daemon = None;
    for members in [1, 3] {
        let database = template.copy(&format!("latency_{members}"));
        let config = reacting_config(
            dir,
            &format!("latency-postgresql-{members}"),
            &format!("url = \"{}\"", database.url()),
            &relay.publish_url(),
        );
        let daemons = start_daemons(binary_path(), &config, members);
        wait_for_first_run(&database);
        let measured = under_feed(&mut PgFeed::open(&database), &daemons, &subscriber);
        print_feed("postgresql", members, &measured, one_daemon);
        one_daemon.get_or_insert(measured.cores);
        stop(daemons);
    }

    let database = template.copy("burst");
    let database_line = format!("url = \"{}\"", database.url());
    idle_and_burst(
        "postgresql",
        dir,
        relay,
        &database_line,
        &database,
        &subscriber,
        || database.move_quotes(1, 0),
    );
}

/// One reacting daemon on `database` (its config's `database_line`), after
/// its first run: idle for a minute, then a burst.
fn idle_and_burst(
    engine: &str,
    dir: &Path,
    relay: &Relay,
    database_line: &str,
    database: &(impl Probe + ?Sized),
    subscriber: &Subscriber,
    move_all: impl FnOnce(),
) {
    let name = format!("burst-{engine}");
    let config = reacting_config(dir, &name, database_line, &relay.publish_url());
    let log = dir.join(format!("{name}.log"));
    let expected = database.triggering_at(102.0) as usize;
    let daemon = start_logging(&config, &log);
    wait_for_first_run(database);
    idle(engine, &daemon);
    burst(
        engine,
        (&daemon, &log),
        database,
        (std::slice::from_ref(subscriber), expected),
        move_all,
    );
    stop(vec![daemon]);
}

/// Both engines' latency rows.
pub fn rows(dir: &Path, relay: &Relay) {
    println!(
        "latency: {ALERTS} alerts over {TICKERS} tickers, a reacting job, the relay and an SSE subscriber"
    );
    let template = dir.join("latency-template.db");
    generate(&template, ALERTS, TICKERS, None);
    sqlite(dir, relay, &template);
    postgresql(dir, relay);
}

/// Which relay a burst goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// nginx + nchan, one event a request, one stream of every event.
    Nchan,
    /// Pushpin, `relays::BATCH` events a request, a stream on every user's
    /// channel.
    Pushpin,
}

/// Bursts run so far: the round of [`crate::both_ways`].
static BURSTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The burst alone on SQLite at `alerts` alerts over the same tickers
/// (`--latency N`): its memory at sizes beyond the latency rows'. With
/// `before`, that build's burst too, on a copy of the same database (made
/// at that build's schema; this tree's migrates its copy as it starts):
/// first in the first burst, second in the next, and so on (`--latency
/// 100000 100000` runs them both ways; see [`crate::both_ways`]).
pub fn burst_at(dir: &Path, relay: &Relay, alerts: u64, before: Option<&Path>, through: Through) {
    println!(
        "burst: {alerts} alerts over {TICKERS} tickers, a reacting daemon on SQLite, through {through:?}"
    );
    let template = dir.join(format!("burst-{alerts}-template.db"));
    if !template.exists() {
        generate(&template, alerts, TICKERS, before);
    }
    let round = BURSTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::both_ways(round, before, |build| {
        let (build, command) = match build {
            Some(before) => ("before", binary_at(before)),
            None => ("now", binary()),
        };
        let path = dir.join(format!("burst-{alerts}.db"));
        copy(&template, &path);
        let database_line = format!("path = \"{}\"", path.display());
        let name = format!("burst-{alerts}");
        let (config, watched, nchan_stream) = match through {
            Through::Nchan => (
                reacting_config(dir, &name, &database_line, &relay.publish_url()),
                None,
                Some(relay.subscribe()),
            ),
            Through::Pushpin => {
                let watched = crate::relays::Watched::start();
                let config =
                    reacting_config(dir, &name, &database_line, &watched.pushpin.publish_url());
                let text = std::fs::read_to_string(&config).unwrap().replace(
                    "[webhook]\n",
                    &format!(
                        "[webhook]\nformat = \"pushpin\"\nbatch = {}\n",
                        crate::relays::BATCH
                    ),
                );
                std::fs::write(&config, text).unwrap();
                (config, Some(watched), None)
            }
        };
        let streams = match (&watched, &nchan_stream) {
            (Some(watched), _) => watched.streams.as_slice(),
            (None, Some(stream)) => std::slice::from_ref(stream),
            (None, None) => unreachable!("a relay"),
        };
        let log = dir.join(format!("burst-{alerts}-{build}.log"));
        let expected = path.triggering_at(102.0) as usize;
        // Killed when dropped, also when the burst fails.
        let daemon = crate::common::Killed(start_logging_with(command, &config, &log));
        wait_for_first_run(&path);
        burst(build, (&daemon.0, &log), &path, (streams, expected), || {
            crate::move_quotes(&path, 1, 0)
        });
        drop(daemon);
        for file in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{file}", path.display()));
        }
    });
}
