//! The tick benchmark: `cargo bench --bench tick [-- SIZE...]` (sizes in
//! alerts; default 10000 100000 1000000). For each size it generates a database
//! of N alerts over `--tickers` tickers (default 1000) with `--fraction` of them
//! triggered (default 0.1), then measures, in the same run:
//!
//! - the floor: SQLite's own set-based `UPDATE ... WHERE enabled = 1 AND
//!   <condition>` over a copy of the same data, in the `sqlite3` shell;
//! - one `price-alertd run-job` over another copy, delivering to the real
//!   nginx + nchan relay on loopback: the tick (all claims and outbox rows
//!   committed), the whole process from start to exit, delivery throughput,
//!   and peak RSS;
//! - the invariants: one outbox row per triggered alert, none left enabled;
//! - an idle daemon's resident memory.
//!
//! It needs `sqlite3`, `nginx` and `libnginx-mod-nchan` (`bash tests/run`
//! installs them).

#[path = "../common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Relay, binary};
use price_alertd::config::DatabaseConfig;

struct Options {
    sizes: Vec<u64>,
    tickers: u64,
    fraction: f64,
}

fn options() -> Options {
    let mut options = Options {
        sizes: Vec::new(),
        tickers: 1000,
        fraction: 0.1,
    };
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tickers" => {
                options.tickers = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--tickers N")
            }
            "--fraction" => {
                options.fraction = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--fraction F")
            }
            size => options.sizes.push(
                size.replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("not a size: {size}")),
            ),
        }
    }
    if options.sizes.is_empty() {
        options.sizes = vec![10_000, 100_000, 1_000_000];
    }
    options
}

/// Generates the template database: `alerts` alerts over `tickers` tickers all
/// quoted at 100, every alert `above` or `below`, a spread-out `fraction` of
/// them triggered. Checkpointed, so the file alone holds everything.
fn generate(path: &Path, alerts: u64, tickers: u64, fraction: f64) {
    let config = DatabaseConfig {
        path: path.to_path_buf(),
        busy_timeout: Duration::from_secs(30),
    };
    drop(price_alertd::store::open(&config, 1).unwrap());
    let connection = rusqlite::Connection::open(path).unwrap();
    let triggered_per_mille = (fraction * 1000.0).round() as i64;
    connection
        .execute_batch(&format!(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {alerts})
             INSERT INTO price_alerts (ticker, condition, target_price, created_at, user_id)
             SELECT 'T' || (i % {tickers}),
                    CASE i % 2 WHEN 0 THEN 'above' ELSE 'below' END,
                    CASE WHEN (i * 7919) % 1000 < {triggered_per_mille}
                         THEN CASE i % 2 WHEN 0 THEN 90.0 ELSE 110.0 END
                         ELSE CASE i % 2 WHEN 0 THEN 110.0 ELSE 90.0 END END,
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

fn config(dir: &Path, database: &Path, relay: &str) -> PathBuf {
    let path = dir.join("bench.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[database]
path = "{}"
[evaluator]
threads = 10
[webhook]
url = "{relay}"
headers = {{ "X-EventSource-Event" = "price_alert" }}
concurrency = 64
drain_timeout = "300s"
[log]
level = "warn"
[[jobs]]
name = "evaluate"
kind = "evaluate"
schedule = "0 0 0 1 1 *"
"#,
            database.display()
        ),
    )
    .unwrap();
    path
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

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn main() {
    let options = options();
    let relay = Relay::start();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{:>9} {:>7} {:>9} | {:>8} {:>8} {:>6} | {:>12} {:>11} | {:>9} {:>11} | {:>8}",
        "alerts",
        "tickers",
        "triggered",
        "floor s",
        "tick s",
        "ratio",
        "evaluated/s",
        "claims/s",
        "run-job s",
        "delivered/s",
        "peak MB"
    );
    let mut idle_template = None;
    for &alerts in &options.sizes {
        let template = dir.path().join(format!("template-{alerts}.db"));
        generate(&template, alerts, options.tickers, options.fraction);
        let expected = scalar(
            &template,
            "SELECT count(*) FROM price_alerts a JOIN quotes q USING (ticker)
             WHERE (a.condition = 'above' AND q.price >= a.target_price) OR (a.condition = 'below' AND q.price <= a.target_price)",
        );

        let floor_db = dir.path().join(format!("floor-{alerts}.db"));
        copy(&template, &floor_db);
        let floor_seconds = floor(&floor_db);
        assert_eq!(
            scalar(
                &floor_db,
                "SELECT count(*) FROM price_alerts WHERE enabled = 0"
            ),
            expected
        );

        let tick_db = dir.path().join(format!("tick-{alerts}.db"));
        copy(&template, &tick_db);
        let config = config(dir.path(), &tick_db, &relay.publish_url());
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

        // The invariants, at speed.
        let triggered = summary_value(&summary, "triggered") as i64;
        assert_eq!(triggered, expected, "claims");
        assert_eq!(
            scalar(&tick_db, "SELECT count(*) FROM outbox"),
            expected,
            "one outbox row per triggered alert"
        );
        assert_eq!(
            scalar(&tick_db, "SELECT count(DISTINCT alert_id) FROM outbox"),
            expected
        );
        assert_eq!(
            scalar(
                &tick_db,
                "SELECT count(*) FROM price_alerts WHERE enabled = 0"
            ),
            expected,
            "none left enabled"
        );
        assert_eq!(
            scalar(
                &tick_db,
                "SELECT count(*) FROM price_alerts a JOIN outbox o ON o.alert_id = a.id WHERE a.enabled = 1"
            ),
            0
        );
        let delivered = summary_value(&summary, "delivered");
        assert_eq!(
            delivered as i64, expected,
            "every event delivered to the relay"
        );

        let tick_seconds = summary_value(&summary, "duration_ms") / 1000.0;
        let delivery_seconds = summary_value(&summary, "delivery_ms") / 1000.0;
        let evaluated = summary_value(&summary, "evaluated");
        println!(
            "{:>9} {:>7} {:>9} | {:>8.3} {:>8.3} {:>5.2}x | {:>12.0} {:>11.0} | {:>9.3} {:>11.0} | {:>8.1}",
            alerts,
            options.tickers,
            expected,
            floor_seconds,
            tick_seconds,
            tick_seconds / floor_seconds,
            evaluated / tick_seconds,
            triggered as f64 / tick_seconds,
            process_seconds,
            delivered / delivery_seconds.max(1e-9),
            summary_value(&summary, "peak_rss_kib") / 1024.0
        );
        idle_template.get_or_insert(template);
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
        "idle daemon: RSS {:.1} MB (peak {:.1} MB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}
