//! SQLite: alerts, expiry, re-arming and the claim (see `store::alerts`).
//! Its own because the engines differ here: the claim (one writer at a time,
//! the batch staged in a temp table), times compared with `julianday()`, and
//! values read through `rows` (SQLite keeps whatever type was written).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, TransactionBehavior, params};

use super::rows::{alert_row, number, text};

use crate::store::alerts::{
    AlertEntry, AlertFilter, AlertQuery, AlertRow, Claimed, Fired, Returned, Trigger, event_of,
};
use crate::store::observations::Observation;
use crate::store::outbox::{ClaimLease, Exchanged, Leased};

/// The enabled alerts of one ticker, through `idx_price_alerts_enabled`.
#[cfg(any(test, feature = "test-support"))]
pub fn enabled_for_ticker(
    connection: &Connection,
    ticker: &str,
) -> rusqlite::Result<Vec<AlertRow>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM price_alerts WHERE ticker = ?1 AND enabled = 1"
    ))?;
    let rows = statement.query_map([ticker], alert_row)?;
    rows.collect()
}

/// Up to `limit` enabled alerts whose ticker is NULL, empty or blank, to
/// name in warnings.
pub fn enabled_without_ticker(
    connection: &Connection,
    limit: u64,
) -> rusqlite::Result<Vec<AlertRow>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM price_alerts
         WHERE enabled = 1 AND (ticker IS NULL OR trim(ticker) = '') ORDER BY id LIMIT ?1 + 0"
    ))?;
    let rows = statement.query_map([limit as i64], alert_row)?;
    rows.collect()
}

/// The columns [`alert_row`] reads, in its order.
pub(super) const ALERT_COLUMNS: &str = "id, arming, ticker, condition, target_price, reference_price, expires_at, user_id, note, cooldown, snoozed_until, max_triggers, upper_price, rearm_band";

/// Every ticker that has enabled alerts: one seek per ticker in
/// `price_alerts_level` (which holds enabled alerts only, by ticker), not a
/// pass over the alerts. (A NULL ticker is not listed.)
pub fn enabled_tickers(connection: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare_cached(
        "WITH RECURSIVE next(ticker) AS (
             SELECT min(ticker) FROM price_alerts INDEXED BY price_alerts_level WHERE enabled = 1
             UNION ALL
             SELECT (SELECT min(ticker) FROM price_alerts INDEXED BY price_alerts_level
                     WHERE enabled = 1 AND ticker > next.ticker)
             FROM next WHERE next.ticker IS NOT NULL
         )
         SELECT ticker FROM next WHERE ticker IS NOT NULL",
    )?;
    let rows = statement.query_map([], |row| Ok(text(row.get(0)?)))?;
    rows.collect()
}

/// The tickers of repeating alerts whose cooldown has passed by `now_ms`,
/// through the partial index of the waiting ones.
pub fn rearm_due_tickers(connection: &Connection, now_ms: i64) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare_cached(
        "SELECT DISTINCT ticker FROM price_alerts INDEXED BY price_alerts_rearm
         WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL
           AND rearm_at <= ?1 AND enabled = 0
           AND cooldown IS NOT NULL AND trim(cooldown) <> ''",
    )?;
    let rows = statement.query_map([now_ms], |row| Ok(text(row.get(0)?)))?;
    rows.collect()
}

/// Disables, without an event, every enabled alert whose `expires_at` is at
/// or before `now`, stamping `expired_at`. Returns how many. Looks first,
/// without the write lock: most ticks have none to expire, and a write
/// statement takes the lock (the application's writers wait) even when it
/// changes nothing.
pub fn expire_due(connection: &Connection, now: &str) -> rusqlite::Result<usize> {
    let due = connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM price_alerts
             WHERE enabled = 1 AND expires_at IS NOT NULL AND julianday(expires_at) <= julianday(?1))",
        )?
        .query_row([now], |row| row.get::<_, bool>(0))?;
    if !due {
        return Ok(0);
    }
    connection.execute(
        "UPDATE price_alerts SET enabled = 0, expired_at = ?1
         WHERE enabled = 1 AND expires_at IS NOT NULL AND julianday(expires_at) <= julianday(?1)",
        [now],
    )
}

