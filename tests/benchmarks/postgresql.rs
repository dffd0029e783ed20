//! The benchmark's PostgreSQL column (see `tick.rs`): the same scenarios on a
//! database of the test cluster (a throwaway server with fsync off, as the
//! tests run it), the "all moved" tick next to PostgreSQL's own set-based
//! `UPDATE ... FROM quotes` over a copy of the same data (goal: ≤ 2×); then
//! one fire time's work done by one daemon and by three sharing the
//! database, their total CPU side by side (goal: ≤ 1.2×: the work is
//! shared, not repeated).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::Probe as _;
use crate::common::{binary, postgresql};

/// A database of the cluster, by name.
pub struct Database {
    pub name: String,
}

impl Database {
    pub fn url(&self) -> String {
        postgresql::cluster().url(&self.name)
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }

    pub fn scalar(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }

    /// Each queued event's id, user and state, in queue order.
    pub fn outbox_events(&self) -> Vec<(String, Option<String>, String)> {
        self.client()
            .query(
                "SELECT event_id, user_id, state FROM outbox ORDER BY id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }

    /// A copy of this database (`CREATE DATABASE ... TEMPLATE`).
    pub fn copy(&self, name: &str) -> Database {
        let mut admin = postgresql::cluster().admin().unwrap();
        // Two statements, as neither runs in a transaction block.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {}", self.name))
            .unwrap();
        Database {
            name: name.to_owned(),
        }
    }

    /// Drops this database, and checkpoints the cluster: what it wrote
    /// leaves no background work to the next measurement.
    pub fn drop_and_checkpoint(self) {
        let mut admin = postgresql::cluster().admin().unwrap();
        admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .unwrap();
        admin.batch_execute("CHECKPOINT").unwrap();
    }

    /// Moves the quotes of every `every`-th ticker (by number) to 102.
    pub fn move_quotes(&self, every: u64, remainder: u64) {
        self.client()
            .execute(
                "UPDATE quotes SET price = 102.0, updated_at = $1
                 WHERE substr(ticker, 2)::bigint % $2 = $3",
                &[
                    &chrono::Utc::now().to_rfc3339(),
                    &(every as i64),
                    &(remainder as i64),
                ],
            )
            .unwrap();
    }
}

/// The template: the same alerts and quotes as SQLite's (`tick.rs`), migrated
/// by the daemon first, then analysed.
pub fn generate(name: &str, alerts: u64, tickers: u64) -> Database {
    let mut admin = postgresql::cluster().admin().unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let database = Database {
        name: name.to_owned(),
    };
    let config = price_alertd::config::parse(
        &format!(
            "[database]\nurl = \"{}\"\n[webhook]\nurl = \"http://127.0.0.1:9/\"\n",
            database.url()
        ),
        Path::new("."),
        None,
    )
    .unwrap();
    drop(price_alertd::store::open(&config.database, 1).unwrap());
    let mut client = database.client();
    client
        .batch_execute(&format!(
            "INSERT INTO price_alerts (ticker, condition, target_price, created_at, user_id)
             SELECT 'T' || (i % {tickers}),
                    CASE (i / {tickers}) % 2 WHEN 0 THEN 'above' ELSE 'below' END,
                    CASE (i / {tickers}) % 2 WHEN 0 THEN 100.0 + 0.01 + ((i * 7919) % 999) / 100.0
                                      ELSE 100.0 - 0.01 - ((i * 7919) % 999) / 100.0 END,
                    '2026-01-01T00:00:00Z', 'u' || (i % 5000)
             FROM generate_series(1::bigint, {alerts}) AS i;
             INSERT INTO quotes (ticker, price, updated_at)
             SELECT 'T' || i, 100.0, '{now}' FROM generate_series(0::bigint, {tickers} - 1) AS i;
",
            now = chrono::Utc::now().to_rfc3339()
        ))
        .unwrap();
    client.batch_execute("VACUUM ANALYZE price_alerts").unwrap();
    client.batch_execute("VACUUM ANALYZE quotes").unwrap();
    drop(client);
    database
}

/// PostgreSQL's own time for the set-based claim of what moving every
/// ticker triggers, on a copy; with the count it claimed.
pub fn floor(template: &Database) -> (f64, i64) {
    let floor = template.copy(&format!("{}_floor", template.name));
    floor.move_quotes(1, 0);
    let mut client = floor.client();
    client.batch_execute("VACUUM ANALYZE quotes").unwrap();
    let started = Instant::now();
    let claimed = client
        .execute(
            "UPDATE price_alerts AS a
             SET enabled = 0, triggered_at = to_char(now(), 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                 triggered_price = q.price
             FROM quotes q
             WHERE q.ticker = a.ticker AND a.enabled = 1
               AND ((a.condition = 'above' AND q.price >= a.target_price)
                 OR (a.condition = 'below' AND q.price <= a.target_price))",
            &[],
        )
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    drop(client);
    postgresql::cluster().drop_database(&floor.name);
    (seconds * 1000.0, claimed as i64)
}

/// A config on `database`, delivering to `relay`, with `schedule`.
pub fn config(
    dir: &Path,
    name: &str,
    database: &Database,
    relay: &str,
    schedule: &str,
) -> std::path::PathBuf {
    let text = super::config_text(&format!("url = \"{}\"", database.url()), relay, schedule);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A process's CPU time so far (user and system), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state, then fields 4..; utime
    // and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|both| {
            both.iter()
                .filter_map(|field| field.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// One fire time's work on a copy of `template` with every ticker moved,
/// done by `members` daemons sharing the database; their total CPU, and
/// the server's, in seconds.
pub fn shared_fire(
    dir: &Path,
    template: &Database,
    relay: &str,
    members: usize,
) -> (f64, f64, i64) {
    let database = template.copy(&format!("{}_members{members}", template.name));
    database.move_quotes(1, 0);
    let expected = database.triggering();
    // One fire time, a few seconds after every member has started.
    let at = chrono::Utc::now() + chrono::Duration::seconds(5);
    let schedule = at.format("%S %M %H %d %m *").to_string();
    let config = config(
        dir,
        &format!("members{members}"),
        &database,
        relay,
        &schedule,
    );
    let daemons: Vec<std::process::Child> = (0..members)
        .map(|_| {
            binary()
                .args(["--config", config.to_str().unwrap(), "run"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Started and idle: count from just before the fire time.
    std::thread::sleep(Duration::from_secs(2));
    let before: f64 = daemons.iter().map(|daemon| cpu_seconds(daemon.id())).sum();
    let server_before = server_cpu_seconds();
    let deadline = Instant::now() + Duration::from_secs(600);
    while database.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") < expected {
        assert!(
            Instant::now() < deadline,
            "the fire time's work did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu: f64 = daemons
        .iter()
        .map(|daemon| cpu_seconds(daemon.id()))
        .sum::<f64>()
        - before;
    let server = server_cpu_seconds() - server_before;
    for mut daemon in daemons {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
    assert_eq!(database.scalar("SELECT count(*) FROM outbox"), expected);
    assert_eq!(database.scalar("SELECT count(*) FROM job_fires"), 1);
    postgresql::cluster().drop_database(&database.name);
    (cpu, server, expected)
}

/// The CPU time (user and system, seconds) the cluster's processes have used
/// so far: the postmaster (a backend's parent) and its children now running.
fn server_cpu_seconds() -> f64 {
    let backend: i32 = postgresql::cluster()
        .admin()
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    // /proc/PID/stat: the fields after the command's closing parenthesis
    // (state, parent, ...; utime and stime are the 12th and 13th).
    let stat = |pid: &str| -> Option<Vec<String>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        Some(rest.split_whitespace().map(str::to_owned).collect())
    };
    let Some(postmaster) = stat(&backend.to_string()).map(|fields| fields[1].clone()) else {
        return 0.0;
    };
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let Some(fields) = stat(&pid) else {
            continue;
        };
        if pid == postmaster || fields.get(1) == Some(&postmaster) {
            ticks += fields[11..13]
                .iter()
                .filter_map(|field| field.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    ticks as f64 / ticks_per_second
}
