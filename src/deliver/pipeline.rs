//! The pipeline of one webhook configuration: leased rows through a queue to
//! at most `concurrency` attempts, their outcomes recorded and the next rows
//! leased in one exchange with the outbox, while the attempts go on.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::lock::lock;
use crate::log_recurring;
use crate::metrics::{Delivery, Metrics, Response};
use crate::recurring::Recurring;
use crate::store::outbox::{self, Exchanged, Leased, Outcome, Settled, Want};
use crate::store::{self, Pool};

use super::attempt::{Webhook, attempt, say_unlogged_dead_letters};
use super::handoff::{Handoff, Taken};
use super::lease::{Ahead, RECORD_AFTER, RECORD_OVERDUE};
use super::time::{DbClock, Stop};
use super::users::{Answered, Users};

/// What a deliverer did over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub failed: u64,
    /// Events moved to the dead letters.
    pub dead: u64,
}

/// Why a pipeline ended.
pub(super) enum Ended {
    /// Nothing is due now.
    Idle,
    /// The configuration changed: go on with the new one.
    Reconfigured,
    /// The drain deadline passed.
    Stopped,
}

/// An attempt under way.
type Attempting = Pin<Box<dyn Future<Output = Attempted> + Send>>;

/// A finished attempt: what became of each of its rows, with when its event
/// was claimed (`Leased::created_at`); the receiver's answer, how long it
/// took, and the database's clock it was made by.
struct Attempted {
    settled: Vec<(Settled, Option<DateTime<Utc>>)>,
    response: Response,
    took: Duration,
    clock: DbClock,
}

/// An exchange with the outbox under way: the rows it leased, and the
/// database's clock as it read it.
type Exchanging = Pin<Box<dyn Future<Output = anyhow::Result<(Vec<Leased>, DbClock)>> + Send>>;

/// The store's upkeep after an exchange (see [`exchange_then_upkeep`]).
type Upkeep = tokio::task::JoinHandle<()>;

/// A deliverer's state across its pipelines.
pub(super) struct Deliverer<'a> {
    pub(super) pool: &'a Pool,
    /// The claims' hand-over of the rows they lease to it; it names the
    /// leases' owner.
    pub(super) handoff: &'a Handoff,
    pub(super) metrics: &'a Metrics,
    pub(super) totals: Totals,
    pub(super) bookkeeping_failures: Recurring,
    pub(super) attempt_failures: Recurring,
    pub(super) outbox_failures: Recurring,
    pub(super) checkpoints: store::Upkeep,
    /// Failed exchanges in a row, and when the next may start.
    pub(super) failures_in_a_row: u32,
    pub(super) retry_at: Option<Instant>,
}

/// One webhook configuration's pipeline: rows flow from the outbox through a
/// queue to at most `concurrency` attempts at once, and their outcomes back.
/// One exchange with the outbox at a time records the finished attempts and
/// leases the next rows in one transaction, while the attempts go on.
struct Pipeline {
    webhook: Webhook,
    /// Leased, not sent yet, in lease order.
    queue: VecDeque<Leased>,
    /// How many rows the queue and the attempts hold, at most.
    ahead: Ahead,
    attempts: FuturesUnordered<Attempting>,
    /// Finished, not recorded yet; since when the oldest waits.
    finished: Vec<Settled>,
    finished_since: Option<Instant>,
    /// The exchange under way, with the outcomes it records and how many
    /// rows it asked for.
    exchange: Option<(Exchanging, Arc<Vec<Settled>>)>,
    /// When the exchange under way started.
    exchange_since: Option<Instant>,
    /// The store's upkeep after the last exchange, while it runs: the next
    /// exchange waits for it.
    upkeep: Option<Upkeep>,
    asked: usize,
    /// The exchange under way leases more while rows were still ahead...
    ahead_when_asked: bool,
    /// ...and they ran out before it ended (see [`Ahead`]).
    ran_out: bool,
    /// Routing by user: `Users::room_made` when the exchange under way was asked for.
    room_when_asked: u64,
    /// The last exchange leased fewer rows than it asked for: nothing more is
    /// due until a wake or the next idle check.
    exhausted: bool,
    /// Since when, while it is: rows handed over keep a pipeline busy
    /// without a wake, so after [`LOOK_AGAIN`] it looks for due rows (a
    /// retry's time came) again.
    exhausted_since: Instant,
    reconfigured: bool,
    /// With each user's events going to a URL of their own: what each user
    /// holds here.
    users: Option<Users>,
    /// The database's clock, as the last exchange read it: none before the
    /// first, when nothing is leased.
    clock: Option<DbClock>,
}

