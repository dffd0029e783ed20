//! SQLite: seeing other processes' commits as they happen. Its own because
//! SQLite has no notifications: a commit writes the WAL (or, without WAL,
//! the database file), which inotify reports on the database's folder at
//! once; the change log's last number then tells a change of quotes or
//! alerts from the daemon's own writes (claims, observations, the outbox),
//! which take no change number. `PRAGMA data_version` is the backstop,
//! every [`BACKSTOP`], where inotify misses (a file system without it, a
//! full event queue). A write seen before its commit shows is looked at
//! again only while a writer holds the WAL's write lock ([`WriteLock`]):
//! the daemon's own commits and checkpoints, most of what wakes the
//! watcher under a feed, cost one look each.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchMask};
use rusqlite::{Connection, params};

use crate::log_recurring;
use crate::recurring::Recurring;
use crate::store::listen::heard::{Changed, Hearers, MOST_TICKERS};

/// How often the watcher looks without being told to.
const BACKSTOP: Duration = Duration::from_millis(250);

/// After it looked, how long the watcher lets writes gather before it
/// listens again: each page a commit writes is an event, and the daemon's
/// own commits are events too; looking once per pause, not once per
/// event, costs at most this much latency.
const PAUSE: Duration = Duration::from_millis(1);

/// Tells `hearers` the tickers of the quotes and alerts changed by each
/// commit, by any process, until `stop` is set: first [`Changed::Unknown`]
/// (what changed before), then what each commit changed. On a thread and a
/// connection of its own, which it opens itself: the caller (the daemon's
/// loop) never waits for the database. Until it has a connection (the
/// database is locked, or gone), it says [`Changed::Unknown`] every second,
/// so that the jobs look for themselves.
pub fn watch(
    path: &Path,
    busy_timeout: Duration,
    hearers: Arc<Hearers>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let path = path.to_path_buf();
    Ok(std::thread::Builder::new()
        .name("change-watcher".into())
        .spawn(move || {
            let Some((connection, seen)) = connect(&path, busy_timeout, &hearers, &stop) else {
                return;
            };
            let folder = Folder::watch(&path);
            if let Err(error) = &folder {
                tracing::warn!(
                    database = %path.display(),
                    %error,
                    "inotify cannot watch the database's folder: changes are seen every 250 ms"
                );
            }
            let lock = WriteLock::of(&connection, &path);
            watch_with(&connection, seen, folder.ok(), lock, &path, &hearers, &stop);
        })?)
}

/// The watcher's connection and the change log's last number, once it can
/// have them; until then, [`Changed::Unknown`] every second. `None` if
/// stopped first.
fn connect(
    path: &Path,
    busy_timeout: Duration,
    hearers: &Hearers,
    stop: &AtomicBool,
) -> Option<(Connection, i64)> {
    let mut failures = Recurring::default();
    while !stop.load(Ordering::Relaxed) {
        let opened = super::open_read_only(path, busy_timeout).and_then(|connection| {
            let seen = super::changes::last_change(&connection)?;
            Ok((connection, seen))
        });
        match opened {
            Ok(opened) => {
                if let Some(failed) = failures.succeeded() {
                    tracing::info!(failed, "watching the database for changes again");
                }
                return Some(opened);
            }
            Err(error) => {
                log_recurring!(
                    warn,
                    failures,
                    format!("{error:#}"),
                    "watching the database for changes failed: reacting jobs look every second meanwhile"
                );
                hearers.changed(Changed::Unknown);
                std::thread::sleep(NO_WATCHER_LOOK);
            }
        }
    }
    None
}

/// While the watcher has no connection, how often the jobs are told to
/// look for themselves.
const NO_WATCHER_LOOK: Duration = Duration::from_secs(1);

/// Watches on `connection` from change `seen` on (see [`watch`]).
fn watch_with(
    connection: &Connection,
    mut seen: i64,
    mut folder: Option<Folder>,
    lock: WriteLock,
    path: &Path,
    hearers: &Hearers,
    stop: &AtomicBool,
) {
    let mut version = data_version(connection).unwrap_or_default();
    let mut failing = false;
    let mut recheck: Option<Duration> = None;
    hearers.changed(Changed::Unknown);
    while !stop.load(Ordering::Relaxed) {
        let told = match &mut folder {
            Some(folder) => folder.wait(recheck.unwrap_or(BACKSTOP)),
            None => {
                std::thread::sleep(BACKSTOP);
                false
            }
        };
        let before = seen;
        // Before the look: a writer that let go of the lock by now made
        // its commit visible to the look, and one that takes it later
        // writes again, which inotify reports.
        let writing = (told || recheck.is_some()) && lock.held();
        // Only another connection's commit moves `data_version`, and
        // nothing else can move the log: an unchanged version needs no
        // look (a write that woke the watcher and is not visible yet, a
        // recheck, the backstop). A failed look is tried again at the next
        // wake, whatever the version says then.
        let looked = (|| -> rusqlite::Result<()> {
            let now = data_version(connection)?;
            if now == version {
                return Ok(());
            }
            look(connection, &mut seen, hearers)?;
            version = now;
            Ok(())
        })();
        recheck = next_recheck(told, writing, seen != before, recheck);
        if told {
            std::thread::sleep(PAUSE);
        }
        match looked {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(database = %path.display(), %error, "looking for changes failed; trying again");
            }
            Err(_) => {}
        }
    }
}

