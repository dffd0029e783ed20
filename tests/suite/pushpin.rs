//! The batch relay: `webhook.format = "pushpin"` publishes several events a
//! request to the real Pushpin, each on its user's channel, on each engine.
//! Subscribers through Pushpin get exactly their user's events, once, in
//! queue order, in far fewer requests than events; a batch is signed as a
//! whole and each of its events on its own; a failed batch retries each of
//! its events under its id, and a refused one makes each a dead letter;
//! deliverers side by side (as daemons on one database) place each user's
//! events in one chain. Through the daemon's stream origin, a stream that
//! comes back gets exactly the events it missed.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use common::{
    Answer, Body, Db, HttpServer, Pushpin, Receiver, deliver_pending, deliver_pending_as,
    lib_config, tick,
};
use price_alertd::config::{Config, Secret, WebhookFormat};

/// A config publishing to `url` in Pushpin's format, `batch` events a request.
fn pushpin_config(db: &Db, url: &str, batch: usize) -> Config {
    let mut config = lib_config(db, url);
    config.webhook.format = WebhookFormat::Pushpin;
    config.webhook.batch = batch;
    config.webhook.concurrency = 4;
    config
}

/// A stand-in for the application's stream endpoint behind Pushpin: a
/// stream of `/api/stream/<segment>` subscribes to `user/<segment>`.
fn origin() -> HttpServer {
    HttpServer::start(
        0,
        Arc::new(|request| {
            Box::pin(async move {
                let segment = request
                    .uri
                    .strip_prefix("/api/stream/")
                    .unwrap_or_default()
                    .to_owned();
                Answer {
                    status: 200,
                    headers: vec![
                        ("content-type", "text/event-stream".to_owned()),
                        ("grip-hold", "stream".to_owned()),
                        ("grip-channel", format!("user/{segment}")),
                    ],
                    body: Body::Text(String::new()),
                }
            })
        }),
    )
}

on_every_engine! {
    fn subscribers_get_exactly_their_users_events_once_in_order_in_few_requests(engine: Engine) {
        let origin = origin();
        let pushpin = Pushpin::start(origin.port);
        let users = [("alice", "alice", 60), ("bob", "bob", 45), ("a/b c", "a%2Fb%20c", 20)];
        let subscribers: Vec<_> = users
            .iter()
            .map(|(_, segment, _)| pushpin.subscribe(&format!("/api/stream/{segment}")))
            .collect();
        let db = Db::on(engine);
        let config = pushpin_config(&db, &pushpin.publish_url(), 25);
        // The users' alerts interleaved, and a few without a user.
        let mut left: Vec<usize> = users.iter().map(|(_, _, count)| *count).collect();
        while left.iter().any(|count| *count > 0) {
            for (index, (user, _, _)) in users.iter().enumerate() {
                if left[index] > 0 {
                    db.add_alert_of(Some(user));
                    left[index] -= 1;
                }
            }
        }
        for _ in 0..3 {
            db.add_alert_of(None);
        }
        db.set_quote("AAPL", 2.0);
        assert_eq!(tick(&db, &config).triggered, 128);

        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!((totals.delivered, totals.dead), (125, 3));
        for ((user, _, count), subscriber) in users.iter().zip(&subscribers) {
            let queued = db.texts(&format!(
                "SELECT event_id FROM outbox WHERE user_id = '{user}' ORDER BY id"
            ));
            assert_eq!(queued.len(), *count);
            let events = subscriber.wait_for(*count);
            let got: Vec<String> = events.iter().map(|event| event.id.clone().unwrap()).collect();
            assert_eq!(got, queued, "{user}'s stream: their events, each once, in queue order");
            // Each took the next place on the user's channel, after the one before it.
            let chain = db.rows(&format!(
                "SELECT channel_seq, channel_prev FROM outbox WHERE user_id = '{user}' ORDER BY id"
            ));
            let mut prev = "start".to_owned();
            for (n, (row, id)) in chain.iter().zip(&queued).enumerate() {
                assert_eq!((row[0].integer(), row[1].text()), (n as i64 + 1, prev.clone()));
                prev = id.clone();
            }
            for event in &events {
                assert_eq!(event.event, "price_alert");
                let body: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(body["id"], event.id.clone().unwrap().as_str());
                assert_eq!(body["data"]["user_id"], *user);
            }
        }
        let (requests, items) = pushpin.published();
        assert_eq!(items, 125, "every event published once");
        assert!(
            requests <= 12,
            "{requests} requests for 125 events in batches of 25 (a user's rows wait for their request in flight)"
        );
        let reasons = db.texts("SELECT last_error FROM outbox WHERE state = 'dead'");
        assert!(
            reasons.iter().all(|reason| reason.contains("the alert has no user_id")),
            "{reasons:?}"
        );
        // Nothing more arrives.
        std::thread::sleep(std::time::Duration::from_millis(300));
        for ((_, _, count), subscriber) in users.iter().zip(&subscribers) {
            assert_eq!(subscriber.count(), *count);
        }
    }
}