/// What woke a pipeline.
enum Woken {
    Attempt(Attempted),
    Exchange(anyhow::Result<(Vec<Leased>, DbClock)>),
    Upkept,
    Timer,
    Wake,
    /// A claim handed rows over.
    Handed,
    Stop,
    Reconfigured,
}

impl Deliverer<'_> {
    pub(super) async fn pipeline(
        &mut self,
        webhook: Webhook,
        wake: &Notify,
        stop: &mut Stop,
        webhooks: &mut watch::Receiver<Webhook>,
        started_by: Start,
    ) -> Ended {
        let webhook_per_user = webhook.per_user();
        let batch = webhook.config.events_a_request();
        let mut pipeline = Pipeline {
            ahead: Ahead::of(webhook.leasing()),
            webhook,
            queue: VecDeque::new(),
            attempts: FuturesUnordered::new(),
            finished: Vec::new(),
            finished_since: None,
            exchange: None,
            exchange_since: None,
            upkeep: None,
            asked: 0,
            ahead_when_asked: false,
            ran_out: false,
            room_when_asked: 0,
            // Rows handed over are all that came since the deliverer last
            // found nothing due: nothing else is, until a wake.
            exhausted: started_by == Start::Handed,
            exhausted_since: Instant::now(),
            reconfigured: false,
            users: webhook_per_user.then(|| Users::new(batch)),
            clock: None,
        };
        loop {
            let past_deadline = stop
                .borrow()
                .is_some_and(|deadline| Instant::now() >= deadline);
            pipeline.reconfigured |= webhooks.has_changed().unwrap_or(false);
            let winding_down = past_deadline || pipeline.reconfigured;
            self.take_handed(&mut pipeline, winding_down);
            if winding_down {
                // Rows not sent yet go back as they were.
                while let Some(event) = pipeline.queue.pop_front() {
                    self.give_back(&mut pipeline, &event);
                }
            }
            self.dispatch(&mut pipeline, stop);
            let leasing = if winding_down {
                Leasing::NoMore
            } else {
                Leasing::AsNeeded
            };
            self.offer_room(&pipeline, leasing);
            self.start_exchange(&mut pipeline, leasing);
            // Winding down, rows claims still lease to it are given back.
            if pipeline.is_empty() && !(winding_down && self.handoff.awaited()) {
                return if past_deadline {
                    Ended::Stopped
                } else if pipeline.reconfigured {
                    Ended::Reconfigured
                } else {
                    Ended::Idle
                };
            }
            match pipeline
                .wait(self.retry_at, (wake, self.handoff), stop, webhooks)
                .await
            {
                Woken::Attempt(done) => {
                    self.attempted(&mut pipeline, done);
                    // And every other that finished meanwhile, before the next wait.
                    while let Some(Some(done)) = pipeline.attempts.next().now_or_never() {
                        self.attempted(&mut pipeline, done);
                    }
                }
                Woken::Exchange(result) => {
                    if self.exchanged(&mut pipeline, result) == Recorded::No && past_deadline {
                        // Nothing more can be recorded in time: the leases
                        // give the rows back when they run out.
                        return Ended::Stopped;
                    }
                }
                Woken::Upkept => pipeline.upkeep = None,
                Woken::Wake => pipeline.exhausted = false,
                Woken::Handed => {}
                Woken::Reconfigured => pipeline.reconfigured = true,
                Woken::Timer | Woken::Stop => {}
            }
        }
    }

    /// Starts attempts from the queue while fewer than `concurrency` run,
    /// each carrying the next batch ([`Pipeline::next_batch`]).
    fn dispatch(&self, pipeline: &mut Pipeline, stop: &Stop) {
        if self.failures_in_a_row > 0 || pipeline.recording_overdue() {
            return;
        }
        while pipeline.attempts.len() < pipeline.webhook.leasing().concurrency() {
            let batch = pipeline.next_batch();
            if batch.is_empty() {
                pipeline.ran_out |= pipeline.queue.is_empty() && pipeline.ahead_when_asked;
                return;
            }
            let Some(clock) = pipeline.clock else {
                batch
                    .iter()
                    .for_each(|event| self.give_back(pipeline, event));
                continue;
            };
            let mut events = Vec::with_capacity(batch.len());
            for event in batch {
                if pipeline
                    .webhook
                    .leasing()
                    .sendable(event.lease_until, &clock)
                {
                    events.push(event);
                } else {
                    self.give_back(pipeline, &event);
                }
            }
            if events.is_empty() {
                continue;
            }
            if let Some(users) = &mut pipeline.users {
                events.iter().for_each(|event| users.sending(event));
            }
            let (webhook, stop) = (pipeline.webhook.clone(), stop.clone());
            pipeline.attempts.push(Box::pin(async move {
                let started = std::time::Instant::now();
                let (settled, response) = attempt(&webhook, events, stop, clock).await;
                Attempted {
                    settled,
                    response,
                    took: started.elapsed(),
                    clock,
                }
            }));
        }
    }

    /// Takes in the rows claims handed over (see `deliver::handoff`):
    /// queued, or given back while the pipeline winds down, or where they
    /// lack the place on their channel its relay needs.
    fn take_handed(&self, pipeline: &mut Pipeline, winding_down: bool) {
        let Taken { rows, clock } = self.handoff.take();
        if let Some(clock) = clock {
            pipeline.clock = Some(clock);
        }
        let places = pipeline.webhook.places_events();
        for event in rows {
            if let Some(users) = &mut pipeline.users {
                users.leased(&event);
            }
            if winding_down || (places && event.channel_seq.is_none()) {
                self.give_back(pipeline, &event);
            } else {
                pipeline.queue.push_back(event);
            }
        }
        pipeline.keep_channel_order();
    }

    /// Offers the claims the room the pipeline has for rows they lease
    /// (see `deliver::handoff`): what it would lease itself, less what the
    /// exchange under way asked for; none while it winds down or its
    /// exchanges fail (the room is then its exchanges' alone).
    fn offer_room(&self, pipeline: &Pipeline, leasing: Leasing) {
        let asked = if pipeline.exchange.is_some() {
            pipeline.asked
        } else {
            0
        };
        let free = pipeline.room().saturating_sub(asked);
        let webhook = &pipeline.webhook;
        let offered = leasing == Leasing::AsNeeded && self.failures_in_a_row == 0;
        let want = offered.then(|| Want {
            lease: webhook.leasing().lease(),
            limit: 0,
            spread: pipeline.users.as_ref().map(Users::spread),
            place: webhook.places_events(),
        });
        self.handoff.offer(want, free);
    }

    /// A leased row goes back unsent, as it was.
    fn give_back(&self, pipeline: &mut Pipeline, event: &Leased) {
        self.metrics
            .delivery(Delivery::Released, Response::None, Duration::ZERO);
        pipeline.left(event.row_id, Answered::No);
        pipeline.settle(Settled {
            row_id: event.row_id,
            lease_until: event.lease_until,
            outcome: Outcome::Released,
            attempt: None,
        });
    }

    /// Starts an exchange with the outbox, unless one runs, the upkeep
    /// after the last does, or it waits out a failure: it records what
    /// finished, and leases more rows when the queue runs low and `leasing`
    /// allows.
    fn start_exchange(&self, pipeline: &mut Pipeline, leasing: Leasing) {
        let lease = leasing == Leasing::AsNeeded;
        let now = Instant::now();
        if pipeline.exchange.is_some()
            || pipeline.upkeep.is_some()
            || self.retry_at.is_some_and(|at| now < at)
        {
            return;
        }
        let webhook = &pipeline.webhook;
        let unsent = pipeline.unsent();
        if pipeline.exhausted && now >= pipeline.exhausted_since + LOOK_AGAIN {
            pipeline.exhausted = false;
        }
        let limit = if lease && !pipeline.exhausted && unsent <= pipeline.ahead.rows() / 2 {
            // Of the room the claims did not take (see `deliver::handoff`).
            self.handoff.draw(pipeline.room())
        } else {
            0
        };
        // Nothing left to send does not record at once: the claims may hand
        // over more within `RECORD_AFTER` (see there).
        let record = !pipeline.finished.is_empty()
            && (limit > 0
                || !lease
                || pipeline.finished.len() >= webhook.leasing().recorded_together()
                || pipeline
                    .finished_since
                    .is_some_and(|since| now >= since + RECORD_AFTER));
        if limit == 0 && !record {
            return;
        }
        let settled = Arc::new(if record {
            pipeline.finished_since = None;
            std::mem::take(&mut pipeline.finished)
        } else {
            Vec::new()
        });
        let want = (limit > 0).then(|| Want {
            lease: webhook.leasing().lease(),
            limit,
            spread: pipeline.users.as_ref().map(Users::spread),
            place: webhook.places_events(),
        });
        let (exchanging, upkeep) =
            exchange_then_upkeep(self.pool, self.handoff.owner(), settled.clone(), want);
        pipeline.exchange = Some((exchanging, settled));
        pipeline.upkeep = Some(upkeep);
        pipeline.exchange_since = Some(now);
        pipeline.asked = limit;
        pipeline.ahead_when_asked = limit > 0 && unsent > 0;
        pipeline.ran_out = false;
        pipeline.room_when_asked = pipeline.users.as_ref().map_or(0, |users| users.room_made);
    }

    fn attempted(
        &mut self,
        pipeline: &mut Pipeline,
        Attempted {
            settled,
            response,
            took,
            clock,
        }: Attempted,
    ) {
        pipeline.ahead.paced(pipeline.webhook.leasing(), took);
        for (settled, claimed_at) in settled {
            let kind = match &settled.outcome {
                Outcome::Delivered => {
                    if let Some(claimed) = claimed_at {
                        let since = clock.now_ms() - claimed.timestamp_millis();
                        self.metrics
                            .delivered_after_claim(Duration::from_millis(since.max(0) as u64));
                    }
                    if let Some(failures) = self.attempt_failures.succeeded() {
                        tracing::info!(failures, "deliveries work again");
                    }
                    Delivery::Delivered
                }
                Outcome::Retry { error, .. } => {
                    log_recurring!(
                        warn,
                        self.attempt_failures,
                        error.clone(),
                        "deliveries failed; they will be retried"
                    );
                    Delivery::Failed
                }
                Outcome::Dead { .. } => Delivery::Dead,
                Outcome::Released => Delivery::Released,
            };
            self.metrics.delivery(kind, response, took);
            pipeline.left(settled.row_id, Answered::Yes);
            pipeline.settle(settled);
        }
    }

    /// Takes an exchange's result: counts what it recorded and queues what it
    /// leased; after a failure, keeps the outcomes for the next one.
    fn exchanged(
        &mut self,
        pipeline: &mut Pipeline,
        result: anyhow::Result<(Vec<Leased>, DbClock)>,
    ) -> Recorded {
        let (_, recorded) = pipeline.exchange.take().expect("an exchange was under way");
        pipeline.exchange_since = None;
        match result {
            Ok((leased, clock)) => {
                pipeline.clock = Some(clock);
                self.failures_in_a_row = 0;
                self.retry_at = None;
                if let Some(failures) = self.bookkeeping_failures.succeeded() {
                    tracing::info!(failures, "delivery bookkeeping works again");
                }
                say_unlogged_dead_letters(&pipeline.webhook);
                for settled in recorded.iter() {
                    match settled.outcome {
                        Outcome::Delivered => self.totals.delivered += 1,
                        Outcome::Retry { .. } => self.totals.failed += 1,
                        Outcome::Dead { .. } => self.totals.dead += 1,
                        Outcome::Released => {}
                    }
                }
                if pipeline.asked > 0 {
                    // Fewer than asked for: nothing more is due now. Routing
                    // by user, a lease gives each user only a share: only
                    // none at all says so, until a user has room again (which
                    // may have happened while the exchange ran).
                    pipeline.exhausted_since = Instant::now();
                    pipeline.exhausted = match &pipeline.users {
                        None => leased.len() < pipeline.asked,
                        Some(users) => {
                            leased.is_empty() && users.room_made == pipeline.room_when_asked
                        }
                    };
                }
                if pipeline.ran_out && !pipeline.exhausted {
                    pipeline.ahead.ran_out();
                }
                if let Some(users) = &mut pipeline.users {
                    leased.iter().for_each(|event| users.leased(event));
                }
                pipeline.queue.extend(leased);
                pipeline.keep_channel_order();
                Recorded::Yes
            }
            Err(error) => {
                self.failures_in_a_row += 1;
                // Back off instead of spinning; outcomes wait for the next try.
                self.retry_at = Some(
                    Instant::now() + Duration::from_millis(200) * self.failures_in_a_row.min(25),
                );
                let mut kept = Arc::unwrap_or_clone(recorded);
                kept.append(&mut pipeline.finished);
                pipeline.finished = kept;
                pipeline.finished_since.get_or_insert_with(Instant::now);
                log_recurring!(
                    error,
                    self.bookkeeping_failures,
                    format!("{error:#}"),
                    "delivery bookkeeping failed"
                );
                Recorded::No
            }
        }
    }
}

