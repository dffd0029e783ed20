//! The path as a user meets it, in a real browser: the daemon routes each
//! event to its user's URL, the shipped per-user relay
//! (`etc/nchan-per-user.conf`, run as it is, only its addresses changed)
//! publishes it to that user's channel, and headless Chromium shows two
//! signed-in users' pages, each reading its `EventSource`. What the pages
//! themselves recorded is what the test checks: each keeps exactly its own
//! user's events, each once, in order, also when its connection is cut and
//! the browser reconnects by itself (the relay replays the channel's buffer;
//! the page drops what it had by the event's id). And a third signed-in
//! user's attempts to crash the relay (message ids for their own empty
//! channel, with a stream of theirs open) leave its worker and the other
//! users' streams up.
//!
//! The same with the batch relay (`etc/pushpin/`, run as it is, a route to
//! the application's pages added): pages that keep whatever arrives get
//! exactly their user's events, each once, in order, after a cut
//! connection and after the relay restarted while they were away: the
//! browser's own `Last-Event-ID` resumes them from the outbox.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::browser::{Browser, Proxy, Tab};
use common::{Answer, Body, Daemon, Db, HttpServer, Relay, config_text, free_port, wait_until};
use serde_json::Value;

/// The page a signed-in user opens: it subscribes to the site's stream and
/// records each `price_alert` event once (by its id, as README tells a page
/// to: a stream that reopens gets the channel's buffer again), how many it
/// received in all, and every time the stream opened.
const PAGE: &str = r#"<!doctype html>
<title>price alerts</title>
<script>
window.seen = [];
window.received = 0;
window.opened = 0;
const ids = new Set();
const source = new EventSource("/api/stream");
source.addEventListener("open", () => { window.opened += 1; });
source.addEventListener("price_alert", (event) => {
  window.received += 1;
  const alert = JSON.parse(event.data);
  if (ids.has(alert.id)) return;
  ids.add(alert.id);
  window.seen.push({ last_event_id: event.lastEventId, event: alert });
});
</script>
"#;

/// How the relay's README tells an application to encode a user id for
/// `X-User-Channel`, as the daemon does in URLs (Python's
/// `urllib.parse.quote(user_id, safe="")`): RFC 3986's unreserved characters
/// kept, every other byte `%XX`.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A user id that is not one path segment as it stands.
const BOB: &str = "bob.smith/2";

/// The application's side of the relay: `/app?user=NAME` signs the browser
/// in (a session cookie) and serves the page; `/auth`, which nginx asks,
/// names the session's user's channel, or refuses a browser without one.
fn application(port: u16, page: &'static str) -> HttpServer {
    let sessions: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    HttpServer::start(
        port,
        Arc::new(move |request| {
            let sessions = sessions.clone();
            Box::pin(async move {
                let answer = |status, headers: Vec<(&'static str, String)>, body: &str| Answer {
                    status,
                    headers,
                    body: Body::Text(body.to_owned()),
                };
                if let Some(user) = request.uri.strip_prefix("/app?user=") {
                    let user = percent_encoding::percent_decode_str(user)
                        .decode_utf8()
                        .unwrap()
                        .into_owned();
                    let token = format!("{:032x}", fastrand::u128(..));
                    sessions.lock().unwrap().insert(token.clone(), user);
                    return answer(
                        200,
                        vec![
                            ("content-type", "text/html; charset=utf-8".to_owned()),
                            ("set-cookie", format!("session={token}; Path=/; HttpOnly")),
                        ],
                        page,
                    );
                }
                if request.uri == "/auth" {
                    let user = request.header("cookie").and_then(|cookies| {
                        cookies.split(';').find_map(|cookie| {
                            let token = cookie.trim().strip_prefix("session=")?;
                            sessions.lock().unwrap().get(token).cloned()
                        })
                    });
                    return match user {
                        Some(user) => answer(
                            204,
                            vec![(
                                "x-user-channel",
                                percent_encoding::utf8_percent_encode(&user, SEGMENT).to_string(),
                            )],
                            "",
                        ),
                        None => answer(401, Vec::new(), ""),
                    };
                }
                answer(404, Vec::new(), "")
            })
        }),
    )
}

