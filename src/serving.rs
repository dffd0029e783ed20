//! The daemon's HTTP listeners (`metrics.listen`, `stream.listen`): each
//! bound as the daemon starts, so that a taken address fails the start
//! (EX_UNAVAILABLE); each connection within bounds; every answer saying it
//! is price-alertd, so that `check-config` on a running host tells the
//! daemon's own listener (a restart hands it over) from another program's.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

/// An address the configuration asks the daemon to listen on.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Its key in the file (`metrics.listen`).
    pub key: &'static str,
    /// What the daemon serves there, as the log and errors say it.
    pub serving: &'static str,
}

/// A [`Setting`]'s address cannot be listened on (taken, or not an address
/// of this host); attached to the error, so that the CLI answers
/// EX_UNAVAILABLE.
#[derive(Debug)]
pub struct CannotListen(String);

impl std::fmt::Display for CannotListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn cannot_listen(listen: SocketAddr, setting: Setting, error: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(error).context(CannotListen(format!(
        "listening for {} on {listen} ({})",
        setting.serving, setting.key
    )))
}

/// Who may serve on an address, as `check-config` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Nobody holds it: `run` can bind it.
    Free,
    /// A running price-alertd serves it (its answers say so): a restart
    /// hands it over.
    HeldByTheDaemon,
}

/// What every answer says it is (`Server`).
const SERVER: &str = "price-alertd";

/// Checks that `listen` is free to serve on, as `run` will bind it, or
/// held by a running price-alertd; fails if another program holds it or it
/// is no address of this host.
pub fn check(listen: SocketAddr, setting: Setting) -> anyhow::Result<Listen> {
    match std::net::TcpListener::bind(listen) {
        Ok(_) => Ok(Listen::Free),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && served_by_us(listen) => {
            Ok(Listen::HeldByTheDaemon)
        }
        Err(error) => Err(cannot_listen(listen, setting, error)),
    }
}

/// Whether what listens on `listen` answers as the daemon's listeners do
/// (its `Server`), asked `GET /healthz` within a second and read up to
/// 4 KiB.
fn served_by_us(listen: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    const WITHIN: Duration = Duration::from_secs(1);
    let mut address = listen;
    if address.ip().is_unspecified() {
        address.set_ip(match listen {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address, WITHIN) else {
        return false;
    };
    let asked = stream.set_read_timeout(Some(WITHIN)).is_ok()
        && stream.set_write_timeout(Some(WITHIN)).is_ok()
        && stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_ok();
    let mut head = Vec::new();
    if !asked || stream.take(4096).read_to_end(&mut head).is_err() && head.is_empty() {
        return false;
    }
    String::from_utf8_lossy(&head)
        .lines()
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .any(|(name, value)| name.eq_ignore_ascii_case("server") && value.trim() == SERVER)
}

/// Binds `listen` for `setting`, before the daemon says it started.
pub async fn bind(listen: SocketAddr, setting: Setting) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| cannot_listen(listen, setting, error))
}

/// What one listener's connections may take.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections served at once; more are closed as they come, so that
    /// what one costs ends with its accept.
    pub connections: usize,
    /// The most a request's head may hold (a larger one is answered 431
    /// and the connection closed), and the most hyper buffers for one
    /// connection (its floor is 8 KiB).
    pub head: usize,
    pub buffer: usize,
    /// How long a request's head may take to arrive, and a connection to
    /// last; then it is closed.
    pub head_within: Duration,
    pub connection_within: Duration,
}

/// Serves `listener`'s connections with `answer`, each within `bounds`,
/// until the runtime ends.
pub fn serve<A, F>(listener: tokio::net::TcpListener, setting: Setting, bounds: Bounds, answer: A)
where
    A: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        let room = Arc::new(tokio::sync::Semaphore::new(bounds.connections));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, serving = setting.serving, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(place) = room.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                serve_connection(stream, setting, bounds, answer).await;
                drop(place);
            });
        }
    });
}

/// Serves one connection within `bounds`.
async fn serve_connection<A, F>(
    stream: tokio::net::TcpStream,
    setting: Setting,
    bounds: Bounds,
    answer: A,
) where
    A: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let answered = answer(request);
        async move {
            let mut response = answered.await;
            response.headers_mut().insert(
                hyper::header::SERVER,
                hyper::header::HeaderValue::from_static(SERVER),
            );
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(bounds.head_within)
        .max_header_size(bounds.head)
        .max_buf_size(bounds.buffer)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(error) = tokio::time::timeout(bounds.connection_within, connection)
        .await
        .unwrap_or(Ok(()))
    {
        tracing::debug!(%error, serving = setting.serving, "a connection failed");
    }
}
