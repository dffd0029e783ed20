//! Jobs that react to changes (`on_change = true`): a write by another
//! process starts the job's tick at once, whatever its schedule; changes
//! during a tick make one more tick, never a queue; a change outside a
//! job's tickers does not wake it; a SIGKILL mid-tick loses nothing. On
//! every engine. (Losing the listening connection, and the server: in
//! `outage`. How fast: `cargo bench --bench latency`.)

use crate::common;

use std::time::{Duration, Instant};

use common::{
    Daemon, Db, Engine, Param, Receiver, change_runs, cli, counter, free_port, ok_runs,
    reacting_config, sample, scrape, wait_until,
};

on_every_engine! {
    fn a_write_wakes_only_the_jobs_that_cover_it_a_year_before_their_schedule(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let port = free_port();
        let path = db.write_config(&reacting_config(
            &db,
            &receiver.url,
            port,
            &[("inside", "IN-*"), ("outside", "OUT-*")],
        ));
        db.add_alert("IN-1", "above", 100.0);
        db.add_alert("OUT-1", "above", 100.0);
        // Operators see which jobs react (checked before the daemon binds its port).
        let checked = cli(&path, &["check-config"]);
        assert!(
            checked.contains("job \"inside\": evaluate IN-*; reacts to their changes at once"),
            "{checked}"
        );
        let daemon = Daemon::start(&path);
        // Each job first runs once for what changed before the daemon listened.
        wait_until("the first runs", || {
            ok_runs(port, "inside") == 1.0 && ok_runs(port, "outside") == 1.0
        });
        assert_eq!(change_runs(port, "inside"), 1.0);

        db.set_quote("IN-1", 150.0);
        let first = receiver.wait_for(1);
        assert_eq!(first[0].json()["data"]["ticker"], "IN-1");
        wait_until("the inside run to finish", || ok_runs(port, "inside") == 2.0);
        // The same change reached both jobs at once: only the one covering
        // IN-1 ran.
        assert_eq!(change_runs(port, "inside"), 2.0);
        assert_eq!(change_runs(port, "outside"), 1.0);

        db.set_quote("OUT-1", 150.0);
        let both = receiver.wait_for(2);
        assert_eq!(both[1].json()["data"]["ticker"], "OUT-1");
        wait_until("the outside run to finish", || ok_runs(port, "outside") == 2.0);
        assert_eq!(change_runs(port, "inside"), 2.0);
        assert_eq!(change_runs(port, "outside"), 2.0);
        // Both halves of each alert's way: its quote to its claim (by job),
        // its claim to the receiver's 2xx.
        for job in ["inside", "outside"] {
            assert_eq!(
                counter(port, &format!("quote_to_claim_seconds_count{{job_name=\"{job}\"}}")),
                1.0
            );
        }
        wait_until("both deliveries recorded", || {
            counter(port, "claim_to_delivery_seconds_count") == 2.0
        });
        // The schedule never fired; the daemon's own claims woke nobody.
        for job in ["inside", "outside"] {
            assert_eq!(
                counter(port, &format!("tick_causes_total{{job_name=\"{job}\",cause=\"schedule\"}}")),
                0.0
            );
        }
        assert!(daemon.log().contains("reacting=2"), "{}", daemon.log());
        // Operators see which jobs react.
        let status = cli(&path, &["status"]);
        let inside = status.lines().find(|line| line.starts_with("inside:")).unwrap();
        assert!(inside.contains("reacts to changes"), "{status}");
        let json: serde_json::Value =
            serde_json::from_str(&cli(&path, &["status", "--json"])).unwrap();
        assert_eq!(json["jobs"][0]["on_change"], true, "{json}");
    }
}

