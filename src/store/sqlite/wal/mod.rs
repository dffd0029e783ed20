//! SQLite: the daemon's own writes keep the WAL bounded and leave the
//! application its turns at the write lock.
//!
//! **The WAL.** The daemon's connections never checkpoint on their own
//! (`wal_autocheckpoint = 0`: a checkpoint would land in whichever commit
//! crossed the threshold, often a claim mid-tick). After each of its write
//! transactions that left the WAL past half of [`WAL_LIMIT`]
//! ([`CHECKPOINT_FROM`]), the daemon checkpoints it on a thread and a
//! connection of its own ([`checkpointer`]) while the writer goes on, or,
//! past a quarter of the room left on the database's file system, on the
//! writer's connection before it goes on (`PASSIVE` first,
//! which copies without the write lock while the claims go on, then
//! `TRUNCATE`, waiting [`CHECKPOINT_WAIT`] at most for the write lock and
//! for readers to leave the WAL), which starts the WAL over from an empty
//! file; one checkpoint of the process's at a time. Writes that take the
//! WAL past three quarters of [`WAL_LIMIT`] while it copies make the
//! process's writers wait for it ([`Underway`]). The daemon's own readers
//! never wait with a statement open (`store::changes::Reading`): a tick's
//! readers, waiting for its claims inside their statements, once kept a
//! 1M-alert tick's WAL from ever starting over (322 MiB). And while a
//! checkpoint waits for readers, the daemon's leave their snapshots at
//! their next rest ([`readers_asked_to_leave`]). So the WAL stays
//! within the limit and one
//! transaction, but for what a reader that holds a snapshot longer keeps in
//! it: someone else's long read transaction, or a reader of one ticker
//! whose alerts trigger by the thousand at once; after a checkpoint they
//! kept from finishing, the next is tried once the WAL has grown by
//! [`RETRY_GROWTH`] (twice that after each next, up to [`WAL_LIMIT`]), so
//! the WAL starts over within [`WAL_LIMIT`] more once they end. A claim
//! transaction writes about 12 KiB of WAL per alert at most (the alert's
//! page, an index page, the event's index page, each 4 KiB, where alerts
//! are scattered): where the room left would not hold a claim batch's
//! share, the claim goes in smaller transactions ([`claims_that_fit`]), so
//! that a few MB free are enough to go on.
//!
//! **The write lock.** SQLite has one writer at a time, and a waiter that
//! uses SQLite's default busy handler (most applications: Python's
//! `sqlite3`, better-sqlite3, ...) tries again only every 100 ms once it has
//! waited 228 ms. A large tick's claims follow each other within
//! microseconds: such a waiter could find the lock taken at each try for
//! as long as the tick claims (24.7 s was seen). So the daemon's writers
//! share the lock ([`Turn`]): when they held it for more than half of the
//! last [`RUN`], every writer of the process waits out [`GAP`], longer than
//! the default handler's longest sleep, before its next. A waiter may also
//! wait out the transaction under way when the run ends, so each is kept
//! short: a claim about 100 ms (`evaluate::claim`), a checkpoint copies
//! without the lock first, pruning takes a turn per chunk, observations
//! are committed 4,096 at a time. An application write waits about `RUN +
//! GAP` and one such transaction, under a second, for the daemon. Writes
//! that leave the lock free most of the time (a feed's reacting ticks, a
//! few milliseconds each) never wait.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::lock::lock;

mod checkpointer;

/// The WAL's bound, beyond one transaction.
pub const WAL_LIMIT: u64 = 16 * 1024 * 1024;

/// How much WAL a claim transaction writes per alert, at most, where the
/// alerts are scattered (see the module's doc).
const CLAIM_WAL_BYTES: u64 = 12 * 1024;

/// The fewest claims a transaction makes, however tight the room.
const FEWEST_CLAIMS: usize = 16;

