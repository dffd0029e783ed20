//! PostgreSQL: the outbox (see `store::outbox`). Deliverers on every node
//! lease due rows with `FOR UPDATE SKIP LOCKED`, so none waits for another;
//! a leased row's `next_attempt_at` moves to its lease's end, which takes it
//! out of the due range (and brings it back, due, if its holder dies).

use std::collections::HashMap;

use super::PgConnection;
use crate::store::channels::{self, Head};
use crate::store::outbox::{
    Attempt, DeadLetter, Exchanged, LeaseOutcomes, Leased, Recording, Retry, Settled, Want,
};

use super::PgResult as Result;

/// One exchange (see `store::outbox::exchange`), its time the server's
/// clock, read as the transaction starts: members whose own clocks
/// disagree agree on every lease.
pub fn exchange(
    connection: &mut PgConnection,
    owner: &str,
    settled: &[Settled],
    want: Option<Want>,
) -> Result<Exchanged> {
    let statements = Statements::prepare(connection)?;
    let mut transaction = connection.client().transaction()?;
    let now_ms = record_attempts(&mut transaction, &statements, settled)?;
    record(&mut transaction, &statements, owner, settled, now_ms)?;
    let mut leased = Vec::new();
    if let Some(want) = want.filter(|want| want.limit > 0) {
        let lease_until = want.lease_until(now_ms);
        let rows = match &want.spread {
            None => transaction.query(
                &statements.lease,
                &[&owner, &lease_until, &now_ms, &(want.limit as i64)],
            )?,
            Some(spread) => transaction.query(
                &statements.lease_spread,
                &[
                    &owner,
                    &lease_until,
                    &now_ms,
                    &(want.limit as i64),
                    &spread.full,
                    &(want.scan() as i64),
                    &(spread.per_user as i64),
                ],
            )?,
        };
        for row in rows {
            leased.push(Leased {
                row_id: row.try_get(0)?,
                event_id: row.try_get(1)?,
                body: row.try_get(2)?,
                attempts: row.try_get::<_, i32>(3)?.max(0) as u32,
                user_id: row.try_get(4)?,
                lease_until,
                created_at: crate::time::parse_time(row.try_get(5)?),
                channel_seq: row.try_get(6)?,
                prev_id: row.try_get(7)?,
            });
        }
        // RETURNING gives no order; sending follows the queue's.
        leased.sort_unstable_by_key(|event| event.row_id);
        if want.place {
            place(&mut transaction, &statements, &mut leased)?;
        }
    }
    transaction.commit()?;
    Ok(Exchanged { leased, now_ms })
}

/// Places the leased rows without a place on their users' channels, after
/// each channel's head (see `store::channels`): the heads of their users
/// made and locked, in user order, until the lease commits, so that two
/// members' leases of one user's events place them one after the other.
/// In an exchange's transaction or a claim's.
pub(super) fn place(
    transaction: &mut postgres::Transaction<'_>,
    statements: &Statements,
    leased: &mut [Leased],
) -> Result<()> {
    let users = channels::unplaced_users(leased);
    if users.is_empty() {
        return Ok(());
    }
    transaction.execute(&statements.make_heads, &[&users, &channels::START])?;
    let heads: HashMap<String, Head> = transaction
        .query(&statements.lock_heads, &[&users])?
        .iter()
        .map(|row| {
            let head = Head {
                seq: row.try_get(1)?,
                last: row.try_get(2)?,
            };
            Ok((row.try_get(0)?, head))
        })
        .collect::<Result<_>>()?;
    let (places, heads) = channels::place(leased, heads);
    let (users, (seqs, lasts)): (Vec<&str>, (Vec<i64>, Vec<&str>)) = heads
        .iter()
        .map(|(user, head)| (user.as_str(), (head.seq, head.last.as_str())))
        .unzip();
    transaction.execute(&statements.move_heads, &[&users, &seqs, &lasts])?;
    let (rows, (seqs, prevs)): (Vec<i64>, (Vec<i64>, Vec<&str>)) = places
        .iter()
        .map(|place| (place.row_id, (place.seq, place.prev.as_str())))
        .unzip();
    transaction.execute(&statements.place, &[&rows, &seqs, &prevs])?;
    Ok(())
}

pub(super) struct Statements {
    make_heads: postgres::Statement,
    lock_heads: postgres::Statement,
    move_heads: postgres::Statement,
    place: postgres::Statement,
    now_recording: postgres::Statement,
    lease: postgres::Statement,
    lease_spread: postgres::Statement,
    delivered: postgres::Statement,
    released: postgres::Statement,
    retry: postgres::Statement,
    dead: postgres::Statement,
    trim: postgres::Statement,
}

