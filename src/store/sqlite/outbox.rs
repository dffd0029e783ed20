//! SQLite: the outbox's leases and outcomes (see `store::outbox`). Its own
//! because a leased row keeps its due time here (one writer: no lease can
//! race another), and outcomes are recorded through `json_each`.

use std::collections::HashMap;

use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::channels::{self, Head};

use crate::store::outbox::{
    DeadLetter, Exchanged, LeaseOutcomes, Leased, Recording, Retry, Settled, Shares, Want,
};

/// One round trip of a deliverer to the outbox, in one transaction: records
/// `settled` (each only while its lease is still `owner`'s), then leases up to
/// `want.limit` due rows to `owner`. A lease that expired (its holder died) is
/// free again. The set-based statements are `OR FAIL`: any error rolls back
/// the whole exchange, so none needs a statement journal (a copy of every
/// page it touches). Its time is this host's, read once the write lock is
/// held: every process on the file runs here.
pub fn exchange(
    connection: &mut Connection,
    owner: &str,
    settled: &[Settled],
    want: Option<Want>,
) -> rusqlite::Result<Exchanged> {
    let _turn = super::wal::Turn::take();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    record(&transaction, owner, settled, now_ms)?;
    let leased = match want {
        Some(want) if want.limit > 0 => lease_due(&transaction, owner, &want, now_ms)?,
        _ => Vec::new(),
    };
    transaction.commit()?;
    Ok(Exchanged { leased, now_ms })
}

fn lease_due(
    connection: &Connection,
    owner: &str,
    want: &Want,
    now_ms: i64,
) -> rusqlite::Result<Vec<Leased>> {
    let lease_until = want.lease_until(now_ms);
    let leased = |row: &rusqlite::Row<'_>| {
        Ok(Leased {
            row_id: row.get(0)?,
            event_id: row.get(1)?,
            body: row.get(2)?,
            attempts: row.get(3)?,
            user_id: row.get(4)?,
            lease_until,
            created_at: crate::time::parse_time(&row.get::<_, String>(5)?),
            channel_seq: row.get(6)?,
            prev_id: row.get(7)?,
        })
    };
    let mut leased = match &want.spread {
        None => {
            let mut statement = connection.prepare_cached(
                "UPDATE OR FAIL outbox SET lease_owner = ?1, lease_until = ?2
                 WHERE id IN (SELECT id FROM outbox
                              WHERE state = 'pending' AND next_attempt_at <= ?3
                                AND (lease_until IS NULL OR lease_until <= ?3)
                              ORDER BY next_attempt_at, id LIMIT ?4 + 0)
                 RETURNING id, event_id, body, attempts, user_id, created_at, channel_seq, channel_prev",
            )?;
            let rows = statement.query_map(
                params![owner, lease_until, now_ms, want.limit as i64],
                leased,
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        }
        Some(spread) => {
            let ids = spread_over_users(connection, want, spread, now_ms)?;
            let mut statement = connection.prepare_cached(
                "UPDATE OR FAIL outbox SET lease_owner = ?1, lease_until = ?2
                 WHERE id IN (SELECT value FROM json_each(?3))
                 RETURNING id, event_id, body, attempts, user_id, created_at, channel_seq, channel_prev",
            )?;
            let rows = statement.query_map(params![owner, lease_until, id_list(&ids)], leased)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        }
    };
    // RETURNING gives no order; sending follows the queue's.
    leased.sort_unstable_by_key(|event| event.row_id);
    if want.place {
        place(connection, &mut leased)?;
    }
    Ok(leased)
}

/// The rows a spread lease takes: of the first `want.scan()` due rows in
/// queue order (the users in `spread.full` left out), at most
/// `spread.per_user` of each user, up to `want.limit`. Read in queue order
/// and counted here, so that a lease reads only as far as it takes: as
/// many rows as it leases when no user has that many due (a window
/// function over the whole scan read four times as many, and sorted them).
fn spread_over_users(
    connection: &Connection,
    want: &Want,
    spread: &crate::store::outbox::Spread,
    now_ms: i64,
) -> rusqlite::Result<Vec<i64>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, coalesce(user_id, '') FROM outbox
         WHERE state = 'pending' AND next_attempt_at <= ?1
           AND (lease_until IS NULL OR lease_until <= ?1)
           AND coalesce(user_id, '') NOT IN (SELECT value FROM json_each(?2))
         ORDER BY next_attempt_at, id LIMIT ?3 + 0",
    )?;
    let full = serde_json::to_string(&spread.full).expect("strings serialize");
    let mut rows = statement.query(params![now_ms, full, want.scan() as i64])?;
    let mut ids = Vec::with_capacity(want.limit);
    let mut shares = Shares::of(want);
    while !shares.done() {
        let Some(row) = rows.next()? else { break };
        if shares.take(Some(row.get_ref(1)?.as_str()?)) {
            ids.push(row.get(0)?);
        }
    }
    Ok(ids)
}

