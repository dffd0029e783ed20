//! Statements the engines run unchanged, and their row mappers, written
//! once. A shared statement numbers its parameters `$1`, `$2`, ... in order
//! of first use: PostgreSQL reads them so, and SQLite reads `$N` as a named
//! parameter numbered by its first appearance, which is then the same
//! number: SQLite's engine checks it as it prepares each one, in debug
//! builds (every test's: `sqlite::engine::prepare_shared`).
//! A word the engines spell differently (the clock, what `enabled` is set
//! to) is a placeholder that each engine renders ([`PerEngine`]). Where the
//! engines really differ (the claim, leases, change numbers, migrations,
//! notifications, typing of what the application wrote), each keeps its own
//! SQL.

use std::sync::OnceLock;

use crate::condition::{Cmp, Indexed, Range};

/// An alert's level, the number its condition compares the price with (see
/// `condition::REACH`): the target for `above`, `below`, the crossings and a
/// channel's lower level; for the moving-% conditions the price at which
/// the move is reached. `price_alerts_level` indexes it (for enabled
/// alerts), so the alerts a price can trigger are a range; the reads repeat
/// it verbatim, as both engines need to match the index. A condition whose
/// level is not its target is named here, and changing it is a migration.
pub(super) const LEVEL: &str = "CASE condition \
     WHEN 'moving_up_pct' THEN reference_price * (1 + target_price / 100.0) \
     WHEN 'moving_down_pct' THEN reference_price * (1 - target_price / 100.0) \
     ELSE target_price END";

/// A range of `condition::REACH` as SQL bounds, `AND`ed: `level` is how the
/// engine writes [`LEVEL`], and `value` how it writes each bound's value.
pub(super) fn reach_bounds(
    range: &Range,
    level: &str,
    mut value: impl FnMut(usize, crate::condition::Value) -> String,
) -> String {
    let bounds: Vec<String> = range
        .bounds
        .iter()
        .enumerate()
        .map(|(at, &(column, cmp, bound))| {
            let column = match column {
                Indexed::Level => level,
                Indexed::Upper => "upper_price",
            };
            let cmp = match cmp {
                Cmp::Lt => "<",
                Cmp::Le => "<=",
                Cmp::Gt => ">",
                Cmp::Ge => ">=",
            };
            format!("{column} {cmp} {}", value(at, bound))
        })
        .collect();
    bounds.join(" AND ")
}

