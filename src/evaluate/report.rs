//! What a tick did, and a tick that failed part-way.

use std::time::Duration;

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Tickers in scope whose quote was written since the job's last tick.
    pub tickers_changed: u64,
    /// Enabled alerts read and judged: those the moved tickers' prices can
    /// reach, and those inserted, re-armed or edited since the last tick.
    pub evaluated: u64,
    /// Alerts judged triggered.
    pub matched: u64,
    /// Alerts this tick claimed: one queued event each.
    pub triggered: u64,
    /// Alerts disabled, without an event, because their `expires_at` passed.
    pub expired: u64,
    /// Repeating alerts re-armed because their cooldown passed.
    pub rearmed: u64,
    /// Changed alerts whose ticker has no quote.
    pub no_quote: u64,
    /// Changed tickers whose quote is older than `prices.max_age`, and the
    /// changed alerts of those tickers.
    pub stale_quotes: u64,
    pub stale_alerts: u64,
    /// Changed alerts whose ticker's quote was not fetched for this tick
    /// (the fetch failed, or the alert came after it was planned).
    pub unavailable: u64,
    /// Triggered alerts whose row another transaction held locked: neither
    /// claimed nor waited for; judged again by the first tick after the
    /// lock is gone.
    pub locked: u64,
    /// Triggered alerts whose claim did not commit (the tick failed): judged
    /// again by the next tick.
    pub unclaimed: u64,
    /// Alert rows that cannot be evaluated.
    pub malformed_alerts: u64,
    /// Quotes whose price is not a positive number or whose time is not a time.
    pub malformed_quotes: u64,
    /// Failed quote fetches (the HTTP source).
    pub quote_errors: u64,
    pub claim_transactions: u64,
    /// Time spent in claim transactions (the writer's share of `duration`).
    pub claim_duration: Duration,
    /// Time spent fetching quotes before the tick (part of `duration`).
    pub fetch_duration: Duration,
    pub duration: Duration,
}

impl TickReport {
    /// The counts, by the names the summary line, logs and docs use, in
    /// the summary line's order. (`alerts_read` is `evaluated` again, under
    /// the name that says what it measures; `evaluated` stays for scripts.)
    pub fn counts(&self) -> [(&'static str, u64); 16] {
        [
            ("evaluated", self.evaluated),
            ("tickers_changed", self.tickers_changed),
            ("alerts_read", self.evaluated),
            ("matched", self.matched),
            ("triggered", self.triggered),
            ("locked", self.locked),
            ("unclaimed", self.unclaimed),
            ("expired", self.expired),
            ("rearmed", self.rearmed),
            ("no_quote", self.no_quote),
            ("stale_quotes", self.stale_quotes),
            ("stale_alerts", self.stale_alerts),
            ("unavailable", self.unavailable),
            ("malformed_alerts", self.malformed_alerts),
            ("malformed_quotes", self.malformed_quotes),
            ("quote_errors", self.quote_errors),
        ]
    }
}

/// A tick that failed part-way: what it committed before it failed (the
/// alerts it claimed, whose events are queued), what it did not, and why.
/// Its observations and watermark were not recorded: the next tick reads
/// the same changes again.
#[derive(Debug)]
pub struct TickFailed {
    pub report: Box<TickReport>,
    pub error: anyhow::Error,
}

impl std::fmt::Display for TickFailed {
    /// The cause alone, so that a failure that repeats reads the same each
    /// tick; the counts are the report's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for TickFailed {}
