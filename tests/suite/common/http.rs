//! Loopback HTTP servers on their own runtime, their requests and answers,
//! hostile endless bodies, and free ports.

use std::net::TcpListener;
use std::sync::Arc;

/// A request as a test server's handler sees it.
pub struct Incoming {
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Incoming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What a test server's handler answers.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

pub enum Body {
    Text(String),
    Flood(Flood),
}

/// A body a test server streams without ever holding it: `head`, then spaces,
/// `len` bytes in all (with a `content-length`), or endless if `len` is `None`
/// (chunked). A hostile receiver or quote source.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    pub head: &'static str,
    pub len: Option<u64>,
}

struct FloodBody {
    head: Option<&'static str>,
    /// Bytes left after the head; `None`: endless.
    left: Option<u64>,
}

impl FloodBody {
    fn new(flood: Flood) -> FloodBody {
        FloodBody {
            head: Some(flood.head).filter(|head| !head.is_empty()),
            left: flood
                .len
                .map(|len| len.saturating_sub(flood.head.len() as u64)),
        }
    }
}

impl hyper::body::Body for FloodBody {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        static FILL: [u8; 65536] = [b' '; 65536];
        let this = self.get_mut();
        let data = if let Some(head) = this.head.take() {
            hyper::body::Bytes::from_static(head.as_bytes())
        } else {
            let size = this
                .left
                .map_or(FILL.len() as u64, |left| left.min(FILL.len() as u64));
            if size == 0 {
                return std::task::Poll::Ready(None);
            }
            if let Some(left) = &mut this.left {
                *left -= size;
            }
            hyper::body::Bytes::from_static(&FILL[..size as usize])
        };
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.left {
            Some(left) => hyper::body::SizeHint::with_exact(
                left + self.head.map_or(0, |head| head.len() as u64),
            ),
            None => hyper::body::SizeHint::default(),
        }
    }
}

pub type Handler = Arc<
    dyn Fn(Incoming) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>
        + Send
        + Sync,
>;

/// A real HTTP/1.1 server (hyper) on loopback, on its own runtime, calling
/// `handler` for every request. Stops when dropped.
pub struct HttpServer {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HttpServer {
    pub fn start(port: u16, handler: Handler) -> HttpServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            use http_body_util::BodyExt as _;
                            let uri = request.uri().to_string();
                            let headers = request
                                .headers()
                                .iter()
                                .map(|(name, value)| {
                                    (
                                        name.to_string(),
                                        value.to_str().unwrap_or_default().to_owned(),
                                    )
                                })
                                .collect();
                            let body = request.into_body().collect().await?.to_bytes();
                            let answer = handler(Incoming {
                                uri,
                                headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            })
                            .await;
                            let mut response = hyper::Response::new(match answer.body {
                                Body::Text(text) => http_body_util::Either::Left(
                                    http_body_util::Full::new(hyper::body::Bytes::from(text)),
                                ),
                                Body::Flood(flood) => {
                                    http_body_util::Either::Right(FloodBody::new(flood))
                                }
                            });
                            *response.status_mut() =
                                hyper::StatusCode::from_u16(answer.status).unwrap();
                            for (name, value) in answer.headers {
                                response.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, hyper::Error>(response)
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        HttpServer {
            port,
            runtime: Some(runtime),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A loopback port for a server the test starts, free now and handed out
/// once per process. It comes from below the kernel's ephemeral range
/// (`ip_local_port_range`), which `bind` to port 0 and every outgoing
/// connection draw from: a port the kernel handed out (and the listener
/// dropped) could go to anyone's next connection or listener before the
/// server binds it, which made a relay fail to start now and then.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static RANGE: OnceLock<(u32, u32)> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let &(start, span) = RANGE.get_or_init(|| {
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .expect("the kernel's ephemeral port range");
        let first: u32 = ephemeral
            .split_whitespace()
            .next()
            .and_then(|first| first.parse().ok())
            .expect("ip_local_port_range's first port");
        assert!(
            first >= LOWEST + 1_000,
            "the ephemeral ports start at {first}: the tests need ports {LOWEST}.. below them"
        );
        let span = first - LOWEST;
        // Processes started side by side (a benchmark beside the suite)
        // begin at different places.
        (std::process::id().wrapping_mul(7_919) % span, span)
    });
    loop {
        let taken = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            taken < span,
            "every port below the ephemeral range was tried"
        );
        let port = u16::try_from(LOWEST + (start + taken) % span).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A GET of the daemon's metrics endpoint: the status and body.
pub fn scrape(port: u16, path: &str) -> (u16, String) {
    let (status, _, body) = scrape_accepting(port, path, None);
    (status, body)
}

/// A GET with an optional `Accept`; the status, content type and body.
pub fn scrape_accepting(port: u16, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (
            response.status().as_u16(),
            content_type,
            response.text().await.unwrap(),
        )
    })
}

/// The value of one sample line, e.g. `price_alertd_outbox_pending`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// A counter of the daemon's metrics, e.g. `tick_causes_total{...}`.
pub fn counter(port: u16, series: &str) -> f64 {
    let (status, body) = scrape(port, "/metrics");
    assert_eq!(status, 200);
    sample(&body, &format!("price_alertd_{series}"))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

/// Runs of `job` started by a change.
pub fn change_runs(port: u16, job: &str) -> f64 {
    counter(
        port,
        &format!("tick_causes_total{{job_name=\"{job}\",cause=\"change\"}}"),
    )
}

/// Runs of `job` that finished without error.
pub fn ok_runs(port: u16, job: &str) -> f64 {
    counter(
        port,
        &format!("ticks_total{{job_name=\"{job}\",result=\"ok\"}}"),
    )
}

/// A raw loopback HTTP/1.1 server that reads each request whole, then
/// writes only `head` (a status line and headers that promise a body) and
/// never anything more, holding the connection open until it is dropped:
/// a receiver that says 200 and then goes silent. Records each request's
/// `webhook-id`.
pub struct HeadOnly {
    pub url: String,
    ids: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl HeadOnly {
    pub fn start(head: &'static str) -> HeadOnly {
        use std::io::{BufRead as _, Read as _, Write as _};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopped) = (ids.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut id) = (0usize, String::new());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap_or_default();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "webhook-id" => id = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                seen.lock().unwrap().push(id);
                let mut stream = stream;
                let _ = stream.write_all(head.as_bytes());
                held.push(stream);
            }
        });
        HeadOnly { url, ids, stop }
    }

    /// The `webhook-id` of every request, in order.
    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

impl Drop for HeadOnly {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
