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

use std::collections::HashSet;

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
    connection.engine().audit()
}

/// Recreates the daemon's missing objects (see the module's doc), in one
/// write transaction when anything is missing; a no-op otherwise.
pub fn repair(connection: &mut Connection) -> Result<Repaired> {
    connection.engine().repair()
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

/// What recreating one of the daemon's objects makes up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keeps {
    /// Nothing: an index, or a column the alerts hold no state in.
    Nothing,
    /// Armings and alerts' change numbers: while it was missing, the
    /// application's inserts, re-arms and edits took none.
    Armings,
    /// Quotes' changes: while it was missing, the application's quote
    /// writes logged none.
    QuoteChanges,
}

/// An index or a trigger of the daemon's, on one of the application's
/// tables, as an engine's migrations made it.
pub(super) struct Object {
    pub(super) kind: &'static str,
    pub(super) name: &'static str,
    pub(super) sql: String,
    pub(super) keeps: Keeps,
}

impl Object {
    pub(super) fn index(name: &'static str, sql: String) -> Object {
        Object {
            kind: "index",
            name,
            sql,
            keeps: Keeps::Nothing,
        }
    }

    pub(super) fn trigger(name: &'static str, sql: String, keeps: Keeps) -> Object {
        Object {
            kind: "trigger",
            name,
            sql,
            keeps,
        }
    }

    /// `index price_alerts_level`, as [`Audit`] names it.
    pub(super) fn named(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// A column of `price_alerts` beyond the contract's (the application's
/// optional ones, added if it has none, and the daemon's), as an engine adds
/// it: its name, its type and default, and what re-adding it makes up for.
/// Re-added empty, what one of the daemon's held is gone: `arming` and
/// `change_seq` are made up for (every armed alert is re-armed); a
/// repeating alert waiting out a cooldown (`rearm_at`) or for its price
/// (`return_below`, `return_above`) waits until it is re-armed by hand.
pub(super) type Column = (&'static str, &'static str, Keeps);

/// The contract's columns of the application's tables, which only the
/// application can give back.
pub(super) const CONTRACT_COLUMNS: [&str; 14] = [
    "price_alerts.id",
    "price_alerts.ticker",
    "price_alerts.condition",
    "price_alerts.target_price",
    "price_alerts.reference_price",
    "price_alerts.enabled",
    "price_alerts.triggered_at",
    "price_alerts.triggered_price",
    "price_alerts.created_at",
    "price_alerts.user_id",
    "price_alerts.note",
    "quotes.ticker",
    "quotes.price",
    "quotes.updated_at",
];

/// What is missing, as an engine found it.
pub(super) struct Missing {
    pub(super) objects: Vec<Object>,
    pub(super) columns: Vec<Column>,
    pub(super) unrepairable: Vec<String>,
}

impl Missing {
    /// Of `objects` and `columns`, and of `required` (the tables, and what
    /// else the engine cannot recreate, as `table outbox`), those not in
    /// `present` (`table x`, `index x`, `trigger x`, `function x`, and
    /// `column table.x`). Objects on a missing table or column cannot be
    /// made: what is missing is said once, as that table or column.
    pub(super) fn of(
        present: &HashSet<String>,
        required: &[String],
        objects: Vec<Object>,
        columns: &[Column],
    ) -> Missing {
        let mut unrepairable: Vec<String> = required
            .iter()
            .filter(|named| !present.contains(*named))
            .cloned()
            .collect();
        unrepairable.extend(
            CONTRACT_COLUMNS
                .iter()
                .filter(|column| {
                    let table = column.split('.').next().unwrap_or_default();
                    present.contains(&format!("table {table}"))
                        && !present.contains(&format!("column {column}"))
                })
                .map(|column| format!("column {column}")),
        );
        let repairable = unrepairable.is_empty();
        Missing {
            objects: objects
                .into_iter()
                .filter(|object| repairable && !present.contains(&object.named()))
                .collect(),
            columns: columns
                .iter()
                .filter(|(name, _, _)| {
                    repairable && !present.contains(&format!("column price_alerts.{name}"))
                })
                .copied()
                .collect(),
            unrepairable,
        }
    }

    /// What it names, as [`Audit::missing`] does.
    pub(super) fn names(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|(name, _, _)| format!("column price_alerts.{name}"))
            .chain(self.objects.iter().map(Object::named))
            .collect()
    }

    /// Whether recreating what is missing makes up for `keeps`.
    pub(super) fn keeps(&self, keeps: Keeps) -> bool {
        self.objects.iter().any(|object| object.keeps == keeps)
            || self.columns.iter().any(|column| column.2 == keeps)
    }

    /// The statements that recreate it, in order: the columns, then the
    /// indexes and triggers that may name them.
    pub(super) fn statements(&self) -> Vec<String> {
        self.columns
            .iter()
            // Names and types of ours, never input: they cannot be parameters.
            .map(|(name, kind, _)| format!("ALTER TABLE price_alerts ADD COLUMN {name} {kind}"))
            .chain(self.objects.iter().map(|object| object.sql.clone()))
            .collect()
    }

    /// What recreating it did, before what it makes up for.
    pub(super) fn recreated(&self) -> Repaired {
        Repaired {
            recreated: self.names(),
            unrepairable: self.unrepairable.clone(),
            ..Repaired::default()
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.columns.is_empty()
    }

    pub(super) fn audit(self) -> Audit {
        Audit {
            missing: self.names(),
            unrepairable: self.unrepairable,
        }
    }
}

/// Whitespace runs as one space: how the tests compare definitions.
#[cfg(test)]
pub(super) fn normalized(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}
