//! Per-user routing: `{user_id}` in `webhook.url` sends each event to its
//! user's URL (a relay publishes it to that user's channel), on each engine,
//! against a real loopback receiver: the segment percent-encoded, alerts
//! without a user dead letters that say why (or sent where
//! `url_without_user_id` says), a slow user holding back no other user, and
//! each user's events arriving in the order they were queued.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Db, Engine, Receiver, Reply, deliver_pending, lib_config, tick};

/// The receiver's base with `{user_id}` after it.
fn per_user(receiver: &Receiver) -> String {
    format!("{}/{{user_id}}", receiver.url)
}

/// The request path each alert's event was delivered to, by alert id.
fn paths_by_alert(receiver: &Receiver) -> BTreeMap<i64, String> {
    receiver
        .received()
        .iter()
        .map(|received| {
            let alert = received.json()["data"]["alert_id"].as_i64().unwrap();
            (alert, received.uri.clone())
        })
        .collect()
}

on_every_engine! {
    fn each_event_goes_to_its_users_url_with_the_user_id_as_one_encoded_segment(engine: Engine) {
        let receiver = Receiver::start();
        let db = Db::on(engine);
        let config = lib_config(&db, &per_user(&receiver));
        let alice = db.add_alert_of(Some("alice"));
        let slashed = db.add_alert_of(Some("bob smith/../admin"));
        let accented = db.add_alert_of(Some("émile?x=1#y"));
        let nobody = db.add_alert_of(None);
        let empty = db.add_alert_of(Some(" "));
        let dots = db.add_alert_of(Some(".."));
        db.set_quote("AAPL", 2.0);
        assert_eq!(tick(&db, &config).triggered, 6);

        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!((totals.delivered, totals.dead), (3, 3));
        let paths = paths_by_alert(&receiver);
        assert_eq!(paths[&alice], "/events/alice");
        assert_eq!(paths[&slashed], "/events/bob%20smith%2F..%2Fadmin");
        assert_eq!(paths[&accented], "/events/%C3%A9mile%3Fx%3D1%23y");
        assert_eq!(receiver.arrivals().len(), 3, "no request for the others");
        let reasons: BTreeMap<i64, String> = db
            .rows("SELECT alert_id, last_error FROM outbox WHERE state = 'dead'")
            .iter()
            .map(|row| (row[0].integer(), row[1].text()))
            .collect();
        for alert in [nobody, empty] {
            assert!(reasons[&alert].contains("the alert has no user_id"), "{reasons:?}");
            assert!(reasons[&alert].contains("url_without_user_id"), "{reasons:?}");
        }
        assert!(reasons[&dots].contains("cannot be a path segment"), "{reasons:?}");

        // With somewhere to send them, a replay delivers the events without
        // a user there, under their ids; the user id that cannot be a
        // segment stays a dead letter.
        let mut config = config;
        config.webhook.url_without_user_id =
            Some(format!("{}/unassigned", receiver.url).parse().unwrap());
        let ids = db.texts("SELECT event_id FROM outbox WHERE state = 'dead' ORDER BY id");
        let mut connection = db.pool(1).get().unwrap();
        price_alertd::store::outbox::replay(&mut connection, &ids).unwrap();
        drop(connection);
        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!((totals.delivered, totals.dead), (2, 1));
        let paths = paths_by_alert(&receiver);
        assert_eq!(paths[&nobody], "/events/unassigned");
        assert_eq!(paths[&empty], "/events/unassigned");
        assert!(!paths.contains_key(&dots));
    }
}