/// The span over which the daemon's writers count how long they held the
/// write lock: more than half of it, and they leave the lock to others for
/// [`GAP`].
pub const RUN: Duration = Duration::from_millis(800);

/// How long the daemon's writers leave the write lock to others after a
/// [`RUN`] they mostly held it: longer than SQLite's default busy handler
/// sleeps between tries.
pub const GAP: Duration = Duration::from_millis(150);

/// Bytes free on the file system of the database at `path`, for this
/// process; `None` if it cannot tell.
fn room(path: &Path) -> Option<u64> {
    let folder = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty());
    let folder = folder.unwrap_or(Path::new("."));
    let folder =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(folder.as_os_str())).ok()?;
    // SAFETY: a NUL-terminated path and a zeroed struct statvfs fills.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(folder.as_ptr(), &mut stat) != 0 {
            return None;
        }
        Some(stat.f_bavail as u64 * stat.f_frsize as u64)
    }
}

/// The database file of `connection`, if it has one.
fn database(connection: &Connection) -> Option<&Path> {
    connection
        .path()
        .filter(|path| !path.is_empty())
        .map(Path::new)
}

/// How many of `wanted` claims to make per transaction, so that each
/// transaction's WAL fits in a quarter of the room left on the database's
/// file system.
pub(super) fn claims_that_fit(connection: &Connection, wanted: usize) -> usize {
    let Some(room) = database(connection).and_then(room) else {
        return wanted.max(1);
    };
    let fit = (room / 4 / CLAIM_WAL_BYTES) as usize;
    wanted.min(fit.max(FEWEST_CLAIMS)).max(1)
}

/// After a write transaction of the daemon's: when the WAL is past
/// [`CHECKPOINT_FROM`] (or a quarter of the room left), has it
/// checkpointed and started over ([`Due::hand_over`]). After a checkpoint
/// that a reader kept from finishing, the next is tried once the WAL has grown
/// by [`RETRY_GROWTH`], twice that after the next, up to [`WAL_LIMIT`]
/// (unless the disk's room is short), not after every write: each try
/// holds the write lock while it waits, copies back pages the next claims
/// write again, and syncs the database file. So once the reader leaves,
/// the WAL starts over within [`WAL_LIMIT`] more; doubling the WAL's size
/// between tries instead took it from 16 to 128 MiB while one long read
/// (3 s) lasted, and it stayed there after.
pub(super) fn after_write(connection: &Connection) {
    if let Some(due) = Due::past(connection, CHECKPOINT_FROM) {
        due.hand_over(connection);
    }
}

/// After a run, at rest: has the WAL checkpointed and started over when
/// it is past [`CHECKPOINT_FROM`], as after a write (a run may write
/// nothing); else copies what it can (`PASSIVE`), so that the next burst of
/// claims starts with room (a burst's first claim paid its checkpoint).
pub(super) fn at_rest(connection: &Connection) -> rusqlite::Result<()> {
    match Due::past(connection, CHECKPOINT_FROM) {
        Some(due) => due.hand_over(connection),
        None => super::checkpoint(connection)?,
    }
    Ok(())
}

/// A checkpoint that is due, and the process's one under way until it is
/// run (or dropped).
struct Due {
    /// The database's file.
    path: std::path::PathBuf,
    /// The WAL's size when it was found due.
    size: u64,
    /// The room left on its disk set the bound, not the WAL's own.
    room_short: bool,
    _underway: Underway,
}