impl Statements {
    pub(super) fn prepare(connection: &mut PgConnection) -> Result<Statements> {
        Ok(Statements {
            make_heads: connection.prepared(
                "INSERT INTO stream_channels (user_id, last_seq, last_event_id)
                 SELECT user_id, 0, $2 FROM unnest($1::text[]) AS user_id ORDER BY user_id
                 ON CONFLICT (user_id) DO NOTHING",
            )?,
            lock_heads: connection.prepared(
                "SELECT user_id, last_seq, last_event_id FROM stream_channels
                 WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE",
            )?,
            move_heads: connection.prepared(
                "UPDATE stream_channels AS c SET last_seq = h.seq, last_event_id = h.last
                 FROM unnest($1::text[], $2::bigint[], $3::text[]) AS h(user_id, seq, last)
                 WHERE c.user_id = h.user_id",
            )?,
            place: connection.prepared(
                "UPDATE outbox AS o SET channel_seq = p.seq, channel_prev = p.prev
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS p(id, seq, prev)
                 WHERE o.id = p.id",
            )?,
            trim: connection.prepared(crate::store::outbox::TRIM_ATTEMPTS)?,
            // The attempts go in with the statement that reads the clock: no
            // round trip of their own (a data-modifying CTE runs whether or
            // not the query reads it).
            now_recording: connection.prepared(
                "WITH recorded AS (
                     INSERT INTO delivery_attempts
                         (outbox_id, attempted_at, url, status, error, duration_ms, number)
                     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[],
                                          $5::text[], $6::bigint[], $7::int[])
                     RETURNING 1)
                 SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            )?,
            lease: connection.prepared(
                "WITH due AS (
                     SELECT id FROM outbox
                     WHERE state = 'pending' AND next_attempt_at <= $3
                     ORDER BY next_attempt_at, id LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 UPDATE outbox AS o SET lease_owner = $1, lease_until = $2, next_attempt_at = $2
                 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.event_id, o.body, o.attempts, o.user_id, o.created_at,
                           o.channel_seq, o.channel_prev",
            )?,
            // Of the first due rows (users already full left out), at most
            // `per_user` of each user, in queue order. The rows looked at
            // are locked until the commit; the others skip them meanwhile.
            lease_spread: connection.prepared(
                "WITH looked_at AS (
                     SELECT id, user_id, next_attempt_at FROM outbox
                     WHERE state = 'pending' AND next_attempt_at <= $3
                       AND coalesce(user_id, '') <> ALL($5::text[])
                     ORDER BY next_attempt_at, id LIMIT $6
                     FOR UPDATE SKIP LOCKED),
                 due AS (
                     SELECT id FROM (
                         SELECT id, next_attempt_at,
                                row_number() OVER (PARTITION BY coalesce(user_id, '')
                                                   ORDER BY next_attempt_at, id) AS nth
                         FROM looked_at) AS ranked
                     WHERE nth <= $7 ORDER BY next_attempt_at, id LIMIT $4)
                 UPDATE outbox AS o SET lease_owner = $1, lease_until = $2, next_attempt_at = $2
                 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.event_id, o.body, o.attempts, o.user_id, o.created_at,
                           o.channel_seq, o.channel_prev",
            )?,
            delivered: connection.prepared(
                "UPDATE outbox SET state = 'delivered', delivered_at = $1, attempts = attempts + 1,
                     lease_owner = NULL, lease_until = NULL, last_error = NULL
                 WHERE id = ANY($2::bigint[]) AND lease_owner = $3 AND lease_until = $4",
            )?,
            // Back as it was, and due: it was due when it was leased.
            released: connection.prepared(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, next_attempt_at = $4
                 WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND lease_until = $3",
            )?,
            retry: connection.prepared(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = $3 AND lease_owner = $4 AND lease_until = $5",
            )?,
            dead: connection.prepared(
                "UPDATE outbox SET state = 'dead', dead_at = $1, attempts = attempts + 1, last_error = $2,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = $3 AND lease_owner = $4 AND lease_until = $5",
            )?,
        })
    }
}

