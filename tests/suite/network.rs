//! A network that goes silent, and a database that is held: a member cut off
//! from PostgreSQL mid-claim loses its locks within seconds and the other
//! member claims and delivers everything once; a listener gone silent falls
//! back to looking every second; and while the database does not answer
//! (PostgreSQL silent, SQLite locked), the daemon's loop still serves
//! SIGHUP, SIGTERM and systemd's watchdog. A silenced proxy silences only
//! its own connections.

use crate::common;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{
    Daemon, Db, Engine, Proxy, Receiver, Reply, binary, config_text, free_port, ok_runs,
    reacting_config, wait_until,
};

/// The test database's URL through `proxy`.
fn through(db: &Db, proxy: &Proxy) -> String {
    let url = db.cluster().url(db.database_name());
    proxy.url(&url, db.cluster().port)
}

/// A config on `db` reached through `proxy` instead.
fn via_proxy(text: &str, db: &Db, proxy: &Proxy) -> String {
    text.replace(&db.cluster().url(db.database_name()), &through(db, proxy))
}

/// The sessions of the connections through `proxy` that hold row locks:
/// those that wrote or locked something (a transaction id), or wait in an
/// open transaction. (A reader cut off mid-stream holds none.)
fn busy_sessions(db: &Db, proxy: &Proxy) -> i64 {
    let ports: Vec<String> = proxy
        .server_side_ports()
        .iter()
        .map(ToString::to_string)
        .collect();
    if ports.is_empty() {
        return 0;
    }
    db.scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE client_port IN ({})
           AND (backend_xid IS NOT NULL OR state LIKE 'idle in transaction%')",
        ports.join(", ")
    ))
}

#[test]
fn a_member_cut_off_mid_claim_loses_its_locks_and_the_other_claims_and_delivers_once() {
    const ALERTS: usize = 20_000;
    let db = Db::on(Engine::Postgresql);
    let proxy = Proxy::start(db.cluster().port);
    let alerts: Vec<(String, &str, f64)> = (0..ALERTS)
        .map(|n| (format!("T{}", n % 100), "above", 10.0))
        .collect();
    db.add_alerts(&alerts);
    // The member that is cut off answers to a receiver that never answers:
    // nothing it sends counts as delivered. The other delivers it all.
    let never = Receiver::start_lean();
    never.set_default(Some(Reply::hang(Duration::from_secs(600))));
    let receiver = Receiver::start_lean();
    let config = |url: &str| {
        config_text(&db, url, "* * * * * *")
            .replace(
                "timeout = \"5s\"",
                "timeout = \"2s\"\nconnect_timeout = \"1s\"\nconcurrency = 16",
            )
            .replace("threads = 10", "threads = 10\nclaim_batch = 100")
    };
    let cut_off =
        Daemon::start_quiet(&db.write_config(&via_proxy(&config(&never.url), &db, &proxy)));
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at)
         SELECT 'T' || n, 20.0, $1 FROM generate_series(0, 99) AS n",
        values![chrono::Utc::now().to_rfc3339()],
    );
    wait_until("the first claims", || {
        db.scalar("SELECT count(*) FROM outbox") > 0
    });
    proxy.silence();
    let silenced = Instant::now();
    let claimed_before = db.scalar("SELECT count(*) FROM outbox");
    eprintln!("cut off after claiming {claimed_before} of {ALERTS}");
    assert!(
        claimed_before < ALERTS as i64,
        "the claim was over before the cut"
    );

    // The other member, on another config file beside it.
    let other_path = db.dir.path().join("other.toml");
    std::fs::write(&other_path, config(&receiver.url)).unwrap();
    let other = Daemon::start_quiet(&other_path);

    // The server ends the cut-off member's open transactions, and their
    // locks with them (idle_in_transaction_session_timeout, 10 s).
    wait_until(
        "the cut-off member's sessions to stop holding anything",
        || busy_sessions(&db, &proxy) == 0,
    );
    let released = silenced.elapsed();
    wait_until("every alert claimed", || {
        db.scalar("SELECT count(*) FROM outbox") == ALERTS as i64
    });
    let all_claimed = silenced.elapsed();
    receiver.wait_for_distinct(ALERTS);
    let delivered = silenced.elapsed();
    eprintln!(
        "locks released {released:?}, everything claimed {all_claimed:?}, delivered {delivered:?} after the cut"
    );
    assert!(released < Duration::from_secs(20), "{released:?}");
    assert!(all_claimed < Duration::from_secs(25), "{all_claimed:?}");

    // One event per alert, each delivered once.
    assert_eq!(
        db.scalar("SELECT count(DISTINCT alert_id) FROM outbox"),
        ALERTS as i64
    );
    let mut posts: HashMap<String, usize> = HashMap::new();
    for arrival in receiver.arrivals() {
        *posts.entry(arrival.webhook_id).or_default() += 1;
    }
    assert_eq!(posts.len(), ALERTS);
    assert!(posts.values().all(|&count| count == 1));
    // The cut-off member said so.
    wait_until("the cut-off member to log its failures", || {
        cut_off.log().contains("the heartbeat failed")
    });
    proxy.heal();
    wait_until("every event recorded as delivered", || {
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == ALERTS as i64
    });
    drop(other);
}

