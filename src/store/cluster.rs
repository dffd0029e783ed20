//! Daemons sharing one database: who is there (members and their
//! heartbeats), and which member does each fire time's work. Every daemon
//! books every fire time of its jobs; when one comes, each tries to take it
//! (`take_fire`): the first holds a lease on it, timed by the database's
//! clock, and the others leave it. The holder renews its lease with its
//! heartbeats; a fire whose holder stopped renewing (it died mid-tick) is
//! taken over by another member after the lease. Leases only save work:
//! a member that wakes up late and redoes a fire claims nothing twice.
//!
//! A job that reacts to changes has one reacting member at a time: the one
//! that holds the job's lease in `job_reactors`, taken and renewed with
//! each heartbeat (`take_reacting`), and taken by another member once it
//! ran out (its holder died) or was given back (`leave`).

use super::shared::{PerEngine, Row, Statements};
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
    connection.engine().take_fire(fire, me, lease_ms)
}

/// Ends this member's hold on `fire`.
pub fn finish_fire(
    connection: &mut Connection,
    fire: &Fire,
    me: &str,
    finish: Finish,
) -> Result<()> {
    connection.engine().finish_fire(fire, me, finish)
}

/// One heartbeat, in one transaction: records that `me` is alive, renews the
/// leases of the fires it holds by `lease_ms`, forgets fires and members a
/// day old, marks the fires whose holder stopped renewing as superseded when
/// a later fire of their job was taken, and returns the other expired ones,
/// oldest first, for this member to take over.
pub fn heartbeat(connection: &mut Connection, me: &Me, lease_ms: i64) -> Result<Vec<Fire>> {
    connection.engine().heartbeat(me, lease_ms)
}

/// Leaves the cluster (a clean stop), giving back the jobs it reacted for.
pub fn leave(connection: &mut Connection, me: &str) -> Result<()> {
    connection.engine().leave(me)
}

/// Takes or renews, for `lease_ms`, the reacting lease of each of `jobs`
/// that no other member holds, in one transaction, and gives back those of
/// `given_back`; returns the jobs of `jobs` that are now `me`'s.
pub fn take_reacting(
    connection: &mut Connection,
    jobs: &[String],
    given_back: &[String],
    me: &str,
    lease_ms: i64,
) -> Result<Vec<String>> {
    connection
        .engine()
        .take_reacting(jobs, given_back, me, lease_ms)
}

/// Each job's reacting member, while its lease runs.
pub fn reactors(connection: &mut Connection) -> Result<Vec<(String, String)>> {
    connection.engine().reactors()
}

/// The members that beat within the last day.
pub fn members(connection: &mut Connection) -> Result<Vec<Member>> {
    connection.engine().members()
}

/// One statement: a member racing another waits for the other's row (or, on
/// SQLite, for the write lock), then sees it held (`WHERE` on the
/// conflicting row) and takes nothing.
static TAKE_FIRE: PerEngine = PerEngine::new(
    "INSERT INTO job_fires (job, fire_time, state, member, lease_until, started_at)
     VALUES ($1, $2, 'running', $3, {now_ms} + $4, {now_ms})
     ON CONFLICT (job, fire_time) DO UPDATE SET member = excluded.member,
         lease_until = excluded.lease_until, started_at = excluded.started_at,
         runs = job_fires.runs + 1
     WHERE job_fires.state = 'running' AND job_fires.lease_until < {now_ms}
     RETURNING runs",
);
static FINISH_FIRE: PerEngine = PerEngine::new(
    "UPDATE job_fires SET finished_at = {now_ms}, lease_until = {now_ms}, state = $1
     WHERE job = $2 AND fire_time = $3 AND member = $4 AND state = 'running'",
);
static BEAT: PerEngine = PerEngine::new(
    "INSERT INTO cluster_members (member, host, pid, version, started_at, heartbeat_at)
     VALUES ($1, $2, $3, $4, $5, {now_ms})
     ON CONFLICT (member) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
);
static RENEW: PerEngine = PerEngine::new(
    "UPDATE job_fires SET lease_until = {now_ms} + $1 WHERE member = $2 AND state = 'running'",
);
static FORGET_FIRES: PerEngine =
    PerEngine::new("DELETE FROM job_fires WHERE state <> 'running' AND fire_time < {now_ms} - $1");
static FORGET_MEMBERS: PerEngine =
    PerEngine::new("DELETE FROM cluster_members WHERE heartbeat_at < {now_ms} - $1");
static SUPERSEDE: PerEngine = PerEngine::new(
    "UPDATE job_fires SET state = 'superseded', finished_at = {now_ms}
     WHERE state = 'running' AND lease_until < {now_ms}
       AND EXISTS (SELECT 1 FROM job_fires AS later
                   WHERE later.job = job_fires.job AND later.fire_time > job_fires.fire_time)",
);
static EXPIRED: PerEngine = PerEngine::new(
    "SELECT job, fire_time FROM job_fires WHERE state = 'running' AND lease_until < {now_ms}
     ORDER BY fire_time LIMIT 16",
);
static LEAVE: PerEngine = PerEngine::new("DELETE FROM cluster_members WHERE member = $1");
static LEAVE_REACTING: PerEngine = PerEngine::new("DELETE FROM job_reactors WHERE member = $1");
/// One statement, as `TAKE_FIRE`: the holder renews, anyone takes a lease
/// that ran out.
static TAKE_REACTING: PerEngine = PerEngine::new(
    "INSERT INTO job_reactors (job, member, lease_until, since)
     VALUES ($1, $2, {now_ms} + $3, {now_ms})
     ON CONFLICT (job) DO UPDATE SET lease_until = excluded.lease_until,
         since = CASE WHEN job_reactors.member = excluded.member THEN job_reactors.since
                      ELSE excluded.since END,
         member = excluded.member
     WHERE job_reactors.member = excluded.member OR job_reactors.lease_until < {now_ms}
     RETURNING job",
);
static GIVE_BACK: PerEngine =
    PerEngine::new("DELETE FROM job_reactors WHERE job = $1 AND member = $2");
