//! PostgreSQL: alerts, expiry, re-arming and the claim (see `store::alerts`).
//! Its own because the engines differ here: the claim (row locks taken
//! `SKIP LOCKED`, batches as arrays), times compared with
//! `price_alertd_time()`, and values cast to the types the daemon reads.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::rows::{alert_columns, alert_row};
use super::{PgConnection, PgResult as Result};

use crate::store::alerts::{
    AlertEntry, AlertFilter, AlertQuery, AlertRow, Claimed, Fired, Returned, Trigger, event_of,
};
use crate::store::outbox::{ClaimLease, Exchanged, Leased};

/// Whether a disabled alert may be re-armed now (`$1` the time, `$2` in
/// unix ms): its cooldown passed, it still has one, and it has not
/// expired. [`rearm_cooled_down`] re-arms those not waiting for their
/// price; [`come_back`] those whose price came back.
macro_rules! rearmable {
    () => {
        "rearm_at IS NOT NULL AND rearm_at <= $2 AND cooldown IS NOT NULL
         AND trim(cooldown::text) <> ''
         AND coalesce(price_alertd_time(expires_at::text) > $1::text::timestamptz, true)"
    };
}

#[cfg(any(test, feature = "test-support"))]
pub fn enabled_for_ticker(connection: &mut PgConnection, ticker: &str) -> Result<Vec<AlertRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        alert_columns!(),
        " FROM price_alerts WHERE ticker = $1 AND enabled = '1'"
    );
    let statement = connection.prepared(SQL)?;
    connection
        .client()
        .query(&statement, &[&ticker])?
        .iter()
        .map(alert_row)
        .collect()
}

pub fn enabled_without_ticker(connection: &mut PgConnection, limit: u64) -> Result<Vec<AlertRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        alert_columns!(),
        " FROM price_alerts WHERE enabled = '1' AND (ticker IS NULL OR trim(ticker) = '') ORDER BY id LIMIT $1"
    );
    let statement = connection.prepared(SQL)?;
    connection
        .client()
        .query(&statement, &[&(limit as i64)])?
        .iter()
        .map(alert_row)
        .collect()
}

/// One index seek per ticker (a loose index scan), as on SQLite.
pub fn enabled_tickers(connection: &mut PgConnection) -> Result<Vec<String>> {
    let statement = connection.prepared(
        "WITH RECURSIVE next(ticker) AS (
             SELECT min(ticker) FROM price_alerts WHERE enabled = '1'
             UNION ALL
             SELECT (SELECT min(ticker) FROM price_alerts WHERE enabled = '1' AND ticker > next.ticker)
             FROM next WHERE next.ticker IS NOT NULL
         )
         SELECT ticker::text FROM next WHERE ticker IS NOT NULL",
    )?;
    connection
        .client()
        .query(&statement, &[])?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}

/// The tickers of repeating alerts whose cooldown has passed by `now_ms`,
/// through the partial index of the waiting ones.
pub fn rearm_due_tickers(connection: &mut PgConnection, now_ms: i64) -> Result<Vec<String>> {
    let statement = connection.prepared(
        "SELECT DISTINCT ticker::text FROM price_alerts
         WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL
           AND rearm_at <= $1 AND NOT (enabled = '1')
           AND cooldown IS NOT NULL AND trim(cooldown::text) <> ''",
    )?;
    connection
        .client()
        .query(&statement, &[&now_ms])?
        .iter()
        .map(|row| {
            row.try_get::<_, Option<String>>(0)
                .map(Option::unwrap_or_default)
        })
        .collect()
}

/// Rows someone else holds locked (the application editing one in an open
/// transaction) are passed over, not waited for: they stay due, and the next
/// tick takes them.
pub fn expire_due(connection: &mut PgConnection, now: &str) -> Result<usize> {
    let statement = connection.prepared(
        "UPDATE price_alerts SET enabled = '0', expired_at = $1
         WHERE id IN (SELECT id FROM price_alerts
                      WHERE enabled = '1' AND expires_at IS NOT NULL
                        AND price_alertd_time(expires_at::text) <= $1::text::timestamptz
                      FOR NO KEY UPDATE SKIP LOCKED)",
    )?;
    Ok(connection.client().execute(&statement, &[&now])? as usize)
}

