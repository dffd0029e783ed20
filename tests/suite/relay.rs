//! Integration smoke through the real SSE relay: the daemon on a short schedule
//! publishes to nginx + nchan on loopback, and a browser-style subscriber on
//! `/api/stream` sees one `price_alert` event per triggered alert, none twice,
//! across several ticks (VO-348's "integration smoke").

use crate::common;

use std::collections::{BTreeSet, HashMap};

use common::{Daemon, Db, Relay, config_text, wait_until};

#[test]
fn subscribers_see_one_event_per_triggered_alert_across_ticks() {
    let relay = Relay::start();
    let subscriber = relay.subscribe();
    let db = Db::new();
    let path = db.dir.path().join("price-alertd.toml");
    std::fs::write(
        &path,
        config_text(&db.path, &relay.publish_url(), "* * * * * *"),
    )
    .unwrap();
    db.set_quote("AAPL", 100.0);
    db.set_quote("MSFT", 300.0);
    let _daemon = Daemon::start(&path);

    let mut expected = BTreeSet::new();
    let mut round_of: HashMap<i64, usize> = HashMap::new();
    for round in 0..3 {
        // Each round adds matching and non-matching alerts, then waits for the
        // daemon's next ticks to claim them.
        for n in 0..10 {
            for id in [
                db.add_alert("AAPL", "above", 50.0 + n as f64),
                db.add_alert("MSFT", "below", 350.0),
            ] {
                expected.insert(id);
                round_of.insert(id, round);
            }
            db.add_alert("AAPL", "above", 500.0);
        }
        let claimed_so_far = expected.len() as i64;
        wait_until(&format!("round {round} to be claimed"), || {
            db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == claimed_so_far
        });
    }
    // Let a few more ticks pass: nothing may be sent twice.
    let ticks = |daemon_log: &str| daemon_log.matches("tick finished").count();
    let seen = ticks(&_daemon.log());
    wait_until("three more ticks", || ticks(&_daemon.log()) >= seen + 3);

    let events = subscriber.wait_for(expected.len());
    let mut per_alert: HashMap<i64, usize> = HashMap::new();
    for event in &events {
        assert_eq!(event.event, "price_alert", "{event:?}");
        let body: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(body["type"], "price_alert");
        *per_alert
            .entry(body["data"]["alert_id"].as_i64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(events.len(), expected.len(), "events seen on /api/stream");
    assert!(
        per_alert.values().all(|&count| count == 1),
        "an alert was seen twice: {per_alert:?}"
    );
    assert_eq!(per_alert.keys().copied().collect::<BTreeSet<_>>(), expected);
    // Streamed as published: every event of a round reached the subscriber
    // before any of the next round's (published a tick later), none held back.
    let mut arrivals: Vec<(usize, std::time::Instant)> = events
        .iter()
        .map(|event| {
            let body: serde_json::Value = serde_json::from_str(&event.data).unwrap();
            (
                round_of[&body["data"]["alert_id"].as_i64().unwrap()],
                event.at,
            )
        })
        .collect();
    arrivals.sort_by_key(|&(_, at)| at);
    assert!(
        arrivals.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "rounds interleaved on the stream: {:?}",
        arrivals.iter().map(|(round, _)| round).collect::<Vec<_>>()
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM price_alerts WHERE enabled = 1"),
        30,
        "the 30 non-matching alerts stay armed"
    );
}
