//! Alert semantics on real databases and processes: crossings across
//! restarts, stale quotes, the HTTP quote source, malformed rows, re-arming,
//! per-job scopes and expiry.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Daemon, Db, QuoteServer, Receiver, binary, cli, config_text, summary, wait_until};

/// Runs `price-alertd run-job NAME` and returns its summary's pairs.
fn run_job(config: &std::path::Path, name: &str) -> HashMap<String, String> {
    summary(&cli(config, &["run-job", name]))
}

fn set_quote_at(db: &Db, ticker: &str, price: f64, updated_at: &str) {
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
        values![ticker, price, updated_at],
    );
}

on_every_engine! {
    fn crossings_fire_on_the_tick_that_crosses_even_across_separate_processes(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let path = db.write_config(&config_text(&db, &receiver.url, "0 0 0 1 1 *"));
        let up = db.add_alert("BTC-USD", "crossing_up", 100.0);
        let down = db.add_alert("BTC-USD", "crossing_down", 100.0);

        // First observation: nothing to cross from.
        db.set_quote("BTC-USD", 95.0);
        assert_eq!(run_job(&path, "evaluate")["triggered"], "0");
        // Still below: no crossing.
        db.set_quote("BTC-USD", 97.0);
        assert_eq!(run_job(&path, "evaluate")["triggered"], "0");
        // Crosses up, in a new process: the previous price persisted.
        db.set_quote("BTC-USD", 103.0);
        assert_eq!(run_job(&path, "evaluate")["triggered"], "1");
        assert_eq!(receiver.received()[0].json()["data"]["alert_id"], up);
        // Crosses back down.
        db.set_quote("BTC-USD", 99.0);
        assert_eq!(run_job(&path, "evaluate")["triggered"], "1");
        assert_eq!(receiver.received()[1].json()["data"]["alert_id"], down);
        // An alert created while the price is already above does not fire until a crossing.
        db.add_alert("BTC-USD", "crossing_up", 90.0);
        db.set_quote("BTC-USD", 99.5);
        assert_eq!(run_job(&path, "evaluate")["triggered"], "0");
    }
}

on_every_engine! {
    fn a_stale_quote_never_triggers_and_is_logged_once_per_ticker(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let text = config_text(&db, &receiver.url, "* * * * * *")
            .replace("[webhook]", "[prices]\nmax_age = \"15m\"\n\n[webhook]");
        let path = db.write_config(&text);
        for _ in 0..3 {
            db.add_alert("AAPL", "above", 100.0);
        }
        let stale = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
        set_quote_at(&db, "AAPL", 150.0, &stale);
        let summary = run_job(&path, "evaluate");
        assert_eq!(
            (
                summary["triggered"].as_str(),
                summary["stale_quotes"].as_str(),
                summary["stale_alerts"].as_str()
            ),
            ("0", "1", "3")
        );

        // The daemon looks at the ticker when its quote is written: a stale
        // quote, written again and again, is logged once, and triggers when a
        // fresh one comes.
        let daemon = Daemon::start(&path);
        let ticks = || daemon.log().matches("tick finished").count();
        for price in [151.0, 152.0, 153.0] {
            set_quote_at(&db, "AAPL", price, &stale);
            let seen = ticks();
            wait_until("a tick", || ticks() > seen);
        }
        assert_eq!(
            daemon.log().matches("stale quote").count(),
            1,
            "{}",
            daemon.log()
        );
        db.set_quote("AAPL", 150.0);
        receiver.wait_for(3);
        daemon.wait_for_log("quote usable again");
    }
}

#[test]
fn quote_times_come_from_the_source_not_the_clock() {
    let db = Db::new();
    let receiver = Receiver::start();
    let path = db.write_config(&config_text(&db.path, &receiver.url, "0 0 0 1 1 *"));
    db.add_alert("AAPL", "above", 100.0);
    let at = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    set_quote_at(&db, "AAPL", 150.0, &at);
    run_job(&path, "evaluate");
    assert_eq!(
        receiver.received()[0].json()["data"]["quote_time"],
        at.as_str()
    );
}

