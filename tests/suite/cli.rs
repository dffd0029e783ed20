//! The command line as operators use it: check-config, run-job, and the daemon
//! under signals, each as a real process on a real database.

use crate::common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Daemon, Db, Receiver, binary, config_text, summary, wait_until};

#[test]
fn check_config_lists_each_job_with_its_next_three_fire_times() {
    let db = Db::new();
    let path = db.write_config(&config_text(
        &db.path,
        "http://127.0.0.1:9/events",
        "0 30 9 * * *",
    ));
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("job \"evaluate\""), "{stdout}");
    let times: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("next "))
        .collect();
    assert_eq!(times.len(), 3, "{stdout}");
    // In UTC, once: the job's own zone is UTC too.
    assert!(
        times.iter().all(|time| time.ends_with("T09:30:00Z")),
        "{stdout}"
    );
}

#[test]
fn a_broken_toml_exits_78_naming_the_line() {
    let db = Db::new();
    let text = config_text(&db.path, "http://127.0.0.1:9/events", "*/10 * * * * *")
        .replace("threads = 10", "threads = 10\nthreads_typo = 3");
    let path = db.write_config(&text);
    for command in ["check-config", "run"] {
        let output = binary()
            .args(["--config", path.to_str().unwrap(), command])
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(78), "{command}: {stderr}");
        assert!(
            stderr.contains(":7:1: evaluator.threads_typo: unknown field"),
            "{command}: {stderr}"
        );
    }
    let path = db.write_config("[webhook\nurl = 1\n");
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8(output.stderr).unwrap().contains(":1:"));
}

#[test]
fn help_documents_each_command() {
    let output = binary().arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for command in ["run", "check-config", "run-job", "--config"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn run_job_runs_once_delivers_and_summarises() {
    let db = Db::new();
    let receiver = Receiver::start();
    let path = db.write_config(&config_text(&db.path, &receiver.url, "0 0 0 1 1 *"));
    db.add_alert("AAPL", "above", 100.0);
    db.add_alert("AAPL", "above", 500.0);
    db.set_quote("AAPL", 150.0);

    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    let pairs = summary(&stdout);
    assert_eq!(pairs["evaluated"], "2");
    assert_eq!(pairs["triggered"], "1");
    assert_eq!(pairs["delivered"], "1");
    assert_eq!(pairs["pending"], "0");
    assert_eq!(receiver.received().len(), 1);

    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "nonesuch"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn run_job_exits_non_zero_when_the_job_fails() {
    let db = Db::new();
    let path = db.write_config(&config_text(
        &db.path,
        "http://127.0.0.1:9/events",
        "0 0 0 1 1 *",
    ));
    // The application refuses the claim of a triggered alert.
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    db.app()
        .execute_batch(
            "CREATE TRIGGER app_refuses BEFORE UPDATE OF enabled ON price_alerts
             WHEN NEW.enabled = 0 BEGIN SELECT RAISE(ABORT, 'the application refuses'); END;",
        )
        .unwrap();
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!output.status.success(), "{stdout}");
    assert_eq!(summary(&stdout)["result"], "failed");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the application refuses"),
        "{stdout}"
    );
}

on_every_engine! {
    fn three_run_job_processes_at_once_deliver_each_alert_exactly_once(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let path = db.write_config(&config_text(&db, &receiver.url, "0 0 0 1 1 *"));
        let tickers = ["AAPL", "MSFT", "TSLA"];
        for ticker in tickers {
            db.set_quote(ticker, 100.0);
        }
        let mut matching = Vec::new();
        for n in 0..600 {
            let target = if n % 3 == 0 { 50.0 } else { 150.0 };
            let id = db.add_alert(tickers[n % 3], "above", target);
            if n % 3 == 0 {
                matching.push(id);
            }
        }

        let children: Vec<_> = (0..3)
            .map(|_| {
                binary()
                    .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut triggered = 0;
        for child in children {
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8(output.stdout).unwrap();
            assert!(output.status.success(), "{stdout}");
            triggered += summary(&stdout)["triggered"].parse::<usize>().unwrap();
        }
        assert_eq!(
            triggered,
            matching.len(),
            "claims across the three processes"
        );

        let received = receiver.received();
        let mut per_alert: HashMap<i64, usize> = HashMap::new();
        for request in &received {
            *per_alert
                .entry(request.json()["data"]["alert_id"].as_i64().unwrap())
                .or_default() += 1;
        }
        let twice: Vec<_> = per_alert.iter().filter(|(_, count)| **count > 1).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
        let mut delivered: Vec<i64> = per_alert.keys().copied().collect();
        delivered.sort();
        assert_eq!(delivered, matching);
    }
}

#[test]
fn sighup_with_a_broken_file_keeps_the_old_jobs_running() {
    let db = Db::new();
    let receiver = Receiver::start();
    let good = config_text(&db.path, &receiver.url, "* * * * * *");
    let path = db.write_config(&good);
    db.set_quote("AAPL", 100.0);
    let daemon = Daemon::start(&path);

    db.add_alert("AAPL", "above", 10.0);
    receiver.wait_for(1);

    std::fs::write(&path, good.replace("[[jobs]]", "[[jobs]]\nbogus = true")).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("reload refused");
    assert!(
        daemon.log().contains("jobs[0].bogus: unknown field"),
        "{}",
        daemon.log()
    );

    db.add_alert("AAPL", "above", 20.0);
    receiver.wait_for(2);

    // A good file is taken: the new schedule never fires, so nothing more arrives.
    std::fs::write(&path, good.replace("* * * * * *", "0 0 0 1 1 *")).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded");
}

#[test]
fn sigterm_exits_0_with_nothing_lost() {
    let db = Db::new();
    let receiver = Receiver::start();
    // The receiver hangs on every request, so deliveries are in flight at the stop.
    receiver.set_default(Some(common::Reply::hang(Duration::from_secs(60))));
    let text = config_text(&db.path, &receiver.url, "* * * * * *")
        .replace("drain_timeout = \"10s\"", "drain_timeout = \"1s\"")
        .replace("timeout = \"5s\"", "timeout = \"120s\"");
    let path = db.write_config(&text);
    db.set_quote("AAPL", 100.0);
    for n in 0..50 {
        db.add_alert("AAPL", "above", n as f64);
    }
    let mut daemon = Daemon::start(&path);
    wait_until("deliveries in flight", || receiver.arrivals().len() >= 16);

    let stopping = Instant::now();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), Some(0));
    let stopped_in = stopping.elapsed();
    assert!(
        stopped_in < Duration::from_secs(30),
        "the stop took {stopped_in:?}, not about the 1s drain"
    );
    assert!(
        daemon.log().contains("price-alertd stopped"),
        "{}",
        daemon.log()
    );
    // Nothing lost and nothing marked delivered that was not: every claimed
    // alert has its event, still pending, unleased, its attempt not counted.
    assert_eq!(
        db.scalar("SELECT count(*) FROM price_alerts WHERE enabled = 0"),
        50
    );
    assert_eq!(db.scalar("SELECT count(*) FROM outbox WHERE state = 'pending' AND lease_owner IS NULL AND attempts = 0"), 50);
    assert!(receiver.received().is_empty());
}

#[test]
fn sigterm_delivers_what_is_pending_before_exiting() {
    let db = Db::new();
    let receiver = Receiver::start();
    let path = db.write_config(&config_text(&db.path, &receiver.url, "* * * * * *"));
    let mut daemon = Daemon::start(&path);
    db.set_quote("AAPL", 100.0);
    for n in 0..30 {
        db.add_alert("AAPL", "above", n as f64);
    }
    wait_until("the alerts to be claimed", || {
        db.scalar("SELECT count(*) FROM outbox") == 30
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), Some(0));
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'"),
        30
    );
    assert_eq!(receiver.received().len(), 30);
}

