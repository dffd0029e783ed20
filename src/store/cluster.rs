//! Daemons sharing one database: who is there (members and their
//! heartbeats), and which member does each fire time's work. Every daemon
//! books every fire time of its jobs; when one comes, each tries to take it
//! (`take_fire`): the first holds a lease on it, timed by the database's
//! clock, and the others leave it. The holder renews its lease with its
//! heartbeats; a fire whose holder stopped renewing (it died mid-tick) is
//! taken over by another member after the lease. Leases only save work:
//! a member that wakes up late and redoes a fire claims nothing twice.

use super::{Connection, Result};

/// A daemon process, as the others see it.
#[derive(Debug, Clone)]
pub struct Me {
    /// Unique: host, pid and a random part.
    pub member: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: String,
}

/// A member as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub member: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    /// When it last beat (RFC 3339, the database's clock).
    pub heartbeat_at: String,
    /// How long ago, by the database's clock.
    pub heartbeat_age_ms: i64,
}

/// A fire time: a job and the instant its schedule gave (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fire {
    pub job: String,
    pub at_ms: i64,
}

/// How a fire's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Done,
    Failed,
}

impl Finish {
    pub(super) fn state(self) -> &'static str {
        match self {
            Finish::Done => "done",
            Finish::Failed => "failed",
        }
    }
}

/// Takes `fire` for `me` with a lease of `lease_ms`, unless another member
/// holds it (or held it and finished). Returns how many members have started
/// it, this one included (more than 1: a takeover), or `None` when it is not
/// this member's to do.
pub fn take_fire(
    connection: &mut Connection,
    fire: &Fire,
    me: &str,
    lease_ms: i64,
) -> Result<Option<u32>> {
    super::engine!(connection, cluster::take_fire(fire, me, lease_ms))
}

/// Ends this member's hold on `fire`.
pub fn finish_fire(
    connection: &mut Connection,
    fire: &Fire,
    me: &str,
    finish: Finish,
) -> Result<()> {
    super::engine!(connection, cluster::finish_fire(fire, me, finish))
}

/// One heartbeat, in one transaction: records that `me` is alive, renews the
/// leases of the fires it holds by `lease_ms`, forgets fires and members a
/// day old, marks the fires whose holder stopped renewing as superseded when
/// a later fire of their job was taken, and returns the other expired ones,
/// oldest first, for this member to take over.
pub fn heartbeat(connection: &mut Connection, me: &Me, lease_ms: i64) -> Result<Vec<Fire>> {
    super::engine!(connection, cluster::heartbeat(me, lease_ms))
}

/// Leaves the cluster (a clean stop).
pub fn leave(connection: &mut Connection, me: &str) -> Result<()> {
    super::engine!(connection, cluster::leave(me))
}

/// The members that beat within the last day.
pub fn members(connection: &mut Connection) -> Result<Vec<Member>> {
    super::engine!(connection, cluster::members())
}

/// The tables, the same on both engines: times in unix milliseconds, by
/// the database's clock.
pub(super) const SCHEMA: &str = "
CREATE TABLE cluster_members (
    member TEXT PRIMARY KEY,           -- Me::member
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    version TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
CREATE TABLE job_fires (
    job TEXT NOT NULL,
    fire_time BIGINT NOT NULL,         -- the instant the schedule gave
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed', 'superseded')),
    member TEXT NOT NULL,              -- who holds, or held, it
    lease_until BIGINT NOT NULL,
    runs INTEGER NOT NULL DEFAULT 1,   -- members that started it: more than 1 after a takeover
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    PRIMARY KEY (job, fire_time)
);
CREATE INDEX job_fires_held ON job_fires (lease_until) WHERE state = 'running';
CREATE INDEX job_fires_time ON job_fires (fire_time);
";

/// How long fires and members are remembered.
pub(super) const MEMORY_MS: i64 = 24 * 3600 * 1000;
