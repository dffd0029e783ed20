//! The shipped unit shares its database with an application running as another
//! user: the daemon and the "application" run as two unprivileged users, with
//! the identities, umask and state-directory mode that the shipped unit and
//! sysusers file give them, and each must be able to write the one database.
//! Needs root (to switch users with setpriv), as CI has.

use crate::common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Child, Stdio};

use common::{Receiver, User, binary_path, config_text, summary, unit_setting};

fn octal(text: &str) -> u32 {
    u32::from_str_radix(text, 8).unwrap()
}

/// The groups the sysusers file declares, by name.
fn sysusers_groups() -> Vec<String> {
    include_str!("../../systemd/price-alertd.sysusers")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next()) {
                (Some("u" | "g"), Some(name)) => Some(name.to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// Test identities standing for the unit's user and groups, and the
/// application's user (which joined the database group, as README says).
const DATABASE_GROUP: u32 = 64_910;
const CONFIG_GROUP: u32 = 64_911;
const APPLICATION: u32 = 64_902;

/// The daemon as the unit runs it: `User=`, `Group=` (the database group),
/// `SupplementaryGroups=` (the config group), `UMask=`.
fn daemon_user() -> User {
    let groups = sysusers_groups();
    assert_eq!(unit_setting("User"), "price-alertd");
    assert!(
        groups.contains(&unit_setting("Group")),
        "Group= is not created by sysusers"
    );
    assert!(groups.contains(&unit_setting("SupplementaryGroups")));
    assert_ne!(unit_setting("Group"), unit_setting("SupplementaryGroups"));
    User {
        uid: 64_901,
        gid: DATABASE_GROUP,
        groups: &[CONFIG_GROUP],
        umask: octal(&unit_setting("UMask")),
    }
}

/// The application: its own user and group, in the database group, with the
/// usual umask of 0022 (it need not set one).
fn application() -> User {
    User {
        uid: APPLICATION,
        gid: APPLICATION,
        groups: &[DATABASE_GROUP],
        umask: 0o022,
    }
}

/// `name` in a fresh folder others may enter, owned by `uid` and the database
/// group, with `mode`; the folder lives as long as the returned guard.
fn shared_folder(name: &str, uid: u32, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    chmod(parent.path(), 0o755);
    let folder = parent.path().join(name);
    std::fs::create_dir(&folder).unwrap();
    chown(&folder, uid, DATABASE_GROUP);
    chmod(&folder, mode);
    (parent, folder)
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `sqlite3` as the application; fails the test if it cannot write.
fn app_sql(database: &Path, sql: &str) {
    let output = application()
        .command(Path::new("sqlite3"))
        .args(["-bail", "-cmd", ".timeout 30000"])
        .arg(database)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the application could not run {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The application holding the database open (so the -wal and -shm files it
/// created stay while the daemon works), until dropped.
struct Holder(Child);

impl Holder {
    fn open(database: &Path) -> Holder {
        let mut child = application()
            .command(Path::new("sqlite3"))
            .arg(database)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "PRAGMA journal_mode = WAL; SELECT count(*) FROM price_alerts;"
        )
        .unwrap();
        stdin.flush().unwrap();
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Runs the daemon's `check-config` and `run-job` as the unit's user.
fn daemon(config: &Path, args: &[&str]) -> String {
    let output = daemon_user()
        .command(binary_path())
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the daemon failed {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A folder others may enter, holding the config as the package installs it:
/// root-owned, readable by the config group only.
fn setup(database: &Path, receiver: &Receiver) -> (tempfile::TempDir, std::path::PathBuf) {
    let etc = tempfile::tempdir().unwrap();
    chmod(etc.path(), 0o755);
    let config = etc.path().join("price-alertd.toml");
    std::fs::write(&config, config_text(database, &receiver.url, "0 0 0 1 1 *")).unwrap();
    chown(&config, 0, CONFIG_GROUP);
    chmod(&config, 0o640);
    (etc, config)
}

fn insert_alert_and_quote(database: &Path, target: f64) {
    app_sql(
        database,
        &format!(
            "INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('AAPL', 'above', {target}, '2026-01-01T00:00:00Z');
             INSERT INTO quotes (ticker, price, updated_at) VALUES ('AAPL', 150, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
               ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at;"
        ),
    );
}

/// Both write, in turns and while the other holds the database open.
fn both_write(database: &Path, config: &Path, receiver: &Receiver) {
    insert_alert_and_quote(database, 100.0);
    {
        // The application's connection made -wal and -shm; the daemon writes them.
        let _held = Holder::open(database);
        let run = summary(&daemon(config, &["run-job", "evaluate"]));
        assert_eq!(run["triggered"], "1", "{run:?}");
        assert_eq!(run["delivered"], "1", "{run:?}");
        // And the application writes after the daemon did.
        app_sql(
            database,
            "UPDATE price_alerts SET enabled = 1 WHERE id = 1;",
        );
    }
    let run = summary(&daemon(config, &["run-job", "evaluate"]));
    assert_eq!(run["triggered"], "1", "the re-armed alert: {run:?}");
    insert_alert_and_quote(database, 120.0);
    assert_eq!(receiver.wait_for(2).len(), 2);
    for file in ["", "-wal", "-shm"] {
        let path = Path::new(&format!("{}{file}", database.display())).to_path_buf();
        if let Ok(metadata) = std::fs::metadata(&path) {
            assert_eq!(metadata.gid(), DATABASE_GROUP, "{path:?}");
            assert_eq!(
                metadata.mode() & 0o060,
                0o060,
                "{path:?} is not group-writable"
            );
            assert_eq!(metadata.mode() & 0o007, 0, "{path:?} is open to others");
        }
    }
}

#[test]
fn the_daemon_and_the_application_share_the_state_directory_database() {
    // /var/lib/price-alertd as systemd makes it: owned by User= and Group=,
    // with StateDirectoryMode=.
    let (_parent, state) = shared_folder(
        "price-alertd",
        daemon_user().uid,
        octal(&unit_setting("StateDirectoryMode")),
    );
    let database = state.join("price-alertd.db");
    let receiver = Receiver::start();
    let (_etc, config) = setup(&database, &receiver);

    // The daemon creates the database; then both write.
    assert!(daemon(&config, &["check-config"]).contains("missing; created at start"));
    daemon(&config, &["run-job", "evaluate"]);
    both_write(&database, &config, &receiver);
}

#[test]
fn the_daemon_works_on_a_database_in_the_applications_own_directory() {
    // README's second layout: the application's directory, handed to the
    // database group (chgrp price-alertd-db; chmod 2770), and a database the
    // application created (mode 0660).
    let (_parent, data) = shared_folder("app-data", APPLICATION, 0o2770);
    let database = data.join("alerts.db");
    app_sql(
        &database,
        "PRAGMA journal_mode = WAL;
         CREATE TABLE price_alerts (id INTEGER PRIMARY KEY, ticker TEXT NOT NULL, condition TEXT NOT NULL,
             target_price REAL NOT NULL, reference_price REAL, enabled INTEGER NOT NULL DEFAULT 1,
             triggered_at TEXT, triggered_price REAL, created_at TEXT NOT NULL, user_id TEXT, note TEXT);
         CREATE TABLE quotes (ticker TEXT PRIMARY KEY, price REAL NOT NULL, updated_at TEXT NOT NULL);",
    );
    chmod(&database, 0o660);
    let receiver = Receiver::start();
    let (_etc, config) = setup(&database, &receiver);
    assert!(daemon(&config, &["check-config"]).contains("writable"));
    both_write(&database, &config, &receiver);
    // The daemon never took the application's file.
    assert_eq!(std::fs::metadata(&database).unwrap().uid(), APPLICATION);
}

#[test]
fn a_unit_umask_of_0077_would_lock_the_application_out() {
    // The check above is only as good as its power to fail: with the old
    // unit's umask the daemon's database is closed to the application.
    let (_parent, state) = shared_folder("price-alertd", daemon_user().uid, 0o2770);
    let database = state.join("price-alertd.db");
    let receiver = Receiver::start();
    let (_etc, config) = setup(&database, &receiver);
    let strict = User {
        umask: 0o077,
        ..daemon_user()
    };
    let status = strict
        .command(binary_path())
        .args(["--config", config.to_str().unwrap(), "run-job", "evaluate"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let output = application()
        .command(Path::new("sqlite3"))
        .arg(&database)
        .arg("INSERT INTO quotes (ticker, price, updated_at) VALUES ('X', 1, 'now');")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the application wrote anyway");
}