/// The items of a publish request: (event id, channel, meta, the event's
/// body as its SSE content carries it).
fn items(body: &str) -> Vec<(String, String, serde_json::Value, String)> {
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let content = item["formats"]["http-stream"]["content"].as_str().unwrap();
            let data: Vec<&str> = content
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .collect();
            (
                item["id"].as_str().unwrap().to_owned(),
                item["channel"].as_str().unwrap().to_owned(),
                item["meta"].clone(),
                data.join("\n"),
            )
        })
        .collect()
}

on_every_engine! {
    fn a_batch_verifies_as_a_whole_and_each_event_on_its_own_and_fails_event_by_event(engine: Engine) {
        const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let secret = Secret::parse(SECRET).unwrap();
        let receiver = Receiver::start();
        let db = Db::on(engine);
        let mut config = pushpin_config(&db, &receiver.url, 10);
        config.webhook.secrets = vec![secret.clone()];
        config.webhook.concurrency = 1;
        for n in 0..30 {
            db.add_alert_of(Some(&format!("u{}", n % 7)));
        }
        db.set_quote("AAPL", 2.0);
        assert_eq!(tick(&db, &config).triggered, 30);
        // The first request fails and is retried; the second is refused.
        receiver.fail_with(&[503, 400]);

        let totals = deliver_pending(&db.pool(4), &config);
        let arrivals = receiver.arrivals();
        let failed: Vec<String> = items(&arrivals[0].body).into_iter().map(|item| item.0).collect();
        let refused: Vec<String> = items(&arrivals[1].body).into_iter().map(|item| item.0).collect();
        assert_eq!(totals.dead as usize, refused.len());
        assert_eq!(totals.delivered as usize, 30 - refused.len());
        assert!(!failed.is_empty() && failed.len() <= 10, "{failed:?}");
        // The failed batch's events are due again together: retried in one
        // request, in the order they went.
        let retried: Vec<Vec<String>> = arrivals[2..]
            .iter()
            .map(|arrival| {
                items(&arrival.body)
                    .into_iter()
                    .map(|item| item.0)
                    .filter(|id| failed.contains(id))
                    .collect::<Vec<_>>()
            })
            .filter(|ids| !ids.is_empty())
            .collect();
        assert_eq!(retried, std::slice::from_ref(&failed));

        // Each event's own record: the retried ones took two attempts and
        // were delivered under their ids, the refused ones are dead letters.
        let rows: BTreeMap<String, (String, i64)> = db
            .rows("SELECT event_id, state, attempts FROM outbox")
            .iter()
            .map(|row| (row[0].text(), (row[1].text(), row[2].integer())))
            .collect();
        for id in &failed {
            assert_eq!(rows[id], ("delivered".to_owned(), 2), "{id}");
        }
        for id in &refused {
            assert_eq!(rows[id].0, "dead", "{id}");
        }
        let mut delivered = HashSet::new();
        for received in receiver.received() {
            // The request verifies as a whole, under its batch id...
            let id = received.header("webhook-id").unwrap();
            let timestamp: i64 = received.header("webhook-timestamp").unwrap().parse().unwrap();
            assert_eq!(
                received.header("webhook-signature").unwrap(),
                price_alertd::deliver::sign(&secret, id, timestamp, &received.body)
            );
            let items = items(&received.body);
            assert!(id.starts_with(&items[0].0), "{id}");
            // ...and each event on its own, by its id, over its body.
            for (event_id, channel, meta, body) in items {
                assert_eq!(meta["webhook-id"], event_id.as_str());
                let at: i64 = meta["webhook-timestamp"].as_str().unwrap().parse().unwrap();
                assert_eq!(
                    meta["webhook-signature"],
                    price_alertd::deliver::sign(&secret, &event_id, at, &body).as_str()
                );
                let event: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(event["id"], event_id.as_str());
                assert_eq!(channel, format!("user/{}", event["data"]["user_id"].as_str().unwrap()));
                assert!(delivered.insert(event_id), "an event delivered twice");
            }
        }
        assert_eq!(delivered.len(), 30 - refused.len());
    }
}