/// Starts an exchange with the outbox on tokio's blocking threads: it
/// records `settled` and leases what `want` asks for. Its rows come back as
/// soon as it commits; the store's upkeep after it (on SQLite, a checkpoint
/// of the WAL once past its bound: up to 160 ms when a burst's claims had
/// filled it) runs after, on the same connection, and the rows do not wait
/// for it, as a claim's events do not (`store::alerts::after_claim`).
fn exchange_then_upkeep(
    pool: &Pool,
    owner: &str,
    settled: Arc<Vec<Settled>>,
    want: Option<Want>,
) -> (Exchanging, Upkeep) {
    type Answer = anyhow::Result<(Vec<Leased>, DbClock)>;
    let (answer, answered) = tokio::sync::oneshot::channel::<Answer>();
    // The call answers once it committed; an error before (no connection, a
    // failed exchange, a panic) is answered when the call ends.
    let answer = Arc::new(std::sync::Mutex::new(Some(answer)));
    let answer_at_commit = answer.clone();
    let (pool, owner) = (pool.clone(), owner.to_owned());
    let since = Instant::now();
    let upkeep = tokio::spawn(async move {
        let call = store::blocking(&pool, "leasing and recording events", move |connection| {
            let Exchanged { leased, now_ms } =
                outbox::exchange(connection, &owner, &settled, want)?;
            if let Some(answer) = lock(&answer_at_commit).take() {
                let _ = answer.send(Ok((leased, DbClock::read(since, now_ms))));
            }
            outbox::after_exchange(connection);
            Ok(())
        });
        if let Err(error) = call.await
            && let Some(answer) = lock(&answer).take()
        {
            let _ = answer.send(Err(error));
        }
    });
    let exchanging = async move {
        answered.await.unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "an exchange with the outbox never answered"
            ))
        })
    };
    (Box::pin(exchanging), upkeep)
}