/// When to look again without being told, after a look that found
/// nothing new while a writer held the WAL's write lock (`writing`): a
/// commit writes its last WAL frame, then syncs the WAL (with `synchronous
/// = FULL`, SQLite's default: 10 ms or more), then makes its frames
/// visible in the -shm, which is mapped, so inotify sees no write after the
/// look. After a write (`told`), the watcher looks again after [`PAUSE`],
/// then twice as long each time while the lock is held, up to
/// [`RECHECK_UP_TO`], and leaves anything later to the [`BACKSTOP`]. With
/// no writer there is nothing to wait for: the write that woke it was a
/// commit the look saw (the daemon's own, most of them, which take no
/// change number) or a checkpoint's.
fn next_recheck(
    told: bool,
    writing: bool,
    found: bool,
    recheck: Option<Duration>,
) -> Option<Duration> {
    match (found, writing, told, recheck) {
        (true, _, _, _) | (false, false, _, _) => None,
        (false, true, true, _) => Some(PAUSE),
        (false, true, false, Some(after)) => {
            Some(after * 2).filter(|after| *after <= RECHECK_UP_TO)
        }
        (false, true, false, None) => None,
    }
}

/// The longest wait between the looks of [`next_recheck`]: looks at about
/// 1, 2, 4, ... 64 ms after the last write, 127 ms in all.
const RECHECK_UP_TO: Duration = Duration::from_millis(64);

/// Tells `hearers` what changed after `seen`, and moves `seen` on.
fn look(connection: &Connection, seen: &mut i64, hearers: &Hearers) -> rusqlite::Result<()> {
    let last = super::changes::last_change(connection)?;
    if last <= *seen {
        return Ok(());
    }
    let found = changed_tickers(connection, *seen, last)?;
    *seen = last;
    hearers.changed(found);
    Ok(())
}

fn data_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}

/// The tickers of the quotes, and of the enabled alerts, changed after
/// `since` up to `until`; [`Changed::Unknown`] beyond [`MOST_TICKERS`], or
/// when the change log was pruned past `since`.
fn changed_tickers(connection: &Connection, since: i64, until: i64) -> rusqlite::Result<Changed> {
    if since < super::changes::pruned_through(connection)? {
        return Ok(Changed::Unknown);
    }
    let mut tickers = Vec::new();
    for sql in [
        "SELECT DISTINCT quote_ticker FROM change_log
         WHERE change_seq > ?1 AND change_seq <= ?2 AND quote_ticker IS NOT NULL LIMIT ?3 + 0",
        "SELECT ticker FROM price_alerts
         WHERE change_seq > ?1 AND change_seq <= ?2 AND enabled = 1 LIMIT ?3 + 0",
    ] {
        let mut statement = connection.prepare_cached(sql)?;
        let mut rows = statement.query(params![since, until, MOST_TICKERS as i64 + 1])?;
        while let Some(row) = rows.next()? {
            tickers.push(super::rows::text(row.get(0)?));
        }
        if tickers.len() > MOST_TICKERS {
            return Ok(Changed::Unknown);
        }
    }
    tickers.sort_unstable();
    tickers.dedup();
    Ok(Changed::Tickers(tickers))
}

/// Whether some connection, of any process (this one's too), holds the
/// WAL's write lock: SQLite's `unix` VFS takes it as a POSIX lock on byte
/// 120 of the -shm file (`UNIX_SHM_BASE` + `WAL_WRITE_LOCK`) from a write
/// transaction's start until its commit is visible. An open file
/// description's lock query (`F_OFD_GETLK`) sees POSIX locks of this
/// process as well as of others, without taking anything.
struct WriteLock {
    /// The -shm file, where the database is in WAL mode; without it (a
    /// rollback journal, a failed open) a writer is always presumed.
    shm: Option<File>,
}

/// The WAL's write lock, as SQLite's `unix` VFS places it in the -shm.
const WAL_WRITE_LOCK_BYTE: libc::off_t = 120;