/// The shipped per-user relay, its addresses moved to ports of the test's.
fn per_user_relay(publisher: u16, site: u16, application: u16) -> Relay {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/etc/nchan-per-user.conf"
    ))
    .unwrap();
    let mut servers = shipped.clone();
    for (from, to, times) in [
        (
            "listen 127.0.0.1:8080;",
            format!("listen 127.0.0.1:{publisher};"),
            1,
        ),
        ("listen 80;", format!("listen 127.0.0.1:{site};"), 1),
        (
            "http://127.0.0.1:3000",
            format!("http://127.0.0.1:{application}"),
            3,
        ),
    ] {
        assert_eq!(
            servers.matches(from).count(),
            times,
            "the shipped relay's {from}"
        );
        servers = servers.replace(from, &to);
    }
    Relay::serving(&servers, site)
}

/// What a page recorded: each event's alert id and user, and its SSE id.
struct Seen {
    alert_ids: Vec<i64>,
    users: Vec<Value>,
    last_event_ids: Vec<String>,
}

fn seen(browser: &Browser, tab: &Tab) -> Seen {
    let recorded = browser.run(tab, "return window.seen;");
    let recorded = recorded.as_array().unwrap();
    Seen {
        alert_ids: recorded
            .iter()
            .map(|seen| seen["event"]["data"]["alert_id"].as_i64().unwrap())
            .collect(),
        users: recorded
            .iter()
            .map(|seen| seen["event"]["data"]["user_id"].clone())
            .collect(),
        last_event_ids: recorded
            .iter()
            .map(|seen| seen["last_event_id"].as_str().unwrap().to_owned())
            .collect(),
    }
}

fn opened(browser: &Browser, tab: &Tab) -> i64 {
    browser.run(tab, "return window.opened;").as_i64().unwrap()
}

fn received(browser: &Browser, tab: &Tab) -> i64 {
    browser
        .run(tab, "return window.received;")
        .as_i64()
        .unwrap()
}

