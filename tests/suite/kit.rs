//! The operator's kit: the alerting rules in `etc/prometheus/` pass
//! promtool's check and their unit tests, which test every alert firing and
//! quiet; the rules' and the Grafana dashboard's expressions parse and name
//! only series a running daemon exports; `/readyz` says why a daemon is not
//! ready, and `/healthz` only that it is alive.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Daemon, Db, Engine, config_text, free_port, scrape, wait_until};

const RULES: &str = "etc/prometheus/price-alertd.rules.yml";
const RULE_TESTS: &str = "etc/prometheus/price-alertd.rules.test.yml";
const DASHBOARD: &str = "etc/grafana/price-alertd.json";

/// What an operator must be woken for (issue 21), each an alert of the rules.
const ALERTS: [&str; 16] = [
    "PriceAlertdDown",
    "PriceAlertdNotScraped",
    "PriceAlertdTicksFailing",
    "PriceAlertdTicksSkipped",
    "PriceAlertdJobOverdue",
    "PriceAlertdOutboxBacklogGrowing",
    "PriceAlertdOutboxOldestPendingAging",
    "PriceAlertdDeadLetters",
    "PriceAlertdClusterMemberLost",
    "PriceAlertdHeartbeatFailing",
    "PriceAlertdReloadRefused",
    "PriceAlertdQuoteSourceFailing",
    "PriceAlertdClockOff",
    "PriceAlertdQuoteFeedStopped",
    "PriceAlertdQuotesStale",
    "PriceAlertdReactingBehind",
];

/// The series the dashboard's panels must show: ticks and their duration,
/// triggered and delivered, backlog and oldest pending age, latency, dead
/// letters, members, quote freshness, the reacting jobs' pace.
const DASHBOARD_SHOWS: [&str; 13] = [
    "price_alertd_ticks_total",
    "price_alertd_tick_duration_seconds_bucket",
    "price_alertd_alerts_triggered_total",
    "price_alertd_deliveries_total",
    "price_alertd_outbox_pending",
    "price_alertd_outbox_oldest_pending_age_seconds",
    "price_alertd_quote_to_claim_seconds_bucket",
    "price_alertd_claim_to_delivery_seconds_bucket",
    "price_alertd_outbox_dead",
    "price_alertd_cluster_members",
    "price_alertd_quote_newest_age_seconds",
    "price_alertd_reacting_lag_seconds",
    "price_alertd_reacting_runs_per_second",
];

fn in_repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs promtool; its output, once it succeeded.
fn promtool(args: &[&str], file: &Path) -> String {
    let output = std::process::Command::new("promtool")
        .args(args)
        .arg(file.file_name().unwrap())
        .current_dir(file.parent().unwrap())
        .output()
        .expect("promtool (tests/run installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}: {text}");
    text
}

/// Each alert of a rules file with its own lines.
fn alerts(rules: &str) -> Vec<(String, String)> {
    let mut alerts: Vec<(String, String)> = Vec::new();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            alerts.push((name.to_owned(), String::new()));
        } else if let Some((_, lines)) = alerts.last_mut() {
            lines.push_str(line);
            lines.push('\n');
        }
    }
    alerts
}

/// The `expr:` of each rule.
fn rule_expressions(rules: &str) -> Vec<(String, String)> {
    alerts(rules)
        .into_iter()
        .map(|(name, lines)| {
            let expr = lines
                .lines()
                .find_map(|line| line.trim().strip_prefix("expr: "))
                .unwrap_or_else(|| panic!("{name} has no one-line expr"));
            (format!("the rule {name}"), expr.to_owned())
        })
        .collect()
}