impl WriteLock {
    fn of(connection: &Connection, database: &Path) -> WriteLock {
        let wal = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0))
            .is_ok_and(|mode| mode.eq_ignore_ascii_case("wal"));
        let mut shm = database.as_os_str().to_owned();
        shm.push("-shm");
        WriteLock {
            shm: wal.then(|| File::open(&shm).ok()).flatten(),
        }
    }

    /// False only where surely no connection holds the lock now.
    fn held(&self) -> bool {
        let Some(shm) = &self.shm else {
            return true;
        };
        // SAFETY: a zeroed `flock` is a valid argument once its fields are
        // set below; `l_pid` must be 0 for an OFD query.
        let mut query: libc::flock = unsafe { std::mem::zeroed() };
        query.l_type = libc::F_RDLCK as libc::c_short;
        query.l_whence = libc::SEEK_SET as libc::c_short;
        query.l_start = WAL_WRITE_LOCK_BYTE;
        query.l_len = 1;
        // SAFETY: a valid descriptor and a valid `flock`.
        let asked = unsafe { libc::fcntl(shm.as_raw_fd(), libc::F_OFD_GETLK, &mut query) };
        asked != 0 || query.l_type != libc::F_UNLCK as libc::c_short
    }
}

/// An inotify watch on the database's folder, for writes to the database
/// and its WAL.
struct Folder {
    inotify: Inotify,
    /// The database's file name: its WAL's and journal's begin with it.
    name: OsString,
}

impl Folder {
    fn watch(database: &Path) -> std::io::Result<Folder> {
        let folder = match database.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = database
            .file_name()
            .map(ToOwned::to_owned)
            .ok_or_else(|| std::io::Error::other("the database path names no file"))?;
        // Non-blocking and closed on exec.
        let inotify = Inotify::init()?;
        inotify.watches().add(&folder, WatchMask::MODIFY)?;
        Ok(Folder { inotify, name })
    }

    /// Waits up to `timeout` for a write to the database or its WAL; true
    /// if there was one (or the event queue overflowed).
    fn wait(&mut self, timeout: Duration) -> bool {
        // The crate waits without a bound only: a poll bounds the wait.
        let mut poll = libc::pollfd {
            fd: self.inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as libc::c_int) };
        if ready <= 0 {
            return false;
        }
        self.drain()
    }

    /// Reads every queued event; true if one concerns the database.
    fn drain(&mut self) -> bool {
        let mut buffer = [0u8; 4096];
        let mut concerned = false;
        // Until there is nothing left to read (`WouldBlock`).
        while let Ok(events) = self.inotify.read_events(&mut buffer) {
            for event in events {
                let ours = event
                    .name
                    .is_some_and(|name| name.as_bytes().starts_with(self.name.as_bytes()));
                if ours || event.mask.contains(EventMask::Q_OVERFLOW) {
                    concerned = true;
                }
            }
        }
        concerned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_showed_nothing_is_looked_at_again_ever_later_while_a_writer_holds_the_lock() {
        let mut waits = Vec::new();
        let mut recheck = next_recheck(true, true, false, None);
        while let Some(after) = recheck {
            waits.push(after.as_millis());
            recheck = next_recheck(false, true, false, recheck);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64]);
        // A new write starts over; a look that found the change stops.
        assert_eq!(
            next_recheck(true, true, false, Some(RECHECK_UP_TO)),
            Some(PAUSE)
        );
        assert_eq!(next_recheck(false, true, true, Some(PAUSE)), None);
        assert_eq!(next_recheck(true, true, true, None), None);
        assert_eq!(next_recheck(false, true, false, None), None);
        // Without a writer, the look saw all there was.
        assert_eq!(next_recheck(true, false, false, None), None);
        assert_eq!(next_recheck(false, false, false, Some(PAUSE)), None);
    }

    #[test]
    fn the_write_lock_is_seen_held_by_this_process_and_by_another() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("lock.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        let lock = WriteLock::of(&reader, &path);
        assert!(lock.shm.is_some(), "a WAL database has its -shm");
        assert!(!lock.held());
        writer
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(lock.held(), "this process's write transaction");
        writer.execute_batch("COMMIT").unwrap();
        assert!(!lock.held());

        let other = std::process::Command::new("sqlite3")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut other = KillOnDrop(other);
        use std::io::{BufRead as _, Write as _};
        let mut input = other.0.stdin.take().unwrap();
        let mut output = std::io::BufReader::new(other.0.stdout.take().unwrap());
        writeln!(
            input,
            "BEGIN IMMEDIATE; INSERT INTO t VALUES (2); SELECT 'in';"
        )
        .unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "in");
        assert!(lock.held(), "another process's write transaction");
        writeln!(input, "COMMIT; SELECT 'out';").unwrap();
        line.clear();
        output.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "out");
        assert!(!lock.held());

        // A database in rollback mode has no such lock: a writer is presumed.
        let rollback = folder.path().join("rollback.db");
        let connection = Connection::open(&rollback).unwrap();
        connection
            .execute_batch("CREATE TABLE t (x INTEGER);")
            .unwrap();
        assert!(WriteLock::of(&connection, &rollback).held());
    }

    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
