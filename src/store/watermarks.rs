//! Watermarks: how far each job has read the changes.

use super::{Connection, Result};

/// The changes a job has seen (every change numbered up to it); `None` for a
/// job that never ran, which must read everything once.
pub fn get(connection: &mut Connection, job: &str) -> Result<Option<i64>> {
    super::engine!(connection, watermarks::get(job))
}