/// When the next expiry or wake comes due, in unix ms, as [`expire_due`]
/// and [`wake_snoozed`] judge it.
pub fn next_due(connection: &mut PgConnection) -> Result<Option<i64>> {
    let statement = connection.prepared(
        "SELECT (extract(epoch FROM least(
             (SELECT min(price_alertd_time(expires_at::text)) FROM price_alerts
              WHERE enabled = '1' AND expires_at IS NOT NULL),
             (SELECT min(price_alertd_time(snoozed_until::text)) FROM price_alerts
              WHERE snoozed_until IS NOT NULL AND enabled = '1')
         )) * 1000)::bigint",
    )?;
    Ok(connection.client().query_one(&statement, &[])?.get(0))
}

/// The tickers with banded alerts waiting for their price to come back: a
/// loose index scan of each index of the waiting, as [`enabled_tickers`].
pub fn waiting_tickers(connection: &mut PgConnection) -> Result<HashSet<String>> {
    macro_rules! loose_scan {
        ($column:literal) => {
            concat!(
                "WITH RECURSIVE next(ticker) AS (
                     SELECT min(ticker) FROM price_alerts WHERE ",
                $column,
                " IS NOT NULL AND enabled = '0'
                     UNION ALL
                     SELECT (SELECT min(ticker) FROM price_alerts WHERE ",
                $column,
                " IS NOT NULL AND enabled = '0' AND ticker > next.ticker)
                     FROM next WHERE next.ticker IS NOT NULL
                 )
                 SELECT ticker::text FROM next WHERE ticker IS NOT NULL"
            )
        };
    }
    let mut tickers = HashSet::new();
    for sql in [loose_scan!("return_below"), loose_scan!("return_above")] {
        let statement = connection.prepared(sql)?;
        for row in connection.client().query(&statement, &[])? {
            tickers.insert(row.try_get(0)?);
        }
    }
    Ok(tickers)
}

/// The waiting alerts of the tickers `$tickers` whose prices `$prices`
/// came back (see `store::alerts::come_back`): back below (or, for
/// `outside` and `exiting`, back inside the channel), or back above.
macro_rules! came_back {
    ($tickers:literal, $prices:literal) => {
        concat!(
            "SELECT a.id, a.ticker::text FROM unnest(",
            $tickers,
            "::text[], ",
            $prices,
            "::float8[]) AS m (ticker, price)
             JOIN price_alerts AS a ON a.ticker = m.ticker
             WHERE a.return_below IS NOT NULL AND a.enabled = '0' AND a.return_below >= m.price
               AND (a.condition NOT IN ('outside', 'exiting') OR a.return_above <= m.price)
             UNION
             SELECT a.id, a.ticker::text FROM unnest(",
            $tickers,
            "::text[], ",
            $prices,
            "::float8[]) AS m (ticker, price)
             JOIN price_alerts AS a ON a.ticker = m.ticker
             WHERE a.return_above IS NOT NULL AND a.enabled = '0' AND a.return_above <= m.price
               AND a.condition NOT IN ('outside', 'exiting')"
        )
    };
}

/// See `store::alerts::come_back`: rows someone else holds locked are
/// passed over, as [`expire_due`] passes them, and their tickers returned
/// as held (read again after the update: the rows that still came back).
pub fn come_back(
    connection: &mut PgConnection,
    prices: &[(&str, f64)],
    now: &str,
    now_ms: i64,
) -> Result<Returned> {
    let mut returned = Returned::default();
    if prices.is_empty() {
        return Ok(returned);
    }
    let (tickers, prices): (Vec<&str>, Vec<f64>) = prices.iter().copied().unzip();
    let update = connection.prepared(concat!(
        "WITH came AS (",
        came_back!("$3", "$4"),
        "), locked AS (
             SELECT id FROM price_alerts WHERE id IN (SELECT id FROM came)
             FOR NO KEY UPDATE SKIP LOCKED)
         UPDATE price_alerts SET return_below = NULL, return_above = NULL,
             enabled = CASE WHEN ",
        rearmable!(),
        " THEN '1' ELSE enabled END,
             rearm_at = CASE WHEN ",
        rearmable!(),
        " THEN NULL ELSE rearm_at END
         WHERE id IN (SELECT id FROM locked) AND enabled = '0'
           AND (return_below IS NOT NULL OR return_above IS NOT NULL)
         RETURNING enabled = '1'"
    ))?;
    let still = connection.prepared(came_back!("$1", "$2"))?;
    let mut transaction = connection.client().transaction()?;
    for row in transaction.query(&update, &[&now, &now_ms, &tickers, &prices])? {
        returned.came_back += 1;
        returned.rearmed += u64::from(row.try_get::<_, bool>(0)?);
    }
    for row in transaction.query(&still, &[&tickers, &prices])? {
        returned.held.insert(row.try_get(1)?);
    }
    transaction.commit()?;
    Ok(returned)
}

