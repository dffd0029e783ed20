//! PostgreSQL going away under a running daemon: restarted (as `pg_ctl
//! restart` does), and down for a while. Ticks and deliveries fail cleanly,
//! nothing is lost, and the daemon recovers by itself. (On a cluster of its
//! own: the one the other tests share stays up.)

use crate::common;

use std::time::{Duration, Instant};

use common::{Daemon, Db, Receiver, config_text};

/// Waits until `count` events reached the receiver with a 2xx, each once.
fn wait_for_distinct(receiver: &Receiver, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ids: std::collections::HashSet<String> = receiver
            .arrivals()
            .into_iter()
            .filter(|arrival| arrival.status == 200)
            .map(|arrival| arrival.webhook_id)
            .collect();
        if ids.len() >= count {
            assert_eq!(ids.len(), count, "more events than alerts");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} events delivered",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_restarted_or_unreachable_postgresql_fails_ticks_cleanly_and_loses_nothing() {
    let db = Db::on_cluster_to_restart();
    let receiver = Receiver::start_lean();
    let path = db.write_config(&config_text(&db, &receiver.url, "* * * * * *"));
    let mut daemon = Daemon::start(&path);

    let triggered = |first: usize, count: usize| {
        for n in first..first + count {
            db.add_alert(&format!("T{n}"), "above", 1.0);
            db.set_quote(&format!("T{n}"), 2.0);
        }
    };
    triggered(0, 10);
    wait_for_distinct(&receiver, 10);

    // Restarted under the daemon: every pooled connection is cut.
    db.cluster().restart(Duration::ZERO);
    triggered(10, 10);
    wait_for_distinct(&receiver, 20);

    // Down for a while, with alerts waiting to be claimed and events waiting
    // to be sent.
    triggered(20, 10);
    db.cluster().restart(Duration::from_secs(12));
    wait_for_distinct(&receiver, 30);
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