/// When the next expiry or wake comes due, in unix ms: as [`expire_due`]
/// and [`wake_snoozed`] judge it (a time SQLite cannot read is never due),
/// through their partial indexes.
pub fn next_due(connection: &Connection) -> rusqlite::Result<Option<i64>> {
    connection
        .prepare_cached(
            "SELECT CAST(round((min(due) - 2440587.5) * 86400000.0) AS INTEGER) FROM (
                 SELECT min(julianday(expires_at)) AS due FROM price_alerts INDEXED BY idx_price_alerts_expiry
                 WHERE enabled = 1 AND expires_at IS NOT NULL
                 UNION ALL
                 SELECT min(julianday(snoozed_until)) FROM price_alerts INDEXED BY price_alerts_snoozed
                 WHERE snoozed_until IS NOT NULL AND enabled = 1)",
        )?
        .query_row([], |row| row.get(0))
}

/// The tickers with banded alerts waiting for their price to come back:
/// one seek per ticker in each index of the waiting.
pub fn waiting_tickers(connection: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut tickers = HashSet::new();
    for (index, column) in [
        ("price_alerts_return_below", "return_below"),
        ("price_alerts_return_above", "return_above"),
    ] {
        let mut statement = connection.prepare_cached(&format!(
            "WITH RECURSIVE next(ticker) AS (
                 SELECT min(ticker) FROM price_alerts INDEXED BY {index}
                 WHERE {column} IS NOT NULL AND enabled = 0
                 UNION ALL
                 SELECT (SELECT min(ticker) FROM price_alerts INDEXED BY {index}
                         WHERE {column} IS NOT NULL AND enabled = 0 AND ticker > next.ticker)
                 FROM next WHERE next.ticker IS NOT NULL
             )
             SELECT ticker FROM next WHERE ticker IS NOT NULL"
        ))?;
        let rows = statement.query_map([], |row| Ok(text(row.get(0)?)))?;
        for ticker in rows {
            tickers.insert(ticker?);
        }
    }
    Ok(tickers)
}

/// Whether a disabled alert may be re-armed now (`?1` the time, `?2` in
/// unix ms): its cooldown passed, it still has one, and it has not
/// expired. [`rearm_cooled_down`] re-arms those not waiting for their
/// price; [`come_back`] those whose price came back.
const REARMABLE: &str = "rearm_at IS NOT NULL AND rearm_at <= ?2 AND cooldown IS NOT NULL
     AND trim(cooldown) <> '' AND coalesce(julianday(expires_at) > julianday(?1), 1)";

/// See `store::alerts::come_back`: for each ticker, one range of each index
/// of the waiting.
pub fn come_back(
    connection: &mut Connection,
    prices: &[(&str, f64)],
    now: &str,
    now_ms: i64,
) -> rusqlite::Result<Returned> {
    let mut returned = Returned::default();
    if prices.is_empty() {
        return Ok(returned);
    }
    let _turn = super::wal::Turn::take();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        // Back below (or, for `outside` and `exiting`, back inside the
        // channel), then back above: a row the first cleared is not read
        // again by the second.
        let mut below = transaction.prepare_cached(&format!(
            "UPDATE price_alerts INDEXED BY price_alerts_return_below
             SET return_below = NULL, return_above = NULL,
                 enabled = iif({REARMABLE}, 1, enabled), rearm_at = iif({REARMABLE}, NULL, rearm_at)
             WHERE ticker = ?3 AND return_below IS NOT NULL AND enabled = 0 AND return_below >= ?4
               AND (condition NOT IN ('outside', 'exiting') OR return_above <= ?4)
             RETURNING enabled"
        ))?;
        let mut above = transaction.prepare_cached(&format!(
            "UPDATE price_alerts INDEXED BY price_alerts_return_above
             SET return_below = NULL, return_above = NULL,
                 enabled = iif({REARMABLE}, 1, enabled), rearm_at = iif({REARMABLE}, NULL, rearm_at)
             WHERE ticker = ?3 AND return_above IS NOT NULL AND enabled = 0 AND return_above <= ?4
               AND condition NOT IN ('outside', 'exiting')
             RETURNING enabled"
        ))?;
        for &(ticker, price) in prices {
            for statement in [&mut below, &mut above] {
                let mut rows = statement.query(params![now, now_ms, ticker, price])?;
                while let Some(row) = rows.next()? {
                    returned.came_back += 1;
                    returned.rearmed += u64::from(row.get::<_, i64>(0)? == 1);
                }
            }
        }
    }
    transaction.commit()?;
    Ok(returned)
}

