//! price-alertd: evaluates price alerts on cron schedules and notifies a
//! webhook exactly once per triggered alert. The binary and `tests/` share this
//! library; ARCHITECTURE.md maps its modules.

pub mod admin;
pub mod alert;
pub mod bounded;
pub mod condition;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod docs;
pub mod evaluate;
pub mod event;
pub mod freshness;
pub mod http_client;
pub mod lock;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod priority;
pub mod quotes;
pub mod recurring;
pub mod schedule;
pub mod serving;
pub mod signals;
pub mod standing;
pub mod store;
pub mod stream;
pub mod systemd;
pub mod time;
