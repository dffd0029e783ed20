//! The real SSE relay (nginx + nchan) and an SSE subscriber of its stream.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::*;

/// The real SSE relay: nginx with nchan, publisher on `/events`, subscribers on
/// `/api/stream`. `tests/run` installs it.
pub struct Relay {
    pub port: u16,
    dir: tempfile::TempDir,
    nginx: Child,
}

pub const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

impl Relay {
    /// The relay of the shipped single-channel setup: publisher on
    /// `/events`, subscribers on `/api/stream`.
    pub fn start() -> Relay {
        let port = free_port();
        Relay::serving(
            &format!(
                r#"
    map "$http_if_modified_since$http_if_none_match" $price_alerts_id_asked {{ "" 0; default 1; }}
    map $host $price_alerts_no_message_id {{ default ""; }}
    server {{
        listen 127.0.0.1:{port};
        location = /events {{
            nchan_publisher;
            nchan_channel_id price_alerts;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 1h;
        }}
        location = /api/stream {{
            if ($price_alerts_id_asked) {{ return 400; }}
            nchan_subscriber eventsource;
            nchan_channel_id price_alerts;
            nchan_subscriber_first_message oldest;
            nchan_subscriber_last_message_id $price_alerts_no_message_id;
        }}
    }}
"#
            ),
            port,
        )
    }

    /// nginx with nchan serving `servers` (server blocks of its `http`
    /// block); `port` is one of theirs, `Relay::port`, waited for.
    pub fn serving(servers: &str, port: u16) -> Relay {
        assert!(
            Path::new(NCHAN_MODULE).exists(),
            "{NCHAN_MODULE} is missing: run the tests with tests/run, which installs nginx-light and libnginx-mod-nchan"
        );
        remember_failures();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let conf = format!(
            r#"
load_module {NCHAN_MODULE};
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    nchan_max_reserved_memory 256M;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{servers}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        // Its own process group, so that stopping it can check that no worker
        // of this relay is left behind.
        let nginx = Command::new("nginx")
            .process_group(0)
            .args([
                "-p",
                &root,
                "-c",
                &format!("{root}/nginx.conf"),
                "-e",
                &format!("{root}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx (run the tests with tests/run, which installs it)");
        let relay = Relay { port, dir, nginx };
        wait_until("nginx to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        relay
    }

    /// How many of its workers died (each a line of nginx's error log).
    pub fn workers_died(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("error.log"))
            .unwrap_or_default()
            .matches("exited on signal")
            .count()
    }

    pub fn publish_url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    /// Subscribes to `/api/stream` and collects every SSE event from now on.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber::connect(self.port, "/api/stream")
    }
}

impl Drop for Relay {
    /// Stops nginx as its own scripts do: SIGTERM to the master, which stops
    /// its workers and exits after them; SIGKILL to the whole group only if
    /// that takes longer than `PATIENCE`. Then checks that no process of the
    /// relay is left (unless the test already failed).
    fn drop(&mut self) {
        let master = self.nginx.id();
        let stopped = signal(master, "TERM") && wait_for_exit(&mut self.nginx, PATIENCE).is_some();
        if !stopped {
            signal_group(master, "KILL");
            let _ = self.nginx.wait();
        }
        let left = group_members(master);
        if !left.is_empty() {
            signal_group(master, "KILL");
        }
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
            eprintln!("nginx error.log:\n{log}");
            repeat_failure();
            return;
        }
        assert!(stopped, "nginx did not stop within {PATIENCE:?} of SIGTERM");
        assert!(
            left.is_empty(),
            "processes of the relay outlived it: {left:?}"
        );
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `id:`, if it had one.
    pub id: Option<String>,
    pub event: String,
    pub data: String,
    /// When its frame was read off the stream.
    pub at: std::time::Instant,
}

pub struct Subscriber {
    events: Arc<Mutex<Vec<SseEvent>>>,
    /// The answer's status.
    pub status: u16,
    stream: std::net::TcpStream,
}

impl Drop for Subscriber {
    /// Ends the connection, and with it the thread that reads it.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Subscriber {
    /// Subscribes to `path` on `127.0.0.1:port` and collects every SSE event
    /// from now on.
    pub fn connect(port: u16, path: &str) -> Subscriber {
        Subscriber::connect_with(port, path, &[])
    }

    /// [`Subscriber::connect`], the request with `headers` too (a session's
    /// cookie, a `Last-Event-ID`).
    pub fn connect_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        Subscriber::connect_within(port, path, headers, PATIENCE)
    }

    /// [`Subscriber::connect_with`], the answer's head awaited for `within`
    /// at most: past it, the connection is closed, and the status is 0.
    pub fn connect_within(
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
        within: std::time::Duration,
    ) -> Subscriber {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::Write;
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: keep-alive\r\n{extra}\r\n"
        )
        .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(None));
        {
            let (events, status, stream) =
                (events.clone(), status.clone(), stream.try_clone().unwrap());
            std::thread::spawn(move || read_sse(stream, &events, &status));
        }
        let deadline = std::time::Instant::now() + within;
        while status.lock().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let status = status.lock().unwrap().unwrap_or_default();
        if status == 0 {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Subscriber {
            events,
            status,
            stream,
        }
    }

    pub fn events(&self) -> Vec<SseEvent> {
        self.events.lock().unwrap().clone()
    }

    /// How many events came, without copying them.
    pub fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub fn wait_for(&self, count: usize) -> Vec<SseEvent> {
        wait_until(&format!("{count} SSE events"), || self.count() >= count);
        self.events()
    }
}

/// Reads an HTTP/1.1 event stream: the response head, then (chunked) SSE
/// frames separated by blank lines.
fn read_sse(
    stream: std::net::TcpStream,
    events: &Mutex<Vec<SseEvent>>,
    connected: &Mutex<Option<u16>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut chunked = false;
    let mut status = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            // No answer: a status no server sends.
            *connected.lock().unwrap() = Some(0);
            return;
        }
        // `HTTP/1.1 200 OK`
        status = status.or_else(|| line.split_whitespace().nth(1)?.parse().ok());
        if line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
        {
            chunked = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    *connected.lock().unwrap() = Some(status.unwrap_or_default());
    let mut text = String::new();
    loop {
        if chunked {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
                continue;
            };
            let mut chunk = vec![0; size + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return;
            }
            text.push_str(&String::from_utf8_lossy(&chunk[..size]));
        } else {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            text.push_str(&line);
        }
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let mut event = SseEvent {
                id: None,
                event: "message".into(),
                data: String::new(),
                at: std::time::Instant::now(),
            };
            let mut has_data = false;
            for field in frame.lines() {
                if let Some(value) = field.strip_prefix("id:") {
                    event.id = Some(value.strip_prefix(' ').unwrap_or(value).to_owned());
                } else if let Some(value) = field.strip_prefix("event:") {
                    event.event = value.trim().to_owned();
                } else if let Some(value) = field.strip_prefix("data:") {
                    if has_data {
                        event.data.push('\n');
                    }
                    event
                        .data
                        .push_str(value.strip_prefix(' ').unwrap_or(value));
                    has_data = true;
                }
            }
            if has_data {
                events.lock().unwrap().push(event);
            }
        }
    }
}