/// Wakes the snoozed alerts whose time came (see `store::alerts`), through
/// the partial index of the snoozed. Looks first, without the write lock,
/// as [`expire_due`] does.
pub fn wake_snoozed(connection: &Connection, now: &str) -> rusqlite::Result<usize> {
    let due = connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM price_alerts INDEXED BY price_alerts_snoozed
             WHERE snoozed_until IS NOT NULL AND enabled = 1
               AND julianday(snoozed_until) <= julianday(?1))",
        )?
        .query_row([now], |row| row.get::<_, bool>(0))?;
    if !due {
        return Ok(0);
    }
    connection.execute(
        "UPDATE price_alerts INDEXED BY price_alerts_snoozed SET snoozed_until = NULL
         WHERE snoozed_until IS NOT NULL AND enabled = 1
           AND julianday(snoozed_until) <= julianday(?1)",
        [now],
    )
}

/// Re-arms the repeating alerts whose cooldown has passed, through the
/// partial index `price_alerts_rearm` (see `store::alerts`). Looks first,
/// without the write lock, as [`expire_due`] does.
pub fn rearm_cooled_down(
    connection: &mut Connection,
    now: &str,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    let due = connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM price_alerts INDEXED BY price_alerts_rearm
             WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL
               AND rearm_at <= ?1)",
        )?
        .query_row([now_ms], |row| row.get::<_, bool>(0))?;
    if !due {
        return Ok(0);
    }
    let _turn = super::wal::Turn::take();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rearmed = transaction.execute(
        &format!(
            "UPDATE price_alerts SET enabled = 1, rearm_at = NULL
             WHERE {REARMABLE} AND return_below IS NULL AND return_above IS NULL AND enabled = 0"
        ),
        params![now, now_ms],
    )?;
    transaction.execute(
        "UPDATE price_alerts SET rearm_at = NULL,
             expired_at = CASE WHEN enabled = 0 AND julianday(expires_at) <= julianday(?1)
                               THEN ?1 ELSE expired_at END
         WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL
           AND rearm_at <= ?2",
        params![now, now_ms],
    )?;
    transaction.commit()?;
    Ok(rearmed)
}

