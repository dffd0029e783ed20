//! Throwaway PostgreSQL clusters, shared by the suite's tests (each test
//! gets a database of its own): one without TLS; for the tests that ask for
//! them, one with TLS, and one that its tests may restart under the others'
//! feet without touching theirs. Debian's server (`tests/run` installs it), `initdb`
//! into a temporary folder as an unprivileged user, a free loopback port, no
//! fsync. They stop when the suite exits: an `atexit` handler shuts
//! them down and removes their folders, and should it die without
//! running it, each server gets SIGQUIT from the kernel (`PR_SET_PDEATHSIG`)
//! and the next run removes the folders.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running server, and what restarts it.
pub struct Cluster {
    pub port: u16,
    /// Its postmaster, and the folder that holds its data and socket.
    postmaster: Mutex<Option<(Child, PathBuf)>>,
    /// Asks the long-lived thread that started the server to start it again.
    spawner: Mutex<std::sync::mpsc::Sender<std::sync::mpsc::Sender<std::io::Result<Child>>>>,
    kind: Kind,
}

/// What a cluster is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every engine test's, without TLS.
    Plain,
    /// TLS on, and a role refused without it.
    Tls,
    /// Restarted by its tests: no other test's database is on it.
    Restarted,
}

impl Kind {
    fn folder_suffix(self) -> &'static str {
        match self {
            Kind::Plain => "",
            Kind::Tls => "-tls",
            Kind::Restarted => "-restarted",
        }
    }
}

static PLAIN: OnceLock<Cluster> = OnceLock::new();
static WITH_TLS: OnceLock<Cluster> = OnceLock::new();
static RESTARTED: OnceLock<Cluster> = OnceLock::new();

/// How to start the server.
struct Postmaster {
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    folder: PathBuf,
    port: u16,
}

impl Postmaster {
    fn command(&self) -> Command {
        let mut command = as_owner(self.owner, &self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.folder.join("data"))
            .arg("-k")
            .arg(&self.folder)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
            .args(["-c", "shared_buffers=64MB", "-c", "log_min_messages=fatal"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }
}

/// The cluster without TLS (the server declines it), started on first use.
pub fn cluster() -> &'static Cluster {
    PLAIN.get_or_init(|| start(Kind::Plain))
}

/// A second cluster, started on first use, with TLS on: the server presents
/// `tests/fixtures/self-signed.crt` (for the address 127.0.0.1, and no other
/// name, vouched for by no CA). Its `pg_hba.conf` refuses the user
/// [`TLS_ONLY_USER`] any connection without TLS.
pub fn cluster_with_tls() -> &'static Cluster {
    WITH_TLS.get_or_init(|| start(Kind::Tls))
}

/// A cluster without TLS, started on first use, for the tests that restart
/// it ([`Cluster::restart`]): the shared one stays up for everyone else.
pub fn cluster_to_restart() -> &'static Cluster {
    RESTARTED.get_or_init(|| start(Kind::Restarted))
}

/// A role of the TLS cluster that may only connect over TLS.
pub const TLS_ONLY_USER: &str = "tls_only";

/// The folder of the newest PostgreSQL server's programs.
fn server_programs() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server under /usr/lib/postgresql: run the tests with tests/run, which installs Debian's postgresql"
        )
    })
}

/// The user the server runs as: `postgres` when the tests run as root
/// (initdb refuses root), else whoever runs them.
fn owner() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let output = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    let uid: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("the postgres user (Debian's postgresql package makes it): run tests/run");
    let output = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id");
    let gid: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    Some((uid, gid))
}

fn as_owner(owner: Option<(u32, u32)>, program: &Path) -> Command {
    match owner {
        None => Command::new(program),
        Some((uid, gid)) => {
            let mut command = Command::new("setpriv");
            command
                .args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".to_owned(),
                    "--".to_owned(),
                ])
                .arg(program);
            command
        }
    }
}

const PREFIX: &str = "price-alertd-test-postgresql-";

