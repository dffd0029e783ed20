//! The relays side by side (`-- --relays`): the daemon's own cost, a full
//! outbox drained to a receiver that answers at once; what Pushpin itself
//! takes from a bare batch publisher, with its subscribers connected,
//! against the same outbox drained by the daemon to it, and to nginx +
//! nchan one event a request; and (`-- --latency SIZE... --relay
//! pushpin`) a market-wide move delivered through Pushpin, as
//! `latency::burst_at` delivers one through nchan.
//!
//! Subscribers: every user of the generated databases (`u0` .. `u4999`)
//! has a stream of their own, as each user's browser would (a bench origin
//! holds it), so that every event published reaches a stream and is
//! counted. (50 streams of 100 channels each lost events in a 1M-alert
//! burst, perhaps to Pushpin's queue of at most 100 events a stream it
//! cannot write to; a stream the daemon's origin holds would find such a
//! gap by the next event's prev-id, a bench origin's cannot.)

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Probe as _;
use crate::common::{Answer, Body, HttpServer, Pushpin, Relay, Subscriber, binary, binary_at};

/// The users of the generated databases (`'u' || (i % 5000)`).
pub const USERS: usize = 5000;
/// Channels one subscriber connection holds.
const CHANNELS_PER_STREAM: usize = 1;
/// Events in the full outbox.
const OUTBOX: usize = 100_000;
/// Events a request carries, for the bare publisher and the daemon alike.
pub const BATCH: usize = 100;

/// Pushpin with a stream on every user's channel.
pub struct Watched {
    pub pushpin: Pushpin,
    _origin: HttpServer,
    pub streams: Vec<Subscriber>,
}

impl Watched {
    pub fn start() -> Watched {
        // `/sub/FROM/TO` holds user/uFROM .. user/u(TO - 1).
        let origin = HttpServer::start(
            0,
            Arc::new(|request| {
                Box::pin(async move {
                    let range: Vec<usize> = request
                        .uri
                        .trim_start_matches("/sub/")
                        .split('/')
                        .filter_map(|part| part.parse().ok())
                        .collect();
                    let channels: Vec<String> = (range[0]..range[1])
                        .map(|user| format!("user/u{user}"))
                        .collect();
                    Answer {
                        status: 200,
                        headers: vec![
                            ("content-type", "text/event-stream".to_owned()),
                            ("grip-hold", "stream".to_owned()),
                            ("grip-channel", channels.join(", ")),
                        ],
                        body: Body::Text(String::new()),
                    }
                })
            }),
        );
        let pushpin = Pushpin::start_tuned(origin.port, &[("client_maxconn", "50000")]);
        let streams = (0..USERS / CHANNELS_PER_STREAM)
            .map(|stream| {
                pushpin.subscribe(&format!(
                    "/sub/{}/{}",
                    stream * CHANNELS_PER_STREAM,
                    (stream + 1) * CHANNELS_PER_STREAM
                ))
            })
            .collect();
        Watched {
            pushpin,
            _origin: origin,
            streams,
        }
    }

    /// Events the streams received in all.
    pub fn received(&self) -> usize {
        self.streams.iter().map(Subscriber::count).sum()
    }

    /// Waits until the streams received `count` events in all (as long as
    /// they keep coming); when the last came.
    fn wait_for(&self, count: usize) -> Instant {
        let mut seen = (self.received(), Instant::now());
        while seen.0 < count {
            std::thread::sleep(Duration::from_millis(5));
            let now = self.received();
            if now > seen.0 {
                seen = (now, Instant::now());
            }
            assert!(
                seen.1.elapsed() < Duration::from_secs(60),
                "{} of {count} events reached the streams",
                seen.0
            );
        }
        seen.1
    }
}

/// An event's body as the daemon queues one, for user `user`.
fn event_body(id: &str, user: usize, n: usize) -> String {
    format!(
        r#"{{"type":"price_alert","id":"{id}","timestamp":"2026-12-06T12:00:00.000Z","data":{{"alert_id":{n},"ticker":"T{ticker}","condition":"above","target_price":101.5,"upper_price":null,"price":102.0,"quote_time":"2026-12-06T12:00:00.000Z","triggered_at":"2026-12-06T12:00:00.000Z","user_id":"u{user}","note":null,"trigger_count":1,"max_triggers":null,"rearm_band":null}}}}"#,
        ticker = n % 10_000
    )
}