/// Puts each user's rows in the order of their places on the user's
/// channel, in the slots its rows hold: the users' rows interleave as
/// before.
fn in_channel_order(rows: &mut VecDeque<Leased>) {
    let seq = |row: &Leased| row.channel_seq.unwrap_or(i64::MAX);
    fn user(row: &Leased) -> &str {
        outbox::user_key(row.user_id.as_deref())
    }
    let mut last: HashMap<&str, i64> = HashMap::new();
    let in_order = rows.iter().all(|row| {
        last.insert(user(row), seq(row))
            .is_none_or(|before| before <= seq(row))
    });
    if in_order {
        return;
    }
    let mut slots: HashMap<&str, Vec<usize>> = HashMap::new();
    for (at, row) in rows.iter().enumerate() {
        slots.entry(user(row)).or_default().push(at);
    }
    let mut source: Vec<usize> = (0..rows.len()).collect();
    for positions in slots.values() {
        let mut by_place = positions.clone();
        by_place.sort_by_key(|&at| seq(&rows[at]));
        for (&slot, &from) in positions.iter().zip(&by_place) {
            source[slot] = from;
        }
    }
    let mut taken: Vec<Option<Leased>> = rows.drain(..).map(Some).collect();
    rows.extend(
        source
            .into_iter()
            .map(|from| taken[from].take().expect("each row goes to one slot")),
    );
}

