//! PostgreSQL: watermarks (see `store::watermarks`).

use super::{PgConnection, PgResult as Result};

pub fn get(connection: &mut PgConnection, job: &str) -> Result<Option<i64>> {
    let statement = connection.prepared("SELECT change_seq FROM job_watermarks WHERE job = $1")?;
    connection
        .client()
        .query_opt(&statement, &[&job])?
        .map(|row| row.try_get(0))
        .transpose()
}

/// Moves a job's watermark, never back: `($1 job, $2 change, $3 now)`.
pub(super) const ADVANCE: &str = "INSERT INTO job_watermarks (job, change_seq, updated_at) VALUES ($1, $2, $3)
     ON CONFLICT (job) DO UPDATE SET change_seq = excluded.change_seq, updated_at = excluded.updated_at
     WHERE excluded.change_seq > job_watermarks.change_seq";