/// The columns and conditions the ranges of `condition::REACH` bound, each
/// once: every level or channel upper level a move can reach an alert by.
pub(super) fn reached_levels() -> &'static [(Indexed, &'static str)] {
    static LEVELS: OnceLock<Vec<(Indexed, &'static str)>> = OnceLock::new();
    LEVELS.get_or_init(|| {
        let mut levels = Vec::new();
        for range in crate::condition::REACH {
            for &(column, _, _) in range.bounds {
                let level = (column, range.condition.name());
                if !levels.contains(&level) {
                    levels.push(level);
                }
            }
        }
        levels
    })
}

/// The columns of one ticker's nearest levels around a price: for each of
/// [`reached_levels`], the greatest at or below the price and the least at
/// or above it (two columns each, NULL where there is none), each a seek
/// in its index. `level` is how the engine writes [`LEVEL`], `from` how it
/// reads an index, `enabled` its literal for an enabled alert, `ticker`
/// and `price` what it compares with.
pub(super) fn nearest_levels_columns(
    level: &str,
    from: impl Fn(Indexed) -> String,
    enabled: &str,
    [ticker, price]: [&str; 2],
) -> String {
    let columns: Vec<String> = reached_levels()
        .iter()
        .flat_map(|&(column, condition)| {
            let value = match column {
                Indexed::Level => level,
                Indexed::Upper => "upper_price",
            };
            let from = from(column);
            [("max", "<="), ("min", ">=")].map(|(nearest, cmp)| {
                format!(
                    "(SELECT {nearest}({value}) FROM {from} WHERE ticker = {ticker} \
                     AND condition = '{condition}' AND enabled = {enabled} AND {value} {cmp} {price})"
                )
            })
        })
        .collect();
    columns.join(", ")
}

/// A ticker's nearest levels from a row of [`nearest_levels_columns`],
/// each column as `number` reads it: `None` for no level, or for one that
/// is not a number (SQLite's text, which sorts above every number, and
/// PostgreSQL's NaN, which does too: either is on the same side of every
/// price, which no move changes).
pub(super) fn nearest_of<E>(
    mut number: impl FnMut(usize) -> Result<Option<f64>, E>,
) -> Result<super::changes::Nearest, E> {
    let mut nearest = super::changes::Nearest {
        below: None,
        above: None,
    };
    for at in 0..reached_levels().len() {
        if let Some(below) = number(2 * at)?.filter(|level| !level.is_nan()) {
            nearest.below = Some(nearest.below.map_or(below, |known| known.max(below)));
        }
        if let Some(above) = number(2 * at + 1)?.filter(|level| !level.is_nan()) {
            nearest.above = Some(nearest.above.map_or(above, |known| known.min(above)));
        }
    }
    Ok(nearest)
}

/// A shared statement with words each engine spells its own way: `{now_ms}`,
/// the database's "now, in unix milliseconds" (this host's for SQLite, where
/// every process on the file runs here; the server's for PostgreSQL, so that
/// members whose clocks disagree still agree on leases), and `{true}` and
/// `{false}`, what `enabled` is set to (SQLite's integers; on PostgreSQL the
/// untyped literals '1' and '0', which the server reads as the column's
/// type, an integer or a boolean). Rendered once per engine.
pub(super) struct PerEngine {
    text: &'static str,
    pub(super) sqlite: OnceLock<&'static str>,
    pub(super) postgres: OnceLock<&'static str>,
}

impl PerEngine {
    pub(super) const fn new(text: &'static str) -> PerEngine {
        PerEngine {
            text,
            sqlite: OnceLock::new(),
            postgres: OnceLock::new(),
        }
    }

    /// The text with the engine's words for its placeholders. Each
    /// statement is rendered once per engine and kept for the process's life
    /// (the engines cache prepared statements by their text).
    pub(super) fn render(
        &self,
        slot: &'static OnceLock<&'static str>,
        [now_ms, yes, no]: [&str; 3],
    ) -> &'static str {
        slot.get_or_init(|| {
            let text = self
                .text
                .replace("{now_ms}", now_ms)
                .replace("{true}", yes)
                .replace("{false}", no);
            Box::leak(text.into_boxed_str())
        })
    }
}

/// A value either engine binds.
pub(super) trait Param {
    fn sqlite(&self) -> &dyn rusqlite::ToSql;
    fn postgres(&self) -> &(dyn postgres::types::ToSql + Sync);
}

impl<T: rusqlite::ToSql + postgres::types::ToSql + Sync> Param for T {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        self
    }

    fn postgres(&self) -> &(dyn postgres::types::ToSql + Sync) {
        self
    }
}

/// A value either engine reads.
pub(super) trait Column:
    rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>
{
}

impl<T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>> Column for T {}

/// A row of either engine.
pub(super) trait Row {
    type Error;
    fn get<T: Column>(&self, index: usize) -> Result<T, Self::Error>;
}

impl Row for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn get<T: Column>(&self, index: usize) -> rusqlite::Result<T> {
        rusqlite::Row::get(self, index)
    }
}

impl Row for postgres::Row {
    type Error = postgres::Error;

    fn get<T: Column>(&self, index: usize) -> Result<T, postgres::Error> {
        self.try_get(index)
    }
}

/// A connection of either engine, running a shared statement (prepared once
/// per connection).
pub(super) trait Statements {
    type Error;
    type Row<'r>: Row<Error = Self::Error>;

