//! A reload's new configuration: read again, refused whole with every
//! problem logged, or taken, saying which keys changed and which of them
//! wait for a restart.

use crate::config::{Config, ConfigOrigin};

/// Why a reload was refused (each problem was logged).
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("{count} error{} in {origin}", if *.count == 1 { "" } else { "s" })]
    Invalid { count: usize, origin: String },
    #[error("reading the configuration panicked")]
    Panicked,
}

/// A configuration a reload takes.
pub(super) struct Reloaded {
    pub(super) config: Config,
    /// The keys that differ from the configuration the daemon started with
    /// and apply only at a restart: a restart is pending while there are any.
    pub(super) restart_pending: Vec<String>,
}

/// Whether a reload applies `key` (a [`crate::config::Settings`] key): the
/// webhook's settings and the jobs; everything else (the database, the
/// evaluator, the quote source, metrics and logging) at the next restart.
fn applies_at_reload(key: &str) -> bool {
    key.starts_with("webhook.") || key.starts_with("jobs")
}

/// Re-reads the configuration; on any error logs every problem and returns
/// why it was refused, so the running configuration stays. Logs the keys
/// changed since `applied` (never a value) and warns of those that wait for
/// a restart; `started` is the configuration the daemon started with.
pub(super) async fn reload(
    source: &ConfigOrigin,
    started: &Config,
    applied: &Config,
) -> Result<Reloaded, Refused> {
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
    log_changes(&changed(applied, &new));
    let restart_pending: Vec<String> = started
        .settings
        .changed(&new.settings)
        .into_iter()
        .filter(|key| !applies_at_reload(key))
        .collect();
    Ok(Reloaded {
        config: new,
        restart_pending,
    })
}

/// The keys changed from `applied` to `new`, and the signing secrets when a
/// secret file's contents changed under the same key.
fn changed(applied: &Config, new: &Config) -> Vec<String> {
    let mut keys = applied.settings.changed(&new.settings);
    let bytes = |config: &Config| -> Vec<Vec<u8>> {
        config
            .webhook
            .secrets
            .iter()
            .map(|secret| secret.bytes().to_vec())
            .collect()
    };
    if bytes(applied) != bytes(new) && !keys.iter().any(|key| key.starts_with("webhook.secret")) {
        keys.push("webhook.secret_file (the secrets in it)".to_owned());
    }
    keys
}

/// Says which keys changed (names, never values) and which of them the
/// running daemon keeps until it restarts.
fn log_changes(keys: &[String]) {
    if keys.is_empty() {
        tracing::info!("configuration reloaded: no key changed");
        return;
    }
    tracing::info!(changed = %keys.join(", "), "configuration keys changed");
    let at_restart: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|key| !applies_at_reload(key))
        .collect();
    if !at_restart.is_empty() {
        tracing::warn!(
            keys = %at_restart.join(", "),
            "these keys apply only at the next restart: the daemon runs with their old values until then"
        );
    }
}

/// Logs what is wrong in a configuration that does not stop the daemon.
pub(super) fn log_warnings(source: &ConfigOrigin, config: &Config) {
    for warning in &config.warnings {
        tracing::warn!(config = %source.describe(), %warning, "configuration");
    }
}