impl Due {
    /// The checkpoint of the WAL of `connection`'s database, if it is past
    /// `bound` (or a quarter of the room left), and no checkpoint of the
    /// process's is under way.
    fn past(connection: &Connection, bound: u64) -> Option<Due> {
        let path = database(connection)?;
        let size = std::fs::metadata(wal_of(path)).ok()?.len();
        let limit = match room(path) {
            Some(room) => bound.min(room / 4),
            None => bound,
        };
        // Where the disk's room sets the limit, every chance is taken: a WAL
        // left to grow there could take the room a checkpoint needs to grow the
        // database file, and neither could go on.
        let room_short = limit < bound;
        let held_up_to = HELD_UP_TO.load(Ordering::Relaxed);
        let backing_off = !room_short && size < held_up_to;
        if size <= limit || backing_off {
            return None;
        }
        // One checkpoint at a time: SQLite lets one connection checkpoint, and
        // a second writer's, at the same moment, found it busy and counted a
        // hold-up nobody made. The first starts the WAL over for both; past
        // [`WRITERS_WAIT_FROM`], the process's writers wait for it (see
        // [`Underway`]).
        let underway = Underway::start(size > WRITERS_WAIT_FROM)?;
        Some(Due {
            path: path.to_path_buf(),
            size,
            room_short,
            _underway: underway,
        })
    }

    /// Hands it to the process's [`checkpointer`], or, where the room left
    /// on the disk set the bound, runs it on `connection` before the
    /// writer goes on: it must not write on while the room runs short.
    fn hand_over(self, connection: &Connection) {
        if self.room_short {
            self.run(connection);
        } else {
            checkpointer::hand(self, connection);
        }
    }

    /// Runs it on `connection`, a connection to its database.
    fn run(self, connection: &Connection) {
        // First it copies what it can without the write lock (`PASSIVE`): a
        // checkpoint of 16 MiB scattered over the file held the lock 0.1–0.4 s
        // while it copied. Writes go on meanwhile (a feed's, and the
        // process's own while the checkpointer runs it): a pass that took
        // long is followed by another, which copies what they wrote, up to
        // [`PASSES`]. Then it copies the rest holding the write lock (a
        // turn of the daemon's), waits a little for readers, never a busy
        // timeout (another's long read, or a reader of the daemon's that waits
        // for claims with a statement open, would hold it, and so every writer,
        // that long), and truncates the WAL (`TRUNCATE`), which starts it over
        // at once: `RESTART` left that to the next write, which at times found
        // a reader come in meanwhile and wrote on at the WAL's end.
        for _ in 0..PASSES {
            let pass = Instant::now();
            let _ = super::checkpoint(connection);
            if pass.elapsed() < SHORT_PASS {
                break;
            }
        }
        let done = {
            let _turn = Turn::take_checkpointing();
            let _leaving = Leaving::ask();
            super::waiting_at_most(CHECKPOINT_WAIT, || {
                // (busy, frames in the WAL, frames copied back to the database)
                connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    Ok(row.get::<_, i64>(0)? == 0)
                })
            })
        };
        let step = match done {
            Ok(false) => (RETRY_STEP.load(Ordering::Relaxed) * 2).clamp(RETRY_GROWTH, WAL_LIMIT),
            _ => 0,
        };
        RETRY_STEP.store(step, Ordering::Relaxed);
        let held_up_to = if step == 0 { 0 } else { self.size + step };
        HELD_UP_TO.store(held_up_to, Ordering::Relaxed);
    }
}

/// The most copying passes (`PASSIVE`) before the checkpoint that starts
/// the WAL over (`TRUNCATE`), which copies what is left holding the write
/// lock.
const PASSES: usize = 3;

/// A pass this short leaves too little behind for another.
const SHORT_PASS: Duration = Duration::from_millis(2);