/// Claims `triggers` in one IMMEDIATE transaction: each alert is disabled only
/// if it is still enabled, in the arming and with the condition and levels
/// that were evaluated (invariant 1), and an outbox row is inserted for
/// exactly the rows this statement changed (invariant 2). Returns the alerts
/// this call claimed.
/// Where the room left on the disk would not hold the batch's WAL, in
/// several transactions, each a claim of its own (`wal::claims_that_fit`);
/// each transaction takes its turn at the write lock (`wal::Turn`) and may
/// checkpoint the WAL after it, but the last: the caller does, through
/// `Engine::after_write`, once it has handed the claimed events on: a
/// checkpoint in a burst's first claim (copying up to 16 MiB) held its
/// events back.
pub fn claim(
    connection: &mut Connection,
    triggers: &[Trigger],
    triggered_at: DateTime<Utc>,
    now_ms: i64,
    lease: Option<&ClaimLease>,
    observed: &[Observation],
) -> rusqlite::Result<Claimed> {
    let stamp = crate::store::timestamp(triggered_at);
    let per_transaction = super::wal::claims_that_fit(connection, triggers.len());
    // One writer at a time holds the whole database: no row is ever locked
    // by someone else while the claim runs. So the observed prices offered
    // are always recorded, with the last part: after every part before it
    // committed.
    let mut claimed = Claimed {
        observed: !observed.is_empty() && !triggers.is_empty(),
        ..Claimed::default()
    };
    let mut lease = lease.cloned();
    let parts = triggers.chunks(per_transaction);
    let last = parts.len().saturating_sub(1);
    for (at, part) in parts.enumerate() {
        if at > 0 {
            super::wal::after_write(connection);
        }
        let observed = if at == last { observed } else { &[] };
        let (ids, leased) =
            claim_in_one_transaction(connection, part, (&stamp, now_ms), lease.as_ref(), observed)?;
        claimed.ids.extend(ids);
        if let Some(lease) = &mut lease {
            lease.want.limit -= leased.leased.len();
        }
        if at == 0 {
            claimed.leased.now_ms = leased.now_ms;
        }
        claimed.leased.leased.extend(leased.leased);
    }
    Ok(claimed)
}

fn claim_in_one_transaction(
    connection: &mut Connection,
    triggers: &[Trigger],
    (stamp, now_ms): (&str, i64),
    lease: Option<&ClaimLease>,
    observed: &[Observation],
) -> rusqlite::Result<(Vec<i64>, Exchanged)> {
    let _turn = super::wal::Turn::take();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The lease's time, as an exchange's: this host's, once the write lock
    // is held.
    let lease_ms = chrono::Utc::now().timestamp_millis();
    let installation = super::installation_id(&transaction)?;
    stage_claims(&transaction, triggers)?;
    let changed = disable_staged(&transaction, stamp)?;
    let mut leased = enqueue_claimed(
        &transaction,
        &installation,
        (triggers, &changed),
        (stamp, now_ms),
        lease.map(|lease| (lease, lease_ms)),
    )?;
    if lease.is_some_and(|lease| lease.want.place) {
        super::outbox::place(&transaction, &mut leased)?;
    }
    super::observations::upsert(&transaction, observed, stamp)?;
    transaction.commit()?;
    let leased = Exchanged {
        leased,
        now_ms: lease_ms,
    };
    Ok((changed.into_keys().collect(), leased))
}

/// Stages a claim's batch in a temporary table (exact values, bound as
/// parameters), for one set-based `UPDATE`: per-row UPDATEs cost several
/// times more (each sets up the triggers' programs and a temporary b-tree).
fn stage_claims(
    transaction: &rusqlite::Transaction<'_>,
    triggers: &[Trigger],
) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS claims (
             id INTEGER PRIMARY KEY, arming INTEGER NOT NULL, price REAL NOT NULL,
             condition TEXT NOT NULL, target_price REAL NOT NULL, reference_price REAL,
             upper_price REAL, rearm_at INTEGER, rearm_band REAL, return_below REAL, return_above REAL);
         DELETE FROM temp.claims;",
    )?;
    let mut stage = transaction.prepare_cached(
        "INSERT OR REPLACE INTO temp.claims
             (id, arming, price, condition, target_price, reference_price, upper_price, rearm_at,
              rearm_band, return_below, return_above)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for trigger in triggers {
        stage.execute(params![
            trigger.alert_id,
            trigger.arming,
            trigger.price,
            trigger.condition.name(),
            trigger.target_price,
            trigger.reference_price,
            trigger.upper_price,
            trigger.rearm_at,
            trigger.rearm_band,
            trigger.return_below,
            trigger.return_above
        ])?;
    }
    Ok(())
}

/// Whether the claim of a `price_alerts` row spends its trigger budget
/// (`max_triggers` NULL: never), as the claim's `SET` sees the row before
/// it.
const SPENT: &str = "price_alerts.trigger_count + 1 >= price_alerts.max_triggers";

