//! One attempt: the webhook's HTTP client, the signed request, and what its
//! answer means for the event (delivered, retried later, or a dead letter).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use http_body_util::Full;
use sha2::Sha256;

use crate::config::{Secret, WebhookConfig, WebhookFormat};
use crate::http_client;
use crate::logging::error_chain;
use crate::metrics::Response;
use crate::recurring::Budget;
use crate::store::outbox::{Attempt, Leased, Outcome, Settled};

use super::lease::LeasePolicy;
use super::pushpin;
use super::route::Target;
use super::time::{DbClock, Stop};

/// The longest `Retry-After` a receiver can impose.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);
/// How much of a receiver's answer is read: enough for a log line. The status
/// alone is the answer; the rest of a longer body is never read, and the
/// connection is dropped with it, so no receiver decides how much memory the
/// daemon uses.
pub const ANSWER_PREFIX: usize = 1024;
/// How long an answer's body may take once its status arrived (see
/// [`exchange`]).
const BODY_WITHIN: Duration = Duration::from_millis(500);
/// The webhook's HTTP client: hyper's pooled HTTP/1 client over rustls
/// (verification on, against the platform's roots, as reqwest does for the
/// quote source). Without reqwest's layers (URL parsing, redirects, proxies)
/// a request costs a fraction of the CPU; see BENCHMARKS.md.
type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A configured webhook: the shared HTTP client and what to send with it.
#[derive(Clone)]
pub struct Webhook {
    client: Client,
    target: Arc<Target>,
    pub(super) config: Arc<WebhookConfig>,
    /// Dead letters named in the log, within their budget: a receiver that
    /// refuses everything makes one a request.
    pub(super) dead_letters: Arc<Budget>,
}

/// At most this many dead letters are named in the log a minute; how many
/// more were is said once the minute is over (`outbox list --dead` lists
/// them all).
const DEAD_LETTERS_PER_MINUTE: u64 = 20;

impl Webhook {
    /// How its deliverer leases.
    pub(super) fn leasing(&self) -> LeasePolicy {
        LeasePolicy::of(&self.config)
    }

    pub fn new(config: &WebhookConfig) -> anyhow::Result<Webhook> {
        let tls = http_client::tls_config()?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(config.concurrency)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(https);
        let target = Target::new(config)?;
        Ok(Webhook {
            client,
            target: Arc::new(target),
            config: Arc::new(config.clone()),
            dead_letters: Arc::new(Budget::per_minute(DEAD_LETTERS_PER_MINUTE)),
        })
    }

    /// Whether each user's events go to a destination of their own: a URL
    /// (`{user_id}`), or a channel (`format = "pushpin"`). Then each user's
    /// events are sent in queue order, one request in flight per user.
    pub(super) fn per_user(&self) -> bool {
        self.target.per_user() || self.config.format == WebhookFormat::Pushpin
    }

    /// Whether each event takes a place on its user's channel as it is
    /// leased (`store::channels`): where a relay resumes streams from the
    /// outbox.
    pub(super) fn places_events(&self) -> bool {
        self.config.format == WebhookFormat::Pushpin
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }
}

/// Why an attempt failed, as far as what happens next is concerned.
#[derive(Debug, thiserror::Error)]
pub enum AttemptFailure {
    /// Worth retrying: no answer, a timeout, 408, 425, 429, 5xx, a redirect.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (other 4xx): the event goes to the dead letters.
    #[error("{reason}")]
    Permanent { reason: String },
}

