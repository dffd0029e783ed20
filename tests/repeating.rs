//! Alerts that repeat: with a `cooldown`, a triggered alert is re-armed by
//! the daemon once the cooldown has passed (a new arming: its next event has
//! a new id); without one it fires once. On each engine, with the ticks'
//! clock injected, and raced by ten threads at once.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Db, Param, binary, lib_config, tick_at, tick_on_at};
use price_alertd::config::{Config, Scope};

/// A config whose quotes stay fresh for a day of injected time.
fn config(db: &Db) -> Config {
    let mut config = lib_config(db, "http://127.0.0.1:9/events");
    config.prices.max_age = Duration::from_secs(86_400);
    config
}

fn minutes(at: DateTime<Utc>, minutes: i64) -> DateTime<Utc> {
    at + chrono::Duration::minutes(minutes)
}

/// An alert with `cooldown` (`None`: none); returns its id.
fn alert(db: &Db, condition: &str, target: f64, cooldown: Option<&str>) -> i64 {
    let id = db.add_alert("AAPL", condition, target);
    db.execute(
        "UPDATE price_alerts SET cooldown = $1 WHERE id = $2",
        &[
            cooldown.map_or(Param::Null, |cooldown| Param::Text(cooldown.to_owned())),
            Param::Int(id),
        ],
    );
    id
}

/// Sets AAPL's quote, stamped `at`.
fn quote_at(db: &Db, price: f64, at: DateTime<Utc>) {
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at) VALUES ('AAPL', $1, $2)
         ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
        values![price, price_alertd::store::timestamp(at)],
    );
}

/// The event ids queued for an alert, oldest first.
fn events_of(db: &Db, alert: i64) -> Vec<String> {
    db.texts(&format!(
        "SELECT event_id FROM outbox WHERE alert_id = {alert} ORDER BY id"
    ))
}

on_every_engine! {
    fn a_repeating_alert_fires_again_under_a_new_id_each_time_its_cooldown_passed(engine: Engine) {
        let db = Db::on(engine);
        let config = config(&db);
        let repeating = alert(&db, "above", 100.0, Some("15m"));
        let once = alert(&db, "above", 100.0, None);
        let t0 = Utc::now();
        quote_at(&db, 101.0, t0);

        let first = tick_at(&db, &config, t0);
        assert_eq!((first.triggered, first.rearmed), (2, 0));
        // Still within the cooldown: nothing.
        let cooling = tick_at(&db, &config, minutes(t0, 10));
        assert_eq!((cooling.triggered, cooling.rearmed), (0, 0));
        // Past it: re-armed, judged in the same tick (the price still holds),
        // and claimed again.
        let again = tick_at(&db, &config, minutes(t0, 16));
        assert_eq!((again.triggered, again.rearmed), (1, 1));
        assert_eq!(tick_at(&db, &config, minutes(t0, 20)).triggered, 0);
        assert_eq!(tick_at(&db, &config, minutes(t0, 32)).triggered, 1);

        let events = events_of(&db, repeating);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events.iter().collect::<BTreeSet<_>>().len(),
            3,
            "each trigger a new arming, a new id: {events:?}"
        );
        assert_eq!(events_of(&db, once).len(), 1, "without a cooldown it fires once");
        assert_eq!(
            db.scalar(&format!("SELECT enabled FROM price_alerts WHERE id = {once}")),
            0
        );
    }
}

on_every_engine! {
    fn a_repeating_crossing_fires_on_every_crossing_at_most_once_per_cooldown(engine: Engine) {
        let db = Db::on(engine);
        let config = config(&db);
        let crossing = alert(&db, "crossing_up", 100.0, Some("5m"));
        let t0 = Utc::now();
        // (minute, price, fires): below, up (fires), down, up within the
        // cooldown (no), down after it (re-armed, but no crossing), up (fires).
        let steps = [
            (0, 99.0, 0),
            (1, 101.0, 1),
            (2, 99.0, 0),
            (3, 101.0, 0),
            (7, 99.0, 0),
            (8, 101.0, 1),
            (9, 102.0, 0),
        ];
        for (minute, price, fires) in steps {
            let at = minutes(t0, minute);
            quote_at(&db, price, at);
            assert_eq!(tick_at(&db, &config, at).triggered, fires, "minute {minute} at {price}");
        }
        assert_eq!(events_of(&db, crossing).len(), 2);
    }
}