/// As [`expire_due`], locked rows are passed over and stay snoozed.
pub fn wake_snoozed(connection: &mut PgConnection, now: &str) -> Result<usize> {
    let statement = connection.prepared(
        "UPDATE price_alerts SET snoozed_until = NULL
         WHERE id IN (SELECT id FROM price_alerts
                      WHERE snoozed_until IS NOT NULL AND enabled = '1'
                        AND price_alertd_time(snoozed_until::text) <= $1::text::timestamptz
                      FOR NO KEY UPDATE SKIP LOCKED)",
    )?;
    Ok(connection.client().execute(&statement, &[&now])? as usize)
}

/// As [`expire_due`], locked rows are passed over and stay due.
pub fn rearm_cooled_down(connection: &mut PgConnection, now: &str, now_ms: i64) -> Result<usize> {
    let rearm = connection.prepared(concat!(
        // `NOT (enabled = '1')`, not `enabled = '0'`: the planner, whose
        // statistics may say few alerts are disabled, would otherwise go
        // through every disabled alert in `idx_price_alerts_enabled` instead
        // of the few waiting in `price_alerts_rearm`.
        "UPDATE price_alerts SET enabled = '1', rearm_at = NULL
         WHERE id IN (SELECT id FROM price_alerts
                      WHERE ",
        rearmable!(),
        " AND return_below IS NULL AND return_above IS NULL AND NOT (enabled = '1')
                      FOR NO KEY UPDATE SKIP LOCKED)"
    ))?;
    // The rest whose cooldown is over (not re-armed: their expiry came
    // meanwhile) end it, and one that expired is marked so.
    let end_cooldowns = connection.prepared(
        "UPDATE price_alerts SET rearm_at = NULL,
             expired_at = CASE WHEN enabled = '0'
                                AND price_alertd_time(expires_at::text) <= $1::text::timestamptz
                               THEN $1 ELSE expired_at END
         WHERE id IN (SELECT id FROM price_alerts
                      WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL
                        AND rearm_at <= $2
                      FOR NO KEY UPDATE SKIP LOCKED)",
    )?;
    let mut transaction = connection.client().transaction()?;
    let rearmed = transaction.execute(&rearm, &[&now, &now_ms])?;
    transaction.execute(&end_cooldowns, &[&now, &now_ms])?;
    transaction.commit()?;
    Ok(rearmed as usize)
}

