//! The outbox: events waiting for delivery. A deliverer leases due rows before
//! sending them, so several daemons on one database never send the same row at
//! the same time; a row leaves the pending state only after a 2xx.

use rusqlite::{Connection, TransactionBehavior, params};

/// A leased event, ready to send.
#[derive(Debug, Clone)]
pub struct Leased {
    pub row_id: i64,
    pub event_id: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered {
        row_id: i64,
    },
    /// Failed; try again at `next_attempt_at` (unix ms).
    Retry {
        row_id: i64,
        next_attempt_at: i64,
        error: String,
    },
    /// Not attempted to the end (the daemon is stopping): give the row back as it was.
    Released {
        row_id: i64,
    },
}

/// Leases up to `limit` due rows to `owner` until `lease_until` (unix ms).
/// A lease that expired (its holder died) is free again.
pub fn lease_due(
    connection: &mut Connection,
    owner: &str,
    now_ms: i64,
    lease_until: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Leased>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let leased = {
        let mut statement = transaction.prepare_cached(
            "UPDATE outbox SET lease_owner = ?1, lease_until = ?2
             WHERE id IN (SELECT id FROM outbox
                          WHERE state = 'pending' AND next_attempt_at <= ?3
                            AND (lease_until IS NULL OR lease_until <= ?3)
                          ORDER BY next_attempt_at, id LIMIT ?4)
             RETURNING id, event_id, body, attempts",
        )?;
        let rows =
            statement.query_map(params![owner, lease_until, now_ms, limit as i64], |row| {
                Ok(Leased {
                    row_id: row.get(0)?,
                    event_id: row.get(1)?,
                    body: row.get(2)?,
                    attempts: row.get(3)?,
                })
            })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    transaction.commit()?;
    Ok(leased)
}

/// Records the outcomes of one round in one transaction. Only rows still
/// leased to `owner` change: a lease lost to expiry is someone else's now.
pub fn record(
    connection: &mut Connection,
    owner: &str,
    outcomes: &[Outcome],
    now: &str,
) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut delivered = transaction.prepare_cached(
            "UPDATE outbox SET state = 'delivered', delivered_at = ?1, attempts = attempts + 1,
                 lease_owner = NULL, lease_until = NULL, last_error = NULL
             WHERE id = ?2 AND lease_owner = ?3",
        )?;
        let mut retry = transaction.prepare_cached(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?1, last_error = ?2,
                 lease_owner = NULL, lease_until = NULL
             WHERE id = ?3 AND lease_owner = ?4",
        )?;
        let mut release = transaction.prepare_cached("UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND lease_owner = ?2")?;
        for outcome in outcomes {
            match outcome {
                Outcome::Delivered { row_id } => delivered.execute(params![now, row_id, owner])?,
                Outcome::Retry {
                    row_id,
                    next_attempt_at,
                    error,
                } => retry.execute(params![next_attempt_at, error, row_id, owner])?,
                Outcome::Released { row_id } => release.execute(params![row_id, owner])?,
            };
        }
    }
    transaction.commit()
}

/// When the next pending row becomes sendable (unix ms), if any is pending.
pub fn next_due(connection: &Connection) -> rusqlite::Result<Option<i64>> {
    connection.query_row(
        "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM outbox WHERE state = 'pending'",
        [],
        |row| row.get(0),
    )
}

/// Rows still waiting for a 2xx.
pub fn pending_count(connection: &Connection) -> rusqlite::Result<u64> {
    let count: i64 = connection.query_row(
        "SELECT count(*) FROM outbox WHERE state = 'pending'",
        [],
        |row| row.get(0),
    )?;
    Ok(count as u64)
}
