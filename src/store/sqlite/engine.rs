//! SQLite's side of the store's contract (`store::engine::Engine`): each
//! operation is the function of this engine's module that does it.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::store::Result;
use crate::store::alerts::{
    AlertEntry, AlertQuery, AlertRow, Claimed, DueSigns, Returned, Trigger,
};
use crate::store::changes::{Ask, ChangedTicker, Horizon, Move, Nearest, Reading, TickerState};
use crate::store::engine::Engine;
use crate::store::observations::Observation;
use crate::store::outbox::{ClaimLease, Exchanged, OutboxQuery, Settled, Want};
use crate::store::quotes::{NewQuote, QuoteRow};
use crate::store::schema::{Audit, Repaired};
use crate::store::shared::Statements;

use super::{alerts, changes, observations, outbox, quotes, schema};

impl Engine for Connection {
    fn installation_id(&mut self) -> Result<String> {
        Ok(super::installation_id(self)?)
    }

    /// One statement without parameters, such as a read transaction's
    /// `BEGIN` and `COMMIT`: prepared once, as every statement of a tick.
    fn execute_unprepared(&mut self, sql: &str) -> Result<()> {
        self.prepare_cached(sql)?.raw_execute()?;
        Ok(())
    }

    fn begin_read(&self) -> &'static str {
        "BEGIN DEFERRED"
    }

    fn checkpoint(&mut self) -> Result<()> {
        Ok(super::checkpoint(self)?)
    }

    fn checkpoint_at_rest(&mut self) -> Result<()> {
        Ok(super::wal::at_rest(self)?)
    }

    fn quotes(&mut self) -> Result<Vec<QuoteRow>> {
        Ok(quotes::list(self)?)
    }

    fn quote(&mut self, ticker: &str) -> Result<Option<QuoteRow>> {
        Ok(quotes::get(self, ticker)?)
    }

    fn alerted_quotes(&mut self) -> Result<Vec<(String, Option<String>)>> {
        Ok(quotes::alerted(self)?)
    }

    fn upsert_quotes(&mut self, new: &[NewQuote]) -> Result<()> {
        Ok(quotes::upsert(self, new)?)
    }

    fn horizon(&mut self) -> Result<Horizon> {
        Ok(changes::horizon(self)?)
    }

    fn changed_alert_count(&mut self, since: i64, until: i64) -> Result<u64> {
        Ok(changes::changed_alert_count(self, since, until)?)
    }

    fn changed_tickers(
        &mut self,
        since: i64,
        until: i64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChangedTicker>> {
        Ok(changes::changed_tickers(self, since, until, after, limit)?)
    }

    fn first_changed_quotes(&mut self, since: i64, until: i64, limit: i64) -> Result<Vec<String>> {
        Ok(changes::first_changed_quotes(self, since, until, limit)?)
    }

    fn prune_change_log(&mut self, cutoff: &str) -> Result<u64> {
        Ok(changes::prune_change_log(self, cutoff)?)
    }

    fn each_changed_alert(
        &mut self,
        since: i64,
        until: i64,
        reading: &mut dyn Reading,
    ) -> Result<()> {
        Ok(changes::each_changed_alert(self, since, until, reading)?)
    }

    fn each_changed_alert_of(
        &mut self,
        tickers: &[&str],
        since: i64,
        until: i64,
        reading: &mut dyn Reading,
    ) -> Result<()> {
        Ok(changes::each_changed_alert_of(
            self, tickers, since, until, reading,
        )?)
    }

    fn ticker_states(&mut self, tickers: &[(&str, Ask)]) -> Result<Vec<TickerState>> {
        Ok(changes::ticker_states(self, tickers)?)
    }

    fn each_reachable_alert_of(
        &mut self,
        moves: &[(&str, Move)],
        seen: i64,
        reading: &mut dyn Reading,
    ) -> Result<()> {
        Ok(changes::each_reachable_alert_of(
            self, moves, seen, reading,
        )?)
    }

    fn nearest_levels(&mut self, prices: &[(&str, f64)]) -> Result<Vec<Nearest>> {
        Ok(changes::nearest_levels(self, prices)?)
    }

    fn finish_tick(
        &mut self,
        observed: &[Observation],
        watermark: Option<&crate::store::watermarks::Advance<'_>>,
        now: &str,
    ) -> Result<()> {
        Ok(observations::finish_tick(self, observed, watermark, now)?)
    }

    fn enabled_without_ticker(&mut self, limit: u64) -> Result<Vec<AlertRow>> {
        Ok(alerts::enabled_without_ticker(self, limit)?)
    }

    fn enabled_tickers(&mut self) -> Result<Vec<String>> {
        Ok(alerts::enabled_tickers(self)?)
    }

    fn rearm_due_tickers(&mut self, now_ms: i64) -> Result<Vec<String>> {
        Ok(alerts::rearm_due_tickers(self, now_ms)?)
    }

    fn waiting_tickers(&mut self) -> Result<HashSet<String>> {
        Ok(alerts::waiting_tickers(self)?)
    }

    fn expire_due(&mut self, now: &str) -> Result<usize> {
        Ok(alerts::expire_due(self, now)?)
    }

    fn next_alert_due(&mut self) -> Result<Option<i64>> {
        Ok(alerts::next_due(self)?)
    }

    fn due_signs(&mut self) -> Result<DueSigns> {
        let sql = <Connection as Statements>::per_engine(&crate::store::alerts::DUE_SIGNS);
        Ok(self.prepare_cached(sql)?.query_row([], |row| {
            Ok(DueSigns {
                now_ms: row.get(0)?,
                signs: (row.get(1)?, row.get(2)?),
            })
        })?)
    }

    fn rearm_cooled_down(&mut self, now: &str, now_ms: i64) -> Result<usize> {
        Ok(alerts::rearm_cooled_down(self, now, now_ms)?)
    }

    fn come_back(&mut self, prices: &[(&str, f64)], now: &str, now_ms: i64) -> Result<Returned> {
        Ok(alerts::come_back(self, prices, now, now_ms)?)
    }

    fn wake_snoozed(&mut self, now: &str) -> Result<usize> {
        Ok(alerts::wake_snoozed(self, now)?)
    }

    fn claim(
        &mut self,
        triggers: &[Trigger],
        triggered_at: DateTime<Utc>,
        now_ms: i64,
        lease: Option<&ClaimLease>,
        observed: &[Observation],
    ) -> Result<Claimed> {
        Ok(alerts::claim(
            self,
            triggers,
            triggered_at,
            now_ms,
            lease,
            observed,
        )?)
    }

    fn after_write(&mut self) {
        super::wal::after_write(self);
    }

    fn list_alerts(&mut self, query: &AlertQuery<'_>) -> Result<Vec<AlertEntry>> {
        Ok(alerts::list(self, query)?)
    }

    fn count_alerts(&mut self, query: &AlertQuery<'_>) -> Result<u64> {
        Ok(alerts::count(self, query)?)
    }

    #[cfg(any(test, feature = "test-support"))]
    fn enabled_for_ticker(&mut self, ticker: &str) -> Result<Vec<AlertRow>> {
        Ok(alerts::enabled_for_ticker(self, ticker)?)
    }

    fn exchange(
        &mut self,
        owner: &str,
        settled: &[Settled],
        want: Option<Want>,
    ) -> Result<Exchanged> {
        Ok(outbox::exchange(self, owner, settled, want)?)
    }

    fn next_due(&mut self) -> Result<(i64, Option<i64>)> {
        let now_ms = crate::store::clock::now_ms_on(self)?;
        Ok((now_ms, outbox::next_due(self)?))
    }

    fn replay_matching(&mut self, query: &OutboxQuery<'_>, now_ms: i64) -> Result<usize> {
        Ok(crate::store::outbox::replay_matching_on(
            self, query, now_ms,
        )?)
    }

    fn replay(&mut self, event_ids: &[String], now_ms: i64) -> Result<Vec<String>> {
        Ok(outbox::replay(self, event_ids, now_ms)?)
    }

    fn audit(&mut self) -> Result<Audit> {
        Ok(schema::audit(self)?)
    }

    fn repair(&mut self) -> Result<Repaired> {
        Ok(schema::repair(self)?)
    }
}
