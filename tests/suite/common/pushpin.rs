//! The real batch relay: Debian's Pushpin, its client port and its publish
//! port on loopback (chosen at run time), its sockets and logs in a folder
//! of its own, streams routed to an origin.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

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
    /// The origin of [`PROBE`]'s stream (see [`ready`]).
    _probe: HttpServer,
}

/// A path the fixture routes to an origin of its own, whose stream holds
/// [`PROBE_CHANNEL`]: what [`ready`] subscribes to.
const PROBE: &str = "/.fixture-probe/";
const PROBE_CHANNEL: &str = "fixture-probe";

/// The processes the runner starts, each writing `<name>.pid`.
const SERVICES: [&str; 4] = ["condure", "zurl", "pushpin-proxy", "pushpin-handler"];

impl Pushpin {
    /// Pushpin routing every client request to the origin on
    /// `127.0.0.1:origin_port`.
    pub fn start(origin_port: u16) -> Pushpin {
        Pushpin::start_routing(origin_port, "")
    }

    /// [`Pushpin::start`], with `routes` (lines of Pushpin's routes file)
    /// before the shipped one: a site's pages, say.
    pub fn start_routing(origin_port: u16, routes: &str) -> Pushpin {
        Pushpin::start_with(origin_port, routes, &[])
    }

    /// [`Pushpin::start`] with some of the shipped settings changed (for a
    /// benchmark's subscribers: many channels a connection).
    #[allow(dead_code)] // tests/benchmarks/relays.rs calls it, no test does
    pub fn start_tuned(origin_port: u16, settings: &[(&str, &str)]) -> Pushpin {
        Pushpin::start_with(origin_port, "", settings)
    }

    fn start_with(origin_port: u16, routes: &str, settings: &[(&str, &str)]) -> Pushpin {
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
        // The shipped file as it is, but for its ports and folders: every
        // socket between its processes is in its own folder, so that tests
        // run side by side.
        let shipped = include_str!("../../../etc/pushpin/pushpin.conf");
        let mut conf = String::new();
        for line in shipped.lines() {
            let line = match line.split_once('=').map(|(key, _)| key) {
                Some("rundir") => format!("rundir={root}/run"),
                Some("logdir") => format!("logdir={root}/log"),
                Some("http_port") => format!("http_port=127.0.0.1:{port}"),
                Some("push_in_http_port") => format!("push_in_http_port={publish_port}"),
                Some("routesfile") => format!("routesfile={root}/routes"),
                Some(key) if settings.iter().any(|(name, _)| *name == key) => {
                    let (_, value) = settings.iter().find(|(name, _)| *name == key).unwrap();
                    format!("{key}={value}")
                }
                Some("client_maxconn") => "client_maxconn=1000".to_owned(),
                _ => line.to_owned(),
            };
            conf.push_str(&line);
            conf.push('\n');
        }
        for key in [
            "rundir",
            "logdir",
            "http_port",
            "push_in_http_port",
            "routesfile",
        ] {
            assert!(
                shipped
                    .lines()
                    .any(|line| line.starts_with(&format!("{key}="))),
                "etc/pushpin/pushpin.conf sets no {key}"
            );
        }
        std::fs::write(dir.path().join("pushpin.conf"), conf).unwrap();
        // The shipped routes, to this test's origin; first, the probe's.
        let probe = probe_origin();
        let shipped = include_str!("../../../etc/pushpin/routes");
        assert!(shipped.contains("127.0.0.1:7998"), "etc/pushpin/routes");
        std::fs::write(
            dir.path().join("routes"),
            format!(
                "*,path_beg={PROBE} 127.0.0.1:{}\n{routes}{}",
                probe.port,
                shipped.replace("127.0.0.1:7998", &format!("127.0.0.1:{origin_port}"))
            ),
        )
        .unwrap();
        let (runner, services) = launch(&root, port, publish_port);
        Pushpin {
            port,
            publish_port,
            dir,
            runner,
            services,
            _probe: probe,
        }
    }

    /// Stops Pushpin and starts it again on the same ports: what it held in
    /// memory (its subscribers, the ids it saw) is gone.
    pub fn restart(&mut self) {
        let (stopped, left) = self.stop();
        assert!(stopped && left.is_empty(), "pushpin did not stop: {left:?}");
        let root = self.dir.path().display().to_string();
        (self.runner, self.services) = launch(&root, self.port, self.publish_port);
    }

    /// Stops it as its service does: SIGTERM to the runner, which stops
    /// what it started and exits after them; SIGKILL to each of them only
    /// if that takes longer than `PATIENCE`. Whether it stopped, and what
    /// had to be killed.
    fn stop(&mut self) -> (bool, Vec<u32>) {
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
        (stopped, left)
    }

