//! `[webhook]`: where events go (one URL, or a `{user_id}` template), how
//! they are signed, and the retry schedule.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use toml::Spanned;
use url::Url;

use super::errors::Report;
use super::fields::{
    DRAIN_TIMEOUT, REQUEST_TIMEOUT, RETRY_WAIT, WEBHOOK_HEADERS, count, display_url, duration,
    header_list, http_url, one_source_of_credentials, resolve, secret_file,
};
use super::raw;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: WebhookUrl,
    /// With `{user_id}` in `url`: where the events of alerts without a
    /// user_id go; unset, they become dead letters that say why.
    pub url_without_user_id: Option<Url>,
    /// Standard Webhooks signing secrets; the first signs, all are sent during rotation.
    pub secrets: Vec<Secret>,
    /// Static headers sent with every event.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Waits between attempts; the last one repeats once the list is used up.
    pub retry_schedule: Vec<Duration>,
    /// How long a stop, or `run-job`, keeps delivering before it gives up.
    pub drain_timeout: Duration,
    /// What a request carries.
    pub format: WebhookFormat,
    /// Events per request, at most: 1 but for a format that takes several.
    pub batch: usize,
}

/// `webhook.format`: what a request to the webhook carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// One event, its body the event (DESIGN.md's contract), signed as
    /// Standard Webhooks sign a message.
    Event,
    /// Pushpin's publish API (`POST /publish/`): up to `webhook.batch`
    /// events, each an item on its user's channel, `user/<user_id>`.
    Pushpin,
}

impl WebhookConfig {
    /// Events a request carries, at most: one in the `Event` format (its
    /// body is the event), whatever `batch` says.
    pub fn events_a_request(&self) -> usize {
        match self.format {
            WebhookFormat::Event => 1,
            WebhookFormat::Pushpin => self.batch,
        }
    }
}

/// Events in a Pushpin request unless `webhook.batch` says otherwise.
const PUSHPIN_BATCH: usize = 100;
/// The most events one request may carry.
pub const MAX_BATCH: usize = 1000;

/// `webhook.url`: one URL for every event, or a template in which
/// `{user_id}` stands for one path segment, the alert's `user_id`
/// percent-encoded, so that a relay publishes each event to its user's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// The URL, parsed: a template's path holds [`USER_ID_PLACEHOLDER`].
    url: Url,
    per_user: bool,
}

/// The placeholder as `webhook.url` writes it.
const USER_ID_PROBE: &str = "{user_id}";

/// The placeholder once the URL is parsed (its braces percent-encoded): no
/// user id's segment reads so, as a user id's braces are encoded too.
pub const USER_ID_PLACEHOLDER: &str = "%7Buser_id%7D";

impl WebhookUrl {
    /// Whether `{user_id}` routes each event to its user's URL.
    pub fn per_user(&self) -> bool {
        self.per_user
    }

    /// The URL, a template's with its placeholder (`%7Buser_id%7D`): for its
    /// scheme, host and credentials.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL as it may be shown, `{user_id}` included (see [`display_url`]).
    pub fn display(&self) -> String {
        display_url(&self.url).replace(USER_ID_PLACEHOLDER, USER_ID_PROBE)
    }
}