#[test]
fn a_tick_due_while_the_previous_run_is_going_is_skipped_not_run_alongside() {
    let db = Db::new();
    let receiver = Receiver::start();
    let database = format!("path = \"{}\"", db.path.display());
    let text = config_text(&db.path, &receiver.url, "* * * * * *")
        .replace(&database, &format!("{database}\nbusy_timeout = \"120s\""));
    let path = db.write_config(&text);
    db.set_quote("AAPL", 100.0);
    let daemon = Daemon::start(&path);

    // Commit a matching alert and at once take SQLite's write lock, as a busy
    // application would: the next run reads the alert, then blocks in its
    // claim until the lock is released, while further ticks come due.
    let app = db.app();
    let mut blocked = false;
    for _ in 0..5 {
        app.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('AAPL', 'above', 10, 'now');
             COMMIT;
             BEGIN IMMEDIATE;",
        )
        .unwrap();
        let id = app.last_insert_rowid();
        wait_until("a skipped tick, or the claim", || {
            daemon
                .log()
                .contains("tick skipped: the previous run of this job is still going")
                || db.scalar(&format!("SELECT enabled FROM price_alerts WHERE id = {id}")) == 0
        });
        blocked = daemon.log().contains("tick skipped");
        if blocked {
            break;
        }
        // The daemon claimed between our COMMIT and BEGIN: try again.
        app.execute_batch("COMMIT").unwrap();
    }
    assert!(blocked, "no run ever blocked on the write lock");
    app.execute_batch("COMMIT").unwrap();
    let expected = db.scalar("SELECT count(*) FROM price_alerts") as usize;
    receiver.wait_for(expected);
    daemon.wait_for_log("tick finished");
    assert_eq!(db.scalar("SELECT count(*) FROM outbox"), expected as i64);
    assert_eq!(
        db.scalar("SELECT count(*) FROM price_alerts WHERE enabled = 1"),
        0
    );
}

#[test]
fn a_webhook_down_at_start_gets_the_events_once_it_is_up() {
    let db = Db::new();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/events");
    let path = db.write_config(&config_text(&db.path, &url, "* * * * * *"));
    db.set_quote("AAPL", 100.0);
    for n in 0..5 {
        db.add_alert("AAPL", "above", n as f64);
    }
    let daemon = Daemon::start(&path);
    wait_until("the alerts to be claimed", || {
        db.scalar("SELECT count(*) FROM outbox") == 5
    });
    daemon.wait_for_log("deliveries failed; they will be retried");

    let receiver = Receiver::start_on(port);
    let received = receiver.wait_for(5);
    assert_eq!(received.len(), 5);
    wait_until("the outbox to empty", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'pending'") == 0
    });
}

