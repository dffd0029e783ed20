//! The integration tests: one crate (one link of the daemon's library, not
//! one per area), a module per area, and the helpers they share in
//! `common/`, split by concern. Every test runs real components: SQLite files
//! and a PostgreSQL cluster shared by the whole run (a database per test),
//! loopback HTTP servers, the nginx + nchan relay, the daemon binary, and a
//! headless Chromium. `bash tests/run` installs them and runs this.

#[macro_use]
mod common;

mod browser;
mod claim;
mod cli;
mod clocks;
mod cluster;
mod conformance;
mod consumers;
mod crash;
mod delivery;
mod disk;
mod explain;
mod hostile;
mod incremental;
mod kit;
mod network;
mod ops;
mod outage;
mod package;
mod policies;
mod postgresql;
mod pushpin;
mod reacting;
mod rebuild;
mod relay;
mod repeating;
mod routing;
mod semantics;
mod shared_database;
