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
//! - this file serves them on `stream.listen` (`serving`).

mod answer;
mod auth;
mod link;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

use crate::config::StreamConfig;
use crate::serving::{self, Bounds, Setting};
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

/// `stream.listen`.
pub const STREAM: Setting = Setting {
    key: "stream.listen",
    serving: "streams",
};

/// Connections served at once: Pushpin makes a request per stream opened
/// or resumed, each answered at once. A request's head (cookies
/// included), and what a connection buffers.
const BOUNDS: Bounds = Bounds {
    connections: 256,
    head: 16 * 1024,
    buffer: 32 * 1024,
    head_within: Duration::from_secs(5),
    connection_within: Duration::from_secs(60),
};

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
    let listener = serving::bind(listen, STREAM).await?;
    tracing::info!(%listen, "serving streams to Pushpin");
    serving::serve(listener, STREAM, BOUNDS, move |request| {
        let origin = origin.clone();
        async move { answer::answer(&origin, request.into_parts().0).await }
    });
    Ok(())
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