/// Events a second a bare batch publisher (hyper, no database, its
/// requests written beforehand) gets through Pushpin to the streams:
/// `OUTBOX` events in requests of `BATCH`, `crate::CONCURRENCY` at once,
/// from the first request to the last event on a stream. With `meta`,
/// each item is the daemon's to the byte, its signature in its `meta`;
/// without, only what a subscriber receives.
fn bare_publisher(watched: &Watched, round: usize, meta: bool) -> f64 {
    use http_body_util::{BodyExt as _, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let secret = price_alertd::config::Secret::parse(crate::SECRET).unwrap();
    // A signing time, 2026-12-06T12:00:00Z (the daemon signs with the time
    // it sends; the relay reads it as text either way).
    let timestamp = 1_796_558_400;
    let mut last = vec![price_alertd::store::channels::START.to_owned(); USERS];
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..OUTBOX / BATCH)
            .map(|request| {
                let items: Vec<serde_json::Value> = (0..BATCH)
                    .map(|item| {
                        let n = request * BATCH + item;
                        let id = format!("bare_{round}_{n}");
                        let user = n % USERS;
                        // Each channel's events in a chain, as the daemon
                        // publishes them.
                        let prev = std::mem::replace(&mut last[user], id.clone());
                        let body = event_body(&id, user, n);
                        let mut item = serde_json::json!({
                            "channel": format!("user/u{user}"),
                            "id": id,
                            "prev-id": prev,
                            "formats": {"http-stream": {"content":
                                price_alertd::event::sse(&id, &body)}},
                        });
                        if meta {
                            item["meta"] = serde_json::json!({
                                "webhook-id": id,
                                "webhook-timestamp": timestamp.to_string(),
                                "webhook-signature":
                                    price_alertd::deliver::sign(&secret, &id, timestamp, &body),
                            });
                        }
                        item
                    })
                    .collect();
                bytes::Bytes::from(serde_json::json!({ "items": items }).to_string())
            })
            .collect(),
    );
    let uri: hyper::Uri = watched.pushpin.publish_url().parse().unwrap();
    let before = watched.received();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    runtime.block_on(async move {
        let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(crate::CONCURRENCY)
                .build_http();
        let next = Arc::new(AtomicUsize::new(0));
        let mut lanes = Vec::new();
        for _ in 0..crate::CONCURRENCY {
            let (client, uri, bodies, next) =
                (client.clone(), uri.clone(), bodies.clone(), next.clone());
            lanes.push(tokio::spawn(async move {
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(at) else { return };
                    let mut request = hyper::Request::new(Full::new(body.clone()));
                    *request.method_mut() = hyper::Method::POST;
                    *request.uri_mut() = uri.clone();
                    request.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        "application/json".parse().unwrap(),
                    );
                    let response = client.request(request).await.unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    response.into_body().collect().await.unwrap();
                }
            }));
        }
        for lane in lanes {
            lane.await.unwrap();
        }
    });
    let last = watched.wait_for(before + OUTBOX);
    OUTBOX as f64 / last.duration_since(started).as_secs_f64()
}

/// An SQLite database whose outbox holds `OUTBOX` pending events, of the
/// `USERS` users in turn.
fn full_outbox(path: &Path) {
    let config =
        price_alertd::config::DatabaseConfig::sqlite(path.to_path_buf(), Duration::from_secs(30));
    drop(price_alertd::store::open(&config, 1).unwrap());
    let mut connection = rusqlite::Connection::open(path).unwrap();
    let transaction = connection.transaction().unwrap();
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO outbox (event_id, alert_id, body, created_at, next_attempt_at, user_id)
                 VALUES (?1, ?2, ?3, '2026-12-06T12:00:00.000Z', 0, ?4)",
            )
            .unwrap();
        for n in 0..OUTBOX {
            let (id, user) = (format!("pa_bench_{n}_1"), n % USERS);
            insert
                .execute(rusqlite::params![
                    id,
                    n as i64,
                    event_body(&id, user, n),
                    format!("u{user}")
                ])
                .unwrap();
        }
    }
    transaction.commit().unwrap();
}

