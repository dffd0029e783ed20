//! Delivery: outbox rows to signed webhook POSTs, with retries. The only module
//! that knows HTTP. Runs on tokio; every database call goes to `spawn_blocking`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Secret, WebhookConfig};
use crate::log_recurring;
use crate::metrics::{Delivery, Metrics, Response};
use crate::recurring::Recurring;
use crate::store::outbox::{self, Leased, Outcome};
use crate::store::{self, Pool};

/// The longest `Retry-After` a receiver can impose.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);
/// How much of a receiver's answer is read: enough for a log line. The status
/// alone is the answer; the rest of a longer body is never read, and the
/// connection is dropped with it, so no receiver decides how much memory the
/// daemon uses.
pub const ANSWER_PREFIX: usize = 1024;
/// How long an idle deliverer sleeps when nothing is due, unless woken: the
/// delay before it sees rows that another process queued or replayed.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// A configured webhook: the shared HTTP client and what to send with it.
#[derive(Clone)]
pub struct Webhook {
    client: reqwest::Client,
    config: Arc<WebhookConfig>,
}

/// A reqwest client builder as every outbound request of the daemon needs it:
/// our user agent, and TLS (verification on) through ring.
pub fn client_builder() -> reqwest::ClientBuilder {
    // reqwest is built without a default crypto provider; ring is ours.
    // Installing twice (tests, reloads, two clients) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("price-alertd/", env!("CARGO_PKG_VERSION")))
}

impl Webhook {
    pub fn new(config: &WebhookConfig) -> anyhow::Result<Webhook> {
        let client = client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.concurrency)
            .build()
            .context("building the HTTP client")?;
        Ok(Webhook {
            client,
            config: Arc::new(config.clone()),
        })
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Rows leased per round: enough to keep `concurrency` requests busy
    /// while a round's bookkeeping runs.
    fn batch(&self) -> usize {
        (self.config.concurrency * 4).clamp(16, 1024)
    }

    /// How long a round's lease must last: a round sends its batch in waves of
    /// `concurrency`, each bounded by a connect and a request timeout, and then
    /// records the outcomes. A lease that ran out mid-round would let another
    /// deliverer send the same row at the same time.
    fn lease(&self) -> Duration {
        let waves = self.batch().div_ceil(self.config.concurrency) as u32;
        (self.config.connect_timeout + self.config.timeout) * waves + Duration::from_secs(10)
    }
}

/// What a deliverer did over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub failed: u64,
    /// Events moved to the dead letters.
    pub dead: u64,
}

/// When to stop: `None` while running; `Some(deadline)` once draining, after
/// which nothing new is leased and in-flight requests still open at the
/// deadline are abandoned and their rows given back untouched.
pub type Stop = watch::Receiver<Option<Instant>>;

/// Delivers outbox rows until stopped, then drains until the deadline or until
/// nothing deliverable is left. `wake` is notified when new rows are queued.
pub async fn run(
    pool: Pool,
    mut webhooks: watch::Receiver<Webhook>,
    owner: String,
    wake: Arc<Notify>,
    mut stop: Stop,
    metrics: Arc<Metrics>,
) -> Totals {
    let mut totals = Totals::default();
    let mut failures_in_a_row = 0u32;
    // Each logged when it starts or changes, then once a minute.
    let (mut round_failures, mut checkpoint_failures, mut outbox_failures) = (
        Recurring::default(),
        Recurring::default(),
        Recurring::default(),
    );
    loop {
        let draining = *stop.borrow();
        if draining.is_some_and(|deadline| Instant::now() >= deadline) {
            return totals;
        }
        let webhook = webhooks.borrow_and_update().clone();
        match round(&pool, &webhook, &owner, &stop, &metrics).await {
            Ok(round) => {
                failures_in_a_row = 0;
                if let Some(failures) = round_failures.succeeded() {
                    tracing::info!(failures, "delivery rounds work again");
                }
                totals.delivered += round.delivered;
                totals.failed += round.failed;
                totals.dead += round.dead;
                if round.leased > 0 {
                    continue;
                }
            }
            Err(error) => {
                failures_in_a_row += 1;
                log_recurring!(
                    error,
                    round_failures,
                    format!("{error:#}"),
                    "delivery round failed"
                );
            }
        }
        // Idle after work: a good moment to checkpoint the deliveries' writes.
        match store::blocking(&pool, "checkpointing the WAL", |connection| {
            store::checkpoint(connection)
        })
        .await
        {
            Ok(()) => {
                checkpoint_failures.succeeded();
            }
            Err(error) => {
                log_recurring!(
                    warn,
                    checkpoint_failures,
                    format!("{error:#}"),
                    "checkpoint failed"
                )
            }
        }
        let next_due = match store::blocking(&pool, "reading the outbox", |connection| {
            outbox::next_due(connection)
        })
        .await
        {
            Ok(next_due) => {
                outbox_failures.succeeded();
                next_due
            }
            Err(error) => {
                log_recurring!(
                    error,
                    outbox_failures,
                    format!("{error:#}"),
                    "reading the outbox failed"
                );
                Some(now_ms() + 1000)
            }
        };
        let wait = match next_due {
            Some(due) => Duration::from_millis((due - now_ms()).max(0) as u64).min(IDLE_POLL),
            None if draining.is_some() => return totals,
            None => IDLE_POLL,
        };
        // After a database error, back off instead of spinning.
        let wait = wait.max(Duration::from_millis(200) * failures_in_a_row.min(25));
        if let Some(deadline) = draining
            && Instant::now() + wait >= deadline
        {
            return totals;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            _ = stop.changed() => {}
            _ = webhooks.changed() => {}
        }
    }
}