fn http_source_config(db: &Db, webhook: &str, quotes: &str, extra: &str) -> std::path::PathBuf {
    let text = config_text(&db.path, webhook, "0 0 0 1 1 *").replace(
        "[webhook]",
        &format!("[prices]\nsource = \"http\"\nurl = \"{quotes}\"\nbatch_size = 2\ntimeout = \"2s\"\n{extra}\n[webhook]"),
    );
    db.write_config(&text)
}

#[test]
fn the_http_source_fetches_in_batches_stores_quotes_and_triggers() {
    let db = Db::new();
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    let path = http_source_config(
        &db,
        &receiver.url,
        &source.url,
        "headers = { \"X-Api-Key\" = \"k-123\" }",
    );
    for ticker in ["A", "B", "C", "D", "E"] {
        db.add_alert(ticker, "above", 10.0);
        source.set(ticker, 20.0, Duration::from_secs(30));
    }
    let summary = run_job(&path, "evaluate");
    assert_eq!(summary["triggered"], "5");
    assert_eq!(summary["quote_errors"], "0");
    let mut requests = source.requests();
    requests.sort();
    assert_eq!(requests, ["A,B", "C,D", "E"]);
    assert_eq!(
        db.scalar("SELECT count(*) FROM quotes WHERE price = 20.0"),
        5
    );
}

#[test]
fn a_failed_fetch_triggers_nothing_for_those_tickers_even_with_an_older_stored_quote() {
    let db = Db::new();
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    // One request at a time, so that the first batch is the one that fails.
    let path = http_source_config(&db, &receiver.url, &source.url, "concurrency = 1");
    db.add_alert("A", "above", 10.0);
    db.add_alert("B", "above", 10.0);
    db.add_alert("C", "above", 10.0);
    // Stored quotes that would trigger if the daemon fell back on them.
    db.set_quote("A", 50.0);
    db.set_quote("B", 50.0);
    source.set("A", 5.0, Duration::from_secs(1));
    source.set("B", 5.0, Duration::from_secs(1));
    source.set("C", 20.0, Duration::from_secs(1));
    source.fail_next(500, None);

    let summary = run_job(&path, "evaluate");
    // The batch "A,B" failed; "C" triggered.
    assert_eq!(summary["triggered"], "1", "{summary:?}");
    assert_eq!(summary["unavailable"], "2");
    assert_eq!(summary["quote_errors"], "1");
    assert_eq!(receiver.received()[0].json()["data"]["ticker"], "C");
}

#[test]
fn unusable_or_missing_quotes_from_the_source_trigger_nothing() {
    let db = Db::new();
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    let path = http_source_config(&db, &receiver.url, &source.url, "");
    for ticker in ["NEG", "TEXT", "NOTIME", "MISSING", "GOOD"] {
        db.add_alert(ticker, "above", 1.0);
    }
    source.set("NEG", -5.0, Duration::ZERO);
    source.set_raw(
        "TEXT",
        serde_json::json!("twelve"),
        serde_json::json!(chrono::Utc::now().to_rfc3339()),
    );
    source.set_raw(
        "NOTIME",
        serde_json::json!(12.0),
        serde_json::json!("yesterday"),
    );
    source.set("GOOD", 12.0, Duration::ZERO);
    let summary = run_job(&path, "evaluate");
    assert_eq!(summary["triggered"], "1", "{summary:?}");
    assert_eq!(summary["unavailable"], "4");
}

