//! What `/readyz` asks of the daemon besides its database: its jobs armed
//! and this member beating. The loop and the heartbeat tell it; the
//! endpoint reads it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock::lock;

use crate::store::clock::Offset;

/// A member whose last heartbeat is older than this is not ready: three
/// heartbeats missed, half the fire lease after which others take its
/// fire times over.
pub const BEATING_WITHIN: Duration = Duration::from_secs(15);

/// A member whose clock is further than this from the database's says so
/// (its log, `/readyz`): every decision takes the database's time, but its
/// cron schedule reads its own clock, and fires that much early or late.
pub const CLOCK_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(super) struct Readiness(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    jobs: Jobs,
    last_beat: Option<Instant>,
    /// This member's clock against the database's, at the last heartbeat.
    clock: Option<Offset>,
}

#[derive(Debug, Default)]
enum Jobs {
    /// The loop has not booked its fire times yet.
    #[default]
    Starting,
    /// Every job's next fire time is booked, but for these (the scheduler
    /// refused them: they run again after a reload).
    Armed { unarmed: Vec<String> },
    /// Stopping: no new runs.
    Stopping,
}

impl Readiness {
    /// The loop booked its jobs' fire times, all but `unarmed`'s.
    pub(super) fn jobs_armed(&self, unarmed: Vec<String>) {
        lock(&self.0).jobs = Jobs::Armed { unarmed };
    }

    /// The daemon stops: it starts no more runs.
    pub(super) fn stopping(&self) {
        lock(&self.0).jobs = Jobs::Stopping;
    }

    /// This member's heartbeat renewed its leases, and measured its clock
    /// against the database's.
    pub(super) fn beat(&self, clock: Offset) {
        let mut state = lock(&self.0);
        state.last_beat = Some(Instant::now());
        state.clock = Some(clock);
    }

    /// Why the daemon is not ready to do its work, besides its database;
    /// empty when it is.
    pub(super) fn not_ready(&self) -> Vec<String> {
        let state = lock(&self.0);
        let mut why = Vec::new();
        match &state.jobs {
            Jobs::Starting => why.push("starting: the jobs are not scheduled yet".to_owned()),
            Jobs::Stopping => why.push("stopping: no new runs start".to_owned()),
            Jobs::Armed { unarmed } if !unarmed.is_empty() => why.push(format!(
                "no fire time is booked for {} (see the log; a reload books them again)",
                unarmed.join(", ")
            )),
            Jobs::Armed { .. } => {}
        }
        match state.last_beat.map(|at| at.elapsed()) {
            None => why.push("this member has not beaten yet".to_owned()),
            Some(since) if since > BEATING_WITHIN => why.push(format!(
                "this member last beat {} s ago (ready within {} s): its fire times and reacting jobs may go to others",
                since.as_secs(),
                BEATING_WITHIN.as_secs()
            )),
            Some(_) => {}
        }
        if let Some(clock) = state.clock.filter(|clock| clock.beyond(CLOCK_WITHIN)) {
            why.push(format!(
                "this member's clock is {:.1} s {} the database's (ready within {} s): its schedule fires that much {}",
                clock.ms.unsigned_abs() as f64 / 1000.0,
                if clock.ms > 0 { "behind" } else { "ahead of" },
                CLOCK_WITHIN.as_secs(),
                if clock.ms > 0 { "late" } else { "early" },
            ));
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_armed_and_beating_and_not_while_stopping() {
        let metrics = Readiness::default();
        assert_eq!(metrics.not_ready().len(), 2, "{:?}", metrics.not_ready());
        let agreeing = Offset {
            ms: 30,
            uncertainty_ms: 1,
        };
        metrics.jobs_armed(vec!["nightly".to_owned()]);
        metrics.beat(agreeing);
        let why = metrics.not_ready();
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("nightly"), "{why:?}");
        metrics.jobs_armed(Vec::new());
        assert!(metrics.not_ready().is_empty());
        lock(&metrics.0).last_beat =
            Instant::now().checked_sub(BEATING_WITHIN + Duration::from_secs(1));
        assert!(metrics.not_ready()[0].contains("last beat 16 s ago"));
        metrics.beat(Offset {
            ms: -120_000,
            uncertainty_ms: 2,
        });
        assert_eq!(
            metrics.not_ready(),
            [
                "this member's clock is 120.0 s ahead of the database's (ready within 2 s): its schedule fires that much early"
            ]
        );
        metrics.beat(agreeing);
        metrics.stopping();
        assert_eq!(metrics.not_ready(), ["stopping: no new runs start"]);
    }
}