#[test]
fn a_listener_gone_silent_falls_back_to_looking_every_second_within_seconds() {
    let db = Db::on(Engine::Postgresql);
    let proxy = Proxy::start(db.cluster().port);
    let receiver = Receiver::start();
    let port = free_port();
    let text = reacting_config(&db, &receiver.url, port, &[("react", "*")]);
    let daemon = Daemon::start(&db.write_config(&via_proxy(&text, &db, &proxy)));
    db.set_quote("AAPL", 90.0);
    let alert = db.add_alert("AAPL", "above", 100.0);
    wait_until("the first runs", || ok_runs(port, "react") >= 1.0);
    wait_until("the listener", || proxy.silence_listeners() > 0);
    std::thread::sleep(Duration::from_millis(500));
    let written = Instant::now();
    db.set_quote("AAPL", 110.0);
    let events = receiver.wait_for(1);
    let after = written.elapsed();
    eprintln!("the event came {after:?} after the write, the listener silent");
    assert_eq!(events[0].json()["data"]["alert_id"], alert);
    // The listener asks every 2 s and gives up 5 s after: then every second.
    assert!(after < Duration::from_secs(12), "{after:?}");
    assert!(
        daemon.log().contains("the listening connection failed"),
        "{}",
        daemon.log()
    );
    proxy.heal();
    wait_until("listening again", || {
        daemon.log().contains("listening for notifications again")
    });
}

/// Reads the notify socket until `wanted` (a line), for at most `within`;
/// the time it took.
fn heard_within(socket: &UnixDatagram, wanted: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        assert!(
            started.elapsed() < within,
            "no {wanted:?} within {within:?}"
        );
        if let Ok(length) = socket.recv(&mut buffer)
            && String::from_utf8_lossy(&buffer[..length])
                .lines()
                .any(|line| line == wanted)
        {
            return started.elapsed();
        }
    }
}

