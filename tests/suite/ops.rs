//! Operating the daemon: the systemd notify protocol, metrics and health,
//! JSON logs, the admin CLI, and check-config's fire times across DST.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{
    Daemon, Db, Receiver, binary, cli, config_text, free_port, sample, scrape, scrape_accepting,
    wait_until,
};

/// Reads datagrams until one contains `wanted`; returns everything read.
fn read_until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no {wanted:?} among {seen:?}"
        );
        if let Ok(length) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
            let done = message.lines().any(|line| line == wanted);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

/// The daemon run as systemd runs it, with `env`, telling a notify socket
/// (read with a short timeout) what it does.
fn run_notified(
    db: &Db,
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (UnixDatagram, std::process::Child) {
    let socket_path = db.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let child = binary()
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("NOTIFY_SOCKET", &socket_path)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (socket, child)
}

#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let db = Db::new();
    let path = db.write_config(&config_text(
        &db.path,
        "http://127.0.0.1:9/events",
        "* * * * * *",
    ));
    // A watchdog of 2 s.
    let (socket, mut child) = run_notified(&db, &path, &[("WATCHDOG_USEC", "2000000")]);
    let pid = child.id().to_string();

    read_until(&socket, "READY=1");
    // Pings every half timeout (1 s): two in a row prove they repeat.
    read_until(&socket, "WATCHDOG=1");
    read_until(&socket, "WATCHDOG=1");

    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let around_reload = read_until(&socket, "READY=1");
    let reloading = around_reload
        .iter()
        .position(|message| message.lines().any(|line| line == "RELOADING=1"));
    assert!(reloading.is_some(), "{around_reload:?}");
    assert!(
        around_reload[reloading.unwrap()].contains("MONOTONIC_USEC="),
        "{around_reload:?}"
    );

    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    read_until(&socket, "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn metrics_and_health_are_served_when_configured() {
    let db = Db::new();
    let receiver = Receiver::start();
    receiver.fail_with(&[400]);
    let port = free_port();
    let text = config_text(&db.path, &receiver.url, "* * * * * *")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = db.write_config(&text);
    db.set_quote("AAPL", 100.0);
    db.add_alert("AAPL", "above", 1.0);
    db.add_alert("AAPL", "above", 2.0);
    db.add_alert("MSFT", "above", 2.0);
    let daemon = Daemon::start(&path);
    wait_until("both events settled", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state IN ('delivered', 'dead')") == 2
    });
    daemon.wait_for_log("tick finished");

    let (status, health) = scrape(port, "/healthz");
    assert_eq!((status, health.as_str()), (200, "ok\n"));
    let (status, text) = scrape(port, "/metrics");
    assert_eq!(status, 200);
    assert!(
        sample(
            &text,
            "price_alertd_ticks_total{job_name=\"evaluate\",result=\"ok\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "price_alertd_alerts_triggered_total{job_name=\"evaluate\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "price_alertd_alerts_skipped_total{reason=\"no_quote\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "price_alertd_deliveries_total{outcome=\"delivered\",response=\"2xx\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "price_alertd_deliveries_total{outcome=\"dead\",response=\"4xx\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "price_alertd_outbox_dead"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "price_alertd_outbox_pending"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "price_alertd_last_successful_tick_timestamp_seconds{job_name=\"evaluate\"}"
        )
        .unwrap()
            > 1.7e9,
        "{text}"
    );
    for series in [
        "price_alertd_tick_duration_seconds_bucket",
        "price_alertd_delivery_duration_seconds_bucket",
        "price_alertd_alerts_evaluated_total",
    ] {
        assert!(text.contains(series), "{series} missing from {text}");
    }
    assert_eq!(scrape(port, "/nope").0, 404);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let db = Db::new();
    let text = config_text(&db.path, "http://127.0.0.1:9/events", "0 0 0 1 1 *")
        + "\n[log]\nformat = \"json\"\n";
    let path = db.write_config(&text.replace("drain_timeout = \"10s\"", "drain_timeout = \"1s\""));
    // A trigger, and a webhook that refuses: warnings to log.
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(
            object["level"].is_string() && object["timestamp"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn the_admin_cli_manages_alerts_and_quotes_and_reports_status() {
    let db = Db::new();
    let receiver = Receiver::start();
    let path = db.write_config(&config_text(&db.path, &receiver.url, "0 0 0 1 1 *"));

    let first: i64 = cli(
        &path,
        &[
            "alerts", "add", "AAPL", "above", "150", "--note", "breakout",
        ],
    )
    .trim()
    .parse()
    .unwrap();
    let second: i64 = cli(
        &path,
        &[
            "alerts",
            "add",
            "AAPL",
            "moving_down_pct",
            "5",
            "--reference",
            "200",
        ],
    )
    .trim()
    .parse()
    .unwrap();
    let third: i64 = cli(&path, &["alerts", "add", "MSFT", "below", "300"])
        .trim()
        .parse()
        .unwrap();
    for bad in [
        vec!["alerts", "add", "AAPL", "sideways", "1"],
        vec!["alerts", "add", "AAPL", "moving_up_pct", "5"],
        vec!["alerts", "add", " ", "above", "1"],
    ] {
        let output = binary()
            .args(["--config", path.to_str().unwrap()])
            .args(&bad)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad:?} was accepted");
    }
    let past = binary()
        .args(["--config", path.to_str().unwrap()])
        .args([
            "alerts",
            "add",
            "AAPL",
            "above",
            "1",
            "--expires",
            "2020-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&past.stderr);
    assert!(
        !past.status.success()
            && stderr.contains("--expires: 2020-01-01T00:00:00Z is not after now"),
        "{stderr}"
    );
    cli(&path, &["alerts", "disable", &third.to_string()]);
    cli(&path, &["quotes", "set", "AAPL", "160"]);
    let quotes = cli(&path, &["quotes", "list", "--json"]);
    let quote: serde_json::Value = serde_json::from_str(quotes.lines().next().unwrap()).unwrap();
    assert_eq!(
        (quote["ticker"].as_str(), quote["price"].as_f64()),
        (Some("AAPL"), Some(160.0))
    );
    assert!(cli(&path, &["quotes", "list"]).contains("AAPL"));

    cli(&path, &["run-job", "evaluate"]);
    let triggered = cli(&path, &["alerts", "list", "--triggered", "--json"]);
    let ids: Vec<i64> = triggered
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![second, first]);
    let enabled = cli(&path, &["alerts", "list", "--enabled"]);
    assert_eq!(enabled.lines().count(), 1, "only the header: {enabled}");
    let table = cli(&path, &["alerts", "list", "--ticker", "MSFT"]);
    assert!(
        table.contains("disabled") && !table.contains("AAPL"),
        "{table}"
    );

    let status = cli(&path, &["status"]);
    assert!(
        status.contains("evaluate") && status.contains("ok") && status.contains("triggered=2"),
        "{status}"
    );
    assert!(status.contains("outbox: 0 pending, 0 dead"), "{status}");
    let status: serde_json::Value =
        serde_json::from_str(&cli(&path, &["status", "--json"])).unwrap();
    assert_eq!(status["jobs"][0]["job"], "evaluate");
    assert_eq!(status["jobs"][0]["result"], "ok");
    // The run's summary as named numbers, not a string to parse.
    assert_eq!(status["jobs"][0]["detail"]["triggered"], 2, "{status}");
    assert!(status["jobs"][0]["duration_ms"].is_i64());
    assert_eq!(status["outbox_pending"], 0);
}

#[test]
fn check_config_from_an_instant_follows_the_dst_changes() {
    let db = Db::new();
    let text = config_text(&db.path, "http://127.0.0.1:9/events", "30 9 * * *").replace(
        "schedule = \"30 9 * * *\"",
        "schedule = \"30 9 * * *\"\ntimezone = \"America/New_York\"",
    );
    let path = db.write_config(&text);
    let march = cli(&path, &["check-config", "--from", "2026-03-07T00:00:00Z"]);
    let times: Vec<&str> = march
        .lines()
        .filter_map(|line| line.trim().strip_prefix("next "))
        .collect();
    assert_eq!(
        times,
        [
            "2026-03-07T14:30:00Z  (2026-03-07T09:30:00-05:00 America/New_York)",
            "2026-03-08T13:30:00Z  (2026-03-08T09:30:00-04:00 America/New_York)",
            "2026-03-09T13:30:00Z  (2026-03-09T09:30:00-04:00 America/New_York)"
        ]
    );
    let november = cli(&path, &["check-config", "--from", "2026-10-31T00:00:00Z"]);
    let times: Vec<&str> = november
        .lines()
        .filter_map(|line| line.trim().strip_prefix("next "))
        .collect();
    assert_eq!(
        times[1],
        "2026-11-01T14:30:00Z  (2026-11-01T09:30:00-05:00 America/New_York)"
    );
}

#[test]
fn a_failure_that_repeats_every_tick_is_logged_when_it_starts_and_ends_not_every_tick() {
    // The application holds SQLite's write lock for seconds (a long
    // migration, a stuck writer): every tick and every delivery round fails.
    let db = Db::new();
    let receiver = Receiver::start();
    let database = format!("path = \"{}\"", db.path.display());
    let port = free_port();
    let text = config_text(&db.path, &receiver.url, "* * * * * *")
        .replace(&database, &format!("{database}\nbusy_timeout = \"100ms\""))
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = db.write_config(&text);
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    let daemon = Daemon::start(&path);
    let holder = db.app();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let failed_ticks =
        || common::counter(port, "ticks_total{job_name=\"evaluate\",result=\"failed\"}");
    // The first failure, then five more ticks (and many delivery rounds)
    // against the lock: counted by the metrics, logged once.
    wait_until("six failed ticks", || failed_ticks() >= 6.0);
    let log = daemon.log();
    assert_eq!(log.matches("job failed").count(), 1, "{log}");
    assert!(
        log.matches("delivery bookkeeping failed").count() <= 1,
        "{log}"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    daemon.wait_for_log("the job runs again after failing");
    receiver.wait_for(1);
}

/// Reads datagrams until one has a `STATUS=` line containing `wanted`;
/// returns that line.
fn status_with(socket: &UnixDatagram, wanted: &str) -> String {
    let mut buffer = [0u8; 4096];
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut seen = Vec::new();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no STATUS= with {wanted:?} among {seen:?}"
        );
        if let Ok(length) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
            if let Some(status) = message
                .lines()
                .find_map(|line| line.strip_prefix("STATUS="))
                .filter(|status| status.contains(wanted))
            {
                return status.to_owned();
            }
            seen.push(message);
        }
    }
}

#[test]
fn a_refused_reload_shows_in_status_and_metrics_until_a_reload_succeeds() {
    let db = Db::new();
    let port = free_port();
    let good = config_text(&db.path, "http://127.0.0.1:9/events", "* * * * * *")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = db.write_config(&good);
    let (socket, mut child) = run_notified(&db, &path, &[]);
    let pid = child.id().to_string();
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
    };
    let reload_metric = || {
        sample(
            &scrape(port, "/metrics").1,
            "price_alertd_config_last_reload_successful",
        )
    };

    // What the daemon does, as `systemctl status` shows it.
    // The outbox is counted beside the loop: the count follows the tick's
    // own status.
    let running = status_with(&socket, "0 events pending");
    assert!(running.contains("last tick evaluate"), "{running}");
    assert_eq!(reload_metric(), Some(1.0));

    std::fs::write(&path, good.replace("* * * * * *", "every minute")).unwrap();
    hup();
    let refused = status_with(&socket, "reload refused");
    assert!(refused.contains("1 error in"), "{refused}");
    assert_eq!(reload_metric(), Some(0.0));
    // Ticks go on with the old jobs, and the refusal stays in view.
    let later = status_with(&socket, "last tick evaluate");
    assert!(later.contains("reload refused"), "{later}");

    std::fs::write(&path, &good).unwrap();
    hup();
    let fixed = status_with(&socket, "last tick");
    let fixed = if fixed.contains("reload refused") {
        status_with(&socket, "last tick evaluate")
    } else {
        fixed
    };
    assert!(!fixed.contains("reload refused"), "{fixed}");
    assert_eq!(reload_metric(), Some(1.0));
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A reload says which keys changed (names, never values), warns of those
/// that wait for a restart, and says a restart is pending, in `STATUS=` and
/// a metric, until the file agrees again with what the daemon started with.
#[test]
fn a_reload_names_the_keys_it_changed_and_a_restart_pending() {
    let db = Db::new();
    let port = free_port();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let good = config_text(&db.path, "http://127.0.0.1:9/events", "0 * * * * *")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[log]\nlevel = \"info\"\n");
    let path = db.write_config(&good);
    let socket_path = db.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = Daemon::start_with_env(&path, &[("NOTIFY_SOCKET", socket_path.as_os_str())]);
    let pending = || {
        sample(
            &scrape(port, "/metrics").1,
            "price_alertd_config_restart_pending",
        )
    };
    assert_eq!(pending(), Some(0.0));

    // Nothing changed: said so.
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded: no key changed");

    // A job's schedule (applied), the log level and a secret.
    let changed = good
        .replace("0 * * * * *", "30 * * * * *")
        .replace("level = \"info\"", "level = \"debug\"")
        .replace("[webhook]", &format!("[webhook]\nsecret = \"{secret}\""));
    std::fs::write(&path, &changed).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("configuration keys changed");
    let log = daemon.log();
    let line = log
        .lines()
        .find(|line| line.contains("configuration keys changed"))
        .unwrap();
    assert!(
        line.contains("changed=\"jobs[evaluate].schedule, log.level, webhook.secret\""),
        "{line}"
    );
    daemon.wait_for_log("apply only at the next restart");
    let warning = daemon
        .log()
        .lines()
        .find(|line| line.contains("apply only at the next restart"))
        .unwrap()
        .to_owned();
    assert!(
        warning.contains("log.level") && !warning.contains("schedule"),
        "{warning}"
    );
    assert!(!daemon.log().contains(&secret[6..]), "a secret was logged");
    let status = status_with(&socket, "restart pending");
    assert!(
        status.contains("restart pending: log.level changed"),
        "{status}"
    );
    assert_eq!(pending(), Some(1.0));

    // Back to the level it started with: nothing waits for a restart.
    std::fs::write(
        &path,
        changed.replace("level = \"debug\"", "level = \"info\""),
    )
    .unwrap();
    daemon.signal("HUP");
    wait_until("the restart no longer pending", || pending() == Some(0.0));
}

#[test]
fn the_unit_checks_a_new_file_before_it_signals_a_reload() {
    let reloads: Vec<String> = include_str!("../../systemd/price-alertd.service")
        .lines()
        .filter_map(|line| line.strip_prefix("ExecReload="))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        reloads,
        [
            "/usr/bin/price-alertd check-config --reload",
            "/bin/kill -HUP $MAINPID"
        ],
        "systemctl reload must fail, and send nothing, when the file is refused"
    );
}

#[test]
fn under_journald_each_line_carries_its_priority() {
    let db = Db::new();
    let receiver = Receiver::start();
    receiver.fail_with(&[400]);
    let path = db.write_config(&config_text(&db.path, &receiver.url, "0 0 0 1 1 *"));
    db.set_quote("AAPL", 100.0);
    db.add_alert("AAPL", "above", 1.0);
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
        .env("JOURNAL_STREAM", "8:4242")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let priority = ["<3>", "<4>", "<6>", "<7>"]
            .into_iter()
            .find(|prefix| line.starts_with(prefix));
        assert!(priority.is_some(), "no priority: {line:?}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("<3>") && line.contains("dead letters")),
        "{stderr}"
    );
    // journald adds its own timestamps.
    assert!(!stderr.contains(&chrono::Utc::now().format("%Y-%m-%dT").to_string()));
}

#[test]
fn the_scheduler_library_is_quiet_at_the_default_level() {
    let db = Db::new();
    let path = db.write_config(&config_text(
        &db.path,
        "http://127.0.0.1:9/events",
        "* * * * * *",
    ));
    let daemon = Daemon::start(&path);
    wait_until("three ticks", || {
        daemon.log().matches("tick finished").count() >= 3
    });
    assert!(
        !daemon.log().contains("Job creator created"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_fatal_error_is_printed_once() {
    let db = Db::new();
    let folder = db.dir.path().join("not-a-file.db");
    std::fs::create_dir(&folder).unwrap();
    let path = db.write_config(&config_text(
        &folder,
        "http://127.0.0.1:9/events",
        "* * * * * *",
    ));
    // Every command says it the same way: one line, `price-alertd: ...`,
    // each word once.
    for command in [
        &["run"][..],
        &["status"],
        &["run-job", "evaluate"],
        &["alerts", "list"],
    ] {
        let output = binary()
            .args(["--config", path.to_str().unwrap()])
            .args(command)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{command:?}: {stderr}");
        assert!(
            lines[0].starts_with("price-alertd: ") && lines[0].contains("not-a-file.db"),
            "{command:?}: {stderr}"
        );
    }
    // A file that is not a database says so once.
    let not_a_database = db.dir.path().join("text.db");
    std::fs::write(&not_a_database, "not a database, but text ".repeat(200)).unwrap();
    let path = db.write_config(&config_text(
        &not_a_database,
        "http://127.0.0.1:9/events",
        "* * * * * *",
    ));
    for command in [&["run"][..], &["check-config"], &["alerts", "list"]] {
        let output = binary()
            .args(["--config", path.to_str().unwrap()])
            .args(command)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(65), "{command:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{command:?}: {stderr}");
        assert_eq!(
            stderr.matches("not a database").count()
                + stderr.matches("not an SQLite database").count(),
            1,
            "{command:?}: {stderr}"
        );
    }
    // So does a job that is not configured.
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "nosuch"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("price-alertd: no job is named \"nosuch\"")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn colours_only_on_a_terminal_and_never_with_no_color() {
    // A dead letter gives run-job an error line to print.
    let db = Db::new();
    let receiver = Receiver::start();
    db.set_quote("AAPL", 100.0);
    db.add_alert("AAPL", "above", 1.0);
    let path = db.write_config(&config_text(&db.path, &receiver.url, "0 0 0 1 1 *"));
    // `script` gives the command a terminal.
    let on_a_terminal = |no_color: Option<&str>| {
        receiver.fail_with(&[400]);
        db.app()
            .execute_batch("UPDATE price_alerts SET enabled = 1")
            .unwrap();
        let mut command = std::process::Command::new("script");
        command
            .args(["--quiet", "--return", "--command"])
            .arg(format!(
                "{} --config {} run-job evaluate",
                common::binary_path().display(),
                path.display()
            ))
            .arg("/dev/null")
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let output = command.output().unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(
        on_a_terminal(None).contains("\u{1b}["),
        "no colour on a terminal"
    );
    assert!(!on_a_terminal(Some("1")).contains("\u{1b}["));
}

#[test]
fn metrics_scrape_cleanly_in_either_format_with_every_series_from_the_start() {
    let db = Db::new();
    let port = free_port();
    // Jobs that will not run during the test: every series must still be there.
    let text = config_text(&db.path, "http://127.0.0.1:9/events", "0 0 0 1 1 *")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = db.write_config(&text);
    let _daemon = Daemon::start(&path);

    // Without an Accept header: the classic text format, which promtool checks.
    let (status, content_type, classic) = scrape_accepting(port, "/metrics", None);
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!classic.contains("# EOF"), "{classic}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (tests/run installs Debian's prometheus)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(classic.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{classic}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Asked for OpenMetrics, as Prometheus asks: OpenMetrics, labelled so.
    let (_, content_type, open) = scrape_accepting(
        port,
        "/metrics",
        Some(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
        ),
    );
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");

    // Every label value that can occur, at zero before it does; no `job` label.
    for series in [
        "price_alertd_ticks_total{job_name=\"evaluate\",result=\"ok\"}",
        "price_alertd_ticks_total{job_name=\"evaluate\",result=\"failed\"}",
        "price_alertd_ticks_total{job_name=\"evaluate\",result=\"skipped\"}",
        "price_alertd_tick_causes_total{job_name=\"evaluate\",cause=\"change\"}",
        "price_alertd_quote_to_claim_seconds_count{job_name=\"evaluate\"}",
        "price_alertd_claim_to_delivery_seconds_count",
        "price_alertd_alerts_triggered_total{job_name=\"evaluate\"}",
        "price_alertd_alerts_skipped_total{reason=\"stale_alerts\"}",
        "price_alertd_alerts_skipped_total{reason=\"expired\"}",
        "price_alertd_deliveries_total{outcome=\"delivered\",response=\"2xx\"}",
        "price_alertd_deliveries_total{outcome=\"failed\",response=\"5xx\"}",
        "price_alertd_deliveries_total{outcome=\"failed\",response=\"timeout\"}",
        "price_alertd_deliveries_total{outcome=\"dead\",response=\"4xx\"}",
        "price_alertd_deliveries_total{outcome=\"released\",response=\"none\"}",
        "price_alertd_outbox_oldest_pending_age_seconds",
        "price_alertd_quote_errors_total{job_name=\"evaluate\"}",
        "price_alertd_cluster_members{state=\"lost\"}",
    ] {
        assert_eq!(sample(&classic, series), Some(0.0), "{series} in {classic}");
    }
    // Its deadline: the third 1 January from now.
    let deadline = sample(
        &classic,
        "price_alertd_job_deadline_timestamp_seconds{job_name=\"evaluate\"}",
    )
    .unwrap();
    let in_years = (deadline - chrono::Utc::now().timestamp() as f64) / (365.25 * 86400.0);
    assert!((2.0..3.01).contains(&in_years), "{deadline}");
    assert!(!classic.contains("{job="), "{classic}");
    for (series, at_least) in [
        ("price_alertd_build_info{version=\"0.1.0\"}", 1.0),
        ("price_alertd_config_last_reload_successful", 1.0),
        ("process_resident_memory_bytes", 1e6),
        ("process_virtual_memory_bytes", 1e6),
        ("process_start_time_seconds", 1.7e9),
        ("process_open_fds", 3.0),
        ("process_max_fds", 64.0),
        ("process_cpu_seconds_total", 0.0),
    ] {
        let value = sample(&classic, series);
        assert!(
            value.is_some_and(|value| value >= at_least),
            "{series}: {value:?}"
        );
    }
}

#[test]
fn the_oldest_pending_event_shows_its_age() {
    let db = Db::new();
    let port = free_port();
    // run-job is given no time to deliver: its event stays pending.
    let text = config_text(&db.path, "http://127.0.0.1:9/events", "0 0 0 1 1 *")
        .replace("drain_timeout = \"10s\"", "drain_timeout = \"1ms\"")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = db.write_config(&text);
    db.set_quote("AAPL", 100.0);
    db.add_alert("AAPL", "above", 1.0);
    // A claim two minutes ago, whose event waits an hour more.
    cli(&path, &["run-job", "evaluate"]);
    db.app()
        .execute(
            "UPDATE outbox SET created_at = ?1, next_attempt_at = ?2",
            rusqlite::params![
                (chrono::Utc::now() - chrono::Duration::seconds(120)).to_rfc3339(),
                (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_millis()
            ],
        )
        .unwrap();
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'pending'"),
        1
    );
    let _daemon = Daemon::start(&path);
    let age = sample(
        &scrape(port, "/metrics").1,
        "price_alertd_outbox_oldest_pending_age_seconds",
    )
    .unwrap();
    assert!((120.0..600.0).contains(&age), "{age}");
}

#[test]
fn the_quickstart_fires_an_alert_within_a_minute() {
    // README's steps, with the shipped config as it is but for the receiver's
    // port, which a test chooses at run time.
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let shipped = include_str!("../../etc/price-alertd.toml");
    assert!(shipped.contains("url = \"http://127.0.0.1:8080/events\""));
    let path = dir.path().join("price-alertd.toml");
    std::fs::write(
        &path,
        shipped.replace("http://127.0.0.1:8080/events", &receiver.url),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let _daemon = Daemon::start(&path);
    assert_eq!(
        cli(&path, &["alerts", "add", "AAPL", "above", "200"]).trim(),
        "1"
    );
    cli(&path, &["quotes", "set", "AAPL", "201.5"]);
    let event = receiver.wait_for(1)[0].json();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(event["data"]["ticker"], "AAPL");
    assert_eq!(event["data"]["price"], 201.5);
}

#[test]
fn a_metrics_address_beyond_loopback_is_warned_about() {
    let db = Db::new();
    let port = free_port();
    let path = db.write_config(
        &(config_text(&db.path, "http://127.0.0.1:9/events", "0 0 0 1 1 *")
            + &format!("\n[metrics]\nlisten = \"0.0.0.0:{port}\"\n")),
    );
    let daemon = Daemon::start(&path);
    daemon.wait_for_log("listens beyond this host");
    // Scraped over loopback only.
    assert_eq!(scrape(port, "/healthz").0, 200);
}

/// The quotes the alerts need are watched: per job, the newest and oldest
/// quote's age among its tickers with enabled alerts, and how many are
/// stale or missing, at each scrape and in `status`.
#[test]
fn the_quotes_the_alerts_need_are_watched_per_job() {
    let db = Db::new();
    let port = free_port();
    let text = config_text(&db.path, "http://127.0.0.1:9/events", "0 0 0 1 1 *")
        + "\n[[jobs]]\nname = \"crypto\"\nkind = \"evaluate\"\nschedule = \"0 0 0 1 1 *\"\ntickers = [\"BTC*\"]\n"
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = db.write_config(&text);
    db.add_alert("AAPL", "above", 1000.0);
    db.add_alert("MSFT", "above", 1000.0);
    db.add_alert("TSLA", "above", 1000.0);
    db.add_alert("BTCUSD", "above", 1e9);
    db.set_quote("AAPL", 100.0);
    db.set_quote("BTCUSD", 100.0);
    let two_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at) VALUES ('MSFT', 300, $1)",
        values![two_hours_ago],
    );
    let _daemon = Daemon::start_quiet(&path);
    let metrics = scrape(port, "/metrics").1;
    let of = |name: &str, job: &str| {
        sample(&metrics, &format!("{name}{{job_name=\"{job}\"}}"))
            .unwrap_or_else(|| panic!("{name} {job}: {metrics}"))
    };
    assert!(
        of("price_alertd_quote_newest_age_seconds", "evaluate") < 60.0,
        "{metrics}"
    );
    assert!(
        of("price_alertd_quote_oldest_age_seconds", "evaluate") >= 7200.0,
        "{metrics}"
    );
    assert_eq!(
        (
            of("price_alertd_quotes_stale", "evaluate"),
            of("price_alertd_quotes_missing", "evaluate")
        ),
        (1.0, 1.0)
    );
    assert_eq!(
        (
            of("price_alertd_quotes_stale", "crypto"),
            of("price_alertd_quotes_missing", "crypto")
        ),
        (0.0, 0.0)
    );
    assert_eq!(
        sample(&metrics, "price_alertd_quote_max_age_seconds"),
        Some(900.0)
    );

    let status = cli(&path, &["status"]);
    assert!(
        status.contains("quotes: 4 tickers with alerts")
            && status.contains("1 stale, 1 without a quote (max age 15m)"),
        "{status}"
    );
    // It fits a terminal of 100 columns.
    let widest = status
        .lines()
        .map(|line| line.chars().count())
        .max()
        .unwrap();
    assert!(widest <= 100, "{widest} columns:\n{status}");
    let json: serde_json::Value = serde_json::from_str(&cli(&path, &["status", "--json"])).unwrap();
    assert_eq!(json["jobs"][1]["quotes"]["tickers"], 1, "{json}");

    // Every alert of a scope disabled: nothing to watch, no series.
    db.execute(
        "UPDATE price_alerts SET enabled = 0 WHERE ticker = 'BTCUSD'",
        values![],
    );
    let metrics = scrape(port, "/metrics").1;
    assert!(
        !metrics.contains("price_alertd_quotes_stale{job_name=\"crypto\"}"),
        "{metrics}"
    );
}