/// The claim, in one transaction: first the batch's rows are locked in id
/// order (`FOR NO KEY UPDATE SKIP LOCKED`): a row someone else holds (the
/// application's open transaction, another claimer) is passed over and
/// returned as locked, so one held row never holds back the batch, and no
/// claimer ever waits for another, so none deadlocks. Then one set-based
/// `UPDATE ... WHERE enabled AND <as judged> RETURNING id` disables the rows
/// this claim locked that are still as they were judged; then the events of
/// exactly those rows are queued, and the members' listeners notified at
/// commit.
pub fn claim(
    connection: &mut PgConnection,
    triggers: &[Trigger],
    triggered_at: DateTime<Utc>,
    now_ms: i64,
    lease: Option<&ClaimLease>,
) -> Result<Claimed> {
    let stamp = crate::store::timestamp(triggered_at);
    let statements = ClaimStatements::prepare(connection)?;
    let placing = match lease {
        Some(lease) if lease.want.place => Some(super::outbox::Statements::prepare(connection)?),
        _ => None,
    };
    let installation = super::installation_id(connection)?;
    // In id order, once each: the rows are visited in the order of the index.
    let mut batch: Vec<&Trigger> = triggers.iter().collect();
    batch.sort_by_key(|trigger| trigger.alert_id);
    batch.dedup_by_key(|trigger| trigger.alert_id);
    let mut transaction = connection.client().transaction()?;
    let locked = lock_batch(&mut transaction, &statements, &mut batch)?;
    let changed = disable_locked(&mut transaction, &statements.disable, &batch, &stamp)?;
    let mut leased = enqueue_claimed(
        &mut transaction,
        &statements,
        (&installation, &stamp, now_ms),
        (&batch, &changed),
        lease,
    )?;
    if let Some(placing) = &placing {
        super::outbox::place(&mut transaction, placing, &mut leased.leased)?;
    }
    transaction.commit()?;
    Ok(Claimed {
        ids: changed.into_keys().collect(),
        locked,
        leased,
        observed: false,
    })
}

/// The claim's statements, prepared once per connection.
struct ClaimStatements {
    lock: postgres::Statement,
    existing: postgres::Statement,
    disable: postgres::Statement,
    enqueue: postgres::Statement,
    enqueue_leased: postgres::Statement,
    notify: postgres::Statement,
}

impl ClaimStatements {
    fn prepare(connection: &mut PgConnection) -> Result<ClaimStatements> {
        Ok(ClaimStatements {
            // Two statements, this and `disable`: a CTE that locks, joined to
            // the UPDATE, may be planned as a nested loop over its rows,
            // which costs quadratic time.
            lock: connection.prepared(
                "SELECT id FROM price_alerts WHERE id = ANY($1::bigint[]) ORDER BY id
                 FOR NO KEY UPDATE SKIP LOCKED",
            )?,
            // Of the rows passed over, those that still exist (a plain read
            // waits for no lock): the others were deleted.
            existing: connection
                .prepared("SELECT id FROM price_alerts WHERE id = ANY($1::bigint[])")?,
            // A claim that spends the budget leaves no re-arm due, and no
            // price to wait for: as SQLite's `SPENT`.
            disable: connection.prepared(
                "UPDATE price_alerts AS a
                 SET enabled = '0', triggered_at = $1, triggered_price = c.price,
                     trigger_count = a.trigger_count + 1,
                     (rearm_at, return_below, return_above) =
                         (SELECT c.rearm_at, c.return_below, c.return_above
                          WHERE NOT coalesce(a.trigger_count + 1 >= a.max_triggers::float8, false))
                 FROM unnest($2::bigint[], $3::bigint[], $4::float8[], $5::text[], $6::float8[], $7::float8[],
                             $8::bigint[], $9::float8[], $10::float8[], $11::float8[], $12::float8[])
                      AS c (id, arming, price, condition, target_price, reference_price, rearm_at, upper_price,
                            rearm_band, return_below, return_above)
                 WHERE a.id = c.id AND a.enabled = '1' AND a.arming = c.arming
                   AND a.condition = c.condition AND a.target_price = c.target_price
                   AND a.reference_price IS NOT DISTINCT FROM c.reference_price
                   AND a.upper_price::float8 IS NOT DISTINCT FROM c.upper_price
                   AND nullif(trim(a.rearm_band::text), '')::float8 IS NOT DISTINCT FROM c.rearm_band
                   AND (a.snoozed_until IS NULL
                        OR price_alertd_time(a.snoozed_until::text) <= $1::text::timestamptz)
                 RETURNING a.id, a.trigger_count::bigint, a.max_triggers::float8",
            )?,
            enqueue: connection.prepared(
                "INSERT INTO outbox (event_id, alert_id, body, created_at, next_attempt_at, user_id)
                 SELECT e.event_id, e.alert_id, e.body, $4, $5, e.user_id
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $6::text[]) AS e (event_id, alert_id, body, user_id)",
            )?,
            // A leased row's due time is its lease's end, as an exchange
            // leaves it (`postgresql::outbox`); the lease's time is the
            // server's clock.
            enqueue_leased: connection.prepared(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
                 INSERT INTO outbox (event_id, alert_id, body, created_at, next_attempt_at, user_id,
                                     lease_owner, lease_until)
                 SELECT e.event_id, e.alert_id, e.body, $4,
                        CASE WHEN e.leased THEN now.ms + $8::bigint ELSE $5 END, e.user_id,
                        CASE WHEN e.leased THEN $7::text END,
                        CASE WHEN e.leased THEN now.ms + $8::bigint END
                 FROM now, unnest($1::text[], $2::bigint[], $3::text[], $6::text[], $9::bool[])
                      AS e (event_id, alert_id, body, user_id, leased)
                 RETURNING id, alert_id, lease_until",
            )?,
            notify: connection.prepared(super::listen::NOTIFY_OUTBOX)?,
        })
    }
}

