//! SQLite: job runs (see `store::runs`).

use rusqlite::{Connection, params};

use crate::store::runs::Run;

/// Records a run, keeping the last success's time across failures.
pub fn record(connection: &Connection, run: &Run) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO job_runs (job, started_at, duration_ms, result, detail, last_success_at, member)
         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?4 = 'ok' THEN ?2 END, ?6)
         ON CONFLICT (job) DO UPDATE SET started_at = excluded.started_at, duration_ms = excluded.duration_ms,
             result = excluded.result, detail = excluded.detail,
             last_success_at = coalesce(excluded.last_success_at, job_runs.last_success_at),
             member = excluded.member",
        params![run.job, run.started_at, run.duration_ms, run.result, run.detail, run.member],
    )?;
    Ok(())
}

/// Every job's last run, by name.
pub fn list(connection: &Connection) -> rusqlite::Result<Vec<Run>> {
    let mut statement =
        connection.prepare("SELECT job, started_at, duration_ms, result, detail, last_success_at, member FROM job_runs ORDER BY job")?;
    let rows = statement.query_map([], |row| {
        Ok(Run {
            job: row.get(0)?,
            started_at: row.get(1)?,
            duration_ms: row.get(2)?,
            result: row.get(3)?,
            detail: row.get(4)?,
            last_success_at: row.get(5)?,
            member: row.get(6)?,
        })
    })?;
    rows.collect()
}
