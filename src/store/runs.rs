//! The last run of each job, recorded by whoever ran it (the daemon or
//! `run-job`), for `price-alertd status`.

use super::shared::{Row, Statements};
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
    connection.engine().record_run(run)
}

/// Every job's last run, by name.
pub fn list(connection: &mut Connection) -> Result<Vec<Run>> {
    connection.engine().runs()
}

pub(super) const RECORD: &str = "INSERT INTO job_runs (job, started_at, duration_ms, result, detail, last_success_at, member)
     VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'ok' THEN $2 END, $6)
     ON CONFLICT (job) DO UPDATE SET started_at = excluded.started_at, duration_ms = excluded.duration_ms,
         result = excluded.result, detail = excluded.detail,
         last_success_at = coalesce(excluded.last_success_at, job_runs.last_success_at),
         member = excluded.member";

pub(super) const LIST: &str =
    "SELECT job, started_at, duration_ms, result, detail, last_success_at, member
     FROM job_runs ORDER BY job";

pub(super) fn record_on<C: Statements>(
    connection: &mut C,
    run: &Run,
) -> std::result::Result<(), C::Error> {
    connection.execute(
        RECORD,
        &[
            &run.job,
            &run.started_at,
            &run.duration_ms,
            &run.result,
            &run.detail,
            &run.member,
        ],
    )?;
    Ok(())
}

pub(super) fn list_on<C: Statements>(
    connection: &mut C,
) -> std::result::Result<Vec<Run>, C::Error> {
    connection.query(LIST, &[], |row| run_of(row))
}

/// A `job_runs` row, as `LIST` reads it.
fn run_of<R: Row>(row: &R) -> std::result::Result<Run, R::Error> {
    Ok(Run {
        job: row.get(0)?,
        started_at: row.get(1)?,
        duration_ms: row.get(2)?,
        result: row.get(3)?,
        detail: row.get(4)?,
        last_success_at: row.get(5)?,
        member: row.get(6)?,
    })
}
