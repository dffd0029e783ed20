//! The HTTP endpoint: `/metrics` and `/healthz` on `[metrics] listen`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

use crate::store::{self, Pool};

use super::exposition::{Backlog, Format};
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

/// Checks that `listen` is free to serve on, as `run` will bind it.
pub fn check_listen(listen: SocketAddr) -> anyhow::Result<()> {
    std::net::TcpListener::bind(listen)
        .map(drop)
        .map_err(|error| cannot_listen(listen, error))
}

/// Binds `listen` and serves `/metrics` and `/healthz` until the runtime ends.
/// Binding happens before this returns, so a taken port fails the start.
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>, pool: Pool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| cannot_listen(listen, error))?;
    tracing::info!(%listen, "serving /metrics and /healthz");
    if !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "the metrics endpoint listens beyond this host: it has no authentication, so expose it only to networks that may read the alert counts and outbox backlog"
        );
    }
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, pool) = (metrics.clone(), pool.clone());
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
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
                },
            );
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(error) = tokio::time::timeout(Duration::from_secs(30), connection)
                    .await
                    .unwrap_or(Ok(()))
                {
                    tracing::debug!(%error, "a metrics connection failed");
                }
            });
        }
    });
    Ok(())
}

async fn answer(
    path: &str,
    accept: Option<&str>,
    metrics: &Metrics,
    pool: &Pool,
) -> hyper::Response<Full<Bytes>> {
    let backlog = store::blocking(pool, "reading the outbox", |connection| {
        let (pending, dead) = store::outbox::backlog(connection)?;
        Ok((pending, dead, store::outbox::oldest_pending(connection)?))
    })
    .await;
    let (status, content_type, body) = match (path, backlog) {
        ("/metrics", Ok((pending, dead, oldest))) => {
            let format = Format::negotiate(accept);
            let oldest_pending = oldest
                .as_deref()
                .and_then(crate::evaluate::parse_time)
                .and_then(|created| (chrono::Utc::now() - created).to_std().ok())
                .unwrap_or_default();
            let backlog = Backlog {
                pending,
                dead,
                oldest_pending,
            };
            (200, format.content_type(), metrics.render(format, backlog))
        }
        ("/healthz", Ok(_)) => (200, "text/plain; charset=utf-8", "ok\n".to_owned()),
        ("/metrics" | "/healthz", Err(error)) => (
            503,
            "text/plain; charset=utf-8",
            format!("the database is not answering: {error:#}\n"),
        ),
        _ => (
            404,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".to_owned(),
        ),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