    /// A per_engine statement's text for this engine.
    fn per_engine(sql: &'static PerEngine) -> &'static str;

    /// Runs `call` in one write transaction (SQLite: `BEGIN IMMEDIATE`, so
    /// that it never has to upgrade a read lock), committed if it succeeds.
    fn write_transaction<T>(
        &mut self,
        call: impl FnOnce(&mut Self) -> Result<T, Self::Error>,
    ) -> Result<T, Self::Error>;

    /// Runs `sql`; how many rows it changed.
    fn execute(&mut self, sql: &'static str, params: &[&dyn Param]) -> Result<u64, Self::Error>;

    /// Runs `sql` for one row, or none: the first row through `map`.
    fn query_first<T>(
        &mut self,
        sql: &'static str,
        params: &[&dyn Param],
        map: impl FnMut(&Self::Row<'_>) -> Result<T, Self::Error>,
    ) -> Result<Option<T>, Self::Error> {
        Ok(self.query(sql, params, map)?.into_iter().next())
    }

    /// Runs `sql`, each row through `map`.
    fn query<T>(
        &mut self,
        sql: &'static str,
        params: &[&dyn Param],
        map: impl FnMut(&Self::Row<'_>) -> Result<T, Self::Error>,
    ) -> Result<Vec<T>, Self::Error>;
}

/// Runs `call`; should it panic, `roll_back` first, so that a pooled
/// connection never goes back to the pool inside a transaction.
pub(super) fn rolled_back_on_panic<C, T>(
    connection: &mut C,
    call: impl FnOnce(&mut C) -> T,
    roll_back: impl FnOnce(&mut C),
) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&mut *connection))) {
        Ok(value) => value,
        Err(panic) => {
            roll_back(connection);
            std::panic::resume_unwind(panic)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgresql::PgConnection;

    #[test]
    fn a_write_transaction_rolls_back_on_an_error_and_on_a_panic() {
        let mut connection = rusqlite::Connection::open_in_memory().unwrap();
        connection
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let failed: rusqlite::Result<()> = connection.write_transaction(|connection| {
            Statements::execute(connection, "INSERT INTO t VALUES ($1)", &[&1_i64])?;
            Err(rusqlite::Error::InvalidQuery)
        });
        assert!(failed.is_err());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            connection.write_transaction(|connection| -> rusqlite::Result<()> {
                Statements::execute(connection, "INSERT INTO t VALUES ($1)", &[&2_i64]).unwrap();
                panic!("a panic mid-transaction")
            })
        }));
        assert!(panicked.is_err());
        assert!(connection.is_autocommit(), "left inside a transaction");
        let committed = connection.write_transaction(|connection| {
            Statements::execute(connection, "INSERT INTO t VALUES ($1)", &[&3_i64])
        });
        assert_eq!(committed.unwrap(), 1);
        let rows = Statements::query(&mut connection, "SELECT x FROM t", &[], |row| {
            Row::get::<i64>(row, 0)
        })
        .unwrap();
        assert_eq!(rows, vec![3]);
    }

    #[test]
    fn each_engine_spells_its_own_words() {
        let sqlite =
            <rusqlite::Connection as Statements>::per_engine(&super::super::alerts::DISABLE);
        assert!(
            sqlite.contains("enabled = 0") && sqlite.contains("enabled = 1"),
            "{sqlite}"
        );
        let postgres = <PgConnection as Statements>::per_engine(&super::super::alerts::DISABLE);
        assert!(
            postgres.contains("enabled = '0'") && postgres.contains("enabled = '1'"),
            "{postgres}"
        );
        for statement in super::super::cluster::STATEMENTS {
            let sqlite = <rusqlite::Connection as Statements>::per_engine(statement);
            let postgres = <PgConnection as Statements>::per_engine(statement);
            assert!(!sqlite.contains('{') && !postgres.contains('{'), "{sqlite}");
        }
        let take = <PgConnection as Statements>::per_engine(super::super::cluster::STATEMENTS[0]);
        assert!(take.contains("clock_timestamp()"), "{take}");
    }
}