/// The application's `/auth`, as the nchan relay's `auth_request` asks it:
/// a session cookie `session=<user>` names the user, whose channel it says
/// in `X-User-Channel`; no session is a 401.
fn application() -> HttpServer {
    HttpServer::start(
        0,
        Arc::new(|request| {
            Box::pin(async move {
                let user = request
                    .header("cookie")
                    .and_then(|cookie| cookie.strip_prefix("session="))
                    .map(str::to_owned);
                match user {
                    Some(user) if user == "broken" => Answer {
                        status: 500,
                        headers: Vec::new(),
                        body: Body::Text("the application failed at 10.0.0.7".to_owned()),
                    },
                    Some(user) => Answer {
                        status: 200,
                        headers: vec![("x-user-channel", price_alertd::event::user_segment(&user))],
                        body: Body::Text(String::new()),
                    },
                    None => Answer {
                        status: 401,
                        headers: Vec::new(),
                        body: Body::Text("sign in".to_owned()),
                    },
                }
            })
        }),
    )
}

/// A daemon ticking every second, publishing to `pushpin` in batches, and
/// serving streams on `stream_port` to those `application` recognises.
fn resuming_daemon(
    db: &Db,
    pushpin: &Pushpin,
    stream_port: u16,
    application: &HttpServer,
) -> common::Daemon {
    let text = common::config_text(db, &pushpin.publish_url(), "* * * * * *").replace(
        "[webhook]\n",
        "[webhook]\nformat = \"pushpin\"\nbatch = 20\n",
    ) + &format!(
        "\n[stream]\nlisten = \"127.0.0.1:{stream_port}\"\nauth_url = \"http://127.0.0.1:{}/auth\"\n",
        application.port
    );
    let path = db.write_config(&text);
    common::Daemon::start(&path)
}

/// Alerts of `user` that the next tick triggers; their ids.
fn alerts_of(db: &Db, user: &str, count: usize) -> Vec<i64> {
    (0..count).map(|_| db.add_alert_of(Some(user))).collect()
}

/// Waits until every event of these alerts was delivered; their ids, in
/// the order of their places on their user's channel.
fn delivered(db: &Db, alerts: &[i64]) -> Vec<String> {
    let list = alerts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    common::wait_until("the events to be delivered", || {
        db.scalar(&format!(
            "SELECT count(*) FROM outbox WHERE alert_id IN ({list}) AND state = 'delivered'"
        )) == alerts.len() as i64
    });
    db.texts(&format!(
        "SELECT event_id FROM outbox WHERE alert_id IN ({list}) ORDER BY channel_seq"
    ))
}

/// The ids of the events a subscriber got, once `count` came.
fn ids(subscriber: &common::Subscriber, count: usize) -> Vec<String> {
    subscriber
        .wait_for(count)
        .iter()
        .map(|event| {
            event
                .id
                .clone()
                .unwrap_or_else(|| format!("<{}>", event.event))
        })
        .collect()
}

