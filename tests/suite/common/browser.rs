//! A real browser for tests: Debian's headless Chromium driven through its
//! ChromeDriver (`tests/run` installs both), over the WebDriver protocol;
//! and a loopback TCP proxy whose connections a test can cut, as a network
//! would.

use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{PATIENCE, free_port, group_members, signal_group, wait_for_exit, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One Chromium, with a tab per page a test opens. Its driver and every
/// process the driver starts share a process group of their own, which is
/// gone when the `Browser` is dropped.
pub struct Browser {
    port: u16,
    session: String,
    driver: Child,
    /// Chromium's profile, fresh for each browser.
    _profile: tempfile::TempDir,
    /// Whether the first page took the window the session opened with.
    opened: bool,
}

/// A page in one of the browser's tabs.
#[derive(Debug, Clone)]
pub struct Tab(String);

impl Browser {
    pub fn start() -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(program).exists(),
                "{program} is missing: run the tests with tests/run, which installs chromium and chromium-driver"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            port,
            session: String::new(),
            driver,
            _profile: profile,
            opened: false,
        };
        wait_until("chromedriver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        // As the machine's probe runs it, as root, on a machine without a
        // network: no sandbox (root), no GPU, and none of the background
        // connections a closed network refuses.
        let answer = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage",
                        format!("--user-data-dir={}", browser._profile.path().display()),
                    ],
                },
            }}}),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        browser
    }

    /// Opens `url` in a tab of its own.
    pub fn open(&mut self, url: &str) -> Tab {
        let tab = if self.opened {
            let answer = self.session_call("POST", "/window/new", json!({"type": "tab"}));
            Tab(answer["handle"].as_str().unwrap().to_owned())
        } else {
            self.opened = true;
            Tab(self
                .session_call("GET", "/window", Value::Null)
                .as_str()
                .unwrap()
                .to_owned())
        };
        self.switch_to(&tab);
        self.session_call("POST", "/url", json!({"url": url}));
        tab
    }

    /// Runs `script` (a function body: `return ...;`) in `tab`'s page;
    /// returns what it returned.
    pub fn run(&self, tab: &Tab, script: &str) -> Value {
        self.switch_to(tab);
        self.session_call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn switch_to(&self, tab: &Tab) {
        self.session_call("POST", "/window", json!({"handle": tab.0}));
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// One WebDriver command; its `value`, or a panic with the driver's error.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        // The driver may keep the connection open: read the head, then as
        // many bytes as it announces.
        let mut reader = std::io::BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        });
        let text = match length {
            Some(length) => {
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                String::from_utf8(body).unwrap()
            }
            None => {
                let mut rest = String::new();
                reader.read_to_string(&mut rest).unwrap();
                if head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked")
                {
                    dechunk(&rest)
                } else {
                    rest
                }
            }
        };
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}: {text}"));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "{method} {path}: {head}: {value}"
        );
        value["value"].clone()
    }
}

/// The body of a chunked answer.
fn dechunk(mut text: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&rest[..size]);
        text = &rest[size + 2..];
    }
    body
}

impl Drop for Browser {
    /// Quits Chromium, stops the driver, and checks that none of their
    /// processes is left (unless the test already failed).
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let session = std::mem::take(&mut self.session);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &format!("/session/{session}"), Value::Null)
            }));
        }
        let group = self.driver.id();
        signal_group(group, "TERM");
        if wait_for_exit(&mut self.driver, Duration::from_secs(10)).is_none() {
            signal_group(group, "KILL");
            let _ = self.driver.wait();
        }
        let mut left = group_members(group);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !left.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            left = group_members(group);
        }
        if !left.is_empty() {
            signal_group(group, "KILL");
        }
        if !std::thread::panicking() {
            assert!(left.is_empty(), "browser processes outlived it: {left:?}");
        }
    }
}

/// A TCP proxy from an address on loopback to a local port, on its own
/// runtime. `cut` closes every connection through it and refuses new ones
/// (as a network that went away) until `restore`. It keeps the start of
/// what clients sent on each connection, to show which requests came, and
/// of what the server answered, to tell an event the relay never sent from
/// one the browser did not show.
pub struct Proxy {
    pub address: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    sent: Arc<Mutex<Vec<String>>>,
    answered: Arc<Mutex<Vec<String>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// How much of each connection's client bytes a proxy keeps.
const KEPT: usize = 16 * 1024;

/// How much of each connection's server bytes a proxy keeps.
const ANSWERS_KEPT: usize = 256 * 1024;

impl Proxy {
    /// Listens on `ip` (any port) and forwards to `127.0.0.1:to`.
    pub fn start(ip: &str, to: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((ip, 0)))
            .unwrap_or_else(|error| panic!("listening on {ip}: {error}"));
        let address = listener.local_addr().unwrap();
        let (cut, open, sent, answered) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        {
            let (cut, open, sent, answered) =
                (cut.clone(), open.clone(), sent.clone(), answered.clone());
            runtime.spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let kept = (sent.clone(), answered.clone());
                    let task = tokio::spawn(forward(client, to, kept));
                    open.lock().unwrap().push(task.abort_handle());
                }
            });
        }
        Proxy {
            address,
            cut,
            open,
            sent,
            answered,
            runtime: Some(runtime),
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.open.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// The start of what clients sent on each connection, oldest first.
    pub fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }

    /// The `alert_id`s in what the server answered on each connection,
    /// oldest connection first: the events the relay sent towards the
    /// browser.
    pub fn alert_ids_answered(&self) -> Vec<Vec<i64>> {
        self.answered
            .lock()
            .unwrap()
            .iter()
            .map(|answer| {
                answer
                    .split("\"alert_id\":")
                    .skip(1)
                    .filter_map(|rest| {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        digits.parse().ok()
                    })
                    .collect()
            })
            .collect()
    }
}

/// What a proxy keeps of its connections: the clients' bytes, the
/// server's.
type Kept = (Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<String>>>);

async fn forward(mut client: tokio::net::TcpStream, to: u16, (sent, answered): Kept) {
    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
        return;
    };
    let index = {
        let mut sent = sent.lock().unwrap();
        sent.push(String::new());
        answered.lock().unwrap().push(String::new());
        sent.len() - 1
    };
    let (client_reads, client_writes) = client.split();
    let (server_reads, server_writes) = server.split();
    tokio::join!(
        pass_on(client_reads, server_writes, (&sent, index, KEPT)),
        pass_on(
            server_reads,
            client_writes,
            (&answered, index, ANSWERS_KEPT)
        ),
    );
}

/// Copies one direction of a connection until it ends, keeping its start
/// (up to `bound` bytes) at `index` of `kept`; then shuts the other side's
/// writes.
async fn pass_on(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    (kept, index, bound): (&Mutex<Vec<String>>, usize, usize),
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = [0u8; 8192];
    loop {
        let read = from.read(&mut buffer).await.unwrap_or(0);
        if read == 0 {
            break;
        }
        {
            let mut kept = kept.lock().unwrap();
            let start = &mut kept[index];
            if start.len() < bound {
                start.push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
