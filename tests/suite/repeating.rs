//! Alerts that repeat: with a `cooldown`, a triggered alert is re-armed by
//! the daemon once the cooldown has passed (a new arming: its next event has
//! a new id), until it spent its `max_triggers`; without one it fires once. On each engine, with the ticks'
//! clock injected, and raced by ten threads at once.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::Utc;
use common::{Db, Param, aapl_quote_at, day_fresh_config, minutes, tick_at, tick_on_at};
use price_alertd::config::Scope;

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

/// The event ids queued for an alert, oldest first.
fn events_of(db: &Db, alert: i64) -> Vec<String> {
    db.texts(&format!(
        "SELECT event_id FROM outbox WHERE alert_id = {alert} ORDER BY id"
    ))
}

on_every_engine! {
    fn a_repeating_alert_fires_again_under_a_new_id_each_time_its_cooldown_passed(engine: Engine) {
        let db = Db::on(engine);
        let config = day_fresh_config(&db);
        let repeating = alert(&db, "above", 100.0, Some("15m"));
        let once = alert(&db, "above", 100.0, None);
        let t0 = Utc::now();
        aapl_quote_at(&db, 101.0, t0);

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
        let config = day_fresh_config(&db);
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
            aapl_quote_at(&db, price, at);
            assert_eq!(tick_at(&db, &config, at).triggered, fires, "minute {minute} at {price}");
        }
        assert_eq!(events_of(&db, crossing).len(), 2);
    }
}

