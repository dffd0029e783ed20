//! OS signals, turned into a closed set of requests for the daemon's loop.

use anyhow::Context as _;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use tokio::sync::mpsc;

/// What an operator can ask of a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop scheduling, finish, drain, exit 0.
    Shutdown,
    /// SIGHUP: re-read the configuration.
    Reload,
}

/// Starts forwarding signals to `sender` from a dedicated thread (signal-hook's
/// iterator blocks, so it must not sit on a tokio worker). Dropping the handle's
/// owner does not stop it; call [`Handle::close`] to end the thread.
pub fn forward(sender: mpsc::UnboundedSender<Signal>) -> anyhow::Result<Handle> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            for number in signals.forever() {
                let signal = if number == SIGHUP {
                    Signal::Reload
                } else {
                    Signal::Shutdown
                };
                if sender.send(signal).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(handle)
}
