//! Delivery: outbox rows to signed webhook POSTs, with retries. The only module
//! that sends to the webhook. `run` is the pipeline (leasing, sending with
//! bounded concurrency, recording outcomes); `attempt` is one POST: the HTTP
//! client, signing, and which answers are retried. Runs on tokio; every
//! database call goes to `spawn_blocking`.

mod attempt;
mod route;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

pub use attempt::{ANSWER_PREFIX, AttemptFailure, Webhook, backoff, classify, headers, sign};

use crate::log_recurring;
use crate::metrics::{Delivery, Metrics, Response};
use crate::recurring::Recurring;
use crate::store::outbox::{self, Leased, Outcome, Settled, Spread, Want, user_key};
use crate::store::{self, Pool};

/// How long an idle deliverer sleeps when nothing is due, unless woken: the
/// delay before it sees rows that another process queued or replayed.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// What a deliverer did over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub failed: u64,
    /// Events moved to the dead letters.
    pub dead: u64,
}

/// When to stop: `None` while running; `Some(deadline)` once draining, after
/// which nothing new is leased and in-flight requests still open at the
/// deadline are abandoned and their rows given back untouched.
pub type Stop = watch::Receiver<Option<Instant>>;

/// Delivers outbox rows until stopped, then drains until the deadline or until
/// nothing deliverable is left. `wake` is notified when new rows are queued.
pub async fn run(
    pool: Pool,
    mut webhooks: watch::Receiver<Webhook>,
    owner: String,
    wake: Arc<Notify>,
    mut stop: Stop,
    metrics: Arc<Metrics>,
) -> Totals {
    let mut deliverer = Deliverer {
        pool: &pool,
        owner: &owner,
        metrics: &metrics,
        totals: Totals::default(),
        bookkeeping_failures: Recurring::default(),
        attempt_failures: Recurring::default(),
        outbox_failures: Recurring::default(),
        checkpoint_failures: std::sync::Mutex::default(),
        failures_in_a_row: 0,
        retry_at: None,
    };
    loop {
        let webhook = webhooks.borrow_and_update().clone();
        match deliverer
            .pipeline(webhook, &wake, &mut stop, &mut webhooks)
            .await
        {
            Ended::Stopped => return deliverer.totals,
            Ended::Reconfigured => continue,
            Ended::Idle => {}
        }
        // Idle after work: a good moment to checkpoint the deliveries' writes.
        store::checkpoint_after_writes(&pool, &deliverer.checkpoint_failures).await;
        let draining = *stop.borrow();
        let next_due = deliverer.next_due().await;
        let Some(wait) = deliverer.idle_wait(next_due, draining) else {
            return deliverer.totals;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            Ok(()) = stop.changed() => {}
            Ok(()) = webhooks.changed() => {}
        }
    }
}

impl Deliverer<'_> {
    /// When the next pending event is due (unix ms), if any; after a failed
    /// read, in a second.
    async fn next_due(&mut self) -> Option<i64> {
        let next_due = store::blocking(self.pool, "reading the outbox", |connection| {
            outbox::next_due(connection)
        })
        .await;
        match next_due {
            Ok(next_due) => {
                self.outbox_failures.succeeded();
                next_due
            }
            Err(error) => {
                log_recurring!(
                    error,
                    self.outbox_failures,
                    format!("{error:#}"),
                    "reading the outbox failed"
                );
                Some(now_ms() + 1000)
            }
        }
    }

    /// How long to wait idle before looking again (at most [`IDLE_POLL`],
    /// longer after a failed exchange); `None` when draining and nothing
    /// deliverable is left before the deadline.
    fn idle_wait(&self, next_due: Option<i64>, draining: Option<Instant>) -> Option<Duration> {
        let wait = match next_due {
            Some(due) => Duration::from_millis((due - now_ms()).max(0) as u64).min(IDLE_POLL),
            None if draining.is_some() => return None,
            None => IDLE_POLL,
        };
        // After a failed exchange, back off instead of spinning.
        let wait = match self.retry_at {
            Some(at) => wait.max(at.saturating_duration_since(Instant::now())),
            None => wait,
        };
        match draining {
            Some(deadline) if Instant::now() + wait >= deadline => None,
            _ => Some(wait),
        }
    }
}

