//! This daemon as a member of the daemons sharing its database: its name,
//! its heartbeats, and the fire times it takes. Every member books every fire
//! time of its jobs; when one comes, the member that takes it first does its
//! work and the others leave it (`store::cluster`). The holder renews its
//! lease with each heartbeat; when a holder dies mid-run, another member
//! takes its fire over once the lease has run out. Correctness never rests on
//! this: a fire done twice claims nothing twice.

use std::sync::Mutex;
use std::time::Duration;

use crate::lock::lock;
use crate::log_recurring;
use crate::recurring::Recurring;

use crate::store::clock::{self, Offset};
use crate::store::cluster::{self, Finish, Fire, Me, Member};
use crate::store::{self, Pool};

/// How often a member beats, and how long its leases last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leases {
    /// How often a member beats, renewing its leases and looking for fires
    /// to take over.
    pub heartbeat: Duration,
    /// How long a fire stays with a member that stopped beating: a dead
    /// member's fire is taken over after at most `fire + heartbeat`.
    pub fire: Duration,
    /// How long a job's reacting lease stays with a member that stopped
    /// beating: its reacting work goes to another member after at most
    /// `reacting + heartbeat`, and at its next heartbeat after a clean stop.
    pub reacting: Duration,
}

impl Leases {
    /// Every daemon's.
    pub const DAEMON: Leases = Leases {
        heartbeat: Duration::from_secs(5),
        fire: Duration::from_secs(30),
        reacting: Duration::from_secs(15),
    };

    /// The leases in force: [`Leases::DAEMON`], but in a build for the
    /// tests, where `PRICE_ALERTD_TEST_LEASES` may give shorter ones (the
    /// heartbeat, fire and reacting leases in milliseconds, comma
    /// separated), so that a test of a takeover need not wait out 30 s.
    pub fn in_force() -> Leases {
        #[cfg(feature = "test-support")]
        {
            static LEASES: std::sync::OnceLock<Leases> = std::sync::OnceLock::new();
            *LEASES.get_or_init(|| {
                std::env::var("PRICE_ALERTD_TEST_LEASES")
                    .ok()
                    .and_then(|text| Leases::parse(&text))
                    .unwrap_or(Leases::DAEMON)
            })
        }
        #[cfg(not(feature = "test-support"))]
        Leases::DAEMON
    }

    /// `heartbeat,fire,reacting` in milliseconds.
    #[cfg(feature = "test-support")]
    pub fn parse(text: &str) -> Option<Leases> {
        let mut millis = text
            .split(',')
            .map(|part| part.trim().parse().ok().map(Duration::from_millis));
        let leases = Leases {
            heartbeat: millis.next()??,
            fire: millis.next()??,
            reacting: millis.next()??,
        };
        millis.next().is_none().then_some(leases)
    }

    /// As `PRICE_ALERTD_TEST_LEASES` gives them.
    #[cfg(feature = "test-support")]
    pub fn to_env(self) -> String {
        format!(
            "{},{},{}",
            self.heartbeat.as_millis(),
            self.fire.as_millis(),
            self.reacting.as_millis()
        )
    }
}

/// Whether `member` is beating: its last heartbeat is within the fire
/// lease, after which the others take its fire times over.
pub fn beating(member: &Member) -> bool {
    member.heartbeat_age_ms <= Leases::in_force().fire.as_millis() as i64
}

/// This process: its host, its pid and a random part, so that a restarted
/// daemon (or one in a container with the same pid) is a new member.
pub fn me() -> Me {
    let host = hostname();
    let pid = std::process::id();
    Me {
        member: format!("{host}:{pid}:{:08x}", fastrand::u32(..)),
        host,
        pid,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: store::timestamp(chrono::Utc::now()),
    }
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Whose a fire time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// This member's: first to take it.
    Mine,
    /// This member's, from a member that stopped beating while it held it.
    TakenOver,
    /// Another member holds it, or did it.
    Elsewhere,
}

/// Tries to take `fire` for `me`. When the database cannot say, the fire is
/// this member's: doing it twice is only work, and a database that cannot be
/// reached fails the run anyway. That it cannot say is logged as `failures`
/// go (when it starts, changes and ends, and once a minute).
pub async fn take(pool: &Pool, me: &str, fire: &Fire, failures: &Mutex<Recurring>) -> Taken {
    let (me, fire) = (me.to_owned(), fire.clone());
    let taken = store::blocking(pool, "taking a fire time", move |connection| {
        cluster::take_fire(
            connection,
            &fire,
            &me,
            Leases::in_force().fire.as_millis() as i64,
        )
    })
    .await;
    if taken.is_ok()
        && let Some(failed) = lock(failures).succeeded()
    {
        tracing::info!(failed, "fire times can be taken again");
    }
    match taken {
        Ok(Some(1)) => Taken::Mine,
        Ok(Some(_)) => Taken::TakenOver,
        Ok(None) => Taken::Elsewhere,
        Err(error) => {
            log_recurring!(
                warn,
                lock(failures),
                format!("{error:#}"),
                "could not tell whether another member took this fire time; running it"
            );
            Taken::Mine
        }
    }
}

/// Ends this member's hold on `fire`. A failure is only logged: the lease
/// runs out by itself, and a later fire supersedes this one.
pub async fn finish(pool: &Pool, me: &str, fire: &Fire, finish: Finish) {
    let (me, fire) = (me.to_owned(), fire.clone());
    let finished = store::blocking(pool, "finishing a fire time", move |connection| {
        cluster::finish_fire(connection, &fire, &me, finish)
    })
    .await;
    if let Err(error) = finished {
        tracing::debug!(error = format!("{error:#}"), "finishing a fire time failed");
    }
}

/// One heartbeat: the fires whose holder stopped beating, and this member's
/// clock measured against the database's.
pub async fn beat(pool: &Pool, me: &Me) -> anyhow::Result<(Vec<Fire>, Offset)> {
    let me = me.clone();
    store::blocking(pool, "beating", move |connection| {
        let offset = clock::offset(connection)?;
        let lease_ms = Leases::in_force().fire.as_millis() as i64;
        let orphaned = cluster::heartbeat(connection, &me, lease_ms)?;
        Ok((orphaned, offset))
    })
    .await
}

/// Takes or renews the reacting lease of each of `jobs` that no other
/// member holds, and gives back those of `given_back`; the jobs this member
/// reacts for now.
pub async fn take_reacting(
    pool: &Pool,
    me: &str,
    jobs: Vec<String>,
    given_back: Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let me = me.to_owned();
    store::blocking(pool, "taking reacting leases", move |connection| {
        cluster::take_reacting(
            connection,
            &jobs,
            &given_back,
            &me,
            Leases::in_force().reacting.as_millis() as i64,
        )
    })
    .await
}

/// Leaves, on a clean stop, giving back its reacting leases.
pub async fn leave(pool: &Pool, me: &str) {
    let me = me.to_owned();
    if let Err(error) = store::blocking(pool, "leaving", move |connection| {
        cluster::leave(connection, &me)
    })
    .await
    {
        tracing::debug!(error = format!("{error:#}"), "leaving the members failed");
    }
}
