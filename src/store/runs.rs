//! The last run of each job, recorded by whoever ran it (the daemon or
//! `run-job`), for `price-alertd status`.

use super::{Connection, Result};

/// One job's last run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub job: String,
    pub started_at: String,
    pub duration_ms: i64,
    /// `ok` or `failed`.
    pub result: String,
    pub detail: String,
    pub last_success_at: Option<String>,
    /// The daemon that ran it (`store::cluster::Me::member`); none for
    /// `run-job` and for runs recorded before members were.
    pub member: Option<String>,
}

/// Records a run, keeping the last success's time across failures.
pub fn record(connection: &mut Connection, run: &Run) -> Result<()> {
    super::engine!(connection, runs::record(run))
}

/// Every job's last run, by name.
pub fn list(connection: &mut Connection) -> Result<Vec<Run>> {
    super::engine!(connection, runs::list())
}
