//! The contract between the store and its engines: every operation the
//! daemon needs from a database, in one place. The store's modules
//! (`alerts`, `changes`, `outbox`, ...) are what the rest of the daemon
//! calls; each hands its work to the connection's engine through these two
//! traits, and nothing else in the store knows which engine it talks to.
//!
//! - [`Engine`] is what each engine writes its own way: the claim, the
//!   reads of a tick, the outbox's exchange, migrations' objects. SQLite's
//!   version is in `sqlite::engine`, PostgreSQL's in `postgresql::engine`.
//! - [`Shared`] is what both run with the same statements: operators'
//!   edits, cluster leases, run records. It is written once, over
//!   [`Statements`], and every engine that runs statements has it.
//!
//! One conformance suite runs the operations on both engines from one body
//! (`tests/suite/conformance.rs`): a new engine passes it first.

use chrono::{DateTime, Utc};
use std::collections::HashSet;

use super::Result;
use super::alerts::{AlertEntry, AlertQuery, AlertRow, Claimed, NewAlert, Returned, Trigger};
use super::changes::{Ask, ChangedTicker, Horizon, Move, Nearest, Reading, TickerState};
use super::channels::{ChannelEvent, Head};
use super::cluster::{Finish, Fire, Me, Member};
use super::observations::Observation;
use super::outbox::{ClaimLease, Exchanged, OutboxEntry, OutboxEvent, OutboxQuery, Settled, Want};
use super::quotes::{NewQuote, QuoteRow};
use super::runs::Run;
use super::schema::{Audit, Repaired};
use super::shared::Statements;

/// What each engine does its own way. Times come as the store keeps them:
/// `now` as an RFC 3339 text (`store::timestamp`) where it is written into
/// a row, `now_ms` in unix milliseconds where it is compared with the
/// daemon's own times.
pub(super) trait Engine: Shared + Send {
    // The connection.

    /// The id this database got at its first migration.
    fn installation_id(&mut self) -> Result<String>;

    /// Runs a statement without parameters (transaction control).
    fn execute_unprepared(&mut self, sql: &str) -> Result<()>;

    /// The statement that begins a read transaction: one snapshot for every
    /// statement in it.
    fn begin_read(&self) -> &'static str;

    /// Tidies up after a burst of writes, never waiting for anyone.
    fn checkpoint(&mut self) -> Result<()>;

    /// Tidies up after a run, when the next may be a burst; waits a tenth of
    /// a second at most.
    fn checkpoint_at_rest(&mut self) -> Result<()> {
        self.checkpoint()
    }

    // Quotes.

    /// All quotes.
    fn quotes(&mut self) -> Result<Vec<QuoteRow>>;

    /// One ticker's quote.
    fn quote(&mut self, ticker: &str) -> Result<Option<QuoteRow>>;

    /// Each ticker with enabled alerts, and its quote's time.
    fn alerted_quotes(&mut self) -> Result<Vec<(String, Option<String>)>>;

    /// Stores fetched quotes in one transaction.
    fn upsert_quotes(&mut self, quotes: &[NewQuote]) -> Result<()>;

    // What a tick reads.

    /// The horizon of the changes, in the caller's transaction.
    fn horizon(&mut self) -> Result<Horizon>;

    /// How many alerts changed in `(since, until]`, enabled or not.
    fn changed_alert_count(&mut self, since: i64, until: i64) -> Result<u64>;

