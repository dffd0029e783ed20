//! Helpers shared by the integration tests: a real SQLite file, a config
//! builder, a real loopback HTTP receiver, the real nginx + nchan relay, and the
//! daemon binary as a child process.

pub mod browser;
pub mod postgresql;
#[macro_use]
mod db;
mod config;
mod disk;
mod http;
mod process;
mod pushpin;
mod quotes;
mod receiver;
mod relay;
mod silence;
mod tick;
mod users;

pub use config::*;
pub use db::*;
pub use disk::*;
pub use http::*;
pub use process::*;
pub use pushpin::*;
pub use quotes::*;
pub use receiver::*;
pub use relay::*;
pub use silence::*;
pub use tick::*;
pub use users::*;

use std::time::{Duration, Instant};

/// Generous bound for things that normally take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

thread_local! {
    /// Why this thread's test failed, once it has.
    static FAILURE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps each test's failure message, for `repeat_failure` (the panic is
/// printed as before). Called by what starts a process whose log a failed
/// test prints.
pub fn remember_failures() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|message| (*message).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let location = info
                .location()
                .map(|at| format!("{}:{}", at.file(), at.line()))
                .unwrap_or_default();
            FAILURE.with(|failure| *failure.borrow_mut() = Some(format!("{location}: {message}")));
            print(info);
        }));
    });
}

/// Says again why the test failed, after a log printed on the way out: the
/// end of a failed test's output names its failure, also where a long log
/// followed the panic.
pub fn repeat_failure() {
    if let Some(failure) = FAILURE.with(|failure| failure.borrow().clone()) {
        eprintln!("(the test failed at {failure})");
    }
}

/// Polls `condition` until it holds or `PATIENCE` runs out.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `done` until it reaches `goal`, for as long as it keeps growing:
/// a large piece of work (tens of thousands of claims and deliveries) on a
/// loaded machine may take minutes, but never `PATIENCE` without progress.
pub fn wait_while_progressing(what: &str, goal: usize, mut done: impl FnMut() -> usize) {
    let (mut seen, mut since) = (done(), Instant::now());
    while seen < goal {
        assert!(
            since.elapsed() < PATIENCE,
            "timed out waiting for {what}: {seen} of {goal}, none more for {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        let now = done();
        if now > seen {
            (seen, since) = (now, Instant::now());
        }
    }
}
