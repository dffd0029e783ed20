//! Alerts: reading what the application wrote, expiry and re-arming, and the
//! claim that disables a triggered alert and queues its event in one
//! transaction. (Quotes, observations and watermarks have rooms of their
//! own.)

use chrono::{DateTime, Utc};

use std::collections::HashSet;

use super::observations::Observation;
use super::outbox::{ClaimLease, Exchanged};
use super::shared::{PerEngine, Row as _, Statements};
use super::{Connection, Result};
use crate::alert::Written;
use crate::condition::Condition;
use crate::time::QuoteTime;

/// An enabled alert as stored. Numbers the application wrote as something other
/// than a number come back as `None`, which `alert` reports as malformed.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub id: i64,
    pub arming: i64,
    pub ticker: String,
    pub condition: String,
    pub target_price: Option<f64>,
    pub reference_price: Option<f64>,
    /// A channel's upper level (`target_price` is its lower one).
    pub upper_price: Option<f64>,
    /// How far (a percent) a repeating alert's price must come back past
    /// its level before it is re-armed, as the application wrote it;
    /// `alert` parses it.
    pub rearm_band: Option<String>,
    /// As the application wrote it; `alert` parses it.
    pub expires_at: Option<String>,
    pub user_id: Option<String>,
    pub note: Option<String>,
    /// As the application wrote it (`"15m"`); `alert` parses it.
    pub cooldown: Option<String>,
    /// Not to fire before then (RFC 3339, as the application or `alerts
    /// snooze` wrote it); `alert` parses it.
    pub snoozed_until: Option<String>,
    /// How many triggers a repeating alert has, as the application wrote
    /// it (a whole number of at least 1); `alert` parses it.
    pub max_triggers: Option<String>,
}

impl AlertRow {
    /// Its columns as written, for [`Alert::parse`](crate::alert::Alert::parse).
    pub fn written(&self) -> Written<'_> {
        Written {
            condition: &self.condition,
            target_price: self.target_price,
            reference_price: self.reference_price,
            upper_price: self.upper_price,
            cooldown: self.cooldown.as_deref(),
            rearm_band: self.rearm_band.as_deref(),
            max_triggers: self.max_triggers.as_deref(),
            snoozed_until: self.snoozed_until.as_deref(),
            expires_at: self.expires_at.as_deref(),
        }
    }
}

/// An alert the evaluator found triggered, to be claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub alert_id: i64,
    /// The arming that was evaluated: the claim only takes that one.
    pub arming: i64,
    /// The row as it was judged; the claim only takes it unchanged, and the
    /// event carries these values.
    pub ticker: String,
    pub condition: Condition,
    pub target_price: f64,
    pub reference_price: Option<f64>,
    pub upper_price: Option<f64>,
    pub user_id: Option<String>,
    pub note: Option<String>,
    pub price: f64,
    /// Its quote's time, as written and as parsed.
    pub quote_time: QuoteTime,
    /// An alert that repeats: when, claimed, it is due to be re-armed (unix
    /// ms): the tick's time plus its cooldown.
    pub rearm_at: Option<i64>,
    /// Its re-arm band as judged (a percent), and, for one that repeats,
    /// where its price must come back to before it is re-armed: at or below
    /// `return_below`, at or above `return_above` (see
    /// `Alert::return_levels`).
    pub rearm_band: Option<f64>,
    pub return_below: Option<f64>,
    pub return_above: Option<f64>,
}

/// What one claim did.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The alerts claimed: one queued event each.
    pub ids: HashSet<i64>,
    /// Alerts of the batch whose row another transaction holds locked (the
    /// application's, another daemon's): neither claimed nor waited for.
    /// The caller judges them again once the lock is gone. (SQLite has no
    /// row locks: never any there.)
    pub locked: Vec<i64>,
    /// The events the claim leased to this process's deliverer
    /// ([`ClaimLease`]), in queue order, and the lease's time.
    pub leased: Exchanged,
    /// The claim recorded the observed prices offered to it
    /// ([`claim_observing`]) in its transaction.
    pub observed: bool,
}

/// Which trigger of its alert a claim was, as the claim's statement
/// returned it: its `trigger_count` after the claim, of `max_triggers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fired {
    pub(super) count: i64,
    pub(super) max: Option<i64>,
}

