//! The HTTP endpoint: `/metrics`, `/healthz` (alive) and `/readyz` (ready to
//! do its work) on `[metrics] listen`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

use crate::membership;
use crate::serving::{self, Bounds, Setting};
use crate::store::{self, Pool};

use super::exposition::{Format, Readings};
use super::series::Metrics;

/// `metrics.listen`.
pub const METRICS: Setting = Setting {
    key: "metrics.listen",
    serving: "metrics",
};

/// Binds `listen` and serves `/metrics`, `/healthz` and `/readyz` until the
/// runtime ends.
/// Binding happens before this returns, so a taken port fails the start.
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>, pool: Pool) -> anyhow::Result<()> {
    let listener = serving::bind(listen, METRICS).await?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    if !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "the metrics endpoint listens beyond this host: it has no authentication, so expose it only to networks that may read the alert counts and outbox backlog"
        );
    }
    serving::serve(listener, METRICS, BOUNDS, move |request| {
        let (metrics, pool) = (metrics.clone(), pool.clone());
        let accept = request
            .headers()
            .get(hyper::header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let path = request.uri().path().to_owned();
        async move { answer(&path, accept.as_deref(), &metrics, &pool).await }
    });
    Ok(())
}

/// Connections served at once: a scraper needs one, and an operator's
/// `curl` another. A request's head, and what a connection buffers: with
/// the connections, what unfinished requests can make the endpoint hold.
const BOUNDS: Bounds = Bounds {
    connections: 256,
    head: 8 * 1024,
    buffer: 16 * 1024,
    head_within: Duration::from_secs(5),
    connection_within: Duration::from_secs(30),
};

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
