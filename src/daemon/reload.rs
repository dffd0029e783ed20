//! A reload's new configuration: read again, refused whole with every
//! problem logged, or taken.

use crate::config::{Config, ConfigOrigin};

/// Why a reload was refused (each problem was logged).
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("{count} error{} in {origin}", if *.count == 1 { "" } else { "s" })]
    Invalid { count: usize, origin: String },
    #[error("reading the configuration panicked")]
    Panicked,
}

/// Re-reads the configuration; on any error logs every problem and returns
/// why it was refused, so the running configuration stays.
pub(super) async fn reload(source: &ConfigOrigin, running: &Config) -> Result<Config, Refused> {
    let loading = source.clone();
    let loaded = tokio::task::spawn_blocking(move || loading.load()).await;
    let new = match loaded {
        Ok(Ok(new)) => new,
        Ok(Err(errors)) => {
            for error in &errors.errors {
                tracing::error!(config = %errors.origin, %error, "invalid configuration");
            }
            tracing::error!(
                errors = errors.errors.len(),
                "reload refused; the running jobs stay as they were"
            );
            return Err(Refused::Invalid {
                count: errors.errors.len(),
                origin: errors.origin.to_string(),
            });
        }
        Err(error) => {
            tracing::error!(%error, "reading the configuration panicked; the running jobs stay as they were");
            return Err(Refused::Panicked);
        }
    };
    log_warnings(source, &new);
    if new.database.engine != running.database.engine
        || new.evaluator.threads != running.evaluator.threads
    {
        tracing::warn!("changes to [database] and [evaluator] take effect at the next restart");
    }
    tracing::info!(
        "a reload applies [webhook] and [[jobs]]; [database], [evaluator], [prices], [metrics] and [log] apply at the next restart"
    );
    Ok(new)
}

/// Logs what is wrong in a configuration that does not stop the daemon.
pub(super) fn log_warnings(source: &ConfigOrigin, config: &Config) {
    for warning in &config.warnings {
        tracing::warn!(config = %source.describe(), %warning, "configuration");
    }
}