/// `run-job evaluate`'s `triggered`, `unavailable` and `quote_errors`, and
/// what it logged.
fn fetch_counts(path: &std::path::Path) -> ((String, String, String), String) {
    let output = common::binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
        .output()
        .unwrap();
    let summary = summary(&String::from_utf8_lossy(&output.stdout));
    let counts = (
        summary["triggered"].clone(),
        summary["unavailable"].clone(),
        summary["quote_errors"].clone(),
    );
    (counts, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_repeating_alert_is_judged_only_on_a_quote_fetched_for_its_tick() {
    let db = Db::new();
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    let path = http_source_config(&db, &receiver.url, &source.url, "");
    let id = db.add_alert("ACME", "above", 200.0);
    db.execute(
        "UPDATE price_alerts SET cooldown = '1s' WHERE id = $1",
        values![id],
    );
    source.set("ACME", 300.0, Duration::ZERO);
    assert_eq!(run_job(&path, "evaluate")["triggered"], "1");
    // The price falls back; once the cooldown has passed, the tick that
    // re-arms the alert fetches its ticker first and judges it at 100, not
    // at the 300 still stored.
    source.set("ACME", 100.0, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1200));
    let summary = run_job(&path, "evaluate");
    assert_eq!(
        (summary["rearmed"].as_str(), summary["triggered"].as_str()),
        ("1", "0"),
        "{summary:?}"
    );
    assert_eq!(source.requests(), ["ACME", "ACME"]);
    assert_eq!(receiver.received().len(), 1);
}

#[test]
fn an_alert_whose_ticker_was_not_fetched_for_the_tick_waits_for_one_that_was() {
    use price_alertd::evaluate::{self, TickMemory, TickOptions};
    let db = Db::new();
    let receiver = Receiver::start();
    let config = common::lib_config(&db, &receiver.url);
    // Fresh in the table, but not fetched for this tick (the alert came
    // after the fetch was planned, say): not judged on it.
    db.add_alert("LATE", "above", 10.0);
    db.set_quote("LATE", 20.0);
    let pool = db.pool(12);
    let workers = evaluate::thread_pool(2).unwrap();
    let memory = TickMemory::default();
    let tick = |fetched: &std::collections::HashSet<String>| {
        let options = TickOptions {
            job: "evaluate",
            evaluator: &config.evaluator,
            max_age: config.prices.max_age,
            scope: &price_alertd::config::Scope::all(),
            fetched: Some(fetched),
            memory: &memory,
            claimed: &|_| {},
            lessee: None,
            head_start: price_alertd::evaluate::HEAD_START,
            head_start_after: price_alertd::evaluate::HEAD_START_AFTER,
            page: price_alertd::evaluate::PAGE,
            unwritten: false,
        };
        evaluate::tick(&workers, &pool, &options).unwrap()
    };
    let report = tick(&Default::default());
    assert_eq!((report.triggered, report.unavailable), (0, 1), "{report:?}");
    // The next tick fetched it: judged, though no change came since.
    let report = tick(&["LATE".to_owned()].into());
    assert_eq!(report.triggered, 1, "{report:?}");
}

#[test]
fn the_quote_source_follows_no_redirect() {
    let db = Db::new();
    let receiver = Receiver::start();
    let elsewhere = Receiver::start();
    let source = QuoteServer::start();
    let path = http_source_config(
        &db,
        &receiver.url,
        &format!("{}?token=t-123", source.url),
        "headers = { \"X-Api-Key\" = \"k-123\" }",
    );
    db.add_alert("A", "above", 10.0);
    db.set_quote("A", 50.0);
    source.set("A", 20.0, Duration::ZERO);
    source.redirect_next(&elsewhere.url);
    let (counts, stderr) = fetch_counts(&path);
    assert_eq!(counts, ("0".into(), "1".into(), "1".into()), "{stderr}");
    assert!(stderr.contains("redirects are not followed"), "{stderr}");
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was followed, with the source's key"
    );
}

