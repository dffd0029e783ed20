//! Several daemons on one PostgreSQL database, as on several hosts: they
//! share each fire time's work instead of repeating it, survive the loss of
//! one of them again and again, take over a fire whose member died, and
//! deliver every triggered alert under one id per arming; a job that reacts
//! to changes reacts on one member at a time (on either engine).

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{
    Daemon, Db, Engine, Receiver, YEARLY, change_runs, config_text, free_port, ok_runs,
    reacting_config, wait_until,
};
use price_alertd::membership::Leases;

/// The leases of the members of a takeover's test: a heartbeat a second, so
/// that a takeover takes seconds, not the daemon's 30 s lease.
const SHORT_LEASES: Leases = Leases {
    heartbeat: Duration::from_secs(1),
    fire: Duration::from_secs(5),
    reacting: Duration::from_secs(3),
};

const ALERTS: usize = 200_000;
const TICKERS: usize = 2_000;
const STEPS: usize = 10;

/// The config the members share: a tick every second.
fn write_config(db: &Db, url: &str) -> std::path::PathBuf {
    let text = config_text(db, url, "* * * * * *")
        .replace(
            "timeout = \"5s\"",
            "timeout = \"2s\"\nconnect_timeout = \"1s\"\nconcurrency = 16",
        )
        .replace(
            "retry_schedule = [\"200ms\", \"400ms\"]",
            "retry_schedule = [\"200ms\", \"400ms\", \"1s\", \"1s\", \"1s\"]",
        );
    db.write_config(&text)
}

/// Waits until no alert is enabled and no event is pending or dead, within
/// `limit`. The polls go through the partial indexes (`enabled = 1`, `state =
/// 'pending'`, `state = 'dead'`, the only states besides `delivered`): a
/// `count(*)` of 200,000 rows five times a second took the server as much
/// time as the members' claims.
fn wait_until_settled(db: &Db, limit: Duration) {
    let deadline = Instant::now() + limit;
    while db.scalar(
        "SELECT count(*) FROM (
             (SELECT 1 FROM price_alerts WHERE enabled = 1 LIMIT 1)
             UNION ALL (SELECT 1 FROM outbox WHERE state IN ('pending', 'dead') LIMIT 1)
         ) AS unsettled",
    ) > 0
    {
        assert!(Instant::now() < deadline, "not everything was delivered");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The pid in a member's name (`host:pid:random`).
fn pid_of(member: &str) -> u32 {
    member.split(':').nth(1).unwrap().parse().unwrap()
}

#[test]
fn three_daemons_share_each_fire_time_survive_sigkills_and_deliver_every_alert_once() {
    let db = Db::on(Engine::Postgresql);
    let receiver = Receiver::start_lean();
    // Every alert sits above the price; the price then climbs in steps, each
    // step triggering a tenth of them, while the members tick every second.
    let alerts: Vec<(String, &str, f64)> = (0..ALERTS)
        .map(|n| {
            let level = 100.0 + 10.0 * ((n / TICKERS) % STEPS) as f64 + 5.0;
            (format!("T{}", n % TICKERS), "above", level)
        })
        .collect();
    db.add_alerts(&alerts);
    let set_all = |price: f64| {
        db.execute(
            "INSERT INTO quotes (ticker, price, updated_at)
             SELECT 'T' || n, $1, $2 FROM generate_series(0, $3) AS n
             ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
            values![price, chrono::Utc::now().to_rfc3339(), (TICKERS - 1) as i64],
        );
    };
    set_all(100.0);
    let path = write_config(&db, &receiver.url);

    let mut members: Vec<Daemon> = (0..3).map(|_| Daemon::start_quiet(&path)).collect();
    let seed = std::env::var("CLUSTER_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("cluster test seed: {seed} (set CLUSTER_SEED to repeat)");
    let mut random = fastrand::Rng::with_seed(seed);
    let mut killed = HashSet::new();
    for step in 1..=STEPS {
        set_all(100.0 + 10.0 * step as f64);
        // One member dies at a random moment of the step, and comes back.
        std::thread::sleep(Duration::from_millis(random.u64(200..1500)));
        let victim = random.usize(..members.len());
        killed.insert(members[victim].child.id());
        members[victim].child.kill().unwrap();
        members[victim].child.wait().unwrap();
        members[victim] = Daemon::start_quiet(&path);
        std::thread::sleep(Duration::from_millis(random.u64(200..1500)));
    }
    wait_until_settled(&db, Duration::from_secs(300));
    // Stop the members as systemd would: each lets its running tick finish.
    for member in &members {
        member.signal("TERM");
    }
    for member in &mut members {
        assert_eq!(member.wait_exit(), Some(0));
    }

    // One event per alert, all delivered; every copy that reached the
    // receiver carries its alert's one id.
    assert_eq!(db.scalar("SELECT count(*) FROM outbox"), ALERTS as i64);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT alert_id) FROM outbox"),
        ALERTS as i64
    );
    let ids: HashMap<String, i64> = db
        .texts_and_ids("SELECT event_id, alert_id FROM outbox")
        .into_iter()
        .collect();
    let mut delivered = HashSet::new();
    for arrival in receiver
        .arrivals()
        .iter()
        .filter(|arrival| arrival.status == 200)
    {
        assert!(
            ids.contains_key(&arrival.webhook_id),
            "unknown id {}",
            arrival.webhook_id
        );
        delivered.insert(arrival.webhook_id.clone());
    }
    assert_eq!(delivered.len(), ALERTS, "every alert reached the receiver");

    // Each fire time was started by one member, unless the member holding it
    // was killed (then once more by the member that took it over); none is
    // left held but by a killed member (its lease runs out by itself). The
    // work was shared, not done three times.
    let fires = db.scalar("SELECT count(*) FROM job_fires");
    let repeated = db.scalar("SELECT count(*) FROM job_fires WHERE runs > 1");
    let held: Vec<String> = db
        .texts("SELECT member FROM job_fires WHERE state = 'running'")
        .into_iter()
        .filter(|member| !killed.contains(&pid_of(member)))
        .collect();
    let runners = db.texts("SELECT DISTINCT member FROM job_fires");
    eprintln!(
        "{fires} fire times, {repeated} started twice, by {} members; {} kills",
        runners.len(),
        killed.len()
    );
    assert!(fires >= STEPS as i64, "{fires} fire times");
    assert!(
        repeated <= killed.len() as i64,
        "{repeated} fire times started twice, {} kills",
        killed.len()
    );
    assert!(
        held.is_empty(),
        "fire times still held by members that stopped: {held:?}"
    );
    assert!(
        runners.len() > 1,
        "one member did all the work: {runners:?}"
    );
}

