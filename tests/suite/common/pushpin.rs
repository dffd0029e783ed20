//! The real batch relay: Debian's Pushpin, its client port and its publish
//! port on loopback (chosen at run time), its sockets and logs in a folder
//! of its own, streams routed to an origin.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::process::signal;
use super::*;

/// Pushpin: its runner and the four processes the runner starts (condure,
/// zurl, pushpin-proxy, pushpin-handler). `tests/run` installs it.
pub struct Pushpin {
    /// Where browsers connect.
    pub port: u16,
    /// Where events are published (`POST /publish/`).
    pub publish_port: u16,
    dir: tempfile::TempDir,
    runner: Child,
    /// The runner's processes, from their pid files.
    services: Vec<u32>,
}

/// The processes the runner starts, each writing `<name>.pid`.
const SERVICES: [&str; 4] = ["condure", "zurl", "pushpin-proxy", "pushpin-handler"];

impl Pushpin {
    /// Pushpin routing every client request to the origin on
    /// `127.0.0.1:origin_port`.
    pub fn start(origin_port: u16) -> Pushpin {
        assert!(
            Path::new("/usr/bin/pushpin").exists(),
            "pushpin is missing: run the tests with tests/run, which installs Debian's pushpin"
        );
        remember_failures();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        let (port, publish_port) = (free_port(), free_port());
        // Every socket between its processes in the folder, so that tests
        // run side by side; no message rate limit, as in etc/.
        let conf = format!(
            "[global]
include={{libdir}}/internal.conf
rundir={root}/run
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120
[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:{port}
logdir={root}/log
log_level=2
client_buffer_size=8192
client_maxconn=1000
condure_bin=condure
[proxy]
routesfile={root}/routes
zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in
zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream
zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out
debug=false
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
x_forwarded_for=
x_forwarded_for_trusted=
orig_headers_need_mark=
accept_pushpin_route=false
log_from=false
log_user_agent=false
sig_iss=pushpin
sig_key=
upstream_key=
updates_check=off
organization_name=
[handler]
push_in_spec=ipc://{{rundir}}/{{ipc_prefix}}push-in
push_in_sub_specs=ipc://{{rundir}}/{{ipc_prefix}}push-in-sub
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port={publish_port}
push_in_http_max_headers_size=10000
push_in_http_max_body_size=1000000
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=ipc://{{rundir}}/{{ipc_prefix}}command
message_rate=0
message_hwm=100000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
"
        );
        std::fs::write(dir.path().join("pushpin.conf"), conf).unwrap();
        std::fs::write(
            dir.path().join("routes"),
            format!("* 127.0.0.1:{origin_port}\n"),
        )
        .unwrap();
        let runner = Command::new("pushpin")
            .process_group(0)
            .args(["--config", &format!("{root}/pushpin.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting pushpin (run the tests with tests/run, which installs it)");
        let mut pushpin = Pushpin {
            port,
            publish_port,
            dir,
            runner,
            services: Vec::new(),
        };
        wait_until("pushpin to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", publish_port)).is_ok()
        });
        wait_until("pushpin's pid files", || {
            pushpin.services = SERVICES
                .iter()
                .filter_map(|name| {
                    let text =
                        std::fs::read_to_string(pushpin.dir.path().join(format!("run/{name}.pid")))
                            .ok()?;
                    text.trim().parse().ok()
                })
                .collect();
            pushpin.services.len() == SERVICES.len()
        });
        pushpin
    }

    pub fn publish_url(&self) -> String {
        format!("http://127.0.0.1:{}/publish/", self.publish_port)
    }

    /// Subscribes to `path` through Pushpin and collects every SSE event
    /// from now on. A Pushpin just started answers 500 until its proxy and
    /// its handler have connected (milliseconds after both say they
    /// started): until then, the subscription is made again.
    pub fn subscribe(&self, path: &str) -> Subscriber {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let subscriber = Subscriber::connect(self.port, path);
            if subscriber.status != 500 || std::time::Instant::now() > deadline {
                assert_eq!(
                    subscriber.status, 200,
                    "subscribing to {path} through pushpin"
                );
                return subscriber;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// How many publish requests Pushpin took, and how many items they
    /// carried in all (from its handler's log).
    pub fn published(&self) -> (usize, usize) {
        let log = std::fs::read_to_string(self.dir.path().join("log/pushpin-handler.log"))
            .unwrap_or_default();
        let requests: Vec<usize> = log
            .lines()
            .filter(|line| line.contains("control: POST /publish/ code=200"))
            .filter_map(|line| line.rsplit_once("items=")?.1.trim().parse().ok())
            .collect();
        (requests.len(), requests.iter().sum())
    }

    /// The live processes of this Pushpin, as `pid` lines.
    fn left(&self) -> Vec<u32> {
        std::iter::once(self.runner.id())
            .chain(self.services.iter().copied())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|stat| !stat.contains(") Z "))
            })
            .collect()
    }
}

impl Drop for Pushpin {
    /// Stops Pushpin as its service does: SIGTERM to the runner, which
    /// stops what it started and exits after them; SIGKILL to each of them
    /// only if that takes longer than `PATIENCE`. Then checks that none is
    /// left (unless the test already failed).
    fn drop(&mut self) {
        let stopped =
            signal(self.runner.id(), "TERM") && wait_for_exit(&mut self.runner, PATIENCE).is_some();
        let deadline = std::time::Instant::now() + PATIENCE;
        while !self.left().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left = self.left();
        for pid in &left {
            signal(*pid, "KILL");
        }
        let _ = self.runner.wait();
        if std::thread::panicking() {
            for name in ["pushpin-handler", "pushpin-proxy", "condure", "zurl"] {
                let log = std::fs::read_to_string(self.dir.path().join(format!("log/{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("{name}.log (last lines):");
                for line in tail.iter().rev() {
                    eprintln!("  {line}");
                }
            }
            repeat_failure();
            return;
        }
        assert!(
            stopped,
            "pushpin did not stop within {PATIENCE:?} of SIGTERM"
        );
        assert!(
            left.is_empty(),
            "processes of pushpin outlived it: {left:?}"
        );
    }
}
