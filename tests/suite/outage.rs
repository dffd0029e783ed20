//! PostgreSQL going away under a running daemon: restarted (as `pg_ctl
//! restart` does), and down for a while. Ticks and deliveries fail cleanly,
//! nothing is lost, and the daemon recovers by itself. (On a cluster of its
//! own: the one the other tests share stays up.)

use crate::common;

use std::time::Duration;

use common::{
    Daemon, Db, Receiver, change_runs, config_text, counter, free_port, ok_runs, reacting_config,
    scrape, wait_until,
};

#[test]
fn a_restarted_or_unreachable_postgresql_fails_ticks_cleanly_and_loses_nothing() {
    let db = Db::on_cluster_to_restart();
    let receiver = Receiver::start_lean();
    let port = free_port();
    let path = db.write_config(
        &(config_text(&db, &receiver.url, "* * * * * *")
            + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")),
    );
    let mut daemon = Daemon::start(&path);
    wait_until("the daemon is ready", || {
        scrape(port, "/readyz") == (200, "ready\n".to_owned())
    });

    let triggered = |first: usize, count: usize| {
        for n in first..first + count {
            db.add_alert(&format!("T{n}"), "above", 1.0);
            db.set_quote(&format!("T{n}"), 2.0);
        }
    };
    triggered(0, 10);
    receiver.wait_for_distinct(10);

    // Restarted under the daemon: every pooled connection is cut.
    db.cluster().restart(Duration::ZERO);
    triggered(10, 10);
    receiver.wait_for_distinct(20);

    // Down for a while, with alerts waiting to be claimed and events waiting
    // to be sent.
    triggered(20, 10);
    // Meanwhile, a readiness probe: the daemon is alive, and not ready.
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe = {
        let probing = probing.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while probing.load(std::sync::atomic::Ordering::Relaxed) {
                answers.push((scrape(port, "/readyz"), scrape(port, "/healthz").0));
                std::thread::sleep(Duration::from_millis(500));
            }
            answers
        })
    };
    db.cluster().restart(Duration::from_secs(12));
    probing.store(false, std::sync::atomic::Ordering::Relaxed);
    let answers = probe.join().unwrap();
    assert!(
        answers
            .iter()
            .any(|((status, body), _)| *status == 503
                && body.starts_with("not ready:\n- the database ")),
        "{answers:#?}"
    );
    assert!(
        answers.iter().all(|(_, alive)| *alive == 200),
        "{answers:#?}"
    );
    wait_until("the daemon is ready again", || {
        scrape(port, "/readyz") == (200, "ready\n".to_owned())
    });
    receiver.wait_for_distinct(30);
    daemon.wait_for_log("the job runs again after failing");
    // Its failures said why, not only that a wait ran out.
    let log = daemon.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("job failed"))
        .collect();
    assert!(!failed.is_empty(), "{log}");
    assert!(
        failed
            .iter()
            .any(|line| line.contains("the last attempt to connect") && line.contains("refused")),
        "{failed:#?}"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM outbox"), 30);
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'"),
        30
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM price_alerts WHERE enabled = 1"),
        0
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), Some(0));
}

/// The backends of `db` whose last statement was a `LISTEN`: the daemon's
/// listener.
fn listeners(db: &Db) -> i64 {
    db.scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'LISTEN%'",
        db.database_name()
    ))
}

/// A daemon whose job reacts to changes, its schedule a year away: its
/// listening connection killed (`pg_terminate_backend`), then the server
/// restarted under it. Every change is evaluated all the same, and it
/// listens again by itself.
#[test]
fn a_reacting_daemon_misses_nothing_when_its_listener_or_the_server_goes() {
    let db = Db::on_cluster_to_restart();
    let receiver = Receiver::start_lean();
    let port = free_port();
    let path = db.write_config(&reacting_config(
        &db,
        &receiver.url,
        port,
        &[("react", "*")],
    ));
    let mut daemon = Daemon::start(&path);
    wait_until("the first run", || ok_runs(port, "react") == 1.0);
    wait_until("the daemon to listen", || listeners(&db) == 1);
    let triggered = |n: usize| {
        db.add_alert(&format!("T{n}"), "above", 1.0);
        db.set_quote(&format!("T{n}"), 2.0);
    };
    triggered(0);
    receiver.wait_for_distinct(1);

    // The listening connection killed: a change made meanwhile is found
    // (polling while it is down, and a run once it listens again).
    let killed = db.scalar(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = '{}' AND query LIKE 'LISTEN%'",
        db.database_name()
    ));
    assert_eq!(killed, 1);
    triggered(1);
    receiver.wait_for_distinct(2);
    wait_until("the daemon to listen again", || listeners(&db) == 1);
    triggered(2);
    receiver.wait_for_distinct(3);

    // The server restarted under it, and a change made as it comes back.
    db.cluster().restart(Duration::from_secs(2));
    triggered(3);
    receiver.wait_for_distinct(4);
    wait_until("the daemon to listen after the restart", || {
        listeners(&db) == 1
    });
    triggered(4);
    receiver.wait_for_distinct(5);

    assert_eq!(db.scalar("SELECT count(*) FROM outbox"), 5);
    assert_eq!(
        counter(
            port,
            "tick_causes_total{job_name=\"react\",cause=\"schedule\"}"
        ),
        0.0
    );
    assert!(
        change_runs(port, "react") >= 6.0,
        "{}",
        change_runs(port, "react")
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited"
    );
}

/// The pool hands a connection out unchecked only for a moment after it
/// last answered (`store::postgresql::CHECKED_WITHIN`): one idle for longer
/// is checked first, so after a restart the next user gets a working
/// connection, the cut ones replaced, and nothing fails.
#[test]
fn a_pooled_connection_idle_past_its_check_is_checked_and_replaced_after_a_restart() {
    let db = Db::on_cluster_to_restart();
    let pool = db.pool(4);
    let now = || price_alertd::store::clock::now(&mut pool.get().unwrap());
    now().unwrap();
    db.cluster().restart(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..3 {
        now().expect("a connection the pool checked, or a new one");
    }
}