/// A webhook signing key. Its bytes never reach a log line or `Debug` output.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses a Standard Webhooks secret: `whsec_` followed by base64.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the secret is not base64 after its whsec_ prefix".to_owned())?;
        if bytes.len() < 24 {
            return Err(format!(
                "the secret decodes to {} bytes; at least 24 are required",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The `[webhook]` section; `None` without a usable URL.
pub(super) fn webhook(
    section: Option<&Spanned<raw::RawWebhook>>,
    base: &Path,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> Option<WebhookConfig> {
    let Some(section) = section else {
        report(
            "webhook",
            0..0,
            "missing section [webhook]; it needs at least `url`".to_owned(),
        );
        return None;
    };
    let webhook = section.get_ref();
    let headers = header_list(
        &webhook.headers,
        "webhook.headers",
        &WEBHOOK_HEADERS,
        report,
    );
    let (url, url_without_user_id) = destinations(webhook, section.span(), &headers, report);
    // Every field is checked, whether or not the URL is usable.
    let secrets = secrets(webhook, base, report, warn);
    let timeout = duration(
        &webhook.timeout,
        "webhook.timeout",
        "15s",
        REQUEST_TIMEOUT,
        report,
    );
    let connect_timeout = duration(
        &webhook.connect_timeout,
        "webhook.connect_timeout",
        "5s",
        REQUEST_TIMEOUT,
        report,
    );
    let concurrency = count(
        &webhook.concurrency,
        "webhook.concurrency",
        16,
        1..=1024,
        report,
    );
    let retry_schedule = retry_schedule(&webhook.retry_schedule, report);
    let drain_timeout = duration(
        &webhook.drain_timeout,
        "webhook.drain_timeout",
        "30s",
        DRAIN_TIMEOUT,
        report,
    );
    let (format, batch) = format_and_batch(webhook, report);
    if format == WebhookFormat::Pushpin && url.as_ref().is_some_and(WebhookUrl::per_user) {
        report(
            "webhook.url",
            webhook.url.as_ref().map_or(0..0, |url| url.span()),
            "takes no {user_id} with format = \"pushpin\": each event names its user's channel in the request".to_owned(),
        );
    }
    Some(WebhookConfig {
        url: url?,
        url_without_user_id,
        secrets,
        headers,
        timeout,
        connect_timeout,
        concurrency,
        retry_schedule,
        drain_timeout,
        format,
        batch,
    })
}

/// `webhook.format` and `webhook.batch`: several events a request only
/// where the format takes them.
fn format_and_batch(webhook: &raw::RawWebhook, report: &mut impl Report) -> (WebhookFormat, usize) {
    let format = match &webhook.format {
        None => WebhookFormat::Event,
        Some(format) => match format.get_ref().as_str() {
            "event" => WebhookFormat::Event,
            "pushpin" => WebhookFormat::Pushpin,
            other => {
                report(
                    "webhook.format",
                    format.span(),
                    format!("{other:?} is not a format; use \"event\" or \"pushpin\""),
                );
                WebhookFormat::Event
            }
        },
    };
    let batch = match format {
        WebhookFormat::Event => {
            if let Some(batch) = webhook.batch.as_ref().filter(|batch| *batch.get_ref() != 1) {
                report(
                    "webhook.batch",
                    batch.span(),
                    "must be 1 with format = \"event\" (a request's body is one event); format = \"pushpin\" takes several".to_owned(),
                );
            }
            1
        }
        WebhookFormat::Pushpin => count(
            &webhook.batch,
            "webhook.batch",
            PUSHPIN_BATCH,
            1..=MAX_BATCH,
            report,
        ),
    };
    (format, batch)
}

/// `webhook.url` and `webhook.url_without_user_id` (only beside a
/// `{user_id}`), each with its credentials in its userinfo or in the
/// headers, not both. `span` is the section's.
fn destinations(
    webhook: &raw::RawWebhook,
    span: Range<usize>,
    headers: &[(HeaderName, HeaderValue)],
    report: &mut impl Report,
) -> (Option<WebhookUrl>, Option<Url>) {
    let url = match &webhook.url {
        None => {
            report("webhook.url", span, "missing field `url`".to_owned());
            None
        }
        Some(url) => webhook_url(url, report),
    };
    if let Some(url) = &url {
        one_source_of_credentials(url.url(), headers, "webhook", &webhook.headers, report);
    }
    let url_without_user_id = webhook.url_without_user_id.as_ref().and_then(|fallback| {
        // The URL as written, so that this is said even when it is wrong too.
        let per_user = webhook
            .url
            .as_ref()
            .is_some_and(|url| url.get_ref().contains(USER_ID_PROBE));
        if webhook.url.is_some() && !per_user {
            report(
                "webhook.url_without_user_id",
                fallback.span(),
                "is for a webhook.url with {user_id}; this one sends every event to one URL"
                    .to_owned(),
            );
        }
        if let Some(placeholder) = placeholders(fallback.get_ref()).next() {
            report(
                "webhook.url_without_user_id",
                fallback.span(),
                format!("takes no placeholder; it has {placeholder}"),
            );
            return None;
        }
        let parsed = http_url(fallback, "webhook.url_without_user_id", report)?;
        one_source_of_credentials(&parsed, headers, "webhook", &webhook.headers, report);
        Some(parsed)
    });
    (url, url_without_user_id)
}

/// `webhook.secret` or `webhook.secret_file`: one or two signing secrets.
fn secrets(
    webhook: &raw::RawWebhook,
    base: &Path,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> Vec<Secret> {
    if let (Some(_), Some(file)) = (&webhook.secret, &webhook.secret_file) {
        report(
            "webhook.secret_file",
            file.span(),
            "set webhook.secret or webhook.secret_file, not both".to_owned(),
        );
    }
    let mut secrets = Vec::new();
    if let Some(secret) = &webhook.secret {
        match parse_secrets(secret.get_ref()) {
            Ok(parsed) => secrets = parsed,
            Err(message) => report("webhook.secret", secret.span(), message),
        }
    }
    if let Some(file) = &webhook.secret_file {
        let path = resolve(Path::new(file.get_ref()), base);
        if let Some(text) = secret_file(&path, "webhook.secret_file", file.span(), report, warn) {
            match parse_secrets(&text) {
                Ok(parsed) => secrets = parsed,
                Err(message) => report(
                    "webhook.secret_file",
                    file.span(),
                    format!("{}: {message}", path.display()),
                ),
            }
        }
    }
    secrets
}

/// `webhook.retry_schedule`: Svix's schedule unless given.
fn retry_schedule(
    list: &Option<Spanned<Vec<Spanned<String>>>>,
    report: &mut impl Report,
) -> Vec<Duration> {
    match list {
        None => DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|text| humantime::parse_duration(text).expect("a valid default"))
            .collect(),
        Some(list) if list.get_ref().is_empty() => {
            report(
                "webhook.retry_schedule",
                list.span(),
                "must list at least one duration".to_owned(),
            );
            Vec::new()
        }
        Some(list) => list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(index, item)| {
                duration(
                    &Some(item.clone()),
                    &format!("webhook.retry_schedule[{index}]"),
                    "1s",
                    RETRY_WAIT,
                    report,
                )
            })
            .collect(),
    }
}

/// `webhook.url`: an http or https URL, in whose path `{user_id}` may stand
/// once, for a whole segment or part of one.
fn webhook_url(value: &Spanned<String>, report: &mut impl Report) -> Option<WebhookUrl> {
    let text = value.get_ref();
    if let Some(unknown) = placeholders(text).find(|name| *name != USER_ID_PROBE) {
        report(
            "webhook.url",
            value.span(),
            format!("{unknown} is not a placeholder; the only one is {USER_ID_PROBE}"),
        );
        return None;
    }
    let per_user = match text.matches(USER_ID_PROBE).count() {
        0 => false,
        1 => true,
        _ => {
            report(
                "webhook.url",
                value.span(),
                "{user_id} may appear once".to_owned(),
            );
            return None;
        }
    };
    let url = http_url(value, "webhook.url", report)?;
    if per_user {
        let holds = |part: &str| part.contains(USER_ID_PROBE) || part.contains(USER_ID_PLACEHOLDER);
        let elsewhere = holds(url.username())
            || url.password().is_some_and(holds)
            || url.query().is_some_and(holds)
            || url.fragment().is_some_and(holds);
        if elsewhere || !url.path().contains(USER_ID_PLACEHOLDER) {
            report(
                "webhook.url",
                value.span(),
                "{user_id} may only stand in the URL's path (as in http://127.0.0.1:8080/events/{user_id})"
                    .to_owned(),
            );
            return None;
        }
    }
    Some(WebhookUrl { url, per_user })
}

/// Each `{name}` in `text` (braces and a name of letters, digits and `_`),
/// as written: what a template's author means as a placeholder. A URL's
/// literal braces are percent-encoded, so none is taken for one.
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices('{').filter_map(|(start, _)| {
        let rest = &text[start + 1..];
        let end = rest.find('}')?;
        let name = &rest[..end];
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| &text[start..start + end + 2])
    })
}

/// Svix's schedule, the reference for Standard Webhooks senders.
pub const DEFAULT_RETRY_SCHEDULE: [&str; 7] = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"];

/// One secret, or two separated by whitespace while a secret is being rotated.
fn parse_secrets(text: &str) -> Result<Vec<Secret>, String> {
    let secrets = text
        .split_whitespace()
        .map(Secret::parse)
        .collect::<Result<Vec<_>, _>>()?;
    match secrets.len() {
        0 => Err("the secret is empty".to_owned()),
        1 | 2 => Ok(secrets),
        n => Err(format!(
            "{n} secrets given; at most two (the new and the old) are allowed"
        )),
    }
}
