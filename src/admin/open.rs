//! Opening the database for a command: to read only, or to write.

use crate::config::Config;
use crate::store;

/// Opens the database for a command that only reads: never created, never
/// migrated. (Its errors name the database; `status` shows it.)
pub(super) fn connect_to_read(config: &Config) -> anyhow::Result<store::Connection> {
    store::open_read_only(&config.database)
}

/// Opens (and migrates, if this version is newer) the existing database for a
/// command that writes.
pub(super) fn connect(config: &Config) -> anyhow::Result<store::Connection> {
    store::open_existing(&config.database)
}