/// Records outcomes, each only under the lease it was sent under; the
/// deliveries and releases set-based, one statement per lease.
/// The attempts of `settled` (each happened, whoever's lease its row is
/// under now), in the statement that reads the server's clock, whose time
/// (unix ms) it returns; then the attempts past
/// [`ATTEMPTS_KEPT`](crate::store::outbox::ATTEMPTS_KEPT) of an event are
/// dropped, its oldest first.
fn record_attempts(
    transaction: &mut postgres::Transaction<'_>,
    statements: &Statements,
    settled: &[Settled],
) -> Result<i64> {
    let attempts: Vec<(i64, &Attempt)> = settled
        .iter()
        .filter_map(|settled| Some((settled.row_id, settled.attempt.as_ref()?)))
        .collect();
    let rows: Vec<i64> = attempts.iter().map(|(row, _)| *row).collect();
    let at: Vec<i64> = attempts.iter().map(|(_, attempt)| attempt.at_ms).collect();
    let urls: Vec<&str> = attempts
        .iter()
        .map(|(_, attempt)| attempt.url.as_str())
        .collect();
    let statuses: Vec<Option<i32>> = attempts
        .iter()
        .map(|(_, attempt)| attempt.status.map(i32::from))
        .collect();
    let errors: Vec<Option<&str>> = attempts
        .iter()
        .map(|(_, attempt)| attempt.error.as_deref())
        .collect();
    let durations: Vec<i64> = attempts
        .iter()
        .map(|(_, attempt)| attempt.duration_ms)
        .collect();
    let numbers: Vec<i32> = attempts
        .iter()
        .map(|(_, attempt)| i32::try_from(attempt.number).unwrap_or(i32::MAX))
        .collect();
    let now_ms: i64 = transaction
        .query_one(
            &statements.now_recording,
            &[&rows, &at, &urls, &statuses, &errors, &durations, &numbers],
        )?
        .try_get(0)?;
    let kept = i64::from(crate::store::outbox::ATTEMPTS_KEPT);
    for (row_id, _) in attempts
        .iter()
        .filter(|(_, attempt)| attempt.number > crate::store::outbox::ATTEMPTS_KEPT)
    {
        transaction.execute(&statements.trim, &[row_id, &kept])?;
    }
    Ok(now_ms)
}

fn record(
    transaction: &mut postgres::Transaction<'_>,
    statements: &Statements,
    owner: &str,
    settled: &[Settled],
    now_ms: i64,
) -> Result<()> {
    let recording = Recording::of(settled, now_ms);
    let now = crate::store::millis_to_text(now_ms);
    for Retry {
        row_id,
        lease_until,
        next_attempt_at,
        error,
    } in recording.retries
    {
        transaction.execute(
            &statements.retry,
            &[&next_attempt_at, &error, &row_id, &owner, &lease_until],
        )?;
    }
    for DeadLetter {
        row_id,
        lease_until,
        error,
    } in recording.dead
    {
        transaction.execute(
            &statements.dead,
            &[&now, &error, &row_id, &owner, &lease_until],
        )?;
    }
    for LeaseOutcomes {
        lease_until,
        delivered,
        released,
    } in recording.by_lease
    {
        if !delivered.is_empty() {
            transaction.execute(
                &statements.delivered,
                &[&now, &delivered, &owner, &lease_until],
            )?;
        }
        if !released.is_empty() {
            transaction.execute(
                &statements.released,
                &[&released, &owner, &lease_until, &now_ms],
            )?;
        }
    }
    Ok(())
}

/// A leased row's `next_attempt_at` is its lease's end, so the earliest
/// `next_attempt_at` of a pending row is when it can next be sent; read
/// with the server's clock, in one statement.
pub fn next_due(connection: &mut PgConnection) -> Result<(i64, Option<i64>)> {
    let statement = connection.prepared(
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                (SELECT next_attempt_at FROM outbox WHERE state = 'pending'
                 ORDER BY next_attempt_at, id LIMIT 1)",
    )?;
    let row = connection.client().query_one(&statement, &[])?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

pub fn replay(
    connection: &mut PgConnection,
    event_ids: &[String],
    now_ms: i64,
) -> Result<Vec<String>> {
    let statement = connection.prepared(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, dead_at = NULL,
             lease_owner = NULL, lease_until = NULL
         WHERE event_id = ANY($2::text[]) AND state IN ('pending', 'dead')
         RETURNING event_id",
    )?;
    let notify = connection.prepared(super::listen::NOTIFY_OUTBOX)?;
    let mut transaction = connection.client().transaction()?;
    let replayed: std::collections::HashSet<String> = transaction
        .query(&statement, &[&now_ms, &event_ids])?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_>>()?;
    transaction.execute(&notify, &[])?;
    transaction.commit()?;
    // In the order asked for, as SQLite's per-id statements give them.
    Ok(event_ids
        .iter()
        .filter(|id| replayed.contains(*id))
        .cloned()
        .collect())
}

/// Every event of `query` replayed (the shared statement), and the
/// deliverers told at once.
pub fn replay_matching(
    connection: &mut PgConnection,
    query: &crate::store::outbox::OutboxQuery<'_>,
    now_ms: i64,
) -> Result<usize> {
    let statement = connection.prepared(crate::store::outbox::REPLAY_MATCHING)?;
    let notify = connection.prepared(super::listen::NOTIFY_OUTBOX)?;
    let mut transaction = connection.client().transaction()?;
    let replayed = transaction.execute(
        &statement,
        &[
            &query.state.word(),
            &query.user,
            &query.alert,
            &query.since,
            &query.until,
            &now_ms,
        ],
    )?;
    transaction.execute(&notify, &[])?;
    transaction.commit()?;
    Ok(replayed as usize)
}