/// An alert as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertEntry {
    pub id: i64,
    pub ticker: String,
    pub condition: String,
    pub target_price: Option<f64>,
    pub reference_price: Option<f64>,
    /// A channel's upper level.
    pub upper_price: Option<f64>,
    pub enabled: bool,
    pub triggered_at: Option<String>,
    pub triggered_price: Option<f64>,
    pub expires_at: Option<String>,
    pub expired_at: Option<String>,
    pub user_id: Option<String>,
    pub note: Option<String>,
    pub cooldown: Option<String>,
    /// When a repeating alert that triggered is re-armed (RFC 3339).
    pub rearm_at: Option<String>,
    /// Not to fire before then, as written.
    pub snoozed_until: Option<String>,
    /// How many times the claim fired it (since its last `alerts rearm`).
    pub trigger_count: i64,
    /// Its trigger budget, as written.
    pub max_triggers: Option<String>,
    /// Its re-arm band (a percent), as written.
    pub rearm_band: Option<String>,
    /// Where its price must come back to before it is re-armed, while it
    /// waits for that (see `Alert::return_levels`).
    pub return_below: Option<f64>,
    pub return_above: Option<f64>,
    /// The change that last armed or changed it (the jobs' watermarks
    /// count changes).
    #[serde(skip)]
    pub change_seq: Option<i64>,
}

impl AlertEntry {
    /// Its columns as written, for [`Alert::parse`](crate::alert::Alert::parse).
    pub fn written(&self) -> Written<'_> {
        Written {
            condition: &self.condition,
            target_price: self.target_price,
            reference_price: self.reference_price,
            upper_price: self.upper_price,
            cooldown: self.cooldown.as_deref(),
            rearm_band: self.rearm_band.as_deref(),
            max_triggers: self.max_triggers.as_deref(),
            snoozed_until: self.snoozed_until.as_deref(),
            expires_at: self.expires_at.as_deref(),
        }
    }
}

/// Which alerts `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFilter {
    All,
    Enabled,
    /// Disabled by a trigger.
    Triggered,
    /// Disabled.
    Disabled,
}

/// The alerts `list` reads: newest first, those of `filter`, and of `id`,
/// `ticker` and `user` where given, below the id `before` (the next page),
/// at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct AlertQuery<'a> {
    pub filter: AlertFilter,
    pub id: Option<i64>,
    pub ticker: Option<&'a str>,
    pub user: Option<&'a str>,
    pub before: Option<i64>,
    pub limit: usize,
}

impl AlertQuery<'_> {
    /// Every alert, newest first.
    pub fn all(limit: usize) -> AlertQuery<'static> {
        AlertQuery {
            filter: AlertFilter::All,
            id: None,
            ticker: None,
            user: None,
            before: None,
            limit,
        }
    }
}

/// A new alert, as the application would insert it.
pub struct NewAlert<'a> {
    pub ticker: &'a str,
    pub condition: &'a str,
    pub target_price: f64,
    pub reference_price: Option<f64>,
    pub upper_price: Option<f64>,
    pub note: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub expires_at: Option<&'a str>,
    pub cooldown: Option<&'a str>,
    pub max_triggers: Option<i64>,
    pub rearm_band: Option<f64>,
}

/// The enabled alerts of one ticker, through `idx_price_alerts_enabled`.
#[cfg(any(test, feature = "test-support"))]
pub fn enabled_for_ticker(connection: &mut Connection, ticker: &str) -> Result<Vec<AlertRow>> {
    connection.engine().enabled_for_ticker(ticker)
}

/// Up to `limit` enabled alerts whose ticker is NULL, empty or blank, to
/// name in warnings.
pub fn enabled_without_ticker(connection: &mut Connection, limit: u64) -> Result<Vec<AlertRow>> {
    connection.engine().enabled_without_ticker(limit)
}

/// The tickers a tick as of `now` may judge, for a quote source to
/// fetch: those with enabled alerts, those with a repeating alert whose
/// cooldown has passed by then (the tick re-arms it first), and those with
/// a banded alert waiting for its price to come back. Each once, in order.
pub fn tickers_to_fetch(connection: &mut Connection, now: DateTime<Utc>) -> Result<Vec<String>> {
    let now_ms = now.timestamp_millis();
    let mut tickers = connection.engine().enabled_tickers()?;
    tickers.extend(connection.engine().rearm_due_tickers(now_ms)?);
    tickers.extend(waiting_tickers(connection)?);
    tickers.sort_unstable();
    tickers.dedup();
    Ok(tickers)
}