on_every_engine! {
    fn a_stream_that_comes_back_gets_exactly_the_events_it_missed(engine: Engine) {
        let application = application();
        let stream_port = common::free_port();
        let mut pushpin = Pushpin::start(stream_port);
        let db = Db::on(engine);
        db.set_quote("AAPL", 2.0);
        let mut daemon = resuming_daemon(&db, &pushpin, stream_port, &application);
        let alice = [("cookie", "session=alice")];
        let stream = "/api/stream";
        assert_eq!(
            common::Subscriber::connect(pushpin.port, stream).status,
            401,
            "no session, no stream"
        );
        // The application failing: a 502, and nothing of why for the browser.
        assert_eq!(
            common::Subscriber::connect_with(pushpin.port, stream, &[("cookie", "session=broken")])
                .status,
            502
        );

        // Live: each user gets their own events, in order.
        let page = pushpin.subscribe_with(stream, &alice);
        let bob = pushpin.subscribe_with(stream, &[("cookie", "session=bob")]);
        let first = delivered(&db, &alerts_of(&db, "alice", 5));
        let bobs = delivered(&db, &alerts_of(&db, "bob", 3));
        assert_eq!(ids(&page, 5), first);
        assert_eq!(ids(&bob, 3), bobs);

        // Cut: what was delivered while the page was away, and only that,
        // when it comes back with the last id it had; then live again.
        drop(page);
        let missed = delivered(&db, &alerts_of(&db, "alice", 4));
        let page = pushpin.subscribe_with(stream, &[alice[0], ("last-event-id", &first[4])]);
        assert_eq!(ids(&page, 4), missed);
        let live = delivered(&db, &alerts_of(&db, "alice", 2));
        assert_eq!(ids(&page, 6)[4..], live[..]);

        // The relay restarts while the page is away, and forgets
        // everything: the events come from the outbox.
        drop(page);
        let before_restart = delivered(&db, &alerts_of(&db, "alice", 3));
        pushpin.restart();
        let after_restart = delivered(&db, &alerts_of(&db, "alice", 2));
        let page = pushpin.subscribe_with(stream, &[alice[0], ("last-event-id", &live[1])]);
        let expected: Vec<String> = before_restart.iter().chain(&after_restart).cloned().collect();
        assert_eq!(ids(&page, 5), expected);

        // The daemon restarts (killed) while the page is away.
        drop(page);
        let before_kill = delivered(&db, &alerts_of(&db, "alice", 2));
        drop(daemon);
        daemon = resuming_daemon(&db, &pushpin, stream_port, &application);
        let after_kill = delivered(&db, &alerts_of(&db, "alice", 2));
        let page = pushpin.subscribe_with(stream, &[alice[0], ("last-event-id", &after_restart[1])]);
        let expected: Vec<String> = before_kill.iter().chain(&after_kill).cloned().collect();
        assert_eq!(ids(&page, 4), expected);

        // More than a page of missed events (100 an answer): all, in order.
        drop(page);
        let many = delivered(&db, &alerts_of(&db, "alice", 130));
        let page = pushpin.subscribe_with(stream, &[alice[0], ("last-event-id", &after_kill[1])]);
        assert_eq!(ids(&page, 130), many);

        // Events no longer kept (purged after `keep`), an id that names
        // nothing, another user's event: the page is told to reload, and
        // gets nothing of anyone else's; then live.
        drop(page);
        let purged = {
            let mut connection = db.pool(1).get().unwrap();
            let later = price_alertd::store::timestamp(chrono::Utc::now() + chrono::Duration::seconds(5));
            price_alertd::store::outbox::purge_delivered(&mut connection, &later).unwrap()
        };
        assert!(purged >= 130, "{purged}");
        for unknown in [many[129].as_str(), "pa_forged_1_1", bobs[0].as_str()] {
            let page = pushpin.subscribe_with(stream, &[alice[0], ("last-event-id", unknown)]);
            let next = delivered(&db, &alerts_of(&db, "alice", 1));
            let got = page.wait_for(2);
            assert_eq!(got[0].event, "reset", "{got:?}");
            assert_eq!(got[1].id.as_deref(), Some(next[0].as_str()));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(ids(&bob, 3), bobs, "bob got only his own");
        assert_eq!(bob.count(), 3);
        drop(daemon);
    }
}

on_every_engine! {
    fn deliverers_side_by_side_place_each_users_events_in_one_chain(engine: Engine) {
        const EVENTS: usize = 300;
        const USERS: usize = 4;
        let receiver = Receiver::start();
        let db = Db::on(engine);
        let mut config = pushpin_config(&db, &receiver.url, 7);
        config.webhook.concurrency = 3;
        for n in 0..EVENTS {
            db.add_alert_of(Some(&format!("u{}", n % USERS)));
        }
        db.set_quote("AAPL", 2.0);
        assert_eq!(tick(&db, &config).triggered, EVENTS as u64);

        // Three deliverers at once, as three daemons on one database.
        let delivered: u64 = std::thread::scope(|scope| {
            let running: Vec<_> = ["one", "two", "three"]
                .into_iter()
                .map(|owner| {
                    let (pool, config) = (db.pool(4), &config);
                    scope.spawn(move || deliver_pending_as(&pool, config, owner).delivered)
                })
                .collect();
            running.into_iter().map(|deliverer| deliverer.join().unwrap()).sum()
        });
        assert_eq!(delivered, EVENTS as u64);

        // Each user's events: places 1, 2, 3, ... each after the one before.
        let published: BTreeMap<String, Option<String>> = receiver
            .received()
            .iter()
            .flat_map(|request| {
                let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
                body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| {
                        (
                            item["id"].as_str().unwrap().to_owned(),
                            item["prev-id"].as_str().map(str::to_owned),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for user in 0..USERS {
            let chain = db.rows(&format!(
                "SELECT channel_seq, channel_prev, event_id FROM outbox
                 WHERE user_id = 'u{user}' ORDER BY channel_seq"
            ));
            assert_eq!(chain.len(), EVENTS / USERS);
            let mut before = "start".to_owned();
            for (n, row) in chain.iter().enumerate() {
                assert_eq!((row[0].integer(), row[1].text()), (n as i64 + 1, before.clone()), "u{user}");
                // As published: the item named the same event before it.
                assert_eq!(published[&row[2].text()].as_deref(), Some(before.as_str()));
                before = row[2].text();
            }
        }
    }
}