#[test]
fn slow_batches_are_fetched_side_by_side_within_the_bound() {
    let db = Db::new();
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    // One ticker a request, four requests at once (the default).
    let path = http_source_config(&db, &receiver.url, &source.url, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("batch_size = 2", "batch_size = 1");
    let path = db.write_config(&text);
    db.add_alert("FAST", "above", 10.0);
    source.set("FAST", 20.0, Duration::ZERO);
    for at in 0..6 {
        let ticker = format!("SLOW{at}");
        db.add_alert(&ticker, "above", 10.0);
        source.set(&ticker, 20.0, Duration::ZERO);
        source.delay(&ticker, Duration::from_millis(700));
    }
    let summary = run_job(&path, "evaluate");
    assert_eq!(summary["triggered"], "7", "{summary:?}");
    assert_eq!(source.most_in_flight(), 4, "{summary:?}");
    // The fetch is the tick's time too, and said apart.
    let fetch_ms: u64 = summary["fetch_ms"].parse().unwrap();
    let duration_ms: u64 = summary["duration_ms"].parse().unwrap();
    assert!(fetch_ms >= 700, "{summary:?}");
    assert!(duration_ms >= fetch_ms, "{summary:?}");
}

#[test]
fn a_ticker_given_twice_in_one_answer_is_not_evaluated() {
    let db = Db::new();
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    let path = http_source_config(&db, &receiver.url, &source.url, "");
    db.add_alert("A", "below", 1.0);
    db.add_alert("B", "above", 10.0);
    source.set("A", 5_000_000.0, Duration::ZERO);
    source.twice("A", 0.5);
    source.set("B", 20.0, Duration::ZERO);
    let (counts, stderr) = fetch_counts(&path);
    assert_eq!(counts, ("1".into(), "1".into(), "1".into()), "{stderr}");
    assert!(stderr.contains("more than once"), "{stderr}");
    assert_eq!(receiver.received()[0].json()["data"]["ticker"], "B");
}

#[test]
fn a_429_makes_the_source_back_off() {
    let db = Db::new();
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    // Two jobs in one daemon would share the back-off; here one daemon, every second.
    let text = config_text(&db.path, &receiver.url, "* * * * * *").replace(
        "[webhook]",
        &format!(
            "[prices]\nsource = \"http\"\nurl = \"{}\"\nbatch_size = 1\n\n[webhook]",
            source.url
        ),
    );
    let path = db.write_config(&text);
    db.add_alert("A", "above", 10.0);
    db.add_alert("B", "above", 10.0);
    source.set("A", 20.0, Duration::ZERO);
    source.set("B", 20.0, Duration::ZERO);
    source.fail_next(429, Some(3));
    let daemon = Daemon::start(&path);
    daemon.wait_for_log("backing off");
    let after_429 = source.requests().len();
    // During the back-off, ticks make no request.
    let ticks = |log: &str| log.matches("tick finished").count();
    let seen = ticks(&daemon.log());
    wait_until("a tick during the back-off", || ticks(&daemon.log()) > seen);
    assert_eq!(
        source.requests().len(),
        after_429,
        "a request went out during the back-off"
    );
    // Then it recovers and both trigger.
    receiver.wait_for(2);
}

#[test]
fn malformed_rows_are_skipped_and_counted_and_the_rest_triggers() {
    let db = Db::new();
    let receiver = Receiver::start();
    let path = db.write_config(&config_text(&db.path, &receiver.url, "0 0 0 1 1 *"));
    let good = db.add_alert("AAPL", "above", 100.0);
    let good_too = db.add_alert("MSFT", "below", 500.0);
    let app = db.app();
    app.execute_batch(
        "INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('AAPL', 'sideways', 1, 'x');
         INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('', 'above', 1, 'x');
         INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('AAPL', 'above', 'lots', 'x');
         INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('AAPL', 'moving_up_pct', 5, 'x');
         INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('BAD1', 'above', 1, 'x');
         INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('BAD2', 'above', 1, 'x');",
    )
    .unwrap();
    db.set_quote("AAPL", 150.0);
    db.set_quote("MSFT", 300.0);
    set_quote_at(&db, "BAD1", -3.0, &chrono::Utc::now().to_rfc3339());
    app.execute(
        "INSERT INTO quotes (ticker, price, updated_at) VALUES ('BAD2', 'n/a', ?1)",
        [chrono::Utc::now().to_rfc3339()],
    )
    .unwrap();

    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success());
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(summary.contains(" triggered=2 "), "{summary}");
    assert!(summary.contains(" malformed_alerts=4 "), "{summary}");
    assert!(summary.contains(" malformed_quotes=2 "), "{summary}");
    for text in [
        "unknown condition",
        "sideways",
        "the ticker is empty",
        "target_price is missing",
        "reference_price is missing",
        "BAD1",
        "BAD2",
    ] {
        assert!(stderr.contains(text), "{text:?} not in {stderr}");
    }
    let delivered: Vec<i64> = receiver
        .received()
        .iter()
        .map(|r| r.json()["data"]["alert_id"].as_i64().unwrap())
        .collect();
    assert_eq!(delivered.len(), 2);
    assert!(delivered.contains(&good) && delivered.contains(&good_too));
}

