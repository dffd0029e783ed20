//! The daemon binary as a child process: runs of the CLI, `run-job`'s summary,
//! signals, process groups and the shipped unit's settings.

use price_alertd::membership::Leases;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// Sends `kill -NAME pid`; false if it failed.
pub(super) fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A child process killed when dropped: a test that fails halfway leaves
/// none behind.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `kill -NAME pid` to a process a test started itself; false if it
/// failed.
pub fn signal_process(pid: u32, name: &str) -> bool {
    signal(pid, name)
}

/// Sends `kill -NAME -- -group` to every process of a process group.
pub(super) fn signal_group(group: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

/// The live processes whose process group is `group`, as `pid command`
/// (zombies count: an unreaped worker is a leak too).
pub fn group_members(group: u32) -> Vec<String> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let pgrp = rest.split_whitespace().nth(2);
        if pgrp == Some(group.to_string().as_str()) {
            members.push(head.replace(" (", " "));
        }
    }
    members
}

/// Waits up to `patience` for a child to exit; `None` if it is still running.
pub fn wait_for_exit(child: &mut Child, patience: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `run-job`'s summary (its last line) into its key=value pairs.
pub fn summary(stdout: &str) -> HashMap<String, String> {
    let line = stdout.lines().last().unwrap_or_default();
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Runs the CLI with `--config path`; returns stdout, failing the test if the
/// command failed.
pub fn cli(path: &Path, args: &[&str]) -> String {
    cli_as(binary(), path, args)
}

/// [`cli`], with the members' leases `leases`, as the daemons it looks at
/// were started with ([`Daemon::start_quiet_with_leases`]).
pub fn cli_with_leases(path: &Path, args: &[&str], leases: Leases) -> String {
    let mut command = binary();
    command.env("PRICE_ALERTD_TEST_LEASES", leases.to_env());
    cli_as(command, path, args)
}

fn cli_as(mut command: Command, path: &Path, args: &[&str]) -> String {
    let output = command
        .args(["--config", path.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The daemon binary as a child process, its stderr collected.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

pub fn binary() -> Command {
    binary_at(binary_path())
}

/// The daemon built at `path` (this build's, or an earlier one a benchmark
/// compares), with none of the caller's settings from the environment.
pub fn binary_at(path: &Path) -> Command {
    let mut command = Command::new(path);
    command
        .env_remove("PRICE_ALERTD_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY");
    command
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_logging(config, "price_alertd=debug,info")
    }

    /// A daemon that logs warnings and errors only (and its start).
    pub fn start_quiet(config: &Path) -> Daemon {
        Daemon::start_logging(config, "price_alertd=info,warn")
    }

    /// A daemon (logging as [`Daemon::start_quiet`]'s) whose heartbeat and
    /// leases are `leases`, not the daemon's 5 s, 30 s and 15 s: a test of
    /// a takeover waits out short leases.
    pub fn start_quiet_with_leases(config: &Path, leases: Leases) -> Daemon {
        Daemon::spawn(
            binary()
                .env("RUST_LOG", "price_alertd=info,warn")
                .env("PRICE_ALERTD_TEST_LEASES", leases.to_env()),
            config,
        )
    }

    /// A daemon (logging as [`Daemon::start_quiet`]'s) with `env` besides.
    pub fn start_with_env(config: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        Daemon::spawn(
            binary()
                .env("RUST_LOG", "price_alertd=info,warn")
                .envs(env.iter().copied()),
            config,
        )
    }

    pub fn start_logging(config: &Path, filter: &str) -> Daemon {
        Daemon::spawn(binary().env("RUST_LOG", filter), config)
    }

    /// A daemon (logging as [`Daemon::start_quiet`]'s, and its start) whose
    /// clock is `seconds` off (libfaketime): a host whose clock is wrong.
    /// Its monotonic clock is left alone, as a wrong wall clock leaves it.
    pub fn start_with_clock_off(config: &Path, seconds: i64) -> Daemon {
        Daemon::spawn(
            binary()
                .env("RUST_LOG", "price_alertd=info,warn")
                .env("LD_PRELOAD", libfaketime())
                .env("FAKETIME", format!("{seconds:+}s"))
                .env("DONT_FAKE_MONOTONIC", "1"),
            config,
        )
    }

    fn spawn(command: &mut Command, config: &Path) -> Daemon {
        remember_failures();
        let mut child = command
            .args(["--config", &config.display().to_string(), "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        {
            let (stderr, log) = (child.stderr.take().unwrap(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("daemon: {line}");
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let daemon = Daemon { child, log };
        daemon.wait_for_log("price-alertd started");
        daemon
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, text: &str) {
        wait_until(&format!("the daemon to log {text:?}"), || {
            self.log.lock().unwrap().contains(text)
        });
    }

    pub fn signal(&self, name: &str) {
        assert!(signal(self.child.id(), name), "kill -{name} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        wait_for_exit(&mut self.child, PATIENCE)
            .expect("the daemon did not exit")
            .code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            repeat_failure();
        }
    }
}

/// `Key=Value` of the shipped unit, `systemd/price-alertd.service` (the last
/// one wins, as in systemd).
pub fn unit_setting(key: &str) -> String {
    include_str!("../../../systemd/price-alertd.service")
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim().to_owned())
        .next_back()
        .unwrap_or_else(|| panic!("the unit sets no {key}="))
}

/// Debian's libfaketime for threaded programs (`tests/run` installs it).
pub fn libfaketime() -> String {
    glob::glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
        .unwrap()
        .flatten()
        .next()
        .expect("libfaketime is installed (tests/run installs it)")
        .display()
        .to_string()
}

/// The daemon binary's path.
pub fn binary_path() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_price-alertd"))
}