#[derive(Debug, Default)]
struct Round {
    leased: u64,
    delivered: u64,
    failed: u64,
    dead: u64,
}

/// Leases a batch of due rows, sends them with bounded concurrency and
/// records every outcome in one transaction.
async fn round(
    pool: &Pool,
    webhook: &Webhook,
    owner: &str,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<Round> {
    let limit = webhook.batch();
    let lease = webhook.lease().as_millis() as i64;
    let leased = {
        let owner = owner.to_owned();
        store::blocking(pool, "leasing due events", move |connection| {
            let now = now_ms();
            outbox::lease_due(connection, &owner, now, now + lease, limit)
        })
        .await?
    };
    let mut round = Round {
        leased: leased.len() as u64,
        ..Round::default()
    };
    if leased.is_empty() {
        return Ok(round);
    }
    let permits = Arc::new(Semaphore::new(webhook.config.concurrency));
    let mut attempts = JoinSet::new();
    for event in leased {
        let (webhook, permits, stop) = (webhook.clone(), permits.clone(), stop.clone());
        attempts.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let started = std::time::Instant::now();
            let (outcome, response) = attempt(&webhook, &event, stop).await;
            (outcome, response, started.elapsed())
        });
    }
    let mut outcomes = Vec::with_capacity(round.leased as usize);
    let mut first_failure = None;
    while let Some(joined) = attempts.join_next().await {
        let (outcome, response, took) = joined.context("a delivery task panicked")?;
        let kind = match &outcome {
            Outcome::Delivered { .. } => {
                round.delivered += 1;
                Delivery::Delivered
            }
            Outcome::Retry { error, .. } => {
                round.failed += 1;
                first_failure.get_or_insert_with(|| error.clone());
                Delivery::Failed
            }
            Outcome::Dead { .. } => {
                round.dead += 1;
                Delivery::Dead
            }
            Outcome::Released { .. } => Delivery::Released,
        };
        metrics.delivery(kind, response, took);
        outcomes.push(outcome);
    }
    if let Some(error) = first_failure {
        tracing::warn!(failed = round.failed, delivered = round.delivered, %error, "deliveries failed; they will be retried");
    }
    let owner = owner.to_owned();
    store::blocking(pool, "recording delivery outcomes", move |connection| {
        outbox::record(
            connection,
            &owner,
            &outcomes,
            &store::timestamp(chrono::Utc::now()),
        )
    })
    .await?;
    Ok(round)
}

/// Why an attempt failed, as far as what happens next is concerned.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
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

/// Reads a response's body up to `limit` bytes: those bytes, and whether they
/// are all of it. The rest of a longer body is never read (dropping the
/// response drops its connection); a body that ends within the limit leaves the
/// connection reusable.
pub async fn read_prefix(
    response: &mut reqwest::Response,
    limit: usize,
) -> reqwest::Result<(Vec<u8>, bool)> {
    let mut prefix = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - prefix.len();
        if chunk.len() > room {
            prefix.extend_from_slice(&chunk[..room]);
            return Ok((prefix, false));
        }
        prefix.extend_from_slice(&chunk);
    }
    Ok((prefix, true))
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
pub fn classify(status: StatusCode, headers: &HeaderMap, excerpt: &str) -> Failure {
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
        Failure::Transient {
            reason,
            retry_after: retry_after(headers),
        }
    } else {
        Failure::Permanent { reason }
    }
}