#[test]
fn rows_with_a_null_ticker_or_condition_are_named_and_a_quote_from_the_future_is_malformed() {
    // The application made the table first, without NOT NULL constraints.
    let db = Db::empty(common::Engine::Sqlite);
    rusqlite::Connection::open(&db.path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE price_alerts (id INTEGER PRIMARY KEY, ticker TEXT, condition TEXT,
                 target_price REAL, reference_price REAL, enabled INTEGER NOT NULL DEFAULT 1,
                 triggered_at TEXT, triggered_price REAL, created_at TEXT, user_id TEXT, note TEXT);
             CREATE TABLE quotes (ticker TEXT PRIMARY KEY, price REAL NOT NULL, updated_at TEXT NOT NULL);
             INSERT INTO price_alerts (id, ticker, condition, target_price) VALUES (71, NULL, 'above', 1);
             INSERT INTO price_alerts (id, ticker, condition, target_price) VALUES (72, 'AAPL', NULL, 1);
             INSERT INTO price_alerts (id, ticker, condition, target_price) VALUES (73, 'AAPL', 'above', 1);
             INSERT INTO price_alerts (id, ticker, condition, target_price) VALUES (74, 'FUT', 'above', 1);",
        )
        .unwrap();
    let receiver = Receiver::start();
    let config = db.write_config(&config_text(&db.path, &receiver.url, "* * * * * *"));
    db.set_quote("AAPL", 150.0);
    // A feed whose clock says 2030.
    set_quote_at(&db, "FUT", 150.0, "2030-01-01T00:00:00Z");

    let output = binary()
        .args(["--config", config.to_str().unwrap(), "run-job", "evaluate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let summary = summary(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(
        (
            summary["triggered"].as_str(),
            summary["malformed_alerts"].as_str(),
            summary["malformed_quotes"].as_str()
        ),
        ("1", "2", "1"),
        "{summary:?}"
    );
    for named in ["alert_id=71", "alert_id=72", "FUT", "dated in the future"] {
        assert!(stderr.contains(named), "{named:?} not in {stderr}");
    }

    // A running daemon warns about the future quote once, however often the
    // feed writes it, and evaluates the ticker once its quote is sane.
    let daemon = Daemon::start(&config);
    let ticks = || daemon.log().matches("tick finished").count();
    for price in [151.0, 152.0, 153.0] {
        set_quote_at(&db, "FUT", price, "2030-01-01T00:00:00Z");
        let seen = ticks();
        wait_until("a tick", || ticks() > seen);
    }
    assert_eq!(daemon.log().matches("dated in the future").count(), 1);
    db.set_quote("FUT", 150.0);
    receiver.wait_for(2);
    daemon.wait_for_log("quote usable again");
}

on_every_engine! {
    fn rearming_by_the_cli_or_the_application_gives_the_next_trigger_a_new_id(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let path = db.write_config(&config_text(&db, &receiver.url, "0 0 0 1 1 *"));
        let id = db.add_alert("AAPL", "above", 100.0);
        db.set_quote("AAPL", 150.0);
        run_job(&path, "evaluate");

        let id_text = id.to_string();
        let rearm_args = [
            "--config",
            path.to_str().unwrap(),
            "alerts",
            "rearm",
            &id_text,
        ];
        // `cli` asserts the first re-arm succeeds.
        cli(&path, &rearm_args[2..]);
        assert_eq!(db.scalar(&format!("SELECT count(*) FROM price_alerts WHERE id = {id} AND enabled = 1 AND triggered_at IS NULL")), 1);
        let again = binary().args(rearm_args).output().unwrap();
        assert!(!again.status.success(), "an armed alert is not re-armed");
        run_job(&path, "evaluate");

        db.execute("UPDATE price_alerts SET enabled = 1 WHERE id = $1", values![id]);
        run_job(&path, "evaluate");

        let ids: Vec<String> = receiver
            .received()
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 3);
        assert!(
            ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
            "{ids:?}"
        );
    }
}

