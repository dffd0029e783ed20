//! How SQLite runs the statements both engines share (`store::shared`).

use rusqlite::Connection;

use crate::store::shared::{Param, PerEngine, Statements, rolled_back_on_panic};

/// Prepares a statement both engines share (cached per connection). SQLite
/// reads its `$N` as named parameters, numbered by first appearance: the
/// text must number them in that order, or values would bind to the wrong
/// places. Every such statement a test runs is checked here, in debug
/// builds, against SQLite's own numbering.
pub(in crate::store) fn prepare_shared<'c>(
    connection: &'c Connection,
    sql: &str,
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    let statement = connection.prepare_cached(sql)?;
    if cfg!(debug_assertions) {
        for index in 1..=statement.parameter_count() {
            let expected = format!("${index}");
            assert_eq!(
                statement.parameter_name(index),
                Some(expected.as_str()),
                "a shared statement must number its parameters in order of first use: {sql}"
            );
        }
    }
    Ok(statement)
}

/// How SQLite runs the statements both engines share (`store::shared`).
impl Statements for rusqlite::Connection {
    type Error = rusqlite::Error;
    type Row<'r> = rusqlite::Row<'r>;

    fn per_engine(sql: &'static PerEngine) -> &'static str {
        sql.render(
            &sql.sqlite,
            ["CAST(unixepoch('subsec') * 1000 AS INTEGER)", "1", "0"],
        )
    }

    fn write_transaction<T>(
        &mut self,
        call: impl FnOnce(&mut Self) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let _turn = super::Turn::take();
        self.execute_batch("BEGIN IMMEDIATE")?;
        let result = rolled_back_on_panic(self, call, |connection| {
            let _ = connection.execute_batch("ROLLBACK");
        });
        let end = self.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
        let value = result?;
        end?;
        Ok(value)
    }

    fn execute(&mut self, sql: &'static str, params: &[&dyn Param]) -> rusqlite::Result<u64> {
        let changed = prepare_shared(self, sql)?.execute(rusqlite::params_from_iter(
            params.iter().map(|param| param.sqlite()),
        ))?;
        Ok(changed as u64)
    }

    fn query<T>(
        &mut self,
        sql: &'static str,
        params: &[&dyn Param],
        mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut statement = prepare_shared(self, sql)?;
        let rows = statement.query_map(
            rusqlite::params_from_iter(params.iter().map(|param| param.sqlite())),
            |row| map(row),
        )?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_statement_numbered_out_of_order_is_caught_as_it_is_prepared() {
        let connection = Connection::open_in_memory().unwrap();
        assert!(prepare_shared(&connection, "SELECT $1, $2, $1").is_ok());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = prepare_shared(&connection, "SELECT $2, $1");
        }));
        assert!(caught.is_err(), "$2 before $1 was not caught");
    }
}