#[test]
fn a_fire_time_whose_member_dies_mid_run_is_taken_over_within_the_lease() {
    let db = Db::on(Engine::Postgresql);
    let receiver = Receiver::start_lean();
    // A tick long enough to kill its member in the middle (a few seconds of
    // claims), short enough that the survivor's rerun and its deliveries fit
    // beside the other test in a debug build.
    const ALERTS: usize = 50_000;
    let alerts: Vec<(String, &str, f64)> = (0..ALERTS)
        .map(|n| (format!("T{}", n % TICKERS), "above", 50.0))
        .collect();
    db.add_alerts(&alerts);
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at)
         SELECT 'T' || n, 100, $1 FROM generate_series(0, $2) AS n",
        values![chrono::Utc::now().to_rfc3339(), (TICKERS - 1) as i64],
    );
    // One fire time, a few seconds from now, and no other for a year.
    let at = chrono::Utc::now() + chrono::Duration::seconds(6);
    let schedule = at.format("%S %M %H %d %m *").to_string();
    let text = config_text(&db, &receiver.url, &schedule);
    let path = db.write_config(&text);
    let mut members = [
        Daemon::start_quiet_with_leases(&path, SHORT_LEASES),
        Daemon::start_quiet_with_leases(&path, SHORT_LEASES),
    ];

    // Whoever takes it is killed mid-run.
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let held = db.texts("SELECT member FROM job_fires WHERE state = 'running'");
        if let Some(member) = held.first() {
            break pid_of(member);
        }
        assert!(Instant::now() < deadline, "nobody took the fire time");
        std::thread::sleep(Duration::from_millis(20));
    };
    let victim = members
        .iter()
        .position(|member| member.child.id() == holder)
        .expect("the holder is one of the members");
    members[victim].child.kill().unwrap();
    members[victim].child.wait().unwrap();
    let killed_at = Instant::now();

    // The survivor takes it over once the lease has run out (its last
    // renewal was at most a heartbeat before the kill), within the lease
    // and a heartbeat, and finishes the work.
    let Leases {
        heartbeat, fire, ..
    } = SHORT_LEASES;
    let lease = fire + heartbeat;
    let deadline = killed_at + lease + Duration::from_secs(30);
    while db.scalar("SELECT count(*) FROM job_fires WHERE runs = 2") == 0 {
        assert!(
            Instant::now() < deadline,
            "the fire time was not taken over"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let taken_over_after = killed_at.elapsed();
    eprintln!("taken over {taken_over_after:?} after the kill (lease {lease:?})");
    assert!(
        taken_over_after <= lease + Duration::from_secs(2),
        "taken over after {taken_over_after:?}, beyond the lease {lease:?}"
    );
    assert!(
        taken_over_after + heartbeat >= fire,
        "taken over after {taken_over_after:?}, while its lease ran"
    );
    wait_until_settled(&db, Duration::from_secs(120));
    assert_eq!(
        db.texts("SELECT state FROM job_fires"),
        vec!["done".to_owned()]
    );
    let survivor = members[1 - victim].child.id();
    assert_eq!(
        db.texts("SELECT member FROM job_fires")
            .iter()
            .map(|member| pid_of(member))
            .collect::<Vec<_>>(),
        vec![survivor]
    );
    assert_eq!(db.scalar("SELECT count(*) FROM outbox"), ALERTS as i64);
    // `status` marks the killed member as presumed dead, the survivor alive
    // (by the members' leases).
    let status = common::cli_with_leases(&path, &["status", "--json"], SHORT_LEASES);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let alive: HashMap<u64, bool> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| (member["pid"].as_u64().unwrap(), member["alive"] == true))
        .collect();
    assert_eq!(
        alive,
        HashMap::from([(u64::from(holder), false), (u64::from(survivor), true)]),
        "{status}"
    );
    let text = common::cli_with_leases(&path, &["status"], SHORT_LEASES);
    assert!(text.contains("presumed dead"), "{text}");
}