#[test]
fn the_alerting_rules_pass_promtool_and_each_alert_is_tested_firing_and_quiet() {
    let rules_path = in_repository(RULES);
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let alerts = alerts(&rules);
    let names: Vec<&str> = alerts.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ALERTS, "the rules' alerts");

    let checked = promtool(&["check", "rules"], &rules_path);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{checked}"
    );
    let tested = promtool(&["test", "rules"], &in_repository(RULE_TESTS));
    assert!(tested.contains("SUCCESS"), "{tested}");

    for (name, lines) in &alerts {
        assert!(
            lines.contains("severity: critical") || lines.contains("severity: warning"),
            "{name} has no severity:\n{lines}"
        );
        for annotation in ["summary: ", "description: ", "runbook: "] {
            assert!(
                lines.contains(annotation),
                "{name} has no {annotation}\n{lines}"
            );
        }
    }

    // Each alert is tested firing (expected alerts listed) and quiet
    // (`exp_alerts: []`): promtool compares the alerts at each time whole,
    // their labels and rendered annotations too.
    let tests = std::fs::read_to_string(in_repository(RULE_TESTS)).unwrap();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for name in ALERTS {
        let expectations: Vec<&str> = lines
            .windows(2)
            .filter(|pair| pair[0] == format!("alertname: {name}"))
            .map(|pair| pair[1])
            .collect();
        assert!(
            expectations.contains(&"exp_alerts: []"),
            "{name} is never tested quiet"
        );
        assert!(
            expectations.contains(&"exp_alerts:"),
            "{name} is never tested firing"
        );
    }
}

/// Every sample name a running daemon exports.
fn exported_series() -> BTreeSet<String> {
    let db = Db::new();
    let port = free_port();
    // A job that will not run during the test: every series is there from
    // the start.
    let text = config_text(&db, "http://127.0.0.1:9/events", "0 0 0 1 1 *")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")
        // A reacting job's pace is a series of its own.
        + "[[jobs]]\nname = \"reacting\"\nkind = \"evaluate\"\nschedule = \"0 0 0 1 1 *\"\non_change = true\n";
    // The quotes' series are a job's with tickers with enabled alerts.
    db.add_alert("AAPL", "above", 1e9);
    db.set_quote("AAPL", 1.0);
    let _daemon = Daemon::start(&db.write_config(&text));
    let (status, exposition) = scrape(port, "/metrics");
    assert_eq!(status, 200, "{exposition}");
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// The panels' queries and the variables' series, with where they are.
fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut expressions = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        let title = panel["title"].as_str().expect("every panel has a title");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "the panel {title:?} reads the chosen data source"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "the panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL target");
            expressions.push((format!("the panel {title:?}"), expr.to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        // `label_values(SELECTOR, LABEL)`: the selector is PromQL.
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| panic!("an unexpected variable query: {query}"));
        expressions.push((
            format!("the variable {}", variable["name"]),
            selector.to_owned(),
        ));
    }
    expressions
}

/// An expression as Prometheus receives it from Grafana.
fn as_grafana_sends_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$job_name", ".*")
        .replace("$instance", ".*")
        .replace("$job", "price-alertd")
}

/// The daemon's series an expression names (outside its string literals).
fn series_named(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_string = false;
    let mut word = String::new();
    for character in expr.chars().chain([' ']) {
        if character == '"' {
            in_string = !in_string;
        }
        if !in_string && (character.is_ascii_alphanumeric() || character == '_') {
            word.push(character);
            continue;
        }
        if word.starts_with("price_alertd_") || word.starts_with("process_") {
            names.push(word.clone());
        }
        word.clear();
    }
    names
}