/// How many waves of `concurrency` attempts a deliverer keeps leased ahead:
/// enough that requests never wait for the outbox's bookkeeping.
const WAVES: u32 = 4;
/// Leased rows not yet sent, at least.
const MIN_AHEAD: usize = 256;
/// What a lease keeps beyond its waves of attempts, for recording them.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// How long finished attempts may wait for the next exchange with the outbox
/// while requests are still running.
const RECORD_AFTER: Duration = Duration::from_millis(20);

impl Webhook {
    /// Attempts at once.
    fn concurrency(&self) -> usize {
        self.config.concurrency
    }

    /// Leased rows not yet sent, at most: `WAVES` waves, and enough that
    /// requests to a fast receiver never wait for the next exchange.
    fn ahead(&self) -> usize {
        (self.concurrency() * WAVES as usize).max(MIN_AHEAD)
    }

    /// Leased rows not yet recorded, at most (the ones ahead, and the
    /// attempts that finished while an exchange ran).
    fn held(&self) -> usize {
        self.ahead() * 2
    }

    /// The longest one attempt can take.
    fn attempt_bound(&self) -> Duration {
        self.config.connect_timeout + self.config.timeout
    }

    /// How long a lease lasts: a leased row waits behind at most `WAVES - 1`
    /// waves of attempts, each bounded by the timeouts, then is sent itself,
    /// then recorded. A row whose lease ran short anyway (a stalled database)
    /// is given back unsent: a lease that ran out mid-attempt would let
    /// another deliverer send the same row at the same time.
    fn lease(&self) -> Duration {
        self.attempt_bound() * WAVES + LEASE_MARGIN
    }

    /// Whether a row leased until `lease_until` may still be sent now.
    fn sendable(&self, lease_until: i64) -> bool {
        lease_until - now_ms() >= (self.attempt_bound() + LEASE_MARGIN / 2).as_millis() as i64
    }
}

/// Why a pipeline ended.
enum Ended {
    /// Nothing is due now.
    Idle,
    /// The configuration changed: go on with the new one.
    Reconfigured,
    /// The drain deadline passed.
    Stopped,
}

/// An attempt under way: what became of it, the receiver's answer, how long it took.
type Attempting = Pin<Box<dyn Future<Output = (Settled, Response, Duration)> + Send>>;
/// An exchange with the outbox under way: the rows it leased.
type Exchanging = Pin<Box<dyn Future<Output = anyhow::Result<Vec<Leased>>> + Send>>;

/// A deliverer's state across its pipelines.
struct Deliverer<'a> {
    pool: &'a Pool,
    owner: &'a str,
    metrics: &'a Metrics,
    totals: Totals,
    bookkeeping_failures: Recurring,
    attempt_failures: Recurring,
    outbox_failures: Recurring,
    checkpoint_failures: std::sync::Mutex<Recurring>,
    /// Failed exchanges in a row, and when the next may start.
    failures_in_a_row: u32,
    retry_at: Option<Instant>,
}

/// One webhook configuration's pipeline: rows flow from the outbox through a
/// queue to at most `concurrency` attempts at once, and their outcomes back.
/// One exchange with the outbox at a time records the finished attempts and
/// leases the next rows in one transaction, while the attempts go on.
struct Pipeline {
    webhook: Webhook,
    /// Leased, not sent yet, in lease order.
    queue: VecDeque<Leased>,
    attempts: FuturesUnordered<Attempting>,
    /// Finished, not recorded yet; since when the oldest waits.
    finished: Vec<Settled>,
    finished_since: Option<Instant>,
    /// The exchange under way, with the outcomes it records and how many
    /// rows it asked for.
    exchange: Option<(Exchanging, Arc<Vec<Settled>>)>,
    asked: usize,
    /// Routing by user: `Users::room_made` when the exchange under way was asked for.
    room_when_asked: u64,
    /// The last exchange leased fewer rows than it asked for: nothing more is
    /// due until a wake or the next idle check.
    exhausted: bool,
    reconfigured: bool,
    /// With each user's events going to a URL of their own: what each user
    /// holds here.
    users: Option<Users>,
}

