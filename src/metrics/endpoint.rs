//! The HTTP endpoint: `/metrics`, `/healthz` (alive) and `/readyz` (ready to
//! do its work) on `[metrics] listen`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

use crate::membership;
use crate::store::{self, Pool};

use super::exposition::{Format, Readings};
use super::series::Metrics;

/// `metrics.listen` cannot be listened on (taken, or not an address of this
/// host); attached to the error, so that the CLI answers EX_UNAVAILABLE.
#[derive(Debug)]
pub struct CannotListen(String);

impl std::fmt::Display for CannotListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn cannot_listen(listen: SocketAddr, error: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(error).context(CannotListen(format!(
        "listening for metrics on {listen} (metrics.listen)"
    )))
}

/// Who may serve metrics on an address, as `check-config` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Nobody holds it: `run` can bind it.
    Free,
    /// A running price-alertd serves it (its answers say so): a restart
    /// hands it over.
    HeldByTheDaemon,
}

/// What every answer of the endpoint says it is, so that `check-config` on
/// a running host tells the daemon's own listener from another program's.
const SERVER: &str = "price-alertd";

/// Checks that `listen` is free to serve on, as `run` will bind it, or
/// held by a running price-alertd; fails if another program holds it or it
/// is no address of this host.
pub fn check_listen(listen: SocketAddr) -> anyhow::Result<Listen> {
    match std::net::TcpListener::bind(listen) {
        Ok(_) => Ok(Listen::Free),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && served_by_us(listen) => {
            Ok(Listen::HeldByTheDaemon)
        }
        Err(error) => Err(cannot_listen(listen, error)),
    }
}

/// Whether what listens on `listen` answers `/healthz` as this endpoint
/// does, asked within a second and read up to 4 KiB.
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

/// Binds `listen` and serves `/metrics`, `/healthz` and `/readyz` until the
/// runtime ends.
/// Binding happens before this returns, so a taken port fails the start.
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>, pool: Pool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| cannot_listen(listen, error))?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    if !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "the metrics endpoint listens beyond this host: it has no authentication, so expose it only to networks that may read the alert counts and outbox backlog"
        );
    }
    tokio::spawn(async move {
        let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // One connection too many is closed at once: what it costs ends
            // with its accept.
            let Ok(place) = room.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let (metrics, pool) = (metrics.clone(), pool.clone());
            tokio::spawn(async move {
                serve_connection(stream, metrics, pool).await;
                drop(place);
            });
        }
    });
    Ok(())
}

/// Connections served at once; more are closed as they come. A scraper
/// needs one, and an operator's `curl` another.
pub const MAX_CONNECTIONS: usize = 256;
/// The most a connection's request head may hold, and the most hyper
/// buffers for one connection (its floor is 8 KiB): with
/// [`MAX_CONNECTIONS`], what unfinished requests can make the endpoint hold.
const MAX_HEAD: usize = 8 * 1024;
const MAX_BUFFER: usize = 16 * 1024;
/// How long a request's head may take to arrive, and a connection to last.
const HEAD_WITHIN: Duration = Duration::from_secs(5);
const CONNECTION_WITHIN: Duration = Duration::from_secs(30);

/// Serves one connection within its bounds: a head larger than
/// [`MAX_HEAD`] is answered 431 and the connection closed; one not whole
/// within [`HEAD_WITHIN`], or a connection older than
/// [`CONNECTION_WITHIN`], is closed.
async fn serve_connection(stream: tokio::net::TcpStream, metrics: Arc<Metrics>, pool: Pool) {
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (metrics, pool) = (metrics.clone(), pool.clone());
            async move {
                let accept = request
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|value| value.to_str().ok());
                Ok::<_, std::convert::Infallible>(
                    answer(request.uri().path(), accept, &metrics, &pool).await,
                )
            }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_WITHIN)
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_BUFFER)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(error) = tokio::time::timeout(CONNECTION_WITHIN, connection)
        .await
        .unwrap_or(Ok(()))
    {
        tracing::debug!(%error, "a metrics connection failed");
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn answer(
    path: &str,
    accept: Option<&str>,
    metrics: &Metrics,
    pool: &Pool,
) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => match read(pool, metrics.watches_quotes()).await {
            Ok(readings) => {
                let format = Format::negotiate(accept);
                (200, format.content_type(), metrics.render(format, readings))
            }
            Err(error) => (
                503,
                TEXT,
                format!("the database is not answering: {error:#}\n"),
            ),
        },
        // Alive: the process serves. Restarting it cures nothing that
        // `/readyz` reports.
        "/healthz" => (200, TEXT, "ok\n".to_owned()),
        "/readyz" => ready(metrics, pool).await,
        _ => (
            404,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static(SERVER),
    );
    response
}

/// The outbox and the members, and (`quotes`) the quotes of the tickers
/// with enabled alerts, as the database says now.
async fn read(pool: &Pool, quotes: bool) -> anyhow::Result<Readings> {
    let (pending, dead, oldest, members, alerted, now) = store::blocking(
        pool,
        "reading the outbox and the members",
        move |connection| {
            let (pending, dead) = store::outbox::backlog(connection)?;
            let oldest = store::outbox::oldest_pending(connection)?;
            let members = store::cluster::members(connection)?;
            let alerted = if quotes {
                store::quotes::alerted(connection)?
            } else {
                Vec::new()
            };
            Ok((
                pending,
                dead,
                oldest,
                members,
                alerted,
                store::clock::now(connection)?,
            ))
        },
    )
    .await?;
    // Its age by the clock it was stamped by, the database's.
    let oldest_pending = oldest
        .and_then(|created| (now - created).to_std().ok())
        .unwrap_or_default();
    let live_members = members
        .iter()
        .filter(|member| membership::beating(member))
        .count();
    let lost_members = members
        .iter()
        .filter(|member| {
            !membership::beating(member) && member.heartbeat_age_ms <= LOST_FOR.as_millis() as i64
        })
        .count();
    Ok(Readings {
        pending,
        dead,
        oldest_pending,
        live_members: live_members as u64,
        lost_members: lost_members as u64,
        alerted,
        now,
    })
}

/// How long a member that stopped beating without leaving counts as lost
/// (then as gone: `status` still lists it for a day).
const LOST_FOR: Duration = Duration::from_secs(3600);

/// How long `/readyz` waits for the database: a probe should not hang for
/// as long as a tick waits for a connection.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// Ready to do its work: the database answers, the jobs' fire times are
/// booked, and this member beats (see `Metrics::not_ready`). Otherwise 503
/// and every reason, one a line.
async fn ready(metrics: &Metrics, pool: &Pool) -> (u16, &'static str, String) {
    let answers = tokio::time::timeout(
        READY_WITHIN,
        store::blocking(pool, "asking the database", |connection| {
            store::installation_id(connection)
        }),
    )
    .await;
    let mut why = metrics.not_ready();
    match answers {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => why.insert(0, format!("the database is not answering: {error:#}")),
        Err(_) => why.insert(
            0,
            format!(
                "the database did not answer within {} s",
                READY_WITHIN.as_secs()
            ),
        ),
    }
    if why.is_empty() {
        return (200, TEXT, "ready\n".to_owned());
    }
    let reasons: String = why.iter().map(|reason| format!("- {reason}\n")).collect();
    (503, TEXT, format!("not ready:\n{reasons}"))
}