on_every_engine! {
    fn jobs_cover_their_ticker_patterns_and_overlapping_jobs_notify_once(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let text = config_text(&db, &receiver.url, "0 0 0 1 1 *")
            + "\n[[jobs]]\nname = \"crypto\"\nkind = \"evaluate\"\nschedule = \"*/10 * * * * *\"\ntickers = [\"BTC-*\", \"ETH-*\"]\n"
            + "\n[[jobs]]\nname = \"bitcoin\"\nkind = \"evaluate\"\nschedule = \"*/10 * * * * *\"\ntickers = [\"BTC-USD\"]\n";
        let path = db.write_config(&text);
        for ticker in ["BTC-USD", "ETH-USD", "AAPL"] {
            db.add_alert(ticker, "above", 1.0);
            db.set_quote(ticker, 2.0);
        }
        let crypto = run_job(&path, "crypto");
        assert_eq!(
            (crypto["evaluated"].as_str(), crypto["triggered"].as_str()),
            ("2", "2")
        );
        assert_eq!(
            db.scalar("SELECT enabled FROM price_alerts WHERE ticker = 'AAPL'"),
            1
        );

        // Two overlapping jobs at once, as separate processes: one event per alert.
        for _ in 0..3 {
            db.add_alert("BTC-USD", "above", 1.0);
        }
        let children: Vec<_> = ["crypto", "bitcoin"]
            .iter()
            .map(|job| {
                binary()
                    .args(["--config", path.to_str().unwrap(), "run-job", job])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        assert_eq!(receiver.received().len(), 5);
    }
}

on_every_engine! {
    fn an_expired_alert_is_disabled_without_an_event(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let path = db.write_config(&config_text(&db, &receiver.url, "0 0 0 1 1 *"));
        let expired = db.add_alert("AAPL", "above", 1.0);
        let live = db.add_alert("AAPL", "above", 1.0);
        let no_quote = db.add_alert("ZZZ", "above", 1.0);
        let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
        let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
        db.execute(
            "UPDATE price_alerts SET expires_at = $1 WHERE id IN ($2, $3)",
            values![past, expired, no_quote],
        );
        db.execute(
            "UPDATE price_alerts SET expires_at = $1 WHERE id = $2",
            values![future, live],
        );
        db.set_quote("AAPL", 5.0);

        let summary = run_job(&path, "evaluate");
        assert_eq!(
            (summary["triggered"].as_str(), summary["expired"].as_str()),
            ("1", "2")
        );
        assert_eq!(receiver.received()[0].json()["data"]["alert_id"], live);
        let visible = db.scalar(&format!(
            "SELECT count(*) FROM price_alerts WHERE id IN ({expired}, {no_quote}) AND enabled = 0 AND expired_at IS NOT NULL AND triggered_at IS NULL"
        ));
        assert_eq!(visible, 2);
    }
}
