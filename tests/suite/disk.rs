//! A disk that fills: on a small file system the test mounts, the daemon's
//! own writes keep SQLite's WAL within its bound and never fill the disk; a
//! disk filled by someone else is one recurring condition in the log, and
//! the daemon recovers once a few MB are free, every event sent once. A
//! large tick's readers, which read while it claims, never keep the WAL
//! from starting over.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    Daemon, Db, Receiver, SmallDisk, config_text, free_port, wait_until, wait_while_progressing,
};

const MIB: u64 = 1024 * 1024;

/// The largest the database's WAL was while `sampling`, read every 20 ms.
fn sample_wal(db: &Db, sampling: Arc<AtomicBool>) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let largest = Arc::new(AtomicU64::new(0));
    let wal = db.path.with_file_name("alerts.db-wal");
    let seen = largest.clone();
    let sampler = std::thread::spawn(move || {
        while sampling.load(Ordering::Relaxed) {
            if let Ok(metadata) = std::fs::metadata(&wal) {
                seen.fetch_max(metadata.len(), Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (largest, sampler)
}

/// Each event id the receiver got with a 2xx, and how often.
fn posts(receiver: &Receiver) -> HashMap<String, usize> {
    let mut posts: HashMap<String, usize> = HashMap::new();
    for arrival in receiver.arrivals() {
        if arrival.status == 200 {
            *posts.entry(arrival.webhook_id).or_default() += 1;
        }
    }
    posts
}

/// Quotes that trigger every alert of `tickers` tickers `T0..`, in one
/// statement.
fn trigger(db: &Db, prefix: &str, tickers: usize) {
    db.execute(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO quotes (ticker, price, updated_at) SELECT '{prefix}' || i, 20.0, $1 FROM n WHERE true
             ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
            tickers - 1
        ),
        values![chrono::Utc::now().to_rfc3339()],
    );
}

#[test]
fn a_disk_that_fills_is_one_condition_in_the_log_and_the_daemon_recovers_once_a_few_mb_are_free() {
    const FIRST: usize = 15_000;
    const SECOND: usize = 2_000;
    let disk = SmallDisk::mount(64);
    let db = Db::in_folder(disk.path());
    let receiver = Receiver::start_lean();
    let alerts: Vec<(String, &str, f64)> = (0..FIRST)
        .map(|n| (format!("A{}", n % 150), "above", 10.0))
        .chain((0..SECOND).map(|n| (format!("B{}", n % 20), "above", 10.0)))
        .collect();
    db.add_alerts(&alerts);
    let port = free_port();
    let text = config_text(&db, &receiver.url, "* * * * * *")
        .replace("timeout = \"5s\"", "timeout = \"5s\"\nconcurrency = 16")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let daemon = Daemon::start_quiet(&db.write_config(&text));
    disk.leave(40 * MIB);
    let sampling = Arc::new(AtomicBool::new(true));
    let (largest, sampler) = sample_wal(&db, sampling.clone());

    // The daemon's own writes: 15,000 claims and deliveries, whose WAL,
    // unbounded, would take more than the 40 MiB left.
    trigger(&db, "A", 150);
    wait_while_progressing("the first events delivered", FIRST, || {
        posts(&receiver).len()
    });
    let own = largest.swap(0, Ordering::Relaxed);
    eprintln!(
        "15,000 claims and deliveries: the WAL peaked at {:.1} MiB, {:.1} MiB left",
        own as f64 / MIB as f64,
        disk.free() as f64 / MIB as f64
    );
    // Its bound, 16 MiB, and one transaction; twice the bound where a
    // reader slowed by the machine's load held up a checkpoint (see
    // `a_large_ticks_readers_never_keep_the_wal_from_starting_over`).
    assert!(own <= 40 * MIB, "the WAL reached {own} bytes");
    assert!(!daemon.log().contains("disk is full"), "{}", daemon.log());
    assert!(!daemon.log().contains("disk I/O error"), "{}", daemon.log());

    // Someone else fills the disk, after the application's last write
    // triggered 2,000 more (the daemon paused meanwhile, so that it finds
    // them with the disk full).
    daemon.signal("STOP");
    disk.leave(MIB);
    trigger(&db, "B", 20);
    // Its WAL emptied, so that the daemon's next write needs room.
    db.app()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    disk.leave(0);
    daemon.signal("CONT");
    let disk_lines = || {
        daemon
            .log()
            .lines()
            .filter(|line| line.contains("disk is full") || line.contains("disk I/O error"))
            .count()
    };
    wait_until("the disk to be found full", || disk_lines() > 0);
    let full = Instant::now();
    // Ten more ticks fail for want of room (counted by the metrics).
    let failed_ticks =
        || common::counter(port, "ticks_total{job_name=\"evaluate\",result=\"failed\"}");
    let failed_before = failed_ticks();
    wait_until("ten more failed ticks", || {
        failed_ticks() >= failed_before + 10.0
    });
    let full_lines = disk_lines();
    eprintln!(
        "{full_lines} log lines said the disk was full over {:?}",
        full.elapsed()
    );
    assert!(full_lines <= 4, "{}", daemon.log());

    // A few MB free: everything goes out, once.
    disk.leave(6 * MIB);
    let freed = Instant::now();
    wait_until("every event delivered", || {
        posts(&receiver).len() == FIRST + SECOND
    });
    eprintln!(
        "recovered: every event delivered {:?} after 6 MiB were freed",
        freed.elapsed()
    );
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let posts = posts(&receiver);
    assert!(
        posts.values().all(|&count| count == 1),
        "an event was sent twice"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox"),
        (FIRST + SECOND) as i64
    );
    assert_eq!(
        db.scalar("SELECT count(DISTINCT alert_id) FROM outbox"),
        (FIRST + SECOND) as i64
    );
    wait_until("the recovery logged", || {
        daemon.log().contains("runs again after failing")
    });
    drop(daemon);
    drop(db);
    drop(disk);
}

#[test]
fn a_large_ticks_readers_never_keep_the_wal_from_starting_over() {
    const ALERTS: usize = 40_000;
    const TICKERS: usize = 4_000;
    let db = Db::new();
    let receiver = Receiver::start_lean();
    let alerts: Vec<(String, &str, f64)> = (0..ALERTS)
        .map(|n| (format!("W{}", n % TICKERS), "above", 10.0))
        .collect();
    db.add_alerts(&alerts);
    let text = config_text(&db, &receiver.url, "* * * * * *")
        .replace("timeout = \"5s\"", "timeout = \"5s\"\nconcurrency = 16");
    let daemon = Daemon::start_quiet(&db.write_config(&text));
    let sampling = Arc::new(AtomicBool::new(true));
    let (largest, sampler) = sample_wal(&db, sampling.clone());

    // One tick's readers read 4,000 tickers while it claims 40,000 alerts
    // (some 100 MiB of WAL in all).
    trigger(&db, "W", TICKERS);
    wait_while_progressing("every event delivered", ALERTS, || posts(&receiver).len());
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = largest.load(Ordering::Relaxed);
    eprintln!(
        "40,000 claims by one tick over 4,000 tickers, and their deliveries: the WAL peaked at {:.1} MiB",
        peak as f64 / MIB as f64
    );
    // Its bound, 16 MiB and the transaction that took it there (10.6–12.2
    // MiB here); more where a checkpoint was held up by a reader slowed by
    // the machine's load (the next is tried 4, 8, then 16 MiB later: 32.2
    // MiB was seen once under CI's load). Readers that kept it from ever
    // starting over took it past 100 MiB here.
    assert!(peak <= 40 * MIB, "the WAL reached {peak} bytes");
    assert!(posts(&receiver).values().all(|&count| count == 1));
    drop(daemon);
}