/// Disables, without an event, every enabled alert whose `expires_at` is at
/// or before `now`, stamping `expired_at`. Returns how many.
pub fn expire_due(connection: &mut Connection, now: DateTime<Utc>) -> Result<usize> {
    let now = super::timestamp(now);
    connection.engine().expire_due(&now)
}

/// When the next expiry or wake comes due (unix ms), if any is to come.
pub fn next_due(connection: &mut Connection) -> Result<Option<i64>> {
    connection.engine().next_alert_due()
}

/// What tells a tick whether anything came due since it read [`next_due`],
/// with the database's clock as it read them (see [`DueSigns`]).
pub fn due_signs(connection: &mut Connection) -> Result<DueSigns> {
    connection.engine().due_signs()
}

/// [`due_signs`]' answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueSigns {
    /// Now by the database's clock (unix ms): a tick's time, read in the
    /// same statement (on PostgreSQL, one round trip for both).
    pub now_ms: i64,
    /// The last change number an alert took (inserted, edited, re-armed, by
    /// anyone: an expiry or a snooze is set only so), and the earliest end
    /// of a cooldown (set by claims, here or elsewhere, or by hand), in
    /// unix ms.
    pub signs: (i64, Option<i64>),
}

/// [`due_signs`]' statement, on both engines: the clock, and two index
/// probes (`price_alerts_changed`, `price_alerts_rearm`).
pub(super) static DUE_SIGNS: PerEngine = PerEngine::new(
    "SELECT {now_ms}, (SELECT coalesce(max(change_seq), 0) FROM price_alerts),
        (SELECT min(rearm_at) FROM price_alerts
         WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL)",
);

/// Re-arms every repeating alert whose cooldown has passed (`rearm_at` at
/// or before `now`): enabled again, so the schema's trigger gives it a new
/// arming (its next event has a new id) and a change number (the next tick
/// reads it). One that expired meanwhile, whose cooldown was cleared, or
/// that someone re-armed already, only loses its `rearm_at` (an expired one
/// gets `expired_at`). One transaction; returns how many were re-armed.
pub fn rearm_cooled_down(connection: &mut Connection, now: DateTime<Utc>) -> Result<usize> {
    let (text, now_ms) = (super::timestamp(now), now.timestamp_millis());
    connection.engine().rearm_cooled_down(&text, now_ms)
}

/// What [`come_back`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Returned {
    /// Banded alerts whose price came back: they no longer wait for it.
    pub came_back: u64,
    /// Of those, the ones re-armed at once (their cooldown had passed too).
    pub rearmed: u64,
    /// Tickers of banded alerts whose price came back but whose row
    /// another transaction held locked (PostgreSQL): the caller holds the
    /// ticker back, so that its next tick sees the price again.
    pub held: HashSet<String>,
}

/// For each ticker of `prices` (those with alerts waiting, at the price a
/// tick evaluated): the banded repeating alerts waiting for that ticker's
/// price to come back (their `return_below`, `return_above`: see
/// `Alert::return_levels`) whose price did no longer wait; those whose
/// cooldown has passed too (and that still repeat and have not expired)
/// are re-armed at once, a new arming and a change the next window reads.
/// The others are re-armed by [`rearm_cooled_down`] when their cooldown
/// passes. Through the two indexes of the waiting; one transaction, none
/// for no tickers.
pub fn come_back(
    connection: &mut Connection,
    prices: &[(&str, f64)],
    now: DateTime<Utc>,
) -> Result<Returned> {
    let (text, now_ms) = (super::timestamp(now), now.timestamp_millis());
    connection.engine().come_back(prices, &text, now_ms)
}

/// The tickers with banded alerts waiting for their price to come back,
/// through the two indexes of the waiting.
pub fn waiting_tickers(connection: &mut Connection) -> Result<HashSet<String>> {
    connection.engine().waiting_tickers()
}

/// Wakes every enabled alert whose `snoozed_until` has come by `now`:
/// clears it, an edit, so that the next window reads the alert and judges
/// it at the price of then. Through the partial index of the snoozed;
/// rows someone else holds locked stay snoozed until a later tick. Returns
/// how many.
pub fn wake_snoozed(connection: &mut Connection, now: DateTime<Utc>) -> Result<usize> {
    let now = super::timestamp(now);
    connection.engine().wake_snoozed(&now)
}