on_every_engine! {
    fn a_cooldown_is_cancelled_by_disable_by_clearing_it_and_by_expiry(engine: Engine) {
        let db = Db::on(engine);
        let config = config(&db);
        let disabled = alert(&db, "above", 100.0, Some("5m"));
        let cleared = alert(&db, "above", 100.0, Some("5m"));
        let expiring = alert(&db, "above", 100.0, Some("5m"));
        let malformed = alert(&db, "above", 100.0, Some("every so often"));
        let t0 = Utc::now();
        db.execute(
            "UPDATE price_alerts SET expires_at = $1 WHERE id = $2",
            &[
                Param::Text(price_alertd::store::timestamp(minutes(t0, 3))),
                Param::Int(expiring),
            ],
        );
        quote_at(&db, 101.0, t0);
        let first = tick_at(&db, &config, t0);
        assert_eq!((first.triggered, first.malformed_alerts), (3, 1));

        let path = db.write_config(&common::config_text(&db, "http://127.0.0.1:9/", "0 0 * * * *"));
        let cli = |args: &[&str]| {
            let output = binary()
                .args(["--config", path.to_str().unwrap(), "alerts"])
                .args(args)
                .output()
                .unwrap();
            assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        };
        let listed = cli(&["list"]);
        let line = |id: i64| {
            listed
                .lines()
                .find(|line| line.split_whitespace().next() == Some(&id.to_string()))
                .unwrap()
                .to_owned()
        };
        assert!(line(disabled).contains(" cooling ") && line(disabled).contains(" 5m "), "{listed}");
        assert!(line(malformed).contains(" armed "), "{listed}");
        assert!(cli(&["disable", &disabled.to_string()]).contains("disabled"));
        assert!(cli(&["cooldown", &cleared.to_string(), "--none"]).contains("fires once"));

        let later = tick_at(&db, &config, minutes(t0, 10));
        assert_eq!((later.triggered, later.rearmed), (0, 0));
        assert_eq!(
            db.ids("SELECT id FROM price_alerts WHERE enabled = 1 ORDER BY id"),
            [malformed],
            "none of the three re-armed"
        );
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM price_alerts WHERE id = {expiring} AND expired_at IS NOT NULL"
            )),
            1,
            "the one that expired in its cooldown is marked expired"
        );
        assert_eq!(
            db.scalar("SELECT count(*) FROM price_alerts WHERE rearm_at IS NOT NULL"),
            0
        );
        // A cooldown set again applies from the next trigger: re-armed by hand,
        // it repeats.
        assert!(cli(&["cooldown", &cleared.to_string(), "1m"]).contains("re-armed 1m after each trigger"));
        assert!(cli(&["rearm", &cleared.to_string()]).contains("re-armed"));
        assert_eq!(tick_at(&db, &config, minutes(t0, 11)).triggered, 1);
        let back = tick_at(&db, &config, minutes(t0, 13));
        assert_eq!((back.triggered, back.rearmed), (1, 1));
    }
}

on_every_engine! {
    fn ten_threads_ticking_at_once_over_many_cooldowns_send_one_event_per_arming(engine: Engine) {
        // VO-348's race, again and again: each round, ten evaluators tick at
        // the same moment past the cooldown; one re-arms the alert, and one
        // claims that arming.
        const THREADS: usize = 10;
        const ROUNDS: i64 = 6;
        let db = Db::on(engine);
        let config = config(&db);
        let repeating = alert(&db, "above", 100.0, Some("1m"));
        let t0 = Utc::now();
        quote_at(&db, 101.0, t0);
        let barrier = Arc::new(Barrier::new(THREADS));
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let (db, config, barrier) = (&db, &config, barrier.clone());
                scope.spawn(move || {
                    let pool = db.pool(4);
                    let workers = price_alertd::evaluate::thread_pool(2).unwrap();
                    for round in 0..ROUNDS {
                        barrier.wait();
                        tick_on_at(&pool, &workers, config, &Scope::all(), minutes(t0, round * 2));
                        barrier.wait();
                    }
                });
            }
        });
        let events = events_of(&db, repeating);
        assert_eq!(events.len() as i64, ROUNDS, "one event per round: {events:?}");
        // An id is one arming: six ids, six armings, each claimed once.
        assert_eq!(events.iter().collect::<BTreeSet<_>>().len() as i64, ROUNDS);
    }
}