/// The start of an answer's body as it may appear in a log line or a dead
/// letter: control characters and runs of spaces folded, cut to 200 characters.
fn excerpt(prefix: &[u8]) -> String {
    let text = String::from_utf8_lossy(prefix);
    let text = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Classifies a non-2xx answer; `excerpt` is the start of its body.
pub fn classify(status: StatusCode, headers: &HeaderMap, excerpt: &str) -> AttemptFailure {
    let reason = if excerpt.is_empty() {
        format!("the webhook answered {status}")
    } else {
        format!("the webhook answered {status}: {excerpt}")
    };
    let transient = status.is_server_error()
        || status.is_redirection()
        || status.is_informational()
        || matches!(status.as_u16(), 408 | 425 | 429);
    if transient {
        AttemptFailure::Transient {
            reason,
            retry_after: http_client::retry_after(headers).map(|wait| wait.min(RETRY_AFTER_CAP)),
        }
    } else {
        AttemptFailure::Permanent { reason }
    }
}

/// One request carrying `events` (one, but where `webhook.format` takes
/// several), stamped by the database's clock: what becomes of each event
/// (with when it was claimed), and what the receiver answered.
pub(super) async fn attempt(
    webhook: &Webhook,
    events: Vec<Leased>,
    stop: Stop,
    clock: DbClock,
) -> (Vec<(Settled, Option<DateTime<Utc>>)>, Response) {
    let started = std::time::Instant::now();
    let made = Made {
        at_ms: clock.now_ms(),
        started,
    };
    let Outgoing {
        events,
        request,
        url,
        nowhere,
    } = outgoing(webhook, events, clock.now_seconds());
    let mut settled: Vec<_> = nowhere
        .into_iter()
        .map(|(event, error)| {
            dead_letter(webhook, &event.event_id, event.attempts + 1, &error);
            let attempt = made.record(&event, String::new(), None, Some(&error));
            settle(&event, Outcome::Dead { error }, Some(attempt))
        })
        .collect();
    let Some(request) = request else {
        return (settled, Response::None);
    };
    let answered = tokio::select! {
        answered = exchange(webhook, request) => answered,
        () = cut_off(stop) => {
            settled.extend(events.iter().map(|event| settle(event, Outcome::Released, None)));
            return (settled, Response::None);
        }
    };
    let (status, failure, response) = match answered {
        Ok((status, failure)) => (Some(status), failure, Response::Status(status.as_u16())),
        Err(error) => {
            let response = error.response();
            let failure = AttemptFailure::Transient {
                reason: error.to_string(),
                retry_after: None,
            };
            (None, Some(failure), response)
        }
    };
    // One draw for the request: its events, failed together, are due again
    // together (those with as many attempts), in the order they went. A
    // draw each spread a failed batch over several retries, out of order,
    // and Pushpin held each user's next event until its `prev-id` came.
    let jitter = fastrand::f64();
    for event in &events {
        let outcome = match &failure {
            None => {
                tracing::debug!(event_id = %event.event_id, "delivered");
                Outcome::Delivered
            }
            Some(failure) => after_failure(webhook, event, failure, jitter),
        };
        let error = failure.as_ref().map(ToString::to_string);
        let attempt = made.record(event, url.clone(), status, error.as_deref());
        settled.push(settle(event, outcome, Some(attempt)));
    }
    (settled, response)
}

/// When an attempt was made: its record's start, by the database's clock
/// and by this host's for its duration.
struct Made {
    at_ms: i64,
    started: std::time::Instant,
}

impl Made {
    fn record(
        &self,
        event: &Leased,
        url: String,
        status: Option<StatusCode>,
        error: Option<&str>,
    ) -> Attempt {
        Attempt {
            number: event.attempts + 1,
            at_ms: self.at_ms,
            at: String::new(),
            url,
            status: status.map(|status| status.as_u16()),
            error: error.map(str::to_owned),
            duration_ms: self.started.elapsed().as_millis() as i64,
        }
    }
}

/// What became of `event`, with when it was claimed.
fn settle(
    event: &Leased,
    outcome: Outcome,
    attempt: Option<Attempt>,
) -> (Settled, Option<DateTime<Utc>>) {
    let settled = Settled {
        row_id: event.row_id,
        lease_until: event.lease_until,
        outcome,
        attempt,
    };
    (settled, event.created_at)
}

/// What one request sends: the events it carries, and the request with the
/// URL its attempts record; none when no event can go anywhere. `nowhere`
/// holds the events that cannot, and why (they become dead letters).
struct Outgoing {
    events: Vec<Leased>,
    request: Option<http::Request<Full<Bytes>>>,
    url: String,
    nowhere: Vec<(Leased, String)>,
}

/// The request for `events` in `webhook.format`, signed at `timestamp`.
fn outgoing(webhook: &Webhook, events: Vec<Leased>, timestamp: i64) -> Outgoing {
    let mut outgoing = Outgoing {
        events: Vec::with_capacity(events.len()),
        request: None,
        url: String::new(),
        nowhere: Vec::new(),
    };
    match webhook.config.format {
        WebhookFormat::Event => {
            for mut event in events {
                match webhook.target.destination(event.user_id.as_deref()) {
                    Ok(destination) => {
                        outgoing.url = shown(&destination.0);
                        let body = std::mem::take(&mut event.body);
                        outgoing.request = Some(request(
                            webhook,
                            &event.event_id,
                            body,
                            destination,
                            timestamp,
                        ));
                        outgoing.events.push(event);
                    }
                    Err(error) => outgoing.nowhere.push((event, error)),
                }
            }
        }
        WebhookFormat::Pushpin => {
            let mut channels = Vec::with_capacity(events.len());
            for event in events {
                match pushpin::unfit(&event)
                    .map_or_else(|| pushpin::channel(event.user_id.as_deref()), Err)
                {
                    Ok(channel) => {
                        channels.push(channel);
                        outgoing.events.push(event);
                    }
                    Err(error) => outgoing.nowhere.push((event, error)),
                }
            }
            if outgoing.events.is_empty() {
                return outgoing;
            }
            let items: Vec<(&Leased, String)> = outgoing.events.iter().zip(channels).collect();
            let body = pushpin::body(&webhook.config, &items, timestamp);
            let id = pushpin::batch_id(&items);
            let destination = webhook
                .target
                .destination(None)
                .expect("a pushpin webhook has one URL");
            outgoing.url = shown(&destination.0);
            outgoing.request = Some(request(webhook, &id, body, destination, timestamp));
        }
    }
    outgoing
}
/// A request's URL as an attempt records it: no credentials (they travel
/// in a header), its query masked (it may carry a token).
fn shown(uri: &http::Uri) -> String {
    if uri.query().is_none() {
        return uri.to_string();
    }
    url::Url::parse(&uri.to_string())
        .map(|url| crate::config::display_url(&url))
        .unwrap_or_else(|_| uri.path().to_owned())
}

/// The signed POST of `body` (the event `id`, or a batch of events) to its
/// destination (its URL and authorization), at `timestamp` (unix seconds).
fn request(
    webhook: &Webhook,
    id: &str,
    body: String,
    (uri, authorization): (http::Uri, Option<HeaderValue>),
    timestamp: i64,
) -> http::Request<Full<Bytes>> {
    let headers = headers(&webhook.config, id, &body, timestamp);
    let mut request = http::Request::new(Full::new(Bytes::from(body)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    if let Some(authorization) = authorization {
        request.headers_mut().insert(AUTHORIZATION, authorization);
    }
    request.headers_mut().insert(
        USER_AGENT,
        HeaderValue::from_static(http_client::USER_AGENT),
    );
    request
}

/// Sends `request` and reads its answer: the status line and headers within
/// `webhook.timeout`, and for a status that is not a 2xx, what it means. The
/// status is the answer: a 2xx is delivered as soon as its head arrives,
/// whatever its body does. Of the body, at most [`ANSWER_PREFIX`] bytes are
/// read, for at most [`BODY_WITHIN`]: all of a short one, so that the
/// connection can be reused, and of an error's the start, for the log and
/// the dead letter. A body that does not come in time is dropped with its
/// connection.
async fn exchange(
    webhook: &Webhook,
    request: http::Request<Full<Bytes>>,
) -> Result<(StatusCode, Option<AttemptFailure>), AttemptError> {
    let response =
        match tokio::time::timeout(webhook.config.timeout, webhook.client.request(request)).await {
            Ok(response) => response.map_err(AttemptError::Client)?,
            Err(_) => return Err(AttemptError::Timeout(webhook.config.timeout)),
        };
    let status = response.status();
    let headers = response.headers().clone();
    // A body that fails part-way, or is slow, is read no further: its status
    // decides.
    let mut prefix = Vec::new();
    let within = BODY_WITHIN.min(webhook.config.timeout);
    let _ = tokio::time::timeout(
        within,
        http_client::read_prefix(response.into_body(), ANSWER_PREFIX, &mut prefix),
    )
    .await;
    if status.is_success() {
        return Ok((status, None));
    }
    Ok((status, Some(classify(status, &headers, &excerpt(&prefix)))))
}

/// Ends when the drain deadline, once one is set, has passed: a request
/// still open then is cut, and its row given back untouched.
async fn cut_off(mut stop: Stop) {
    loop {
        let deadline = *stop.borrow_and_update();
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Why a request got no answer.
enum AttemptError {
    Timeout(Duration),
    Client(hyper_util::client::legacy::Error),
}

impl AttemptError {
    fn response(&self) -> Response {
        match self {
            AttemptError::Timeout(_) => Response::Timeout,
            AttemptError::Client(error) if error.is_connect() => {
                if timed_out(error) {
                    Response::Timeout
                } else {
                    Response::Connection
                }
            }
            AttemptError::Client(_) => Response::Error,
        }
    }
}

/// Whether an error comes from a time running out: the connector's
/// `connect_timeout`, or the system's (`ETIMEDOUT`).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = error.source();
    }
    false
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Timeout(after) => write!(
                f,
                "no answer within the timeout ({})",
                crate::config::show_duration(*after)
            ),
            // No URL is in any of them (`without_url`).
            AttemptError::Client(error) => f.write_str(&error_chain(error)),
        }
    }
}

/// A failed attempt's event: retried after a wait (its jitter `jitter`,
/// in [0, 1)) while the schedule lasts, else (or at once, for a permanent
/// failure) a dead letter.
fn after_failure(
    webhook: &Webhook,
    event: &Leased,
    failure: &AttemptFailure,
    jitter: f64,
) -> Outcome {
    let (event_id, attempts) = (event.event_id.as_str(), event.attempts);
    let attempt = attempts + 1;
    let schedule = &webhook.config.retry_schedule;
    match failure {
        AttemptFailure::Transient {
            reason,
            retry_after,
        } if (attempt as usize) <= schedule.len() => {
            let wait = retry_after.unwrap_or_else(|| backoff(schedule, attempts, jitter));
            tracing::debug!(event_id, attempt, error = %reason, ?wait, "delivery failed");
            Outcome::Retry {
                after: wait,
                error: reason.clone(),
            }
        }
        AttemptFailure::Transient { reason, .. } => {
            let error = format!("{reason} (attempt {attempt}; the retry schedule is used up)");
            dead_letter(webhook, event_id, attempt, &error);
            Outcome::Dead { error }
        }
        AttemptFailure::Permanent { reason } => {
            dead_letter(webhook, event_id, attempt, reason);
            Outcome::Dead {
                error: reason.clone(),
            }
        }
    }
}

/// Names a new dead letter in the log, within the webhook's budget.
fn dead_letter(webhook: &Webhook, event_id: &str, attempt: u32, error: &str) {
    if webhook.dead_letters.take() {
        tracing::error!(event_id, attempt, error, "event moved to the dead letters");
    }
}

/// Says, once the budget's minute is over, how many dead letters were not
/// named in it.
pub(super) fn say_unlogged_dead_letters(webhook: &Webhook) {
    if let Some(unlogged) = webhook.dead_letters.roll(std::time::Instant::now()) {
        tracing::error!(
            unlogged,
            "more events moved to the dead letters in the last minute than were logged: `price-alertd outbox list --dead` lists them"
        );
    }
}

/// The headers of one attempt: the Standard Webhooks trio, then the static ones.
pub fn headers(config: &WebhookConfig, event_id: &str, body: &str, timestamp: i64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(id) = HeaderValue::from_str(event_id) {
        headers.insert("webhook-id", id);
    }
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    if !config.secrets.is_empty() {
        let signatures: Vec<String> = config
            .secrets
            .iter()
            .map(|secret| sign(secret, event_id, timestamp, body))
            .collect();
        if let Ok(value) = HeaderValue::from_str(&signatures.join(" ")) {
            headers.insert("webhook-signature", value);
        }
    }
    for (name, value) in &config.headers {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

/// `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` (Standard Webhooks).
pub fn sign(secret: &Secret, event_id: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{event_id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The wait before the next attempt after `attempts` earlier ones: the
/// schedule's entry with ±20% jitter, by `jitter` in [0, 1).
pub fn backoff(schedule: &[Duration], attempts: u32, jitter: f64) -> Duration {
    let base = schedule
        .get(attempts as usize)
        .or(schedule.last())
        .copied()
        .unwrap_or(Duration::from_secs(5));
    base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::RETRY_AFTER;

    /// An error that wraps another, as the connectors' do.
    #[derive(Debug)]
    struct Wrapping(std::io::Error);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tcp connect error")
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_time_run_out_is_told_by_the_errors_kind_anywhere_in_its_chain() {
        let timeout = Wrapping(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timeout",
        ));
        assert!(timed_out(&timeout));
        let refused = Wrapping(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "the words timed out, in a refusal",
        ));
        assert!(!timed_out(&refused));
    }

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn backoff_follows_the_schedule_with_jitter_and_repeats_its_last_entry() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        assert_eq!(backoff(&schedule, 0, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(&schedule, 0, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(&schedule, 1, 1.0), Duration::from_secs(360));
        for _ in 0..200 {
            let first = backoff(&schedule, 0, fastrand::f64());
            assert!(
                first >= Duration::from_secs(4) && first <= Duration::from_secs(6),
                "{first:?}"
            );
            let late = backoff(&schedule, 9, fastrand::f64());
            assert!(
                late >= Duration::from_secs(240) && late <= Duration::from_secs(360),
                "{late:?}"
            );
        }
    }

    fn check(status: u16, retry_after: Option<&'static str>, expected: &str) {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
        }
        let got = match classify(StatusCode::from_u16(status).unwrap(), &headers, "") {
            AttemptFailure::Transient {
                retry_after: Some(wait),
                ..
            } => format!("retry after {}s", wait.as_secs()),
            AttemptFailure::Transient {
                retry_after: None, ..
            } => "retry".to_owned(),
            AttemptFailure::Permanent { .. } => "dead".to_owned(),
        };
        assert_eq!(got, expected, "{status} {retry_after:?}");
    }

    #[test]
    fn an_excerpt_is_one_short_line() {
        assert_eq!(
            excerpt(b"{\"error\":\n\t\"bad\"}\r\n"),
            "{\"error\": \"bad\"}"
        );
        assert_eq!(excerpt(b"a\x1b[31mb"), "a [31mb");
        let long = excerpt(&[b'x'; ANSWER_PREFIX]);
        assert_eq!(long.chars().count(), 201);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn answers_are_classified_as_retry_or_dead_letter() {
        for status in [408, 425, 429, 500, 502, 503, 504, 301, 302, 307] {
            check(status, None, "retry");
        }
        for status in [400, 401, 403, 404, 405, 409, 410, 413, 422] {
            check(status, None, "dead");
        }
        check(429, Some("7"), "retry after 7s");
        check(503, Some(" 30 "), "retry after 30s");
        check(503, Some("999999"), "retry after 3600s");
        check(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), "retry after 0s");
    }
}
