//! The claim and its events, end to end on a real database (an SQLite file,
//! and a database of a real PostgreSQL server: every test runs on both) and a
//! real loopback HTTP receiver: VO-348's test plan and more.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Barrier};

use common::{Db, Engine, Receiver, deliver_pending, lib_config as config, tick};
use price_alertd::config::{Config, Scope};
use price_alertd::evaluate;

on_every_engine! {
    fn a_matching_alert_evaluated_once_triggers_exactly_one_event(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let config = config(&db, &receiver.url);
        let id = db.add_alert("AAPL", "above", 200.0);
        db.set_quote("AAPL", 201.5);

        let report = tick(&db, &config);
        assert_eq!((report.evaluated, report.triggered), (1, 1));
        // A second tick finds nothing left to claim.
        assert_eq!(tick(&db, &config).triggered, 0);
        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!(totals.delivered, 1);

        let received = receiver.received();
        assert_eq!(received.len(), 1);
        let event = received[0].json();
        assert_eq!(event["type"], "price_alert");
        assert_eq!(event["data"]["alert_id"], id);
        assert_eq!(event["data"]["ticker"], "AAPL");
        assert_eq!(event["data"]["price"], 201.5);
        assert_eq!(event["data"]["user_id"], "u1");
        assert_eq!(received[0].header("webhook-id"), event["id"].as_str());
        assert_eq!(received[0].header("content-type"), Some("application/json"));
        assert_eq!(
            received[0].header("x-eventsource-event"),
            Some("price_alert")
        );
        assert!(
            received[0]
                .header("user-agent")
                .unwrap()
                .starts_with("price-alertd/")
        );
        assert!(
            received[0]
                .header("webhook-timestamp")
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert_eq!(db.scalar("SELECT enabled FROM price_alerts"), 0);
        assert_eq!(
            db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'"),
            1
        );
    }
}

on_every_engine! {
    fn an_alert_already_disabled_produces_no_event(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let config = config(&db, &receiver.url);
        db.add_alert("AAPL", "above", 200.0);
        db.execute("UPDATE price_alerts SET enabled = 0", values![]);
        db.set_quote("AAPL", 250.0);

        assert_eq!(tick(&db, &config).triggered, 0);
        assert_eq!(deliver_pending(&db.pool(4), &config).delivered, 0);
        assert!(receiver.received().is_empty());
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), 0);
    }
}