/// Snoozes an alert until `until` (RFC 3339), or wakes it (`None`): it
/// keeps its arming. Returns false if there is no such alert, or it is
/// neither armed nor waiting to be re-armed.
pub fn snooze(connection: &mut Connection, id: i64, until: Option<&str>) -> Result<bool> {
    connection.engine().snooze(id, until)
}

/// Sets or clears an alert's cooldown. Returns false if there is no such alert.
pub fn set_cooldown(connection: &mut Connection, id: i64, cooldown: Option<&str>) -> Result<bool> {
    connection.engine().set_cooldown(id, cooldown)
}

/// Re-arms a disabled alert: enabled again, its trigger and expiry stamps
/// cleared, its trigger budget whole again (`trigger_count` 0); the
/// schema's trigger gives it a new arming (a new event id). Returns false if
/// there is no such alert or it is already armed.
pub fn rearm(connection: &mut Connection, id: i64) -> Result<bool> {
    connection.engine().rearm(id)
}

/// Claims `triggers` in one write transaction: each alert is disabled only
/// if it is still enabled, in the arming and with the condition and levels
/// that were evaluated (invariant 1), and an outbox row is inserted for
/// exactly the rows the claim's statement changed (invariant 2). A row that
/// someone else holds locked is passed over, not waited for, and returned
/// as such. Returns which alerts this call claimed, and which were locked.
/// `now` is the tick's time, which the claimed alerts and their events are
/// stamped with.
pub fn claim(
    connection: &mut Connection,
    triggers: &[Trigger],
    now: DateTime<Utc>,
) -> Result<Claimed> {
    claim_and_lease(connection, triggers, now, None)
}

/// A [`claim`] that also leases its events to this process's deliverer,
/// as `lease` asks, in its transaction: where the claim goes in several
/// transactions (SQLite, a disk nearly full), the rows leased by those
/// that committed before one failed wait out their lease.
pub fn claim_and_lease(
    connection: &mut Connection,
    triggers: &[Trigger],
    now: DateTime<Utc>,
    lease: Option<&ClaimLease>,
) -> Result<Claimed> {
    claim_observing(connection, triggers, now, lease, &[])
}

/// [`claim_and_lease`], offered the observed prices of the tick's tickers
/// whose alerts it claimed (and of this batch's): an engine that writes
/// them cheaper in the claim's transaction than in one of their own
/// (SQLite) records them there, with its last commit, and says so
/// (`Claimed::observed`); PostgreSQL writes them at the page's end, one
/// statement, as before. The caller offers them only where every claim of
/// the page before this one committed and nothing held its tickers back:
/// a price recorded earlier would let the next tick judge an unclaimed
/// trigger from it.
pub fn claim_observing(
    connection: &mut Connection,
    triggers: &[Trigger],
    now: DateTime<Utc>,
    lease: Option<&ClaimLease>,
    observed: &[Observation],
) -> Result<Claimed> {
    connection
        .engine()
        .claim(triggers, now, now.timestamp_millis(), lease, observed)
}

/// The store's upkeep after a [`claim`], which the caller runs once it has
/// handed the claimed events on: the first events of a burst are not held
/// by it.
pub fn after_claim(connection: &mut Connection) {
    connection.engine().after_write();
}

/// Up to `limit` alerts, newest first.
pub fn list(connection: &mut Connection, query: &AlertQuery<'_>) -> Result<Vec<AlertEntry>> {
    connection.engine().list_alerts(query)
}

/// One alert, whatever its state.
pub fn get(connection: &mut Connection, id: i64) -> Result<Option<AlertEntry>> {
    let query = AlertQuery {
        id: Some(id),
        ..AlertQuery::all(1)
    };
    Ok(list(connection, &query)?.into_iter().next())
}

/// The alerts after those `list` read for `query` (below `below`, the last
/// id it gave), counted.
pub fn count_below(connection: &mut Connection, query: &AlertQuery<'_>, below: i64) -> Result<u64> {
    connection.engine().count_alerts(&AlertQuery {
        before: Some(below),
        ..*query
    })
}

/// Inserts an alert; returns its id.
pub fn add(connection: &mut Connection, alert: &NewAlert<'_>, created_at: &str) -> Result<i64> {
    connection.engine().add_alert(alert, created_at)
}