#[test]
fn a_hanging_receiver_never_delays_evaluation_ticks() {
    let db = Db::new();
    let receiver = Receiver::start();
    receiver.set_default(Some(common::Reply::hang(Duration::from_secs(60))));
    let text = config_text(&db.path, &receiver.url, "* * * * * *")
        .replace("timeout = \"5s\"", "timeout = \"120s\"");
    let path = db.write_config(&text);
    db.set_quote("AAPL", 100.0);
    for n in 0..40 {
        db.add_alert("AAPL", "above", n as f64);
    }
    let daemon = Daemon::start(&path);
    // Every delivery slot is now stuck on the receiver for a minute...
    wait_until("deliveries in flight", || receiver.arrivals().len() >= 16);
    // ...and new alerts are still claimed tick after tick.
    for round in 1..=3 {
        db.add_alert("AAPL", "above", 1.0);
        wait_until(&format!("round {round} to be claimed"), || {
            db.scalar("SELECT count(*) FROM outbox") == 40 + round
        });
    }
    assert!(receiver.received().is_empty());
    drop(daemon);
}

/// Runs the CLI; returns its exit code, stdout and stderr.
fn run(command: &mut std::process::Command) -> (Option<i32>, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_fails_on_a_database_run_could_not_open() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let check = |database: &std::path::Path, user: Option<common::User>| {
        let config = dir.path().join("check.toml");
        std::fs::write(
            &config,
            common::config_text(database, "http://127.0.0.1:9/events", "0 * * * * *"),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut command = match user {
            Some(user) => user.command(common::binary_path()),
            None => binary(),
        };
        run(command.args(["--config", config.to_str().unwrap(), "check-config"]))
    };

    // Not a database, a directory, a file this user cannot write, a folder
    // where it cannot be created: each refused as `run` would, with the
    // sysexits code: 65 bad data, 74 I/O, 73 cannot create.
    let text = dir.path().join("notes.db");
    std::fs::write(
        &text,
        "these are not the pages you are looking for ".repeat(200),
    )
    .unwrap();
    let folder = dir.path().join("folder.db");
    std::fs::create_dir(&folder).unwrap();
    let db = Db::new();
    std::fs::set_permissions(db.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let nobody = Some(common::User::NOBODY);
    for (database, user, expected, exit) in [
        (text.as_path(), None, "is not an SQLite database", 65),
        (folder.as_path(), None, "is not a file", 65),
        (db.path.as_path(), nobody, "cannot be written", 74),
        (&dir.path().join("new.db"), nobody, "cannot be created", 73),
        // Neither creates a folder: a mistyped path, not one to make.
        (
            &dir.path().join("sub/new.db"),
            None,
            "sub does not exist",
            73,
        ),
    ] {
        let (code, stdout, stderr) = check(database, user);
        assert_eq!(code, Some(exit), "{database:?}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{database:?}: {stderr}");
    }
    // `run` answers a file that is not a database with the same code.
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        common::config_text(&text, "http://127.0.0.1:9/events", "0 * * * * *"),
    )
    .unwrap();
    let (code, _, stderr) = run(binary().args(["--config", config.to_str().unwrap(), "run"]));
    assert_eq!(code, Some(65), "{stderr}");
    // The same database, writable, and a missing one that can be created.
    for database in [db.path.clone(), dir.path().join("new.db")] {
        let (code, stdout, stderr) = check(&database, None);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("database  "), "{stdout}");
    }
    assert!(
        !dir.path().join("new.db").exists(),
        "check-config created the database"
    );
    // Nor does `run`.
    std::fs::write(
        &config,
        common::config_text(
            &dir.path().join("sub/new.db"),
            "http://127.0.0.1:9/events",
            "0 * * * * *",
        ),
    )
    .unwrap();
    let (code, _, stderr) = run(binary().args(["--config", config.to_str().unwrap(), "run"]));
    assert_eq!(code, Some(73), "{stderr}");
    assert!(stderr.contains("sub does not exist"), "{stderr}");
    assert!(
        !dir.path().join("sub").exists(),
        "run created the database's folder"
    );
}