on_every_engine! {
    fn a_burst_of_a_thousand_writes_makes_far_fewer_ticks_and_loses_none(engine: Engine) {
        const WRITES: usize = 1000;
        let db = Db::on(engine);
        let receiver = Receiver::start_lean();
        let port = free_port();
        let path = db.write_config(&reacting_config(&db, &receiver.url, port, &[("burst", "*")]));
        let alerts: Vec<(String, &str, f64)> =
            (0..WRITES).map(|n| (format!("B{n}"), "above", 100.0)).collect();
        db.add_alerts(&alerts);
        let _daemon = Daemon::start_quiet(&path);
        wait_until("the first run", || ok_runs(port, "burst") == 1.0);

        // One transaction per write, on one connection, as fast as the
        // application can.
        let started = Instant::now();
        let now = chrono::Utc::now().to_rfc3339();
        let upsert = "INSERT INTO quotes (ticker, price, updated_at) VALUES ($1, 150.0, $2)
                      ON CONFLICT (ticker) DO UPDATE SET price = excluded.price,
                                                         updated_at = excluded.updated_at";
        match engine {
            Engine::Sqlite => {
                let app = db.app();
                // As a feed on a WAL database writes: no sync per commit.
                app.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
                for n in 0..WRITES {
                    app.execute(upsert, rusqlite::params![format!("B{n}"), now])
                        .unwrap();
                }
            }
            Engine::Postgresql => {
                let mut app = db.postgres_app();
                let statement = app.prepare(upsert).unwrap();
                for n in 0..WRITES {
                    app.execute(&statement, &[&format!("B{n}"), &now]).unwrap();
                }
            }
        }
        let writing = started.elapsed();
        receiver.wait_for_distinct(WRITES);
        wait_until("the last run to finish", || {
            change_runs(port, "burst") == ok_runs(port, "burst")
        });
        let ticks = change_runs(port, "burst") - 1.0;
        eprintln!("{WRITES} writes in {writing:?} made {ticks} ticks");
        assert!(ticks >= 1.0);
        assert!(ticks <= (WRITES / 10) as f64, "{ticks} ticks for {WRITES} writes");
        // Every write's alert, once.
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), WRITES as i64);
        assert_eq!(db.scalar("SELECT count(DISTINCT alert_id) FROM outbox"), WRITES as i64);
        assert_eq!(db.scalar("SELECT count(*) FROM price_alerts WHERE enabled = 1"), 0);
    }
}

