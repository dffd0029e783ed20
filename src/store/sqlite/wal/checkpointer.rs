//! SQLite: the process's checkpointer, a thread with a connection of its
//! own that runs the checkpoints the daemon's writes find due
//! (`wal::after_write`, and after a run, `wal::at_rest`), so that no
//! writer waits for one: a tick's claim, a feed's reacting run or the
//! deliverer's exchange goes on while the WAL is copied (`PASSIVE`,
//! unlocked), and waits only where the checkpoint holds the write lock
//! (`TRUNCATE`), as any writer would. Under a feed of 10,000 quote writes
//! a second, a checkpoint every few hundred milliseconds had held the run
//! that found it due, and the crossings behind it, 10 ms and more
//! (BENCHMARKS.md, issue 31, tenth part).
//!
//! The WAL's bound is unchanged: a checkpoint stays the process's one
//! under way (`wal::Underway`) from when a write finds it due until it
//! ends, and past three quarters of `wal::WAL_LIMIT` the writers wait for
//! it. The thread lives as long as the process, started by the first
//! checkpoint handed to it; its connection closes after [`IDLE`] without
//! one. Where it has no connection (the database cannot be opened again:
//! no file descriptors left), the checkpoint is not run, and later ones
//! are run by the writers that find them due, as before it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{CHECKPOINT_WAIT, Due};
use crate::lock::lock;

/// How long the checkpointer keeps its connection without a checkpoint to
/// run.
const IDLE: Duration = Duration::from_secs(10);

/// The way to the checkpointer, once it started.
static CHECKPOINTER: Mutex<Option<SyncSender<Due>>> = Mutex::new(None);

/// The checkpointer could not open its connection: writers run their
/// checkpoints themselves.
static WRITERS_RUN_THEM: AtomicBool = AtomicBool::new(false);

/// Hands `due` to the checkpointer, starting it if it is not; runs it on
/// `connection` where the checkpointer cannot.
pub(super) fn hand(due: Due, connection: &Connection) {
    if WRITERS_RUN_THEM.load(Ordering::Relaxed) {
        due.run(connection);
        return;
    }
    let mut checkpointer = lock(&CHECKPOINTER);
    let due = match checkpointer.as_ref() {
        Some(sender) => match sender.try_send(due) {
            Ok(()) => return,
            // One checkpoint is under way at a time, so the channel is
            // empty whenever one is due; if not, the writer runs it.
            Err(TrySendError::Full(due)) => {
                drop(checkpointer);
                due.run(connection);
                return;
            }
            // The thread ended (it panicked): another starts.
            Err(TrySendError::Disconnected(due)) => due,
        },
        None => due,
    };
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let started = std::thread::Builder::new()
        .name("checkpointer".into())
        .spawn(move || checkpoints(receiver));
    match started {
        Ok(_) => {
            let _ = sender.try_send(due);
            *checkpointer = Some(sender);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot start the WAL's checkpointer: writers checkpoint it themselves");
            WRITERS_RUN_THEM.store(true, Ordering::Relaxed);
            drop(checkpointer);
            due.run(connection);
        }
    }
}

/// The checkpointer's loop: each checkpoint handed to it, on a connection
/// to its database, opened again where the database is another (another
/// path, in a process of tests; another file at the path), closed after
/// [`IDLE`].
fn checkpoints(receiver: Receiver<Due>) {
    // At the evaluation threads' priority: in a market-wide move it copies
    // on the cores the claims and the deliverer leave idle, and where it
    // falls behind, the WAL grows to where the writers wait for it. At the
    // daemon's own priority it took the cores from them: a 1M-alert
    // burst's last event came later (BENCHMARKS.md, issue 31, tenth part).
    crate::priority::give_way();
    let mut open: Option<(File, Connection)> = None;
    loop {
        let due = match receiver.recv_timeout(IDLE) {
            Ok(due) => due,
            Err(RecvTimeoutError::Timeout) => {
                open = None;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let file = File::at(&due.path);
        if open
            .as_ref()
            .is_none_or(|(opened, _)| Some(opened) != file.as_ref())
        {
            open = None;
            match file
                .ok_or(rusqlite::Error::InvalidPath(due.path.clone()))
                .and_then(|file| Ok((file, connect(&due.path)?)))
            {
                Ok(opened) => open = Some(opened),
                Err(error) => {
                    tracing::warn!(
                        database = %due.path.display(),
                        %error,
                        "the WAL's checkpointer cannot open the database: writers checkpoint it themselves"
                    );
                    WRITERS_RUN_THEM.store(true, Ordering::Relaxed);
                    continue;
                }
            }
        }
        if let Some((_, connection)) = &open {
            due.run(connection);
        }
    }
}

/// Which file a database is: its path, and the file found there.
#[derive(Debug, PartialEq, Eq)]
struct File {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl File {
    fn at(path: &Path) -> Option<File> {
        use std::os::unix::fs::MetadataExt as _;
        let metadata = std::fs::metadata(path).ok()?;
        Some(File {
            path: path.to_path_buf(),
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

/// A connection to the existing database at `path`, set up as the
/// daemon's are, its waits for a lock bounded by the checkpoint's.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let mut connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    super::super::prepare_connection(&mut connection, CHECKPOINT_WAIT)?;
    Ok(connection)
}