/// Locks the batch's rows, passing over those someone else holds: they
/// leave the batch, and those of them that still exist are returned, in id
/// order, as locked.
fn lock_batch(
    transaction: &mut postgres::Transaction<'_>,
    statements: &ClaimStatements,
    batch: &mut Vec<&Trigger>,
) -> Result<Vec<i64>> {
    let ids: Vec<i64> = batch.iter().map(|trigger| trigger.alert_id).collect();
    let held: HashSet<i64> = transaction
        .query(&statements.lock, &[&ids])?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_>>()?;
    let mut locked = Vec::new();
    if held.len() < ids.len() {
        let passed_over: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !held.contains(id))
            .collect();
        for row in transaction.query(&statements.existing, &[&passed_over])? {
            locked.push(row.try_get(0)?);
        }
        locked.sort_unstable();
        batch.retain(|trigger| held.contains(&trigger.alert_id));
    }
    Ok(locked)
}

/// The claim itself (invariant 1), over the rows this claimer locked:
/// disables those still enabled, in the arming and with the condition and
/// levels that were judged, and not snoozed at the tick's time; counts the
/// trigger, and leaves a repeating alert that spent its budget without a
/// re-arm. Returns the ids it changed, with which trigger of how many each
/// was.
fn disable_locked(
    transaction: &mut postgres::Transaction<'_>,
    statement: &postgres::Statement,
    batch: &[&Trigger],
    stamp: &str,
) -> Result<HashMap<i64, Fired>> {
    let ids: Vec<i64> = batch.iter().map(|trigger| trigger.alert_id).collect();
    let armings: Vec<i64> = batch.iter().map(|trigger| trigger.arming).collect();
    let prices: Vec<f64> = batch.iter().map(|trigger| trigger.price).collect();
    let conditions: Vec<&str> = batch
        .iter()
        .map(|trigger| trigger.condition.name())
        .collect();
    let targets: Vec<f64> = batch.iter().map(|trigger| trigger.target_price).collect();
    let references: Vec<Option<f64>> = batch
        .iter()
        .map(|trigger| trigger.reference_price)
        .collect();
    let rearm_at: Vec<Option<i64>> = batch.iter().map(|trigger| trigger.rearm_at).collect();
    let uppers: Vec<Option<f64>> = batch.iter().map(|trigger| trigger.upper_price).collect();
    let bands: Vec<Option<f64>> = batch.iter().map(|trigger| trigger.rearm_band).collect();
    let below: Vec<Option<f64>> = batch.iter().map(|trigger| trigger.return_below).collect();
    let above: Vec<Option<f64>> = batch.iter().map(|trigger| trigger.return_above).collect();
    transaction
        .query(
            statement,
            &[
                &stamp,
                &ids,
                &armings,
                &prices,
                &conditions,
                &targets,
                &references,
                &rearm_at,
                &uppers,
                &bands,
                &below,
                &above,
            ],
        )?
        .iter()
        .map(|row| {
            let fired = Fired {
                count: row.try_get(1)?,
                max: row.try_get::<_, Option<f64>>(2)?.map(|max| max as i64),
            };
            Ok((row.try_get(0)?, fired))
        })
        .collect()
}