on_every_engine! {
    fn the_loop_serves_signals_and_the_watchdog_while_the_database_does_not_answer(engine: Engine) {
        let db = Db::on(engine);
        let proxy = (engine == Engine::Postgresql).then(|| Proxy::start(db.cluster().port));
        let receiver = Receiver::start();
        db.set_quote("AAPL", 110.0);
        for n in 0..50 {
            db.add_alert("AAPL", "above", 200.0 + n as f64);
        }
        // Jobs every second, a second's watchdog, and SQLite's write lock
        // waited for 3 s.
        let mut text = config_text(&db, &receiver.url, "* * * * * *")
            .replace("[evaluator]", "[evaluator]\nclaim_batch = 100");
        match &proxy {
            Some(proxy) => text = via_proxy(&text, &db, proxy),
            None => text = text.replace("[database]", "[database]\nbusy_timeout = \"3s\""),
        }
        let config = db.write_config(&text);
        let socket_path = db.dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut child = common::Killed(binary()
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2000000")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap());
        heard_within(&socket, "READY=1", common::PATIENCE);

        // Hold the database: PostgreSQL's network goes silent; the
        // application holds SQLite's write lock.
        let holder = match &proxy {
            Some(proxy) => {
                proxy.silence();
                None
            }
            None => {
                let app = db.app();
                app.execute_batch(
                    "BEGIN IMMEDIATE; UPDATE quotes SET price = 111 WHERE ticker = 'AAPL';",
                )
                .unwrap();
                Some(app)
            }
        };
        // Long enough for runs to fail (SQLite's lock after 3 s, a silent
        // connection after 10 s) and end, and their ends to be served.
        let held = Instant::now();
        let mut last_ping = Instant::now();
        let mut longest = Duration::ZERO;
        let mut buffer = [0u8; 4096];
        while held.elapsed() < Duration::from_secs(16) {
            if let Ok(length) = socket.recv(&mut buffer)
                && String::from_utf8_lossy(&buffer[..length]).lines().any(|line| line == "WATCHDOG=1")
            {
                longest = longest.max(last_ping.elapsed());
                last_ping = Instant::now();
            }
        }
        longest = longest.max(last_ping.elapsed());
        eprintln!("the longest gap between watchdog pings, the database held: {longest:?}");
        assert!(longest < Duration::from_millis(1500), "{longest:?}");
        assert!(common::signal_process(child.0.id(), "HUP"));
        let reloading = heard_within(&socket, "RELOADING=1", Duration::from_secs(1));
        let ready = heard_within(&socket, "READY=1", Duration::from_secs(1));
        assert!(common::signal_process(child.0.id(), "TERM"));
        let stopping = heard_within(&socket, "STOPPING=1", Duration::from_secs(1));
        eprintln!("RELOADING {reloading:?}, READY {ready:?}, STOPPING {stopping:?}");
        drop(holder);
        if let Some(proxy) = &proxy {
            proxy.heal();
        }
        let exited = common::wait_for_exit(&mut child.0, common::PATIENCE);
        assert!(exited.is_some_and(|status| status.success()), "{exited:?}");
    }
}

/// A silenced proxy silences its own connections only: a listener with the
/// same port number on another loopback address (the browser test's second
/// network, 127.0.0.2) still answers. A rule of ports alone dropped its
/// packets, and a page's stream through it hung without a word.
#[test]
fn silencing_a_proxy_leaves_its_port_number_on_another_address_alone() {
    use std::io::{Read as _, Write as _};
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy::start(upstream.local_addr().unwrap().port());
    let neighbour = std::net::TcpListener::bind(("127.0.0.2", proxy.port)).unwrap();
    proxy.silence();
    let echo = std::thread::spawn(move || {
        let (mut connection, _) = neighbour.accept().unwrap();
        let mut byte = [0u8; 1];
        connection.read_exact(&mut byte).unwrap();
        connection.write_all(&byte).unwrap();
    });
    let within = Duration::from_secs(5);
    let mut connection =
        std::net::TcpStream::connect_timeout(&(([127, 0, 0, 2], proxy.port).into()), within)
            .expect("the neighbour answers while the proxy is silenced");
    connection.set_read_timeout(Some(within)).unwrap();
    connection.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    connection.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    echo.join().unwrap();
    // The proxy itself is silent: its handshake never completes.
    let silenced = std::net::TcpStream::connect_timeout(
        &(([127, 0, 0, 1], proxy.port).into()),
        Duration::from_millis(500),
    );
    assert!(silenced.is_err(), "the silenced proxy answered");
}