/// One HTTP/1.1 request to the site at `port`; the start of the answer
/// (what arrives within a moment: a stream never ends).
fn request(port: u16, head: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "{head}\r\n").unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// What a signed-in user can try against the relay from their own browser:
/// signed in as `mallory`, with a stream of theirs open (so their empty
/// channel has a subscriber), stream requests that carry message ids:
/// forged `Last-Event-ID`s, and nchan's own carriers, `If-None-Match` with
/// or without `If-Modified-Since`. (nchan 1.3.6 aborts a worker on the
/// first of them when the id reaches it.) Returns the status lines.
fn try_to_crash_the_relay(site: u16) -> Vec<String> {
    let signed_in = request(
        site,
        "GET /app?user=mallory HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
    );
    let cookie = signed_in
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|cookie| cookie.split(';').next())
        .expect("a session")
        .to_owned();
    let stream = |extra: &str| {
        format!(
            "GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\n{extra}"
        )
    };
    let now = chrono::Utc::now().timestamp();
    let mut forged: Vec<String> = ["1:0", "1:5", &format!("{now}:0"), &format!("{}:0", now - 5)]
        .iter()
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .collect();
    forged.push(format!("If-None-Match: {now}:0\r\n"));
    forged.push(
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:05 GMT\r\nIf-None-Match: 0\r\n".to_owned(),
    );
    // Each twice over, the second time several at once.
    let held = std::thread::spawn({
        let head = stream("");
        move || request(site, &head)
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut statuses: Vec<String> = forged
        .iter()
        .map(|extra| request(site, &stream(extra)))
        .collect();
    let at_once: Vec<_> = forged
        .iter()
        .map(|extra| {
            let head = stream(extra);
            std::thread::spawn(move || request(site, &head))
        })
        .collect();
    statuses.extend(at_once.into_iter().map(|attempt| attempt.join().unwrap()));
    statuses.push(held.join().unwrap());
    statuses
        .iter()
        .map(|answer| answer.lines().next().unwrap_or_default().to_owned())
        .collect()
}

/// Adds alerts of `user` that the next tick triggers; returns their ids.
fn alerts_of(db: &Db, user: Option<&str>, count: usize) -> Vec<i64> {
    (0..count).map(|_| db.add_alert_of(user)).collect()
}

/// The alert ids of `user`'s events in the order they were queued.
fn queued_for(db: &Db, user: &str) -> Vec<i64> {
    db.ids(&format!(
        "SELECT alert_id FROM outbox WHERE user_id = '{user}' ORDER BY id"
    ))
}

#[test]
fn each_users_page_gets_exactly_its_own_events_once_in_order_also_across_a_cut_connection() {
    let (publisher, site, app_port) = (free_port(), free_port(), free_port());
    let _application = application(app_port, PAGE);
    let relay = per_user_relay(publisher, site, app_port);
    // Each user's browser reaches the site through a proxy of its own, on
    // its own loopback address: two hosts, so two cookie jars.
    let alice_network = Proxy::start("127.0.0.1", site);
    let bob_network = Proxy::start("127.0.0.2", site);

    let db = Db::new();
    let config = db.write_config(&config_text(
        &db,
        &format!("http://127.0.0.1:{publisher}/events/{{user_id}}"),
        "* * * * * *",
    ));
    let _daemon = Daemon::start(&config);

    let mut browser = Browser::start();
    let alice = browser.open(&format!("http://{}/app?user=alice", alice_network.address));
    let bob = browser.open(&format!(
        "http://{}/app?user={}",
        bob_network.address,
        percent_encoding::utf8_percent_encode(BOB, SEGMENT)
    ));
    wait_until("both pages' streams to open", || {
        opened(&browser, &alice) == 1 && opened(&browser, &bob) == 1
    });

    // Events for both, for a user without a page, and for an alert without
    // a user (a dead letter: nobody's channel).
    alerts_of(&db, Some("alice"), 3);
    alerts_of(&db, Some(BOB), 2);
    alerts_of(&db, Some("carol"), 1);
    alerts_of(&db, None, 1);
    db.set_quote("AAPL", 2.0);
    wait_until("the pages to show their events", || {
        seen(&browser, &alice).alert_ids.len() == 3 && seen(&browser, &bob).alert_ids.len() == 2
    });
    wait_until("every event delivered or dead", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'pending'") == 0
    });
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'dead'"),
        1
    );

    // Alice's connection drops; her events published meanwhile wait in the
    // relay, while Bob's page goes on.
    alice_network.cut();
    let last_before_cut = seen(&browser, &alice).last_event_ids[2].clone();
    alerts_of(&db, Some("alice"), 2);
    alerts_of(&db, Some(BOB), 1);
    wait_until("the new events delivered to the relay", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == 9
    });
    wait_until("Bob's page to show his third event", || {
        seen(&browser, &bob).alert_ids.len() == 3
    });
    assert_eq!(
        seen(&browser, &alice).alert_ids.len(),
        3,
        "Alice's stream is cut"
    );
    alice_network.restore();
    wait_until("Alice's page to catch up", || {
        seen(&browser, &alice).alert_ids.len() >= 5
    });
    // Nothing more is on its way: a repeat would show now.
    std::thread::sleep(std::time::Duration::from_secs(2));

    for (tab, user) in [(&alice, "alice"), (&bob, BOB)] {
        let seen = seen(&browser, tab);
        assert_eq!(
            seen.alert_ids,
            queued_for(&db, user),
            "{user}: each event once, in order"
        );
        assert!(
            seen.users.iter().all(|seen| seen == user),
            "{user}: {:?}",
            seen.users
        );
        let mut ids = seen.last_event_ids.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            seen.last_event_ids.len(),
            "{user}: distinct SSE ids"
        );
    }
    // Alice's browser reconnected by itself and got her channel's buffer
    // again: the three she had, which the page dropped, and the two she
    // missed.
    assert_eq!(opened(&browser, &alice), 2);
    assert_eq!(opened(&browser, &bob), 1);
    assert_eq!(received(&browser, &alice), 3 + 5);
    let streams = stream_requests(&alice_network);
    assert_eq!(
        streams,
        [None, Some(last_before_cut)],
        "Alice's stream requests (the relay does not use the id)"
    );

    // A third user tries to crash the relay from their own session: the
    // ids never reach nchan, its worker lives, and the others' streams stay
    // open and go on.
    let statuses = try_to_crash_the_relay(site);
    assert!(
        statuses
            .iter()
            .all(|status| status.starts_with("HTTP/1.1 ")),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|status| status.contains(" 400 ")),
        "nchan's own id carriers are refused: {statuses:?}"
    );
    assert_eq!(relay.workers_died(), 0, "{statuses:?}");
    alerts_of(&db, Some("alice"), 1);
    alerts_of(&db, Some(BOB), 1);
    let shown =
        || seen(&browser, &alice).alert_ids.len() == 6 && seen(&browser, &bob).alert_ids.len() == 4;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !shown() {
        // What each side had, if it never comes.
        assert!(
            std::time::Instant::now() < deadline,
            "both pages to show one more event: Alice's page {:?} (streams opened {}, events received {}; the relay sent on her connections {:?}), Bob's {:?} ({}, {}; {:?}); delivered, with nchan's answers {:?}; relay workers died {}",
            seen(&browser, &alice).alert_ids,
            opened(&browser, &alice),
            received(&browser, &alice),
            alice_network.alert_ids_answered(),
            seen(&browser, &bob).alert_ids,
            opened(&browser, &bob),
            received(&browser, &bob),
            bob_network.alert_ids_answered(),
            delivered_with_answers(&db),
            relay.workers_died()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!((opened(&browser, &alice), opened(&browser, &bob)), (2, 1));
    assert_eq!(relay.workers_died(), 0);
}

/// Each delivered event's alert id and the statuses nchan answered its
/// attempts: 201 if the channel had a subscriber as it published, 202 if
/// none (the relay had lost the page's stream, or never had it).
fn delivered_with_answers(db: &Db) -> Vec<String> {
    db.texts(
        "SELECT o.alert_id || ': ' || group_concat(coalesce(a.status, a.error), ', ')
         FROM outbox AS o JOIN delivery_attempts AS a ON a.outbox_id = o.id
         WHERE o.state = 'delivered' GROUP BY o.id ORDER BY o.id",
    )
}

/// The page of a site behind Pushpin: it keeps every event it receives as
/// it comes, duplicates included (exact resume leaves none to drop), and
/// every `reset`.
const RESUMING_PAGE: &str = r#"<!doctype html>
<title>price alerts</title>
<script>
window.events = [];
window.opened = 0;
const source = new EventSource("/api/stream");
source.addEventListener("open", () => { window.opened += 1; });
source.addEventListener("price_alert", (event) => {
  const alert = JSON.parse(event.data);
  window.events.push({ id: event.lastEventId, alert: alert.data.alert_id, user: alert.data.user_id });
});
source.addEventListener("reset", () => { window.events.push({ reset: true }); });
</script>
"#;

/// The alert ids a resuming page received, in order (a `reset` as 0), and
/// whether each came with its user's id.
fn received_alerts(browser: &Browser, tab: &Tab, user: &str) -> Vec<i64> {
    let events = browser.run(tab, "return window.events;");
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            if event["reset"] == true {
                return 0;
            }
            assert_eq!(event["user"], user, "{event}");
            event["alert"].as_i64().unwrap()
        })
        .collect()
}