/// Disables an armed alert without an event, or stops a repeating one that
/// waits out its cooldown from being re-armed. Returns false if there is no
/// such alert or it is neither.
pub fn disable(connection: &mut Connection, id: i64) -> Result<bool> {
    connection.engine().disable(id)
}

// The operators' statements, the same on both engines (`enabled` is set to
// each engine's own `{true}` and `{false}`: see `shared::PerEngine`).
pub(super) const SET_COOLDOWN: &str = "UPDATE price_alerts SET cooldown = $1 WHERE id = $2";
pub(super) static REARM: PerEngine = PerEngine::new(
    "UPDATE price_alerts
     SET enabled = {true}, triggered_at = NULL, triggered_price = NULL, expired_at = NULL, rearm_at = NULL,
         trigger_count = 0, return_below = NULL, return_above = NULL
     WHERE id = $1 AND enabled = {false}",
);
pub(super) static SNOOZE: PerEngine = PerEngine::new(
    "UPDATE price_alerts SET snoozed_until = $1
     WHERE id = $2 AND (enabled = {true} OR rearm_at IS NOT NULL)",
);
pub(super) static DISABLE: PerEngine = PerEngine::new(
    "UPDATE price_alerts SET enabled = {false}, rearm_at = NULL, return_below = NULL, return_above = NULL
     WHERE id = $1 AND (enabled = {true} OR rearm_at IS NOT NULL)",
);
pub(super) const ADD: &str = "INSERT INTO price_alerts
         (ticker, condition, target_price, reference_price, created_at, user_id, note, expires_at, cooldown,
          max_triggers, upper_price, rearm_band)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id";

pub(super) fn set_cooldown_on<C: Statements>(
    connection: &mut C,
    id: i64,
    cooldown: Option<&str>,
) -> std::result::Result<bool, C::Error> {
    Ok(connection.execute(SET_COOLDOWN, &[&cooldown, &id])? > 0)
}

pub(super) fn snooze_on<C: Statements>(
    connection: &mut C,
    id: i64,
    until: Option<&str>,
) -> std::result::Result<bool, C::Error> {
    Ok(connection.execute(C::per_engine(&SNOOZE), &[&until, &id])? > 0)
}

pub(super) fn rearm_on<C: Statements>(
    connection: &mut C,
    id: i64,
) -> std::result::Result<bool, C::Error> {
    Ok(connection.execute(C::per_engine(&REARM), &[&id])? > 0)
}

pub(super) fn disable_on<C: Statements>(
    connection: &mut C,
    id: i64,
) -> std::result::Result<bool, C::Error> {
    Ok(connection.execute(C::per_engine(&DISABLE), &[&id])? > 0)
}

pub(super) fn add_on<C: Statements>(
    connection: &mut C,
    alert: &NewAlert<'_>,
    created_at: &str,
) -> std::result::Result<i64, C::Error> {
    let id = connection.query_first(
        ADD,
        &[
            &alert.ticker,
            &alert.condition,
            &alert.target_price,
            &alert.reference_price,
            &created_at,
            &alert.user_id,
            &alert.note,
            &alert.expires_at,
            &alert.cooldown,
            &alert.max_triggers,
            &alert.upper_price,
            &alert.rearm_band,
        ],
        |row| row.get::<i64>(0),
    )?;
    Ok(id.expect("INSERT ... RETURNING returns the row it inserted"))
}

/// The event of a claimed trigger.
pub(super) fn event_of(
    installation: &str,
    trigger: &Trigger,
    fired: Fired,
    stamp: &str,
) -> crate::event::Event {
    crate::event::Event::price_alert(
        installation,
        trigger.alert_id,
        trigger.arming,
        stamp,
        crate::event::EventData {
            alert_id: trigger.alert_id,
            ticker: trigger.ticker.clone(),
            condition: trigger.condition.name().to_owned(),
            target_price: trigger.target_price,
            upper_price: trigger.upper_price,
            price: trigger.price,
            quote_time: trigger.quote_time.written.clone(),
            triggered_at: stamp.to_owned(),
            user_id: trigger.user_id.clone(),
            note: trigger.note.clone(),
            trigger_count: fired.count,
            max_triggers: fired.max,
            rearm_band: trigger.rearm_band,
        },
    )
}
