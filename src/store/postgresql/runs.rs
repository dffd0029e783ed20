//! PostgreSQL: job runs (see `store::runs`).

use super::PgConnection;
use crate::store::runs::Run;

use super::PgResult as Result;

pub fn record(connection: &mut PgConnection, run: &Run) -> Result<()> {
    let statement = connection.prepared(
        "INSERT INTO job_runs (job, started_at, duration_ms, result, detail, last_success_at, member)
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'ok' THEN $2 END, $6)
         ON CONFLICT (job) DO UPDATE SET started_at = excluded.started_at, duration_ms = excluded.duration_ms,
             result = excluded.result, detail = excluded.detail,
             last_success_at = coalesce(excluded.last_success_at, job_runs.last_success_at),
             member = excluded.member",
    )?;
    connection.client().execute(
        &statement,
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

pub fn list(connection: &mut PgConnection) -> Result<Vec<Run>> {
    let statement = connection.prepared(
        "SELECT job, started_at, duration_ms, result, detail, last_success_at, member FROM job_runs ORDER BY job",
    )?;
    connection
        .client()
        .query(&statement, &[])?
        .iter()
        .map(|row| {
            Ok(Run {
                job: row.try_get(0)?,
                started_at: row.try_get(1)?,
                duration_ms: row.try_get(2)?,
                result: row.try_get(3)?,
                detail: row.try_get(4)?,
                last_success_at: row.try_get(5)?,
                member: row.try_get(6)?,
            })
        })
        .collect()
}