/// The WAL's file of the database at `path`.
fn wal_of(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// Past it, while a checkpoint copies, the process's writers wait for it:
/// three quarters of [`WAL_LIMIT`]. The writer that found the checkpoint
/// due writes on while the checkpointer copies, and a 10M-alert burst's
/// claim transaction writes several MB: with writers waiting from
/// [`WAL_LIMIT`] such a burst's WAL peaked at 32 MB, against 26 MB when
/// that writer ran the checkpoint itself.
const WRITERS_WAIT_FROM: u64 = WAL_LIMIT / 4 * 3;

/// Where a write starts a checkpoint: half of [`WAL_LIMIT`], so that the
/// writes while it copies (`PASSIVE`, unlocked) have room within the
/// limit. With checkpoints from [`WAL_LIMIT`], a 10M-alert burst's claims
/// wrote as much again while each copied (17–26 MB), and the WAL peaked at
/// 43–49 MB.
const CHECKPOINT_FROM: u64 = WAL_LIMIT / 2;

/// The longest a writer waits for a checkpoint to let it write again (it
/// writes then anyway: a checkpoint is bounded by its copy and
/// [`CHECKPOINT_WAIT`], so this is only a guard).
const WRITERS_WAIT_AT_MOST: Duration = Duration::from_secs(2);

/// The process's checkpoint under way, if any, and whether its writers
/// wait for it.
struct Checkpoints {
    underway: bool,
    writers_wait: bool,
}

static CHECKPOINTS: Mutex<Checkpoints> = Mutex::new(Checkpoints {
    underway: false,
    writers_wait: false,
});

/// Told when a checkpoint ends.
static CHECKPOINT_ENDED: Condvar = Condvar::new();

/// The process's one checkpoint under way, from [`Underway::start`] until
/// dropped. While the WAL is past [`WRITERS_WAIT_FROM`] and it copies,
/// the process's writers wait for it before their next transaction
/// ([`Turn::take`]): a transaction under way when the WAL passed it ends,
/// and the WAL stays within the limit and that transaction (and any that
/// took its turn already, waiting for the write lock).
struct Underway;

impl Underway {
    /// The checkpoint, unless one is under way: then it only makes the
    /// writers wait for that one if `past_limit`.
    fn start(past_limit: bool) -> Option<Underway> {
        let mut checkpoints = lock(&CHECKPOINTS);
        if checkpoints.underway {
            checkpoints.writers_wait |= past_limit;
            return None;
        }
        checkpoints.underway = true;
        checkpoints.writers_wait = past_limit;
        Some(Underway)
    }

    /// Waits, at most [`WRITERS_WAIT_AT_MOST`], while writers wait.
    fn wait_if_writers_wait() {
        let checkpoints = lock(&CHECKPOINTS);
        let _ =
            CHECKPOINT_ENDED.wait_timeout_while(checkpoints, WRITERS_WAIT_AT_MOST, |checkpoints| {
                checkpoints.writers_wait
            });
    }
}

impl Drop for Underway {
    fn drop(&mut self) {
        let mut checkpoints = lock(&CHECKPOINTS);
        checkpoints.underway = false;
        checkpoints.writers_wait = false;
        CHECKPOINT_ENDED.notify_all();
    }
}

/// How long a checkpoint after a write waits for the write lock and for
/// readers to leave the WAL.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// After a checkpoint a reader held up, how much the WAL grows before the
/// next is tried; twice as much after each next held up, up to
/// [`WAL_LIMIT`].
const RETRY_GROWTH: u64 = WAL_LIMIT / 4;

/// The growth before the next try, after the checkpoints held up in a row
/// (0: the last was not).
static RETRY_STEP: AtomicU64 = AtomicU64::new(0);

/// After a checkpoint that readers kept from finishing: the WAL's size at
/// which to try the next (0: at the limit).
static HELD_UP_TO: AtomicU64 = AtomicU64::new(0);

/// Held while a checkpoint of the process's waits for readers to leave the
/// WAL, with [`LEAVE`] set.
static LEAVING: Mutex<()> = Mutex::new(());

/// Whether the daemon's readers are asked to leave their snapshots
/// ([`readers_asked_to_leave`]).
static LEAVE: AtomicBool = AtomicBool::new(false);

/// A checkpoint's ask to the daemon's readers, while it starts the WAL
/// over: given back when dropped.
struct Leaving {
    _asking: std::sync::MutexGuard<'static, ()>,
}

impl Leaving {
    fn ask() -> Leaving {
        let asking = lock(&LEAVING);
        LEAVE.store(true, Ordering::SeqCst);
        Leaving { _asking: asking }
    }
}

impl Drop for Leaving {
    fn drop(&mut self) {
        LEAVE.store(false, Ordering::SeqCst);
    }
}

/// Whether a checkpoint of the process's waits for the readers to leave
/// the WAL: a reader that holds a snapshot across its rests ends it at the
/// next ([`wait_for_checkpoint`]), rather than keep the WAL from starting
/// over. A tick's ten readers on two cores each hold one across up to 64
/// tickers; a guard (BENCHMARKS.md: no checkpoint of a 10M-alert burst was
/// held up by a reader with it, and none was logged without it).
pub(super) fn readers_asked_to_leave() -> bool {
    LEAVE.load(Ordering::SeqCst)
}

/// Waits, holding no snapshot, until the checkpoint that asked the readers
/// to leave is over (at most its [`CHECKPOINT_WAIT`] and its copying): a
/// snapshot begun meanwhile would be in the WAL again.
pub(super) fn wait_for_checkpoint() {
    drop(lock(&LEAVING));
}

/// The daemon's writers' share of the write lock (see the module's doc).
struct Share {
    /// When the present span of [`RUN`] started.
    since: Option<Instant>,
    /// How long the daemon's write transactions took in it (waiting for
    /// the lock included).
    held: Duration,
    /// Until when its writers leave the lock to others.
    gap_until: Option<Instant>,
}

static SHARE: Mutex<Share> = Mutex::new(Share {
    since: None,
    held: Duration::ZERO,
    gap_until: None,
});

/// A write transaction's turn at the lock: taken before it begins
/// ([`Turn::take`]), which may wait out a [`GAP`]; given back when dropped.
pub(in crate::store) struct Turn(Instant);

impl Turn {
    /// A writer's turn: after the checkpoint under way, if the WAL is past
    /// its limit (see [`Underway`]).
    pub(in crate::store) fn take() -> Turn {
        Underway::wait_if_writers_wait();
        Turn::take_checkpointing()
    }

    /// The checkpoint's own turn, which the writers wait for.
    fn take_checkpointing() -> Turn {
        loop {
            let now = Instant::now();
            let wait = lock(&SHARE).take(now);
            if wait.is_zero() {
                return Turn(now);
            }
            std::thread::sleep(wait);
        }
    }
}

impl Share {
    /// A writer asks for a turn at `now`: how long it must wait first
    /// (zero: its turn is taken).
    fn take(&mut self, now: Instant) -> Duration {
        if let Some(until) = self.gap_until.filter(|until| now < *until) {
            return until - now;
        }
        self.gap_until = None;
        let since = *self.since.get_or_insert(now);
        let span = now - since;
        if span >= RUN {
            self.since = Some(now);
            let held = std::mem::take(&mut self.held);
            if held * 2 > span {
                self.gap_until = Some(now + GAP);
                return GAP;
            }
        }
        Duration::ZERO
    }

    /// A write transaction that took its turn at `started` ended at `now`.
    fn give_back(&mut self, started: Instant, now: Instant) {
        self.held += now.saturating_duration_since(started);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        lock(&SHARE).give_back(self.0, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share() -> Share {
        Share {
            since: None,
            held: Duration::ZERO,
            gap_until: None,
        }
    }

    /// Writes of `held` every `every`, from `from` for `lasting`; the first
    /// wait one was told, and when.
    fn writes(
        share: &mut Share,
        from: Instant,
        every: Duration,
        held: Duration,
        lasting: Duration,
    ) -> Option<(Duration, Duration)> {
        let mut at = from;
        while at - from < lasting {
            let wait = share.take(at);
            if !wait.is_zero() {
                return Some((at - from, wait));
            }
            share.give_back(at, at + held);
            at += every;
        }
        None
    }

    #[test]
    fn writes_that_mostly_hold_the_lock_leave_it_to_others_after_a_run() {
        let mut share = share();
        let start = Instant::now();
        // A claim every 2 ms, each 1.5 ms long.
        let (after, wait) = writes(
            &mut share,
            start,
            Duration::from_millis(2),
            Duration::from_micros(1500),
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(wait, GAP);
        assert!(
            after >= RUN && after < RUN + Duration::from_millis(10),
            "{after:?}"
        );
        // Every writer waits out the gap, then writes again.
        let gap_at = start + after;
        assert_eq!(
            share.take(gap_at + Duration::from_millis(50)),
            GAP - Duration::from_millis(50)
        );
        assert_eq!(share.take(gap_at + GAP), Duration::ZERO);
    }

    /// The tests that take the process's one checkpoint, one at a time.
    static CHECKPOINTING: Mutex<()> = Mutex::new(());

    #[test]
    fn writers_wait_for_a_checkpoint_once_a_write_takes_the_wal_past_the_limit() {
        let _one = lock(&CHECKPOINTING);
        let writer = || std::thread::spawn(|| drop(Turn::take()));
        let checkpoint = Underway::start(false).expect("none under way");
        // Below the limit, writers go on while it copies.
        assert!(Underway::start(false).is_none(), "one at a time");
        writer().join().unwrap();
        // A write past the limit: the next writer waits for it.
        assert!(Underway::start(true).is_none());
        let waiting = writer();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiting.is_finished(), "a writer went on past the limit");
        drop(checkpoint);
        waiting.join().unwrap();
        writer().join().unwrap();
    }

    #[test]
    fn writes_that_leave_the_lock_free_most_of_the_time_never_wait() {
        let mut share = share();
        // A feed's reacting ticks: 3 ms of writes every 10 ms, for a minute.
        let waited = writes(
            &mut share,
            Instant::now(),
            Duration::from_millis(10),
            Duration::from_millis(3),
            Duration::from_secs(60),
        );
        assert_eq!(waited, None);
    }

    /// A write that leaves the WAL past [`CHECKPOINT_FROM`] hands its
    /// checkpoint to the checkpointer and goes on: the writer's thread
    /// returns with the checkpoint still under way (held where it would
    /// ask the readers to leave), and the WAL starts over on the
    /// checkpointer's thread once it may go on.
    #[test]
    fn a_write_hands_the_checkpoint_it_finds_due_to_the_checkpointer() {
        let _one = lock(&CHECKPOINTING);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let pool = super::super::open(&path, Duration::from_secs(5), 1).unwrap();
        pool.get()
            .unwrap()
            .execute_batch(
                "CREATE TABLE filler (bytes BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
                 INSERT INTO filler SELECT randomblob(4000) FROM n;",
            )
            .unwrap();
        let wal = wal_of(&path);
        let size = || std::fs::metadata(&wal).unwrap().len();
        assert!(size() > CHECKPOINT_FROM, "{} bytes of WAL", size());
        HELD_UP_TO.store(0, Ordering::Relaxed);
        let holding = lock(&LEAVING);
        // The write on a thread of its own: it would wait for `holding`
        // if it ran its checkpoint itself.
        let writing = std::thread::spawn({
            let pool = pool.clone();
            move || after_write(&pool.get().unwrap())
        });
        let waited = Instant::now();
        while !writing.is_finished() {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the writer waits for its checkpoint"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            lock(&CHECKPOINTS).underway,
            "no checkpoint under way after the write"
        );
        let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            threads.iter().any(|name| name.trim() == "checkpointer"),
            "{threads:?}"
        );
        assert!(size() > 0);
        drop(holding);
        let waited = Instant::now();
        while size() > 0 || lock(&CHECKPOINTS).underway {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the WAL never started over"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