#[test]
fn the_dashboard_and_the_rules_parse_and_name_only_series_the_daemon_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(in_repository(DASHBOARD)).unwrap())
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "price-alertd");
    let mut expressions = dashboard_expressions(&dashboard);
    let shown: BTreeSet<String> = expressions
        .iter()
        .flat_map(|(_, expr)| series_named(expr))
        .collect();
    for series in DASHBOARD_SHOWS {
        assert!(shown.contains(series), "no panel shows {series}");
    }
    let rules = std::fs::read_to_string(in_repository(RULES)).unwrap();
    expressions.extend(rule_expressions(&rules));

    // promtool parses each expression, as a recording rule.
    let scratch = tempfile::tempdir().unwrap();
    let mut recording = String::from("groups:\n  - name: kit\n    rules:\n");
    for (n, (_, expr)) in expressions.iter().enumerate() {
        recording += &format!(
            "      - record: kit:expression_{n}\n        expr: {}\n",
            serde_json::to_string(&as_grafana_sends_it(expr)).unwrap()
        );
    }
    let recording_path = scratch.path().join("expressions.yml");
    std::fs::write(&recording_path, &recording).unwrap();
    promtool(&["check", "rules"], &recording_path);

    let exported = exported_series();
    // README names series as the daemon exports them (a histogram by its
    // name, without `_bucket`).
    let readme = std::fs::read_to_string(in_repository("README.md")).unwrap();
    let words = readme.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    for named in words.filter(|word| word.starts_with("price_alertd_")) {
        assert!(
            exported.contains(named) || exported.contains(&format!("{named}_bucket")),
            "README names {named}, which the daemon does not export"
        );
    }
    for series in DASHBOARD_SHOWS {
        assert!(exported.contains(series), "{series} is not exported");
    }
    for (place, expr) in &expressions {
        let named = series_named(expr);
        // Besides the daemon's, only Prometheus's own `up` of its targets.
        assert!(
            !named.is_empty() || expr.starts_with("up{") || expr.starts_with("absent(up{"),
            "{place} names no series of the daemon: {expr}"
        );
        for series in named {
            assert!(
                exported.contains(&series),
                "{place} names {series}, which the daemon does not export: {expr}"
            );
        }
    }
}

/// A transaction of the application's that holds the members' table, so
/// that the daemon's heartbeat waits for it; reads go on. Dropped: released.
enum Holding {
    Sqlite(rusqlite::Connection),
    Postgresql(postgres::Client),
}

impl Holding {
    fn members_table(db: &Db) -> Holding {
        match db.engine {
            Engine::Sqlite => {
                let connection = db.app();
                connection.execute_batch("BEGIN IMMEDIATE").unwrap();
                Holding::Sqlite(connection)
            }
            Engine::Postgresql => {
                let mut client = postgres::Client::connect(
                    &db.cluster().url(db.database_name()),
                    postgres::NoTls,
                )
                .unwrap();
                client
                    .batch_execute("BEGIN; LOCK TABLE cluster_members IN SHARE ROW EXCLUSIVE MODE")
                    .unwrap();
                Holding::Postgresql(client)
            }
        }
    }

    fn release(self) {
        match self {
            Holding::Sqlite(connection) => connection.execute_batch("COMMIT").unwrap(),
            Holding::Postgresql(mut client) => client.batch_execute("COMMIT").unwrap(),
        }
    }
}

on_every_engine! {
    fn readyz_answers_ready_only_while_the_member_beats_and_says_why_not(engine: Engine) {
        let db = Db::on(engine);
        let port = free_port();
        let text = config_text(&db, "http://127.0.0.1:9/events", "0 0 0 1 1 *")
            + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
        let daemon = Daemon::start(&db.write_config(&text));
        wait_until("the daemon is ready", || {
            scrape(port, "/readyz") == (200, "ready\n".to_owned())
        });

        // Someone else's transaction holds the members: the database still
        // answers, but this member cannot beat. Alive, and not ready.
        let holding = Holding::members_table(&db);
        let mut why = String::new();
        wait_until("the daemon is not ready", || {
            let (status, body) = scrape(port, "/readyz");
            why = body;
            status == 503
        });
        assert!(why.starts_with("not ready:\n- this member last beat"), "{why}");
        assert!(!why.contains("database"), "{why}");
        assert_eq!(scrape(port, "/healthz"), (200, "ok\n".to_owned()));

        holding.release();
        wait_until("the daemon is ready again", || {
            scrape(port, "/readyz") == (200, "ready\n".to_owned())
        });
        drop(daemon);
    }
}