/// What each user holds in a pipeline routing events by user. A user has
/// at most one request in flight, so that a user's events reach their
/// channel in the order they were queued, and at most `WAVES` rows held
/// (queued or in flight), so that leasing shares the rows among users and a
/// slow user's backlog never fills the queue: the others' events go on.
/// (`WAVES` rows behind one another, each bounded by the timeouts, fit in
/// one lease, as `Webhook::lease` counts.)
#[derive(Default)]
struct Users {
    /// Rows queued or in flight, per user (`user_key`).
    held: HashMap<String, usize>,
    /// The user of each row queued or in flight.
    of_row: HashMap<i64, String>,
    /// Users with a request in flight.
    busy: HashSet<String>,
    /// How often a user with a whole share got room for more: a lease that
    /// found nothing, asked for while this count was lower, may find rows now.
    room_made: u64,
}

impl Users {
    fn leased(&mut self, event: &Leased) {
        let user = user_key(event.user_id.as_deref()).to_owned();
        *self.held.entry(user.clone()).or_default() += 1;
        self.of_row.insert(event.row_id, user);
    }

    fn is_busy(&self, event: &Leased) -> bool {
        self.busy.contains(user_key(event.user_id.as_deref()))
    }

    fn sending(&mut self, event: &Leased) {
        self.busy
            .insert(user_key(event.user_id.as_deref()).to_owned());
    }

    /// A row leaves the pipeline's hands: sent and answered (`answered`), or
    /// given back unsent. Returns whether its user had their whole share
    /// and now has room for more: leasing may find rows for them again.
    fn left(&mut self, row_id: i64, answered: Answered) -> bool {
        let Some(user) = self.of_row.remove(&row_id) else {
            return false;
        };
        if answered == Answered::Yes {
            self.busy.remove(&user);
        }
        let Some(held) = self.held.get_mut(&user) else {
            return false;
        };
        let had_share = *held >= Self::SHARE;
        *held -= 1;
        if *held == 0 {
            self.held.remove(&user);
        }
        self.room_made += u64::from(had_share);
        had_share
    }

    /// Rows a user may hold.
    const SHARE: usize = WAVES as usize;

    /// The users leasing should leave out, and each one's share.
    fn spread(&self) -> Spread {
        Spread {
            per_user: Self::SHARE,
            full: self
                .held
                .iter()
                .filter(|(_, held)| **held >= Self::SHARE)
                .map(|(user, _)| user.clone())
                .collect(),
        }
    }
}

/// Whether a row that leaves the pipeline was sent and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    Yes,
    No,
}

/// What woke a pipeline.
enum Woken {
    Attempt((Settled, Response, Duration)),
    Exchange(anyhow::Result<Vec<Leased>>),
    Timer,
    Wake,
    Stop,
    Reconfigured,
}

