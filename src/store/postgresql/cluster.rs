//! PostgreSQL: members and fire times (see `store::cluster`). Lease times
//! come from the server's clock (`clock_timestamp()`), never from a member's:
//! members on hosts whose clocks disagree still agree on who holds what.

use super::PgConnection;
use crate::store::cluster::{Finish, Fire, MEMORY_MS, Me, Member};

use super::PgResult as Result;

/// Now, in unix milliseconds, by the server's clock.
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}

/// One statement: a member racing another waits for the other's row, then
/// sees it held (`WHERE` on the conflicting row) and takes nothing.
pub fn take_fire(
    connection: &mut PgConnection,
    fire: &Fire,
    me: &str,
    lease_ms: i64,
) -> Result<Option<u32>> {
    let statement = connection.prepared(concat!(
        "INSERT INTO job_fires (job, fire_time, state, member, lease_until, started_at)
         VALUES ($1, $2, 'running', $3, ",
        now_ms!(),
        " + $4, ",
        now_ms!(),
        ")
         ON CONFLICT (job, fire_time) DO UPDATE SET member = excluded.member,
             lease_until = excluded.lease_until, started_at = excluded.started_at,
             runs = job_fires.runs + 1
         WHERE job_fires.state = 'running' AND job_fires.lease_until < ",
        now_ms!(),
        "
         RETURNING runs"
    ))?;
    connection
        .client()
        .query_opt(&statement, &[&fire.job, &fire.at_ms, &me, &lease_ms])?
        .map(|row| Ok(row.try_get::<_, i32>(0)?.max(0) as u32))
        .transpose()
}

pub fn finish_fire(
    connection: &mut PgConnection,
    fire: &Fire,
    me: &str,
    finish: Finish,
) -> Result<()> {
    let statement = connection.prepared(concat!(
        "UPDATE job_fires SET state = $4, finished_at = ",
        now_ms!(),
        ", lease_until = ",
        now_ms!(),
        " WHERE job = $1 AND fire_time = $2 AND member = $3 AND state = 'running'"
    ))?;
    connection
        .client()
        .execute(&statement, &[&fire.job, &fire.at_ms, &me, &finish.state()])?;
    Ok(())
}

pub fn heartbeat(connection: &mut PgConnection, me: &Me, lease_ms: i64) -> Result<Vec<Fire>> {
    let beat = connection.prepared(concat!(
        "INSERT INTO cluster_members (member, host, pid, version, started_at, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, ",
        now_ms!(),
        ")
         ON CONFLICT (member) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
    ))?;
    let renew = connection.prepared(concat!(
        "UPDATE job_fires SET lease_until = ",
        now_ms!(),
        " + $2 WHERE member = $1 AND state = 'running'"
    ))?;
    let forget_fires = connection.prepared(concat!(
        "DELETE FROM job_fires WHERE state <> 'running' AND fire_time < ",
        now_ms!(),
        " - $1"
    ))?;
    let forget_members = connection.prepared(concat!(
        "DELETE FROM cluster_members WHERE heartbeat_at < ",
        now_ms!(),
        " - $1"
    ))?;
    let supersede = connection.prepared(concat!(
        "UPDATE job_fires SET state = 'superseded', finished_at = ",
        now_ms!(),
        " WHERE state = 'running' AND lease_until < ",
        now_ms!(),
        " AND EXISTS (SELECT 1 FROM job_fires AS later
                       WHERE later.job = job_fires.job AND later.fire_time > job_fires.fire_time)"
    ))?;
    let expired = connection.prepared(concat!(
        "SELECT job, fire_time FROM job_fires WHERE state = 'running' AND lease_until < ",
        now_ms!(),
        " ORDER BY fire_time LIMIT 16"
    ))?;
    let mut transaction = connection.client().transaction()?;
    transaction.execute(
        &beat,
        &[
            &me.member,
            &me.host,
            &(me.pid as i64),
            &me.version,
            &me.started_at,
        ],
    )?;
    transaction.execute(&renew, &[&me.member, &lease_ms])?;
    transaction.execute(&forget_fires, &[&MEMORY_MS])?;
    transaction.execute(&forget_members, &[&MEMORY_MS])?;
    transaction.execute(&supersede, &[])?;
    let fires = transaction
        .query(&expired, &[])?
        .iter()
        .map(|row| {
            Ok(Fire {
                job: row.try_get(0)?,
                at_ms: row.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    transaction.commit()?;
    Ok(fires)
}

pub fn leave(connection: &mut PgConnection, me: &str) -> Result<()> {
    let statement = connection.prepared("DELETE FROM cluster_members WHERE member = $1")?;
    connection.client().execute(&statement, &[&me])?;
    Ok(())
}

pub fn members(connection: &mut PgConnection) -> Result<Vec<Member>> {
    let statement = connection.prepared(concat!(
        "SELECT member, host, pid, version, started_at, heartbeat_at, ",
        now_ms!(),
        " - heartbeat_at FROM cluster_members ORDER BY host, pid, member"
    ))?;
    connection
        .client()
        .query(&statement, &[])?
        .iter()
        .map(|row| {
            Ok(Member {
                member: row.try_get(0)?,
                host: row.try_get(1)?,
                pid: row.try_get::<_, i64>(2)?.max(0) as u32,
                version: row.try_get(3)?,
                started_at: row.try_get(4)?,
                heartbeat_at: crate::store::millis_to_text(row.try_get(5)?),
                heartbeat_age_ms: row.try_get(6)?,
            })
        })
        .collect()
}