static REACTORS: PerEngine = PerEngine::new(
    "SELECT job, member FROM job_reactors WHERE lease_until >= {now_ms} ORDER BY job",
);
static MEMBERS: PerEngine = PerEngine::new(
    "SELECT member, host, pid, version, started_at, heartbeat_at, {now_ms} - heartbeat_at
     FROM cluster_members ORDER BY host, pid, member",
);

/// Every statement of this module (a test checks their parameters).
#[cfg(test)]
pub(super) static STATEMENTS: [&PerEngine; 14] = [
    &TAKE_FIRE,
    &FINISH_FIRE,
    &BEAT,
    &RENEW,
    &FORGET_FIRES,
    &FORGET_MEMBERS,
    &SUPERSEDE,
    &EXPIRED,
    &LEAVE,
    &MEMBERS,
    &LEAVE_REACTING,
    &TAKE_REACTING,
    &GIVE_BACK,
    &REACTORS,
];

pub(super) fn take_fire_on<C: Statements>(
    connection: &mut C,
    fire: &Fire,
    me: &str,
    lease_ms: i64,
) -> std::result::Result<Option<u32>, C::Error> {
    let runs = connection.write_transaction(|connection| {
        connection.query_first(
            C::per_engine(&TAKE_FIRE),
            &[&fire.job, &fire.at_ms, &me, &lease_ms],
            |row| row.get::<i32>(0),
        )
    })?;
    Ok(runs.map(|runs| runs.max(0) as u32))
}

pub(super) fn finish_fire_on<C: Statements>(
    connection: &mut C,
    fire: &Fire,
    me: &str,
    finish: Finish,
) -> std::result::Result<(), C::Error> {
    connection.execute(
        C::per_engine(&FINISH_FIRE),
        &[&finish.state(), &fire.job, &fire.at_ms, &me],
    )?;
    Ok(())
}

pub(super) fn heartbeat_on<C: Statements>(
    connection: &mut C,
    me: &Me,
    lease_ms: i64,
) -> std::result::Result<Vec<Fire>, C::Error> {
    connection.write_transaction(|connection| {
        connection.execute(
            C::per_engine(&BEAT),
            &[
                &me.member,
                &me.host,
                &i64::from(me.pid),
                &me.version,
                &me.started_at,
            ],
        )?;
        connection.execute(C::per_engine(&RENEW), &[&lease_ms, &me.member])?;
        connection.execute(C::per_engine(&FORGET_FIRES), &[&MEMORY_MS])?;
        connection.execute(C::per_engine(&FORGET_MEMBERS), &[&MEMORY_MS])?;
        connection.execute(C::per_engine(&SUPERSEDE), &[])?;
        connection.query(C::per_engine(&EXPIRED), &[], |row| {
            Ok(Fire {
                job: row.get(0)?,
                at_ms: row.get(1)?,
            })
        })
    })
}

pub(super) fn leave_on<C: Statements>(
    connection: &mut C,
    me: &str,
) -> std::result::Result<(), C::Error> {
    connection.write_transaction(|connection| {
        connection.execute(C::per_engine(&LEAVE_REACTING), &[&me])?;
        connection.execute(C::per_engine(&LEAVE), &[&me])?;
        Ok(())
    })
}

pub(super) fn take_reacting_on<C: Statements>(
    connection: &mut C,
    jobs: &[String],
    given_back: &[String],
    me: &str,
    lease_ms: i64,
) -> std::result::Result<Vec<String>, C::Error> {
    connection.write_transaction(|connection| {
        for job in given_back {
            connection.execute(C::per_engine(&GIVE_BACK), &[job, &me])?;
        }
        let mut held = Vec::new();
        for job in jobs {
            let taken = connection.query_first(
                C::per_engine(&TAKE_REACTING),
                &[job, &me, &lease_ms],
                |row| row.get::<String>(0),
            )?;
            held.extend(taken);
        }
        Ok(held)
    })
}

pub(super) fn reactors_on<C: Statements>(
    connection: &mut C,
) -> std::result::Result<Vec<(String, String)>, C::Error> {
    connection.query(C::per_engine(&REACTORS), &[], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
}

pub(super) fn members_on<C: Statements>(
    connection: &mut C,
) -> std::result::Result<Vec<Member>, C::Error> {
    connection.query(C::per_engine(&MEMBERS), &[], |row| member_of(row))
}

/// A `cluster_members` row, as `MEMBERS` reads it.
fn member_of<R: Row>(row: &R) -> std::result::Result<Member, R::Error> {
    Ok(Member {
        member: row.get(0)?,
        host: row.get(1)?,
        pid: row.get::<i64>(2)?.max(0) as u32,
        version: row.get(3)?,
        started_at: row.get(4)?,
        heartbeat_at: super::millis_to_text(row.get(5)?),
        heartbeat_age_ms: row.get(6)?,
    })
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

/// Each reacting job's member (see the module's docs), the same on both
/// engines.
pub(super) const REACTORS_SCHEMA: &str = "
CREATE TABLE job_reactors (
    job TEXT PRIMARY KEY,
    member TEXT NOT NULL,              -- Me::member
    lease_until BIGINT NOT NULL,
    since BIGINT NOT NULL              -- when this member took it
);
";

/// How long fires and members are remembered.
pub(super) const MEMORY_MS: i64 = 24 * 3600 * 1000;