#[test]
fn read_only_commands_never_create_or_migrate_a_database_and_say_which_they_opened() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let config = dir.path().join("price-alertd.toml");
    std::fs::write(
        &config,
        common::config_text(&missing, "http://127.0.0.1:9/events", "0 * * * * *"),
    )
    .unwrap();
    let read_only: [&[&str]; 5] = [
        &["status"],
        &["status", "--json"],
        &["outbox", "list"],
        &["alerts", "list"],
        &["quotes", "list"],
    ];
    for args in read_only {
        let (code, _, stderr) = run(binary()
            .args(["--config", config.to_str().unwrap()])
            .args(args));
        assert_eq!(code, Some(66), "{args:?}: EX_NOINPUT");
        assert!(
            stderr.contains(&format!("there is no database at {}", missing.display())),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(!missing.exists(), "{args:?} created the database");
    }
    // Writing commands do not create one either.
    let (code, _, stderr) = run(binary()
        .args(["--config", config.to_str().unwrap()])
        .args(["alerts", "rearm", "1"]));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("there is no database at"), "{stderr}");
    assert!(!missing.exists());

    // An application's database the daemon never migrated stays as it is.
    let app = rusqlite::Connection::open(&missing).unwrap();
    app.execute_batch(
        "CREATE TABLE price_alerts (id INTEGER PRIMARY KEY, ticker TEXT NOT NULL, condition TEXT NOT NULL,
             target_price REAL NOT NULL, enabled INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL);",
    )
    .unwrap();
    for args in read_only {
        let (code, _, stderr) = run(binary()
            .args(["--config", config.to_str().unwrap()])
            .args(args));
        assert_ne!(code, Some(0), "{args:?}");
        assert!(stderr.contains("schema version 0"), "{args:?}: {stderr}");
    }
    let version: i64 = app
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 0, "a read-only command migrated the database");
}

/// Every `*_at` field of a JSON value is null or an RFC 3339 time.
fn times_are_rfc3339(value: &serde_json::Value, found: &mut usize) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                if key.ends_with("_at") && !field.is_null() {
                    let text = field.as_str().unwrap_or_else(|| panic!("{key}: {field}"));
                    assert!(
                        chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                        "{key} = {text:?} is not RFC 3339"
                    );
                    *found += 1;
                }
                times_are_rfc3339(field, found);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                times_are_rfc3339(item, found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_json_output_gives_rfc3339_times_and_status_lists_jobs_that_never_ran() {
    let db = Db::new();
    let receiver = common::Receiver::start();
    // Three attempts, three failures: a dead letter to list.
    receiver.fail_with(&[503, 503, 503]);
    let text = common::config_text(&db.path, &receiver.url, "0 0 0 1 1 *")
        + "\n[[jobs]]\nname = \"purge\"\nkind = \"purge\"\nschedule = \"@daily\"\nkeep = \"7d\"\n";
    let path = db.write_config(&text);
    // The application writes SQLite's own time format.
    db.app()
        .execute_batch(
            "INSERT INTO quotes (ticker, price, updated_at) VALUES ('AAPL', 150, datetime('now'));
             INSERT INTO price_alerts (ticker, condition, target_price, created_at, expires_at)
                 VALUES ('AAPL', 'above', 100, datetime('now'), '2030-01-01 00:00:00'),
                        ('AAPL', 'above', 900, datetime('now'), '2030-01-01 00:00:00');",
        )
        .unwrap();
    common::cli(&path, &["run-job", "evaluate"]);

    let mut found = 0;
    for args in [
        &["status", "--json"][..],
        &["alerts", "list", "--json"],
        &["quotes", "list", "--json"],
        &["outbox", "list", "--json"],
    ] {
        for line in common::cli(&path, args).lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            times_are_rfc3339(&value, &mut found);
        }
    }
    // started_at, last_success_at; triggered_at, expires_at x2; updated_at;
    // the dead letter's created_at. (No daemon runs: no next run.)
    assert_eq!(found, 7);

    let status: serde_json::Value =
        serde_json::from_str(&common::cli(&path, &["status", "--json"])).unwrap();
    let jobs = status["jobs"].as_array().unwrap();
    let purge = jobs.iter().find(|job| job["job"] == "purge").unwrap();
    assert_eq!(purge["result"], "never", "{status}");
    assert!(purge["started_at"].is_null());
    assert!(purge["next_run_at"].is_null(), "{status}");
    let text = common::cli(&path, &["status"]);
    assert!(text.contains("never"), "{text}");
    assert!(text.contains("(no daemon running)"), "{text}");

    // While a daemon runs, the next fire time.
    let _daemon = common::Daemon::start_quiet(&path);
    let status: serde_json::Value =
        serde_json::from_str(&common::cli(&path, &["status", "--json"])).unwrap();
    let purge = status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["job"] == "purge")
        .unwrap();
    let next = purge["next_run_at"].as_str().unwrap();
    assert!(next.ends_with("T00:00:00.000Z"), "{next}");
    assert_eq!(status["members"][0]["alive"], true, "{status}");
}

/// `check-config` and `run` with the config at `path`, whose address
/// `key` another program holds: each exits EX_UNAVAILABLE naming `key`.
/// What `check-config` reported.
fn refused_an_address(path: &std::path::Path, key: &str) -> String {
    let mut report = String::new();
    for command in [&["check-config"][..], &["run"]] {
        let (code, stdout, stderr) = run(binary()
            .args(["--config", path.to_str().unwrap()])
            .args(command));
        assert_eq!(code, Some(69), "{command:?}: EX_UNAVAILABLE: {stderr}");
        assert!(stderr.contains(key), "{stderr}");
        if command == ["check-config"] {
            report = stdout;
        }
    }
    report
}

