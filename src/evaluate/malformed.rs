//! Malformed alert rows: named in a warning within a budget per minute
//! (the process's, across its ticks), counted beyond it.

use anyhow::Context as _;

use crate::logging;
use crate::recurring::Budget;
use crate::store;
use crate::store::alerts::{self, AlertRow};

/// At most this many malformed-row warnings a minute; the rest are counted,
/// and how many were not logged is said once the minute is over.
pub(super) const WARNINGS_PER_MINUTE: u64 = 20;

/// Where a reader's warnings about malformed rows go.
#[derive(Clone, Copy)]
pub(super) enum Warnings<'a> {
    /// Into the log, within the budget.
    Within(&'a Budget),
    /// Nowhere: the rows are read again by a reader that names them.
    Silent,
}

/// Says, once the budget's minute is over, how many malformed rows were
/// not named in it.
pub(super) fn say_unlogged(budget: &Budget) {
    if let Some(unlogged) = budget.roll(std::time::Instant::now()) {
        tracing::warn!(
            unlogged,
            "more malformed alerts were skipped in the last minute than were logged"
        );
    }
}

/// Names, up to the warning cap, the enabled alerts whose ticker is empty or
/// NULL: they were counted as malformed by [`super::plan`].
pub(super) fn name_blank_ticker_alerts(
    writer: &mut store::Connection,
    warnings: Warnings<'_>,
) -> anyhow::Result<()> {
    for alert in alerts::enabled_without_ticker(writer, WARNINGS_PER_MINUTE)
        .context("reading alerts without a ticker")?
    {
        warn_malformed(warnings, &alert, "the ticker is empty");
    }
    Ok(())
}

pub(super) fn warn_malformed(warnings: Warnings<'_>, alert: &AlertRow, reason: &str) {
    if let Warnings::Within(budget) = warnings
        && budget.take()
    {
        tracing::warn!(alert_id = alert.id, ticker = %logging::bounded(&alert.ticker), reason, "skipping a malformed alert");
    }
}