/// Queues an event for each alert the claim changed, and for no other
/// (invariant 2): one that someone else claimed, or that was disabled,
/// re-armed or edited since it was read, gets no event from us. The
/// queueing transaction notifies every member's listener at commit, unless
/// `lease` took every event: then no other member has anything to lease.
/// `(installation, stamp, now_ms)` are the events' id prefix, time and due
/// time. Returns the rows `lease` took, in queue order, and its time.
fn enqueue_claimed(
    transaction: &mut postgres::Transaction<'_>,
    statements: &ClaimStatements,
    (installation, stamp, now_ms): (&str, &str, i64),
    (batch, changed): (&[&Trigger], &HashMap<i64, Fired>),
    lease: Option<&ClaimLease>,
) -> Result<Exchanged> {
    let (mut event_ids, mut alert_ids, mut bodies, mut users) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (trigger, fired) in batch
        .iter()
        .filter_map(|trigger| Some((trigger, *changed.get(&trigger.alert_id)?)))
    {
        let event = event_of(installation, trigger, fired, stamp);
        event_ids.push(event.id.clone());
        alert_ids.push(trigger.alert_id);
        bodies.push(event.to_json());
        users.push(trigger.user_id.as_deref());
    }
    let mut leased = Exchanged::default();
    if event_ids.is_empty() {
        return Ok(leased);
    }
    let Some(lease) = lease else {
        transaction.execute(
            &statements.enqueue,
            &[&event_ids, &alert_ids, &bodies, &stamp, &now_ms, &users],
        )?;
        transaction.execute(&statements.notify, &[])?;
        return Ok(leased);
    };
    let takes = lease.takes(users.iter().copied());
    let lease_ms = lease.want.lease.as_millis() as i64;
    let rows = transaction.query(
        &statements.enqueue_leased,
        &[
            &event_ids,
            &alert_ids,
            &bodies,
            &stamp,
            &now_ms,
            &users,
            &lease.owner,
            &lease_ms,
            &takes,
        ],
    )?;
    // The batch holds each alert once: its id names its event's row.
    let queued: HashMap<i64, usize> = alert_ids
        .iter()
        .enumerate()
        .map(|(at, id)| (*id, at))
        .collect();
    for row in rows {
        let Some(lease_until) = row.try_get::<_, Option<i64>>(2)? else {
            continue;
        };
        leased.now_ms = lease_until - lease_ms;
        let Some(&at) = queued.get(&row.try_get::<_, i64>(1)?) else {
            continue;
        };
        leased.leased.push(Leased {
            row_id: row.try_get(0)?,
            event_id: std::mem::take(&mut event_ids[at]),
            body: std::mem::take(&mut bodies[at]),
            attempts: 0,
            user_id: users[at].map(str::to_owned),
            lease_until,
            created_at: crate::time::parse_time(stamp),
            channel_seq: None,
            prev_id: None,
        });
    }
    // RETURNING gives no order; sending follows the queue's.
    leased.leased.sort_unstable_by_key(|event| event.row_id);
    if leased.leased.len() < event_ids.len() {
        transaction.execute(&statements.notify, &[])?;
    }
    Ok(leased)
}

