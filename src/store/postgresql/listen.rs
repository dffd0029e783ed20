//! Notifications: `NOTIFY` when events are queued (the claim) and when
//! quotes or alerts change (the schema's triggers, migration 4), and a
//! member's listener: one connection and one thread of its own, for both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator as _;

use crate::log_recurring;
use crate::recurring::Recurring;
use crate::store::listen::heard::{Changed, Hearers, MOST_TICKERS};

use super::PgPool;

/// The channel the claim (and a replay) notifies when it queues events...
const OUTBOX_CHANNEL: &str = "price_alertd_outbox";

/// ...with this statement, in its transaction: delivered at commit.
pub(super) const NOTIFY_OUTBOX: &str = "SELECT pg_notify('price_alertd_outbox', '')";

/// The channel the schema's triggers notify when quotes or alerts change:
/// the payload is a JSON array of the tickers, or `*` for more than fit.
const CHANGES_CHANNEL: &str = "price_alertd_changes";

/// How long the listener waits for a notification before it looks whether
/// it should stop, or start or stop listening for changes; and, while its
/// connection is down, how often the change hearer is told to look for
/// itself.
const LOOK: Duration = Duration::from_secs(1);
/// The longest wait between attempts to reconnect.
const MOST_BACKOFF: Duration = Duration::from_secs(30);

/// How long the listening connection may stay quiet before the listener
/// asks the server something: over a network gone silent, the question
/// goes unanswered and the connection fails within the listener's TCP
/// user timeout (about 3 s, `connect::Silence`), so that the reacting jobs
/// fall back to looking every second within about 5 s, not after the two
/// hours of TCP's keepalives.
pub(super) const PING: Duration = Duration::from_secs(2);

/// Tells `hearers` of queued events and changed quotes or alerts, as
/// their transactions commit on any member, until `stop` is set.
/// Notifications are lost while the connection is down: after every
/// (re)connection the events hearer is woken and the change hearer told
/// [`Changed::Unknown`], and while it is down the change hearer is told
/// so every [`LOOK`] (it polls); the deliverers poll besides.
pub fn listen(
    pool: &PgPool,
    hearers: Arc<Hearers>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let manager = pool.manager.for_listening();
    std::thread::Builder::new()
        .name("listener".into())
        .spawn(move || {
            let mut backoff = LOOK;
            let mut failures = Recurring::default();
            while !stop.load(Ordering::Relaxed) {
                let listening = manager.connect().and_then(|mut client| {
                    client.batch_execute(&format!("LISTEN {OUTBOX_CHANNEL}"))?;
                    Ok(client)
                });
                let client = match listening {
                    Ok(client) => client,
                    Err(error) => {
                        log_recurring!(
                            warn,
                            failures,
                            crate::logging::error_chain(&error),
                            "listening for notifications failed: reacting jobs look for changes every second meanwhile"
                        );
                        let retry = Instant::now() + backoff;
                        while Instant::now() < retry && !stop.load(Ordering::Relaxed) {
                            hearers.changed(Changed::Unknown);
                            std::thread::sleep(LOOK.min(retry - Instant::now()));
                        }
                        backoff = (backoff * 2).min(MOST_BACKOFF);
                        continue;
                    }
                };
                backoff = LOOK;
                if let Some(failed) = failures.succeeded() {
                    tracing::info!(failed, "listening for notifications again");
                }
                hearers.new_events();
                if let Err(error) = hear(client, &hearers, &stop) {
                    log_recurring!(
                        warn,
                        failures,
                        crate::logging::error_chain(&error),
                        "the listening connection failed: reacting jobs look for changes every second until it is back"
                    );
                    hearers.changed(Changed::Unknown);
                }
            }
        })
}

/// Listens on `client` until `stop` is set or the connection fails,
/// following the change hearer's coming and going.
fn hear(mut client: Client, hearers: &Hearers, stop: &AtomicBool) -> Result<(), postgres::Error> {
    let mut changes = false;
    let mut payloads = Vec::new();
    let mut heard = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let wanted = hearers.wants_changes();
        if wanted != changes {
            let verb = if wanted { "LISTEN" } else { "UNLISTEN" };
            client.batch_execute(&format!("{verb} {CHANGES_CHANNEL}"))?;
            changes = wanted;
            if wanted {
                // Whatever changed before is the hearer's to look at.
                hearers.changed(Changed::Unknown);
            }
        }
        if heard.elapsed() >= PING {
            // Still there? (See `PING`.)
            client.batch_execute("SELECT 1")?;
            heard = Instant::now();
        }
        let mut notifications = client.notifications();
        let Some(first) = notifications.timeout_iter(LOOK).next()? else {
            continue;
        };
        heard = Instant::now();
        // Coalesce what else arrived: one call for each hearer is enough.
        payloads.clear();
        let mut events = false;
        let mut note = |notification: postgres::Notification| {
            if notification.channel() == CHANGES_CHANNEL {
                payloads.push(notification.payload().to_owned());
            } else {
                events = true;
            }
        };
        note(first);
        while let Some(more) = notifications.iter().next()? {
            note(more);
        }
        if events {
            hearers.new_events();
        }
        if !payloads.is_empty() {
            hearers.changed(tickers_of(&payloads));
        }
    }
    Ok(())
}

/// The tickers the triggers' payloads name: each a JSON array of tickers,
/// or `*` (more than a payload holds); anything else is taken as `*`.
fn tickers_of(payloads: &[String]) -> Changed {
    let mut tickers = Vec::new();
    for payload in payloads {
        match serde_json::from_str::<Vec<String>>(payload) {
            Ok(named) => tickers.extend(named),
            Err(_) => return Changed::Unknown,
        }
        if tickers.len() > MOST_TICKERS {
            return Changed::Unknown;
        }
    }
    tickers.sort_unstable();
    tickers.dedup();
    Changed::Tickers(tickers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_tickers_or_everything() {
        let payloads = |texts: &[&str]| texts.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            tickers_of(&payloads(&[r#"["B","A"]"#, r#"["A"]"#])),
            Changed::Tickers(vec!["A".into(), "B".into()])
        );
        assert_eq!(tickers_of(&payloads(&["*"])), Changed::Unknown);
        assert_eq!(
            tickers_of(&payloads(&[r#"["A"]"#, "not json"])),
            Changed::Unknown
        );
    }
}