/// Runs `evaluators` ticks at once, each with its own connection pool and
/// rayon pool, as separate daemons would; returns how many each claimed.
fn evaluate_concurrently(db: &Db, config: &Config, evaluators: usize) -> Vec<u64> {
    let barrier = Arc::new(Barrier::new(evaluators));
    let handles: Vec<_> = (0..evaluators)
        .map(|_| {
            let (barrier, config) = (barrier.clone(), config.clone());
            let pool = db.pool(config.evaluator.threads as u32 + 2);
            std::thread::spawn(move || {
                let workers = evaluate::thread_pool(config.evaluator.threads).unwrap();
                barrier.wait();
                common::tick_on(&pool, &workers, &config, &Scope::all()).triggered
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect()
}

on_every_engine! {
    fn vo_348_ten_concurrent_evaluators_of_one_alert_send_one_event(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let config = config(&db, &receiver.url);
        let id = db.add_alert("AAPL", "above", 200.0);
        db.set_quote("AAPL", 210.0);

        let claimed = evaluate_concurrently(&db, &config, 10);
        assert_eq!(
            claimed.iter().sum::<u64>(),
            1,
            "claims per evaluator: {claimed:?}"
        );
        deliver_pending(&db.pool(4), &config);

        let received = receiver.received();
        assert_eq!(received.len(), 1, "exactly one POST");
        assert_eq!(received[0].json()["data"]["alert_id"], id);
        assert_eq!(db.scalar("SELECT enabled FROM price_alerts"), 0);
        assert_eq!(db.scalar("SELECT count(*) FROM price_alerts WHERE triggered_at IS NOT NULL AND triggered_price = 210.0"), 1);
    }
}

on_every_engine! {
    fn vo_348_ten_concurrent_evaluators_of_a_thousand_alerts_send_one_event_per_match(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let config = config(&db, &receiver.url);
        let tickers = ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN"];
        for ticker in tickers {
            db.set_quote(ticker, 100.0);
        }
        let mut matching = BTreeSet::new();
        for n in 0..1000 {
            // Even alerts match (target at or under the price), odd ones do not.
            let (condition, target) = match n % 4 {
                0 => ("above", 90.0 + (n % 10) as f64),
                1 => ("above", 100.5 + (n % 7) as f64),
                2 => ("below", 100.0 + (n % 5) as f64),
                _ => ("below", 99.0 - (n % 3) as f64),
            };
            let id = db.add_alert(tickers[n % tickers.len()], condition, target);
            if n % 2 == 0 {
                matching.insert(id);
            }
        }

        let claimed = evaluate_concurrently(&db, &config, 10);
        assert_eq!(
            claimed.iter().sum::<u64>(),
            500,
            "claims per evaluator: {claimed:?}"
        );
        deliver_pending(&db.pool(4), &config);

        let received = receiver.received();
        let mut per_alert: HashMap<i64, usize> = HashMap::new();
        for request in &received {
            *per_alert
                .entry(request.json()["data"]["alert_id"].as_i64().unwrap())
                .or_default() += 1;
        }
        assert!(
            per_alert.values().all(|&count| count == 1),
            "an alert was notified twice"
        );
        assert_eq!(per_alert.keys().copied().collect::<BTreeSet<_>>(), matching);
        assert_eq!(
            db.ids("SELECT id FROM price_alerts WHERE enabled = 0")
                .into_iter()
                .collect::<BTreeSet<_>>(),
            matching
        );
        let ids: BTreeSet<&str> = received
            .iter()
            .map(|request| request.header("webhook-id").unwrap())
            .collect();
        assert_eq!(ids.len(), 500, "every event has its own id");
    }
}

on_every_engine! {
    fn a_re_armed_alert_triggers_again_under_a_new_event_id(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let config = config(&db, &receiver.url);
        db.add_alert("AAPL", "below", 150.0);
        db.set_quote("AAPL", 140.0);
        tick(&db, &config);
        db.execute("UPDATE price_alerts SET enabled = 1", values![]);
        tick(&db, &config);
        deliver_pending(&db.pool(4), &config);

        let received = receiver.received();
        assert_eq!(received.len(), 2);
        assert_ne!(
            received[0].header("webhook-id"),
            received[1].header("webhook-id")
        );
    }
}

on_every_engine! {
    fn a_failing_webhook_gets_the_same_event_again_until_it_answers_2xx(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        receiver.fail_with(&[503, 500]);
        let config = config(&db, &receiver.url);
        db.add_alert("AAPL", "above", 1.0);
        db.set_quote("AAPL", 2.0);
        tick(&db, &config);

        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!((totals.failed, totals.delivered), (2, 1));
        assert_eq!(receiver.received().len(), 1);
        assert_eq!(db.scalar("SELECT attempts FROM outbox"), 3);
    }
}

on_every_engine! {
    fn a_dead_webhook_loses_nothing(engine: Engine) {
        let db = Db::on(engine);
        // Nothing listens on this port: every attempt is a connection error.
        let url = format!("http://127.0.0.1:{}/events", common::free_port());
        let mut config = config(&db, &url);
        config.webhook.drain_timeout = std::time::Duration::from_secs(1);
        for n in 0..20 {
            db.add_alert("AAPL", "above", n as f64);
        }
        db.set_quote("AAPL", 100.0);
        assert_eq!(tick(&db, &config).triggered, 20);

        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!(totals.delivered, 0);
        assert!(totals.failed >= 20);
        // Retried until the (short) schedule ran out, then kept as dead letters:
        // every event is still there, unleased, with the same id.
        assert_eq!(
            db.scalar(
                "SELECT count(*) FROM outbox WHERE state IN ('pending', 'dead') AND lease_owner IS NULL"
            ),
            20
        );
    }
}

on_every_engine! {
    fn event_ids_are_unique_across_databases_and_shared_by_every_daemon_on_one(engine: Engine) {
        let receiver = Receiver::start();
        // Two installations whose first alert, first arming, triggers alike.
        let triggered_ids = |db: &Db| {
            let config = config(db, &receiver.url);
            db.set_quote("AAPL", 300.0);
            tick(db, &config);
            db.texts("SELECT event_id FROM outbox ORDER BY id")
        };
        let (first, second) = (Db::on(engine), Db::on(engine));
        assert_eq!(first.add_alert("AAPL", "above", 200.0), 1);
        assert_eq!(second.add_alert("AAPL", "above", 200.0), 1);
        let (a, b) = (triggered_ids(&first), triggered_ids(&second));
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_ne!(a[0], b[0], "two databases sent the same event id");

        // On one database, every daemon (here: a fresh pool, as after a restart
        // or on another process) claims under the same installation id, and the
        // id of an arming is what it was.
        let installation = |id: &str| id.rsplitn(3, '_').nth(2).unwrap().to_owned();
        first.add_alert("AAPL", "above", 250.0);
        first.execute("UPDATE price_alerts SET enabled = 1 WHERE id = 1", values![]);
        let later = triggered_ids(&first);
        assert_eq!(later.len(), 3);
        assert_eq!(later[0], a[0]);
        assert!(
            later
                .iter()
                .all(|id| installation(id) == installation(&a[0])),
            "{later:?}"
        );
        assert_ne!(later[2], a[0], "a re-armed alert triggers under a new id");
    }
}

/// The application holds a row lock (an open transaction editing an alert's
/// note, as a slow web request would) for longer than `busy_timeout`: the
/// ticks meanwhile claim every other alert and do not fail; the held alerts
/// (an `above`, a crossing, one due to expire, one due to re-arm, one whose
/// price came back past its band) are each taken by the first tick after
/// the lock is gone, though nothing about
/// them or their quotes changed in between. (PostgreSQL's: SQLite has no row
/// locks, and its whole-database lock keeps `busy_timeout`.)
#[test]
fn a_row_locked_by_the_application_delays_only_itself() {
    let db = Db::on(Engine::Postgresql);
    let receiver = Receiver::start();
    let config = config(&db, &receiver.url);
    let mut database = db.database_config();
    database.busy_timeout = std::time::Duration::from_millis(500);
    let pool = price_alertd::store::open(&database, 12).unwrap();
    let workers = evaluate::thread_pool(config.evaluator.threads).unwrap();
    let tick = || common::tick_on(&pool, &workers, &config, &Scope::all());

    let others: Vec<i64> = (0..50)
        .map(|_| db.add_alert("AAPL", "above", 100.0))
        .collect();
    let held_above = db.add_alert("AAPL", "above", 100.0);
    let held_crossing = db.add_alert("MSFT", "crossing_up", 150.0);
    let held_expiring = db.add_alert("IBM", "above", 1000.0);
    db.execute(
        "UPDATE price_alerts SET expires_at = '2020-01-01T00:00:00Z' WHERE id = $1",
        values![held_expiring],
    );
    let held_cooling = db.add_alert("ORCL", "above", 1000.0);
    db.execute(
        "UPDATE price_alerts SET enabled = 0, cooldown = '1s', rearm_at = 1 WHERE id = $1",
        values![held_cooling],
    );
    // Fired at 1000 with a band of 1%: waits for SAP at or below 990.
    let held_banded = db.add_alert("SAP", "above", 1000.0);
    db.execute(
        "UPDATE price_alerts SET enabled = 0, cooldown = '1s', rearm_band = 1, rearm_at = 1,
             return_below = 990 WHERE id = $1",
        values![held_banded],
    );
    db.set_quote("MSFT", 140.0);
    db.set_quote("IBM", 1.0);
    db.set_quote("ORCL", 1.0);
    db.set_quote("SAP", 1000.0);
    // Observes MSFT below the crossing's level; nothing else is due yet but
    // the expiry and the re-arm, which this first tick must leave alone too.
    let mut application =
        postgres::Client::connect(&db.cluster().url(db.database_name()), postgres::NoTls).unwrap();
    let held = [
        held_above,
        held_crossing,
        held_expiring,
        held_cooling,
        held_banded,
    ];
    application
        .batch_execute(&format!(
            "BEGIN; UPDATE price_alerts SET note = 'editing' WHERE id IN ({})",
            held.map(|id| id.to_string()).join(", ")
        ))
        .unwrap();
    let first = tick();
    assert_eq!((first.expired, first.rearmed), (0, 0), "{first:?}");

    db.set_quote("AAPL", 101.0);
    db.set_quote("MSFT", 160.0);
    db.set_quote("SAP", 985.0);
    let report = tick();
    assert_eq!(report.triggered, 50, "every other alert: {report:?}");
    assert_eq!((report.locked, report.returned), (2, 0), "{report:?}");
    // Held for longer than busy_timeout: the next ticks neither fail nor
    // take anything, and nothing moved in between.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let again = tick();
    assert_eq!(
        (again.triggered, again.locked, again.returned),
        (0, 2, 0),
        "{again:?}"
    );

    application.batch_execute("COMMIT").unwrap();
    let after = tick();
    assert_eq!(
        (
            after.triggered,
            after.locked,
            after.expired,
            after.rearmed,
            after.returned
        ),
        (2, 0, 1, 2, 1),
        "{after:?}"
    );
    assert_eq!(tick().triggered, 0);
    let claimed = db.ids("SELECT alert_id FROM outbox ORDER BY alert_id");
    let mut expected = others.clone();
    expected.extend([held_above, held_crossing]);
    assert_eq!(claimed, expected, "each once");
    let crossing_price = db.texts(&format!(
        "SELECT triggered_price::text FROM price_alerts WHERE id = {held_crossing}"
    ));
    assert_eq!(crossing_price, ["160"]);
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM price_alerts WHERE id = {held_expiring} AND expired_at IS NOT NULL"
        )),
        1
    );
}

on_every_engine! {
    /// A tick that fails part-way (here an application's trigger refuses to
    /// let one alert be disabled, so one claim transaction fails) says what
    /// it committed and what it did not: every alert counted as triggered
    /// has its event queued, the rest are counted as unclaimed, and the next
    /// tick, once the trigger is gone, claims exactly those.
    fn a_tick_that_fails_part_way_says_what_it_committed(engine: Engine) {
        let db = Db::on(engine);
        let receiver = Receiver::start();
        for _ in 0..60 {
            db.add_alert("AAPL", "above", 100.0);
        }
        let refused = db.add_alert("AAPL", "above", 100.0);
        for _ in 0..60 {
            db.add_alert("AAPL", "above", 100.0);
        }
        match engine {
            Engine::Sqlite => db.execute(
                &format!(
                    "CREATE TRIGGER refuse BEFORE UPDATE OF enabled ON price_alerts
                     WHEN NEW.id = {refused} AND NEW.enabled = 0
                     BEGIN SELECT RAISE(ABORT, 'refused by the application'); END"
                ),
                values![],
            ),
            Engine::Postgresql => db.postgres_app().batch_execute(
                &format!(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                       IF NEW.id = {refused} AND NEW.enabled::text IN ('0', 'false') THEN
                         RAISE EXCEPTION 'refused by the application';
                       END IF;
                       RETURN NEW;
                     END $$;
                     CREATE TRIGGER refuse BEFORE UPDATE ON price_alerts
                     FOR EACH ROW EXECUTE FUNCTION refuse()"
                ),
            ).map(|_| 1).unwrap(),
        };
        db.set_quote("AAPL", 101.0);
        let text = common::config_text(&db, &receiver.url, "0 0 0 1 1 *")
            .replace("threads = 10", "threads = 10\nclaim_batch = 10");
        let path = db.write_config(&text);
        let output = common::binary()
            .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&output.stdout).to_string();
        assert_eq!(output.status.code(), Some(1), "{line}");
        let count = |key: &str| -> u64 {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} in {line}"))
                .parse()
                .unwrap()
        };
        assert!(line.starts_with("job=evaluate result=failed "), "{line}");
        let queued = db.scalar("SELECT count(*) FROM outbox") as u64;
        assert_eq!(count("triggered"), queued, "{line}");
        assert_eq!(count("matched"), 121, "{line}");
        assert_eq!(count("triggered") + count("unclaimed"), 121, "{line}");
        assert!(count("unclaimed") >= 1, "{line}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("refused by the application"), "{stderr}");

        let drop_it = match engine {
            Engine::Sqlite => "DROP TRIGGER refuse",
            Engine::Postgresql => "DROP TRIGGER refuse ON price_alerts",
        };
        db.execute(drop_it, values![]);
        let next = common::cli(&path, &["run-job", "evaluate"]);
        assert!(
            next.contains(&format!(" triggered={} ", count("unclaimed"))),
            "{next}"
        );
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), 121);
        assert_eq!(
            db.scalar("SELECT count(DISTINCT alert_id) FROM outbox"),
            121
        );
    }
}

