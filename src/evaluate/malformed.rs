//! Malformed alert rows: named in a warning up to a cap per tick, counted
//! beyond it.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;

use crate::logging;
use crate::store;
use crate::store::alerts::{self, AlertRow};

/// At most this many malformed-row warnings per tick; the rest are counted.
pub(super) const WARNINGS_PER_TICK: u64 = 20;

/// Names, up to the warning cap, the enabled alerts whose ticker is empty or
/// NULL: they were counted as malformed by [`plan`].
pub(super) fn name_blank_ticker_alerts(
    writer: &mut store::Connection,
    warnings: &AtomicU64,
) -> anyhow::Result<()> {
    for alert in alerts::enabled_without_ticker(writer, WARNINGS_PER_TICK)
        .context("reading alerts without a ticker")?
    {
        warn_malformed(warnings, &alert, "the ticker is empty");
    }
    Ok(())
}

pub(super) fn warn_malformed(warnings: &AtomicU64, alert: &AlertRow, reason: &str) {
    if warnings.fetch_add(1, Ordering::Relaxed) < WARNINGS_PER_TICK {
        tracing::warn!(alert_id = alert.id, ticker = %logging::bounded(&alert.ticker), reason, "skipping a malformed alert");
    }
}