/// `list`'s and `count`'s statements for each filter, with `$1` ticker,
/// `$2` user, `$3` id and `$4` the id to stay below: literals, each
/// prepared once.
macro_rules! filtered {
    ($head:literal, $state:literal, $tail:literal) => {
        concat!(
            $head,
            " WHERE ",
            $state,
            " AND ($1::text IS NULL OR ticker = $1) AND ($2::text IS NULL OR user_id = $2)",
            " AND ($3::bigint IS NULL OR id = $3) AND ($4::bigint IS NULL OR id < $4)",
            $tail
        )
    };
}

macro_rules! per_filter {
    ($filter:expr, $head:literal, $tail:literal) => {
        match $filter {
            AlertFilter::All => filtered!($head, "true", $tail),
            AlertFilter::Enabled => filtered!($head, "enabled = '1'", $tail),
            AlertFilter::Triggered => {
                filtered!($head, "enabled = '0' AND triggered_at IS NOT NULL", $tail)
            }
            AlertFilter::Disabled => filtered!($head, "enabled = '0'", $tail),
        }
    };
}

/// Up to `query.limit` alerts of `query`, newest first.
pub fn list(connection: &mut PgConnection, query: &AlertQuery<'_>) -> Result<Vec<AlertEntry>> {
    let sql = per_filter!(
        query.filter,
        "SELECT id, ticker::text, condition::text, target_price::float8, \
         reference_price::float8, enabled = '1', triggered_at::text, triggered_price::float8, \
         expires_at::text, expired_at::text, user_id::text, note::text, cooldown::text, rearm_at, \
         snoozed_until::text, trigger_count::bigint, max_triggers::text, upper_price::float8, \
         rearm_band::text, return_below::float8, return_above::float8, change_seq \
         FROM price_alerts",
        " ORDER BY id DESC LIMIT $5"
    );
    let statement = connection.prepared(sql)?;
    connection
        .client()
        .query(
            &statement,
            &[
                &query.ticker,
                &query.user,
                &query.id,
                &query.before,
                &(query.limit as i64),
            ],
        )?
        .iter()
        .map(|row| {
            Ok(AlertEntry {
                id: row.try_get(0)?,
                ticker: row.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                condition: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
                target_price: row.try_get(3)?,
                reference_price: row.try_get(4)?,
                upper_price: row.try_get(17)?,
                enabled: row.try_get::<_, Option<bool>>(5)?.unwrap_or(false),
                triggered_at: row.try_get(6)?,
                triggered_price: row.try_get(7)?,
                expires_at: row.try_get(8)?,
                expired_at: row.try_get(9)?,
                user_id: row.try_get(10)?,
                note: row.try_get(11)?,
                cooldown: row.try_get(12)?,
                rearm_at: row
                    .try_get::<_, Option<i64>>(13)?
                    .map(crate::store::millis_to_text),
                snoozed_until: row.try_get(14)?,
                trigger_count: row.try_get(15)?,
                max_triggers: row.try_get(16)?,
                rearm_band: row.try_get(18)?,
                return_below: row.try_get(19)?,
                return_above: row.try_get(20)?,
                change_seq: row.try_get(21)?,
            })
        })
        .collect()
}

/// How many alerts `query` holds.
pub fn count(connection: &mut PgConnection, query: &AlertQuery<'_>) -> Result<u64> {
    let sql = per_filter!(query.filter, "SELECT count(*) FROM price_alerts", "");
    let statement = connection.prepared(sql)?;
    let count: i64 = connection
        .client()
        .query_one(
            &statement,
            &[&query.ticker, &query.user, &query.id, &query.before],
        )?
        .try_get(0)?;
    Ok(count.max(0) as u64)
}