/// The daemon draining a copy of the full outbox with `run-job purge` (a
/// purge job with nothing to purge: the run is the delivery) to `url` in
/// `format`: events a second, from the process's start to the last event
/// on a stream (`received`, `before` counted already), and the daemon's CPU
/// seconds.
fn drain(
    dir: &Path,
    (template, build): (&Path, Option<&Path>),
    (url, format): (&str, &str),
    received: &dyn Fn() -> usize,
) -> (f64, f64) {
    let path = dir.join(format!("drain-{format}.db"));
    crate::copy(template, &path);
    let batch = if format == "pushpin" { BATCH } else { 1 };
    let config = dir.join(format!("drain-{format}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"[database]
path = "{}"
[webhook]
url = "{url}"
secret = "{}"
headers = {{ "X-EventSource-Event" = "price_alert" }}
concurrency = {}
format = "{format}"
batch = {batch}
drain_timeout = "300s"
[log]
level = "warn"
[[jobs]]
name = "purge"
kind = "purge"
schedule = "0 0 0 1 1 *"
keep = "365d"
"#,
            path.display(),
            crate::SECRET,
            crate::CONCURRENCY
        ),
    )
    .unwrap();
    let before = received();
    let started = Instant::now();
    let child = build
        .map_or_else(binary, binary_at)
        .args(["--config", config.to_str().unwrap(), "run-job", "purge"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut cpu = 0.0;
    let mut last = (before, Instant::now());
    while last.0 < before + OUTBOX {
        std::thread::sleep(Duration::from_millis(5));
        if std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            cpu = crate::postgresql::cpu_seconds(pid).max(cpu);
        }
        let now = received();
        if now > last.0 {
            last = (now, Instant::now());
        }
        if last.1.elapsed() >= Duration::from_secs(60) {
            // Which side lost them: what the daemon says it delivered, and
            // what its outbox holds, once it has stopped.
            let output = child.wait_with_output().unwrap();
            let count = |state: &str| {
                path.scalar(&format!(
                    "SELECT count(*) FROM outbox WHERE state = '{state}'"
                ))
            };
            panic!(
                "{} of {OUTBOX} events reached the streams; the daemon: {}; its outbox: {} delivered, {} pending, {} dead",
                last.0 - before,
                String::from_utf8_lossy(&output.stdout).trim(),
                count("delivered"),
                count("pending"),
                count("dead")
            );
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let summary = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        crate::summary_value(&summary, "delivered") as usize,
        OUTBOX,
        "{summary}"
    );
    (
        OUTBOX as f64 / last.1.duration_since(started).as_secs_f64(),
        cpu,
    )
}

/// The throughput rows; with `before`, that build's drains too, on copies
/// of the same outbox (see [`crate::both_ways`]).
pub fn rows(dir: &Path, before: Option<&Path>) {
    println!(
        "relays: {OUTBOX} events of {USERS} users, {} requests at once, a stream on every user's channel",
        crate::CONCURRENCY
    );
    let template = dir.join("outbox-template.db");
    full_outbox(&template);
    // Each on a Pushpin of its own: Pushpin holds an event back (and past
    // 100 a channel, drops it) until the one its prev-id names came, and
    // the two publishers' chains are their own.
    let to_pushpin = |build: Option<&Path>| {
        let watched = Watched::start();
        drain(
            dir,
            (&template, build),
            (&watched.pushpin.publish_url(), "pushpin"),
            &|| watched.received(),
        )
    };
    // The daemon's own cost, apart from any relay's: a receiver that
    // answers every request at once, counting its items.
    let to_sink = |build: Option<&Path>| {
        let items = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = items.clone();
        let sink = HttpServer::start(
            0,
            Arc::new(move |request| {
                counted.fetch_add(
                    request.body.matches("\"channel\":").count(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                Box::pin(async move {
                    Answer {
                        status: 200,
                        headers: Vec::new(),
                        body: Body::Text(String::new()),
                    }
                })
            }),
        );
        drain(
            dir,
            (&template, build),
            (
                &format!("http://127.0.0.1:{}/publish/", sink.port),
                "pushpin",
            ),
            &|| items.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    for round in 0..3 {
        let ((daemon, cpu), earlier) = crate::both_ways(round, before, to_sink);
        if let Some((daemon, cpu)) = earlier {
            println!(
                "  a receiver that answers at once, {BATCH} events a request, the build before: {daemon:.0} events/s, daemon CPU {cpu:.2} s"
            );
        }
        println!(
            "  a receiver that answers at once, {BATCH} events a request: {daemon:.0} events/s, daemon CPU {cpu:.2} s ({:.1} µs an event)",
            cpu / OUTBOX as f64 * 1e6
        );
    }
    for round in 0..2 {
        let ((daemon, cpu), earlier) = crate::both_ways(round, before, to_pushpin);
        if let Some((daemon, cpu)) = earlier {
            println!(
                "  pushpin, {BATCH} events a request, the build before: the daemon draining the outbox {daemon:.0} events/s, daemon CPU {cpu:.1} s"
            );
        }
        let bare = bare_publisher(&Watched::start(), round, true);
        let content_only = bare_publisher(&Watched::start(), round, false);
        println!(
            "  pushpin, {BATCH} events a request: bare publisher {bare:.0} events/s ({content_only:.0} without the items' meta); the daemon draining the outbox {daemon:.0} events/s, signed and recorded ({:.2}x the bare publisher; goal >= 0.8x, and >= 50,000/s or the relay's own ceiling), daemon CPU {cpu:.1} s",
            daemon / bare
        );
    }
    let relay = Relay::start();
    let subscriber = relay.subscribe();
    let (daemon, cpu) = drain(
        dir,
        (&template, None),
        (&relay.publish_url(), "event"),
        &|| subscriber.count(),
    );
    println!(
        "  nginx + nchan, one event a request: the daemon draining the outbox {daemon:.0} events/s, daemon CPU {cpu:.1} s"
    );
}