#[test]
fn check_config_names_a_missing_file_and_a_taken_metrics_address() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let (code, _, stderr) =
        run(binary().args(["--config", missing.to_str().unwrap(), "check-config"]));
    assert_eq!(code, Some(78));
    assert!(stderr.contains("there is no such file"), "{stderr}");
    assert!(!stderr.contains("0:0"), "{stderr}");

    // Another program holds the metrics port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let db = Db::new();
    let path = db.write_config(
        &(common::config_text(&db.path, "http://127.0.0.1:9/events", "0 * * * * *")
            + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")),
    );
    let report = refused_an_address(&path, "metrics.listen");
    // The report still, with what run would stop at.
    assert!(
        report.contains("valid, but run would fail")
            && report.contains("run cannot listen there")
            && report.contains("fire times after"),
        "{report}"
    );
    // A reload does not apply [metrics]: the running daemon holds the port.
    let (code, stdout, stderr) = run(binary().args([
        "--config",
        path.to_str().unwrap(),
        "check-config",
        "--reload",
    ]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    drop(taken);
    let (code, _, _) = run(binary().args(["--config", path.to_str().unwrap(), "check-config"]));
    assert_eq!(code, Some(0));
}

/// README's recipe, `check-config && systemctl restart price-alertd`, on a
/// host where the daemon runs and serves its metrics: check-config knows its
/// listener (a restart hands the address over), so the restart happens.
#[test]
fn check_config_is_safe_on_a_running_host_and_the_restart_recipe_restarts() {
    let db = Db::new();
    let port = common::free_port();
    let path = db.write_config(
        &(common::config_text(&db.path, "http://127.0.0.1:9/events", "0 * * * * *")
            + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")),
    );
    let mut daemon = Daemon::start_quiet(&path);
    let (code, stdout, stderr) =
        run(binary().args(["--config", path.to_str().unwrap(), "check-config"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "metrics   http://127.0.0.1:{port}/metrics (served by the running price-alertd)"
        )),
        "{stdout}"
    );
    // `&& restart`: the checked file starts where the old daemon stopped.
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), Some(0));
    let _restarted = Daemon::start_quiet(&path);
    assert_eq!(common::scrape(port, "/healthz"), (200, "ok\n".to_owned()));
}

/// The stream origin's address, as the metrics': another program holding
/// it stops `run` and `check-config` (EX_UNAVAILABLE), and the running
/// daemon's own is no failure (a restart hands it over).
#[test]
fn check_config_checks_the_stream_address_as_run_binds_it() {
    let db = Db::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = db.write_config(
        &(common::config_text(&db.path, "http://127.0.0.1:9/publish/", "0 * * * * *")
            .replace("[webhook]\n", "[webhook]\nformat = \"pushpin\"\n")
            + &format!(
                "\n[stream]\nlisten = \"127.0.0.1:{port}\"\nauth_url = \"http://127.0.0.1:9/auth\"\n"
            )),
    );
    let report = refused_an_address(&path, "stream.listen");
    assert!(
        report.contains(&format!(
            "stream    http://127.0.0.1:{port}/ for Pushpin (run cannot listen there: see below)"
        )),
        "{report}"
    );
    drop(taken);
    let _daemon = Daemon::start_quiet(&path);
    let (code, stdout, stderr) =
        run(binary().args(["--config", path.to_str().unwrap(), "check-config"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "stream    http://127.0.0.1:{port}/ for Pushpin (served by the running price-alertd); who a browser is: GET http://127.0.0.1:9/auth"
        )),
        "{stdout}"
    );
}

#[test]
fn the_shipped_man_pages_and_completions_match_the_cli() {
    let fresh = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(binary().arg("generate").arg(fresh.path()));
    assert_eq!(code, Some(0), "{stderr}");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/generated");
    let listing = |root: &std::path::Path| -> Vec<String> {
        let mut files = Vec::new();
        for folder in ["man", "shell"] {
            for entry in std::fs::read_dir(root.join(folder)).unwrap() {
                files.push(format!(
                    "{folder}/{}",
                    entry.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        files.sort();
        files
    };
    let files = listing(fresh.path());
    assert_eq!(
        listing(&shipped),
        files,
        "etc/generated is out of date: run `cargo run -- generate etc/generated`"
    );
    assert!(files.len() >= 10, "{files:?}");
    for file in &files {
        assert_eq!(
            std::fs::read_to_string(shipped.join(file)).unwrap(),
            std::fs::read_to_string(fresh.path().join(file)).unwrap(),
            "etc/generated/{file} is out of date: run `cargo run -- generate etc/generated`"
        );
    }
    // The page documents the commands, with the exit codes in check-config's.
    let page = std::fs::read_to_string(shipped.join("man/price-alertd-check-config.1")).unwrap();
    assert!(page.contains("reload"), "{page}");
}

#[test]
fn a_command_piped_into_head_stops_quietly() {
    // More than a pipe holds (64 KiB), so the command is still writing when
    // `head` has gone.
    let db = Db::new();
    db.app()
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO outbox (event_id, alert_id, body, created_at, state, next_attempt_at, last_error)
             SELECT 'pa_x_' || i, i, '{}', '2026-01-01T00:00:00.000Z', 'dead', 0,
                    'the webhook answered 400 Bad Request' FROM n;",
        )
        .unwrap();
    let path = db.write_config(&common::config_text(
        &db.path,
        "http://127.0.0.1:9/events",
        "0 * * * * *",
    ));
    let errors = db.dir.path().join("stderr");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --config '{}' outbox list --dead --limit 5000 2>'{}' | head -n 1",
            common::binary_path().display(),
            path.display(),
            errors.display()
        ))
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("EVENT ID"));
    let stderr = std::fs::read_to_string(&errors).unwrap();
    assert_eq!(stderr, "", "a reader that leaves is no error");
}

/// Each column of a listing is as wide as its widest cell: every value
/// starts under its heading.
#[test]
fn listings_line_their_columns_up_under_their_headings() {
    let db = Db::new();
    let receiver = common::Receiver::start();
    receiver.fail_with(&[503; 16]);
    let path = db.write_config(&common::config_text(&db.path, &receiver.url, "0 0 0 1 1 *"));
    db.add_alert("AAPL", "above", 1.0);
    db.add_alert("A-VERY-LONG-TICKER-NAME", "crossing_down", 1000.0);
    db.set_quote("AAPL", 2.0);
    common::cli(&path, &["run-job", "evaluate"]);
    for (args, headings) in [
        (
            &["outbox", "list"][..],
            &[
                "EVENT ID",
                "ALERT",
                "STATE",
                "ATTEMPTS",
                "CREATED",
                "NEXT ATTEMPT",
                "LAST ERROR",
            ][..],
        ),
        (
            &["alerts", "list"],
            &["ID", "TICKER", "CONDITION", "STATE", "NOTE"],
        ),
        (&["quotes", "list"], &["TICKER", "PRICE", "UPDATED AT"]),
    ] {
        let listing = common::cli(&path, args);
        let mut lines = listing.lines();
        let header = lines.next().unwrap();
        let rows: Vec<&str> = lines
            .take_while(|line| !line.contains(" pending, "))
            .collect();
        assert!(!rows.is_empty(), "{listing}");
        for heading in headings {
            let at = header.find(heading).unwrap();
            let end = at + heading.len();
            for row in &rows {
                // A left-aligned cell starts where its heading starts, a
                // right-aligned one ends where its heading ends.
                let byte = |at: usize| row.as_bytes().get(at).copied().unwrap_or(b' ');
                let left = byte(at) != b' ' && (at == 0 || byte(at - 1) == b' ');
                let right = byte(end - 1) != b' ' && byte(end) == b' ';
                assert!(left || right, "{args:?}: {heading:?} in\n{listing}");
            }
        }
    }
}

/// What a newcomer reads: an unknown event named as given, durations as the
/// file writes them, and a UTC fire time once.
#[test]
fn messages_say_each_thing_once_as_people_write_it() {
    let db = Db::new();
    let text = common::config_text(&db.path, "http://127.0.0.1:9/events", "0 0 3 * * *")
        + "\n[[jobs]]\nname = \"purge\"\nkind = \"purge\"\nschedule = \"@daily\"\nkeep = \"30d\"\n";
    let path = db.write_config(&text);
    let checked = common::cli(&path, &["check-config"]);
    assert!(checked.contains("older than 30d"), "{checked}");
    assert!(checked.contains("(max age 15m)"), "{checked}");
    assert!(
        checked
            .lines()
            .filter(|line| line.trim().starts_with("next "))
            .all(|line| line.matches("T03:00:00").count() + line.matches("T00:00:00").count() == 1),
        "{checked}"
    );
    let output = binary()
        .args([
            "--config",
            path.to_str().unwrap(),
            "outbox",
            "replay",
            "nope",
            "pa_x_1_1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "price-alertd: not replayed (unknown, or already delivered): nope, pa_x_1_1 \
         (a delivered event is replayed by filters: --state delivered --alert ID)"
    );
    let help = binary()
        .arg("--help")
        .env("PRICE_ALERTD_CONFIG", "/x/y.toml")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[env: PRICE_ALERTD_CONFIG]"), "{help}");
    assert!(!help.contains("/x/y.toml"), "{help}");
}

on_every_engine! {
    /// The operators' lists read alike on each engine (their statements and
    /// row mappers are written once): a dead letter after three failures,
    /// a delivered event not listed, the backlog in `status`, and the quotes.
    fn the_operators_commands_read_and_write_alike_on_every_engine(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        receiver.fail_with(&[503, 503, 503]);
        let path = db.write_config(&config_text(&db, &receiver.url, "0 0 0 1 1 *"));
        db.add_alert("AAPL", "above", 100.0);
        db.set_quote("AAPL", 150.0);
        common::cli(&path, &["run-job", "evaluate"]);
        // A second event, delivered: not in the outbox's list.
        db.add_alert("MSFT", "below", 300.0);
        db.set_quote("MSFT", 250.0);
        common::cli(&path, &["run-job", "evaluate"]);

        let listed: Vec<serde_json::Value> = common::cli(&path, &["outbox", "list", "--json"])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let dead: Vec<&serde_json::Value> =
            listed.iter().filter(|entry| entry["state"] == "dead").collect();
        assert_eq!((dead.len(), listed.len()), (1, 1), "{listed:?}");
        assert_eq!(dead[0]["attempts"], 3, "{listed:?}");
        assert!(dead[0]["next_attempt_at"].is_null(), "{listed:?}");
        assert!(dead[0]["event_id"].as_str().unwrap().starts_with("pa_"));
        let only_dead = common::cli(&path, &["outbox", "list", "--dead", "--json"]);
        assert_eq!(only_dead.lines().count(), 1, "{only_dead}");

        let status: serde_json::Value =
            serde_json::from_str(&common::cli(&path, &["status", "--json"])).unwrap();
        assert_eq!(status["outbox_dead"], 1, "{status}");
        assert_eq!(
            status["outbox_pending"].as_u64().unwrap() + status["outbox_dead"].as_u64().unwrap(),
            listed.len() as u64,
            "{status}"
        );
        assert_eq!(status["jobs"][0]["result"], "ok", "{status}");

        let quotes = common::cli(&path, &["quotes", "list", "--json"]);
        assert_eq!(quotes.lines().count(), 2, "{quotes}");

        // The alert commands: add, cooldown, disable, rearm.
        let id: i64 = common::cli(&path, &["alerts", "add", "TSLA", "above", "900", "--note", "x"])
            .trim()
            .parse()
            .unwrap();
        let alert = |id: i64| -> serde_json::Value {
            common::cli(&path, &["alerts", "list", "--json"])
                .lines()
                .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
                .find(|alert| alert["id"] == id)
                .unwrap_or_else(|| panic!("no alert {id}"))
        };
        assert_eq!(alert(id)["enabled"], true);
        assert_eq!(alert(id)["note"], "x");
        common::cli(&path, &["alerts", "cooldown", &id.to_string(), "15m"]);
        assert_eq!(alert(id)["cooldown"], "15m");
        common::cli(&path, &["alerts", "disable", &id.to_string()]);
        assert_eq!(alert(id)["enabled"], false);
        common::cli(&path, &["alerts", "rearm", &id.to_string()]);
        assert_eq!(alert(id)["enabled"], true);
    }
}

on_every_engine! {
    /// What was sent can be looked at: every attempt of an event (time,
    /// URL without credentials, status or error, duration), delivered
    /// events listed by state, user, alert and time, and replayed by the
    /// same filters, counted first with --dry-run.
    fn the_outbox_shows_every_attempt_and_replays_by_filter(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        // The first event's first attempt is refused, its second taken.
        receiver.fail_with(&[503]);
        let url = receiver.url.replace("http://", "http://relay:s3cret@");
        let path = db.write_config(&config_text(&db, &format!("{url}?token=t0ps3cret"), "0 0 0 1 1 *"));
        let first = db.add_alert("AAPL", "above", 100.0);
        db.set_quote("AAPL", 150.0);
        common::cli(&path, &["run-job", "evaluate"]);
        let second = db.add_alert("MSFT", "above", 100.0);
        db.execute("UPDATE price_alerts SET user_id = 'u2' WHERE id = $1", values![second]);
        db.set_quote("MSFT", 150.0);
        common::cli(&path, &["run-job", "evaluate"]);
        assert_eq!(receiver.arrivals().len(), 3);

        let event = |id: i64| db.texts(&format!("SELECT event_id FROM outbox WHERE alert_id = {id}"))[0].clone();
        let shown: serde_json::Value =
            serde_json::from_str(&common::cli(&path, &["outbox", "show", &event(first), "--json"])).unwrap();
        assert_eq!(shown["state"], "delivered", "{shown}");
        let attempts = shown["attempts_made"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{shown}");
        assert_eq!((attempts[0]["status"].as_u64(), attempts[1]["status"].as_u64()), (Some(503), Some(200)));
        assert!(attempts[0]["error"].as_str().unwrap().contains("503"), "{shown}");
        let text = shown.to_string();
        assert!(!text.contains("s3cret") && !text.contains("t0ps3cret"), "a credential shown: {text}");
        assert!(attempts[0]["url"].as_str().unwrap().ends_with("/events?***"), "{shown}");
        let body: serde_json::Value = serde_json::from_str(shown["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["data"]["alert_id"], first, "{body}");
        let table = common::cli(&path, &["outbox", "show", &event(first)]);
        assert!(table.contains("state     delivered at") && table.contains("503"), "{table}");

        // Listed: delivered ones only when asked, by user and alert.
        let listed = |args: &[&str]| -> Vec<String> {
            common::cli(&path, &[&["outbox", "list", "--json"], args].concat())
                .lines()
                .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["event_id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert!(listed(&[]).is_empty());
        assert_eq!(listed(&["--state", "delivered"]).len(), 2);
        assert_eq!(listed(&["--state", "all", "--user", "u2"]), [event(second)]);
        assert_eq!(listed(&["--state", "all", "--alert", &first.to_string()]), [event(first)]);
        let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        assert!(listed(&["--state", "all", "--since", &later]).is_empty());
        assert_eq!(listed(&["--state", "all", "--until", &later]).len(), 2);

        // Replayed by the same filters, counted first.
        let replay = |args: &[&str]| common::cli(&path, &[&["outbox", "replay"], args].concat());
        assert_eq!(
            replay(&["--state", "delivered", "--user", "u2", "--dry-run"]).trim(),
            "would replay 1 event (--dry-run)"
        );
        assert_eq!(listed(&["--state", "pending"]).len(), 0, "a dry run changed nothing");
        assert_eq!(replay(&["--state", "delivered", "--user", "u2"]).trim(), "replayed 1 event");
        common::cli(&path, &["run-job", "evaluate"]);
        let ids: Vec<String> = receiver.received().iter().map(|received| received.header("webhook-id").unwrap().to_owned()).collect();
        assert_eq!(ids.iter().filter(|id| **id == event(second)).count(), 2, "{ids:?}");
        let output = binary()
            .args(["--config", path.to_str().unwrap(), "outbox", "replay"])
            .output()
            .unwrap();
        assert!(!output.status.success(), "a replay of nothing named");
    }
}

/// The shipped bash completion, loaded as bash-completion loads it,
/// completes below the top level, and offers no hidden command; the
/// `completions` command prints the same script.
#[test]
fn bash_completes_the_commands_below_the_top_level() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("etc/generated/shell/price-alertd.bash");
    let (code, printed, stderr) = run(binary().args(["completions", "bash"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(printed, std::fs::read_to_string(&script).unwrap());
    // What bash offers after `words`, the last being the word completed.
    let complete = |words: &[&str]| -> Vec<String> {
        let line = words.join(" ");
        let program = format!(
            "source {}
             COMP_WORDS=({})
             COMP_CWORD={}
             COMP_LINE='{line}'
             COMP_POINT=${{#COMP_LINE}}
             function=$(complete -p price-alertd | sed -E 's/.*-F ([^ ]+) .*/\\1/')
             $function price-alertd '{}' '{}'
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words
                .iter()
                .map(|word| format!("'{word}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let output = std::process::Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let top = complete(&["price-alertd", ""]);
    assert!(
        top.contains(&"alerts".to_owned()) && top.contains(&"completions".to_owned()),
        "{top:?}"
    );
    assert!(
        !top.contains(&"generate".to_owned()),
        "the hidden command offered: {top:?}"
    );
    assert_eq!(complete(&["price-alertd", "out"]), ["outbox"]);
    let alerts = complete(&["price-alertd", "alerts", ""]);
    assert!(
        alerts.contains(&"explain".to_owned()) && alerts.contains(&"list".to_owned()),
        "{alerts:?}"
    );
    let options = complete(&["price-alertd", "alerts", "list", "--st"]);
    assert_eq!(options, ["--state"]);
    let replay = complete(&["price-alertd", "outbox", "replay", "--dry"]);
    assert_eq!(replay, ["--dry-run"]);
}

/// README's command reference cannot drift from the CLI: every command the
/// CLI has is listed there, every command listed exists, and every flag a
/// line names is one its command takes (`--help` says so).
#[test]
fn the_readme_command_reference_matches_the_cli() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("## Command line\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("README has a Command line block");
    let help = |path: &[&str]| -> String {
        let (code, stdout, stderr) = run(binary().args(path).arg("--help"));
        assert_eq!(code, Some(0), "{path:?}: {stderr}");
        stdout
    };
    // The commands of `help`'s "Commands:" list.
    let commands_of = |text: &str| -> Vec<String> {
        text.split("Commands:\n")
            .nth(1)
            .map(|list| {
                list.lines()
                    .take_while(|line| line.starts_with("  "))
                    .filter_map(|line| line.split_whitespace().next())
                    .filter(|name| *name != "help")
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut leaves = Vec::new();
    for top in commands_of(&help(&[])) {
        let below = commands_of(&help(&[&top]));
        if below.is_empty() {
            leaves.push(vec![top]);
        } else {
            leaves.extend(below.into_iter().map(|sub| vec![top.clone(), sub]));
        }
    }
    let listed: Vec<(Vec<String>, String)> = block
        .lines()
        .map(|line| {
            let words: Vec<&str> = line
                .trim_start_matches("price-alertd [--config PATH] ")
                .split('#')
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            let path: Vec<String> = words
                .iter()
                .take_while(|word| word.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .map(|word| word.to_string())
                .collect();
            (path, line.to_owned())
        })
        .collect();
    for leaf in &leaves {
        assert!(
            listed.iter().any(|(path, _)| path == leaf),
            "README's Command line lacks `{}`",
            leaf.join(" ")
        );
    }
    for (path, line) in &listed {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&words);
        for flag in line
            .split('#')
            .next()
            .unwrap()
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|word| word.starts_with("--") && *word != "--config")
        {
            assert!(
                text.contains(&format!("{flag} "))
                    || text.contains(&format!("{flag}\n"))
                    || text.contains(&format!("{flag}="))
                    || text.contains(&format!("{flag} <")),
                "README's `{line}` names {flag}, which `{}` does not take:\n{text}",
                path.join(" ")
            );
        }
    }
}
