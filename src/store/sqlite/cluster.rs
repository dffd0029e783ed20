//! SQLite: members and fire times (see `store::cluster`). The database's
//! clock is this host's, as every process on the file runs here.

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use crate::store::cluster::{Finish, Fire, MEMORY_MS, Me, Member};

/// Now, in unix milliseconds, as SQLite tells it.
macro_rules! now_ms {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

pub fn take_fire(
    connection: &mut Connection,
    fire: &Fire,
    me: &str,
    lease_ms: i64,
) -> rusqlite::Result<Option<u32>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let runs = transaction
        .prepare_cached(concat!(
            "INSERT INTO job_fires (job, fire_time, state, member, lease_until, started_at)
             VALUES (?1, ?2, 'running', ?3, ",
            now_ms!(),
            " + ?4, ",
            now_ms!(),
            ")
             ON CONFLICT (job, fire_time) DO UPDATE SET member = excluded.member,
                 lease_until = excluded.lease_until, started_at = excluded.started_at,
                 runs = job_fires.runs + 1
             WHERE job_fires.state = 'running' AND job_fires.lease_until < ",
            now_ms!(),
            "
             RETURNING runs"
        ))?
        .query_row(params![fire.job, fire.at_ms, me, lease_ms], |row| {
            row.get(0)
        })
        .optional()?;
    transaction.commit()?;
    Ok(runs)
}

pub fn finish_fire(
    connection: &mut Connection,
    fire: &Fire,
    me: &str,
    finish: Finish,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(concat!(
            "UPDATE job_fires SET state = ?4, finished_at = ",
            now_ms!(),
            ", lease_until = ",
            now_ms!(),
            " WHERE job = ?1 AND fire_time = ?2 AND member = ?3 AND state = 'running'"
        ))?
        .execute(params![fire.job, fire.at_ms, me, finish.state()])?;
    Ok(())
}

pub fn heartbeat(
    connection: &mut Connection,
    me: &Me,
    lease_ms: i64,
) -> rusqlite::Result<Vec<Fire>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction
        .prepare_cached(concat!(
            "INSERT INTO cluster_members (member, host, pid, version, started_at, heartbeat_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ",
            now_ms!(),
            ")
             ON CONFLICT (member) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
        ))?
        .execute(params![
            me.member,
            me.host,
            me.pid,
            me.version,
            me.started_at
        ])?;
    transaction
        .prepare_cached(concat!(
            "UPDATE job_fires SET lease_until = ",
            now_ms!(),
            " + ?2 WHERE member = ?1 AND state = 'running'"
        ))?
        .execute(params![me.member, lease_ms])?;
    transaction
        .prepare_cached(concat!(
            "DELETE FROM job_fires WHERE state <> 'running' AND fire_time < ",
            now_ms!(),
            " - ?1"
        ))?
        .execute([MEMORY_MS])?;
    transaction
        .prepare_cached(concat!(
            "DELETE FROM cluster_members WHERE heartbeat_at < ",
            now_ms!(),
            " - ?1"
        ))?
        .execute([MEMORY_MS])?;
    transaction
        .prepare_cached(concat!(
            "UPDATE job_fires SET state = 'superseded', finished_at = ",
            now_ms!(),
            " WHERE state = 'running' AND lease_until < ",
            now_ms!(),
            " AND EXISTS (SELECT 1 FROM job_fires AS later
                           WHERE later.job = job_fires.job AND later.fire_time > job_fires.fire_time)"
        ))?
        .execute([])?;
    let expired = transaction
        .prepare_cached(concat!(
            "SELECT job, fire_time FROM job_fires WHERE state = 'running' AND lease_until < ",
            now_ms!(),
            " ORDER BY fire_time LIMIT 16"
        ))?
        .query_map([], |row| {
            Ok(Fire {
                job: row.get(0)?,
                at_ms: row.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    transaction.commit()?;
    Ok(expired)
}

pub fn leave(connection: &mut Connection, me: &str) -> rusqlite::Result<()> {
    connection.execute("DELETE FROM cluster_members WHERE member = ?1", [me])?;
    Ok(())
}

pub fn members(connection: &mut Connection) -> rusqlite::Result<Vec<Member>> {
    let mut statement = connection.prepare(concat!(
        "SELECT member, host, pid, version, started_at, heartbeat_at, ",
        now_ms!(),
        " - heartbeat_at FROM cluster_members ORDER BY host, pid, member"
    ))?;
    let rows = statement.query_map([], |row| {
        Ok(Member {
            member: row.get(0)?,
            host: row.get(1)?,
            pid: row.get(2)?,
            version: row.get(3)?,
            started_at: row.get(4)?,
            heartbeat_at: crate::store::millis_to_text(row.get(5)?),
            heartbeat_age_ms: row.get(6)?,
        })
    })?;
    rows.collect()
}