on_every_engine! {
    fn a_slow_users_channel_holds_back_no_other_user_and_each_user_gets_their_events_in_order(engine: Engine) {
        const SLOW_EVENTS: usize = 8;
        const EACH: usize = 30;
        let receiver = Receiver::start();
        // Every request to the slow user's channel takes 250 ms.
        receiver.set_default_for("/events/slow", Reply::hang(Duration::from_millis(250)));
        let db = Db::on(engine);
        let mut config = lib_config(&db, &per_user(&receiver));
        config.webhook.concurrency = 4;
        // The slow user's events first in the queue, then the others'.
        for _ in 0..SLOW_EVENTS {
            db.add_alert_of(Some("slow"));
        }
        for n in 0..EACH * 3 {
            db.add_alert_of(Some(["a", "b", "c"][n % 3]));
        }
        db.set_quote("AAPL", 2.0);
        assert_eq!(tick(&db, &config).triggered as usize, SLOW_EVENTS + EACH * 3);

        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!(totals.delivered as usize, SLOW_EVENTS + EACH * 3);
        let arrivals = receiver.arrivals();
        let user_of = |uri: &str| uri.trim_start_matches("/events/").to_owned();
        // The others were all delivered while the slow user's first few
        // requests were still under way.
        let last_other = arrivals
            .iter()
            .rposition(|arrival| user_of(&arrival.uri) != "slow")
            .unwrap();
        let slow_before: usize = arrivals[..last_other]
            .iter()
            .filter(|arrival| user_of(&arrival.uri) == "slow")
            .count();
        assert!(
            slow_before <= 3,
            "the other users waited for {slow_before} of the slow user's requests"
        );
        // Each user's events arrived in the order they were queued, one
        // request at a time.
        let queued: BTreeMap<String, i64> = db
            .texts_and_ids("SELECT event_id, id FROM outbox")
            .into_iter()
            .collect();
        for user in ["slow", "a", "b", "c"] {
            let order: Vec<i64> = arrivals
                .iter()
                .filter(|arrival| user_of(&arrival.uri) == user)
                .map(|arrival| queued[&arrival.webhook_id])
                .collect();
            assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{user}: {order:?}");
        }
    }
}

on_every_engine! {
    fn leasing_shares_the_rows_among_users_and_a_user_has_one_request_in_flight(engine: Engine) {
        // Eight users with far more events each than a lease's share, queued
        // one user after another: every user has a request under way from
        // the first moments, and never two at once.
        const ANSWER: Duration = Duration::from_millis(20);
        let receiver = Receiver::start();
        receiver.set_default(Some(Reply::hang(ANSWER)));
        let db = Db::on(engine);
        let mut config = lib_config(&db, &per_user(&receiver));
        config.webhook.concurrency = 8;
        for user in 0..8 {
            for _ in 0..40 {
                db.add_alert_of(Some(&format!("user{user}")));
            }
        }
        db.set_quote("AAPL", 2.0);
        assert_eq!(tick(&db, &config).triggered, 320);
        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!(totals.delivered, 320);
        let arrivals = receiver.arrivals();
        assert_eq!(arrivals.len(), 320, "each event once");
        let first: std::collections::BTreeSet<&str> =
            arrivals[..8].iter().map(|arrival| arrival.uri.as_str()).collect();
        assert_eq!(first.len(), 8, "the first requests went to {first:?}");
        let mut last_of: BTreeMap<&str, std::time::Instant> = BTreeMap::new();
        for arrival in &arrivals {
            if let Some(previous) = last_of.insert(&arrival.uri, arrival.at) {
                // The previous request of this user was answered first.
                assert!(
                    arrival.at.duration_since(previous) >= ANSWER,
                    "two requests of {} at once",
                    arrival.uri
                );
            }
        }
    }
}