/// The claim itself (invariant 1): disables the staged alerts that are still
/// enabled, in the arming and with the condition and levels that were
/// judged, and not snoozed at the tick's time; counts the trigger, and
/// leaves a repeating alert that spent its budget without a re-arm. Returns
/// the ids it changed, with which trigger of how many each was.
fn disable_staged(
    transaction: &rusqlite::Transaction<'_>,
    stamp: &str,
) -> rusqlite::Result<HashMap<i64, Fired>> {
    let mut disable = transaction.prepare_cached(
        // `id IN (SELECT id ...)` makes SQLite drive from the staged
        // ids (rowid lookups); a join would scan the whole table.
        // OR FAIL: an error would still roll back the whole
        // transaction (the claim is all or nothing), so the statement
        // needs no statement journal of its own, which SQLite would
        // otherwise fill with every page the claim touches (48 MB for
        // a batch of 5,000 at 10M alerts).
        &"UPDATE OR FAIL price_alerts
         SET enabled = 0, triggered_at = ?1, trigger_count = trigger_count + 1,
             (triggered_price, rearm_at, return_below, return_above) =
                 (SELECT c.price, iif({spent}, NULL, c.rearm_at), iif({spent}, NULL, c.return_below),
                         iif({spent}, NULL, c.return_above)
                  FROM temp.claims AS c WHERE c.id = price_alerts.id)
         WHERE id IN (SELECT id FROM temp.claims) AND enabled = 1
           AND EXISTS (SELECT 1 FROM temp.claims AS c
                       WHERE c.id = price_alerts.id AND c.arming = price_alerts.arming
                         AND c.condition = price_alerts.condition AND c.target_price = price_alerts.target_price
                         AND c.reference_price IS price_alerts.reference_price
                         AND c.upper_price IS price_alerts.upper_price
                         AND c.rearm_band IS iif(trim(price_alerts.rearm_band) = '', NULL,
                                                 CAST(price_alerts.rearm_band AS REAL)))
           AND (snoozed_until IS NULL OR julianday(snoozed_until) <= julianday(?1))
         RETURNING id, trigger_count, max_triggers".replace("{spent}", SPENT),
    )?;
    let rows = disable.query_map([stamp], |row| {
        let fired = Fired {
            count: row.get(1)?,
            max: number(row.get(2)?).map(|max| max as i64),
        };
        Ok((row.get(0)?, fired))
    })?;
    rows.collect()
}

