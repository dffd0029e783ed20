//! One evaluation tick, and one delivery pass, as a job run does them, from
//! the library.

use std::sync::Arc;

use super::*;
use price_alertd::config::{Config, Scope};
use price_alertd::deliver::{self, Totals, Webhook};
use price_alertd::evaluate::{self, TickOptions, TickReport};
use price_alertd::store::Pool;
use tokio::sync::{Notify, watch};

/// A config whose quotes stay fresh for a day of injected time, for ticks
/// with their clock injected ([`tick_at`]).
pub fn day_fresh_config(db: &Db) -> Config {
    let mut config = lib_config(db, "http://127.0.0.1:9/events");
    config.prices.max_age = std::time::Duration::from_secs(86_400);
    config
}

/// `minutes` after `at`.
pub fn minutes(at: chrono::DateTime<chrono::Utc>, minutes: i64) -> chrono::DateTime<chrono::Utc> {
    at + chrono::Duration::minutes(minutes)
}

/// Sets AAPL's quote, stamped `at`.
pub fn aapl_quote_at(db: &Db, price: f64, at: chrono::DateTime<chrono::Utc>) {
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at) VALUES ('AAPL', $1, $2)
         ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
        values![price, price_alertd::store::timestamp(at)],
    );
}

/// One evaluation tick, as a job run does it.
pub fn tick(db: &Db, config: &Config) -> TickReport {
    tick_scoped(db, config, &Scope::all())
}

/// One evaluation tick over the tickers of `scope`.
pub fn tick_scoped(db: &Db, config: &Config, scope: &Scope) -> TickReport {
    let workers = evaluate::thread_pool(config.evaluator.threads).unwrap();
    tick_on(
        &db.pool(config.evaluator.threads as u32 + 2),
        &workers,
        config,
        scope,
    )
}

/// One evaluation tick as of `now` (quotes' age, expiries and cooldowns
/// are judged by it).
pub fn tick_at(db: &Db, config: &Config, now: chrono::DateTime<chrono::Utc>) -> TickReport {
    let workers = evaluate::thread_pool(config.evaluator.threads).unwrap();
    tick_on_at(
        &db.pool(config.evaluator.threads as u32 + 2),
        &workers,
        config,
        &Scope::all(),
        now,
    )
}

/// One evaluation tick with a given pool and threads, as one daemon runs it.
pub fn tick_on(
    pool: &Pool,
    workers: &rayon::ThreadPool,
    config: &Config,
    scope: &Scope,
) -> TickReport {
    tick_on_at(pool, workers, config, scope, chrono::Utc::now())
}

/// [`tick_on`] as of `now`.
pub fn tick_on_at(
    pool: &Pool,
    workers: &rayon::ThreadPool,
    config: &Config,
    scope: &Scope,
    now: chrono::DateTime<chrono::Utc>,
) -> TickReport {
    let memory = evaluate::TickMemory::default();
    let options = job_options(config, scope, &memory, None, false);
    evaluate::tick_at(workers, pool, &options, now).unwrap()
}

/// The options of a tick of the config's job (named `evaluate`) over
/// `scope`, with the daemon's head start and pages: `fetched` the tickers
/// whose quotes were fetched (`None`: every quote as written), `unwritten`
/// whether it may carry its progress, as a reacting job's may.
pub fn job_options<'a>(
    config: &'a Config,
    scope: &'a Scope,
    memory: &'a evaluate::TickMemory,
    fetched: Option<&'a std::collections::HashSet<String>>,
    unwritten: bool,
) -> TickOptions<'a> {
    TickOptions {
        job: "evaluate",
        evaluator: &config.evaluator,
        max_age: config.prices.max_age,
        scope,
        fetched,
        memory,
        claimed: &|_| {},
        lessee: None,
        head_start: evaluate::HEAD_START,
        head_start_after: evaluate::HEAD_START_AFTER,
        page: evaluate::PAGE,
        unwritten,
    }
}

/// Delivers what is pending for up to the drain time, as `run-job` does after
/// its tick.
pub fn deliver_pending(pool: &Pool, config: &Config) -> Totals {
    deliver_pending_as(pool, config, "test")
}

/// [`deliver_pending`] by a deliverer named `owner` (the name its leases
/// carry), as one of several daemons' would.
pub fn deliver_pending_as(pool: &Pool, config: &Config, owner: &str) -> Totals {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (_webhook, webhooks) = watch::channel(Webhook::new(&config.webhook).unwrap());
        let deadline = tokio::time::Instant::now() + config.webhook.drain_timeout;
        let (_stop, stop) = watch::channel(Some(deadline));
        deliver::run(
            pool.clone(),
            webhooks,
            Arc::new(deliver::Handoff::new(owner.into(), Arc::new(Notify::new()))),
            stop,
            Arc::default(),
        )
        .await
    })
}
