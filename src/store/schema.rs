//! The daemon's own objects in the application's tables: its columns,
//! indexes and triggers on `price_alerts` and `quotes`, which the
//! application's tools may drop. SQLite's usual way to change a table (a new
//! table, a copy, a drop and a rename, as ORMs and migration tools do) keeps
//! none of the old table's indexes and triggers; without them every tick
//! fails (`no such index`), or, with the indexes copied and the triggers
//! not, new and re-armed alerts take no arming and no change number, and
//! never fire, or fire under an event id already used.
//!
//! The daemon looks for its objects when it starts and whenever it
//! migrates, at `check-config` (which changes nothing), every few seconds
//! after its ticks, and at once when a tick fails; it recreates what is
//! missing, with the definitions its migrations gave them (each engine's
//! `schema` module holds them; a test checks them against the migrations').
//! Where a trigger that numbers armings and changes was missing, the
//! application's writes meanwhile took none, so the repair makes up for
//! them in the transaction that recreates it:
//! - every armed alert takes a fresh arming: an application re-arm made
//!   meanwhile still gives a new event id, and no event is lost, as an
//!   armed alert's arming was never claimed;
//! - every armed alert becomes a change, which every job reads again (an
//!   insert or an edit made meanwhile is judged as it is now);
//! - quotes written meanwhile are read again by every job: the change log
//!   counts as pruned up to the repair, so a job's next tick reads every
//!   quote, as its first did.
//!
//! What it cannot recreate (a table of its own, the application's tables
//! or their contract's columns) it names: the daemon does not start, and
//! `check-config` fails with EX_DATAERR.

use super::{Connection, Result};

/// What [`audit`] found of the daemon's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Missing, and recreated by [`repair`]: `index price_alerts_level`,
    /// `trigger price_alerts_armed_on_insert`, `column price_alerts.arming`.
    pub missing: Vec<String>,
    /// Missing, and not the daemon's to recreate: `table outbox`.
    pub unrepairable: Vec<String>,
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repaired {
    /// What it recreated, as [`Audit::missing`] names it.
    pub recreated: Vec<String>,
    /// Armed alerts that took a fresh arming and a change number, because a
    /// trigger that gives them was missing.
    pub rearmed: u64,
    /// Whether every job reads every quote again, because a trigger that
    /// logs quotes' changes was missing.
    pub quotes_read_again: bool,
    /// What it could not recreate.
    pub unrepairable: Vec<String>,
}

/// Which of the daemon's objects are missing, without changing anything.
pub fn audit(connection: &mut Connection) -> Result<Audit> {
    super::engine!(connection, schema::audit())
}

/// Recreates the daemon's missing objects (see the module's doc), in one
/// write transaction when anything is missing; a no-op otherwise.
pub fn repair(connection: &mut Connection) -> Result<Repaired> {
    super::engine!(connection, schema::repair())
}

/// Logs what a repair did, if anything.
pub fn log_repaired(repaired: &Repaired) {
    if !repaired.recreated.is_empty() {
        tracing::warn!(
            recreated = repaired.recreated.join(", "),
            rearmed = repaired.rearmed,
            quotes_read_again = repaired.quotes_read_again,
            "recreated the daemon's objects that a change of the application's tables dropped"
        );
    }
}

/// The error that names what cannot be recreated, if anything.
pub fn unrepairable(names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| {
        format!(
            "the database lacks {}, which price-alertd does not recreate: restore {}",
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" }
        )
    })
}

/// What `check-config` says of a database at this version, after an
/// audit: that it is writable, and what the daemon recreates when it
/// starts; or why it cannot start (EX_DATAERR, its caller names the
/// database).
pub(super) fn report(
    version: impl std::fmt::Display,
    audit: Audit,
) -> std::result::Result<String, String> {
    if let Some(error) = unrepairable(&audit.unrepairable) {
        return Err(error);
    }
    let mut report = format!("schema version {version}, writable");
    if !audit.missing.is_empty() {
        report.push_str(&format!(
            "; the application's tables lost {} of the daemon's objects, recreated at start: {}",
            audit.missing.len(),
            audit.missing.join(", ")
        ));
    }
    Ok(report)
}

/// Whitespace runs as one space: how the tests compare definitions.
#[cfg(test)]
pub(super) fn normalized(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}
