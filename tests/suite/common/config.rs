//! Test configurations: the TOML a test's daemon reads, and its validated form.

use std::path::{Path, PathBuf};

use super::*;
use price_alertd::config::{self, Config};

/// Where a test config's database is: an SQLite file, or a test's [`Db`].
pub trait Database {
    /// The config file's `[database]` section.
    fn section(&self) -> String;
}

impl Database for Path {
    fn section(&self) -> String {
        format!("[database]\npath = \"{}\"\n", self.display())
    }
}

impl Database for PathBuf {
    fn section(&self) -> String {
        self.as_path().section()
    }
}

impl Database for Db {
    fn section(&self) -> String {
        Db::section(self)
    }
}

/// A TOML configuration for tests.
pub fn config_text(database: &(impl Database + ?Sized), url: &str, schedule: &str) -> String {
    format!(
        r#"
{}
[evaluator]
threads = 10

[webhook]
url = "{url}"
headers = {{ "X-EventSource-Event" = "price_alert" }}
timeout = "5s"
retry_schedule = ["200ms", "400ms"]
drain_timeout = "10s"

[[jobs]]
name = "evaluate"
kind = "evaluate"
schedule = "{schedule}"
"#,
        database.section()
    )
}

/// The validated form of [`config_text`], for tests that call the library.
pub fn lib_config(db: &Db, url: &str) -> Config {
    config::parse(&config_text(db, url, "* * * * * *"), db.dir.path(), None).unwrap()
}

/// A schedule that fires once a year: a job with it that runs did so
/// because of a change.
pub const YEARLY: &str = "0 0 0 1 1 *";

/// A config whose jobs (name, ticker patterns) all react, on a yearly
/// schedule, with metrics on `port`.
pub fn reacting_config(db: &Db, url: &str, port: u16, jobs: &[(&str, &str)]) -> String {
    let base = config_text(db, url, YEARLY);
    let (head, _) = base.split_once("[[jobs]]").unwrap();
    let mut text = format!("{head}[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    for (name, tickers) in jobs {
        text += &format!(
            "\n[[jobs]]\nname = \"{name}\"\nkind = \"evaluate\"\nschedule = \"{YEARLY}\"\n\
             on_change = true\ntickers = [\"{tickers}\"]\n"
        );
    }
    text
}