    pub fn publish_url(&self) -> String {
        format!("http://127.0.0.1:{}/publish/", self.publish_port)
    }

    /// Subscribes to `path` through Pushpin and collects every SSE event
    /// from now on. A Pushpin just started answers 500, or closes the
    /// connection, until its proxy and its handler have connected
    /// (milliseconds after both say they started): until then, the
    /// subscription is made again.
    pub fn subscribe(&self, path: &str) -> Subscriber {
        self.subscribe_with(path, &[])
    }

    /// [`Pushpin::subscribe`] with `headers` (a cookie, a `Last-Event-ID`).
    pub fn subscribe_with(&self, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            // A stream Pushpin took before its handler was there may also
            // hang: its head comes at once, or the stream is made again.
            let subscriber = Subscriber::connect_within(
                self.port,
                path,
                headers,
                std::time::Duration::from_secs(2),
            );
            // 500, or no answer (0).
            let not_ready = matches!(subscriber.status, 0 | 500);
            if !not_ready || std::time::Instant::now() > deadline {
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
    /// carried in all (from its handler's log), the fixture's probes left
    /// out (one item each).
    pub fn published(&self) -> (usize, usize) {
        let log = std::fs::read_to_string(self.dir.path().join("log/pushpin-handler.log"))
            .unwrap_or_default();
        let requests: Vec<usize> = log
            .lines()
            .filter(|line| line.contains("control: POST /publish/ code=200"))
            .filter_map(|line| line.rsplit_once("items=")?.1.trim().parse().ok())
            .collect();
        let probes = log
            .lines()
            .filter(|line| line.contains(&format!("publish channel={PROBE_CHANNEL} ")))
            .count();
        (
            requests.len() - probes,
            requests.iter().sum::<usize>() - probes,
        )
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
    /// Stops Pushpin (see `stop`), then checks that none of its processes
    /// is left (unless the test already failed).
    fn drop(&mut self) {
        let (stopped, left) = self.stop();
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

/// Starts Pushpin's runner with the configuration in `root`, and waits
/// until it listens on both ports and each of its processes wrote its pid.
fn launch(root: &str, port: u16, publish_port: u16) -> (Child, Vec<u32>) {
    let runner = Command::new("pushpin")
        .process_group(0)
        .args(["--config", &format!("{root}/pushpin.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting pushpin (run the tests with tests/run, which installs it)");
    wait_until("pushpin to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", publish_port)).is_ok()
    });
    let mut services = Vec::new();
    wait_until("pushpin's pid files", || {
        services = SERVICES
            .iter()
            .filter_map(|name| {
                let text = std::fs::read_to_string(format!("{root}/run/{name}.pid")).ok()?;
                text.trim().parse().ok()
            })
            .collect();
        services.len() == SERVICES.len()
    });
    ready(port, publish_port);
    (runner, services)
}

/// Waits until an event published reaches a stream: Pushpin's processes
/// connect to each other after they listen, and a stream taken before its
/// handler had connected got its head and then nothing (condure: "stream
/// zmq send to: Host unreachable"; the publish: "receivers=0").
fn ready(port: u16, publish_port: u16) {
    wait_until(
        "pushpin to carry an event from its publish port to a stream",
        || {
            let subscriber =
                Subscriber::connect_within(port, PROBE, &[], std::time::Duration::from_secs(2));
            if subscriber.status != 200 || !publish_probe(publish_port) {
                return false;
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while std::time::Instant::now() < deadline {
                if subscriber.count() > 0 {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            false
        },
    );
}

/// The origin of the probe's stream: held on [`PROBE_CHANNEL`].
fn probe_origin() -> HttpServer {
    HttpServer::start(
        0,
        Arc::new(|_| {
            Box::pin(async {
                Answer {
                    status: 200,
                    headers: vec![
                        ("content-type", "text/event-stream".to_owned()),
                        ("grip-hold", "stream".to_owned()),
                        ("grip-channel", PROBE_CHANNEL.to_owned()),
                    ],
                    body: Body::Text(String::new()),
                }
            })
        }),
    )
}

/// Publishes one event on [`PROBE_CHANNEL`]; whether Pushpin took it.
fn publish_probe(publish_port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let body = format!(
        r#"{{"items":[{{"channel":"{PROBE_CHANNEL}","formats":{{"http-stream":{{"content":"event: probe\ndata: ready\n\n"}}}}}}]}}"#
    );
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", publish_port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let request = format!(
        "POST /publish/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}
