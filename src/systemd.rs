//! The systemd notify protocol: readiness, reloads, stopping and watchdog
//! pings. Every call is a no-op unless systemd set `$NOTIFY_SOCKET`.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "notifying systemd failed");
    }
}

/// The database is open and migrated and the jobs are scheduled.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("running")]);
}

/// A SIGHUP reload began; call [`ready`] when it is done, whatever its result.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// What the daemon is doing, as `systemctl status` shows it.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining the outbox"),
    ]);
}

/// How often to ping the watchdog, if systemd runs one for this process:
/// half its timeout, as systemd recommends.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
