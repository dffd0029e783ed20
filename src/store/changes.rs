//! What changed since a job last looked: a change number that the schema's
//! triggers give every quote write (a row of the log `change_log`, with its
//! ticker) and every alert insert, re-arm or edit (stamped in the alert's
//! row);
//! each job's watermark; and the reads a tick makes of them — changed
//! quotes, changed alerts, and a moved ticker's alerts whose level its move
//! can reach (through `price_alerts_level`). The daemon prunes the log
//! ([`prune_change_log`]).

use chrono::{DateTime, Utc};

use super::alerts::AlertRow;
use super::{Connection, Result};

/// A ticker's move for [`each_reachable_alert`]: its price now, and the one
/// the daemon observed before (for the crossings).
#[derive(Debug, Clone, Copy)]
pub struct Move {
    pub price: f64,
    pub previous: Option<f64>,
}

/// How far the changes reach, as a read transaction sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// Every change this transaction sees is numbered up to here.
    pub visible: i64,
    /// No change numbered up to here can still appear: a job's watermark
    /// moves at most this far. On SQLite (one writer at a time) the same as
    /// `visible`; on PostgreSQL, below the oldest transaction still open, so
    /// changes numbered between the two are read now and again next time.
    pub settled: i64,
}

/// The horizon of the changes, read in the caller's transaction.
pub fn horizon(connection: &mut Connection) -> Result<Horizon> {
    super::engine!(connection, changes::horizon())
}

/// Tickers whose quote changed after `since`, up to `until`, from the log
/// `change_log`, each with the number of its first change in the window
/// and its [`TickerState`] (whether it has enabled alerts asked for every
/// one), read in the caller's transaction (one snapshot). Memory follows
/// the tickers, not the changes. When the log was pruned past `since`,
/// every quote, as changed at `since + 1`.
pub fn changed_quote_states(
    connection: &mut Connection,
    since: i64,
    until: i64,
) -> Result<Vec<(String, i64, TickerState)>> {
    let changed = changed_quotes(connection, since, until)?;
    let asked: Vec<(&str, bool)> = changed
        .iter()
        .map(|(ticker, _)| (ticker.as_str(), true))
        .collect();
    let states = ticker_states(connection, &asked)?;
    drop(asked);
    Ok(changed
        .into_iter()
        .zip(states)
        .map(|((ticker, change), state)| (ticker, change, state))
        .collect())
}

/// Each ticker whose quote changed in the window, with its first change
/// there (see [`changed_quote_states`]).
fn changed_quotes(
    connection: &mut Connection,
    since: i64,
    until: i64,
) -> Result<Vec<(String, i64)>> {
    super::engine!(connection, changes::changed_quotes(since, until))
}