on_every_engine! {
    fn a_cooldown_is_cancelled_by_disable_by_clearing_it_and_by_expiry(engine: Engine) {
        let db = Db::on(engine);
        let config = day_fresh_config(&db);
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
        aapl_quote_at(&db, 101.0, t0);
        let first = tick_at(&db, &config, t0);
        assert_eq!((first.triggered, first.malformed_alerts), (3, 1));

        let path = db.write_config(&common::config_text(&db, "http://127.0.0.1:9/", "0 0 * * * *"));
        let cli = |args: &[&str]| common::cli(&path, &[&["alerts"], args].concat());
        let listed = cli(&["list"]);
        let line = |id: i64| {
            listed
                .lines()
                .find(|line| line.split_whitespace().next() == Some(&id.to_string()))
                .unwrap()
                .to_owned()
        };
        assert!(line(disabled).contains(" cooling ") && line(disabled).contains(" 5m "), "{listed}");
        // Enabled, but never judged until its cooldown is mended.
        assert!(line(malformed).contains(" malformed "), "{listed}");
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
        let config = day_fresh_config(&db);
        let repeating = alert(&db, "above", 100.0, Some("1m"));
        let t0 = Utc::now();
        aapl_quote_at(&db, 101.0, t0);
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

/// Records every arming every alert gets, as an application's trigger would:
/// the truth the outbox is checked against.
fn audit_armings(db: &Db) {
    let sql = match db.engine {
        common::Engine::Sqlite => {
            "CREATE TABLE armings (alert_id INTEGER NOT NULL, arming INTEGER NOT NULL);
             CREATE TRIGGER armings_audit AFTER UPDATE OF arming ON price_alerts
             WHEN OLD.arming IS NOT NEW.arming
             BEGIN INSERT INTO armings VALUES (NEW.id, NEW.arming); END;"
        }
        common::Engine::Postgresql => {
            "CREATE TABLE armings (alert_id BIGINT NOT NULL, arming BIGINT NOT NULL);
             CREATE FUNCTION armings_audit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO armings VALUES (NEW.id, NEW.arming); RETURN NULL; END $$;
             CREATE TRIGGER armings_on_insert AFTER INSERT ON price_alerts
             FOR EACH ROW EXECUTE FUNCTION armings_audit();
             CREATE TRIGGER armings_on_update AFTER UPDATE ON price_alerts
             FOR EACH ROW WHEN (OLD.arming IS DISTINCT FROM NEW.arming)
             EXECUTE FUNCTION armings_audit();"
        }
    };
    match db.engine {
        common::Engine::Sqlite => db.app().execute_batch(sql).unwrap(),
        common::Engine::Postgresql => db.postgres_app().batch_execute(sql).unwrap(),
    }
}

on_every_engine! {
    fn three_daemons_sigkilled_at_random_while_alerts_repeat_send_one_event_per_arming(engine: Engine) {
        const ALERTS: usize = 300;
        let db = Db::on(engine);
        audit_armings(&db);
        let receiver = common::Receiver::start_lean();
        let alerts: Vec<(String, &str, f64)> =
            (0..ALERTS).map(|n| (format!("T{}", n % 10), "above", n as f64)).collect();
        db.add_alerts(&alerts);
        db.execute("UPDATE price_alerts SET cooldown = '1s'", &[]);
        // Half of them with a budget of three triggers.
        db.execute("UPDATE price_alerts SET max_triggers = 3 WHERE id % 2 = 0", &[]);
        for n in 0..10 {
            db.set_quote(&format!("T{n}"), 1_000.0);
        }
        let path = db.write_config(&common::config_text(&db, &receiver.url, "* * * * * *"));

        let seed = fastrand::u64(..);
        eprintln!("seed {seed}");
        let mut random = fastrand::Rng::with_seed(seed);
        let mut daemons: Vec<common::Daemon> =
            (0..3).map(|_| common::Daemon::start_quiet(&path)).collect();
        let started = std::time::Instant::now();
        let mut kills = 0;
        while started.elapsed() < Duration::from_secs(8) {
            std::thread::sleep(Duration::from_millis(random.u64(200..1200)));
            let victim = random.usize(..daemons.len());
            daemons[victim].child.kill().unwrap();
            daemons[victim].child.wait().unwrap();
            daemons[victim] = common::Daemon::start_quiet(&path);
            kills += 1;
        }
        // The alerts stop repeating: each fires once more at most, and the
        // survivors deliver everything.
        db.execute("UPDATE price_alerts SET cooldown = NULL", &[]);
        common::wait_until("every alert claimed and every event delivered", || {
            db.scalar("SELECT count(*) FROM price_alerts WHERE enabled = 1 OR rearm_at IS NOT NULL") == 0
                && db.scalar("SELECT count(*) FROM outbox WHERE state <> 'delivered'") == 0
        });
        drop(daemons);

        // Every arming any alert got has exactly one event, and nothing else does.
        let armings: BTreeSet<(i64, i64)> = db
            .rows("SELECT alert_id, arming FROM armings")
            .iter()
            .map(|row| (row[0].integer(), row[1].integer()))
            .collect();
        let events: Vec<(i64, i64)> = db
            .texts("SELECT event_id FROM outbox")
            .iter()
            .map(|id| {
                let mut parts = id.rsplitn(3, '_');
                let arming = parts.next().unwrap().parse().unwrap();
                let alert = parts.next().unwrap().parse().unwrap();
                (alert, arming)
            })
            .collect();
        assert_eq!(events.iter().copied().collect::<BTreeSet<_>>(), armings);
        assert_eq!(events.len(), armings.len(), "one event per arming");
        // The claims counted every trigger once, and none past a budget.
        let mut per_alert = std::collections::BTreeMap::<i64, i64>::new();
        for (alert, _) in &events {
            *per_alert.entry(*alert).or_default() += 1;
        }
        for row in db.rows("SELECT id, trigger_count, coalesce(max_triggers, 0) FROM price_alerts") {
            let (id, count, budget) = (row[0].integer(), row[1].integer(), row[2].integer());
            assert_eq!(per_alert.get(&id).copied().unwrap_or(0), count, "alert {id}'s count");
            assert!(budget == 0 || count <= budget, "alert {id} fired {count} times of {budget}");
        }
        assert!(
            db.scalar("SELECT count(*) FROM price_alerts WHERE trigger_count = max_triggers") > 0,
            "no budget was spent"
        );
        assert!(
            events.len() > 2 * ALERTS,
            "the alerts repeated: {} events after {kills} kills",
            events.len()
        );
        // And each reached the receiver under its id.
        let delivered: BTreeSet<String> = receiver
            .arrivals()
            .iter()
            .filter(|arrival| arrival.status == 200)
            .map(|arrival| arrival.webhook_id.clone())
            .collect();
        assert_eq!(
            delivered,
            db.texts("SELECT event_id FROM outbox").into_iter().collect::<BTreeSet<_>>()
        );
        eprintln!("{} events for {} armings after {kills} kills", events.len(), armings.len());
    }
}
