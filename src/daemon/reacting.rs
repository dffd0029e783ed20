//! Jobs that react to changes (`on_change`): the store's listener tells the
//! loop what each commit changed, and the loop starts each concerned job's
//! tick at once, or, if it is running, exactly one more after it. Among
//! daemons sharing the database, only the member holding a job's reacting
//! lease reacts for it (`store::cluster`); the others leave its changes to
//! it, and take over when it stops beating.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;

use crate::config::{JobConfig, JobKind};
use crate::metrics::Cause;
use crate::store::listen::{Changed, Listener};

use super::events::LoopEvent;

/// The reacting jobs this member holds, and the runs owed to jobs that
/// were running when their change (or fire time) came.
#[derive(Default)]
pub(super) struct Reacting {
    /// The jobs whose reacting lease this member holds.
    held: HashSet<String>,
    /// Jobs owed one more run after the running one, and why: however many
    /// changes came meanwhile, one run reads them all.
    owed: HashMap<String, Cause>,
    /// Jobs whose last run left its progress unwritten, with its write
    /// booked.
    unwritten: HashSet<String>,
}

/// Hears changes while this member reacts for one of `jobs` (it holds the
/// job's reacting lease), and only then, sending them to the loop: the
/// other members of a cluster leave them to it. Hearing starts with
/// [`Changed::Unknown`]: the reacting jobs run once, for what changed
/// before.
pub(super) fn follow<'a>(
    listener: &mut Listener,
    jobs: impl IntoIterator<Item = &'a JobConfig>,
    reacting: &Reacting,
    events: &mpsc::UnboundedSender<LoopEvent>,
) -> anyhow::Result<()> {
    let events = events.clone();
    let hearer = move |changed| {
        let _ = events.send(LoopEvent::Changed(changed));
    };
    let reacts = jobs
        .into_iter()
        .any(|job| job.reacts() && reacting.holds(&job.name));
    if reacts {
        listener.hear_changes(hearer)
    } else {
        listener.stop_hearing_changes();
        Ok(())
    }
}

impl Reacting {
    /// No more runs are owed, and none reacts: the daemon stops.
    pub(super) fn stop(&mut self) {
        self.owed.clear();
        self.unwritten.clear();
        self.held.clear();
    }

    /// The reacting jobs this member holds now; returns those it did not
    /// hold before, which run at once for what changed meanwhile.
    pub(super) fn hold(&mut self, held: Vec<String>) -> Vec<String> {
        let held: HashSet<String> = held.into_iter().collect();
        let new = held.difference(&self.held).cloned().collect();
        for lost in self.held.difference(&held) {
            tracing::info!(
                job = lost,
                "no longer reacting to this job's changes here (another member holds its lease, or it no longer reacts)"
            );
        }
        self.held = held;
        new
    }

    /// Whether this member reacts for `job`.
    pub(super) fn holds(&self, job: &str) -> bool {
        self.held.contains(job)
    }

    /// Owes `job` one more run, for `cause` unless it is owed one already.
    pub(super) fn owe(&mut self, job: &str, cause: Cause) {
        self.owed.entry(job.to_owned()).or_insert(cause);
    }

    /// A run of `job` left its progress unwritten: whether to book its
    /// write (none is booked yet).
    pub(super) fn left_unwritten(&mut self, job: &str) -> bool {
        self.unwritten.insert(job.to_owned())
    }

    /// The write booked for `job`'s unwritten progress is due: whether it
    /// was booked (a stop forgets it).
    pub(super) fn write_unwritten(&mut self, job: &str) -> bool {
        self.unwritten.remove(job)
    }

    /// The run owed to `job`, if any, now that its run ended.
    pub(super) fn owed(&mut self, job: &str) -> Option<Cause> {
        self.owed.remove(job)
    }
}

/// The names of the jobs that react, for the heartbeat to take their leases.
pub(super) fn names(jobs: &[JobConfig]) -> Vec<String> {
    jobs.iter()
        .filter(|job| job.reacts())
        .map(|job| job.name.clone())
        .collect()
}

/// The reacting jobs `changed` concerns, with their kinds.
pub(super) fn concerned<'a>(
    jobs: impl IntoIterator<Item = &'a JobConfig>,
    changed: &Changed,
) -> Vec<(String, JobKind)> {
    jobs.into_iter()
        .filter(|job| job.reacts())
        .filter(|job| {
            job.scope()
                .is_some_and(|scope| changed.concerns(|ticker| scope.covers(ticker)))
        })
        .map(|job| (job.name.clone(), job.kind.clone()))
        .collect()
}