/// One POST of one event: what becomes of the event, and what the receiver
/// answered.
async fn attempt(webhook: &Webhook, event: &Leased, mut stop: Stop) -> (Outcome, Response) {
    let request = webhook
        .client
        .post(webhook.config.url.clone())
        .headers(headers(
            &webhook.config,
            &event.event_id,
            &event.body,
            chrono::Utc::now().timestamp(),
        ))
        .body(event.body.clone());
    let cut_off = async {
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
    };
    // The status is the answer. Of the body, at most a prefix is read: all
    // of a short one, so that the connection can be reused, and of an error's
    // the start, for the log and the dead letter.
    let exchange = async {
        let mut response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            let _ = read_prefix(&mut response, ANSWER_PREFIX).await;
            return Ok((status, None));
        }
        let (prefix, _) = read_prefix(&mut response, ANSWER_PREFIX)
            .await
            .unwrap_or_default();
        let failure = classify(status, response.headers(), &excerpt(&prefix));
        Ok((status, Some(failure)))
    };
    let answered: reqwest::Result<(StatusCode, Option<Failure>)> = tokio::select! {
        answered = exchange => answered,
        () = cut_off => return (Outcome::Released { row_id: event.row_id }, Response::None),
    };
    let (response, failure) = match answered {
        Ok((status, None)) => {
            tracing::debug!(event_id = %event.event_id, "delivered");
            let delivered = Outcome::Delivered {
                row_id: event.row_id,
            };
            return (delivered, Response::Status(status.as_u16()));
        }
        Ok((status, Some(failure))) => (Response::Status(status.as_u16()), failure),
        Err(error) => {
            let response = if error.is_timeout() {
                Response::Timeout
            } else if error.is_connect() {
                Response::Connection
            } else {
                Response::Error
            };
            let failure = Failure::Transient {
                reason: format!("{:#}", anyhow::Error::new(error.without_url())),
                retry_after: None,
            };
            (response, failure)
        }
    };
    (after_failure(webhook, event, failure), response)
}

/// A failed attempt's event: retried after a wait while the schedule lasts,
/// else (or at once, for a permanent failure) a dead letter.
fn after_failure(webhook: &Webhook, event: &Leased, failure: Failure) -> Outcome {
    let attempt = event.attempts + 1;
    let schedule = &webhook.config.retry_schedule;
    match failure {
        Failure::Transient {
            reason,
            retry_after,
        } if (attempt as usize) <= schedule.len() => {
            let wait = retry_after.unwrap_or_else(|| backoff(schedule, event.attempts));
            tracing::debug!(event_id = %event.event_id, attempt, error = %reason, ?wait, "delivery failed");
            Outcome::Retry {
                row_id: event.row_id,
                next_attempt_at: now_ms() + wait.as_millis() as i64,
                error: reason,
            }
        }
        Failure::Transient { reason, .. } => {
            let error = format!("{reason} (attempt {attempt}; the retry schedule is used up)");
            tracing::error!(event_id = %event.event_id, attempt, %error, "event moved to the dead letters");
            Outcome::Dead {
                row_id: event.row_id,
                error,
            }
        }
        Failure::Permanent { reason } => {
            tracing::error!(event_id = %event.event_id, attempt, error = %reason, "event moved to the dead letters");
            Outcome::Dead {
                row_id: event.row_id,
                error: reason,
            }
        }
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
/// schedule's entry with ±20% jitter.
pub fn backoff(schedule: &[Duration], attempts: u32) -> Duration {
    let base = schedule
        .get(attempts as usize)
        .or(schedule.last())
        .copied()
        .unwrap_or(Duration::from_secs(5));
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// A `Retry-After` in seconds, capped. (The HTTP-date form is rare from
/// webhook receivers and is treated as absent: the schedule applies.)
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for _ in 0..200 {
            let first = backoff(&schedule, 0);
            assert!(
                first >= Duration::from_secs(4) && first <= Duration::from_secs(6),
                "{first:?}"
            );
            let late = backoff(&schedule, 9);
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
            Failure::Transient {
                retry_after: Some(wait),
                ..
            } => format!("retry after {}s", wait.as_secs()),
            Failure::Transient {
                retry_after: None, ..
            } => "retry".to_owned(),
            Failure::Permanent { .. } => "dead".to_owned(),
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
        check(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), "retry");
    }
}