/// Removes the folders of earlier runs whose process is gone.
fn remove_stale_folders() {
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .map(|rest| rest.split('-').next().unwrap_or(rest))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start(kind: Kind) -> Cluster {
    let tls = kind == Kind::Tls;
    let bin = server_programs();
    let owner = owner();
    remove_stale_folders();
    let folder = std::env::temp_dir().join(format!(
        "{PREFIX}{}{}",
        std::process::id(),
        kind.folder_suffix()
    ));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&folder, Some(uid), Some(gid)).unwrap();
    }
    let data = folder.join("data");
    let initdb = as_owner(owner, &bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .stdout(Stdio::null())
        .output()
        .expect("initdb");
    assert!(
        initdb.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    if tls {
        // The server's key must be its owner's alone.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for (from, to) in [
            ("self-signed.crt", "server.crt"),
            ("self-signed.key", "server.key"),
        ] {
            let path = data.join(to);
            std::fs::copy(fixtures.join(from), &path).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut conf, b"ssl = on\n").unwrap();
        // The TLS-only role: refused without TLS (rules apply in order).
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!("hostnossl all {TLS_ONLY_USER} 127.0.0.1/32 reject\n{rules}"),
        )
        .unwrap();
    }
    let port = super::free_port();
    let postmaster = Postmaster {
        bin: bin.clone(),
        owner,
        folder: folder.clone(),
        port,
    };
    // The server gets SIGQUIT (its immediate shutdown) when the thread that
    // started it ends: a thread that lives as long as the suite, and
    // starts the server again when a test restarts it.
    let (requests, inbox) =
        std::sync::mpsc::channel::<std::sync::mpsc::Sender<std::io::Result<Child>>>();
    std::thread::Builder::new()
        .name("postgresql".into())
        .spawn(move || {
            for reply in inbox {
                let _ = reply.send(postmaster.command().spawn());
            }
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    let cluster = Cluster {
        port,
        postmaster: Mutex::new(None),
        spawner: Mutex::new(requests),
        kind,
    };
    let child = cluster.spawn().expect("starting postgres");
    *cluster.postmaster.lock().unwrap() = Some((child, folder));
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(stop_at_exit);
    });
    cluster.wait_until_up();
    if tls {
        cluster
            .admin()
            .unwrap()
            .batch_execute(&format!("CREATE ROLE {TLS_ONLY_USER} LOGIN SUPERUSER"))
            .unwrap();
    }
    cluster
}

extern "C" fn stop_at_exit() {
    for cluster in [PLAIN.get(), WITH_TLS.get(), RESTARTED.get()]
        .into_iter()
        .flatten()
    {
        let Ok(mut postmaster) = cluster.postmaster.lock() else {
            continue;
        };
        if let Some((mut child, folder)) = postmaster.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGQUIT);
            }
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}

static DATABASES: AtomicU64 = AtomicU64::new(0);

impl Cluster {
    /// Starts the server, from the thread that lives as long as the suite.
    fn spawn(&self) -> std::io::Result<Child> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.spawner.lock().unwrap().send(reply).unwrap();
        answer.recv().unwrap()
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.admin() {
                Ok(_) => return,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "PostgreSQL did not start: {error}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Stops the server as `pg_ctl restart` does (a fast shutdown: sessions
    /// are cut, transactions rolled back), leaves it down for `down`, and
    /// starts it again: only [`cluster_to_restart`], whose databases belong to
    /// the tests that restart it.
    pub fn restart(&self, down: Duration) {
        assert_eq!(
            self.kind,
            Kind::Restarted,
            "only the cluster_to_restart() is restarted: the others are shared"
        );
        {
            let mut postmaster = self.postmaster.lock().unwrap();
            let (child, _) = postmaster.as_mut().expect("the server");
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            child.wait().unwrap();
        }
        std::thread::sleep(down);
        let child = self.spawn().expect("starting postgres again");
        self.postmaster
            .lock()
            .unwrap()
            .as_mut()
            .expect("the server")
            .0 = child;
        self.wait_until_up();
    }

    /// A connection to the `postgres` database, as the superuser.
    pub fn admin(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
    }

    /// The URL of `database`, as the daemon's config takes it.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// A new, empty database; its name.
    pub fn create_database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        self.admin()
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }

    /// Drops a test's database, closing whatever is still connected to it.
    pub fn drop_database(&self, name: &str) {
        if let Ok(mut admin) = self.admin() {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}
