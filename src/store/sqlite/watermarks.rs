//! SQLite: watermarks (see `store::watermarks`).

use rusqlite::{Connection, OptionalExtension as _, params};

/// The changes a job has seen (every change numbered up to it); `None` for a
/// job that never ran, which must read everything once.
pub fn get(connection: &Connection, job: &str) -> rusqlite::Result<Option<i64>> {
    connection
        .query_row(
            "SELECT change_seq FROM job_watermarks WHERE job = ?1",
            [job],
            |row| row.get(0),
        )
        .optional()
}

/// Moves a job's watermark to `changed`, never back (another process running
/// the same job may have moved it further).
pub fn advance(
    connection: &Connection,
    job: &str,
    changed: i64,
    now: &str,
) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO job_watermarks (job, change_seq, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (job) DO UPDATE SET change_seq = excluded.change_seq, updated_at = excluded.updated_at
         WHERE excluded.change_seq > job_watermarks.change_seq",
        params![job, changed, now],
    )?;
    Ok(())
}