impl Deliverer<'_> {
    async fn pipeline(
        &mut self,
        webhook: Webhook,
        wake: &Notify,
        stop: &mut Stop,
        webhooks: &mut watch::Receiver<Webhook>,
    ) -> Ended {
        let webhook_per_user = webhook.per_user();
        let mut pipeline = Pipeline {
            webhook,
            queue: VecDeque::new(),
            attempts: FuturesUnordered::new(),
            finished: Vec::new(),
            finished_since: None,
            exchange: None,
            asked: 0,
            room_when_asked: 0,
            exhausted: false,
            reconfigured: false,
            users: webhook_per_user.then(Users::default),
        };
        loop {
            let past_deadline = stop
                .borrow()
                .is_some_and(|deadline| Instant::now() >= deadline);
            pipeline.reconfigured |= webhooks.has_changed().unwrap_or(false);
            let winding_down = past_deadline || pipeline.reconfigured;
            if winding_down {
                // Rows not sent yet go back as they were.
                while let Some(event) = pipeline.queue.pop_front() {
                    self.give_back(&mut pipeline, &event);
                }
            }
            self.dispatch(&mut pipeline, stop);
            self.start_exchange(&mut pipeline, !winding_down);
            if pipeline.is_empty() {
                return if past_deadline {
                    Ended::Stopped
                } else if pipeline.reconfigured {
                    Ended::Reconfigured
                } else {
                    Ended::Idle
                };
            }
            match pipeline.wait(self.retry_at, wake, stop, webhooks).await {
                Woken::Attempt(done) => {
                    self.attempted(&mut pipeline, done);
                    // And every other that finished meanwhile, before the next wait.
                    while let Some(Some(done)) = pipeline.attempts.next().now_or_never() {
                        self.attempted(&mut pipeline, done);
                    }
                }
                Woken::Exchange(result) => {
                    if self.exchanged(&mut pipeline, result).is_err() && past_deadline {
                        // Nothing more can be recorded in time: the leases
                        // give the rows back when they run out.
                        return Ended::Stopped;
                    }
                }
                Woken::Wake => pipeline.exhausted = false,
                Woken::Reconfigured => pipeline.reconfigured = true,
                Woken::Timer | Woken::Stop => {}
            }
        }
    }

    /// Starts attempts from the queue while fewer than `concurrency` run:
    /// the first row in queue order, or, routing by user, the first of a
    /// user with no request in flight.
    fn dispatch(&self, pipeline: &mut Pipeline, stop: &Stop) {
        while pipeline.attempts.len() < pipeline.webhook.concurrency() {
            let next = match &pipeline.users {
                None => (!pipeline.queue.is_empty()).then_some(0),
                Some(users) => pipeline
                    .queue
                    .iter()
                    .position(|event| !users.is_busy(event)),
            };
            let Some(event) = next.and_then(|at| pipeline.queue.remove(at)) else {
                return;
            };
            if !pipeline.webhook.sendable(event.lease_until) {
                self.give_back(pipeline, &event);
                continue;
            }
            if let Some(users) = &mut pipeline.users {
                users.sending(&event);
            }
            let (webhook, stop) = (pipeline.webhook.clone(), stop.clone());
            pipeline.attempts.push(Box::pin(async move {
                let started = std::time::Instant::now();
                let (settled, response) = attempt::attempt(&webhook, event, stop).await;
                (settled, response, started.elapsed())
            }));
        }
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
        });
    }

    /// Starts an exchange with the outbox, unless one runs or waits out a
    /// failure: it records what finished, and leases more rows when the queue
    /// runs low and `lease` allows.
    fn start_exchange(&self, pipeline: &mut Pipeline, lease: bool) {
        let now = Instant::now();
        if pipeline.exchange.is_some() || self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let webhook = &pipeline.webhook;
        let unsent = pipeline.queue.len() + pipeline.attempts.len();
        let held = unsent + pipeline.finished.len();
        let limit = if lease && !pipeline.exhausted && unsent <= webhook.ahead() / 2 {
            (webhook.ahead() - unsent).min(webhook.held().saturating_sub(held))
        } else {
            0
        };
        let record = !pipeline.finished.is_empty()
            && (limit > 0
                || !lease
                || unsent == 0
                || pipeline.finished.len() >= webhook.concurrency()
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
        let want = (limit > 0).then(|| {
            let now_ms = now_ms();
            Want {
                now_ms,
                lease_until: now_ms + webhook.lease().as_millis() as i64,
                limit,
                spread: pipeline.users.as_ref().map(Users::spread),
            }
        });
        let (pool, owner, recording) = (self.pool.clone(), self.owner.to_owned(), settled.clone());
        let exchanging = async move {
            store::blocking(&pool, "leasing and recording events", move |connection| {
                let now = store::timestamp(chrono::Utc::now());
                outbox::exchange(connection, &owner, &recording, &now, want)
            })
            .await
        };
        pipeline.exchange = Some((Box::pin(exchanging), settled));
        pipeline.asked = limit;
        pipeline.room_when_asked = pipeline.users.as_ref().map_or(0, |users| users.room_made);
    }

    fn attempted(
        &mut self,
        pipeline: &mut Pipeline,
        (settled, response, took): (Settled, Response, Duration),
    ) {
        let kind = match &settled.outcome {
            Outcome::Delivered => {
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

    /// Takes an exchange's result: counts what it recorded and queues what it
    /// leased; after a failure, keeps the outcomes for the next one.
    fn exchanged(
        &mut self,
        pipeline: &mut Pipeline,
        result: anyhow::Result<Vec<Leased>>,
    ) -> Result<(), ()> {
        let (_, recorded) = pipeline.exchange.take().expect("an exchange was under way");
        match result {
            Ok(leased) => {
                self.failures_in_a_row = 0;
                self.retry_at = None;
                if let Some(failures) = self.bookkeeping_failures.succeeded() {
                    tracing::info!(failures, "delivery bookkeeping works again");
                }
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
                    pipeline.exhausted = match &pipeline.users {
                        None => leased.len() < pipeline.asked,
                        Some(users) => {
                            leased.is_empty() && users.room_made == pipeline.room_when_asked
                        }
                    };
                }
                if let Some(users) = &mut pipeline.users {
                    leased.iter().for_each(|event| users.leased(event));
                }
                pipeline.queue.extend(leased);
                Ok(())
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
                Err(())
            }
        }
    }
}

impl Pipeline {
    /// A row leaves the pipeline's hands (see `Users::left`).
    fn left(&mut self, row_id: i64, answered: Answered) {
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

    /// Nothing leased is left: every row sent and recorded, or given back.
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.attempts.is_empty()
            && self.finished.is_empty()
            && self.exchange.is_none()
    }

    /// Waits for an attempt or the exchange to finish, a timer (recording
    /// finished attempts, retrying a failed exchange), a wake, a stop, or a
    /// new configuration.
    async fn wait(
        &mut self,
        retry_at: Option<Instant>,
        wake: &Notify,
        stop: &mut Stop,
        webhooks: &mut watch::Receiver<Webhook>,
    ) -> Woken {
        // While an exchange runs, the next one waits for it, not for a timer.
        let timer = match retry_at {
            _ if self.exchange.is_some() => None,
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
            exhausted,
            ..
        } = self;
        tokio::select! {
            Some(done) = attempts.next(), if !quiet => Woken::Attempt(done),
            result = async { exchange.as_mut().expect("checked").0.as_mut().await }, if exchange.is_some() => Woken::Exchange(result),
            () = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => Woken::Timer,
            () = wake.notified(), if *exhausted => Woken::Wake,
            Ok(()) = stop.changed(), if quiet => Woken::Stop,
            Ok(()) = webhooks.changed(), if quiet => Woken::Reconfigured,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(concurrency: usize) -> Webhook {
        let config = crate::config::parse(
            &format!(
                "[webhook]\nurl = \"http://127.0.0.1:9/\"\ntimeout = \"15s\"\n\
                 connect_timeout = \"5s\"\nconcurrency = {concurrency}\n"
            ),
            std::path::Path::new("."),
            None,
        )
        .unwrap();
        Webhook::new(&config.webhook).unwrap()
    }

    #[test]
    fn a_row_is_sent_only_while_its_lease_outlasts_the_attempt_by_the_margin() {
        let webhook = webhook(16);
        // 4 waves of (5 s + 15 s), and 10 s to record them.
        assert_eq!(webhook.lease(), Duration::from_secs(90));
        let now = now_ms();
        assert!(webhook.sendable(now + webhook.lease().as_millis() as i64));
        // The attempt may take 20 s; 5 s more are left for the record.
        assert!(webhook.sendable(now + 25_500));
        assert!(!webhook.sendable(now + 24_000));
        assert!(!webhook.sendable(now - 1));
    }

    #[test]
    fn the_rows_held_follow_the_concurrency_with_a_floor() {
        assert_eq!(webhook(16).ahead(), 256);
        assert_eq!(webhook(16).held(), 512);
        assert_eq!(webhook(200).ahead(), 800);
        assert_eq!(webhook(1024).held(), 8192);
    }
}