on_every_engine! {
    fn a_sigkill_mid_reacting_tick_loses_nothing_and_claims_nothing_twice(engine: Engine) {
        const ALERTS: usize = 50_000;
        let db = Db::on(engine);
        let receiver = Receiver::start_lean();
        let port = free_port();
        let path = db.write_config(
            &reacting_config(&db, &receiver.url, port, &[("react", "*")])
                .replace("[evaluator]\n", "[evaluator]\nclaim_batch = 500\n"),
        );
        let alerts: Vec<(String, &str, f64)> = (0..ALERTS)
            .map(|n| (format!("K{}", n % 100), "above", (n % 90) as f64))
            .collect();
        db.add_alerts(&alerts);
        let mut daemon = Daemon::start_quiet(&path);
        wait_until("the first run", || ok_runs(port, "react") == 1.0);

        // One write moves every ticker: one reacting tick claims them all,
        // batch by batch. Killed once its first claims committed.
        match engine {
            Engine::Sqlite => {
                let mut app = db.app();
                let transaction = app.transaction().unwrap();
                for n in 0..100 {
                    transaction
                        .execute(
                            "INSERT INTO quotes (ticker, price, updated_at) VALUES (?1, 100.0, ?2)",
                            rusqlite::params![format!("K{n}"), chrono::Utc::now().to_rfc3339()],
                        )
                        .unwrap();
                }
                transaction.commit().unwrap();
            }
            Engine::Postgresql => {
                db.execute(
                    "INSERT INTO quotes (ticker, price, updated_at)
                     SELECT 'K' || n, 100.0, $1 FROM generate_series(0, 99) AS n",
                    values![chrono::Utc::now().to_rfc3339()],
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while db.scalar("SELECT count(*) FROM outbox") == 0 {
            assert!(Instant::now() < deadline, "nothing was claimed");
            std::thread::sleep(Duration::from_millis(1));
        }
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        let claimed = db.scalar("SELECT count(*) FROM outbox");
        eprintln!("killed with {claimed} of {ALERTS} claimed");
        assert!(claimed < ALERTS as i64, "the tick had ended: kill it earlier");

        // Restarted: it first runs for what changed before it listened.
        let _daemon = Daemon::start_quiet(&path);
        receiver.wait_for_distinct(ALERTS);
        wait_until("every alert delivered", || {
            db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == ALERTS as i64
        });
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), ALERTS as i64);
        assert_eq!(db.scalar("SELECT count(DISTINCT alert_id) FROM outbox"), ALERTS as i64);
        assert_eq!(db.scalar("SELECT count(*) FROM price_alerts WHERE enabled = 1"), 0);
    }
}

on_every_engine! {
    fn a_feeds_ticks_that_claim_nothing_write_their_progress_within_a_second(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let port = free_port();
        let path = db.write_config(&reacting_config(&db, &receiver.url, port, &[("feed", "*")]));
        const TICKERS: [&str; 3] = ["F1", "F2", "F3"];
        for ticker in TICKERS {
            db.add_alert(ticker, "above", 1000.0);
        }
        let crossing = db.add_alert("F2", "crossing_up", 110.0);
        let mut daemon = Daemon::start_quiet(&path);
        wait_until("the first run", || ok_runs(port, "feed") == 1.0);
        let settled = || change_runs(port, "feed") == ok_runs(port, "feed");
        let mut last = [0.0; 3];
        let feed = |rounds: usize, last: &mut [f64; 3]| {
            for round in 0..rounds {
                for (at, ticker) in TICKERS.iter().enumerate() {
                    last[at] = 100.0 + ((round * 7 + at) % 10) as f64 * 0.1;
                    db.set_quote(ticker, last[at]);
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        };

        // A feed's small steps reach nothing: the runs carry their observed
        // prices. A crossing from a carried price fires, once.
        feed(20, &mut last);
        db.set_quote("F2", 115.0);
        last[1] = 115.0;
        let event = receiver.wait_for(1);
        assert_eq!(event[0].json()["data"]["alert_id"], crossing);

        // More small steps, then none: what the last runs carried is
        // written within a second, though no change comes to run the job
        // (unless a run under load came more than a second after the
        // first that carried: then that run wrote it).
        feed(20, &mut last);
        wait_until("the feed's runs", settled);
        let observed = |last: [f64; 3]| {
            TICKERS
                .iter()
                .zip(last)
                .all(|(ticker, price)| {
                    db.rows(&format!("SELECT price FROM observations WHERE ticker = '{ticker}'"))
                        .first()
                        .is_some_and(|row| matches!(row[0], Param::Real(seen) if seen == price))
                })
        };
        eprintln!("carried at the feed's end: {}", !observed(last));
        wait_until("the observed prices written", || observed(last));
        if engine == Engine::Sqlite {
            // On PostgreSQL another test's transaction may keep the closed
            // horizon, which the watermark stops at, below the last change.
            wait_until("the watermark written", || {
                db.scalar("SELECT change_seq FROM job_watermarks")
                    == db.scalar("SELECT max(change_seq) FROM change_log")
            });
        }
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), 1);

        // A stop writes what the runs carried: here, within the second
        // it could have waited.
        feed(10, &mut last);
        // Every change heard (the backstop looks every 250 ms), and judged.
        wait_until("the last steps' runs", settled);
        std::thread::sleep(Duration::from_millis(300));
        wait_until("the last steps' runs", settled);
        daemon.signal("TERM");
        assert_eq!(daemon.wait_exit(), Some(0));
        assert!(
            observed(last),
            "what the runs carried was lost at the stop: {:?}\n{}",
            db.rows("SELECT ticker, price FROM observations"),
            daemon.log()
        );
    }
}

#[test]
fn a_flood_of_malformed_rows_on_a_moving_ticker_is_named_twenty_times_a_minute() {
    const MALFORMED: usize = 1000;
    let db = Db::new();
    let receiver = Receiver::start_lean();
    let port = free_port();
    let path = db.write_config(&reacting_config(
        &db,
        &receiver.url,
        port,
        &[("flood", "*")],
    ));
    // Alerts that every move of AAPL reaches, each with a cooldown that is
    // not a duration: malformed, read again at every move.
    let alerts: Vec<(String, &str, f64)> = (0..MALFORMED)
        .map(|_| ("AAPL".to_owned(), "above", 1.0))
        .collect();
    db.add_alerts(&alerts);
    db.execute("UPDATE price_alerts SET cooldown = 'every so often'", &[]);
    db.set_quote("AAPL", 100.0);
    let daemon = Daemon::start_quiet(&path);
    wait_until("the first run", || ok_runs(port, "flood") == 1.0);
    for step in 1..=40 {
        db.set_quote("AAPL", 100.0 + step as f64);
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until("the last run to finish", || {
        change_runs(port, "flood") == ok_runs(port, "flood")
    });
    let runs = ok_runs(port, "flood");
    let skipped = counter(port, "alerts_skipped_total{reason=\"malformed_alerts\"}");
    let named = daemon.log().matches("skipping a malformed alert").count();
    eprintln!("{runs} runs skipped {skipped} malformed rows and named {named}");
    assert!(runs >= 10.0, "{runs} runs");
    // Every read counted them all; the first named 20. A run may read
    // none: the run before it judged the quote as it was when it read it,
    // already the one this run's change wrote (the window's end is read
    // first), so this one finds no move from it.
    let reads = skipped / MALFORMED as f64;
    assert!(reads.fract() == 0.0 && reads >= 10.0, "{skipped}");
    assert_eq!(named, 20, "{}", daemon.log());
}

on_every_engine! {
    fn a_reacting_jobs_lag_grows_while_its_run_is_held_and_its_pace_shows(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start_lean();
        let port = free_port();
        let path = db.write_config(&reacting_config(&db, &receiver.url, port, &[("pace", "P-*")]));
        // Levels a held change crosses, one more at each try.
        let levels: Vec<(String, &str, f64)> = (0..100)
            .map(|n| ("P-1".to_owned(), "above", 1000.0 + f64::from(n)))
            .collect();
        db.add_alerts(&levels);
        let _daemon = Daemon::start_quiet(&path);
        wait_until("the first run", || ok_runs(port, "pace") == 1.0);
        let pace = |series: &str| {
            let (_, body) = scrape(port, "/metrics");
            sample(&body, &format!("price_alertd_reacting_{series}{{job_name=\"pace\"}}"))
                .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        };
        assert_eq!(pace("lag_seconds"), 0.0, "nothing waits");
        for step in 0..5 {
            db.set_quote("P-1", 100.0 + f64::from(step));
            wait_until("the run for it", || ok_runs(port, "pace") == 2.0 + f64::from(step));
        }
        assert!(pace("runs_per_second") > 0.0);
        assert_eq!(pace("lag_seconds"), 0.0, "every change judged");
        // Those runs claimed nothing, and carried their progress: it is
        // written within a second (the job's watermark row, which the
        // hold below needs).
        wait_until("the runs' progress written", || {
            db.rows("SELECT change_seq FROM job_watermarks").len() == 1
                && (engine == Engine::Postgresql
                    || db.scalar("SELECT change_seq FROM job_watermarks")
                        == db.scalar("SELECT max(change_seq) FROM change_log"))
        });

        // A change whose run cannot end: it crosses a level, so the run
        // must write (a run that claims nothing may carry its progress
        // unwritten; one that claims writes its claimed ticker's observed
        // price at once), and the application holds what the run's writes
        // need (SQLite's write lock, taken right after the change commits;
        // on PostgreSQL, the ticker's row of observed prices).
        let mut hold = Instant::now();
        let mut runs = 7.0;
        match engine {
            Engine::Sqlite => {
                let app = db.app();
                // The run may take the write lock between the change's
                // commit and the hold, and end: then the test changes the
                // quote again, until a hold comes first.
                for price in (0..).map(|tries| 1000.5 + f64::from(tries)) {
                    hold = Instant::now();
                    app.execute_batch(&format!(
                        "BEGIN IMMEDIATE;
                         UPDATE quotes SET price = {price}, updated_at = '{}' WHERE ticker = 'P-1';
                         COMMIT;",
                        chrono::Utc::now().to_rfc3339()
                    ))
                    .unwrap();
                    app.execute_batch("BEGIN IMMEDIATE").unwrap();
                    let judged: bool = app
                        .query_row(
                            "SELECT NOT EXISTS (SELECT 1 FROM change_log WHERE change_seq >
                                    (SELECT max(change_seq) FROM job_watermarks))",
                            [],
                            |row| row.get(0),
                        )
                        .unwrap();
                    if !judged {
                        break;
                    }
                    app.execute_batch("COMMIT").unwrap();
                    runs += 1.0;
                }
                let lag = wait_for_lag(&pace);
                assert!(lag <= hold.elapsed().as_secs_f64(), "{lag}");
                app.execute_batch("COMMIT").unwrap();
            }
            Engine::Postgresql => {
                // A connection of its own: the helpers write through the
                // application's.
                let mut app = postgres::Client::connect(
                    &db.cluster().url(db.database_name()),
                    postgres::NoTls,
                )
                .unwrap();
                let mut holding = app.transaction().unwrap();
                let observed = holding
                    .execute("SELECT * FROM observations WHERE ticker = 'P-1' FOR UPDATE", &[])
                    .unwrap();
                assert_eq!(observed, 1, "P-1's observed price is written");
                db.set_quote("P-1", 1000.5);
                let lag = wait_for_lag(&pace);
                assert!(lag <= hold.elapsed().as_secs_f64(), "{lag}");
                holding.commit().unwrap();
            }
        }
        // Released: the run ends, and nothing waits.
        wait_until("the held run to end", || ok_runs(port, "pace") == runs);
        assert_eq!(pace("lag_seconds"), 0.0);
        let status = cli(&path, &["status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert!(json["jobs"][0]["detail"]["runs_per_second"].as_f64().is_some(), "{json}");
        assert!(json["jobs"][0]["detail"]["lag_ms"].as_f64().is_some(), "{json}");
    }
}

/// Waits until the held run's lag passes a second, and returns it.
fn wait_for_lag(pace: &dyn Fn(&str) -> f64) -> f64 {
    let mut lag = 0.0;
    wait_until("the lag to grow past a second", || {
        lag = pace("lag_seconds");
        lag > 1.0
    });
    lag
}
