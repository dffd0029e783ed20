//! Hearing of commits as they happen, whoever made them: events queued
//! (for the deliverer) and quotes or alerts changed (for the jobs that
//! react). PostgreSQL notifies, and one connection of a member's listens
//! for both (`postgresql/listen.rs`); SQLite, which has no notifications,
//! is watched (`sqlite/watch.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::lock::lock;

use super::{Pool, PoolOf, sqlite};

pub(super) mod heard;

use heard::Hearer;
pub use heard::{Changed, Hearers, MOST_TICKERS};

/// A process's listener: it stops (within a second) when dropped.
pub struct Listener {
    hearers: Arc<Hearers>,
    stop: Arc<AtomicBool>,
    /// On SQLite, the change watcher's own stop, while it runs.
    watcher: Option<Arc<AtomicBool>>,
    of: PoolOf,
}

/// Starts listening to `pool`'s database: `new_events` is called whenever
/// any process sharing the database queues events, where the engine can
/// tell (PostgreSQL's `LISTEN`/`NOTIFY`); on SQLite, where the processes
/// share one host, the deliverer's polling finds them. Changes are heard
/// once asked for ([`Listener::hear_changes`]).
pub fn listen(
    pool: &Pool,
    new_events: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<Listener> {
    let listener = Listener {
        hearers: Arc::new(Hearers {
            new_events: Box::new(new_events),
            changes: Mutex::new(None),
        }),
        stop: Arc::new(AtomicBool::new(false)),
        watcher: None,
        of: pool.of.clone(),
    };
    if let PoolOf::Postgres(postgres) = &pool.of {
        crate::store::postgresql::listen::listen(
            postgres,
            listener.hearers.clone(),
            listener.stop.clone(),
        )
        .context("starting the listener")?;
    }
    Ok(listener)
}

impl Listener {
    /// Whether it hears changes now ([`Listener::hear_changes`]).
    pub fn hears_changes(&self) -> bool {
        self.hearers.wants_changes()
    }

    /// From now on calls `changed` (until [`Listener::stop_hearing_changes`],
    /// or another call replaces it) with what
    /// each commit, by any process, changed: quotes written, alerts
    /// inserted, re-armed or edited (never a claim), within milliseconds of
    /// the commit. It first says [`Changed::Unknown`], for what changed
    /// before; on PostgreSQL again after the listening connection
    /// reconnected, and every second while it is down. SQLite is watched
    /// by a thread of its own (inotify on the database's folder, the change
    /// log's last number, `PRAGMA data_version` as a backstop).
    pub fn hear_changes(
        &mut self,
        changed: impl Fn(Changed) + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        *lock(&self.hearers.changes) = Some(Arc::new(changed) as Hearer);
        // On PostgreSQL the listening thread follows within a second.
        if let PoolOf::Sqlite {
            path, busy_timeout, ..
        } = &self.of
            && self.watcher.is_none()
        {
            let stop = Arc::new(AtomicBool::new(false));
            sqlite::watch::watch(path, *busy_timeout, self.hearers.clone(), stop.clone())
                .context("starting the change watcher")?;
            self.watcher = Some(stop);
        }
        Ok(())
    }

    /// From now on hears no changes (SQLite's watcher stops).
    pub fn stop_hearing_changes(&mut self) {
        *lock(&self.hearers.changes) = None;
        if let Some(stop) = self.watcher.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(stop) = &self.watcher {
            stop.store(true, Ordering::Relaxed);
        }
    }
}
