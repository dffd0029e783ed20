//! One clock in a cluster: members whose own clocks are two minutes off
//! (libfaketime) still agree on every lease and judge every expiry,
//! cooldown, snooze and quote age by the database's clock; each says that
//! its clock is off. PostgreSQL only: SQLite's processes share one host, and
//! so one clock.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Daemon, Db, Engine, Receiver, Reply, config_text, free_port, wait_until};

/// The database's time `seconds` from now, as the application writes times.
fn database_time(db: &Db, seconds: i64) -> String {
    db.texts(&format!(
        "SELECT to_char((clock_timestamp() + interval '{seconds} seconds') AT TIME ZONE 'UTC',
                        'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    ))
    .remove(0)
}

/// Events queued per alert.
fn events_by_alert(db: &Db) -> HashMap<i64, i64> {
    db.rows("SELECT alert_id, count(*) FROM outbox GROUP BY alert_id")
        .into_iter()
        .map(|row| (row[0].integer(), row[1].integer()))
        .collect()
}

#[test]
fn members_two_minutes_apart_send_each_event_once() {
    const ALERTS: usize = 8_000;
    let db = Db::on(Engine::Postgresql);
    // A receiver slow enough that both members deliver side by side for a
    // few seconds, each holding leases the other must respect.
    let receiver = Receiver::start_lean();
    receiver.set_default(Some(Reply::hang(Duration::from_millis(10))));
    let alerts: Vec<(String, &str, f64)> = (0..ALERTS)
        .map(|n| (format!("T{}", n % 40), "above", 10.0))
        .collect();
    db.add_alerts(&alerts);
    let text = config_text(&db, &receiver.url, "* * * * * *").replace(
        "timeout = \"5s\"",
        "timeout = \"2s\"\nconnect_timeout = \"1s\"\nconcurrency = 16",
    );
    let path = db.write_config(&text);
    // The member behind claims every alert, and starts delivering them; the
    // one ahead comes while it does. By its own clock, every lease the
    // other took would have run out two minutes ago.
    let behind = Daemon::start_with_clock_off(&path, -120);
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at)
         SELECT 'T' || n, 20.0, $1 FROM generate_series(0, 39) AS n",
        // Three minutes old, so that the member behind does not take them
        // for quotes from the future (another test's concern).
        values![database_time(&db, -180)],
    );
    wait_until("every alert claimed", || {
        db.scalar("SELECT count(*) FROM outbox") == ALERTS as i64
    });
    let ahead = Daemon::start_with_clock_off(&path, 120);
    receiver.wait_for_distinct(ALERTS);
    wait_until("every event recorded as delivered", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == ALERTS as i64
    });
    let mut posts: HashMap<String, usize> = HashMap::new();
    for arrival in receiver.arrivals() {
        *posts.entry(arrival.webhook_id).or_default() += 1;
    }
    let twice = posts.values().filter(|&&count| count > 1).count();
    assert_eq!(posts.len(), ALERTS);
    assert_eq!(twice, 0, "{twice} event ids were POSTed more than once");
    // Each member knew its clock was off.
    for member in [&ahead, &behind] {
        assert!(
            member
                .log()
                .contains("this member's clock is more than 2 s"),
            "{}",
            member.log()
        );
    }
}

/// What a member made of its alerts: each one's events, its log, and what
/// `/readyz` answered.
struct Judged {
    events: HashMap<i64, i64>,
    log: String,
    ready: (u16, String),
}

/// What an alert's column is set to, read from the test's database.
type Setting = dyn Fn(&Db) -> String;

/// Alerts on AAPL (above 10, its quote at 20), each with one column set
/// (none for `""`), by the application, by the database's clock, judged by
/// a member whose own clock is `offset` seconds off, over six ticks (one a
/// second by its clock). Returns the alerts' ids.
fn judged_by_a_member_off_by(offset: i64, alerts: &[(&str, &Setting)]) -> (Vec<i64>, Judged) {
    let db = Db::on(Engine::Postgresql);
    let receiver = Receiver::start();
    let port = free_port();
    let text = config_text(&db, &receiver.url, "* * * * * *")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = db.write_config(&text);
    let ids: Vec<i64> = alerts
        .iter()
        .map(|(column, value)| {
            let id = db.add_alert("AAPL", "above", 10.0);
            if !column.is_empty() {
                db.execute(
                    &format!("UPDATE price_alerts SET {column} = $1 WHERE id = $2"),
                    values![value(&db), id],
                );
            }
            id
        })
        .collect();
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at) VALUES ('AAPL', 20.0, $1)",
        values![database_time(&db, 0)],
    );
    let member = Daemon::start_with_clock_off(&path, offset);
    wait_until("a few ticks", || common::ok_runs(port, "evaluate") >= 6.0);
    let ready = common::scrape(port, "/readyz");
    (
        ids,
        Judged {
            events: events_by_alert(&db),
            log: member.log(),
            ready,
        },
    )
}

#[test]
fn a_member_two_minutes_ahead_judges_expiry_cooldown_and_snooze_by_the_databases_clock() {
    let in_a_minute = |db: &Db| database_time(db, 60);
    let thirty_seconds = |_: &Db| "30s".to_owned();
    let (ids, judged) = judged_by_a_member_off_by(
        120,
        &[
            // Expires in a minute: it fires now (by its own clock the
            // member would see it expired, and disable it unsent).
            ("expires_at", &in_a_minute),
            // Repeats every 30 s: once in these seconds (by its own clock
            // the cooldown would have passed at once, every tick).
            ("cooldown", &thirty_seconds),
            // Snoozed for a minute: not yet.
            ("snoozed_until", &in_a_minute),
        ],
    );
    let count = |id: &i64| judged.events.get(id).copied().unwrap_or(0);
    assert_eq!(
        ids.iter().map(count).collect::<Vec<_>>(),
        [1, 1, 0],
        "{}",
        judged.log
    );
    assert!(
        judged
            .log
            .contains("this member's clock is more than 2 s ahead of the database's"),
        "{}",
        judged.log
    );
    assert_eq!(judged.ready.0, 503, "{}", judged.ready.1);
    assert!(
        judged.ready.1.contains("s ahead of the database's"),
        "{}",
        judged.ready.1
    );
}

#[test]
fn a_member_two_minutes_behind_judges_expiry_snooze_and_quote_age_by_the_databases_clock() {
    let half_a_minute_ago = |db: &Db| database_time(db, -30);
    let (ids, judged) = judged_by_a_member_off_by(
        -120,
        &[
            // Expired half a minute ago: never fires (by its own clock the
            // member would see it still armed).
            ("expires_at", &half_a_minute_ago),
            // A snooze that ended half a minute ago: it fires.
            ("snoozed_until", &half_a_minute_ago),
            // Nothing but the quote, written now: to the member's own clock
            // it comes from two minutes ahead, a feed with a wrong clock.
            ("", &|_: &Db| String::new()),
        ],
    );
    let count = |id: &i64| judged.events.get(id).copied().unwrap_or(0);
    assert_eq!(
        ids.iter().map(count).collect::<Vec<_>>(),
        [0, 1, 1],
        "{}",
        judged.log
    );
    assert!(
        judged
            .log
            .contains("this member's clock is more than 2 s behind the database's"),
        "{}",
        judged.log
    );
}