/// How long a busy pipeline that found nothing more due goes without
/// looking again, unless woken (see `Pipeline::exhausted_since`).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// What started a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Rows a claim handed over, while nothing else was due.
    Handed,
    /// Anything else: rows may be due.
    Due,
}

/// Whether an exchange leases more rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leasing {
    /// When the queue runs low.
    AsNeeded,
    /// Never: the deliverer winds down, and only records what finished.
    NoMore,
}

/// Whether an exchange with the outbox recorded the outcomes it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    Yes,
    /// They are kept for the next exchange.
    No,
}

impl Pipeline {
    /// Leased rows not sent yet: queued or in an attempt.
    fn unsent(&self) -> usize {
        self.queue.len() + self.attempts.len()
    }

    /// How many more rows it may hold (see [`Ahead`]): rows ahead of the
    /// attempts, and rows held in all, finished ones too.
    fn room(&self) -> usize {
        let unsent = self.unsent();
        let held = unsent + self.finished.len();
        (self.ahead.rows().saturating_sub(unsent)).min(self.ahead.held().saturating_sub(held))
    }

    /// Where events take places on their users' channels, each user's rows
    /// in the queue in the order of their places: rows a claim handed over
    /// can come in before those of an exchange that placed them earlier.
    fn keep_channel_order(&mut self) {
        if self.webhook.places_events() {
            in_channel_order(&mut self.queue);
        }
    }