    /// Up to `limit` tickers that changed in `(since, until]`, after
    /// `after`, in ticker order, each with all its changes.
    fn changed_tickers(
        &mut self,
        since: i64,
        until: i64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChangedTicker>>;

    /// The first `limit` tickers whose quotes changed in `(since, until]`.
    fn first_changed_quotes(&mut self, since: i64, until: i64, limit: i64) -> Result<Vec<String>>;

    /// Deletes the change log's rows older than `cutoff`; how many.
    fn prune_change_log(&mut self, cutoff: &str) -> Result<u64>;

    /// Tells `reading` each enabled alert changed in `(since, until]`, in
    /// the order of their changes.
    fn each_changed_alert(
        &mut self,
        since: i64,
        until: i64,
        reading: &mut dyn Reading,
    ) -> Result<()>;

    /// Tells `reading` each enabled alert of each of `tickers` changed in
    /// `(since, until]`.
    fn each_changed_alert_of(
        &mut self,
        tickers: &[&str],
        since: i64,
        until: i64,
        reading: &mut dyn Reading,
    ) -> Result<()>;

    /// Each ticker's previous observation, its quote (where asked), and
    /// whether it has alerts and alerts waiting for their price to come
    /// back (where asked).
    fn ticker_states(&mut self, tickers: &[(&str, Ask)]) -> Result<Vec<TickerState>>;

    /// Tells `reading` each enabled alert of the moved tickers whose level
    /// the move can reach, leaving out alerts changed after `seen`.
    fn each_reachable_alert_of(
        &mut self,
        moves: &[(&str, Move)],
        seen: i64,
        reading: &mut dyn Reading,
    ) -> Result<()>;

    /// Each ticker's nearest levels around its price.
    fn nearest_levels(&mut self, prices: &[(&str, f64)]) -> Result<Vec<Nearest>>;

    /// Records the tick's observations and moves the job's watermark.
    fn finish_tick(
        &mut self,
        observed: &[Observation],
        watermark: Option<&super::watermarks::Advance<'_>>,
        now: &str,
    ) -> Result<()>;

    // Alerts.

    /// Up to `limit` enabled alerts without a ticker.
    fn enabled_without_ticker(&mut self, limit: u64) -> Result<Vec<AlertRow>>;

    /// The tickers of enabled alerts, each once.
    fn enabled_tickers(&mut self) -> Result<Vec<String>>;

    /// The tickers of alerts due to be re-armed by `now_ms`.
    fn rearm_due_tickers(&mut self, now_ms: i64) -> Result<Vec<String>>;

    /// The tickers with banded alerts waiting for their price to come back.
    fn waiting_tickers(&mut self) -> Result<HashSet<String>>;

    /// Disables every enabled alert that expired by `now`; how many.
    fn expire_due(&mut self, now: &str) -> Result<usize>;

    /// When the next expiry or wake comes due (unix ms), if any is to come:
    /// one statement over the two partial indexes.
    fn next_alert_due(&mut self) -> Result<Option<i64>>;

    /// Now by the database's clock, the last change number an alert took
    /// (an insert, an edit, a re-arm: while it stays, no expiry or snooze
    /// was set), and the earliest end of a cooldown (unix ms): one
    /// statement, two index probes.
    fn due_signs(&mut self) -> Result<crate::store::alerts::DueSigns>;

    /// Re-arms every repeating alert whose cooldown has passed; how many.
    fn rearm_cooled_down(&mut self, now: &str, now_ms: i64) -> Result<usize>;

    /// Re-arms the banded alerts whose price came back.
    fn come_back(&mut self, prices: &[(&str, f64)], now: &str, now_ms: i64) -> Result<Returned>;

    /// Wakes every alert whose snooze ended by `now`; how many.
    fn wake_snoozed(&mut self, now: &str) -> Result<usize>;

    /// Claims `triggers` in one write transaction: each alert is disabled
    /// (or its cooldown starts) only if it is still the arming judged, and
    /// its event is queued with it.
    /// With `lease`, it leases the events it queues as that asks
    /// (`store::outbox::ClaimLease`). It may record `observed` as the
    /// tickers' previous prices in its last transaction, and then says so
    /// (`store::alerts::claim_observing`).
    fn claim(
        &mut self,
        triggers: &[Trigger],
        triggered_at: DateTime<Utc>,
        now_ms: i64,
        lease: Option<&ClaimLease>,
        observed: &[Observation],
    ) -> Result<Claimed>;

    /// The engine's upkeep after a write whose results are on their way: a
    /// claim's events, an exchange's leased rows (SQLite: the WAL's
    /// checkpoint past its bound). Never fails: what it does not do, the
    /// next does.
    fn after_write(&mut self) {}

    /// The alerts of `query`, for operators, newest first.
    fn list_alerts(&mut self, query: &AlertQuery<'_>) -> Result<Vec<AlertEntry>>;

    /// How many alerts `query` holds, its limit aside.
    fn count_alerts(&mut self, query: &AlertQuery<'_>) -> Result<u64>;

    /// The enabled alerts of one ticker.
    #[cfg(any(test, feature = "test-support"))]
    fn enabled_for_ticker(&mut self, ticker: &str) -> Result<Vec<AlertRow>>;

    // The outbox.

    /// Settles what was sent and leases what is wanted, in one transaction.
    fn exchange(
        &mut self,
        owner: &str,
        settled: &[Settled],
        want: Option<Want>,
    ) -> Result<Exchanged>;

    /// Now by the database's clock, and when the next pending row becomes
    /// sendable (unix milliseconds both): one round trip where the engine
    /// is a server.
    fn next_due(&mut self) -> Result<(i64, Option<i64>)>;

    /// Puts dead or pending events back at the start of their retries;
    /// the ids replayed.
    /// Every event of `query` replayed, due at `now_ms` (the deliverers
    /// told); how many.
    fn replay_matching(&mut self, query: &OutboxQuery<'_>, now_ms: i64) -> Result<usize>;

    fn replay(&mut self, event_ids: &[String], now_ms: i64) -> Result<Vec<String>>;

    // The daemon's objects.

    /// Which of the daemon's objects are missing.
    fn audit(&mut self) -> Result<Audit>;

    /// Recreates the daemon's missing objects.
    fn repair(&mut self) -> Result<Repaired>;
}

/// What both engines run with the same statements (see the module's doc).
pub(super) trait Shared {
    /// Now by the database's clock, in unix milliseconds.
    fn now_ms(&mut self) -> Result<i64>;

    // Operators' edits.

    /// Inserts an alert; its id.
    fn add_alert(&mut self, alert: &NewAlert<'_>, created_at: &str) -> Result<i64>;

    /// Disables an armed alert without an event; false if there is none.
    fn disable(&mut self, id: i64) -> Result<bool>;

    /// Re-arms a disabled alert; false if there is none.
    fn rearm(&mut self, id: i64) -> Result<bool>;

    /// Snoozes an alert until `until`, or wakes it.
    fn snooze(&mut self, id: i64, until: Option<&str>) -> Result<bool>;

    /// Sets or clears an alert's cooldown.
    fn set_cooldown(&mut self, id: i64, cooldown: Option<&str>) -> Result<bool>;

    // Jobs.

    /// Records a job's run.
    fn record_run(&mut self, run: &Run) -> Result<()>;

    /// Every job's last run.
    fn runs(&mut self) -> Result<Vec<Run>>;

    /// A job's watermark.
    fn watermark(&mut self, job: &str) -> Result<Option<i64>>;

    /// A job's watermark and holds, where its tick starts.
    fn tick_start(&mut self, job: &str) -> Result<super::watermarks::Start>;

    /// A job's hold of one ticker.
    fn hold_of(&mut self, job: &str, ticker: &str) -> Result<Option<super::watermarks::Hold>>;

    /// The last change of a ticker's quote still in the change log.
    fn latest_quote_change(&mut self, ticker: &str) -> Result<Option<i64>>;

    /// The last price observed for a ticker.
    #[cfg(any(test, feature = "test-support"))]
    fn observation(&mut self, ticker: &str) -> Result<Option<f64>>;

    // The outbox, read and purged.

    /// When the oldest pending event was queued.
    fn oldest_pending(&mut self) -> Result<Option<String>>;

    /// Pending events and dead letters.
    fn backlog(&mut self) -> Result<(u64, u64)>;

    /// The events of `query`, oldest first.
    fn list_outbox(&mut self, query: &OutboxQuery<'_>) -> Result<Vec<OutboxEntry>>;

    /// How many events `query` holds.
    fn count_outbox(&mut self, query: &OutboxQuery<'_>) -> Result<u64>;

    /// One event, its body and its attempts.
    fn outbox_event(&mut self, event_id: &str) -> Result<Option<OutboxEvent>>;

    /// Up to `limit` events of one alert, newest first.
    fn alert_events(&mut self, alert_id: i64, limit: usize) -> Result<Vec<OutboxEntry>>;

    /// Deletes events delivered before `before`; how many.
    fn purge_delivered(&mut self, before: &str) -> Result<usize>;

    // Users' channels (`store::channels`).

    /// The place of `user_id`'s event `event_id` on their channel.
    fn channel_position(&mut self, user_id: &str, event_id: &str) -> Result<Option<i64>>;

    /// Up to `limit` events of `user_id`'s channel after place `seq`.
    fn channel_after(&mut self, user_id: &str, seq: i64, limit: usize)
    -> Result<Vec<ChannelEvent>>;

    /// `user_id`'s channel's head.
    fn channel_head(&mut self, user_id: &str) -> Result<Head>;

    /// The key that signs a stream origin's links.
    fn stream_key(&mut self) -> Result<String>;

    // Daemons sharing the database.

    /// Takes `fire` of a job for `lease_ms`; the runs it allows.
    fn take_fire(&mut self, fire: &Fire, me: &str, lease_ms: i64) -> Result<Option<u32>>;

    /// Ends this member's hold on `fire`.
    fn finish_fire(&mut self, fire: &Fire, me: &str, finish: Finish) -> Result<()>;

    /// One heartbeat; the expired fires to take over.
    fn heartbeat(&mut self, me: &Me, lease_ms: i64) -> Result<Vec<Fire>>;

    /// Leaves the cluster.
    fn leave(&mut self, me: &str) -> Result<()>;

    /// Takes or renews the reacting leases of `jobs`; those held.
    fn take_reacting(
        &mut self,
        jobs: &[String],
        given_back: &[String],
        me: &str,
        lease_ms: i64,
    ) -> Result<Vec<String>>;

    /// Each job's reacting member.
    fn reactors(&mut self) -> Result<Vec<(String, String)>>;

    /// The members that beat within the last day.
    fn members(&mut self) -> Result<Vec<Member>>;
}

impl<C: Statements> Shared for C
where
    super::Error: From<C::Error>,
{
    fn now_ms(&mut self) -> Result<i64> {
        Ok(super::clock::now_ms_on(self)?)
    }

    fn add_alert(&mut self, alert: &NewAlert<'_>, created_at: &str) -> Result<i64> {
        Ok(super::alerts::add_on(self, alert, created_at)?)
    }

    fn disable(&mut self, id: i64) -> Result<bool> {
        Ok(super::alerts::disable_on(self, id)?)
    }

    fn rearm(&mut self, id: i64) -> Result<bool> {
        Ok(super::alerts::rearm_on(self, id)?)
    }

    fn snooze(&mut self, id: i64, until: Option<&str>) -> Result<bool> {
        Ok(super::alerts::snooze_on(self, id, until)?)
    }

    fn set_cooldown(&mut self, id: i64, cooldown: Option<&str>) -> Result<bool> {
        Ok(super::alerts::set_cooldown_on(self, id, cooldown)?)
    }

    fn record_run(&mut self, run: &Run) -> Result<()> {
        Ok(super::runs::record_on(self, run)?)
    }

    fn runs(&mut self) -> Result<Vec<Run>> {
        Ok(super::runs::list_on(self)?)
    }

    fn watermark(&mut self, job: &str) -> Result<Option<i64>> {
        Ok(super::watermarks::get_on(self, job)?)
    }

    fn tick_start(&mut self, job: &str) -> Result<super::watermarks::Start> {
        Ok(super::watermarks::start_on(self, job)?)
    }

    fn hold_of(&mut self, job: &str, ticker: &str) -> Result<Option<super::watermarks::Hold>> {
        Ok(super::watermarks::hold_of_on(self, job, ticker)?)
    }

    fn latest_quote_change(&mut self, ticker: &str) -> Result<Option<i64>> {
        Ok(super::watermarks::latest_quote_change_on(self, ticker)?)
    }

    #[cfg(any(test, feature = "test-support"))]
    fn observation(&mut self, ticker: &str) -> Result<Option<f64>> {
        Ok(super::observations::get_on(self, ticker)?)
    }

    fn oldest_pending(&mut self) -> Result<Option<String>> {
        Ok(super::outbox::oldest_pending_on(self)?)
    }

    fn backlog(&mut self) -> Result<(u64, u64)> {
        Ok(super::outbox::backlog_on(self)?)
    }

    fn list_outbox(&mut self, query: &OutboxQuery<'_>) -> Result<Vec<OutboxEntry>> {
        Ok(super::outbox::list_on(self, query)?)
    }

    fn count_outbox(&mut self, query: &OutboxQuery<'_>) -> Result<u64> {
        Ok(super::outbox::count_on(self, query)?)
    }

    fn outbox_event(&mut self, event_id: &str) -> Result<Option<OutboxEvent>> {
        Ok(super::outbox::event_on(self, event_id)?)
    }

    fn alert_events(&mut self, alert_id: i64, limit: usize) -> Result<Vec<OutboxEntry>> {
        Ok(super::outbox::alert_events_on(self, alert_id, limit)?)
    }

    fn purge_delivered(&mut self, before: &str) -> Result<usize> {
        Ok(super::outbox::purge_delivered_on(self, before)?)
    }

    fn channel_position(&mut self, user_id: &str, event_id: &str) -> Result<Option<i64>> {
        Ok(super::channels::position_on(self, user_id, event_id)?)
    }

    fn channel_after(
        &mut self,
        user_id: &str,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<ChannelEvent>> {
        Ok(super::channels::after_on(self, user_id, seq, limit)?)
    }

    fn channel_head(&mut self, user_id: &str) -> Result<Head> {
        Ok(super::channels::head_on(self, user_id)?)
    }

    fn stream_key(&mut self) -> Result<String> {
        Ok(super::channels::key_on(self)?)
    }

    fn take_fire(&mut self, fire: &Fire, me: &str, lease_ms: i64) -> Result<Option<u32>> {
        Ok(super::cluster::take_fire_on(self, fire, me, lease_ms)?)
    }

    fn finish_fire(&mut self, fire: &Fire, me: &str, finish: Finish) -> Result<()> {
        Ok(super::cluster::finish_fire_on(self, fire, me, finish)?)
    }

    fn heartbeat(&mut self, me: &Me, lease_ms: i64) -> Result<Vec<Fire>> {
        Ok(super::cluster::heartbeat_on(self, me, lease_ms)?)
    }

    fn leave(&mut self, me: &str) -> Result<()> {
        Ok(super::cluster::leave_on(self, me)?)
    }

    fn take_reacting(
        &mut self,
        jobs: &[String],
        given_back: &[String],
        me: &str,
        lease_ms: i64,
    ) -> Result<Vec<String>> {
        Ok(super::cluster::take_reacting_on(
            self, jobs, given_back, me, lease_ms,
        )?)
    }

    fn reactors(&mut self) -> Result<Vec<(String, String)>> {
        Ok(super::cluster::reactors_on(self)?)
    }

    fn members(&mut self) -> Result<Vec<Member>> {
        Ok(super::cluster::members_on(self)?)
    }
}
