//! Operators' commands on the database: alerts, quotes, the outbox, status.
//! They open the store like the daemon does and print for a terminal or, with
//! `--json`, for scripts.

mod alerts;
mod check;
mod explain;
mod open;
mod outbox;
mod output;
mod quotes;
mod status;
mod table;

pub use alerts::{
    AlertsList, alerts_add, alerts_cooldown, alerts_disable, alerts_list, alerts_rearm,
    alerts_snooze,
};
pub use check::{Checks, check_config};
pub use explain::alerts_explain;
pub use outbox::{Replay, outbox_list, outbox_replay, outbox_show};
pub use quotes::{quotes_list, quotes_set};
pub use status::status;