on_every_engine! {
    fn events_queued_before_routing_by_user_take_their_user_from_their_bodies(engine: Engine) {
        let db = Db::on(engine);
        db.execute(
            r#"INSERT INTO outbox (event_id, alert_id, body, created_at, next_attempt_at, state)
               VALUES ('a', 1, '{"data":{"user_id":"u/1"}}', 'x', 0, 'pending'),
                      ('b', 2, '{"data":{"user_id":null}}', 'x', 0, 'dead'),
                      ('c', 3, '{"data":{"user_id":"u3"}}', 'x', 0, 'delivered')"#,
            &[],
        );
        // The database as the schema before routing left it: no
        // outbox.user_id, no rearm_at (the application's own cooldown
        // column, which it may have had, stays), no change notifications
        // nor reacting members, and quotes' change numbers in their rows
        // (from a counter, on SQLite), not in the change log; no trigger
        // counts (the application's own snoozed_until and max_triggers,
        // which it may have had, stay); no delivery attempts, no holds, no
        // users' channels.
        match engine {
            Engine::Sqlite => db
                .app()
                .execute_batch(
                    "DROP INDEX outbox_channel;
                     ALTER TABLE outbox DROP COLUMN channel_seq;
                     ALTER TABLE outbox DROP COLUMN channel_prev;
                     DROP TABLE stream_channels;
                     DROP TABLE stream_key;
                     ALTER TABLE outbox DROP COLUMN user_id;
                     DROP INDEX price_alerts_snoozed;
                     DROP INDEX price_alerts_upper;
                     DROP INDEX price_alerts_return_below;
                     DROP INDEX price_alerts_return_above;
                     DROP INDEX price_alerts_rearm;
                     ALTER TABLE price_alerts DROP COLUMN return_below;
                     ALTER TABLE price_alerts DROP COLUMN return_above;
                     ALTER TABLE price_alerts DROP COLUMN trigger_count;
                     ALTER TABLE price_alerts DROP COLUMN rearm_at;
                     DROP TABLE job_reactors;
                     DROP TABLE change_log;
                     DROP TABLE change_log_pruned;
                     DROP TABLE delivery_attempts;
                     DROP TABLE job_holds;
                     CREATE TABLE change_counter (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
                     INSERT INTO change_counter (id, last) VALUES (1, 0);
                     ALTER TABLE quotes ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
                     CREATE INDEX quotes_changed ON quotes (change_seq);
                     PRAGMA user_version = 7;",
                )
                .unwrap(),
            Engine::Postgresql => db
                .postgres_app()
                .batch_execute(
                    "ALTER TABLE outbox DROP COLUMN channel_seq;
                     ALTER TABLE outbox DROP COLUMN channel_prev;
                     DROP TABLE stream_channels;
                     DROP TABLE stream_key;
                     ALTER TABLE outbox DROP COLUMN user_id;
                     DROP INDEX price_alerts_snoozed;
                     DROP INDEX price_alerts_upper;
                     DROP INDEX price_alerts_return_below;
                     DROP INDEX price_alerts_return_above;
                     ALTER TABLE price_alerts DROP COLUMN return_below;
                     ALTER TABLE price_alerts DROP COLUMN return_above;
                     ALTER TABLE price_alerts DROP COLUMN trigger_count;
                     ALTER TABLE price_alerts DROP COLUMN rearm_at;
                     DROP FUNCTION price_alertd_quotes_changed() CASCADE;
                     DROP FUNCTION price_alertd_notify_alert() CASCADE;
                     DROP TABLE job_reactors;
                     DROP TABLE change_log;
                     DROP TABLE change_log_pruned;
                     DROP TABLE delivery_attempts;
                     DROP TABLE job_holds;
                     ALTER TABLE quotes ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
                     CREATE FUNCTION quotes_track() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         NEW.change_seq := pg_current_xact_id()::text::bigint;
                         RETURN NEW;
                     END $$;
                     CREATE TRIGGER quotes_changed_on_insert BEFORE INSERT ON quotes
                     FOR EACH ROW EXECUTE FUNCTION quotes_track();
                     CREATE TRIGGER quotes_changed_on_update BEFORE UPDATE ON quotes
                     FOR EACH ROW EXECUTE FUNCTION quotes_track();
                     UPDATE price_alertd_schema SET version = 1;",
                )
                .unwrap(),
        }
        drop(db.pool(1));
        // Delivered events are never routed again.
        assert_eq!(
            db.texts("SELECT coalesce(user_id, 'NULL') FROM outbox ORDER BY id"),
            ["u/1", "NULL", "NULL"]
        );
    }
}

#[test]
fn check_config_shows_the_template_and_what_becomes_of_events_without_a_user() {
    let db = Db::new();
    let check = |extra: &str| {
        let text =
            common::config_text(&db, "http://127.0.0.1:8080/events/{user_id}", "0 * * * * *")
                .replace("[webhook]\n", &format!("[webhook]\n{extra}"));
        common::cli(&db.write_config(&text), &["check-config"])
    };
    let shown = check("");
    assert!(
        shown.contains("webhook   http://127.0.0.1:8080/events/{user_id} (unsigned)"),
        "{shown}"
    );
    assert!(
        shown.contains("an alert without a user_id: a dead letter"),
        "{shown}"
    );
    let shown = check("url_without_user_id = \"http://u:p@127.0.0.1:8080/events/nobody\"\n");
    assert!(
        shown.contains("an alert without a user_id: to http://u:***@127.0.0.1:8080/events/nobody"),
        "{shown}"
    );
}
