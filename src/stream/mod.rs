//! The stream origin: what a Pushpin relay asks when a browser opens its
//! stream (`[stream]`), and again when a stream finds an event missing. It
//! answers from the outbox, so that a browser that comes back with
//! `Last-Event-ID` gets exactly its user's events since, in their order,
//! however long it was away and whatever restarted meanwhile, as long as
//! the outbox keeps them; then Pushpin holds the stream on the user's
//! channel, where the deliverer publishes (GRIP: `Grip-Hold`,
//! `Grip-Channel` with the last event's id as `prev-id`, `Grip-Link`).
//!
//! - `auth` asks the application who a browser is, with its cookies.
//! - `link` signs the links this origin gives Pushpin to come back by.
//! - `answer` reads the user's channel and writes the GRIP answer.
//! - this file serves them on `stream.listen`, each connection bounded.

mod answer;
mod auth;
mod link;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;

use crate::config::StreamConfig;
use crate::store::{self, Pool};

/// What every request is answered with.
struct Origin {
    pool: Pool,
    auth: auth::Auth,
    links: link::Links,
    /// Failures named in the log, within their budget: an application or
    /// a database that does not answer makes one a stream.
    failures: crate::recurring::Budget,
}

/// At most this many failed streams are named in the log a minute; how
/// many more failed is said once the minute is over.
const FAILURES_PER_MINUTE: u64 = 20;

/// Connections served at once; more are closed as they come. Pushpin
/// makes a request per stream opened or resumed, each answered at once.
const MAX_CONNECTIONS: usize = 256;
/// The most a request's head may hold (cookies included), and what hyper
/// buffers for one connection.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BUFFER: usize = 32 * 1024;
/// How long a request's head may take to arrive, and a connection to last.
const HEAD_WITHIN: Duration = Duration::from_secs(5);
const CONNECTION_WITHIN: Duration = Duration::from_secs(60);

/// Binds `config.listen` and serves the stream origin until the runtime
/// ends. Binding happens before this returns, so a taken port fails the
/// start.
pub async fn serve(config: &StreamConfig, pool: Pool) -> anyhow::Result<()> {
    let key = store::blocking(&pool, "reading the stream origin's key", |connection| {
        store::channels::key(connection)
    })
    .await?;
    let origin = Arc::new(Origin {
        auth: auth::Auth::new(config)?,
        links: link::Links::new(&key),
        pool,
        failures: crate::recurring::Budget::per_minute(FAILURES_PER_MINUTE),
    });
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening for streams on {listen} (stream.listen)"))?;
    tracing::info!(%listen, "serving streams to Pushpin");
    tokio::spawn(async move {
        let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a stream connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(place) = room.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let origin = origin.clone();
            tokio::spawn(async move {
                serve_connection(stream, origin).await;
                drop(place);
            });
        }
    });
    Ok(())
}

/// Serves one connection within its bounds (see the constants).
async fn serve_connection(stream: tokio::net::TcpStream, origin: Arc<Origin>) {
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let origin = origin.clone();
            async move {
                Ok::<_, std::convert::Infallible>(
                    answer::answer(&origin, request.into_parts().0).await,
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
        tracing::debug!(%error, "a stream connection failed");
    }
}

impl Origin {
    /// Names a failed stream in the log, within the budget; once a minute
    /// is over, how many were not named.
    fn failed(&self, why: &str) {
        if self.failures.take() {
            tracing::warn!(why, "a stream failed");
        }
        if let Some(unlogged) = self.failures.roll(std::time::Instant::now()) {
            tracing::warn!(
                unlogged,
                "more streams failed in the last minute than were logged"
            );
        }
    }
}

/// A plain answer: `status` and a line saying why.
fn plain(status: u16, text: &str) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
