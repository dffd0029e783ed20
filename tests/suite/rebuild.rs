//! The application rebuilds `price_alerts` as ORMs and migration tools do
//! (a new table, a copy, a drop and a rename), which drops the daemon's
//! indexes and triggers; in the same transaction it re-arms an alert that
//! fired and inserts a new one, which then take no arming and no change
//! number. `check-config` names what is missing and exits 0, a restart
//! recreates it, and so does a running daemon: at once when a tick fails
//! for want of an index, within seconds when nothing fails. Every alert
//! then fires, the re-armed one under a new event id. On every engine.

use crate::common;

use std::collections::HashSet;

use common::{Daemon, Db, Engine, Receiver, cli, config_text, free_port, wait_until};

/// How the application rebuilds the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// The table's columns only: no index, no trigger.
    Bare,
    /// The indexes too (SQLite: the same names; PostgreSQL: its own), but
    /// no trigger.
    WithIndexes,
}

/// One application transaction: the rebuild, then `and_then` (statements
/// that re-arm and insert alerts while the daemon's triggers are gone).
fn rebuild(db: &Db, how: Rebuild, and_then: &str) {
    let script = match db.engine {
        Engine::Sqlite => {
            let app = db.app();
            let table: String = app
                .query_row(
                    "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'price_alerts'",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            let indexes: Vec<String> = app
                .prepare(
                    "SELECT sql FROM sqlite_schema
                     WHERE type = 'index' AND tbl_name = 'price_alerts' AND sql IS NOT NULL",
                )
                .unwrap()
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let indexes = match how {
                Rebuild::Bare => String::new(),
                Rebuild::WithIndexes => indexes.join(";\n") + ";",
            };
            format!(
                "BEGIN IMMEDIATE;
                 {};
                 INSERT INTO price_alerts_new SELECT * FROM price_alerts;
                 DROP TABLE price_alerts;
                 ALTER TABLE price_alerts_new RENAME TO price_alerts;
                 {indexes}
                 {and_then}
                 COMMIT;",
                table.replacen("price_alerts", "price_alerts_new", 1)
            )
        }
        Engine::Postgresql => {
            let like = match how {
                Rebuild::Bare => "INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS",
                Rebuild::WithIndexes => "INCLUDING ALL",
            };
            let key = match how {
                Rebuild::Bare => "ALTER TABLE price_alerts_new ADD PRIMARY KEY (id);",
                Rebuild::WithIndexes => "",
            };
            format!(
                "BEGIN;
                 CREATE TABLE price_alerts_new (LIKE price_alerts {like});
                 {key}
                 INSERT INTO price_alerts_new OVERRIDING SYSTEM VALUE SELECT * FROM price_alerts;
                 DROP TABLE price_alerts;
                 ALTER TABLE price_alerts_new RENAME TO price_alerts;
                 SELECT setval(pg_get_serial_sequence('price_alerts', 'id'), (SELECT max(id) FROM price_alerts));
                 {and_then}
                 COMMIT;"
            )
        }
    };
    db.script(&script);
}

/// The event ids queued for `alert`.
fn events_of(db: &Db, alert: i64) -> Vec<String> {
    db.texts(&format!(
        "SELECT event_id FROM outbox WHERE alert_id = {alert} ORDER BY id"
    ))
}

/// An `above 100` alert on `ticker` inserted as the application does, in a
/// script.
fn insert_above(ticker: &str) -> String {
    format!(
        "INSERT INTO price_alerts (ticker, condition, target_price, created_at)
         VALUES ('{ticker}', 'above', 100, '2026-01-01T00:00:00Z');"
    )
}

/// The alert on `ticker` inserted last.
fn last_alert_on(db: &Db, ticker: &str) -> i64 {
    db.scalar(&format!(
        "SELECT max(id) FROM price_alerts WHERE ticker = '{ticker}'"
    ))
}

fn start(db: &Db, port: u16, receiver: &Receiver) -> (std::path::PathBuf, Daemon) {
    let text = config_text(db, &receiver.url, "* * * * * *")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = db.write_config(&text);
    let daemon = Daemon::start(&path);
    (path, daemon)
}

/// Every alert's events are distinct ids, and `alert` has `count` of them.
fn wait_for_events(db: &Db, alert: i64, count: usize) {
    wait_until(&format!("{count} events of alert {alert}"), || {
        events_of(db, alert).len() >= count
    });
    let ids = events_of(db, alert);
    assert_eq!(ids.len(), count, "{ids:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), count, "{ids:?}");
}

on_every_engine! {
    fn a_rebuild_that_drops_the_daemons_indexes_and_triggers_is_repaired_at_check_start_and_failure(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let port = free_port();
        db.set_quote("AAPL", 150.0);
        let fired = db.add_alert("AAPL", "above", 100.0);
        let (path, daemon) = start(&db, port, &receiver);
        wait_for_events(&db, fired, 1);
        drop(daemon);

        // Stopped: the application rebuilds its table, re-arms the alert
        // that fired and adds one.
        rebuild(
            &db,
            Rebuild::Bare,
            &format!("UPDATE price_alerts SET enabled = 1 WHERE id = {fired}; {}", insert_above("AAPL")),
        );
        let added = last_alert_on(&db, "AAPL");
        let checked = cli(&path, &["check-config"]);
        for missing in [
            "recreated at start",
            "index price_alerts_level",
            "trigger price_alerts_armed_on_insert",
        ] {
            assert!(checked.contains(missing), "{missing}: {checked}");
        }

        // A restart recreates them: both fire, the re-armed one under a new id.
        let (_, daemon) = start(&db, port, &receiver);
        assert!(daemon.log().contains("recreated the daemon's objects"), "{}", daemon.log());
        wait_for_events(&db, fired, 2);
        wait_for_events(&db, added, 1);

        // Again while it runs: its next tick fails for want of an index,
        // and the repair follows at once. An unrelated ticker's crossing
        // fires too.
        db.set_quote("MSFT", 90.0);
        let crossing = db.add_alert("MSFT", "crossing_up", 100.0);
        wait_until("MSFT observed", || {
            db.scalar("SELECT count(*) FROM observations WHERE ticker = 'MSFT'") == 1
        });
        rebuild(
            &db,
            Rebuild::Bare,
            &format!("UPDATE price_alerts SET enabled = 1 WHERE id = {fired}; {}", insert_above("AAPL")),
        );
        let added_again = last_alert_on(&db, "AAPL");
        db.set_quote("MSFT", 110.0);
        wait_for_events(&db, fired, 3);
        wait_for_events(&db, added_again, 1);
        wait_for_events(&db, crossing, 1);
        assert_eq!(db.scalar("SELECT count(*) FROM price_alerts WHERE enabled = 1"), 0);
        let log = daemon.log();
        assert_eq!(log.matches("recreated the daemon's objects").count(), 2, "{log}");
    }
}

on_every_engine! {
    fn a_rebuild_that_keeps_the_indexes_but_not_the_triggers_is_repaired_while_running(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let port = free_port();
        db.set_quote("AAPL", 150.0);
        let fired = db.add_alert("AAPL", "above", 100.0);
        let (_path, daemon) = start(&db, port, &receiver);
        wait_for_events(&db, fired, 1);

        // No tick fails here: new and re-armed alerts would only never
        // fire, or fire under an id already sent, until the daemon's look
        // at its objects (every 10 s) finds the triggers gone.
        rebuild(
            &db,
            Rebuild::WithIndexes,
            &format!("UPDATE price_alerts SET enabled = 1 WHERE id = {fired}; {}", insert_above("AAPL")),
        );
        let added = last_alert_on(&db, "AAPL");
        wait_for_events(&db, fired, 2);
        wait_for_events(&db, added, 1);
        let log = daemon.log();
        assert!(log.contains("recreated the daemon's objects"), "{log}");
        assert!(log.contains("trigger price_alerts_armed_on_insert"), "{log}");
        assert!(!log.contains("UNIQUE constraint failed"), "{log}");
        assert!(!log.contains("duplicate key value"), "{log}");
    }
}

on_every_engine! {
    fn what_the_daemon_cannot_recreate_is_named_by_check_config_and_run_with_ex_dataerr(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let text = config_text(&db, &receiver.url, "* * * * * *");
        let path = db.write_config(&text);
        db.script("DROP TABLE outbox; DROP INDEX price_alerts_level;");
        for command in ["check-config", "run"] {
            let output = common::binary()
                .args(["--config", path.to_str().unwrap(), command])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(65), "{command}: {stderr}");
            assert!(
                stderr.contains("the database lacks table outbox, which price-alertd does not recreate"),
                "{command}: {stderr}"
            );
        }
    }
}

/// Every index and trigger on the application's tables, as the engine
/// describes it, whitespace folded (its primary key and SQLite's automatic
/// indexes aside).
fn definitions(db: &Db) -> Vec<String> {
    let sql = match db.engine {
        Engine::Sqlite => {
            "SELECT type || ' ' || name || ': ' || sql FROM sqlite_schema
             WHERE tbl_name IN ('price_alerts', 'quotes') AND type IN ('index', 'trigger')
               AND sql IS NOT NULL ORDER BY name"
        }
        Engine::Postgresql => {
            "SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes
             WHERE tablename IN ('price_alerts', 'quotes') AND indexname NOT LIKE '%_pkey'
             UNION ALL
             SELECT 'trigger ' || tgname || ': ' || pg_get_triggerdef(oid) FROM pg_trigger
             WHERE tgrelid IN ('price_alerts'::regclass, 'quotes'::regclass) AND NOT tgisinternal
             ORDER BY 1"
        }
    };
    db.texts(sql)
        .iter()
        .map(|text| text.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

on_every_engine! {
    fn every_index_and_trigger_the_migrations_made_is_recreated_as_they_made_it(engine: Engine) {
        let db = Db::on(engine);
        let made = definitions(&db);
        assert!(made.len() >= 14, "{made:#?}");
        let drops: Vec<String> = made
            .iter()
            .map(|definition| {
                let (kind, rest) = definition.split_once(' ').unwrap();
                let name = rest.split(':').next().unwrap();
                match (engine, kind) {
                    (Engine::Postgresql, "trigger") => {
                        let table = if name.starts_with("quotes") { "quotes" } else { "price_alerts" };
                        format!("DROP TRIGGER {name} ON {table};")
                    }
                    _ => format!("DROP {} {name};", kind.to_uppercase()),
                }
            })
            .collect();
        db.script(&drops.concat());
        assert!(definitions(&db).is_empty());
        // Opening the store repairs it.
        drop(db.pool(1));
        assert_eq!(definitions(&db), made);
    }
}