/// Queues an event for each alert the claim changed, and for no other
/// (invariant 2): one that someone else claimed, or that was disabled,
/// re-armed or edited since it was read, gets no event from us. In alert id
/// order, as on PostgreSQL: the order a user's events of one tick are
/// queued, and delivered, in. With a lease and its time, the rows it takes
/// go in leased, and come back (`Leased`, in queue order).
fn enqueue_claimed(
    transaction: &rusqlite::Transaction<'_>,
    installation: &str,
    (triggers, changed): (&[Trigger], &HashMap<i64, Fired>),
    (stamp, now_ms): (&str, i64),
    lease: Option<(&ClaimLease, i64)>,
) -> rusqlite::Result<Vec<Leased>> {
    let mut claimed_triggers: Vec<(&Trigger, Fired)> = triggers
        .iter()
        .filter_map(|trigger| Some((trigger, *changed.get(&trigger.alert_id)?)))
        .collect();
    claimed_triggers.sort_unstable_by_key(|(trigger, _)| trigger.alert_id);
    let takes = lease.map_or_else(Vec::new, |(lease, _)| {
        lease.takes(
            claimed_triggers
                .iter()
                .map(|(trigger, _)| trigger.user_id.as_deref()),
        )
    });
    let mut enqueue = transaction.prepare_cached(
        "INSERT INTO outbox (event_id, alert_id, body, created_at, next_attempt_at, user_id,
                             lease_owner, lease_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut leased = Vec::new();
    for (at, (trigger, fired)) in claimed_triggers.into_iter().enumerate() {
        let event = event_of(installation, trigger, fired, stamp);
        let body = event.to_json();
        let lease_to = lease
            .filter(|_| takes.get(at).copied().unwrap_or(false))
            .map(|(lease, lease_ms)| (lease.owner.as_str(), lease.want.lease_until(lease_ms)));
        let row_id = enqueue.insert(params![
            event.id,
            trigger.alert_id,
            body,
            stamp,
            now_ms,
            trigger.user_id,
            lease_to.map(|(owner, _)| owner),
            lease_to.map(|(_, until)| until),
        ])?;
        if let Some((_, lease_until)) = lease_to {
            leased.push(Leased {
                row_id,
                event_id: event.id,
                body,
                attempts: 0,
                user_id: trigger.user_id.clone(),
                lease_until,
                created_at: crate::time::parse_time(stamp),
                channel_seq: None,
                prev_id: None,
            });
        }
    }
    Ok(leased)
}

/// The WHERE clause of `query`'s filter, with `?1` ticker, `?2` user, `?3`
/// id and `?4` the id to stay below.
fn list_clause(query: &AlertQuery<'_>) -> String {
    let state = match query.filter {
        AlertFilter::All => "1",
        AlertFilter::Enabled => "enabled = 1",
        AlertFilter::Triggered => "enabled = 0 AND triggered_at IS NOT NULL",
        AlertFilter::Disabled => "enabled = 0",
    };
    format!(
        "{state} AND (?1 IS NULL OR ticker = ?1) AND (?2 IS NULL OR user_id = ?2) \
         AND (?3 IS NULL OR id = ?3) AND (?4 IS NULL OR id < ?4)"
    )
}

/// Up to `query.limit` alerts of `query`, newest first.
pub fn list(connection: &Connection, query: &AlertQuery<'_>) -> rusqlite::Result<Vec<AlertEntry>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT id, ticker, condition, target_price, reference_price, enabled, triggered_at, triggered_price,
                expires_at, expired_at, user_id, note, cooldown, rearm_at,
                snoozed_until, trigger_count, max_triggers, upper_price, rearm_band, return_below, return_above,
                change_seq
         FROM price_alerts WHERE {} ORDER BY id DESC LIMIT ?5 + 0",
        list_clause(query)
    ))?;
    let rows = statement.query_map(
        params![
            query.ticker,
            query.user,
            query.id,
            query.before,
            query.limit as i64
        ],
        |row| {
            let optional_text = |value: Option<Value>| value.map(text);
            Ok(AlertEntry {
                id: row.get(0)?,
                ticker: text(row.get(1)?),
                condition: text(row.get(2)?),
                target_price: number(row.get(3)?),
                reference_price: number(row.get(4)?),
                upper_price: number(row.get(17)?),
                enabled: row.get::<_, i64>(5)? != 0,
                triggered_at: optional_text(row.get(6)?),
                triggered_price: number(row.get(7)?),
                expires_at: optional_text(row.get(8)?),
                expired_at: optional_text(row.get(9)?),
                user_id: optional_text(row.get(10)?),
                note: optional_text(row.get(11)?),
                cooldown: optional_text(row.get(12)?),
                rearm_at: row
                    .get::<_, Option<i64>>(13)?
                    .map(crate::store::millis_to_text),
                snoozed_until: optional_text(row.get(14)?),
                trigger_count: number(row.get(15)?).unwrap_or_default() as i64,
                max_triggers: optional_text(row.get(16)?),
                rearm_band: optional_text(row.get(18)?),
                return_below: number(row.get(19)?),
                return_above: number(row.get(20)?),
                change_seq: row.get(21)?,
            })
        },
    )?;
    rows.collect()
}

/// How many alerts `query` holds.
pub fn count(connection: &Connection, query: &AlertQuery<'_>) -> rusqlite::Result<u64> {
    let count: i64 = connection
        .prepare_cached(&format!(
            "SELECT count(*) FROM price_alerts WHERE {}",
            list_clause(query)
        ))?
        .query_row(
            params![query.ticker, query.user, query.id, query.before],
            |row| row.get(0),
        )?;
    Ok(count.max(0) as u64)
}