/// Up to `limit` tickers whose quote changed after `since`, up to `until`,
/// the first to come in the log (each once), without reading the rest of
/// the window: a large tick's head start (`evaluate::head_start`). Best
/// effort: a log pruned past `since` gives what it still holds.
pub fn first_changed_quotes(
    connection: &mut Connection,
    since: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<String>> {
    super::engine!(
        connection,
        changes::first_changed_quotes(since, until, limit as i64)
    )
}

/// How long a watermark holds the change log after it: a job that
/// has not ticked for longer (or whose name, scope or quote age changed)
/// reads every quote at its next tick, as its first tick did, and its
/// changed alerts as ever. The log holds about this long of the feed's
/// writes (3.6 million rows at 1,000 writes a second).
pub const CHANGE_LOG_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// The oldest watermark written at or after `$1` (a time as
/// `store::timestamp` writes it, which orders as text).
pub(super) const OLDEST_LIVE_WATERMARK: &str =
    "SELECT min(change_seq) FROM job_watermarks WHERE updated_at >= $1";

/// Prunes the change log up to the oldest watermark written in the last
/// [`CHANGE_LOG_KEPT_FOR`] (or to the settled horizon, when
/// none was): the pruned point moves first, then the rows below it go. A
/// tick reading a window that starts below the pruned point reads every
/// quote instead, in the same snapshot as the point, so pruning never
/// hides a change, whatever the policy. Returns the rows deleted.
pub fn prune_change_log(connection: &mut Connection, now: DateTime<Utc>) -> Result<u64> {
    let kept_for = chrono::Duration::from_std(CHANGE_LOG_KEPT_FOR).expect("an hour");
    let cutoff = super::timestamp(now - kept_for);
    super::engine!(connection, changes::prune_change_log(&cutoff))
}

/// Calls `each` with the ticker and change number of every enabled alert
/// changed after `since`, up to `until`, through `price_alerts_changed`,
/// streamed: the caller gathers them per ticker, so memory follows the number
/// of tickers, not of changes. A NULL ticker comes as empty.
pub fn changed_alert_tickers(
    connection: &mut Connection,
    since: i64,
    until: i64,
    each: impl FnMut(&str, i64),
) -> Result<()> {
    super::engine!(
        connection,
        changes::changed_alert_tickers(since, until, each)
    )
}

/// What a read of alerts tells its reader: each row, and each moment no
/// statement of the read is open. That moment is where a reader that must
/// wait (for the claims of what it found) waits: one that waits with a
/// statement open holds SQLite's snapshot, and with it every page written
/// since in the WAL, which no checkpoint can then take back.
pub trait Reading {
    /// A row, with the index of its ticker among the moves asked for (0 in
    /// a read of changed alerts); false to stop reading.
    fn row(&mut self, at: usize, alert: AlertRow) -> bool;

    /// No statement of the read is open (at least once per ticker, and per
    /// few thousand changed alerts); false to stop reading.
    fn at_rest(&mut self) -> bool;
}

/// Tells `reading` every enabled alert changed after `since`, up to
/// `until`, one row at a time, in the order of their changes (through
/// `price_alerts_changed`), until it says stop.
pub fn each_changed_alert(
    connection: &mut Connection,
    since: i64,
    until: i64,
    reading: &mut impl Reading,
) -> Result<()> {
    super::engine!(
        connection,
        changes::each_changed_alert(since, until, reading)
    )
}

/// What a tick needs to know of one changed ticker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickerState {
    /// Its quote: `(price, updated_at)`, the price `None` when it is not a
    /// number.
    pub quote: Option<(Option<f64>, String)>,
    /// The price the daemon last observed for it.
    pub previous: Option<f64>,
    /// Whether it has enabled alerts (asked only where the caller wants to
    /// know; `false` otherwise).
    pub has_alerts: bool,
    /// Whether it has banded alerts waiting for its price to come back
    /// (asked alike): its price is looked at for them, not observed.
    pub waiting: bool,
}

/// The state of each ticker of `tickers` (each with whether to look for
/// enabled alerts), in their order, read in the caller's transaction: a few
/// statements for all of them, not a few per ticker, where statements cost
/// a round trip.
pub fn ticker_states(
    connection: &mut Connection,
    tickers: &[(&str, bool)],
) -> Result<Vec<TickerState>> {
    super::engine!(connection, changes::ticker_states(tickers))
}

/// [`each_reachable_alert`] for several moved tickers, in a few statements:
/// `reading` gets the index in `moves` of each row's ticker.
pub fn each_reachable_alert_of(
    connection: &mut Connection,
    moves: &[(&str, Move)],
    seen: i64,
    reading: &mut impl Reading,
) -> Result<()> {
    super::engine!(
        connection,
        changes::each_reachable_alert_of(moves, seen, reading)
    )
}

/// Calls `each`, one row at a time, with every enabled alert of `ticker` whose
/// level `moved` can reach — every alert `evaluate::judge` could fire at
/// this price, and few more — leaving out alerts changed after `seen` (they
/// are read as changed alerts instead), until `each` returns false. One range
/// of `price_alerts_level` per condition.
pub fn each_reachable_alert(
    connection: &mut Connection,
    ticker: &str,
    moved: Move,
    seen: i64,
    each: impl FnMut(AlertRow) -> bool,
) -> Result<()> {
    super::engine!(
        connection,
        changes::each_reachable_alert(ticker, moved, seen, each)
    )
}