/// Places the leased rows without a place on their users' channels, after
/// each channel's head (see `store::channels`), in the lease's transaction
/// (an exchange's, or a claim's).
pub(super) fn place(connection: &Connection, leased: &mut [Leased]) -> rusqlite::Result<()> {
    let users = channels::unplaced_users(leased);
    if users.is_empty() {
        return Ok(());
    }
    let mut heads = HashMap::new();
    {
        let mut statement = connection.prepare_cached(
            "SELECT user_id, last_seq, last_event_id FROM stream_channels
             WHERE user_id IN (SELECT value FROM json_each(?1))",
        )?;
        let users = serde_json::to_string(&users).expect("strings serialize");
        let rows = statement.query_map([users], |row| {
            let head = Head {
                seq: row.get(1)?,
                last: row.get(2)?,
            };
            Ok((row.get::<_, String>(0)?, head))
        })?;
        for row in rows {
            let (user, head) = row?;
            heads.insert(user, head);
        }
    }
    let (places, heads) = channels::place(leased, heads);
    let heads: Vec<(&str, i64, &str)> = heads
        .iter()
        .map(|(user, head)| (user.as_str(), head.seq, head.last.as_str()))
        .collect();
    connection
        .prepare_cached(
            "INSERT INTO stream_channels (user_id, last_seq, last_event_id)
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1) WHERE true
             ON CONFLICT (user_id) DO UPDATE
                 SET last_seq = excluded.last_seq, last_event_id = excluded.last_event_id",
        )?
        .execute([serde_json::to_string(&heads).expect("heads serialize")])?;
    let places: Vec<(i64, i64, &str)> = places
        .iter()
        .map(|place| (place.row_id, place.seq, place.prev.as_str()))
        .collect();
    connection
        .prepare_cached(
            "UPDATE OR FAIL outbox SET channel_seq = place.value ->> 1, channel_prev = place.value ->> 2
             FROM json_each(?1) AS place WHERE outbox.id = place.value ->> 0",
        )?
        .execute([serde_json::to_string(&places).expect("places serialize")])?;
    Ok(())
}

/// Records outcomes. Only rows still leased to `owner` under the same lease
/// change: a lease lost to expiry is someone else's now. Deliveries and
/// releases, nearly all of them, are set-based: one statement per lease.
fn record(
    connection: &Connection,
    owner: &str,
    settled: &[Settled],
    now_ms: i64,
) -> rusqlite::Result<()> {
    let recording = Recording::of(settled, now_ms);
    let now = crate::store::millis_to_text(now_ms);
    record_attempts(connection, &recording)?;
    for Retry {
        row_id,
        lease_until,
        next_attempt_at,
        error,
    } in recording.retries
    {
        connection
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?1, last_error = ?2,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = ?3 AND lease_owner = ?4 AND lease_until = ?5",
            )?
            .execute(params![next_attempt_at, error, row_id, owner, lease_until])?;
    }
    for DeadLetter {
        row_id,
        lease_until,
        error,
    } in recording.dead
    {
        connection
            .prepare_cached(
                "UPDATE outbox SET state = 'dead', dead_at = ?1, attempts = attempts + 1, last_error = ?2,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = ?3 AND lease_owner = ?4 AND lease_until = ?5",
            )?
            .execute(params![&now, error, row_id, owner, lease_until])?;
    }
    for LeaseOutcomes {
        lease_until,
        delivered,
        released,
    } in recording.by_lease
    {
        if !delivered.is_empty() {
            connection
                .prepare_cached(
                    "UPDATE OR FAIL outbox SET state = 'delivered', delivered_at = ?1, attempts = attempts + 1,
                         lease_owner = NULL, lease_until = NULL, last_error = NULL
                     WHERE id IN (SELECT value FROM json_each(?2)) AND lease_owner = ?3 AND lease_until = ?4",
                )?
                .execute(params![&now, id_list(&delivered), owner, lease_until])?;
        }
        if !released.is_empty() {
            connection
                .prepare_cached(
                    "UPDATE OR FAIL outbox SET lease_owner = NULL, lease_until = NULL
                     WHERE id IN (SELECT value FROM json_each(?1)) AND lease_owner = ?2 AND lease_until = ?3",
                )?
                .execute(params![id_list(&released), owner, lease_until])?;
        }
    }
    Ok(())
}