/// How many connections the daemon holds to `db` now.
fn daemon_connections(db: &Db) -> i64 {
    daemon_backends(db).len() as i64
}

/// The daemon's connections to `db` now, one line each (when it opened, its
/// state and since when, its last statement): what a failed count shows.
fn daemon_backends(db: &Db) -> Vec<String> {
    db.cluster()
        .admin()
        .unwrap()
        .query(
            "SELECT format('%s: opened %s s ago, %s for %s s: %s', pid,
                    round(extract(epoch FROM now() - backend_start)),
                    state, round(extract(epoch FROM now() - state_change)),
                    left(query, 80))
             FROM pg_stat_activity
             WHERE application_name = 'price-alertd' AND datname = $1
             ORDER BY backend_start",
            &[&db.database_name()],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A daemon's footprint on a shared server: a busy one opens readers as its
/// ticks need them, never more than `database.max_connections` in all, and
/// loses nothing for it; once idle it soon holds at most three (its
/// listener, and what its heartbeat and its deliverer's look at the outbox
/// keep open), not one per evaluation thread, nor idle ones kept for their
/// own sake (r2d2's `min_idle` kept two idle beside those in use, and
/// reopened them after every reap: four at the least, up to seven on a busy
/// machine, where this test once saw five for two minutes). (A long test:
/// the daemon closes what its ticks opened only after r2d2's 30 s idle
/// timeout, seen by a reaper that looks every 30 s.)
#[test]
fn a_daemon_holds_at_most_max_connections_busy_and_few_idle() {
    let receiver = Receiver::start();
    let db = Db::on(Engine::Postgresql);
    let capped = |schedule| {
        config_text(&db, &receiver.url, schedule).replace(
            &db.section(),
            &format!("{}max_connections = 6\n", db.section()),
        )
    };
    let path = db.write_config(&capped("* * * * * *"));
    let mut alerts = Vec::new();
    for ticker in 0..400 {
        for level in 0..5 {
            alerts.push((format!("T{ticker}"), "above", 1.0 + f64::from(level)));
        }
    }
    db.add_alerts(&alerts);
    let daemon = Daemon::start_quiet(&path);
    assert!(
        daemon.log().contains("max_connections=6"),
        "{}",
        daemon.log()
    );
    let most = std::sync::atomic::AtomicI64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most.fetch_max(
                    daemon_connections(&db),
                    std::sync::atomic::Ordering::Relaxed,
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        for ticker in 0..400 {
            db.set_quote(&format!("T{ticker}"), 100.0);
        }
        receiver.wait_for(2000);
        // Each answered event is recorded as delivered by the deliverer's
        // next exchange, which may still wait for a connection of the six.
        wait_until("every event recorded as delivered", || {
            db.scalar("SELECT count(DISTINCT alert_id) FROM outbox WHERE state = 'delivered'")
                == 2000
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let most = most.into_inner();
    assert!((4..=6).contains(&most), "busy: at most {most} connections");

    // Idle: its job now runs once a year.
    std::fs::write(&path, capped(YEARLY)).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("configuration keys changed");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut held = daemon_connections(&db);
    while held > 3 {
        assert!(
            Instant::now() < deadline,
            "idle: still {held} connections:\n{}",
            daemon_backends(&db).join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
        held = daemon_connections(&db);
    }
    assert!(held >= 1, "idle: {held} connections");
}

/// The member holding `job`'s reacting lease, if its lease runs.
fn reacting_member(db: &Db, job: &str) -> Option<String> {
    db.texts(&format!(
        "SELECT member FROM job_reactors WHERE job = '{job}'"
    ))
    .into_iter()
    .next()
}

on_every_engine! {
    /// Three daemons whose job reacts, on one database: one member reacts to
    /// each change, the others leave it; killed, its reacting work goes to
    /// another member within the lease, and every alert is claimed once.
    fn three_daemons_react_once_to_each_change_and_hand_over_when_one_dies(engine: Engine) {
        const WRITES: usize = 10;
        let db = Db::on(engine);
        let receiver = Receiver::start_lean();
        let mut members: Vec<(Daemon, u16)> = (0..3)
            .map(|n| {
                let port = free_port();
                let path = db.dir.path().join(format!("member-{n}.toml"));
                std::fs::write(
                    &path,
                    reacting_config(&db, &receiver.url, port, &[("react", "*")]),
                )
                .unwrap();
                (Daemon::start_quiet_with_leases(&path, SHORT_LEASES), port)
            })
            .collect();
        let holder = |members: &[(Daemon, u16)]| {
            let member = reacting_member(&db, "react")?;
            members
                .iter()
                .position(|(daemon, _)| daemon.child.id() == pid_of(&member))
        };
        let wait_for_holder = |members: &[(Daemon, u16)]| {
            let mut found = None;
            wait_until("a member to react", || {
                found = holder(members)
                    .filter(|&at| ok_runs(members[at].1, "react") >= 1.0);
                found.is_some()
            });
            found.unwrap()
        };
        let first = wait_for_holder(&members);

        let triggered = |n: usize| {
            db.add_alert(&format!("T{n}"), "above", 1.0);
            db.set_quote(&format!("T{n}"), 2.0);
        };
        for n in 0..WRITES {
            triggered(n);
            receiver.wait_for_distinct(n + 1);
        }
        for (at, (_, port)) in members.iter().enumerate() {
            let runs = change_runs(*port, "react");
            if at == first {
                // Its first run, and one for each write (the two writes of
                // each are one transaction apart: maybe two).
                assert!(runs >= (1 + WRITES) as f64, "{runs}");
            } else {
                assert_eq!(runs, 0.0, "member {at} reacted too");
            }
        }

        // The reacting member dies: another takes its work over.
        let (mut dead, _) = members.remove(first);
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();
        let killed = Instant::now();
        triggered(WRITES);
        receiver.wait_for_distinct(WRITES + 1);
        let handed_over = killed.elapsed();
        eprintln!("handed over in {handed_over:?}");
        assert!(
            handed_over < SHORT_LEASES.reacting + SHORT_LEASES.heartbeat * 2,
            "{handed_over:?}"
        );
        let second = wait_for_holder(&members);
        for (at, (_, port)) in members.iter().enumerate() {
            let runs = change_runs(*port, "react");
            if at == second {
                assert!(runs >= 1.0, "{runs}");
            } else {
                assert_eq!(runs, 0.0, "member {at} reacted too");
            }
        }
        assert_eq!(db.scalar("SELECT count(*) FROM outbox"), (WRITES + 1) as i64);
        assert_eq!(
            db.scalar("SELECT count(DISTINCT alert_id) FROM outbox"),
            (WRITES + 1) as i64
        );
    }
}
