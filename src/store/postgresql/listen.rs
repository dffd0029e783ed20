//! The outbox's notifications: `NOTIFY` when events are queued, and a
//! member's listener, on a connection and a thread of its own, that wakes
//! its deliverer.

use std::time::Duration;

use super::PgPool;

/// The channel the claim (and a replay) notifies when it queues events...
const OUTBOX_CHANNEL: &str = "price_alertd_outbox";

/// ...with this statement, in its transaction: delivered at commit.
pub(super) const NOTIFY_OUTBOX: &str = "SELECT pg_notify('price_alertd_outbox', '')";

impl PgPool {
    /// Calls `wake` whenever a transaction that queued events commits, on any
    /// member, until `stop` is set: `LISTEN` on a connection of its own, on a
    /// thread of its own. Notifications are lost while the connection is down,
    /// so `wake` is also called after every (re)connection; the deliverers poll
    /// besides.
    pub fn listen(
        &self,
        wake: std::sync::Arc<dyn Fn() + Send + Sync>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        use postgres::fallible_iterator::FallibleIterator as _;
        use std::sync::atomic::Ordering;
        let manager = self.manager.clone();
        std::thread::Builder::new()
            .name("outbox-listener".into())
            .spawn(move || {
                let mut backoff = Duration::from_secs(1);
                while !stop.load(Ordering::Relaxed) {
                    let listening = manager.connect().and_then(|mut client| {
                        client.batch_execute(&format!("LISTEN {OUTBOX_CHANNEL}"))?;
                        Ok(client)
                    });
                    let mut client = match listening {
                        Ok(client) => client,
                        Err(error) => {
                            tracing::debug!(%error, "listening for new events failed; polling meanwhile");
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            continue;
                        }
                    };
                    backoff = Duration::from_secs(1);
                    wake();
                    while !stop.load(Ordering::Relaxed) && !client.is_closed() {
                        let mut notifications = client.notifications();
                        let next = notifications.timeout_iter(Duration::from_secs(1)).next();
                        match next {
                            Ok(Some(_)) => {
                                // Coalesce what else arrived: one wake is enough.
                                while let Ok(Some(_)) = notifications.iter().next() {}
                                wake();
                            }
                            Ok(None) => {}
                            Err(error) => {
                                tracing::debug!(%error, "the listening connection failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
            })
    }
}