    /// A row leaves the pipeline's hands (see `Users::left`).
    pub(super) fn left(&mut self, row_id: i64, answered: Answered) {
        if let Some(users) = &mut self.users
            && users.left(row_id, answered)
        {
            self.exhausted = false;
        }
    }

    fn settle(&mut self, settled: Settled) {
        self.finished.push(settled);
        self.finished_since.get_or_insert_with(Instant::now);
    }

    /// Whether the exchange under way has taken longer than it should (see
    /// [`RECORD_OVERDUE`]).
    fn recording_overdue(&self) -> bool {
        self.exchange_since
            .is_some_and(|since| since.elapsed() > RECORD_OVERDUE)
    }

    /// The rows the next request carries, in queue order: up to
    /// `webhook.batch` of them; routing by user, only of users with nothing
    /// in flight (a user's rows in one request go in their order).
    fn next_batch(&mut self) -> Vec<Leased> {
        let limit = self.webhook.config.events_a_request();
        let Some(users) = &self.users else {
            let take = limit.min(self.queue.len());
            return self.queue.drain(..take).collect();
        };
        // One pass over the queue's start, until the batch is full: the
        // rows passed over go back in front, in their order.
        let mut batch = Vec::new();
        let mut passed = Vec::new();
        while batch.len() < limit {
            let Some(event) = self.queue.pop_front() else {
                break;
            };
            if users.is_busy(&event) {
                passed.push(event);
            } else {
                batch.push(event);
            }
        }
        while let Some(event) = passed.pop() {
            self.queue.push_front(event);
        }
        batch
    }