/// The attempts of `recording` (each happened, whoever's lease its row is
/// under now); then the attempts past
/// [`ATTEMPTS_KEPT`](crate::store::outbox::ATTEMPTS_KEPT) of an event are
/// dropped, its oldest first.
fn record_attempts(connection: &Connection, recording: &Recording<'_>) -> rusqlite::Result<()> {
    // A few statements of many rows each, whatever the count: per row, what
    // costs is the insert itself, not the statement. An exchange records
    // dozens of attempts; they go in chunks of powers of two (64 + 4 + 1
    // for 69), so that few statements are cached.
    static INSERTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let inserts = INSERTS.get_or_init(|| {
        (0..ROWS_MAX_BITS)
            .map(|bits| insert_attempts(1 << bits))
            .collect()
    });
    let mut rest = recording.attempts.as_slice();
    while !rest.is_empty() {
        let bits = chunk_bits(rest.len());
        let (chunk, after) = rest.split_at(1 << bits);
        connection
            .prepare_cached(&inserts[bits])?
            .execute(rusqlite::params_from_iter(
                chunk.iter().flat_map(attempt_values),
            ))?;
        rest = after;
    }
    for row_id in crate::store::outbox::to_trim(recording) {
        connection
            .prepare_cached(crate::store::outbox::TRIM_ATTEMPTS)?
            .execute(params![row_id, crate::store::outbox::ATTEMPTS_KEPT])?;
    }
    Ok(())
}

/// The most attempts one insert takes: 2^(this - 1).
const ROWS_MAX_BITS: usize = 7;

/// The next chunk of `left` (> 0) attempts: the largest power of two in
/// it, at most 2^([`ROWS_MAX_BITS`] - 1), as its exponent.
fn chunk_bits(left: usize) -> usize {
    ((usize::BITS - 1 - left.leading_zeros()) as usize).min(ROWS_MAX_BITS - 1)
}

/// The insert of `rows` attempts.
fn insert_attempts(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?)";
    format!(
        "INSERT OR IGNORE INTO delivery_attempts
             (outbox_id, attempted_at, number, url, status, error, duration_ms) VALUES {}",
        vec![one; rows].join(", ")
    )
}

/// An attempt's values, in [`insert_attempts`]' order.
fn attempt_values<'a>(
    (row_id, _, attempt): &'a (i64, i64, &'a crate::store::outbox::Attempt),
) -> [&'a dyn rusqlite::ToSql; 7] {
    [
        row_id,
        &attempt.at_ms,
        &attempt.number,
        &attempt.url,
        &attempt.status,
        &attempt.error,
        &attempt.duration_ms,
    ]
}

/// Row ids as a JSON array, for `json_each`: one bound parameter for a set.
fn id_list(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("integers are JSON")
}

/// When the next pending row becomes sendable (unix ms), if any is pending.
pub fn next_due(connection: &Connection) -> rusqlite::Result<Option<i64>> {
    connection
        .prepare_cached(
            "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM outbox WHERE state = 'pending'",
        )?
        .query_row([], |row| row.get(0))
}

/// Puts dead or pending events back at the start of a fresh retry schedule,
/// due now; their ids and bodies stay. Delivered events are left alone.
/// Returns the event ids that were found and replayed.
pub fn replay(
    connection: &mut Connection,
    event_ids: &[String],
    now_ms: i64,
) -> rusqlite::Result<Vec<String>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut replayed = Vec::new();
    {
        let mut statement = transaction.prepare_cached(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?1, dead_at = NULL,
                 lease_owner = NULL, lease_until = NULL
             WHERE event_id = ?2 AND state IN ('pending', 'dead')",
        )?;
        for event_id in event_ids {
            if statement.execute(params![now_ms, event_id])? > 0 {
                replayed.push(event_id.clone());
            }
        }
    }
    transaction.commit()?;
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_go_in_chunks_of_powers_of_two() {
        let chunks = |mut left: usize| {
            let mut sizes = Vec::new();
            while left > 0 {
                sizes.push(1 << chunk_bits(left));
                left -= sizes.last().unwrap();
            }
            sizes
        };
        assert_eq!(chunks(1), [1]);
        assert_eq!(chunks(69), [64, 4, 1]);
        assert_eq!(chunks(64), [64]);
        assert_eq!(chunks(200), [64, 64, 64, 8]);
    }
}