on_every_engine! {
    /// A claim leases the events it queues to its process's deliverer, as
    /// far as the deliverer has room, and hands them over in memory
    /// (`deliver::Handoff`): those are sent without an exchange leasing
    /// them, the rest are leased by the deliverer once the claim wakes it,
    /// and each event arrives once. At the stop nothing is left leased.
    fn a_claims_leased_events_go_out_through_its_deliverer(engine: Engine) {
        use price_alertd::deliver::{self, Handoff, Webhook};
        use price_alertd::store::outbox::Lessee as _;
        use std::time::Duration;
        use tokio::sync::{Notify, watch};

        // More than a deliverer holds at once (2,048 at most).
        const EVENTS: usize = 3_000;
        let db = Db::on(engine);
        let receiver = Receiver::start();
        let mut config = config(&db, &receiver.url);
        // Leases longer than the test waits: an event handed over and not
        // sent would not arrive in time, its lease run out.
        config.webhook.timeout = Duration::from_secs(60);
        for n in 0..EVENTS {
            db.add_alert("AAPL", "above", n as f64);
        }
        db.set_quote("AAPL", 1_000_000.0);
        let pool = db.pool(config.evaluator.threads as u32 + 2);
        let handoff = Arc::new(Handoff::new("one".into(), Arc::new(Notify::new())));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (stop_sender, stop) = watch::channel(None);
        let (_webhook, webhooks) = watch::channel(Webhook::new(&config.webhook).unwrap());
        let delivering = runtime.spawn(deliver::run(
            pool.clone(),
            webhooks,
            handoff.clone(),
            stop,
            Arc::default(),
        ));
        // The deliverer offers its room once it has started.
        common::wait_until("the deliverer's offer", || {
            let asked = handoff.ask(1);
            let offered = asked.is_some();
            handoff.hand(asked, 0, None, std::time::Instant::now());
            offered
        });

        let workers = evaluate::thread_pool(config.evaluator.threads).unwrap();
        let memory = evaluate::TickMemory::default();
        let scope = Scope::all();
        let mut options = common::job_options(&config, &scope, &memory, None, false);
        options.lessee = Some(&*handoff);
        let report = evaluate::tick(&workers, &pool, &options).unwrap();
        assert_eq!(report.triggered, EVENTS as u64);

        assert_eq!(receiver.wait_for_distinct(EVENTS).len(), EVENTS);
        common::wait_until("every event recorded", || {
            db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == EVENTS as i64
        });
        assert_eq!(receiver.arrivals().len(), EVENTS, "an event was sent twice");
        let _ = stop_sender.send(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
        let totals = runtime.block_on(delivering).unwrap();
        assert_eq!(totals.delivered, EVENTS as u64);
        assert_eq!(db.scalar("SELECT count(*) FROM outbox WHERE lease_owner IS NOT NULL"), 0);
    }
}