    /// Nothing leased is left: every row sent and recorded, or given back.
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.attempts.is_empty()
            && self.finished.is_empty()
            && self.exchange.is_none()
            && self.upkeep.is_none()
    }

    /// Waits for an attempt or the exchange to finish, a timer (recording
    /// finished attempts, retrying a failed exchange), a wake, a stop, or a
    /// new configuration.
    async fn wait(
        &mut self,
        retry_at: Option<Instant>,
        (wake, handoff): (&Notify, &Handoff),
        stop: &mut Stop,
        webhooks: &mut watch::Receiver<Webhook>,
    ) -> Woken {
        // While an exchange or its upkeep runs, the next one waits for it,
        // not for a timer.
        let timer = match retry_at {
            _ if self.exchange.is_some() || self.upkeep.is_some() => None,
            Some(at) if at > Instant::now() => Some(at),
            _ => self.finished_since.map(|since| since + RECORD_AFTER),
        };
        // While attempts run, the end of the next one comes soon enough to
        // look at the stop and the configuration (each attempt watches the
        // drain deadline itself); a wake matters only when nothing was due.
        let quiet = self.attempts.is_empty();
        let Pipeline {
            attempts,
            exchange,
            upkeep,
            exhausted,
            ..
        } = self;
        tokio::select! {
            Some(done) = attempts.next(), if !quiet => Woken::Attempt(done),
            result = async { exchange.as_mut().expect("checked").0.as_mut().await }, if exchange.is_some() => Woken::Exchange(result),
            _ = async { upkeep.as_mut().expect("checked").await }, if upkeep.is_some() => Woken::Upkept,
            () = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => Woken::Timer,
            () = wake.notified(), if *exhausted => Woken::Wake,
            () = handoff.handed() => Woken::Handed,
            Ok(()) = stop.changed(), if quiet => Woken::Stop,
            Ok(()) = webhooks.changed(), if quiet => Woken::Reconfigured,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(row_id: i64, user: &str, seq: i64) -> Leased {
        Leased {
            row_id,
            event_id: format!("e{row_id}"),
            body: String::new(),
            attempts: 0,
            user_id: Some(user.into()),
            lease_until: 0,
            created_at: None,
            channel_seq: Some(seq),
            prev_id: None,
        }
    }

    #[test]
    fn each_users_rows_go_in_the_order_of_their_places_where_they_stood() {
        // b's 6 came in (handed over) before b's 5 (an exchange's).
        let mut rows = VecDeque::from([
            row(1, "a", 1),
            row(9, "b", 6),
            row(2, "a", 2),
            row(7, "c", 1),
            row(8, "b", 5),
        ]);
        in_channel_order(&mut rows);
        let order: Vec<(&str, i64)> = rows
            .iter()
            .map(|row| (row.user_id.as_deref().unwrap(), row.channel_seq.unwrap()))
            .collect();
        assert_eq!(order, [("a", 1), ("b", 5), ("a", 2), ("c", 1), ("b", 6)]);
        // In order already: untouched.
        let before: Vec<i64> = rows.iter().map(|row| row.row_id).collect();
        in_channel_order(&mut rows);
        assert_eq!(
            rows.iter().map(|row| row.row_id).collect::<Vec<_>>(),
            before
        );
    }
}
