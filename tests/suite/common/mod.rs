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
pub use quotes::*;
pub use receiver::*;
pub use relay::*;
pub use silence::*;
pub use tick::*;
pub use users::*;

use std::time::{Duration, Instant};

/// Generous bound for things that normally take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

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