/// The alert ids of `user`'s events in the order of their places on the
/// user's channel.
fn placed_for(db: &Db, user: &str) -> Vec<i64> {
    db.ids(&format!(
        "SELECT alert_id FROM outbox WHERE user_id = '{user}' AND channel_seq IS NOT NULL ORDER BY channel_seq"
    ))
}

/// The `Last-Event-ID` of each stream request a page sent through `proxy`.
fn stream_requests(proxy: &Proxy) -> Vec<Option<String>> {
    proxy
        .sent()
        .iter()
        .flat_map(|sent| {
            sent.split("\r\n\r\n")
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|head| head.starts_with("GET /api/stream "))
        .map(|head| {
            head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("last-event-id")
                    .then(|| value.trim().to_owned())
            })
        })
        .collect()
}

#[test]
fn behind_pushpin_each_page_gets_exactly_the_events_it_missed_across_a_cut_and_a_relay_restart() {
    let (app_port, stream_port) = (free_port(), free_port());
    let _application = application(app_port, RESUMING_PAGE);
    // The site: the application's pages, and every other path (the
    // stream) to the daemon's origin, as the shipped routes send it.
    let mut pushpin = common::Pushpin::start_routing(
        stream_port,
        &format!("*,path_beg=/app 127.0.0.1:{app_port}\n"),
    );
    let alice_network = Proxy::start("127.0.0.1", pushpin.port);
    let bob_network = Proxy::start("127.0.0.2", pushpin.port);

    let db = Db::new();
    let config = db.write_config(
        &(config_text(&db, &pushpin.publish_url(), "* * * * * *")
            .replace("[webhook]\n", "[webhook]\nformat = \"pushpin\"\n")
            + &format!(
                "\n[stream]\nlisten = \"127.0.0.1:{stream_port}\"\nauth_url = \"http://127.0.0.1:{app_port}/auth\"\n"
            )),
    );
    let _daemon = Daemon::start(&config);

    let mut browser = Browser::start();
    let alice = browser.open(&format!("http://{}/app?user=alice", alice_network.address));
    let bob = browser.open(&format!(
        "http://{}/app?user={}",
        bob_network.address,
        percent_encoding::utf8_percent_encode(BOB, SEGMENT)
    ));
    wait_until("both pages' streams to open", || {
        opened(&browser, &alice) == 1 && opened(&browser, &bob) == 1
    });
    let shown = |tab: &Tab, user: &str, count: usize| {
        wait_until(&format!("{user}'s page to show {count} events"), || {
            received_alerts(&browser, tab, user).len() >= count
        });
    };

    alerts_of(&db, Some("alice"), 3);
    alerts_of(&db, Some(BOB), 2);
    alerts_of(&db, Some("carol"), 1);
    db.set_quote("AAPL", 2.0);
    shown(&alice, "alice", 3);
    shown(&bob, BOB, 2);

    // Alice's connection drops; her events are delivered meanwhile.
    alice_network.cut();
    let last_before_cut = db.texts(
        "SELECT event_id FROM outbox WHERE user_id = 'alice' ORDER BY channel_seq DESC LIMIT 1",
    );
    alerts_of(&db, Some("alice"), 2);
    alerts_of(&db, Some(BOB), 1);
    wait_until("the new events delivered", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == 9
    });
    shown(&bob, BOB, 3);
    alice_network.restore();
    shown(&alice, "alice", 5);

    // The relay restarts while Alice is away, and forgets everything. Both
    // users' streams end; neither reconnects until it is up (a stream
    // refused meanwhile would not be tried again).
    alice_network.cut();
    alerts_of(&db, Some("alice"), 1);
    wait_until("Alice's event delivered before the restart", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == 10
    });
    bob_network.cut();
    pushpin.restart();
    // Up once it holds a stream. A Pushpin just started may answer nothing
    // for a moment, pages included: the probe's session is asked again.
    let mut cookie = None;
    wait_until("a session through the restarted relay", || {
        let probe = request(
            pushpin.port,
            "GET /app?user=probe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
        );
        cookie = probe
            .lines()
            .find_map(|line| line.strip_prefix("set-cookie: "))
            .and_then(|cookie| cookie.split(';').next())
            .map(str::to_owned);
        cookie.is_some()
    });
    let cookie = cookie.expect("a session");
    drop(pushpin.subscribe_with("/api/stream", &[("cookie", &cookie)]));
    alerts_of(&db, Some("alice"), 1);
    alerts_of(&db, Some(BOB), 1);
    wait_until("the events after the restart delivered", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == 12
    });
    alice_network.restore();
    bob_network.restore();
    shown(&alice, "alice", 7);
    shown(&bob, BOB, 4);
    // Nothing more is on its way: a repeat would show now.
    std::thread::sleep(std::time::Duration::from_secs(2));

    for (tab, user) in [(&alice, "alice"), (&bob, BOB)] {
        assert_eq!(
            received_alerts(&browser, tab, user),
            placed_for(&db, user),
            "{user}: every event once, in order, nothing else"
        );
    }
    assert_eq!((opened(&browser, &alice), opened(&browser, &bob)), (3, 2));
    let alice_streams = stream_requests(&alice_network);
    assert_eq!(alice_streams.len(), 3, "{alice_streams:?}");
    assert_eq!(
        alice_streams[..2],
        [None, Some(last_before_cut[0].clone())],
        "the browser resumed by itself with the last id it had"
    );
}
