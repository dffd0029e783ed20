//! What can happen to a running daemon: the closed list its loop serves.

use chrono::{DateTime, Utc};

use crate::signals::Signal;
use crate::store::cluster::Fire;
use crate::store::listen::Changed;

use super::job_report::JobReport;

/// Everything that can happen to a running daemon.
#[derive(Debug)]
pub(super) enum LoopEvent {
    /// A job's fire time came. `epoch` tells fire times of a replaced schedule apart.
    Due {
        job: String,
        epoch: u64,
        at: DateTime<Utc>,
    },
    /// A job's run ended.
    Finished {
        job: String,
        /// Boxed: a tick's report is the largest event by far.
        result: Box<anyhow::Result<JobReport>>,
    },
    /// A reacting job's run left its progress unwritten a while ago: time
    /// to write it (`evaluate::carried`).
    Unwritten {
        job: String,
    },
    /// That write ended.
    Written {
        job: String,
    },
    /// Another member took this fire time of the job (`membership`).
    Elsewhere {
        job: String,
    },
    /// Fire times whose holder stopped beating, for this member to take over.
    Orphaned(Vec<Fire>),
    /// A commit changed quotes or alerts (for the jobs that react).
    Changed(Changed),
    /// The reacting jobs this member holds the lease of, as of a heartbeat.
    Reacting(Vec<String>),
    Signal(Signal),
    /// The outbox's pending events and dead letters, counted off the loop
    /// for systemd's status (`None`: the database did not say).
    Backlog(Option<(u64, u64)>),
    /// Time to tell systemd's watchdog that the loop and the scheduler are alive.
    Heartbeat,
}
